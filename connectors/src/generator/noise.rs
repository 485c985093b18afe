//! Background noise: the alert kinds that really drown a SOC, each produced
//! by a small process that emits one alert per wake-up and says when it
//! wakes up next (the generator keeps all processes in one timer heap).
//!
//! Processes whose volume follows the configured rate ("scaled") stretch
//! their idle gaps by the generator's dilation factor; processes that follow
//! wall-clock schedules (FIM scans, nightly package updates) do not.

use std::fmt::Write as _;

use super::alert::Draft;
use super::catalog::{self, Dir};
use super::civil::hour_and_weekday;
use super::rng::{Rng, mix};
use super::sources::{self, FileState, FimEvent, Flow, Hashes, Owner, ROOT, fnv};
use super::tenant::{Os, Tenant};
use super::windows::{self, FailReason, Logon, Process};

/// What a process gets when it wakes up.
pub(crate) struct Env<'a> {
    pub d: &'a mut Draft,
    pub t: &'a mut Tenant,
    pub rng: &'a mut Rng,
    /// The scheduled event time (file order).
    pub now: i64,
    /// The timestamp written into the alert (may lag `now` a little).
    pub ts: i64,
    /// Multiplier on the idle gaps of scaled processes (rate control).
    pub dil: f64,
    /// Internet scanners seen by every tenant.
    pub scanners: &'a [String],
}

impl Env<'_> {
    /// An idle gap with the given mean, stretched by the dilation.
    fn idle(&mut self, mean_ms: f64) -> i64 {
        (self.rng.exp(mean_ms.max(1.0)) * self.dil).max(1.0) as i64
    }

    /// The gap after one event of a burst: within the burst while `left`
    /// events remain, else an idle gap of mean `idle_ms` (at least 1 s).
    fn next_in_burst(&mut self, left: u32, within: (u64, u64), idle_ms: f64) -> i64 {
        if left > 0 { self.within(within.0, within.1) } else { self.idle(idle_ms.max(1_000.0)) }
    }

    /// A gap inside a burst: uniform in `[lo, hi]` ms, shortened only when
    /// the stream must be far denser than idle gaps alone allow.
    fn within(&mut self, lo: u64, hi: u64) -> i64 {
        (self.rng.range(lo, hi) as f64 * (4.0 * self.dil).min(1.0)).max(1.0) as i64
    }

    fn public_ip(&mut self) -> String {
        public_ip(self.rng)
    }

    fn scanner_ip(&mut self) -> String {
        if self.rng.chance(0.75) && !self.scanners.is_empty() {
            self.rng.pick(self.scanners).clone()
        } else {
            public_ip(self.rng)
        }
    }

    fn pid(&mut self) -> u32 {
        self.rng.range(1200, 65_000) as u32
    }

    fn port(&mut self) -> u16 {
        self.rng.range(32_768, 60_999) as u16
    }
}

/// A random routable IPv4 address outside private and reserved ranges.
pub(crate) fn public_ip(rng: &mut Rng) -> String {
    loop {
        let ip = rng.next_u64() as u32;
        let (a, b) = (ip >> 24, (ip >> 16) & 0xff);
        let reserved = a == 0
            || a == 10
            || a == 127
            || a >= 224
            || (a == 100 && (64..128).contains(&b))
            || (a == 169 && b == 254)
            || (a == 172 && (16..32).contains(&b))
            || (a == 192 && b == 168)
            || (a == 198 && (b == 18 || b == 19));
        if !reserved {
            return format!("{}.{}.{}.{}", a, b, (ip >> 8) & 0xff, ip & 0xff);
        }
    }
}

/// How busy people are at `ms` (≈1 on average over a week).
pub(crate) fn activity(ms: i64) -> f64 {
    let (h, weekday) = hour_and_weekday(ms);
    if weekday && (8..18).contains(&h) { 1.9 } else { 0.6 }
}

/// The last lines of a frequency-rule candidate, for `previous_output`.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    lines: Vec<(i64, String)>,
    head: usize,
    len: usize,
    cap: usize,
}

impl Ring {
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.head = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Keeps the last `cap` lines (`cap` must not change between clears).
    pub(crate) fn push(&mut self, ts: i64, line: &str, cap: usize) {
        self.cap = cap;
        if self.head < self.lines.len() {
            let slot = &mut self.lines[self.head];
            slot.0 = ts;
            slot.1.clear();
            slot.1.push_str(line);
        } else {
            self.lines.push((ts, line.to_string()));
        }
        self.head = (self.head + 1) % cap;
        self.len = (self.len + 1).min(cap);
    }

    /// Time of the oldest line held (call only when not empty).
    pub(crate) fn oldest(&self) -> i64 {
        self.lines[(self.head + self.cap - self.len) % self.cap].0
    }

    /// Newest first, joined by newlines (Wazuh's `previous_output`).
    pub(crate) fn write_newest_first(&self, out: &mut String) {
        for i in 0..self.len {
            let idx = (self.head + self.cap - 1 - i) % self.cap;
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&self.lines[idx].1);
        }
    }
}

/// A noise process and the tenant it belongs to.
#[derive(Debug)]
pub(crate) struct Proc {
    pub tenant: usize,
    pub kind: Noise,
}

#[derive(Debug)]
pub(crate) enum Noise {
    WebStorm(WebStorm),
    Scanner(Scanner),
    Ids(Ids),
    SshAuto(SshAuto),
    WinLogons(WinLogons),
    Repeater(Repeater),
    Fim(Fim),
    Packages(Packages),
    Rare(Rare),
    AuthorisedScan(AuthorisedScan),
}

impl Proc {
    /// Emits one alert into `e.d`; returns the next wake-up time.
    pub(crate) fn emit(&mut self, e: &mut Env<'_>) -> i64 {
        match &mut self.kind {
            Noise::WebStorm(p) => p.emit(e),
            Noise::Scanner(p) => p.emit(e),
            Noise::Ids(p) => p.emit(e),
            Noise::SshAuto(p) => p.emit(e),
            Noise::WinLogons(p) => p.emit(e),
            Noise::Repeater(p) => p.emit(e),
            Noise::Fim(p) => p.emit(e),
            Noise::Packages(p) => p.emit(e),
            Noise::Rare(p) => p.emit(e),
            Noise::AuthorisedScan(p) => p.emit(e),
        }
    }

    /// The first wake-up, spread over one idle period from `start`.
    pub(crate) fn first(&mut self, start: i64, rng: &mut Rng) -> i64 {
        let spread = |mean: f64, rng: &mut Rng| start + (rng.f64() * mean.min(4.0 * 3_600_000.0)) as i64;
        match &mut self.kind {
            Noise::WebStorm(p) => spread(WebStorm::MEAN_SIZE / p.rate, rng),
            Noise::Scanner(p) => spread(p.mean_size() / p.rate, rng),
            Noise::Ids(p) => spread(Ids::MEAN_SIZE / p.rate, rng),
            Noise::SshAuto(p) => spread(SshAuto::MEAN_SIZE / p.rate, rng),
            Noise::WinLogons(p) => spread(1.0 / p.rate, rng),
            Noise::Repeater(p) => {
                // Some loops are already running when the stream starts.
                if rng.chance(0.35) {
                    p.on_until = start + (rng.f64() * p.on_ms) as i64;
                    start + (rng.f64() * p.period) as i64
                } else {
                    let t = start + (rng.f64() * p.off_ms) as i64;
                    p.on_until = t + p.on_ms as i64;
                    t
                }
            }
            Noise::Fim(p) => p.first(start, rng),
            Noise::Packages(p) => p.first(start, rng),
            Noise::Rare(p) => spread(Rare::MEAN_SIZE / p.rate, rng),
            // Fixed times, and no draw from the shared random stream.
            Noise::AuthorisedScan(p) => start + p.offset,
        }
    }

    /// Expected alerts per millisecond of a wall-clock process (FIM scans,
    /// package updates); `None` for processes that follow the configured rate.
    pub(crate) fn expected_rate(&self) -> Option<f64> {
        match &self.kind {
            Noise::Fim(p) => Some(p.rate()),
            Noise::Packages(p) => Some(p.rate()),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------- authorised scans

/// The tenant's authorised vulnerability scan: every `period` a scanning
/// service sweeps the same two web servers from one address of its pool,
/// with the same script each time (SSH login probes, then web attack
/// checks). Benign and unlabelled, it looks like an attack every time: the
/// recurring false positive a verdict prior is for. Off unless
/// `GeneratorConfig::recurring_scan` is set.
#[derive(Debug)]
pub(crate) struct AuthorisedScan {
    period: i64,
    /// First sweep, after the stream's start.
    offset: i64,
    sweep: u64,
    step: usize,
    sweep_start: i64,
}

/// One sweep on one host: (rule, what).
const SCAN_SCRIPT: [(u32, &str); 9] = [
    (5710, "admin"),
    (5710, "test"),
    (5710, "oracle"),
    (5712, "guest"),
    (31101, "/admin/"),
    (31101, "/phpmyadmin/"),
    (31103, "/index.php?id=1%27%20OR%20%271%27=%271"),
    (31106, "/search.php?q=%3Cscript%3Ealert(1)%3C/script%3E"),
    (31151, "/.git/config"),
];

impl AuthorisedScan {
    pub(crate) fn new(period: i64, offset: i64) -> Self {
        AuthorisedScan { period: period.max(60_000), offset, sweep: 0, step: 0, sweep_start: 0 }
    }

    fn emit(&mut self, e: &mut Env<'_>) -> i64 {
        if self.step == 0 {
            self.sweep_start = e.now;
        }
        let web = &e.t.web;
        let host = web[(self.step / SCAN_SCRIPT.len()) % web.len().min(2)];
        let (rule, what) = SCAN_SCRIPT[self.step % SCAN_SCRIPT.len()];
        let ip = format!("10.{}.250.{}", 20 + sources::fnv(&e.t.name) % 200, 10 + self.sweep % 8);
        let n = self.sweep * 100 + self.step as u64;
        match rule {
            5710 | 5712 => {
                let (pid, port) = (20_000 + (n % 9_000) as u32, 40_000 + (n % 20_000) as u16);
                sources::sshd_invalid_user(e.d, e.t, host, e.ts, rule, pid, &ip, port, what);
            }
            _ => {
                let status = match rule {
                    31101 => 404,
                    31151 => 403,
                    _ => 200,
                };
                let ua = "Mozilla/5.0 (compatible; Nessus SOAP)";
                sources::web_access(e.d, e.t, host, e.ts, rule, &ip, "GET", what, status, 512, ua);
            }
        }
        self.step += 1;
        if self.step < 2 * SCAN_SCRIPT.len() {
            return e.now + 2_000;
        }
        self.step = 0;
        self.sweep += 1;
        self.sweep_start + self.period
    }
}

// ---------------------------------------------------------------- web storms

/// 4xx storms on one web server: bots probing known paths and content
/// discovery tools, one source IP per storm (31101, 31151 once a storm
/// reaches 14 requests in 90 s).
#[derive(Debug)]
pub(crate) struct WebStorm {
    pub agent: usize,
    /// Alerts per millisecond.
    pub rate: f64,
    ip: String,
    left: u32,
    spacing: (u64, u64),
    ua: &'static str,
    dirb: bool,
    fired: bool,
    url: String,
    ring: Ring,
}

impl WebStorm {
    const MEAN_SIZE: f64 = 16.3;
    const MEAN_DURATION_MS: f64 = 102_000.0;

    pub(crate) fn new(agent: usize, rate: f64) -> Self {
        WebStorm {
            agent,
            rate,
            ip: String::new(),
            left: 0,
            spacing: (0, 0),
            ua: "",
            dirb: false,
            fired: false,
            url: String::new(),
            ring: Ring::default(),
        }
    }

    fn emit(&mut self, e: &mut Env<'_>) -> i64 {
        if self.left == 0 {
            let u = e.rng.f64();
            let (n, spacing) = if u < 0.4 {
                (e.rng.range(1, 3), (1_000, 10_000))
            } else if u < 0.96 {
                (e.rng.range(5, 30), (4_000, 15_000))
            } else {
                (e.rng.log_uniform(30.0, 400.0) as u64, (200, 1_500))
            };
            self.left = n as u32;
            self.spacing = spacing;
            self.dirb = n >= 30 && e.rng.chance(0.7);
            self.ua = if self.dirb { *e.rng.pick(catalog::DIRB_UAS) } else { *e.rng.pick(catalog::SCANNER_UAS) };
            self.ip = e.scanner_ip();
            self.fired = false;
            self.ring.clear();
        }
        self.url.clear();
        let status;
        let mut method = "GET";
        if self.dirb {
            let w = e.rng.pick(catalog::DIRB_WORDS);
            let x = e.rng.pick(catalog::DIRB_EXT);
            let _ = write!(self.url, "/{w}{x}");
            status = if e.rng.chance(0.9) { 404 } else { 403 };
        } else {
            let p = *e.rng.pick(catalog::SCAN_PATHS);
            self.url.push_str(p);
            if p.contains("login") || p == "/xmlrpc.php" {
                method = "POST";
            }
            let r = e.rng.f64();
            status = if r < 0.8 {
                404
            } else if r < 0.88 {
                400
            } else if r < 0.95 {
                403
            } else {
                405
            };
        }
        let nginx = e.t.agents[self.agent].web == Some(super::tenant::WebServer::Nginx);
        let size = match (nginx, status) {
            (true, 404) => 162,
            (true, 400) => 166,
            (true, 403) => 162,
            (true, _) => 166,
            (false, 404) => 196,
            (false, 403) => 199,
            (false, _) => 226,
        };
        let fire = !self.fired && self.ring.len() >= 13 && e.now - self.ring.oldest() <= 90_000;
        let rule = if fire { 31151 } else { 31101 };
        sources::web_access(e.d, e.t, self.agent, e.ts, rule, &self.ip, method, &self.url, status, size, self.ua);
        if fire {
            self.ring.write_newest_first(&mut e.d.previous_output);
            self.fired = true;
        }
        self.ring.push(e.now, &e.d.full_log, 13);
        self.left -= 1;
        e.now + e.next_in_burst(self.left, self.spacing, Self::MEAN_SIZE / self.rate - Self::MEAN_DURATION_MS)
    }
}

// ---------------------------------------------------------------- scanners

/// An internet scanner sweeping every internet-facing host of the tenant
/// from one IP within minutes (5706, 5710; 5712 when it lingers on a host).
#[derive(Debug)]
pub(crate) struct Scanner {
    pub rate: f64,
    hosts_n: usize,
    ip: String,
    hosts: Vec<usize>,
    hi: usize,
    host_left: u32,
    brute: Option<usize>,
    on_host: u32,
    pid: u32,
    ring: Ring,
}

impl Scanner {
    pub(crate) fn new(rate: f64, hosts_n: usize) -> Self {
        Scanner {
            rate,
            hosts_n,
            ip: String::new(),
            hosts: Vec::new(),
            hi: 0,
            host_left: 0,
            brute: None,
            on_host: 0,
            pid: 0,
            ring: Ring::default(),
        }
    }

    fn mean_size(&self) -> f64 {
        2.0 * self.hosts_n as f64 + 1.0
    }

    fn start_host(&mut self, e: &mut Env<'_>) {
        self.host_left = if self.brute == Some(self.hi) { e.rng.range(8, 11) as u32 } else { e.rng.range(1, 3) as u32 };
        self.on_host = 0;
        self.pid = e.pid();
        self.ring.clear();
    }

    fn emit(&mut self, e: &mut Env<'_>) -> i64 {
        if self.hi >= self.hosts.len() {
            self.ip = e.scanner_ip();
            self.hosts.clear();
            self.hosts.extend(e.t.internet_facing());
            e.rng.shuffle(&mut self.hosts);
            self.hi = 0;
            self.brute = if e.rng.chance(0.05) { Some(e.rng.index(self.hosts.len())) } else { None };
            self.start_host(e);
        }
        let host = self.hosts[self.hi];
        let port = e.port();
        self.pid += e.rng.range(1, 6) as u32;
        let brute = self.brute == Some(self.hi);
        if brute || e.rng.chance(0.6) {
            let user = *e.rng.pick(catalog::BOT_USERS);
            // The 8th invalid user from one source within 120 s is 5712.
            let rule = if brute && self.on_host == 7 { 5712 } else { 5710 };
            sources::sshd_invalid_user(e.d, e.t, host, e.ts, rule, self.pid, &self.ip, port, user);
            if rule == 5712 {
                self.ring.write_newest_first(&mut e.d.previous_output);
            }
            self.ring.push(e.now, &e.d.full_log, 7);
        } else {
            sources::sshd_no_ident(e.d, e.t, host, e.ts, self.pid, &self.ip, port);
        }
        self.on_host += 1;
        self.host_left -= 1;
        if self.host_left > 0 {
            return e.now + if brute { e.within(300, 2_500) } else { e.within(800, 4_000) };
        }
        self.hi += 1;
        if self.hi < self.hosts.len() {
            self.start_host(e);
            return e.now + e.within(5_000, 40_000);
        }
        let dur = self.hosts_n as f64 * 24_000.0;
        let idle = self.mean_size() / self.rate - dur;
        e.now + e.idle(idle.max(30_000.0))
    }
}

// ---------------------------------------------------------------- IDS

/// Suricata alerts on the tenant's sensor: scans and blocklisted sources
/// inbound, policy/info signatures outbound, stream anomalies inside.
#[derive(Debug)]
pub(crate) struct Ids {
    pub rate: f64,
    sig: usize,
    src: String,
    dst: String,
    sport: u16,
    dport: u16,
    left: u32,
}

fn sig_port(sid: u32, rng: &mut Rng) -> (u16, &'static str, Option<&'static str>) {
    match sid {
        2001219 => (22, "TCP", Some("ssh")),
        2002910 => (rng.range(5800, 5820) as u16, "TCP", None),
        2010935 => (1433, "TCP", None),
        2010937 => (3306, "TCP", None),
        2010939 => (5432, "TCP", None),
        2024364 | 2018959 | 2013028 | 2027390 | 2025275 => (80, "TCP", Some("http")),
        2100366 => (0, "ICMP", None),
        2027865 | 2033966 | 2014702 => (53, "UDP", Some("dns")),
        2016149 => (3478, "UDP", None),
        2001569 => (445, "TCP", Some("smb")),
        2210054 | 2260002 => (443, "TCP", Some("tls")),
        2221010 => (8080, "TCP", Some("http")),
        _ => (*rng.pick(&[22u16, 23, 80, 443, 445, 3389, 8080, 8443]), "TCP", None),
    }
}

impl Ids {
    const MEAN_SIZE: f64 = 4.0;
    const MEAN_DURATION_MS: f64 = 30_000.0;

    pub(crate) fn new(rate: f64) -> Self {
        Ids { rate, sig: 0, src: String::new(), dst: String::new(), sport: 0, dport: 0, left: 0 }
    }

    fn emit(&mut self, e: &mut Env<'_>) -> i64 {
        if self.left == 0 {
            self.sig = e.rng.index(catalog::IDS_NOISE.len());
            self.left = 1 + e.rng.exp(Self::MEAN_SIZE - 1.0).min(60.0) as u32;
            let (sig, dir) = catalog::IDS_NOISE[self.sig];
            match dir {
                Dir::Inbound => {
                    self.src = e.scanner_ip();
                    let facing: Vec<usize> = e.t.internet_facing().collect();
                    self.dst = e.t.agents[*e.rng.pick(&facing)].ip.clone();
                }
                Dir::Outbound => {
                    let ws = *e.rng.pick(&e.t.workstations);
                    self.src = e.t.agents[ws].ip.clone();
                    self.dst = public_ip(e.rng);
                }
                Dir::Internal => {
                    let n = e.t.agents.len();
                    self.src = e.t.agents[e.rng.index(n)].ip.clone();
                    self.dst = e.t.agents[e.rng.index(n)].ip.clone();
                }
            }
            let (port, _, _) = sig_port(sig.sid, e.rng);
            self.dport = port;
            self.sport = if port == 0 { 0 } else { e.port() };
        }
        let (sig, _) = catalog::IDS_NOISE[self.sig];
        let (_, proto, app) = sig_port(sig.sid, e.rng);
        let flow = Flow { src: &self.src, sport: self.sport, dst: &self.dst, dport: self.dport, proto, app };
        sources::suricata(e.d, e.t, e.ts, e.rng, &sig, &flow);
        if self.sport != 0 {
            self.sport = self.sport.wrapping_add(e.rng.range(1, 40) as u16).max(1024);
        }
        self.left -= 1;
        e.now + e.next_in_burst(self.left, (500, 30_000), Self::MEAN_SIZE / self.rate - Self::MEAN_DURATION_MS)
    }
}

// ---------------------------------------------------------------- SSH automation

/// Service accounts and admins logging in over SSH all day: accepted key,
/// PAM session, sudo commands, session closed (5715, 5501, 5402, 5502).
#[derive(Debug)]
pub(crate) struct SshAuto {
    pub rate: f64,
    stage: u8,
    host: usize,
    user: String,
    uid: u32,
    src: String,
    port: u16,
    pid: u32,
    key: Option<u64>,
    sudo_left: u32,
    human: bool,
    cmd: String,
}

impl SshAuto {
    const MEAN_SIZE: f64 = 5.5;
    const MEAN_DURATION_MS: f64 = 60_000.0;

    pub(crate) fn new(rate: f64) -> Self {
        SshAuto {
            rate,
            stage: 0,
            host: 0,
            user: String::new(),
            uid: 0,
            src: String::new(),
            port: 0,
            pid: 0,
            key: None,
            sudo_left: 0,
            human: false,
            cmd: String::new(),
        }
    }

    fn start(&mut self, e: &mut Env<'_>) {
        let t = &*e.t;
        let hosts: Vec<usize> = t.internet_facing().collect();
        let human = e.rng.chance(0.25 * activity(e.now));
        self.human = human;
        self.user.clear();
        if human {
            let admin = t.admins[e.rng.index(t.admins.len())];
            let u = &t.users[admin];
            self.user.push_str(&u.name);
            self.uid = u.uid;
            self.src = t.agents[t.bastion].ip.clone();
            self.key = if e.rng.chance(0.8) { Some(mix(&[fnv(&u.name), 1])) } else { None };
            self.sudo_left = e.rng.range(0, 4) as u32;
        } else {
            let svc = *e.rng.pick(&t.linux_services);
            self.user.push_str(svc);
            self.uid = 900 + (fnv(svc) % 90) as u32;
            let from = if matches!(svc, "nagios" | "zabbix" | "backup") { t.linux[2] } else { t.automation };
            self.src = t.agents[from].ip.clone();
            self.key = Some(mix(&[fnv(svc), fnv(&t.name)]));
            self.sudo_left = if matches!(svc, "ansible" | "deploy" | "jenkins") { e.rng.range(1, 7) as u32 } else { 0 };
        }
        self.host = *e.rng.pick(&hosts);
        self.port = e.port();
        self.pid = e.pid();
    }

    fn emit(&mut self, e: &mut Env<'_>) -> i64 {
        if self.stage == 0 {
            self.start(e);
        }
        let next;
        match self.stage {
            0 => {
                sources::sshd_accepted(e.d, e.t, self.host, e.ts, self.pid, &self.src, self.port, &self.user, self.key);
                self.stage = 1;
                next = e.within(5, 200);
            }
            1 => {
                sources::pam_session(e.d, e.t, self.host, e.ts, self.pid, &self.user, self.uid, true);
                self.stage = if self.sudo_left > 0 { 2 } else { 3 };
                next = if self.stage == 2 { e.within(800, 6_000) } else { e.within(1_000, 90_000) };
            }
            2 => {
                self.cmd.clear();
                let pwd = format!("/home/{}", self.user);
                if self.human {
                    self.cmd.push_str(catalog::ADMIN_SUDO[e.rng.index(catalog::ADMIN_SUDO.len())]);
                } else {
                    const MODULES: [&str; 8] =
                        ["setup", "apt", "copy", "stat", "systemd", "command", "file", "template"];
                    self.cmd.push_str("/bin/sh -c echo BECOME-SUCCESS-");
                    for _ in 0..32 {
                        self.cmd.push((b'a' + e.rng.below(26) as u8) as char);
                    }
                    let _ = write!(
                        self.cmd,
                        " ; /usr/bin/python3 /home/{u}/.ansible/tmp/ansible-tmp-{}.{:02}-{}-{}/AnsiballZ_{}.py",
                        e.now / 1000,
                        e.rng.below(100),
                        e.rng.range(10_000, 99_999),
                        e.rng.range(100_000_000_000, 999_999_999_999),
                        MODULES[e.rng.index(MODULES.len())],
                        u = self.user
                    );
                }
                let tty = if self.human { Some("pts/0") } else { None };
                sources::sudo(e.d, e.t, self.host, e.ts, 5402, &self.user, tty, &pwd, &self.cmd);
                self.sudo_left -= 1;
                if self.sudo_left == 0 {
                    self.stage = 3;
                }
                next = if self.human { e.within(5_000, 120_000) } else { e.within(700, 8_000) };
            }
            _ => {
                sources::pam_session(e.d, e.t, self.host, e.ts, self.pid, &self.user, self.uid, false);
                self.stage = 0;
                let idle = Self::MEAN_SIZE / self.rate - Self::MEAN_DURATION_MS;
                next = e.idle(idle.max(1_000.0) / activity(e.now).sqrt());
            }
        }
        e.now + next
    }
}

// ---------------------------------------------------------------- Windows logons

/// Windows authentication chatter: Kerberos network logons to the DC and
/// servers, interactive and service logons, logoffs, legacy NTLM devices,
/// the odd mistyped password (60106, 60137, 92652, 60122).
#[derive(Debug)]
pub(crate) struct WinLogons {
    pub rate: f64,
    name: String,
    sid: String,
    ws_name: String,
}

impl WinLogons {
    pub(crate) fn new(rate: f64) -> Self {
        WinLogons { rate, name: String::new(), sid: String::new(), ws_name: String::new() }
    }

    fn emit(&mut self, e: &mut Env<'_>) -> i64 {
        let r = e.rng.f64();
        let (n_ws, n_users) = (e.t.workstations.len(), e.t.users.len());
        let k = e.rng.index(n_ws);
        let ws = e.t.workstations[k];
        let user_idx = 3 + k % (n_users - 3);
        self.name.clear();
        self.sid.clear();
        self.ws_name.clear();
        let dc = *e.rng.pick(&e.t.dcs);
        let domain = e.t.domain.clone();
        if r < 0.55 {
            // Kerberos network logon on a DC or a server.
            let target = if r < 0.38 || e.t.win_servers.is_empty() { dc } else { *e.rng.pick(&e.t.win_servers) };
            let who = e.rng.f64();
            let src;
            if who < 0.5 {
                let m = e.rng.index(e.t.agents.len());
                let ag = &e.t.agents[m];
                if ag.is_windows() {
                    let _ = write!(self.name, "{}$", ag.netbios);
                } else {
                    let _ = write!(self.name, "{}$", ag.name.to_ascii_uppercase());
                }
                let _ = write!(self.sid, "{}-{}", e.t.sid, 2000 + m);
                src = ag.ip.clone();
            } else if who < 0.85 {
                let u = &e.t.users[user_idx];
                self.name.push_str(&u.name);
                let _ = write!(self.sid, "{}-{}", e.t.sid, u.rid);
                src = e.t.agents[ws].ip.clone();
            } else {
                let svc = *e.rng.pick(&e.t.win_services);
                self.name.push_str(svc);
                let _ = write!(self.sid, "{}-{}", e.t.sid, 1100 + fnv(svc) % 3);
                let s = *e.rng.pick(&e.t.win_infra);
                src = e.t.agents[s].ip.clone();
            }
            let port = e.port();
            let l = Logon {
                user: &self.name,
                domain: &domain,
                user_sid: &self.sid,
                logon_type: 3,
                ip: &src,
                port,
                workstation: "-",
                auth: "Kerberos",
                elevated: true,
            };
            windows::logon_success(e.d, e.t, target, e.ts, e.rng, 60106, &l);
        } else if r < 0.72 {
            // Local logons on a workstation: user sessions and services.
            let (lt, svc) = match e.rng.below(10) {
                0..=4 => (5, true),
                5 | 6 => (7, false),
                7 | 8 => (2, false),
                _ => (11, false),
            };
            let (user, dom): (&str, &str);
            if svc {
                self.name.push_str("SYSTEM");
                self.sid.push_str("S-1-5-18");
                user = &self.name;
                dom = "NT AUTHORITY";
            } else {
                let u = &e.t.users[user_idx];
                self.name.push_str(&u.name);
                let _ = write!(self.sid, "{}-{}", e.t.sid, u.rid);
                user = &self.name;
                dom = &domain;
            }
            self.ws_name.push_str(&e.t.agents[ws].netbios);
            let l = Logon {
                user,
                domain: dom,
                user_sid: &self.sid,
                logon_type: lt,
                ip: if lt == 5 { "-" } else { "127.0.0.1" },
                port: 0,
                workstation: &self.ws_name,
                auth: "Negotiate",
                elevated: svc,
            };
            windows::logon_success(e.d, e.t, ws, e.ts, e.rng, 60106, &l);
        } else if r < 0.80 {
            // A multifunction printer scanning to a share with NTLM.
            let target = if e.t.win_servers.is_empty() { dc } else { e.t.win_servers[0] };
            self.name.push_str("svc_scan");
            let _ = write!(self.sid, "{}-1150", e.t.sid);
            let ip = format!("10.{}.9.{}", 10 + fnv(&e.t.name) % 240, 21 + e.rng.below(3));
            let l = Logon {
                user: &self.name,
                domain: &domain,
                user_sid: &self.sid,
                logon_type: 3,
                ip: &ip,
                port: e.port(),
                workstation: "MFP-3F-COPIER",
                auth: "NTLM",
                elevated: false,
            };
            windows::logon_success(e.d, e.t, target, e.ts, e.rng, 92652, &l);
        } else if r < 0.975 {
            let u = &e.t.users[user_idx];
            self.name.push_str(&u.name);
            let _ = write!(self.sid, "{}-{}", e.t.sid, u.rid);
            let target = if e.rng.chance(0.5) { ws } else { dc };
            let lt = if target == ws { 2 } else { 3 };
            windows::logoff(e.d, e.t, target, e.ts, e.rng, &self.name, &domain, &self.sid, lt);
        } else {
            let u = &e.t.users[user_idx];
            self.name.push_str(&u.name);
            self.ws_name.push_str(&e.t.agents[ws].netbios);
            let ip = e.t.agents[ws].ip.clone();
            let port = e.port();
            windows::logon_failure(
                e.d,
                e.t,
                dc,
                e.ts,
                e.rng,
                60122,
                &self.name,
                &ip,
                port,
                &self.ws_name,
                FailReason::BadPassword,
            );
        }
        e.now + e.idle(1.0 / self.rate / activity(e.now))
    }
}

// ---------------------------------------------------------------- repeaters

#[derive(Debug, Clone, Copy)]
enum RepeatKind {
    /// A crash-looping unit (40704).
    Systemd(&'static str),
    /// An AppArmor denial (52002).
    Apparmor(usize),
    /// A "bad word" error line (1002).
    BadWord(usize),
    /// Containers starting on a Kubernetes node (5104).
    Promisc,
}

const APPARMOR: &[(&str, &str, &str, u32)] = &[
    ("/usr/sbin/named", "/proc/sys/net/ipv4/ip_local_port_range", "named", 107),
    ("/usr/sbin/cupsd", "/etc/ssl/openssl.cnf", "cupsd", 0),
    ("/usr/lib/snapd/snap-confine", "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "snap-confine", 0),
    ("/usr/sbin/chronyd", "/usr/share/zoneinfo-leaps/right/UTC", "chronyd", 0),
    ("rsyslogd", "/run/systemd/sessions/", "rsyslogd", 104),
];

/// The same line from one agent over and over while a fault lasts.
#[derive(Debug)]
pub(crate) struct Repeater {
    pub agent: usize,
    kind: RepeatKind,
    pid: u32,
    /// Mean milliseconds between lines while on.
    pub period: f64,
    pub on_ms: f64,
    pub off_ms: f64,
    pub on_until: i64,
    serial: u64,
    boot_ms: i64,
}

impl Repeater {
    pub(crate) fn new(t: &Tenant, rng: &mut Rng, rate: f64, start: i64) -> Self {
        let k8s: Vec<usize> = t.linux.iter().copied().filter(|a| t.agents[*a].name.contains("k8s")).collect();
        let linux: Vec<usize> = t.internet_facing().collect();
        let r = rng.f64();
        let (kind, agent) = if r < 0.35 {
            (RepeatKind::Systemd(catalog::FLAKY_UNITS[rng.index(catalog::FLAKY_UNITS.len())]), *rng.pick(&linux))
        } else if r < 0.55 {
            (RepeatKind::Apparmor(rng.index(APPARMOR.len())), *rng.pick(&linux))
        } else if r < 0.93 || k8s.is_empty() {
            (RepeatKind::BadWord(rng.index(catalog::BAD_WORD_LINES.len())), *rng.pick(&linux))
        } else {
            (RepeatKind::Promisc, *rng.pick(&k8s))
        };
        let on_ms = rng.log_uniform(30.0 * 60_000.0, 12.0 * 3_600_000.0);
        let off_ms = rng.log_uniform(3_600_000.0, 24.0 * 3_600_000.0);
        let on_frac = on_ms / (on_ms + off_ms);
        Repeater {
            agent,
            kind,
            pid: rng.range(400, 30_000) as u32,
            period: on_frac / rate,
            on_ms,
            off_ms,
            on_until: 0,
            serial: rng.range(1_000, 900_000),
            boot_ms: start - rng.range(3_600_000, 40 * 86_400_000) as i64,
        }
    }

    fn emit(&mut self, e: &mut Env<'_>) -> i64 {
        let a = self.agent;
        let up = (e.ts - self.boot_ms).max(0);
        let uptime = format!("[{:>5}.{:06}]", up / 1000, (up % 1000) * 1000 + (self.serial % 1000) as i64);
        let log = e.t.agents[a].syslog();
        match self.kind {
            RepeatKind::Systemd(unit) => {
                sources::syslog(
                    e.d,
                    e.t,
                    a,
                    e.ts,
                    40704,
                    "systemd",
                    Some(1),
                    log,
                    "systemd",
                    format_args!("{unit}.service: Failed with result 'exit-code'."),
                );
            }
            RepeatKind::Apparmor(i) => {
                let (profile, name, comm, uid) = APPARMOR[i];
                self.serial += 1;
                let sec = e.ts.div_euclid(1000);
                let ms = e.ts.rem_euclid(1000);
                sources::syslog(
                    e.d,
                    e.t,
                    a,
                    e.ts,
                    52002,
                    "kernel",
                    None,
                    log,
                    "kernel",
                    format_args!(
                        "{uptime} audit: type=1400 audit({sec}.{ms:03}:{}): apparmor=\"DENIED\" operation=\"open\" class=\"file\" profile=\"{profile}\" name=\"{name}\" pid={} comm=\"{comm}\" requested_mask=\"r\" denied_mask=\"r\" fsuid={uid} ouid=0",
                        self.serial, self.pid
                    ),
                );
            }
            RepeatKind::BadWord(i) => {
                let (program, msg) = catalog::BAD_WORD_LINES[i];
                if program == "kernel" {
                    sources::syslog(
                        e.d,
                        e.t,
                        a,
                        e.ts,
                        1002,
                        "kernel",
                        None,
                        log,
                        "kernel",
                        format_args!("{uptime} {msg}"),
                    );
                } else {
                    sources::syslog(
                        e.d,
                        e.t,
                        a,
                        e.ts,
                        1002,
                        static_program(program),
                        Some(self.pid),
                        log,
                        static_program(program),
                        format_args!("{msg}"),
                    );
                }
            }
            RepeatKind::Promisc => {
                let dev = e.rng.next_u64() & 0x0fff_ffff;
                sources::syslog(
                    e.d,
                    e.t,
                    a,
                    e.ts,
                    5104,
                    "kernel",
                    None,
                    log,
                    "kernel",
                    format_args!("{uptime} device veth{dev:07x} entered promiscuous mode"),
                );
            }
        }
        let mut next = e.now + (self.period * e.rng.range(80, 120) as f64 / 100.0 * e.dil).max(100.0) as i64;
        if next > self.on_until {
            next = self.on_until + (e.rng.f64() * 2.0 * self.off_ms * e.dil) as i64;
            self.on_until = next + (e.rng.f64() * 2.0 * self.on_ms) as i64;
        }
        next
    }
}

fn static_program(p: &str) -> &'static str {
    catalog::BAD_WORD_LINES.iter().map(|(prog, _)| *prog).find(|prog| *prog == p).unwrap_or("kernel")
}

// ---------------------------------------------------------------- FIM

/// Scheduled syscheck scans of one Linux host: configuration files that
/// change (550), the odd new or removed file (554, 553).
#[derive(Debug)]
pub(crate) struct Fim {
    pub agent: usize,
    key: u64,
    files: Vec<(&'static str, u32, FileState, u32)>,
    total_weight: u32,
    interval: i64,
    next_scan: i64,
    left: u32,
}

const FIM_ADDED: &[&str] = &[
    "/etc/cron.d/certbot",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/apt/apt.conf.d/99needrestart",
    "/etc/netplan/90-hotplug-azure.yaml",
    "/etc/sudoers.d/ansible",
];

impl Fim {
    pub(crate) fn new(t: &Tenant, agent: usize, key: u64, rng: &mut Rng, start: i64) -> Self {
        let name = &t.agents[agent].name;
        let mut files = Vec::new();
        // Last changed some time in the past 90 days.
        let mtime = |path: &str| start / 1000 - (mix(&[key, fnv(path), 3]) % 7_776_000) as i64;
        for (path, w) in catalog::FIM_COMMON {
            files.push((*path, *w, Self::state(key, path, 0, mtime(path)), 0));
        }
        for (kind, path, w) in catalog::FIM_BY_KIND {
            if name.contains(kind) {
                files.push((*path, *w, Self::state(key, path, 0, mtime(path)), 0));
            }
        }
        let total_weight = files.iter().map(|f| f.1).sum();
        let interval = match rng.below(10) {
            0..=3 => 3_600_000,
            4..=6 => 2 * 3_600_000,
            7 | 8 => 6 * 3_600_000,
            _ => 12 * 3_600_000,
        };
        Fim { agent, key, files, total_weight, interval, next_scan: 0, left: 0 }
    }

    fn state(key: u64, path: &str, version: u32, mtime: i64) -> FileState {
        let h = mix(&[key, fnv(path), u64::from(version)]);
        let base = 200 + mix(&[key, fnv(path)]) % 6000;
        FileState {
            size: base + h % 64,
            mtime,
            hashes: Hashes::from_key(h),
            inode: 100_000 + mix(&[key, fnv(path), 9]) % 3_000_000,
        }
    }

    fn changes(rng: &mut Rng) -> u32 {
        if rng.chance(0.25) {
            return 0;
        }
        let mut n = 1;
        while n < 6 && rng.chance(0.5) {
            n += 1;
        }
        n
    }

    fn rate(&self) -> f64 {
        // E[changes per scan] ≈ 0.75 × 1.95.
        1.45 / self.interval as f64
    }

    fn first(&mut self, start: i64, rng: &mut Rng) -> i64 {
        self.next_scan = start + (rng.f64() * self.interval as f64) as i64;
        self.schedule(rng)
    }

    fn schedule(&mut self, rng: &mut Rng) -> i64 {
        for _ in 0..64 {
            self.left = Self::changes(rng);
            if self.left > 0 {
                break;
            }
            self.next_scan += self.interval;
        }
        self.left = self.left.max(1);
        let t = self.next_scan + rng.range(2_000, 60_000) as i64;
        self.next_scan += self.interval;
        t
    }

    fn emit(&mut self, e: &mut Env<'_>) -> i64 {
        let r = e.rng.f64();
        let mtime = (e.now - e.rng.range(1_000, self.interval as u64) as i64) / 1000;
        if r < 0.03 {
            let path = *e.rng.pick(FIM_ADDED);
            let st = Self::state(self.key, path, e.rng.below(1000) as u32, mtime);
            sources::fim(e.d, e.t, self.agent, FimEvent::Added, path, "scheduled", None, &st, &ROOT);
        } else if r < 0.045 {
            const GONE: &[&str] = &[
                "/etc/cron.daily/popularity-contest",
                "/etc/ld.so.conf.d/x86_64-linux-gnu_EGL.conf",
                "/etc/update-motd.d/91-release-upgrade",
            ];
            let path = *e.rng.pick(GONE);
            let st = Self::state(self.key, path, 0, mtime - 86_400 * 90);
            sources::fim(e.d, e.t, self.agent, FimEvent::Deleted, path, "scheduled", None, &st, &ROOT);
        } else {
            let mut pick = e.rng.below(u64::from(self.total_weight)) as u32;
            let mut i = 0;
            while pick >= self.files[i].1 {
                pick -= self.files[i].1;
                i += 1;
            }
            let (path, _, before, version) = self.files[i];
            let after = Self::state(self.key, path, version + 1, mtime.max(before.mtime + 1));
            let owner = if path.contains("shadow") {
                Owner { gname: "shadow", perm: "rw-r-----", gid: 42, ..ROOT }
            } else {
                ROOT
            };
            sources::fim(e.d, e.t, self.agent, FimEvent::Modified, path, "scheduled", Some(&before), &after, &owner);
            self.files[i].2 = after;
            self.files[i].3 = version + 1;
        }
        self.left -= 1;
        if self.left > 0 { e.now + e.rng.range(40, 1_500) as i64 } else { self.schedule(e.rng) }
    }
}

// ---------------------------------------------------------------- packages

/// Nightly unattended upgrades on one Linux host: package installs (2902 /
/// 2932) and the binaries they replace (550).
#[derive(Debug)]
pub(crate) struct Packages {
    pub agent: usize,
    key: u64,
    pkgs: Vec<usize>,
    bins: Vec<&'static str>,
    stage: usize,
    day: i64,
}

impl Packages {
    pub(crate) fn new(agent: usize, key: u64) -> Self {
        Packages { agent, key, pkgs: Vec::new(), bins: Vec::new(), stage: 0, day: 0 }
    }

    fn rate(&self) -> f64 {
        // ~0.5 runs a day × (3.5 packages + ~3 binaries).
        0.5 * 6.5 / 86_400_000.0
    }

    fn first(&mut self, start: i64, rng: &mut Rng) -> i64 {
        self.day = start.div_euclid(86_400_000) - 1;
        self.plan(start, rng)
    }

    /// Picks the next day with updates and the packages it installs.
    fn plan(&mut self, after: i64, rng: &mut Rng) -> i64 {
        loop {
            self.day += 1;
            if rng.chance(0.5) {
                // apt-daily-upgrade.timer / dnf-automatic at the fleet's patch hour.
                let hour = (self.key % 24) as i64;
                let t = self.day * 86_400_000 + hour * 3_600_000 + rng.range(0, 3_600_000) as i64;
                if t > after {
                    self.pkgs.clear();
                    self.bins.clear();
                    let n = rng.range(1, 6);
                    for _ in 0..n {
                        let p = rng.index(catalog::PACKAGES.len());
                        if !self.pkgs.contains(&p) {
                            self.pkgs.push(p);
                            self.bins.extend_from_slice(catalog::PACKAGES[p].2);
                        }
                    }
                    self.stage = 0;
                    return t;
                }
            }
        }
    }

    fn emit(&mut self, e: &mut Env<'_>) -> i64 {
        if self.stage < self.pkgs.len() {
            let (name, version, _) = catalog::PACKAGES[self.pkgs[self.stage]];
            let rhel = e.t.agents[self.agent].os == Os::Rhel;
            let version = if rhel {
                version.split(['-', ':']).nth(if version.contains(':') { 1 } else { 0 }).unwrap_or(version)
            } else {
                version
            };
            sources::package_installed(e.d, e.t, self.agent, e.ts, name, version);
        } else {
            let path = self.bins[self.stage - self.pkgs.len()];
            let h0 = mix(&[self.key, fnv(path), (self.day - 1) as u64]);
            let h1 = mix(&[self.key, fnv(path), self.day as u64]);
            let size = 40_000 + mix(&[self.key, fnv(path)]) % 4_000_000;
            let before = FileState {
                size,
                mtime: e.now / 1000 - 86_400 * 30,
                hashes: Hashes::from_key(h0),
                inode: 1_000_000 + h0 % 900_000,
            };
            let after = FileState {
                size: size + h1 % 4096,
                mtime: e.now / 1000 - 60,
                hashes: Hashes::from_key(h1),
                inode: 1_000_000 + h1 % 900_000,
            };
            let owner = Owner { perm: "rwxr-xr-x", ..ROOT };
            sources::fim(e.d, e.t, self.agent, FimEvent::Modified, path, "scheduled", Some(&before), &after, &owner);
        }
        self.stage += 1;
        if self.stage < self.pkgs.len() {
            e.now + e.rng.range(2_000, 20_000) as i64
        } else if self.stage == self.pkgs.len() && !self.bins.is_empty() {
            // The next scan of /usr/bin and /usr/sbin reports the new binaries.
            e.now + e.rng.range(60_000, 20 * 60_000) as i64
        } else if self.stage < self.pkgs.len() + self.bins.len() {
            e.now + e.rng.range(30, 900) as i64
        } else {
            self.plan(e.now, e.rng)
        }
    }
}

// ---------------------------------------------------------------- rare benign events

#[derive(Debug)]
enum Episode {
    None,
    AdminUseradd { host: usize, admin: usize, new_user: String, uid: u32 },
    RootCrontab { host: usize, admin: usize },
    AdminRdp { target: usize, admin: usize },
    SchedTask { ws: usize, task: usize },
    SqliProbe { web: usize, ip: String, n: u32, success: bool },
    DeployFiles { web: usize, n: u32, tag: u64 },
    InstallerDrop { ws: usize, which: u64 },
    Netstat { host: usize },
    SvcLockout { dc: usize, svc: &'static str, src: usize, n: u32 },
    CmdAbnormal { ws: usize },
    PsPolicyTest { ws: usize },
    AdminPsexec { ws: usize, admin: usize },
    Internet5712 { host: usize, ip: String, n: u32, pid: u32 },
}

/// Benign events that look bad (or at least not like noise): admins adding
/// users and editing root's crontab in working hours, RDP by IT, updaters
/// creating scheduled tasks and dropping executables, deploys writing new
/// files under the web root, a service account locked out by a stale
/// password (60204), a lone 5712 from an internet scanner, …
#[derive(Debug)]
pub(crate) struct Rare {
    pub rate: f64,
    ep: Episode,
    stage: u32,
    ring: Ring,
}

impl Rare {
    const MEAN_SIZE: f64 = 2.6;

    pub(crate) fn new(rate: f64) -> Self {
        Rare { rate, ep: Episode::None, stage: 0, ring: Ring::default() }
    }

    fn pick(&mut self, e: &mut Env<'_>) {
        let t = &*e.t;
        let work = activity(e.now) > 1.0;
        let linux: Vec<usize> = t.internet_facing().collect();
        let admin = t.admins[e.rng.index(t.admins.len())];
        let ws = *e.rng.pick(&t.workstations);
        // Relative frequency of each kind below (0..=12).
        const WEIGHTS: [u64; 13] = [8, 8, 10, 14, 12, 10, 3, 8, 6, 8, 14, 3, 6];
        let mut pick = e.rng.below(WEIGHTS.iter().sum());
        let mut k = 0;
        while pick >= WEIGHTS[k as usize] {
            pick -= WEIGHTS[k as usize];
            k += 1;
        }
        // Admin work happens in working hours.
        if !work && matches!(k, 0 | 1 | 2 | 11) {
            k = *e.rng.pick(&[3, 4, 5, 7, 9, 10]);
        }
        self.stage = 0;
        self.ring.clear();
        self.ep = match k {
            0 => Episode::AdminUseradd {
                host: *e.rng.pick(&linux),
                admin,
                new_user: format!(
                    "{}{}",
                    e.rng.pick(&["svc_", "app_", ""]),
                    e.rng.pick(&["grafana", "promtail", "etl", "reporting", "kafka", "mlflow", "backup2", "ci-runner"])
                ),
                uid: e.rng.range(1050, 1300) as u32,
            },
            1 => Episode::RootCrontab { host: *e.rng.pick(&linux), admin },
            2 => Episode::AdminRdp { target: *e.rng.pick(&t.win_infra), admin },
            3 => Episode::SchedTask { ws, task: e.rng.index(catalog::BENIGN_TASKS.len()) },
            4 => Episode::SqliProbe {
                web: *e.rng.pick(&t.web),
                ip: e.scanner_ip(),
                n: e.rng.range(1, 3) as u32,
                success: e.rng.chance(0.3),
            },
            5 => Episode::DeployFiles { web: *e.rng.pick(&t.web), n: e.rng.range(1, 4) as u32, tag: e.rng.next_u64() },
            6 => Episode::InstallerDrop { ws, which: e.rng.below(3) },
            7 => Episode::Netstat { host: *e.rng.pick(&linux) },
            8 => Episode::SvcLockout {
                dc: *e.rng.pick(&t.dcs),
                svc: t.win_services[e.rng.index(t.win_services.len())],
                src: *e.rng.pick(&t.win_servers.iter().chain(&t.linux).copied().collect::<Vec<_>>()),
                n: e.rng.range(8, 11) as u32,
            },
            9 => Episode::CmdAbnormal { ws },
            10 => Episode::PsPolicyTest { ws },
            11 => Episode::AdminPsexec { ws, admin },
            _ => {
                Episode::Internet5712 { host: t.bastion, ip: e.public_ip(), n: e.rng.range(8, 10) as u32, pid: e.pid() }
            }
        };
    }

    fn emit(&mut self, e: &mut Env<'_>) -> i64 {
        if matches!(self.ep, Episode::None) {
            self.pick(e);
        }
        let s = self.stage;
        self.stage += 1;
        let domain = e.t.domain.clone();
        let done: bool;
        let mut gap = e.within(300, 3_000);
        match &self.ep {
            Episode::None => unreachable!("picked above"),
            Episode::AdminUseradd { host, admin, new_user, uid } => {
                let u = e.t.users[*admin].name.clone();
                match s {
                    0 => {
                        let cmd = format!("/usr/sbin/useradd -m -s /bin/bash {new_user}");
                        sources::sudo(e.d, e.t, *host, e.ts, 5402, &u, Some("pts/1"), &format!("/home/{u}"), &cmd);
                    }
                    1 => sources::groupadd(e.d, e.t, *host, e.ts, e.rng.range(2000, 60_000) as u32, new_user, *uid),
                    _ => sources::useradd(
                        e.d,
                        e.t,
                        *host,
                        e.ts,
                        e.rng.range(2000, 60_000) as u32,
                        new_user,
                        *uid,
                        "/bin/bash",
                    ),
                }
                gap = e.within(20, 400);
                done = s >= 2;
            }
            Episode::RootCrontab { host, admin } => {
                let u = e.t.users[*admin].name.clone();
                if s == 0 {
                    sources::sudo(
                        e.d,
                        e.t,
                        *host,
                        e.ts,
                        5402,
                        &u,
                        Some("pts/0"),
                        &format!("/home/{u}"),
                        "/usr/bin/crontab -e",
                    );
                    gap = e.within(20_000, 180_000);
                } else {
                    sources::crontab_root(e.d, e.t, *host, e.ts, e.rng.range(2000, 60_000) as u32);
                }
                done = s >= 1;
            }
            Episode::AdminRdp { target, admin } => {
                let u = &e.t.users[*admin];
                let name = format!("adm-{}", u.name);
                let sid = format!("{}-{}", e.t.sid, u.rid + 500);
                let src = e.t.workstations[*admin % e.t.workstations.len()];
                let ip = e.t.agents[src].ip.clone();
                let wsn = e.t.agents[src].netbios.clone();
                let l = Logon {
                    user: &name,
                    domain: &domain,
                    user_sid: &sid,
                    logon_type: 10,
                    ip: &ip,
                    port: 0,
                    workstation: &wsn,
                    auth: "Negotiate",
                    elevated: true,
                };
                windows::logon_success(e.d, e.t, *target, e.ts, e.rng, 92653, &l);
                done = true;
            }
            Episode::SchedTask { ws, task } => {
                let (name, cmd, args) = catalog::BENIGN_TASKS[*task];
                windows::task_created(e.d, e.t, *ws, e.ts, e.rng, "SYSTEM", "S-1-5-18", name, cmd, args);
                done = true;
            }
            Episode::SqliProbe { web, ip, n, success } => {
                let url = *e.rng.pick(catalog::SQLI_URLS);
                let last = s + 1 >= *n;
                let (rule, status) = if last && *success {
                    (31106, 200)
                } else if e.rng.chance(0.5) {
                    (31103, 404)
                } else {
                    (31164, 403)
                };
                let ua = *e.rng.pick(catalog::SCANNER_UAS);
                sources::web_access(
                    e.d,
                    e.t,
                    *web,
                    e.ts,
                    rule,
                    ip,
                    "GET",
                    url,
                    status,
                    if status == 200 { 5120 } else { 162 },
                    ua,
                );
                done = last;
            }
            Episode::DeployFiles { web, n, tag } => {
                let path = if s.is_multiple_of(2) {
                    format!("/var/www/html/assets/app.{:08x}.js", mix(&[*tag, u64::from(s)]) as u32)
                } else {
                    format!("/var/www/html/assets/vendor.{:08x}.css", mix(&[*tag, u64::from(s)]) as u32)
                };
                let st = FileState {
                    size: 20_000 + mix(&[*tag, 1]) % 400_000,
                    mtime: e.now / 1000,
                    hashes: Hashes::from_key(mix(&[*tag, u64::from(s)])),
                    inode: 2_000_000 + mix(&[*tag, 2]) % 100_000,
                };
                let owner = Owner { uname: "deploy", gname: "www-data", uid: 998, gid: 33, perm: "rw-r--r--" };
                sources::fim(e.d, e.t, *web, FimEvent::Added, &path, "realtime", None, &st, &owner);
                gap = e.within(5, 300);
                done = s + 1 >= *n;
            }
            Episode::InstallerDrop { ws, which } => {
                let k = e.t.workstations.iter().position(|w| w == ws).unwrap_or(0);
                let u = e.t.ws_user(k).name.clone();
                let (image, target) = match which {
                    0 => (
                        "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe".to_string(),
                        format!("C:\\Users\\{u}\\AppData\\Local\\Temp\\ZoomInstallerFull.exe"),
                    ),
                    1 => (
                        "C:\\Windows\\System32\\msiexec.exe".to_string(),
                        "C:\\ProgramData\\Package Cache\\{8bdfe669-9705-4184-9368-db9ce581e0e7}\\VC_redist.x64.exe"
                            .to_string(),
                    ),
                    _ => (
                        format!("C:\\Users\\{u}\\AppData\\Local\\Microsoft\\Teams\\Update.exe"),
                        format!("C:\\Users\\{u}\\AppData\\Local\\SquirrelTemp\\Teams.exe"),
                    ),
                };
                let user = format!("{domain}\\{u}");
                if s == 0 {
                    windows::sysmon_file_created(e.d, e.t, *ws, e.ts, e.rng, 92213, &image, &target, &user);
                    gap = e.within(500, 8_000);
                } else {
                    // Realtime FIM sees the same file: a vendor binary, the
                    // same hash on every machine.
                    let hashes = Hashes::from_key(0x1A57_0000 + which);
                    let st = FileState { size: 8_000_000 + which * 17_000_000, mtime: e.now / 1000, hashes, inode: 0 };
                    let owner = Owner { uname: &user, gname: "", uid: 0, gid: 0, perm: "" };
                    let lower = target.to_ascii_lowercase();
                    sources::fim(e.d, e.t, *ws, FimEvent::Added, &lower, "realtime", None, &st, &owner);
                }
                done = s >= 1;
            }
            Episode::Netstat { host } => {
                let before: &[(u16, &str)] = &[
                    (22, "812/sshd"),
                    (53, "611/systemd-resolve"),
                    (1514, "1180/wazuh-agentd"),
                    (9100, "1004/node_exporter"),
                ];
                let added = *e.rng.pick(&[
                    (8080u16, "23011/java"),
                    (9090, "23122/prometheus"),
                    (5432, "2211/postgres"),
                    (6379, "1889/redis-server"),
                    (3000, "24410/node"),
                ]);
                sources::netstat_changed(e.d, *host, before, added);
                done = true;
            }
            Episode::SvcLockout { dc, svc, src, n } => {
                let ip = e.t.agents[*src].ip.clone();
                let wsn = e.t.agents[*src].name.to_ascii_uppercase();
                // The 8th failure from one address within 240 s is 60204.
                let rule = if s == 7 { 60204 } else { 60122 };
                let port = e.port();
                windows::logon_failure(e.d, e.t, *dc, e.ts, e.rng, rule, svc, &ip, port, &wsn, FailReason::BadPassword);
                gap = e.within(3_000, 25_000);
                done = s + 1 >= *n;
            }
            Episode::CmdAbnormal { ws } => {
                let h = Hashes::from_key(0xC0DE_0001);
                let p = Process {
                    image: "C:\\Windows\\System32\\cmd.exe",
                    command_line: "cmd.exe /c \"C:\\Windows\\IMECache\\HealthScripts\\4f9a2c1e_3\\detect.cmd\"",
                    current_directory: "C:\\Windows\\IMECache\\HealthScripts\\4f9a2c1e_3\\",
                    user: "NT AUTHORITY\\SYSTEM",
                    integrity: "System",
                    parent_image: "C:\\Program Files (x86)\\Microsoft Intune Management Extension\\AgentExecutor.exe",
                    parent_command_line: "\"C:\\Program Files (x86)\\Microsoft Intune Management Extension\\AgentExecutor.exe\" -remediationScript",
                    description: "Windows Command Processor",
                    product: "Microsoft® Windows® Operating System",
                    company: "Microsoft Corporation",
                    original_file_name: "Cmd.Exe",
                    hashes: &h,
                };
                windows::sysmon_process(e.d, e.t, *ws, e.ts, e.rng, 92052, &p);
                done = true;
            }
            Episode::PsPolicyTest { ws } => {
                let k = e.t.workstations.iter().position(|w| w == ws).unwrap_or(0);
                let u = e.t.ws_user(k).name.clone();
                let target = format!(
                    "C:\\Users\\{u}\\AppData\\Local\\Temp\\__PSScriptPolicyTest_{}.{}.ps1",
                    rand_name(e.rng, 8),
                    rand_name(e.rng, 3)
                );
                let user = format!("{domain}\\{u}");
                windows::sysmon_file_created(
                    e.d,
                    e.t,
                    *ws,
                    e.ts,
                    e.rng,
                    92200,
                    "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                    &target,
                    &user,
                );
                done = true;
            }
            Episode::AdminPsexec { ws, admin } => {
                let u = format!("{domain}\\adm-{}", e.t.users[*admin].name);
                let h = Hashes::from_key(0xC0DE_0001);
                let p = Process {
                    image: "C:\\Windows\\System32\\ipconfig.exe",
                    command_line: "ipconfig /flushdns",
                    current_directory: "C:\\Windows\\system32\\",
                    user: &u,
                    integrity: "High",
                    parent_image: "C:\\Windows\\PSEXESVC.exe",
                    parent_command_line: "C:\\Windows\\PSEXESVC.exe",
                    description: "IP Configuration Utility",
                    product: "Microsoft® Windows® Operating System",
                    company: "Microsoft Corporation",
                    original_file_name: "ipconfig.exe",
                    hashes: &h,
                };
                windows::sysmon_process(e.d, e.t, *ws, e.ts, e.rng, 92068, &p);
                done = true;
            }
            Episode::Internet5712 { host, ip, n, pid } => {
                let user = *e.rng.pick(catalog::BOT_USERS);
                let rule = if s == 7 { 5712 } else { 5710 };
                let port = e.port();
                sources::sshd_invalid_user(e.d, e.t, *host, e.ts, rule, pid + s * 2, ip, port, user);
                if rule == 5712 {
                    self.ring.write_newest_first(&mut e.d.previous_output);
                }
                self.ring.push(e.now, &e.d.full_log, 7);
                gap = e.within(1_500, 6_000);
                done = s + 1 >= *n;
            }
        }
        if done {
            self.ep = Episode::None;
            e.now + e.idle(Self::MEAN_SIZE / self.rate)
        } else {
            e.now + gap
        }
    }
}

/// Random alphanumeric text (temporary file names).
pub(crate) fn rand_name(rng: &mut Rng, n: usize) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..n).map(|_| A[rng.index(A.len())] as char).collect()
}
