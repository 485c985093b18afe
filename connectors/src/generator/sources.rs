//! Log-source formats for Linux hosts, web servers and the manager side:
//! each function fills a [`Draft`] the way Wazuh's decoders would from the
//! original line (sshd, PAM, sudo, useradd, cron, dpkg/yum, kernel, systemd,
//! web access logs, Suricata eve.json, syscheck, auditd, netstat, VirusTotal,
//! MS Graph). Windows sources are in `windows.rs`.

use std::fmt::{self, Write as _};

use super::alert::{Draft, Who};
use super::civil;
use super::json::push_hex;
use super::rng::Rng;
use super::tenant::Tenant;

/// MD5, SHA-1 and SHA-256 of a (synthetic) file, derived from a key so that
/// the same file has the same hashes wherever it appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hashes {
    pub md5: [u8; 16],
    pub sha1: [u8; 20],
    pub sha256: [u8; 32],
    pub imphash: [u8; 16],
}

impl Hashes {
    pub(crate) fn from_key(key: u64) -> Hashes {
        let mut r = Rng::new(key ^ 0x4A5B_0000_0000_0001);
        let mut h = Hashes { md5: [0; 16], sha1: [0; 20], sha256: [0; 32], imphash: [0; 16] };
        r.fill(&mut h.md5);
        r.fill(&mut h.sha1);
        r.fill(&mut h.sha256);
        r.fill(&mut h.imphash);
        h
    }

    /// Sysmon's `Hashes` field: `SHA1=…,MD5=…,SHA256=…,IMPHASH=…` (upper case).
    pub(crate) fn write_sysmon(&self, out: &mut String) {
        let start = out.len();
        out.push_str("SHA1=");
        push_hex(out, &self.sha1);
        out.push_str(",MD5=");
        push_hex(out, &self.md5);
        out.push_str(",SHA256=");
        push_hex(out, &self.sha256);
        out.push_str(",IMPHASH=");
        push_hex(out, &self.imphash);
        let upper = out[start..].to_ascii_uppercase();
        out.truncate(start);
        out.push_str(&upper);
    }
}

/// The state of a file as syscheck records it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileState {
    pub size: u64,
    /// Unix seconds.
    pub mtime: i64,
    pub hashes: Hashes,
    pub inode: u64,
}

/// Owner and permissions of a monitored file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner<'a> {
    pub uname: &'a str,
    pub gname: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub perm: &'a str,
}

pub(crate) const ROOT: Owner<'static> = Owner { uname: "root", gname: "root", uid: 0, gid: 0, perm: "rw-r--r--" };

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FimEvent {
    Added,
    Modified,
    Deleted,
}

/// Starts a syslog line `Nov  1 00:00:03 host program[pid]: ` and sets the
/// predecoder.
fn syslog_head(d: &mut Draft, t: &Tenant, a: usize, ts: i64, program: &'static str, pid: Option<u32>, location: &str) {
    d.who = Who::Agent(a);
    d.program = Some(program);
    civil::write_syslog(&mut d.full_log, ts);
    d.full_log.push(' ');
    d.full_log.push_str(&t.agents[a].name);
    d.full_log.push(' ');
    d.full_log.push_str(program);
    if let Some(p) = pid {
        let _ = write!(d.full_log, "[{p}]");
    }
    d.full_log.push_str(": ");
    d.location.push_str(location);
}

/// A syslog line with an arbitrary message.
#[allow(clippy::too_many_arguments)]
pub(crate) fn syslog(
    d: &mut Draft,
    t: &Tenant,
    a: usize,
    ts: i64,
    rule: u32,
    program: &'static str,
    pid: Option<u32>,
    location: &str,
    decoder: &'static str,
    msg: fmt::Arguments<'_>,
) {
    d.rule = rule;
    syslog_head(d, t, a, ts, program, pid, location);
    let _ = d.full_log.write_fmt(msg);
    d.decoder = decoder;
}

// ---------------------------------------------------------------- sshd / PAM

/// `Invalid user admin from 203.0.113.9 port 51234` (5710, or 5712 when it
/// completes a brute force).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sshd_invalid_user(
    d: &mut Draft,
    t: &Tenant,
    a: usize,
    ts: i64,
    rule: u32,
    pid: u32,
    ip: &str,
    port: u16,
    user: &str,
) {
    d.rule = rule;
    let loc = t.agents[a].auth_log();
    syslog_head(d, t, a, ts, "sshd", Some(pid), loc);
    let _ = write!(d.full_log, "Invalid user {user} from {ip} port {port}");
    sshd_decoder(d);
    d.data.begin();
    d.data.str("srcip", ip).num_str("srcport", u64::from(port)).str("srcuser", user);
    d.data.end();
}

/// `Failed password for root from 203.0.113.9 port 51234 ssh2` (5716 / 5720).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sshd_failed_password(
    d: &mut Draft,
    t: &Tenant,
    a: usize,
    ts: i64,
    rule: u32,
    pid: u32,
    ip: &str,
    port: u16,
    user: &str,
) {
    d.rule = rule;
    let loc = t.agents[a].auth_log();
    syslog_head(d, t, a, ts, "sshd", Some(pid), loc);
    let _ = write!(d.full_log, "Failed password for {user} from {ip} port {port} ssh2");
    sshd_decoder(d);
    d.data.begin();
    d.data.str("srcip", ip).num_str("srcport", u64::from(port)).str("dstuser", user);
    d.data.end();
}

/// `Did not receive identification string from …` (5706, scanners).
pub(crate) fn sshd_no_ident(d: &mut Draft, t: &Tenant, a: usize, ts: i64, pid: u32, ip: &str, port: u16) {
    d.rule = 5706;
    let loc = t.agents[a].auth_log();
    syslog_head(d, t, a, ts, "sshd", Some(pid), loc);
    let _ = write!(d.full_log, "Did not receive identification string from {ip} port {port}");
    sshd_decoder(d);
    d.data.begin();
    d.data.str("srcip", ip).num_str("srcport", u64::from(port));
    d.data.end();
}

/// `Accepted publickey|password for u from ip port p ssh2` (5715).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sshd_accepted(
    d: &mut Draft,
    t: &Tenant,
    a: usize,
    ts: i64,
    pid: u32,
    ip: &str,
    port: u16,
    user: &str,
    key_fingerprint: Option<u64>,
) {
    d.rule = 5715;
    let loc = t.agents[a].auth_log();
    syslog_head(d, t, a, ts, "sshd", Some(pid), loc);
    match key_fingerprint {
        Some(k) => {
            let _ = write!(d.full_log, "Accepted publickey for {user} from {ip} port {port} ssh2: ED25519 SHA256:");
            push_b64ish(&mut d.full_log, k, 43);
        }
        None => {
            let _ = write!(d.full_log, "Accepted password for {user} from {ip} port {port} ssh2");
        }
    }
    sshd_decoder(d);
    d.data.begin();
    d.data.str("srcip", ip).num_str("srcport", u64::from(port)).str("dstuser", user);
    d.data.end();
}

fn sshd_decoder(d: &mut Draft) {
    d.decoder_parent = Some("sshd");
    d.decoder = "sshd";
}

/// `pam_unix(sshd:session): session opened|closed for user …` (5501 / 5502).
#[allow(clippy::too_many_arguments)]
pub(crate) fn pam_session(d: &mut Draft, t: &Tenant, a: usize, ts: i64, pid: u32, user: &str, uid: u32, opened: bool) {
    let loc = t.agents[a].auth_log();
    syslog_head(d, t, a, ts, "sshd", Some(pid), loc);
    if opened {
        d.rule = 5501;
        let _ = write!(d.full_log, "pam_unix(sshd:session): session opened for user {user}(uid={uid}) by (uid=0)");
    } else {
        d.rule = 5502;
        let _ = write!(d.full_log, "pam_unix(sshd:session): session closed for user {user}");
    }
    d.decoder_parent = Some("pam");
    d.decoder = "pam";
    d.data.begin();
    d.data.str("dstuser", user);
    if opened {
        d.data.str("uid", "0");
    }
    d.data.end();
}

/// `sudo: alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=…`
/// (5402, or 5403 the first time a user runs sudo).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sudo(
    d: &mut Draft,
    t: &Tenant,
    a: usize,
    ts: i64,
    rule: u32,
    user: &str,
    tty: Option<&str>,
    pwd: &str,
    command: &str,
) {
    d.rule = rule;
    let loc = t.agents[a].auth_log();
    syslog_head(d, t, a, ts, "sudo", None, loc);
    let _ = write!(d.full_log, "{user:>8} : ");
    if let Some(tty) = tty {
        let _ = write!(d.full_log, "TTY={tty} ; ");
    }
    let _ = write!(d.full_log, "PWD={pwd} ; USER=root ; COMMAND={command}");
    d.decoder = "sudo";
    d.data.begin();
    d.data.str("srcuser", user);
    if let Some(tty) = tty {
        d.data.str("tty", tty);
    }
    d.data.str("pwd", pwd).str("dstuser", "root").str("command", command);
    d.data.end();
}

/// `groupadd[…]: new group: name=…, GID=…` (5901).
pub(crate) fn groupadd(d: &mut Draft, t: &Tenant, a: usize, ts: i64, pid: u32, name: &str, gid: u32) {
    d.rule = 5901;
    let loc = t.agents[a].auth_log();
    syslog_head(d, t, a, ts, "groupadd", Some(pid), loc);
    let _ = write!(d.full_log, "new group: name={name}, GID={gid}");
    d.decoder = "groupadd";
    d.data.begin();
    d.data.str("group", name);
    d.data.end();
}

/// `useradd[…]: new user: name=…, UID=…, …` (5902).
#[allow(clippy::too_many_arguments)]
pub(crate) fn useradd(d: &mut Draft, t: &Tenant, a: usize, ts: i64, pid: u32, name: &str, uid: u32, shell: &str) {
    d.rule = 5902;
    let loc = t.agents[a].auth_log();
    syslog_head(d, t, a, ts, "useradd", Some(pid), loc);
    let _ = write!(
        d.full_log,
        "new user: name={name}, UID={uid}, GID={uid}, home=/home/{name}, shell={shell}, from=/dev/pts/1"
    );
    d.decoder = "useradd";
    d.data.begin();
    d.data.str("dstuser", name).num_str("uid", u64::from(uid)).num_str("gid", u64::from(uid));
    d.data.str("home", &format!("/home/{name}")).str("shell", shell);
    d.data.end();
}

/// `crontab[…]: (root) REPLACE (root)` (2833).
pub(crate) fn crontab_root(d: &mut Draft, t: &Tenant, a: usize, ts: i64, pid: u32) {
    d.rule = 2833;
    let loc = t.agents[a].syslog();
    syslog_head(d, t, a, ts, "crontab", Some(pid), loc);
    d.full_log.push_str("(root) REPLACE (root)");
    d.decoder = "crontab";
    d.data.begin();
    d.data.str("srcuser", "root").str("dstuser", "root");
    d.data.end();
}

/// A package install: dpkg.log on Debian/Ubuntu (2902), yum.log on RHEL (2932).
pub(crate) fn package_installed(d: &mut Draft, t: &Tenant, a: usize, ts: i64, pkg: &str, version: &str) {
    d.who = Who::Agent(a);
    if t.agents[a].os == super::tenant::Os::Rhel {
        d.rule = 2932;
        let c = civil::Civil::from_ms(ts);
        const M: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let _ = write!(
            d.full_log,
            "{} {:02} {:02}:{:02}:{:02} Installed: {pkg}-{version}.el9.x86_64",
            M[(c.month - 1) as usize],
            c.day,
            c.hour,
            c.minute,
            c.second
        );
        d.decoder = "yum";
        d.location.push_str("/var/log/yum.log");
        d.data.begin();
        d.data.strf("package", format_args!("{pkg}-{version}.el9.x86_64"));
        d.data.end();
    } else {
        d.rule = 2902;
        civil::write_dpkg(&mut d.full_log, ts);
        let _ = write!(d.full_log, " status installed {pkg}:amd64 {version}");
        d.decoder = "dpkg-decoder";
        d.location.push_str("/var/log/dpkg.log");
        d.data.begin();
        d.data.strf("package", format_args!("{pkg}:amd64")).str("version", version);
        d.data.end();
    }
}

// ---------------------------------------------------------------- web

/// One combined-format access-log line (31101, 31103, 31106, 31151, 31164).
#[allow(clippy::too_many_arguments)]
pub(crate) fn web_access(
    d: &mut Draft,
    t: &Tenant,
    a: usize,
    ts: i64,
    rule: u32,
    ip: &str,
    method: &str,
    url: &str,
    status: u16,
    size: u32,
    ua: &str,
) {
    d.rule = rule;
    d.who = Who::Agent(a);
    let _ = write!(d.full_log, "{ip} - - [");
    civil::write_clf(&mut d.full_log, ts);
    let _ = write!(d.full_log, "] \"{method} {url} HTTP/1.1\" {status} {size} \"-\" \"{ua}\"");
    d.decoder = "web-accesslog";
    d.location.push_str(t.agents[a].access_log());
    d.data.begin();
    d.data.str("protocol", method).str("srcip", ip).num_str("id", u64::from(status)).str("url", url);
    d.data.end();
}

// ---------------------------------------------------------------- Suricata

/// A Suricata rule as it appears in eve.json alerts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sig {
    pub sid: u32,
    pub rev: u32,
    pub msg: &'static str,
    pub category: &'static str,
    pub severity: u8,
}

/// One flow of a Suricata alert.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flow<'a> {
    pub src: &'a str,
    pub sport: u16,
    pub dst: &'a str,
    pub dport: u16,
    pub proto: &'static str,
    pub app: Option<&'static str>,
}

/// A Suricata `event_type: alert` decoded by Wazuh's JSON decoder (86601;
/// the rule has `no_full_log`, so the eve line lives in `data` only).
pub(crate) fn suricata(d: &mut Draft, t: &Tenant, ts: i64, rng: &mut Rng, sig: &Sig, f: &Flow<'_>) {
    d.rule = 86601;
    d.who = Who::Agent(t.ids);
    d.decoder = "json";
    d.location.push_str("/var/log/suricata/eve.json");
    let micros = rng.below(1000) as u32;
    d.data.begin();
    d.data.str_with("timestamp", |b| civil::write_eve(b, ts, micros));
    d.data.num_str("flow_id", rng.range(100_000_000_000_000, 2_000_000_000_000_000));
    d.data.str("in_iface", "ens192").str("event_type", "alert");
    d.data.str("src_ip", f.src).num_str("src_port", u64::from(f.sport));
    d.data.str("dest_ip", f.dst).num_str("dest_port", u64::from(f.dport));
    d.data.str("proto", f.proto);
    if let Some(app) = f.app {
        d.data.str("app_proto", app);
    }
    d.data.obj("alert");
    d.data.str("action", "allowed").str("gid", "1");
    d.data.num_str("signature_id", u64::from(sig.sid)).num_str("rev", u64::from(sig.rev));
    d.data.str("signature", sig.msg).str("category", sig.category);
    d.data.num_str("severity", u64::from(sig.severity));
    d.data.end();
    d.data.end();
    d.fields.set("alert.signature", sig.msg);
}

// ---------------------------------------------------------------- syscheck

/// A file integrity event (554 added, 550 modified, 553 deleted).
#[allow(clippy::too_many_arguments)]
pub(crate) fn fim(
    d: &mut Draft,
    t: &Tenant,
    a: usize,
    event: FimEvent,
    path: &str,
    mode: &str,
    before: Option<&FileState>,
    after: &FileState,
    owner: &Owner<'_>,
) {
    d.who = Who::Agent(a);
    d.location.push_str("syscheck");
    let windows = t.agents[a].is_windows();
    let (rule, decoder, verb) = match event {
        FimEvent::Added => (554, "syscheck_new_entry", "added"),
        FimEvent::Modified => (550, "syscheck_integrity_changed", "modified"),
        FimEvent::Deleted => (553, "syscheck_deleted", "deleted"),
    };
    d.rule = rule;
    d.decoder = decoder;
    let _ = write!(d.full_log, "File '{path}' {verb}\nMode: {mode}\n");
    if let (FimEvent::Modified, Some(b)) = (event, before) {
        let fl = &mut d.full_log;
        fl.push_str("Changed attributes: ");
        if b.size != after.size {
            fl.push_str("size,");
        }
        fl.push_str("mtime,md5,sha1,sha256\n");
        if b.size != after.size {
            let _ = writeln!(fl, "Size changed from '{}' to '{}'", b.size, after.size);
        }
        let _ = writeln!(fl, "Old modification time was: '{}', now it is '{}'", b.mtime, after.mtime);
        for (label, old, new) in [
            ("md5", &b.hashes.md5[..], &after.hashes.md5[..]),
            ("sha1", &b.hashes.sha1[..], &after.hashes.sha1[..]),
            ("sha256", &b.hashes.sha256[..], &after.hashes.sha256[..]),
        ] {
            let _ = write!(fl, "Old {label}sum was: '");
            push_hex(fl, old);
            let _ = write!(fl, "'\nNew {label}sum is : '");
            push_hex(fl, new);
            fl.push_str("'\n");
        }
    }
    let s = &mut d.syscheck;
    s.begin();
    s.str("path", path).str("mode", mode);
    if let Some(b) = before {
        s.num_str("size_before", b.size);
    }
    s.num_str("size_after", after.size);
    if windows {
        s.str("uid_after", "S-1-5-32-544");
    } else {
        s.str("perm_after", owner.perm);
        s.num_str("uid_after", u64::from(owner.uid)).num_str("gid_after", u64::from(owner.gid));
    }
    if let Some(b) = before {
        s.hex("md5_before", &b.hashes.md5);
    }
    s.hex("md5_after", &after.hashes.md5);
    if let Some(b) = before {
        s.hex("sha1_before", &b.hashes.sha1);
    }
    s.hex("sha1_after", &after.hashes.sha1);
    if let Some(b) = before {
        s.hex("sha256_before", &b.hashes.sha256);
    }
    s.hex("sha256_after", &after.hashes.sha256);
    s.str("uname_after", owner.uname);
    if !windows {
        s.str("gname_after", owner.gname);
    }
    if let Some(b) = before {
        s.str_with("mtime_before", |o| civil::write_iso_seconds(o, b.mtime * 1000));
    }
    s.str_with("mtime_after", |o| civil::write_iso_seconds(o, after.mtime * 1000));
    if windows {
        s.arr_str("attrs_after", &["ARCHIVE"]);
    } else {
        s.num_str("inode_after", after.inode);
    }
    if let (FimEvent::Modified, Some(b)) = (event, before) {
        s.arr("changed_attributes");
        if b.size != after.size {
            s.elem_str("size");
        }
        s.elem_str("mtime").elem_str("md5").elem_str("sha1").elem_str("sha256");
        s.end_arr();
    }
    s.str("event", verb);
    s.end();
}

// ---------------------------------------------------------------- auditd, netstat

/// An `execve` audited with the `audit-wazuh-c` key (80792).
#[allow(clippy::too_many_arguments)]
pub(crate) fn audit_command(
    d: &mut Draft,
    a: usize,
    ts: i64,
    serial: u64,
    ppid: u32,
    pid: u32,
    uid: u32,
    cwd: &str,
    exe: &str,
    argv: &[&str],
) {
    d.rule = 80792;
    d.who = Who::Agent(a);
    d.decoder_parent = Some("auditd");
    d.decoder = "auditd";
    d.location.push_str("/var/log/audit/audit.log");
    let sec = ts.div_euclid(1000);
    let ms = ts.rem_euclid(1000);
    let comm = argv.first().copied().unwrap_or(exe);
    let comm = comm.rsplit('/').next().unwrap_or(comm);
    let _ = write!(
        d.full_log,
        "type=SYSCALL msg=audit({sec}.{ms:03}:{serial}): arch=c000003e syscall=59 success=yes exit=0 a0=55d0c3e1b2a0 a1=55d0c3e1b2f0 a2=55d0c3e1b310 a3=8 items=2 ppid={ppid} pid={pid} auid=4294967295 uid={uid} gid={uid} euid={uid} suid={uid} fsuid={uid} egid={uid} sgid={uid} fsgid={uid} tty=(none) ses=4294967295 comm=\"{comm}\" exe=\"{exe}\" key=\"audit-wazuh-c\" type=EXECVE msg=audit({sec}.{ms:03}:{serial}): argc={}",
        argv.len()
    );
    for (i, arg) in argv.iter().enumerate() {
        let _ = write!(d.full_log, " a{i}=\"{arg}\"");
    }
    let _ = write!(d.full_log, " type=CWD msg=audit({sec}.{ms:03}:{serial}): cwd=\"{cwd}\"");
    let j = &mut d.data;
    j.begin();
    j.obj("audit");
    j.str("type", "SYSCALL").num_str("id", serial).str("syscall", "59").str("exit", "0");
    j.num_str("ppid", u64::from(ppid)).num_str("pid", u64::from(pid));
    j.str("auid", "4294967295");
    for k in ["uid", "gid", "euid", "suid", "fsuid", "egid", "sgid", "fsgid"] {
        j.num_str(k, u64::from(uid));
    }
    j.str("tty", "(none)").str("session", "4294967295");
    j.str("command", comm).str("exe", exe).str("key", "audit-wazuh-c").str("cwd", cwd);
    j.obj("execve");
    for (i, arg) in argv.iter().enumerate().take(4) {
        j.str(["a0", "a1", "a2", "a3"][i], arg);
    }
    j.end();
    j.str("success", "yes").str("arch", "c000003e");
    j.end();
    j.end();
    d.fields.set("audit.exe", exe);
}

/// The `netstat listening ports` command output changed (533).
pub(crate) fn netstat_changed(d: &mut Draft, a: usize, before: &[(u16, &str)], added: (u16, &str)) {
    d.rule = 533;
    d.who = Who::Agent(a);
    d.decoder = "ossec";
    d.location.push_str("netstat listening ports");
    let write_ports = |out: &mut String, with_new: bool| {
        out.push_str("ossec: output: 'netstat listening ports':");
        let mut ports: Vec<(u16, &str)> = before.to_vec();
        if with_new {
            ports.push(added);
        }
        ports.sort_unstable();
        for (port, prog) in ports {
            let bind = if port == 53 || port == 631 { "127.0.0.1" } else { "0.0.0.0" };
            let _ = write!(out, "\ntcp {bind}:{port} 0.0.0.0:* {prog}");
        }
    };
    write_ports(&mut d.full_log, true);
    d.previous_output.push_str("Previous output:\n");
    write_ports(&mut d.previous_output, false);
}

// ---------------------------------------------------------------- integrations

/// The VirusTotal integration's verdict on a file from a FIM alert (87105).
#[allow(clippy::too_many_arguments)]
pub(crate) fn virustotal(
    d: &mut Draft,
    a: usize,
    ts: i64,
    source_alert_id: &str,
    file: &str,
    hashes: &Hashes,
    positives: u32,
    total: u32,
) {
    d.rule = 87105;
    d.who = Who::Agent(a);
    d.decoder = "json";
    d.location.push_str("virustotal");
    let j = &mut d.data;
    j.begin();
    j.obj("virustotal");
    j.str("found", "1").str("malicious", "1");
    j.obj("source");
    j.str("alert_id", source_alert_id).str("file", file);
    j.hex("md5", &hashes.md5).hex("sha1", &hashes.sha1);
    j.end();
    j.hex("sha1", &hashes.sha1);
    // First seen by VirusTotal a little before it reached this tenant.
    j.str_with("scan_date", |o| civil::write_dpkg(o, ts - 3 * 3_600_000 - 17_000));
    j.num_str("positives", u64::from(positives)).num_str("total", u64::from(total));
    j.str_with("permalink", |o| {
        o.push_str("https://www.virustotal.com/gui/file/");
        push_hex(o, &hashes.sha256);
        o.push_str("/detection");
    });
    j.end();
    j.str("integration", "virustotal");
    j.end();
    d.fields.set("virustotal.source.file", file);
    let mut p = String::new();
    let _ = write!(p, "{positives}");
    d.fields.set("virustotal.positives", &p);
}

/// A Microsoft Defender alert pulled by the ms-graph module on the manager:
/// data exfiltration from `host` by `user` to `dst_ip` (99548).
#[allow(clippy::too_many_arguments)]
pub(crate) fn msgraph_exfiltration(
    d: &mut Draft,
    t: &Tenant,
    ts: i64,
    rng: &mut Rng,
    host: usize,
    user: &str,
    dst_ip: &str,
    first_activity: i64,
) {
    d.rule = 99548;
    d.who = Who::Manager;
    d.decoder = "json";
    d.location.push_str("ms-graph");
    let ag = &t.agents[host];
    let mut guid = String::new();
    write_guid(&mut guid, rng, false);
    let mut tenant_id = String::new();
    write_guid(&mut tenant_id, &mut Rng::derive(&[fnv(&t.name), 77]), false);
    let j = &mut d.data;
    j.begin();
    j.str("integration", "ms-graph");
    j.obj("ms-graph");
    j.strf("id", format_args!("da{}", &guid[1..guid.len() - 1]));
    j.strf("providerAlertId", format_args!("da{}", &guid[1..guid.len() - 1]));
    j.num_str("incidentId", rng.range(1000, 99_999));
    j.str("status", "new").str("severity", "medium");
    j.str("classification", "unknown").str("determination", "unknown");
    j.str("serviceSource", "microsoftDefenderForEndpoint");
    j.str("detectionSource", "microsoftDefenderForEndpoint");
    j.str("detectorId", "b7c3d1e0-5e6f-4a2b-9c8d-7e6f5a4b3c2d");
    j.str("title", "Possible data exfiltration");
    j.strf(
        "description",
        format_args!(
            "A large volume of data was sent from {} to an external address ({dst_ip}) shortly after archive files were created by {user}.",
            ag.fqdn
        ),
    );
    j.str("category", "Exfiltration");
    j.str_with("createdDateTime", |o| civil::write_iso_z(o, ts - 45_000));
    j.str_with("lastUpdateDateTime", |o| civil::write_iso_z(o, ts - 5_000));
    j.str_with("firstActivityDateTime", |o| civil::write_iso_z(o, first_activity));
    j.str_with("lastActivityDateTime", |o| civil::write_iso_z(o, ts - 60_000));
    j.arr_str("mitreTechniques", &["T1048", "T1567.002"]);
    j.str("tenantId", &tenant_id[1..tenant_id.len() - 1]);
    j.arr("evidence");
    j.elem_obj();
    j.str("@odata.type", "#microsoft.graph.security.deviceEvidence");
    j.str("deviceDnsName", &ag.fqdn).str("osPlatform", "Windows11");
    j.arr_str("ipInterfaces", &[&ag.ip]);
    j.arr("loggedOnUsers").elem_obj();
    j.str("accountName", user).str("domainName", &t.domain);
    j.end().end_arr();
    j.end();
    j.elem_obj();
    j.str("@odata.type", "#microsoft.graph.security.ipEvidence");
    j.str("ipAddress", dst_ip);
    j.end();
    j.end_arr();
    j.str("resource", "security").str("relationship", "alerts_v2");
    j.end();
    j.end();
}

// ---------------------------------------------------------------- helpers

/// A GUID `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`.
pub(crate) fn write_guid(out: &mut String, rng: &mut Rng, upper: bool) {
    let mut b = [0u8; 16];
    rng.fill(&mut b);
    let start = out.len();
    out.push('{');
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        push_hex(out, std::slice::from_ref(byte));
    }
    out.push('}');
    if upper {
        let u = out[start..].to_ascii_uppercase();
        out.truncate(start);
        out.push_str(&u);
    }
}

/// Base64-looking text of `len` characters derived from `key`.
fn push_b64ish(out: &mut String, key: u64, len: usize) {
    const ALPHA: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut r = Rng::new(key);
    for _ in 0..len {
        out.push(ALPHA[r.index(64)] as char);
    }
}

/// FNV-1a of a string (stable keys for per-name random streams).
pub(crate) fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3))
}
