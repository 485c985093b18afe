//! A deterministic, streaming generator of multi-tenant Wazuh `alerts.json`
//! lines with labelled attack campaigns hidden in realistic noise.
//!
//! The idea: every source of alerts — a web server's 4xx storms, an internet
//! scanner, a crash-looping service, a scheduled FIM scan, and each planned
//! attack campaign — is a small process that emits one alert when it wakes
//! up and says when it wakes up next. A binary heap of those timers merges
//! them in event-time order, so memory stays constant however many alerts
//! are streamed (100 M is fine), and the same [`GeneratorConfig`] always
//! gives byte-identical output (the PRNG is our own, see `rng.rs`).
//!
//! Alerts look like the real thing: rule ids, levels, descriptions, groups,
//! compliance and MITRE ids come from the Wazuh v4.14.7 ruleset (embedded,
//! see `README.md` in this folder); `full_log`, `predecoder`, `decoder`,
//! `data`, `syscheck` and `location` are shaped like Wazuh's decoders shape
//! them for each log source. The tenant is in `manager.name` and in
//! `agent.labels.tenant`.
//!
//! Campaign alerts come with a [`Label`] (campaign id, kind, 1-based step);
//! `sluice eval` scores triage against them.
//!
//! ```no_run
//! use sluice_connectors::generator::{Generator, GeneratorConfig};
//! let mut g = Generator::new(GeneratorConfig { alerts: 1000, ..Default::default() })?;
//! let mut line = Vec::new();
//! while let Some(label) = g.next_into(&mut line) {
//!     if let Some(label) = label {
//!         println!("{} step {}", label.campaign, label.step);
//!     }
//!     line.clear();
//! }
//! # Ok::<(), sluice_connectors::generator::GeneratorError>(())
//! ```

mod alert;
mod campaign;
mod catalog;
mod civil;
mod json;
mod mitre;
mod noise;
mod rng;
mod rules;
mod sources;
mod tenant;
mod windows;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fmt;
use std::io::Write;

use serde::{Deserialize, Serialize};

use alert::Draft;
use campaign::Campaign;
use noise::{Env, Ids, Noise, Proc, Rare, Repeater, Scanner, SshAuto, WebStorm, WinLogons};
use rng::Rng;
use rules::RuleSet;
use tenant::{Os, Tenant};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Number of tenants (Wazuh managers); at least 1.
    pub tenants: usize,
    /// Total alerts to emit, noise and campaigns together (exact).
    pub alerts: u64,
    /// Seed of every random choice; the same config gives the same bytes.
    pub seed: u64,
    /// Average alerts per second of event time, over all tenants.
    pub rate: f64,
    /// Event time of the first alert, unix milliseconds.
    pub start_ms: i64,
    /// Campaigns per tenant. `None`: `max(6, alerts / tenants / 40_000)`,
    /// so every tenant gets each of the six kinds at least once. Campaigns
    /// are dropped (fewest first) when they would exceed half the alerts.
    pub campaigns_per_tenant: Option<usize>,
    /// Every this many milliseconds of event time, each tenant's authorised
    /// vulnerability scan sweeps the same two web servers (benign,
    /// unlabelled, escalating): a recurring false positive. `None`: off.
    pub recurring_scan: Option<i64>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            tenants: 5,
            alerts: 1_000_000,
            seed: 42,
            rate: 100.0,
            // 2026-11-01T00:00:00Z
            start_ms: civil::ms_from_civil(2026, 11, 1, 0, 0, 0),
            campaigns_per_tenant: None,
            recurring_scan: None,
        }
    }
}

/// The six kinds of labelled attack campaigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignKind {
    /// SSH brute force → login → sudo → new user and root crontab.
    SshBruteforce,
    /// Web scan → SQL injection → webshell upload → shell commands.
    WebExploit,
    /// One IP sprays many users on the DC → a valid logon → remote logon.
    PasswordSpray,
    /// One account hops across Windows hosts → PsExec → scheduled task.
    LateralMovement,
    /// A dropper on one workstation → VirusTotal hit → same hash elsewhere.
    MalwareSpread,
    /// Staging → archive creation → upload to an external host.
    DataExfiltration,
}

impl CampaignKind {
    /// Every kind, in declaration order.
    pub fn all() -> [CampaignKind; 6] {
        [
            CampaignKind::SshBruteforce,
            CampaignKind::WebExploit,
            CampaignKind::PasswordSpray,
            CampaignKind::LateralMovement,
            CampaignKind::MalwareSpread,
            CampaignKind::DataExfiltration,
        ]
    }

    /// The snake_case name used in labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignKind::SshBruteforce => "ssh_bruteforce",
            CampaignKind::WebExploit => "web_exploit",
            CampaignKind::PasswordSpray => "password_spray",
            CampaignKind::LateralMovement => "lateral_movement",
            CampaignKind::MalwareSpread => "malware_spread",
            CampaignKind::DataExfiltration => "data_exfiltration",
        }
    }

    /// The names of this kind's steps; a label's `step` is 1-based into it.
    pub fn step_names(self) -> &'static [&'static str] {
        campaign::step_names(self)
    }
}

impl fmt::Display for CampaignKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ground truth for one campaign alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// The alert's `id` (unique within its tenant).
    pub alert_id: String,
    pub tenant: String,
    /// Unique campaign id, `"<tenant>/c<n>"`.
    pub campaign: String,
    pub kind: CampaignKind,
    /// 1-based step of the kill chain.
    pub step: u8,
    pub step_name: String,
}

/// Totals of a [`write_stream`] run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GenerateStats {
    pub alerts: u64,
    pub campaign_alerts: u64,
    pub campaigns: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    /// The configuration is unusable (the user's to fix); every problem is listed.
    #[error("invalid generator config: {}", .0.join("; "))]
    InvalidConfig(Vec<String>),
    /// Writing the alerts or labels failed (external; retrying may help).
    #[error("writing generated alerts or labels failed: {0}")]
    Io(#[from] std::io::Error),
    /// The embedded rules disagree with the code (a bug in this crate).
    #[error("embedded Wazuh rules are inconsistent (internal bug): {0}")]
    Rules(String),
}

/// A heap entry: (event time, insertion sequence, source index).
type Timer = Reverse<(i64, u64, u32)>;

/// The streaming generator. See the module docs.
#[derive(Debug)]
pub struct Generator {
    cfg: GeneratorConfig,
    rules: RuleSet,
    tenants: Vec<Tenant>,
    names: Vec<String>,
    procs: Vec<Proc>,
    camps: Vec<Campaign>,
    heap: BinaryHeap<Timer>,
    seq: u64,
    rng: Rng,
    draft: Draft,
    line: String,
    scanners: Vec<String>,
    emitted: u64,
    noise_emitted: u64,
    noise_budget: u64,
    /// Multiplier on the idle gaps of rate-scaled noise, steered so event
    /// time advances at `rate`.
    dil: f64,
    /// (alerts emitted, event time) at the last steering step.
    last_steer: (u64, i64),
    /// Mean of [`rhythm`] over the planned stream, so that the stream's
    /// average rate is `rate`.
    rhythm_mean: f64,
    rate_per_ms: f64,
}

impl Generator {
    /// Builds a generator: validates `cfg`, parses the embedded rules, plans
    /// tenants, noise processes and campaigns.
    ///
    /// # Errors
    /// [`GeneratorError::InvalidConfig`] when `tenants` is 0 or `rate` is not a
    /// positive finite number; [`GeneratorError::Rules`] if the embedded
    /// rules are broken (a bug).
    pub fn new(cfg: GeneratorConfig) -> Result<Self, GeneratorError> {
        let mut problems = Vec::new();
        if cfg.tenants == 0 {
            problems.push("`tenants` must be at least 1".to_string());
        }
        if !(cfg.rate.is_finite() && cfg.rate > 0.0) {
            problems.push(format!("`rate` must be a positive number of alerts per second, got {}", cfg.rate));
        }
        if !problems.is_empty() {
            return Err(GeneratorError::InvalidConfig(problems));
        }
        let rules = RuleSet::load().map_err(GeneratorError::Rules)?;
        let tenants: Vec<Tenant> = (0..cfg.tenants).map(|i| Tenant::new(i, cfg.seed, rules.len())).collect();
        let names = tenants.iter().map(|t| t.name.clone()).collect();
        let mut rng = Rng::derive(&[cfg.seed, 0x5EED]);
        let rate_per_ms = cfg.rate / 1000.0;
        let duration = (cfg.alerts as f64 / rate_per_ms).max(60_000.0);
        let start = cfg.start_ms;

        // Internet scanners that every tenant sees.
        let mut scan_rng = Rng::derive(&[cfg.seed, 0x5CA7]);
        let scanners: Vec<String> = (0..300).map(|_| noise::public_ip(&mut scan_rng)).collect();

        let camps = plan_campaigns(&cfg, &tenants, &scanners);
        let campaign_total: u64 = camps.iter().map(Campaign::total).sum();

        let mut g = Generator {
            noise_budget: cfg.alerts - campaign_total,
            cfg,
            rules,
            tenants,
            names,
            procs: Vec::new(),
            camps,
            heap: BinaryHeap::new(),
            seq: 0,
            rng: Rng::derive(&[0, 0]),
            draft: Draft::default(),
            line: String::with_capacity(4096),
            scanners,
            emitted: 0,
            noise_emitted: 0,
            dil: 1.0,
            last_steer: (0, 0),
            rhythm_mean: rhythm_mean(start, duration),
            rate_per_ms,
        };
        g.plan_noise(&mut rng, duration, campaign_total);

        // Campaigns: spread over the stream, interleaved within each tenant.
        let mut place_rng = Rng::derive(&[g.cfg.seed, 0x91ACE]);
        let window = (start + (duration * 0.02) as i64, start + (duration * 0.97) as i64);
        let per_tenant = g.camps.iter().filter(|c| c.tenant == 0).count().max(1);
        let mut slots: Vec<usize> = Vec::new();
        for i in 0..g.camps.len() {
            if i % per_tenant == 0 {
                slots = (0..per_tenant).collect();
                place_rng.shuffle(&mut slots);
            }
            let c = &mut g.camps[i];
            let len = (window.1 - window.0) as f64;
            let scale = (0.6 * len / c.span().max(1) as f64).min(1.0);
            let span = c.span() as f64 * scale;
            let slot = slots[i % per_tenant] as f64;
            let at = window.0 + ((slot + place_rng.f64()) / per_tenant as f64 * (len - span).max(0.0)) as i64;
            let first = c.place(at, scale);
            let src = (g.procs.len() + i) as u32;
            g.push(first, src);
        }

        // Noise: the earliest process fires exactly at `start_ms`.
        let mut firsts = Vec::with_capacity(g.procs.len());
        for p in &mut g.procs {
            firsts.push(p.first(start, &mut rng));
        }
        if let Some(min) = firsts.iter().enumerate().min_by_key(|(_, t)| **t).map(|(i, _)| i) {
            firsts[min] = start;
        }
        for (i, t) in firsts.into_iter().enumerate() {
            g.push(t, i as u32);
        }
        g.rng = rng;
        Ok(g)
    }

    fn push(&mut self, time: i64, src: u32) {
        self.seq += 1;
        self.heap.push(Reverse((time, self.seq, src)));
    }

    /// Creates the noise processes of every tenant with rates that add up to
    /// the configured rate.
    fn plan_noise(&mut self, rng: &mut Rng, duration: f64, campaign_total: u64) {
        let seed = self.cfg.seed;
        let mut procs = Vec::new();
        // Wall-clock processes first: their volume does not follow `rate`.
        for (ti, t) in self.tenants.iter().enumerate() {
            let mut hosts: Vec<usize> = t.internet_facing().collect();
            hosts.push(t.ids);
            for a in hosts {
                let key = rng::mix(&[seed, ti as u64, a as u64, 0xF1]);
                procs.push(Proc { tenant: ti, kind: Noise::Fim(noise::Fim::new(t, a, key, rng, self.cfg.start_ms)) });
                if matches!(t.agents[a].os, Os::Ubuntu | Os::Rhel) {
                    procs.push(Proc { tenant: ti, kind: Noise::Packages(noise::Packages::new(a, key ^ 0xBA6)) });
                }
            }
        }
        let wall: f64 = procs.iter().filter_map(Proc::expected_rate).sum();
        let campaigns = campaign_total as f64 / duration;
        let scaled = (self.rate_per_ms - wall - campaigns).max(0.2 * self.rate_per_ms);
        let weight: usize = self.tenants.iter().map(|t| t.agents.len()).sum();
        let count = |rate: f64, per_proc: f64, max: usize| ((rate / per_proc).ceil() as usize).clamp(1, max);
        for (ti, t) in self.tenants.iter().enumerate() {
            let r = scaled * t.agents.len() as f64 / weight as f64;
            let per_web = 0.22 * r / t.web.len() as f64;
            for &w in &t.web {
                let n = count(per_web, 0.05 / 1000.0, 64);
                for _ in 0..n {
                    procs.push(Proc { tenant: ti, kind: Noise::WebStorm(WebStorm::new(w, per_web / n as f64)) });
                }
            }
            let hosts = t.internet_facing().count();
            let n = count(0.10 * r, 0.03 / 1000.0, 64);
            for _ in 0..n {
                procs.push(Proc { tenant: ti, kind: Noise::Scanner(Scanner::new(0.10 * r / n as f64, hosts)) });
            }
            let n = count(0.14 * r, 0.05 / 1000.0, 64);
            for _ in 0..n {
                procs.push(Proc { tenant: ti, kind: Noise::Ids(Ids::new(0.14 * r / n as f64)) });
            }
            let n = count(0.16 * r, 0.03 / 1000.0, 64);
            for _ in 0..n {
                procs.push(Proc { tenant: ti, kind: Noise::SshAuto(SshAuto::new(0.16 * r / n as f64)) });
            }
            let n = count(0.20 * r, 5.0 / 1000.0, 16);
            for _ in 0..n {
                procs.push(Proc { tenant: ti, kind: Noise::WinLogons(WinLogons::new(0.20 * r / n as f64)) });
            }
            let n = count(0.175 * r, 0.0333 / 1000.0, 48).max(3);
            let mut rep_rng = Rng::derive(&[seed, 0x4E9, ti as u64]);
            for _ in 0..n {
                let rep = Repeater::new(t, &mut rep_rng, 0.175 * r / n as f64, self.cfg.start_ms);
                procs.push(Proc { tenant: ti, kind: Noise::Repeater(rep) });
            }
            let n = count(0.005 * r, 0.05 / 1000.0, 8);
            for _ in 0..n {
                procs.push(Proc { tenant: ti, kind: Noise::Rare(Rare::new(0.005 * r / n as f64)) });
            }
        }
        if let Some(period) = self.cfg.recurring_scan {
            for ti in 0..self.tenants.len() {
                // The first sweep after the baseline warm-up, staggered by tenant.
                let offset = 45 * 60_000 + ti as i64 * 7 * 60_000;
                procs
                    .push(Proc { tenant: ti, kind: Noise::AuthorisedScan(noise::AuthorisedScan::new(period, offset)) });
            }
        }
        self.procs = procs;
    }

    /// Appends the next alert as one JSON line (ending in `\n`) to `out`.
    ///
    /// Returns `None` once `alerts` alerts have been emitted, `Some(None)`
    /// for a noise alert and `Some(Some(label))` for a campaign alert.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> Option<Option<Label>> {
        if self.emitted >= self.cfg.alerts {
            return None;
        }
        loop {
            let Reverse((time, _, src)) = self.heap.pop()?;
            let src = src as usize;
            let noise = src < self.procs.len();
            if noise && self.noise_emitted >= self.noise_budget {
                continue;
            }
            let ts = self.skewed(time, noise);
            let (tenant, label_info) = {
                let tenant = if noise { self.procs[src].tenant } else { self.camps[src - self.procs.len()].tenant };
                self.draft.reset();
                let mut env = Env {
                    d: &mut self.draft,
                    t: &mut self.tenants[tenant],
                    rng: &mut self.rng,
                    now: time,
                    ts,
                    dil: self.dil,
                    scanners: &self.scanners,
                };
                if noise {
                    let next = self.procs[src].emit(&mut env);
                    self.noise_emitted += 1;
                    self.seq += 1;
                    self.heap.push(Reverse((next.max(time), self.seq, src as u32)));
                    (tenant, None)
                } else {
                    let c = &mut self.camps[src - self.procs.len()];
                    let (step, next) = c.emit(&mut env);
                    if let Some(next) = next {
                        self.seq += 1;
                        self.heap.push(Reverse((next, self.seq, src as u32)));
                    }
                    (tenant, Some(step))
                }
            };
            let (sec, offset) =
                alert::write_line(&mut self.line, &self.draft, &self.rules, &mut self.tenants[tenant], ts);
            out.extend_from_slice(self.line.as_bytes());
            self.emitted += 1;
            if self.emitted.is_multiple_of(4096) {
                self.steer(time);
            }
            let label = label_info.map(|step| {
                let c = &mut self.camps[src - self.procs.len()];
                let alert_id = format!("{sec}.{offset}");
                if c.want_id {
                    c.want_id = false;
                    c.ref_id.clone_from(&alert_id);
                }
                Label {
                    alert_id,
                    tenant: self.names[tenant].clone(),
                    campaign: c.id.clone(),
                    kind: c.kind,
                    step,
                    step_name: c.kind.step_names()[usize::from(step) - 1].to_string(),
                }
            });
            return Some(label);
        }
    }

    /// The printed timestamp: agents deliver ~2 % of alerts a few seconds
    /// late and, rarely, a reconnecting agent flushes a 2–3 minute backlog.
    fn skewed(&mut self, time: i64, noise: bool) -> i64 {
        if self.emitted == 0 {
            return time;
        }
        let r = self.rng.f64();
        let lag = if noise && r < 0.000_1 {
            self.rng.range_i64(120_000, 180_000)
        } else if r < 0.02 {
            self.rng.range_i64(0, 5_000)
        } else {
            0
        };
        (time - lag).max(self.cfg.start_ms)
    }

    /// Nudges the noise dilation so event time advances at `rate`: a slow
    /// integral controller on the rate of the last few thousand alerts (slow
    /// enough to leave bursts and the working-hours rhythm visible).
    fn steer(&mut self, now: i64) {
        let (n0, t0) = self.last_steer;
        self.last_steer = (self.emitted, now);
        let span = (now - t0) as f64;
        if n0 == 0 || span <= 0.0 {
            return;
        }
        let recent = (self.emitted - n0) as f64 / span;
        let target = self.rate_per_ms * rhythm(now) / self.rhythm_mean;
        let ratio = (recent / target).clamp(0.5, 2.0);
        self.dil = (self.dil * ratio.powf(0.1)).clamp(0.02, 50.0);
    }

    /// Tenant names, by tenant index.
    pub fn tenant_names(&self) -> &[String] {
        &self.names
    }

    /// Alerts emitted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Number of planned campaigns (all of them complete within the stream).
    pub fn campaigns(&self) -> usize {
        self.camps.len()
    }
}

/// The working-hours rhythm of the total alert rate (busier in office
/// hours, quieter at night and at weekends).
fn rhythm(ms: i64) -> f64 {
    0.75 + 0.25 * noise::activity(ms)
}

/// Mean of [`rhythm`] over `[start, start + duration]`.
fn rhythm_mean(start: i64, duration: f64) -> f64 {
    let samples = ((duration / 300_000.0) as i64).clamp(1, 20_000);
    let step = duration / samples as f64;
    let sum: f64 = (0..samples).map(|i| rhythm(start + (i as f64 * step) as i64)).sum();
    sum / samples as f64
}

/// Plans `campaigns_per_tenant` campaigns for every tenant, fewer if they
/// would exceed half the alerts.
fn plan_campaigns(cfg: &GeneratorConfig, tenants: &[Tenant], scanners: &[String]) -> Vec<Campaign> {
    let auto = (cfg.alerts / cfg.tenants as u64 / 40_000).max(6) as usize;
    let mut per_tenant = cfg.campaigns_per_tenant.unwrap_or(auto);
    loop {
        let mut taken: BTreeSet<String> = scanners.iter().cloned().collect();
        let mut ip_rng = Rng::derive(&[cfg.seed, 0xA77AC]);
        let mut camps = Vec::with_capacity(per_tenant * tenants.len());
        for (ti, t) in tenants.iter().enumerate() {
            for n in 0..per_tenant {
                let kind = CampaignKind::all()[n % 6];
                let ip = campaign::attacker_ip(&mut ip_rng, &mut taken);
                camps.push(Campaign::plan(ti, t, n, kind, cfg.seed, ip));
            }
        }
        let total: u64 = camps.iter().map(Campaign::total).sum();
        if total <= cfg.alerts / 2 || per_tenant == 0 {
            return camps;
        }
        per_tenant -= 1;
    }
}

/// Generates a whole stream: every alert line to `alerts`, every label as
/// one NDJSON line to `labels`, calling `progress` with the number of
/// alerts emitted every 1 M alerts.
///
/// # Errors
/// A config error (see [`Generator::new`]) or an I/O error from either writer.
pub fn write_stream(
    cfg: GeneratorConfig,
    alerts: &mut impl Write,
    labels: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> Result<GenerateStats, GeneratorError> {
    let mut g = Generator::new(cfg)?;
    let mut stats = GenerateStats { campaigns: g.campaigns() as u64, ..GenerateStats::default() };
    let mut buf = Vec::with_capacity(1 << 20);
    let mut lbuf = Vec::with_capacity(1 << 16);
    while let Some(label) = g.next_into(&mut buf) {
        if let Some(label) = label {
            serde_json::to_writer(&mut lbuf, &label).map_err(std::io::Error::from)?;
            lbuf.push(b'\n');
            stats.campaign_alerts += 1;
        }
        if buf.len() >= 1 << 20 {
            alerts.write_all(&buf)?;
            buf.clear();
        }
        if lbuf.len() >= 1 << 16 {
            labels.write_all(&lbuf)?;
            lbuf.clear();
        }
        if g.emitted().is_multiple_of(1_000_000) {
            progress(g.emitted());
        }
    }
    alerts.write_all(&buf)?;
    labels.write_all(&lbuf)?;
    alerts.flush()?;
    labels.flush()?;
    stats.alerts = g.emitted();
    Ok(stats)
}
