#!/usr/bin/env python3
"""Writes the fixtures of the shipped rules: `<rule>/positive.ndjson` (must
fire) and `<rule>/negative.ndjson` (must not: the near miss), as Wazuh
alerts. Re-run after editing a scenario; `cargo test -p sluice-rules --test
library` then checks the detections against `<rule>/expected.txt`
(`SLUICE_BLESS=1` rewrites those for review).

Every scenario is small and spelled out, so that a reader sees exactly what
a rule fires on and what it must not.
"""
import json
import os
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
T0 = datetime(2026, 11, 1, 10, 0, 0, tzinfo=timezone.utc)
RULES = {
    5710: (5, "sshd: Attempt to login using a non-existent user", ["syslog", "sshd", "authentication_failed", "invalid_login"]),
    5716: (5, "sshd: authentication failed.", ["syslog", "sshd", "authentication_failed"]),
    5715: (3, "sshd: authentication success.", ["syslog", "sshd", "authentication_success"]),
    5501: (3, "PAM: Login session opened.", ["pam", "syslog", "authentication_success"]),
    5402: (3, "Successful sudo to ROOT executed.", ["syslog", "sudo"]),
    5902: (8, "New user added to the system.", ["syslog", "adduser"]),
    550: (7, "Integrity checksum changed.", ["ossec", "syscheck", "syscheck_entry_modified", "syscheck_file"]),
    554: (5, "File added to the system.", ["ossec", "syscheck", "syscheck_entry_added", "syscheck_file"]),
    31101: (5, "Web server 400 error code.", ["web", "accesslog", "attack"]),
    31103: (7, "SQL injection attempt.", ["web", "accesslog", "attack", "sql_injection"]),
    31106: (6, "A web attack returned code 200 (success).", ["web", "accesslog", "attack"]),
    60122: (5, "Logon Failure - Unknown user or bad password", ["windows", "windows_security", "authentication_failed"]),
    60106: (3, "Windows Logon Success", ["windows", "windows_security", "authentication_success"]),
    61138: (5, "New Windows Service Created", ["windows", "windows_system"]),
    92652: (6, "Successful Remote Logon Detected - NTLM authentication, possible pass-the-hash attack", ["windows", "windows_security", "authentication_success"]),
    63103: (12, "The audit log was cleared", ["windows", "windows_security", "log_clearing"]),
    87105: (12, "VirusTotal: Alert - engines detected this file", ["virustotal"]),
    86601: (3, "Suricata: Alert - ET SCAN Nmap Scripting Engine User-Agent Detected", ["ids", "suricata"]),
    61104: (3, "System log file was cleared", ["windows", "windows_system", "log_clearing"]),
    92031: (3, "Discovery activity executed", ["sysmon", "sysmon_eid1_detections", "windows"]),
}
CHANNELS = {
    "Security": "Microsoft-Windows-Security-Auditing",
    "System": "Service Control Manager",
    "Microsoft-Windows-Sysmon/Operational": "Microsoft-Windows-Sysmon",
}
_seq = [0]


def alert(tenant, minute, rule, host, srcip=None, user=None, extra=None, full_log=""):
    level, desc, groups = RULES[rule]
    ts = T0 + timedelta(seconds=round(minute * 60, 3))
    _seq[0] += 1
    data = {}
    if srcip:
        data["srcip"] = srcip
    if user:
        data["dstuser"] = user
    a = {
        "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}+0000",
        "rule": {"level": level, "description": desc, "id": str(rule), "groups": groups},
        "agent": {"id": f"{sum(map(ord, host)) % 900 + 100:03d}", "name": host, "ip": "10.0.0." + str(sum(map(ord, host)) % 250 + 2)},
        "manager": {"name": tenant},
        "id": f"{int(ts.timestamp())}.{_seq[0]}",
        "full_log": full_log or desc,
        "decoder": {"name": groups[0]},
        "location": "/var/log/auth.log",
        "data": data,
    }
    for path, value in (extra or {}).items():
        node = a
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return a


def win(tenant, minute, rule, host, channel, event_id, **eventdata):
    """A Windows event channel alert as Wazuh's `windows_eventchannel`
    decoder writes it: `data.win.system` and `data.win.eventdata`."""
    a = alert(tenant, minute, rule, host)
    a["decoder"] = {"name": "windows_eventchannel"}
    a["location"] = "EventChannel"
    a["data"] = {"win": {
        "system": {"providerName": CHANNELS[channel], "eventID": str(event_id), "channel": channel,
                   "computer": f"{host}.corp.example.com", "severityValue": "INFORMATION"},
        "eventdata": dict(eventdata),
    }}
    a["full_log"] = json.dumps(a["data"]["win"], separators=(",", ":"))
    return a


def logon_failure(minute, user, ip, host="WS-07"):
    return win("acme", minute, 60122, host, "Security", 4625, targetUserName=user, ipAddress=ip,
               logonType="3", status="0xc000006d")


def process(minute, host, user, image, command_line):
    return win("acme", minute, 92031, host, "Microsoft-Windows-Sysmon/Operational", 1,
               user=user, image=image, commandLine=command_line)


def fails(tenant, start, host, ip, n, users=("root",), rule=5716, step=0.2):
    return [alert(tenant, start + i * step, rule, host, ip, users[i % len(users)]) for i in range(n)]


def noise(tenant):
    """Ordinary traffic that no rule may fire on, in every fixture."""
    return [
        alert(tenant, 1, 5715, "bastion-01", "10.1.1.5", "deploy"),
        alert(tenant, 2, 5402, "bastion-01", None, "ops"),
        alert(tenant, 3, 31101, "web-01", "198.51.100.20"),
        alert(tenant, 4, 550, "app-01", extra={"syscheck.path": "/var/lib/app/cache.db"}),
    ]


SCENARIOS = {
    "ssh-brute-force-then-login": (
        fails("acme", 5, "web-01", "203.0.113.7", 8, ("root", "admin", "oracle"), rule=5710)
        + [alert("acme", 7.5, 5715, "web-01", "203.0.113.7", "deploy")],
        # Failures, then a success from another address: no.
        fails("acme", 5, "web-01", "203.0.113.7", 8, ("root", "admin"), rule=5710)
        + [alert("acme", 7.5, 5715, "web-01", "10.1.1.5", "deploy")],
    ),
    "password-spray": (
        [alert("acme", 5 + i * 0.3, 5716, "vpn-01", "198.51.100.44", u) for i, u in enumerate(
            ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"])],
        # Many failures, but one user (that is brute force, not spray).
        fails("acme", 5, "vpn-01", "198.51.100.44", 8, ("alice",)),
    ),
    "one-user-many-hosts": (
        # Each hop from the host before.
        [alert("acme", 5 + i, 92652, h, src, "alice") for i, (h, src) in enumerate(
            [("db-01", "10.2.0.9"), ("db-02", "10.0.0.41"), ("app-01", "10.0.0.42"), ("app-02", "10.0.0.43")])],
        # A service account fanning out from its one server.
        [alert("acme", 5 + i, 92652, h, "10.2.0.9", "svc-backup") for i, h in enumerate(
            ["db-01", "db-02", "app-01", "app-02"])],
    ),
    "web-scan-then-exploit": (
        [alert("acme", 5 + i * 0.05, 31101, "web-01", "192.0.2.66") for i in range(12)]
        + [alert("acme", 8, 31106, "web-01", "192.0.2.66", full_log="GET /index.php?id=1' union select"),
           alert("acme", 12, 554, "web-01", extra={"syscheck.path": "/var/www/html/uploads/x7k2.php"},
                 full_log="File '/var/www/html/uploads/x7k2.php' added\nMode: realtime")],
        # A scanner whose injection attempt was answered 200, and a deploy of
        # assets to that web root afterwards: no web shell.
        [alert("acme", 5 + i * 0.05, 31101, "web-01", "192.0.2.66") for i in range(12)]
        + [alert("acme", 8, 31106, "web-01", "192.0.2.66", full_log="GET /index.php?id=1' union select"),
           alert("acme", 12, 554, "web-01", extra={"syscheck.path": "/var/www/html/assets/app.3f9a1c2e.js"},
                 full_log="File '/var/www/html/assets/app.3f9a1c2e.js' added\nMode: realtime")],
    ),
    "new-account-after-remote-login": (
        [alert("acme", 5, 5715, "app-01", "203.0.113.9", "deploy"),
         alert("acme", 9, 5902, "app-01", None, "backdoor", full_log="new user: name=backdoor, UID=1001")],
        # An account added with no remote login before it.
        [alert("acme", 9, 5902, "app-01", None, "newhire")],
    ),
    "critical-file-changed-after-login": (
        [alert("acme", 5, 5715, "app-01", "203.0.113.9", "deploy"),
         alert("acme", 8, 550, "app-01", extra={"syscheck.path": "/etc/sudoers"},
               full_log="File '/etc/sudoers' modified\nMode: scheduled\nChanged attributes: size,mtime,md5,sha1,sha256")],
        # A change of an ordinary file after the login.
        [alert("acme", 5, 5715, "app-01", "203.0.113.9", "deploy"),
         alert("acme", 8, 550, "app-01", extra={"syscheck.path": "/var/www/html/index.html"},
               full_log="File '/var/www/html/index.html' modified\nMode: scheduled\nChanged attributes: size,mtime")],
    ),
    "same-file-hash-on-many-hosts": (
        [alert("acme", 5 + i, 554, h, extra={"syscheck.path": "/tmp/.x/kworker", "syscheck.sha256_after": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
               full_log="File '/tmp/.x/kworker' added\nMode: realtime")
         for i, h in enumerate(["web-01", "web-02", "db-01"])],
        [alert("acme", 5 + i, 554, h, extra={"syscheck.path": "/tmp/.x/kworker", "syscheck.sha256_after": f"{i:064x}"},
               full_log="File '/tmp/.x/kworker' added\nMode: realtime")
         for i, h in enumerate(["web-01", "web-02", "db-01"])],
    ),
    "windows-logon-failures-then-success": (
        fails("acme", 5, "WS-07", "198.51.100.23", 8, ("administrator", "backup", "jsmith"), rule=60122)
        + [alert("acme", 7, 60106, "WS-07", "198.51.100.23", "jsmith")],
        # A person mistyping their own password six times, then getting it right.
        fails("acme", 5, "WS-07", "10.0.0.23", 6, ("jsmith",), rule=60122)
        + [alert("acme", 7, 60106, "WS-07", "10.0.0.23", "jsmith")],
    ),
    "windows-service-from-user-path": (
        [alert("acme", 5, 61138, "WS-07", extra={"data.win.eventdata.serviceName": "updsvc",
                                                   "data.win.eventdata.imagePath": "C:\\Users\\Public\\upd.exe"})],
        [alert("acme", 5, 61138, "WS-07", extra={"data.win.eventdata.serviceName": "Spooler",
                                                   "data.win.eventdata.imagePath": "C:\\Windows\\System32\\spoolsv.exe"})],
    ),
    "windows-audit-log-cleared": (
        [alert("acme", 5, 63103, "DC-01", extra={"data.win.eventdata.subjectUserName": "mallory"})],
        [alert("acme", 5, 60106, "DC-01", "10.0.0.8", "mallory")],
    ),
    "sudo-to-root-after-remote-login": (
        [alert("acme", 5, 5715, "db-01", "203.0.113.50", "alice"),
         alert("acme", 6, 5402, "db-01", None, "alice")],
        # sudo by a user who did not log in remotely in the window.
        [alert("acme", 5, 5715, "db-01", "203.0.113.50", "alice"),
         alert("acme", 6, 5402, "db-01", None, "bob")],
    ),
    "malware-on-several-hosts": (
        [alert("acme", 5 + i, 87105, h, extra={"data.virustotal.source.sha1": "3395856ce81f2b7382dee72602f798b642f14140",
                                                "data.virustotal.positives": "41"}) for i, h in enumerate(["WS-01", "WS-02"])],
        [alert("acme", 5, 87105, "WS-01", extra={"data.virustotal.source.sha1": "3395856ce81f2b7382dee72602f798b642f14140",
                                                  "data.virustotal.positives": "41"})],
    ),
    "ids-alert-then-login-from-source": (
        [alert("acme", 5, 86601, "fw-01", "203.0.113.77"),
         alert("acme", 9, 5715, "web-02", "203.0.113.77", "deploy")],
        [alert("acme", 5, 86601, "fw-01", "203.0.113.77"),
         alert("acme", 9, 5715, "web-02", "10.1.1.5", "deploy")],
    ),
    "sigma-windows-password-spray": (
        [logon_failure(5 + i * 0.5, u, "198.51.100.23") for i, u in
         enumerate(["administrator", "backup", "jsmith", "svc-sql", "helpdesk", "alice"])],
        # Six failures from one source, but only for two accounts and a
        # machine account (a person retrying, and a stale computer object).
        [logon_failure(5 + i * 0.5, u, "198.51.100.23") for i, u in
         enumerate(["jsmith", "jsmith", "JSMITH", "WS-07$", "alice", "WS-09$"])],
    ),
    "sigma-windows-service-then-log-cleared": (
        [win("acme", 5, 61138, "SRV-02", "System", 7045, serviceName="updsvc", imagePath="C:\\ProgramData\\updsvc.exe"),
         win("acme", 20, 63103, "SRV-02", "Security", 1102, subjectUserName="mallory")],
        # The same two events in the other order (a log cleared, later a
        # service installed), and on another host: not this pattern.
        [win("acme", 5, 63103, "SRV-02", "Security", 1102, subjectUserName="admin"),
         win("acme", 20, 61138, "SRV-02", "System", 7045, serviceName="Spooler", imagePath="C:\\Windows\\spoolsv.exe"),
         win("acme", 21, 61104, "SRV-03", "System", 104, subjectUserName="admin")],
    ),
    "sigma-windows-discovery-burst": (
        [process(5 + i * 0.5, "WS-07", "CORP\\jsmith", image, cmd) for i, (image, cmd) in enumerate([
            ("C:\\Windows\\System32\\whoami.exe", "whoami /all"),
            ("C:\\Windows\\System32\\net.exe", "net group \"Domain Admins\" /domain"),
            ("C:\\Windows\\System32\\nltest.exe", "nltest /dclist:corp"),
            ("C:\\Windows\\System32\\systeminfo.exe", "systeminfo"),
        ])],
        # The same four commands spread over an hour, and net.exe starting
        # a service (not discovery).
        [process(5 + i * 15, "WS-07", "CORP\\jsmith", image, cmd) for i, (image, cmd) in enumerate([
            ("C:\\Windows\\System32\\whoami.exe", "whoami /all"),
            ("C:\\Windows\\System32\\net.exe", "net group \"Domain Admins\" /domain"),
            ("C:\\Windows\\System32\\nltest.exe", "nltest /dclist:corp"),
            ("C:\\Windows\\System32\\systeminfo.exe", "systeminfo"),
        ])] + [process(6 + i * 0.2, "WS-07", "CORP\\jsmith", "C:\\Windows\\System32\\net.exe", "net start spooler")
               for i in range(4)],
    ),
}


def write(rule, name, alerts):
    alerts = sorted(alerts + noise("acme"), key=lambda a: a["timestamp"])
    path = os.path.join(HERE, rule, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for a in alerts:
            f.write(json.dumps(a, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    for rule, (positive, negative) in SCENARIOS.items():
        _seq[0] = 0
        write(rule, "positive.ndjson", positive)
        _seq[0] = 0
        write(rule, "negative.ndjson", negative)
