//! Correlate: alerts of one tenant that share an entity within that entity
//! kind's window join one cluster (union-find; clusters merge).
//!
//! * **Windows per entity kind** (host and user 60 min, ip 6 h, hash 24 h by
//!   default): an entity links a new alert to its cluster only if it was last
//!   seen within the window.
//! * **Signal links, noise attaches.** Alerts at or above `link_min_level`
//!   create clusters and merge the clusters of all their live entities.
//!   Lower-level alerts (the bulk of SOC noise) join a live cluster through an
//!   entity but never create, bridge or extend one; with no live cluster they
//!   are counted as unclustered. Without this, routine noise on a host would
//!   chain into one cluster that never closes.
//!   File hashes are specific enough to link at any level.
//! * **Base rates.** A rule raised on more than `common_rule_hosts` hosts of
//!   the tenant, or more than `routine_alerts` times an hour on one host, is
//!   *common*: it links only through its own host (a scanner's sweep or a
//!   fleet-wide package update bridges nothing), its level counts at a
//!   discount and its tactics are not signal.
//! * **Background.** A rule raised on one host by more than
//!   `crowded_sources` distinct source ips is the internet's probing of an
//!   exposed service: it scores like a common rule. A common or background
//!   rule counts in full again when one actor of the cluster raised it
//!   among more than `score.actor_min_rules` distinct rules (scan, inject,
//!   succeed from one source).
//! * **Hubs stop linking.** An ip, user, hash, process or url seen on more
//!   than `hub_degree` hosts (a scanner, the DNS server) is demoted.
//!   User names from failed logons are chosen by the attacker and never link.
//! * **Capped.** Clusters stop merging at `max_cluster_alerts`; entities and
//!   clusters per tenant are bounded, evictions counted.
//!
//! After every alert the touched cluster is scored ([`crate::score`]) and
//! judged ([`crate::handoff`]), so an escalation fires on the alert that
//! crosses the threshold, not at window end. That is why score and hand-off
//! run inside this operator rather than as separate batch stages: a batch
//! boundary would otherwise decide which alert "crossed", and results would
//! depend on batch size. No escalation fires during a tenant's baseline
//! warm-up. Duplicates (marked by dedup) only bump counts in the cluster of
//! the alert they repeat.
//!
//! Results depend only on per-tenant record order and event times; state is
//! expired on watermarks strictly after it can no longer match a non-late
//! record, so batch size and shard count do not change them.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cluster::{
    CaseBudget, ClusterReport, EntityKind, Excerpt, Representative, RuleCount, Trigger, cluster_id_hex,
};
use crate::detection::{Detection, DetectionReport};
use crate::error::{Error, Result};
use crate::handoff::HandoffConfig;
use crate::hash::{FastMap, FastSet, StableHasher, stable_hash};
use crate::intel::{Finding, Intel};
use crate::mitre::kill_chain_index;
use crate::operator::{AlertBatch, Collector, Context, Operator, Output, ReportKind, Tenants};
use crate::policy::Policies;
use crate::redact::Redaction;
use crate::schema::{AlertColumns, opt_str};
use crate::score::{RuleRef, Score, ScoreConfig, ScoreInput};
use crate::time::{Duration, EventTime, Rfc3339};

/// Correlation window per entity kind; a kind without a window does not link.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EntityWindows {
    pub host: Option<Duration>,
    pub user: Option<Duration>,
    pub ip: Option<Duration>,
    pub process: Option<Duration>,
    pub hash: Option<Duration>,
    pub url: Option<Duration>,
}

impl EntityWindows {
    /// Sets the window of a kind that has one (a kind without a window is
    /// not extracted at all, so only lengths can change).
    pub fn set(&mut self, kind: EntityKind, window: Duration) {
        let slot = match kind {
            EntityKind::Host => &mut self.host,
            EntityKind::User => &mut self.user,
            EntityKind::Ip => &mut self.ip,
            EntityKind::Process => &mut self.process,
            EntityKind::Hash => &mut self.hash,
            EntityKind::Url => &mut self.url,
        };
        if slot.is_some() {
            *slot = Some(window);
        }
    }
}

impl Default for EntityWindows {
    fn default() -> Self {
        Self {
            host: Some(Duration::from_mins(60)),
            user: Some(Duration::from_mins(60)),
            ip: Some(Duration::from_hours(6)),
            process: None,
            hash: Some(Duration::from_hours(24)),
            url: None,
        }
    }
}

impl EntityWindows {
    pub fn get(&self, kind: EntityKind) -> Option<i64> {
        let w = match kind {
            EntityKind::Host => self.host,
            EntityKind::User => self.user,
            EntityKind::Ip => self.ip,
            EntityKind::Process => self.process,
            EntityKind::Hash => self.hash,
            EntityKind::Url => self.url,
        };
        w.map(Duration::millis).filter(|&ms| ms > 0)
    }
}

/// Per entity kind: on how many hosts an entity may be seen before it is a
/// hub. Scanners hit every host, so ips are demoted early; a compromised
/// account or a spreading file legitimately reaches a few hosts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HubDegrees {
    pub ip: usize,
    pub user: usize,
    pub hash: usize,
    pub process: usize,
    pub url: usize,
}

impl Default for HubDegrees {
    fn default() -> Self {
        Self { ip: 3, user: 8, hash: 6, process: 8, url: 8 }
    }
}

impl HubDegrees {
    fn get(&self, kind: EntityKind) -> usize {
        match kind {
            EntityKind::Host => usize::MAX,
            EntityKind::User => self.user,
            EntityKind::Ip => self.ip,
            EntityKind::Process => self.process,
            EntityKind::Hash => self.hash,
            EntityKind::Url => self.url,
        }
    }
}

/// `[correlate]` settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelateConfig {
    /// How long after its last sighting an entity still links alerts.
    pub windows: EntityWindows,
    /// Alerts at or above this level create and merge clusters; lower ones
    /// only attach to a live cluster.
    pub link_min_level: u8,
    /// An entity seen on more hosts than this (per kind) is a hub and stops linking.
    pub hub_degree: HubDegrees,
    /// Alerts of a rule that already fired more than this many times on the
    /// same host within `routine_window` are routine there: they attach to a
    /// live cluster but never create, bridge or extend one (0 = off).
    pub routine_alerts: u32,
    pub routine_window: Duration,
    /// Rule groups of failed logons: the user names in them are chosen by
    /// whoever tries to log in, so they are reported but never link.
    pub failed_auth_groups: Vec<String>,
    /// Entity kinds specific enough to link at any level (the same file hash
    /// on several hosts is a signal even in a level-5 integrity alert).
    pub link_at_any_level: Vec<EntityKind>,
    /// A rule seen on more than this many hosts of a tenant within
    /// `common_window` is common there (its base rate is high): its level is
    /// discounted and its tactics are not counted as signal (0 = off).
    pub common_rule_hosts: usize,
    pub common_window: Duration,
    /// A rule raised on one host by more than this many distinct source ips
    /// within `common_window` is *background* there: the probing every
    /// exposed service draws from the internet. Like a common rule, its level
    /// is discounted and its tactics are not signal, unless one actor that
    /// did more (see below) raised it too (0 = off).
    pub crowded_sources: usize,
    /// How long an actor's distinct rules on a host are remembered for its
    /// breadth, whichever clusters its alerts joined: when a busy host's
    /// cluster fills up and starts afresh, an injection still shows the
    /// scan that came before it.
    pub actor_window: Duration,
    /// No escalation fires during this much event time after a tenant's first
    /// alert, while its base rates are learned; a cluster over the threshold
    /// then escalates on its next alert.
    pub baseline_warmup: Duration,
    /// A cluster stops merging once it holds this many distinct alerts.
    pub max_cluster_alerts: u64,
    /// Bounds on live state per tenant; the least recently active are evicted.
    pub max_clusters_per_tenant: usize,
    pub max_entities_per_tenant: usize,
    /// User names that identify nobody and must not link (case-insensitive).
    /// Machine accounts (`HOST$`) never link either.
    pub ignore_users: Vec<String>,
    /// Addresses that identify nobody (placeholders, loopback) and must not link.
    pub ignore_ips: Vec<String>,
    /// Entity values listed per kind in a report.
    pub report_entities_per_kind: usize,
    /// Representative alerts kept per cluster.
    pub max_representatives: usize,
    /// Event time between state sweeps (closing clusters, entity expiry,
    /// eviction). Fingerprints kept for duplicates expire on every watermark.
    pub sweep_interval: Duration,
    /// Emit a `close` report for every cluster, not only handed-off ones.
    pub report_all_closed: bool,
    /// Keep every member alert id in reports (for `sluice eval`); costs memory.
    #[serde(skip)]
    pub track_members: bool,
}

impl Default for CorrelateConfig {
    fn default() -> Self {
        Self {
            windows: EntityWindows::default(),
            link_min_level: 6,
            hub_degree: HubDegrees::default(),
            routine_alerts: 10,
            routine_window: Duration::from_hours(1),
            link_at_any_level: vec![EntityKind::Hash],
            common_rule_hosts: 3,
            crowded_sources: 1,
            actor_window: Duration::from_mins(20),
            common_window: Duration::from_hours(24),
            baseline_warmup: Duration::from_mins(30),
            failed_auth_groups: ["authentication_failed", "authentication_failures", "invalid_login"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_cluster_alerts: 10_000,
            max_clusters_per_tenant: 50_000,
            max_entities_per_tenant: 250_000,
            ignore_users: ["-", "(none)", "n/a", "system", "local service", "network service", "anonymous logon"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ignore_ips: ["-", "::1", "127.0.0.1", "0.0.0.0"].iter().map(|s| s.to_string()).collect(),
            report_entities_per_kind: 25,
            max_representatives: 10,
            sweep_interval: Duration::from_mins(5),
            report_all_closed: false,
            track_members: false,
        }
    }
}

impl CorrelateConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if EntityKind::ALL.iter().all(|k| self.windows.get(*k).is_none()) {
            errors.push("correlate.windows: no entity kind has a window, so nothing can correlate".into());
        }
        if self.link_min_level > 16 {
            errors.push(format!(
                "correlate.link_min_level = {} is above the highest Wazuh level 16",
                self.link_min_level
            ));
        }
        for (kind, d) in [
            ("ip", self.hub_degree.ip),
            ("user", self.hub_degree.user),
            ("hash", self.hub_degree.hash),
            ("process", self.hub_degree.process),
            ("url", self.hub_degree.url),
        ] {
            if d == 0 {
                errors.push(format!("correlate.hub_degree.{kind} must be >= 1"));
            }
        }
        if self.common_window.millis() <= 0 {
            errors.push("correlate.common_window must be positive".into());
        }
        if self.actor_window.millis() <= 0 {
            errors.push("correlate.actor_window must be positive".into());
        }
        if self.routine_window.millis() <= 0 {
            errors.push("correlate.routine_window must be positive".into());
        }
        for (name, v) in [
            ("max_cluster_alerts", self.max_cluster_alerts as usize),
            ("max_clusters_per_tenant", self.max_clusters_per_tenant),
            ("max_entities_per_tenant", self.max_entities_per_tenant),
            ("max_representatives", self.max_representatives),
            ("report_entities_per_kind", self.report_entities_per_kind),
        ] {
            if v == 0 {
                errors.push(format!("correlate.{name} must be >= 1"));
            }
        }
        if self.sweep_interval.millis() <= 0 {
            errors.push("correlate.sweep_interval must be positive".into());
        }
        errors
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct EntityState {
    cluster: u64,
    first: EventTime,
    last: EventTime,
    /// Distinct hosts (hashed) this entity was seen on, up to `hub_degree + 1`.
    hosts: Vec<u64>,
    hub: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TacticSeen {
    name: String,
    first: EventTime,
    /// Position in the kill chain; unknown tactics sort last and are never signal.
    index: Option<u8>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct RuleStat {
    level: u8,
    description: String,
    count: u64,
    /// Whether the rule's latest alert in this cluster was routine on its host.
    routine: bool,
    /// Routine, or common in the tenant, at the last rescore.
    common: bool,
    /// Whether an alert of the rule in this cluster was background on its
    /// host (raised there by more sources than `crowded_sources`).
    crowded: bool,
    /// Common in the tenant or crowded, at the last rescore.
    everyday: bool,
    /// Whether an alert of the rule in this cluster was raised by no actor
    /// that kept it (none, below `actor_min_level`, a hub, or over the
    /// caps): a verdict prior on an actor never discounts such a rule.
    untracked: bool,
    /// Kill-chain positions of the ATT&CK tactics the rule carries.
    tactic_mask: u16,
}

/// A representative alert as kept in state (see [`Representative`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Rep {
    fingerprint: u64,
    alert_id: String,
    t: EventTime,
    rule_id: u32,
    level: u8,
    description: String,
    agent: Option<String>,
    src_ip: Option<String>,
    user: Option<String>,
    full_log: Option<String>,
    count: u64,
}

impl Rep {
    fn to_report(&self) -> Representative {
        Representative {
            alert_id: self.alert_id.clone(),
            event_time: Rfc3339(self.t).to_string(),
            rule_id: self.rule_id,
            level: self.level,
            description: self.description.clone(),
            agent: self.agent.clone(),
            src_ip: self.src_ip.clone(),
            user: self.user.clone(),
            count: self.count,
        }
    }

    fn excerpt(&self) -> Option<Excerpt> {
        let full_log = self.full_log.clone()?;
        Some(Excerpt { alert_id: self.alert_id.clone(), level: self.level, full_log })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Cluster {
    id: u64,
    first: EventTime,
    last: EventTime,
    /// Latest event time at which one of its entities can still link.
    retain_until: EventTime,
    unique: u64,
    duplicates: u64,
    max_level: u8,
    max_level_rule: u32,
    rules: BTreeMap<u32, RuleStat>,
    tactics: Vec<TacticSeen>,
    /// Tactics of uncommon rules at or above the tactic level (derived in `rescore`).
    signal_tactics: usize,
    entities: BTreeMap<EntityKind, BTreeSet<String>>,
    entity_hashes: FastSet<(EntityKind, u64)>,
    /// Distinct hosts (kept alongside `entity_hashes` so scoring need not count).
    hosts: usize,
    /// Actor (source ip or user) → its value and the distinct rules it raised.
    actors: BTreeMap<(EntityKind, u64), (String, BTreeSet<u32>)>,
    /// The actor behind the most distinct rules (ties: smallest value).
    best_actor: Option<(EntityKind, u64)>,
    representatives: Vec<Rep>,
    members: Vec<String>,
    absorbed: Vec<u64>,
    /// Score and signal-tactic count at the last hand-off.
    handed: Option<(f64, usize)>,
    /// Current score (the breakdown is built only when reported).
    score: f64,
    /// Correlation rules that fired into the cluster, by rule name (the
    /// latest firing's window and entities; severity is the highest).
    detections: BTreeMap<String, DetectionReport>,
    /// Detections absorbed, all rules together: part of the version, so a
    /// report that a detection changed gets a new idempotency key.
    fired: u64,
    /// What threat intel and the inventory know about the cluster's
    /// entities, looked up once when each joins (bounded by [`MAX_HITS`]).
    intel: BTreeMap<(EntityKind, u64), Hit>,
    /// Broad actors whose pattern a verdict prior judged (none when over
    /// the safety floor), and the points their part of the score was worth,
    /// taken away (set in `rescore`).
    judged: Vec<(EntityKind, u64)>,
    taken: f64,
}

/// An entity of a cluster that threat intel or the inventory knows.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Hit {
    value: String,
    findings: Vec<Finding>,
}

impl Hit {
    /// A known scanner or service account: its breadth says nothing.
    fn mutes_actor(&self) -> bool {
        self.findings.iter().any(|f| matches!(f, Finding::KnownScanner { .. } | Finding::ServiceAccount { .. }))
    }
}

/// (actor kind, actor, host) → the rules it raised there and when it last did.
type ActorRules = FastMap<(EntityKind, u64, u64), Vec<(u32, EventTime)>>;

/// What actors raised on one host (`TenantState::actor_rules`), for an
/// alert at or above `score.actor_min_level` on that host.
#[derive(Clone, Copy)]
struct ActorHistory<'a> {
    rules: &'a ActorRules,
    host: u64,
    window: u64,
}

/// Where a cluster's new entities are looked up: the loaded intel (`None`
/// when nothing is loaded), as seen by one tenant.
#[derive(Clone, Copy)]
struct Lookup<'a> {
    intel: Option<&'a Intel>,
    tenant: &'a str,
}

impl Lookup<'_> {
    fn find(&self, kind: EntityKind, value: &str) -> Option<Hit> {
        let findings = self.intel?.lookup(self.tenant, kind, value);
        (!findings.is_empty()).then(|| Hit { value: value.to_string(), findings })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TenantState {
    name: Arc<str>,
    entities: FastMap<(EntityKind, u64), EntityState>,
    clusters: FastMap<u64, Cluster>,
    /// Merged cluster id → the cluster it went into.
    forward: FastMap<u64, u64>,
    /// Fingerprint of a passed alert → its cluster and event time, so its
    /// duplicates count there. Dedup marks a duplicate only within its window
    /// of the alert it repeats, so entries expire after that window.
    by_fingerprint: FastMap<u64, (u64, EventTime)>,
    /// `by_fingerprint`'s insertions in order, so expiry looks only at the
    /// oldest (not checkpointed: rebuilt from the map on restore).
    #[serde(skip)]
    fingerprint_order: VecDeque<(u64, EventTime)>,
    /// (rule, host) → (window start, alerts in the window, alerts in the previous one).
    routine: FastMap<(u32, u64), (EventTime, u32, u32)>,
    /// rule → (window start, distinct hosts that raised it, capped).
    rule_hosts: FastMap<u32, (EventTime, Vec<u64>)>,
    /// Actor (source ip, user) → (window start, distinct hosts it acted on,
    /// capped): an actor on many hosts is a scanner or a service account.
    actor_hosts: FastMap<(EntityKind, u64), (EventTime, Vec<u64>)>,
    /// (rule, host) → (window start, distinct source ips that raised it
    /// there, capped): a rule many sources raise on a host is background.
    rule_sources: FastMap<(u32, u64), (EventTime, Vec<u64>)>,
    /// (actor kind, actor, host) → the distinct rules at or above
    /// `score.actor_min_level` it raised there within `actor_window`, each
    /// with when it last did (capped): its breadth on that host, whichever
    /// clusters its alerts joined.
    actor_rules: ActorRules,
    /// Earliest event time seen, for the baseline warm-up.
    first_event: Option<EventTime>,
    last_sweep: Option<EventTime>,
}

impl TenantState {
    /// Forgets the fingerprints no duplicate can repeat any more: dedup marks
    /// a record a duplicate only within `window` of the alert it repeats, and
    /// no record older than the watermark reaches the operators.
    fn expire_fingerprints(&mut self, wm: EventTime, window: i64) {
        while let Some(&(fingerprint, t)) = self.fingerprint_order.front() {
            let current = self.by_fingerprint.get(&fingerprint).is_some_and(|&(_, at)| at == t);
            if current && t.saturating_add(window) > wm {
                break;
            }
            self.fingerprint_order.pop_front();
            if current {
                self.by_fingerprint.remove(&fingerprint);
            }
        }
    }

    fn resolve(&mut self, mut id: u64) -> Option<u64> {
        let start = id;
        while let Some(&next) = self.forward.get(&id) {
            id = next;
        }
        if id != start {
            self.forward.insert(start, id);
        }
        self.clusters.contains_key(&id).then_some(id)
    }

    /// The live cluster `id` resolves to, if it is still open at event time
    /// `t`. Judged by the cluster's own retention, not by whether a sweep has
    /// closed it yet: results must not depend on when watermarks arrive (a
    /// sweep closes exactly the clusters retained until before the watermark,
    /// and a record on time is never older than the watermark).
    fn resolve_open(&mut self, id: u64, t: EventTime) -> Option<u64> {
        self.resolve(id).filter(|id| self.clusters[id].retain_until >= t)
    }
}

/// One entity of a row: kind, value, stable hash of the value.
struct RowEntity<'a> {
    kind: EntityKind,
    value: &'a str,
    key: u64,
    /// Whether this entity may link (attacker-chosen values may not).
    link: bool,
    /// Whether this entity is someone acting (a source ip, a user), whose
    /// distinct rules the score counts.
    actor: bool,
    /// Whether the entity is a hub in the tenant (seen on too many hosts).
    hub: bool,
}

/// The correlate operator (with scoring and the hand-off decision inline).
#[derive(Debug)]
pub struct Correlate {
    config: CorrelateConfig,
    score: ScoreConfig,
    handoff: HandoffConfig,
    /// The hand-off settings of tenants whose policy overrides them.
    tenant_handoff: FastMap<Arc<str>, HandoffConfig>,
    /// The entity windows of tenants whose policy overrides them.
    tenant_windows: FastMap<Arc<str>, EntityWindows>,
    /// Dedup's window in ms: how long after an alert its duplicates can come.
    duplicate_window: i64,
    /// The dedup windows of tenants whose policy overrides it, in ms.
    tenant_duplicate_window: FastMap<Arc<str>, i64>,
    ignore_users: FastSet<String>,
    failed_auth_groups: FastSet<String>,
    tenants: FastMap<Arc<str>, TenantState>,
    /// Verdict priors, by tenant (not operator state: they come from the
    /// store, at start and whenever a verdict makes one).
    priors: Arc<Priors>,
    /// Threat intel and inventories (not operator state: loaded from files,
    /// at start and on every reload).
    intel: Arc<Intel>,
    /// Whether `intel` holds anything (no lookups at all when not).
    intel_loaded: bool,
}

const NAME: &str = "correlate";
/// 3: clusters keep what threat intel and the inventory found.
/// 4: background rules (`rule_sources`, `RuleStat::crowded`) and actors'
/// rules per host (`actor_rules`).
/// 5: clusters whose broad actor a verdict prior judged (`Cluster::judged`).
const SNAPSHOT_VERSION: u32 = 5;

impl Correlate {
    pub fn new(config: CorrelateConfig, score: ScoreConfig, handoff: HandoffConfig) -> Result<Self> {
        let mut errors = config.validate();
        errors.extend(score.validate());
        errors.extend(handoff.validate());
        if !errors.is_empty() {
            return Err(Error::Config(errors.join("; ")));
        }
        crate::redact::warm_up();
        let ignore_users = config.ignore_users.iter().map(|u| u.to_ascii_lowercase()).collect();
        let failed_auth_groups = config.failed_auth_groups.iter().cloned().collect();
        Ok(Self {
            config,
            score,
            handoff,
            tenant_handoff: FastMap::default(),
            tenant_windows: FastMap::default(),
            duplicate_window: crate::dedup::DedupConfig::default().window.millis(),
            tenant_duplicate_window: FastMap::default(),
            ignore_users,
            failed_auth_groups,
            tenants: FastMap::default(),
            priors: Arc::new(Priors::default()),
            intel: Arc::new(Intel::default()),
            intel_loaded: false,
        })
    }

    /// The dedup window (`dedup.window`) of the dedup stage in front: the
    /// fingerprint of an alert is kept that long for its duplicates.
    pub fn with_duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window.millis();
        self
    }

    /// A tenant's hand-off settings: its policy's, or the global ones.
    fn handoff_of(&self, tenant: &str) -> &HandoffConfig {
        if self.tenant_handoff.is_empty() {
            return &self.handoff;
        }
        self.tenant_handoff.get(tenant).unwrap_or(&self.handoff)
    }

    /// Live clusters of `tenant`.
    pub fn live_clusters(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).map_or(0, |t| t.clusters.len())
    }

    /// Records a rule raised on a host; true when the rule is common in the tenant.
    /// `host` is the stable hash of the alert's host name.
    fn count_common(&self, state: &mut TenantState, rule: u32, host: u64, t: EventTime) -> bool {
        let cap = self.config.common_rule_hosts;
        if cap == 0 {
            return false;
        }
        let seen = state.rule_hosts.entry(rule).or_insert_with(|| (t, Vec::new()));
        over_cap(seen, Some(host), t, self.config.common_window.millis(), cap)
    }

    /// Records the source ip that raised `rule` on `host`; true when more
    /// distinct ones than `crowded_sources` did within `common_window`.
    fn count_sources(&self, state: &mut TenantState, rule: u32, host: u64, ip: u64, t: EventTime) -> bool {
        let cap = self.config.crowded_sources;
        if cap == 0 {
            return false;
        }
        let seen = state.rule_sources.entry((rule, host)).or_insert_with(|| (t, Vec::new()));
        over_cap(seen, Some(ip), t, self.config.common_window.millis(), cap)
    }

    /// Counts an alert of `rule` on `host`; true when the rule is routine there.
    fn count_routine(&self, state: &mut TenantState, rule: u32, host: u64, t: EventTime) -> bool {
        if self.config.routine_alerts == 0 {
            return false;
        }
        let window = self.config.routine_window.millis();
        let (start, count, previous) = state.routine.entry((rule, host)).or_insert((t, 0, 0));
        if t >= start.saturating_add(window) {
            // The previous window still counts if it directly precedes this one.
            *previous = if t < start.saturating_add(2 * window) { *count } else { 0 };
            *start = t;
            *count = 0;
        }
        *count += 1;
        (*count).max(*previous) > self.config.routine_alerts
    }

    fn row_entities<'a>(&self, c: &AlertColumns<'a>, row: usize, out: &mut Vec<RowEntity<'a>>) {
        out.clear();
        let failed_auth = c.groups(row).any(|g| self.failed_auth_groups.contains(g));
        let mut push = |kind: EntityKind, value: Option<&'a str>, actor: bool| {
            let Some(value) = value else { return };
            if self.config.windows.get(kind).is_none() {
                return;
            }
            let mut buf = [0u8; 128];
            let Some(key) = self.entity_key_in(kind, value, &mut buf) else { return };
            if !out.iter().any(|e: &RowEntity<'_>| e.key == key) {
                let link = !(failed_auth && kind == EntityKind::User);
                out.push(RowEntity { kind, value, key, link, actor: actor && link, hub: false });
            }
        };
        push(EntityKind::Host, c.agent_name(row).or(c.agent_id(row)), false);
        push(EntityKind::User, opt_str(c.dst_user, row), true);
        push(EntityKind::User, opt_str(c.src_user, row), true);
        push(EntityKind::Ip, opt_str(c.src_ip, row), true);
        push(EntityKind::Ip, opt_str(c.dst_ip, row), false);
        // The agent's own address: network sensors report the host by it.
        push(EntityKind::Ip, c.agent_ip(row), false);
        push(EntityKind::Hash, opt_str(c.file_hash, row), false);
        push(EntityKind::Process, opt_str(c.process, row), false);
        push(EntityKind::Url, opt_str(c.url, row), false);
    }
}

/// The account part of a user name: without a `DOMAIN\` prefix or an
/// `@domain` suffix.
fn user_name(value: &str) -> &str {
    let value = value.rsplit_once('\\').map_or(value, |(_, user)| user);
    value.split_once('@').map_or(value, |(user, _)| user)
}

fn new_cluster(id: u64) -> Cluster {
    Cluster {
        id,
        first: EventTime::MAX,
        last: EventTime::MIN,
        retain_until: EventTime::MIN,
        unique: 0,
        duplicates: 0,
        max_level: 0,
        max_level_rule: 0,
        rules: BTreeMap::new(),
        tactics: Vec::new(),
        signal_tactics: 0,
        entities: BTreeMap::new(),
        entity_hashes: FastSet::default(),
        hosts: 0,
        actors: BTreeMap::new(),
        best_actor: None,
        representatives: Vec::new(),
        members: Vec::new(),
        absorbed: Vec::new(),
        handed: None,
        score: 0.0,
        detections: BTreeMap::new(),
        fired: 0,
        intel: BTreeMap::new(),
        judged: Vec::new(),
        taken: 0.0,
    }
}

fn add_tactic(list: &mut Vec<TacticSeen>, name: &str, t: EventTime) {
    match list.iter_mut().find(|s| s.name == name) {
        Some(s) => s.first = s.first.min(t),
        None => {
            list.push(TacticSeen { name: name.to_string(), first: t, index: kill_chain_index(name).map(|i| i as u8) })
        }
    }
}

/// Tactics in order of first appearance; ties broken by kill-chain position.
fn ordered(list: &[TacticSeen]) -> Vec<&TacticSeen> {
    let mut v: Vec<&TacticSeen> = list.iter().collect();
    v.sort_by(|a, b| {
        (a.first, a.index.unwrap_or(u8::MAX))
            .cmp(&(b.first, b.index.unwrap_or(u8::MAX)))
            .then_with(|| a.name.cmp(&b.name))
    });
    v
}

/// Tactics in kill-chain order (unknown ones last, by first appearance):
/// how case files list them.
fn kill_chain_ordered(list: &[TacticSeen]) -> Vec<&TacticSeen> {
    let mut v: Vec<&TacticSeen> = list.iter().collect();
    v.sort_by(|a, b| {
        (a.index.unwrap_or(u8::MAX), a.first)
            .cmp(&(b.index.unwrap_or(u8::MAX), b.first))
            .then_with(|| a.name.cmp(&b.name))
    });
    v
}

/// A base-rate counter: the distinct values seen since `start` (at most
/// `cap + 1`), restarted once `window` has passed. Records `value` at `t`;
/// true when more than `cap` distinct values were seen.
fn over_cap(seen: &mut (EventTime, Vec<u64>), value: Option<u64>, t: EventTime, window: i64, cap: usize) -> bool {
    let (start, values) = seen;
    if t >= start.saturating_add(window) {
        *start = t;
        values.clear();
    }
    if let Some(v) = value
        && values.len() <= cap
        && !values.contains(&v)
    {
        values.push(v);
    }
    values.len() > cap
}

/// Kill-chain positions of tactic names, as a bit mask.
fn tactic_mask(tactics: &[&str]) -> u16 {
    tactics.iter().filter_map(|t| kill_chain_index(t)).fold(0, |m, i| m | (1 << i))
}

impl Cluster {
    /// Forgets an actor that turned out to be a hub; picks the next best.
    fn drop_actor(&mut self, key: (EntityKind, u64)) {
        if self.actors.remove(&key).is_some() && self.best_actor == Some(key) {
            self.best_actor = None;
            let keys: Vec<(EntityKind, u64)> = self.actors.keys().copied().collect();
            for k in keys {
                self.consider_actor(k);
            }
        }
    }

    /// Makes `key` the best actor if it now raised more distinct rules.
    fn consider_actor(&mut self, key: (EntityKind, u64)) {
        let Some((value, rules)) = self.actors.get(&key) else { return };
        let better = match self.best_actor.and_then(|b| self.actors.get(&b)) {
            None => true,
            Some((best_value, best_rules)) => {
                rules.len() > best_rules.len() || (rules.len() == best_rules.len() && value < best_value)
            }
        };
        if better {
            self.best_actor = Some(key);
        }
    }

    /// Adds an entity; a new one is looked up in threat intel and the inventory.
    fn add_entity(&mut self, kind: EntityKind, value: &str, key: u64, cap: usize, lookup: Lookup<'_>) {
        if self.entity_hashes.insert((kind, key)) {
            self.hosts += usize::from(kind == EntityKind::Host);
            let set = self.entities.entry(kind).or_default();
            if set.len() < cap {
                set.insert(value.to_string());
            }
            if self.intel.len() < MAX_HITS
                && let Some(hit) = lookup.find(kind, value)
            {
                self.intel.insert((kind, key), hit);
            }
        }
    }

    /// Looks the cluster's entities up again in newly loaded intel: the
    /// entities found before (dropped if no longer known) and the ones kept
    /// for reports.
    fn recheck(&mut self, lookup: Lookup<'_>, key: impl Fn(EntityKind, &str) -> Option<u64>) {
        let mut fresh = BTreeMap::new();
        for (&(kind, k), hit) in &self.intel {
            if let Some(hit) = lookup.find(kind, &hit.value) {
                fresh.insert((kind, k), hit);
            }
        }
        for (&kind, values) in &self.entities {
            for value in values {
                if fresh.len() >= MAX_HITS {
                    break;
                }
                if let Some(k) = key(kind, value)
                    && !fresh.contains_key(&(kind, k))
                    && let Some(hit) = lookup.find(kind, value)
                {
                    fresh.insert((kind, k), hit);
                }
            }
        }
        self.intel = fresh;
    }

    /// Recomputes the score; `common_in_tenant` says which rules are common
    /// in the tenant now (a rule that turns out to be noise stops counting).
    ///
    /// A common or background rule still counts in full when an actor of
    /// the cluster that raised more than `actor_min_rules` distinct rules
    /// raised it: one source scanning, then injecting, then succeeding is an
    /// intrusion even when each of those alerts alone is everyday noise.
    ///
    /// A verdict prior on the pattern of a broad actor (its role and rules,
    /// see [`Cluster::actor_signature`]) takes that actor's part away: the
    /// points the cluster has only because of it (its breadth, its rules'
    /// exemption, and the rules no one else raised count as everyday). The
    /// breakdown shows the ordinary lines and then one line taking those
    /// points off. Not over the safety floor: there every actor counts.
    fn rescore(&mut self, cfg: &ScoreConfig, common_in_tenant: impl Fn(u32) -> bool, priors: Option<&TenantPriors>) {
        for (id, r) in self.rules.iter_mut() {
            r.everyday = common_in_tenant(*id) || r.crowded;
        }
        self.rejudge(cfg, priors);
    }

    /// The score from the rules' `everyday` flags as the last rescore left
    /// them, with the priors (and intel) in force now.
    fn rejudge(&mut self, cfg: &ScoreConfig, priors: Option<&TenantPriors>) {
        self.judged.clear();
        self.taken = 0.0;
        if let Some(priors) = priors.filter(|p| !p.is_empty()) {
            let min = cfg.actor_min_rules;
            for (key, (_, rules)) in &self.actors {
                if rules.len() > min && priors.contains_key(&self.actor_signature(*key)) {
                    self.judged.push(*key);
                }
            }
        }
        self.mark_common(cfg, false);
        let (total, signal, floor) = self.scored_total(cfg, priors, false);
        if self.judged.is_empty() || floor {
            self.judged.clear();
            self.score = total;
            self.signal_tactics = signal;
            return;
        }
        // The same cluster without the judged actors' part.
        self.mark_common(cfg, true);
        let (without, signal, _) = self.scored_total(cfg, priors, true);
        self.mark_common(cfg, false);
        self.taken = (total - without).max(0.0);
        self.score = without;
        self.signal_tactics = signal;
    }

    /// Sets each rule's `common` flag (see [`Cluster::rescore`]); with
    /// `without_judged`, judged actors exempt nothing, and a rule only they
    /// raised is everyday.
    fn mark_common(&mut self, cfg: &ScoreConfig, without_judged: bool) {
        let min = cfg.actor_min_rules;
        let mut broad: Vec<&BTreeSet<u32>> = Vec::new();
        let mut judged: Vec<&BTreeSet<u32>> = Vec::new();
        let mut others: Vec<&BTreeSet<u32>> = Vec::new();
        for (key, (_, rules)) in &self.actors {
            if without_judged {
                if self.judged.contains(key) {
                    judged.push(rules);
                    continue;
                }
                others.push(rules);
            }
            if rules.len() > min {
                broad.push(rules);
            }
        }
        for (id, r) in self.rules.iter_mut() {
            let only_judged =
                !r.untracked && judged.iter().any(|j| j.contains(id)) && !others.iter().any(|o| o.contains(id));
            let everyday = r.everyday || only_judged;
            r.common = r.routine || (everyday && !broad.iter().any(|b| b.contains(id)));
        }
    }

    /// The best actor when it raised more than `actor_min_rules` distinct
    /// rules: the cluster is its doing.
    fn broad_actor(&self, cfg: &ScoreConfig) -> Option<(EntityKind, u64)> {
        self.best_actor.filter(|k| self.actors.get(k).is_some_and(|(_, r)| r.len() > cfg.actor_min_rules))
    }

    /// The actor behind the most distinct rules (ties: smallest value)
    /// among those not judged.
    fn best_unjudged_actor(&self) -> Option<(&str, usize)> {
        let best = if self.judged.is_empty() {
            self.best_actor.and_then(|k| self.actors.get(&k))
        } else {
            self.actors
                .iter()
                .filter(|(k, _)| !self.judged.contains(k))
                .map(|(_, a)| a)
                .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(&a.0)))
        };
        best.map(|(value, rules)| (value.as_str(), rules.len()))
    }

    /// The score (with its explanation when `explain`) and the number of
    /// signal tactics, from the rules' current common flags.
    fn scored(&self, cfg: &ScoreConfig, explain: bool, priors: Option<&TenantPriors>) -> (Score, usize) {
        self.with_input(cfg, priors, false, explain, |input, signal| {
            let score = if explain { cfg.score(input) } else { Score { total: cfg.total(input), lines: Vec::new() } };
            (score, signal)
        })
    }

    /// The total, the signal tactics, and whether it is over the safety floor.
    /// With `without_judged`: the actor is the best one not judged, and no
    /// prior applies.
    fn scored_total(
        &self,
        cfg: &ScoreConfig,
        priors: Option<&TenantPriors>,
        without_judged: bool,
    ) -> (f64, usize, bool) {
        self.with_input(cfg, priors, without_judged, false, |input, signal| {
            let (total, floor) = cfg.total_and_floor(input);
            (total, signal, floor)
        })
    }

    fn with_input<T>(
        &self,
        cfg: &ScoreConfig,
        priors: Option<&TenantPriors>,
        without_judged: bool,
        explain: bool,
        f: impl FnOnce(&ScoreInput<'_>, usize) -> T,
    ) -> T {
        let signal = self
            .rules
            .values()
            .filter(|r| !r.common && r.level >= cfg.tactic_min_level)
            .fold(0u16, |m, r| m | r.tactic_mask);
        let tactics: Vec<&str> = ordered(&self.tactics)
            .into_iter()
            .filter(|t| t.index.is_some_and(|i| signal & (1 << i) != 0))
            .map(|t| t.name.as_str())
            .collect();
        let strong_rules = self.rules.values().filter(|r| !r.common && r.level >= cfg.diversity_min_level).count();
        // Highest level among uncommon and among common rules (ties: lowest rule id).
        let top = |common: bool| {
            self.rules
                .iter()
                .filter(|(_, r)| r.common == common)
                .max_by(|a, b| a.1.level.cmp(&b.1.level).then(b.0.cmp(a.0)))
                .map(|(id, r)| RuleRef { level: r.level, rule_id: *id, description: &r.description })
        };
        let hosts = self.hosts;
        let (actor, prior) = if without_judged {
            (self.best_unjudged_actor(), None)
        } else {
            let best = self.best_actor.and_then(|k| self.actors.get(&k));
            // The prior's text only when it is shown (not on every alert).
            let prior = if explain {
                self.prior(cfg, priors)
            } else {
                let applies = !self.judged.is_empty()
                    || priors.is_some_and(|p| !p.is_empty() && p.contains_key(&self.signature_hash(cfg)));
                applies.then_some(Cow::Borrowed(""))
            };
            (best.map(|(value, rules)| (value.as_str(), rules.len())), prior)
        };
        let detections: Vec<(&str, u8, u64)> =
            self.detections.iter().map(|(rule, d)| (rule.as_str(), d.severity, d.count)).collect();
        let intel: Vec<(EntityKind, &str, &Finding)> = self
            .intel
            .iter()
            .flat_map(|(&(kind, _), hit)| hit.findings.iter().map(move |f| (kind, hit.value.as_str(), f)))
            .collect();
        let input = ScoreInput {
            top_rule: top(false),
            top_common_rule: top(true),
            signal_tactics: &tactics,
            strong_rules,
            unique_alerts: self.unique,
            hosts,
            actor,
            detections: &detections,
            prior: prior.as_deref(),
            prior_points: (!self.judged.is_empty()).then_some(self.taken),
            intel: &intel,
        };
        f(&input, tactics.len())
    }

    fn absorb(&mut self, other: Cluster, cfg: &CorrelateConfig) {
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        self.retain_until = self.retain_until.max(other.retain_until);
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        if (other.max_level, std::cmp::Reverse(other.max_level_rule))
            > (self.max_level, std::cmp::Reverse(self.max_level_rule))
        {
            self.max_level = other.max_level;
            self.max_level_rule = other.max_level_rule;
        }
        for (id, r) in other.rules {
            match self.rules.get_mut(&id) {
                Some(mine) => {
                    mine.count += r.count;
                    mine.routine |= r.routine;
                    mine.crowded |= r.crowded;
                    mine.untracked |= r.untracked;
                }
                None => {
                    self.rules.insert(id, r);
                }
            }
        }
        for t in other.tactics {
            add_tactic(&mut self.tactics, &t.name, t.first);
        }
        for (kind, values) in other.entities {
            let set = self.entities.entry(kind).or_default();
            for v in values {
                if set.len() >= cfg.report_entities_per_kind {
                    break;
                }
                set.insert(v);
            }
        }
        let absorbed_actors: Vec<(EntityKind, u64)> = other.actors.keys().copied().collect();
        self.entity_hashes.extend(other.entity_hashes);
        self.hosts = self.entity_hashes.iter().filter(|(k, _)| *k == EntityKind::Host).count();
        for (key, (value, rules)) in other.actors {
            if self.actors.len() < MAX_ACTORS || self.actors.contains_key(&key) {
                let mine = self.actors.entry(key).or_insert_with(|| (value, BTreeSet::new()));
                for rule in rules {
                    if mine.1.len() >= MAX_ACTOR_RULES {
                        break;
                    }
                    mine.1.insert(rule);
                }
            }
        }
        for key in absorbed_actors {
            self.consider_actor(key);
        }
        for rep in other.representatives {
            match self.representatives.iter_mut().find(|r| r.fingerprint == rep.fingerprint) {
                Some(mine) => mine.count += rep.count,
                None => self.representatives.push(rep),
            }
        }
        self.trim_representatives(cfg.max_representatives);
        for (rule, d) in other.detections {
            merge_detection(&mut self.detections, rule, d);
        }
        self.fired += other.fired;
        for (key, hit) in other.intel {
            if self.intel.len() < MAX_HITS {
                self.intel.entry(key).or_insert(hit);
            }
        }
        self.members.extend(other.members);
        self.absorbed.push(other.id);
        self.absorbed.extend(other.absorbed);
        self.handed = match (self.handed, other.handed) {
            (Some(a), _) => Some(a),
            (None, b) => b,
        };
    }

    fn trim_representatives(&mut self, cap: usize) {
        if self.representatives.len() > cap {
            // Keep the most severe; among equals the most frequent, then earliest.
            self.representatives.sort_by(|a, b| {
                b.level.cmp(&a.level).then(b.count.cmp(&a.count)).then(a.t.cmp(&b.t)).then(a.alert_id.cmp(&b.alert_id))
            });
            self.representatives.truncate(cap);
        }
    }

    /// The verdict prior that applies, described: the one on the
    /// cluster's signature, or else one on a judged actor's pattern (naming
    /// the actors whose part it took away).
    fn prior<'p>(&self, cfg: &ScoreConfig, priors: Option<&'p TenantPriors>) -> Option<Cow<'p, str>> {
        let priors = priors?;
        let own = priors.get(&self.signature_hash(cfg));
        let first_judged = || self.judged.first().and_then(|k| priors.get(&self.actor_signature(*k)));
        let prior = own.or_else(first_judged)?;
        if self.judged.is_empty() {
            return Some(Cow::Borrowed(prior.as_str()));
        }
        let actors: Vec<String> = self
            .judged
            .iter()
            .filter_map(|k| self.actors.get(k).map(|(value, rules)| format!("{} {value} ({} rules)", k.0, rules.len())))
            .collect();
        Some(Cow::Owned(format!("{prior}; the same pattern from {}: what it brings does not count", actors.join(", "))))
    }

    /// An actor's pattern: its role and its rules. Not the cluster's
    /// detections: a prior takes away only what the actor brought, and a
    /// detection in the same cluster still counts in full, so a rule firing
    /// beside a judged actor does not make its pattern new. (A cluster
    /// without detections hashes as it did when they were part of it.)
    fn actor_signature(&self, key: (EntityKind, u64)) -> u64 {
        let mut h = StableHasher::new();
        h.field(b"actor");
        h.field(key.0.as_str().as_bytes());
        for id in self.actors.get(&key).map(|(_, rules)| rules).into_iter().flatten() {
            h.field(&id.to_le_bytes());
        }
        h.field(b"|");
        h.finish()
    }

    /// See [`ClusterReport::signature`].
    fn signature(&self, cfg: &ScoreConfig) -> String {
        format!("{:016x}", self.signature_hash(cfg))
    }

    /// What the cluster is, for verdict priors. A cluster that one broad
    /// actor drives (see [`Cluster::broad_actor`]) is that actor's doing:
    /// its role (ip or user, not the value, which changes between runs of
    /// the same scan) and its rules (see [`Cluster::actor_signature`]). Any
    /// other: its rules, detections and entity kinds.
    fn signature_hash(&self, cfg: &ScoreConfig) -> u64 {
        if let Some(key) = self.broad_actor(cfg) {
            return self.actor_signature(key);
        }
        let mut h = StableHasher::new();
        for id in self.rules.keys() {
            h.field(&id.to_le_bytes());
        }
        h.field(b"|");
        for rule in self.detections.keys() {
            h.field(rule.as_bytes());
        }
        h.field(b"|");
        for kind in self.entities.keys() {
            h.field(kind.as_str().as_bytes());
        }
        h.finish()
    }

    fn report(
        &self,
        tenant: &str,
        score_cfg: &ScoreConfig,
        handoff: &HandoffConfig,
        trigger: Option<Trigger>,
        members: bool,
        priors: Option<&TenantPriors>,
    ) -> ClusterReport {
        let (score, _) = self.scored(score_cfg, true, priors);
        let (decision, reason) =
            handoff.decide_with_floor(score.total, self.handed.is_some(), score_cfg.floor_line(&score.lines));
        let version = self.unique + self.duplicates + self.fired;
        let cluster_id = cluster_id_hex(self.id);
        let mut entities_truncated = BTreeMap::new();
        for (kind, set) in &self.entities {
            let total = self.entity_hashes.iter().filter(|(k, _)| k == kind).count() as u64;
            if total > set.len() as u64 {
                entities_truncated.insert(*kind, total - set.len() as u64);
            }
        }
        let mut merged: Vec<String> = self.absorbed.iter().map(|id| cluster_id_hex(*id)).collect();
        merged.sort();
        let mut reps: Vec<&Rep> = self.representatives.iter().collect();
        reps.sort_by(|a, b| a.t.cmp(&b.t).then(a.alert_id.cmp(&b.alert_id)));
        let mut excerpts: Vec<Excerpt> = reps.iter().filter_map(|r| r.excerpt()).collect();
        excerpts.sort_by_key(|e| std::cmp::Reverse(e.level));
        let representatives = reps.into_iter().map(Rep::to_report).collect();
        let mut report = ClusterReport {
            idempotency_key: format!("{cluster_id}:{version}"),
            cluster_id,
            version,
            tenant: tenant.to_string(),
            signature: self.signature(score_cfg),
            score: score.total,
            decision,
            reason,
            breakdown: score.lines,
            first_seen: Rfc3339(self.first).to_string(),
            last_seen: Rfc3339(self.last).to_string(),
            entities: self.entities.iter().map(|(k, v)| (*k, v.iter().cloned().collect())).collect(),
            entities_truncated,
            tactics: kill_chain_ordered(&self.tactics).into_iter().map(|t| t.name.clone()).collect(),
            max_level: self.max_level,
            alerts: self.unique + self.duplicates,
            duplicates: self.duplicates,
            detections: self.detections.values().cloned().collect(),
            rules: self
                .rules
                .iter()
                .map(|(id, r)| RuleCount {
                    rule_id: *id,
                    level: r.level,
                    description: r.description.clone(),
                    count: r.count,
                })
                .collect(),
            representatives,
            excerpts,
            merged,
            trigger,
            members: members.then(|| {
                let mut m = self.members.clone();
                m.sort();
                m
            }),
            redaction: Redaction::default(),
            budget: CaseBudget::default(),
            first_seen_ms: self.first,
            last_seen_ms: self.last,
        };
        // Nothing taken from an alert leaves Sluice with a secret in it.
        report.redact_secrets();
        report.fit_to_budget(handoff.max_case_tokens);
        report
    }
}

/// Active verdict priors: tenant → cluster signature hash → what the
/// prior is (shown in the score breakdown). A cluster whose signature (see
/// [`ClusterReport::signature`]) matches scores `score.prior_penalty` lower;
/// a cluster holding a broad actor whose pattern matches loses that actor's
/// part of the score instead; neither when it is over the safety floor. Sent to the
/// running pipeline as a whole set (an operator update), replacing the
/// previous one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Priors(pub BTreeMap<String, TenantPriors>);

/// One tenant's priors: signature hash → description.
pub type TenantPriors = BTreeMap<u64, String>;

impl Priors {
    /// Whether the tenant has a prior on a signature as written in case
    /// files (hex).
    pub fn contains(&self, tenant: &str, signature: &str) -> bool {
        u64::from_str_radix(signature, 16).is_ok_and(|hash| self.0.get(tenant).is_some_and(|p| p.contains_key(&hash)))
    }

    /// Adds a prior for a signature as written in case files (hex).
    pub fn insert(&mut self, tenant: &str, signature: &str, description: String) -> bool {
        match u64::from_str_radix(signature, 16) {
            Ok(hash) => {
                self.0.entry(tenant.to_string()).or_default().insert(hash, description);
                true
            }
            Err(_) => false,
        }
    }
}

/// Everything about one row that the cluster update needs.
struct Row<'a> {
    t: EventTime,
    level: u8,
    rule_id: u32,
    routine: bool,
    crowded: bool,
    fingerprint: u64,
    alert_id: &'a str,
    description: &'a str,
    agent: Option<&'a str>,
    src_ip: Option<&'a str>,
    user: Option<&'a str>,
    full_log: Option<&'a str>,
}

const FULL_LOG_EXCERPT: usize = 512;
/// Actors tracked per cluster, and distinct rules per actor (bounds).
const MAX_ACTORS: usize = 512;
const MAX_ACTOR_RULES: usize = 32;
/// Entities per cluster that threat intel or the inventory knows, at most.
const MAX_HITS: usize = 64;

/// Merges live clusters that one alert or detection links: the root is the
/// handed-off one, else the largest, else the oldest; a cluster that would
/// overflow `max_cluster_alerts` stays apart. Returns the root.
fn merge_clusters(cfg: &CorrelateConfig, state: &mut TenantState, many: &[u64], merged: &mut u64) -> u64 {
    let mut order = many.to_vec();
    order.sort_by(|a, b| {
        let (ca, cb) = (&state.clusters[a], &state.clusters[b]);
        (cb.handed.is_some(), cb.unique, std::cmp::Reverse(cb.first), std::cmp::Reverse(cb.id)).cmp(&(
            ca.handed.is_some(),
            ca.unique,
            std::cmp::Reverse(ca.first),
            std::cmp::Reverse(ca.id),
        ))
    });
    let root = order[0];
    for other in &order[1..] {
        let fits = state.clusters[&root].unique + state.clusters[other].unique < cfg.max_cluster_alerts;
        if !fits {
            continue;
        }
        let absorbed = state.clusters.remove(other).expect("candidate is live");
        *merged += 1;
        state.forward.insert(*other, root);
        let root_cluster = state.clusters.get_mut(&root).expect("root is live");
        root_cluster.absorb(absorbed, cfg);
    }
    root
}

/// Adds a firing of `rule` to a cluster's detections: the latest window,
/// entities and alerts are kept; severity is the highest seen.
fn merge_detection(into: &mut BTreeMap<String, DetectionReport>, rule: String, d: DetectionReport) {
    match into.get_mut(&rule) {
        Some(mine) => {
            let (count, severity) = (mine.count + d.count, mine.severity.max(d.severity));
            if d.window_end >= mine.window_end {
                *mine = d;
            }
            mine.count = count;
            mine.severity = severity;
        }
        None => {
            into.insert(rule, d);
        }
    }
}

fn excerpt(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Correlate {
    fn add_row(
        cfg: &CorrelateConfig,
        cluster: &mut Cluster,
        row: &Row<'_>,
        tactics: &[&str],
        entities: &[RowEntity<'_>],
        lookup: Lookup<'_>,
        history: Option<ActorHistory<'_>>,
    ) {
        cluster.first = cluster.first.min(row.t);
        cluster.last = cluster.last.max(row.t);
        cluster.unique += 1;
        if (row.level, std::cmp::Reverse(row.rule_id)) > (cluster.max_level, std::cmp::Reverse(cluster.max_level_rule))
            || cluster.unique == 1
        {
            cluster.max_level = row.level;
            cluster.max_level_rule = row.rule_id;
        }
        let stat = cluster.rules.entry(row.rule_id).or_insert_with(|| RuleStat {
            level: row.level,
            description: row.description.to_string(),
            count: 0,
            routine: row.routine,
            common: row.routine,
            crowded: row.crowded,
            everyday: false,
            untracked: false,
            tactic_mask: tactic_mask(tactics),
        });
        stat.count += 1;
        stat.routine = row.routine;
        stat.crowded |= row.crowded;
        for t in tactics {
            add_tactic(&mut cluster.tactics, t, row.t);
        }
        for e in entities {
            cluster.add_entity(e.kind, e.value, e.key, cfg.report_entities_per_kind, lookup);
            let known = cluster.intel.get(&(e.kind, e.key)).is_some_and(Hit::mutes_actor);
            if e.actor && (e.hub || known) {
                cluster.drop_actor((e.kind, e.key));
            } else if e.actor
                && let Some(h) = history
                && (cluster.actors.len() < MAX_ACTORS || cluster.actors.contains_key(&(e.kind, e.key)))
            {
                // This rule first, then what the actor raised on this host
                // within `actor_window` of it.
                let seen = h.rules.get(&(e.kind, e.key, h.host)).map_or(&[][..], Vec::as_slice);
                let near =
                    seen.iter().filter(|&&(r, at)| r != row.rule_id && at.abs_diff(row.t) < h.window).map(|&(r, _)| r);
                let actor =
                    cluster.actors.entry((e.kind, e.key)).or_insert_with(|| (e.value.to_string(), BTreeSet::new()));
                let before = actor.1.len();
                for rule in std::iter::once(row.rule_id).chain(near) {
                    if actor.1.len() >= MAX_ACTOR_RULES {
                        break;
                    }
                    actor.1.insert(rule);
                }
                if actor.1.len() > before {
                    cluster.consider_actor((e.kind, e.key));
                }
            }
        }
        let kept = entities
            .iter()
            .filter(|e| e.actor)
            .any(|e| cluster.actors.get(&(e.kind, e.key)).is_some_and(|(_, rules)| rules.contains(&row.rule_id)));
        if !kept && let Some(stat) = cluster.rules.get_mut(&row.rule_id) {
            stat.untracked = true;
        }
        if cfg.track_members {
            cluster.members.push(row.alert_id.to_string());
        }
        // Build the representative only if it will be kept: most alerts of a
        // busy cluster are not.
        let full = cluster.representatives.len() >= cfg.max_representatives;
        let replace = if full {
            let weakest = cluster
                .representatives
                .iter()
                .enumerate()
                .filter(|(_, r)| r.level < row.level)
                .min_by(|(_, a), (_, b)| a.level.cmp(&b.level).then(a.count.cmp(&b.count)));
            match weakest {
                Some((i, _)) => Some(i),
                None => return,
            }
        } else {
            None
        };
        let rep = Rep {
            alert_id: row.alert_id.to_string(),
            t: row.t,
            rule_id: row.rule_id,
            level: row.level,
            description: row.description.to_string(),
            agent: row.agent.map(str::to_string),
            src_ip: row.src_ip.map(str::to_string),
            user: row.user.map(str::to_string),
            full_log: row.full_log.map(|l| excerpt(l, FULL_LOG_EXCERPT)),
            count: 1,
            fingerprint: row.fingerprint,
        };
        match replace {
            Some(i) => cluster.representatives[i] = rep,
            None => cluster.representatives.push(rep),
        }
    }

    fn process_rows(&mut self, batch: &AlertBatch, ctx: &mut Context, out: &mut dyn Collector) -> Result<()> {
        // Tenants' state is taken out while rows are processed so the config
        // can be borrowed alongside it.
        let mut tenants = std::mem::take(&mut self.tenants);
        let result = self.process_rows_with(&mut tenants, batch, ctx, out);
        self.tenants = tenants;
        result
    }

    fn process_rows_with(
        &self,
        tenants: &mut FastMap<Arc<str>, TenantState>,
        batch: &AlertBatch,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()> {
        let c = AlertColumns::new(&batch.batch)?;
        let marks = batch.dedup.as_ref();
        let mut entities: Vec<RowEntity<'_>> = Vec::with_capacity(8);
        let mut tactics: Vec<&str> = Vec::with_capacity(4);
        let mut candidates: Vec<u64> = Vec::with_capacity(8);
        let mut per_tenant: FastMap<Arc<str>, [u64; 5]> = FastMap::default();
        for row in 0..batch.num_rows() {
            let tenant_name = c.tenant(row);
            if !tenants.contains_key(tenant_name) {
                let name: Arc<str> = Arc::from(tenant_name);
                tenants.insert(name.clone(), TenantState { name, ..TenantState::default() });
            }
            let state = tenants.get_mut(tenant_name).expect("inserted above");
            let tenant_key = &state.name.clone();
            let counts = per_tenant.entry(tenant_key.clone()).or_default();
            let t = c.event_time.value(row);
            let fingerprint =
                marks.map_or_else(|| stable_hash(c.alert_id.value(row).as_bytes()), |m| m.fingerprint[row]);
            let duplicate = marks.is_some_and(|m| m.duplicate[row]);
            let alert_id = c.alert_id.value(row);
            let rule_id = c.rule_id.value(row);
            let host_name = c.agent_name(row).or(c.agent_id(row));
            // Hashed once: both base-rate counters key on it.
            let host_hash = StableHasher::new().opt(host_name).finish();
            let routine = self.count_routine(state, rule_id, host_hash, t);

            if duplicate {
                let cluster = state.by_fingerprint.get(&fingerprint).map(|&(id, _)| id);
                match cluster.and_then(|id| state.resolve_open(id, t)) {
                    Some(id) => {
                        let cl = state.clusters.get_mut(&id).expect("resolved");
                        cl.duplicates += 1;
                        cl.last = cl.last.max(t);
                        if let Some(rep) = cl.representatives.iter_mut().find(|r| r.fingerprint == fingerprint) {
                            rep.count += 1;
                        }
                        if self.config.track_members {
                            cl.members.push(alert_id.to_string());
                        }
                        counts[0] += 1;
                    }
                    None => counts[1] += 1,
                }
                continue;
            }

            let level = c.rule_level.value(row);
            let common = self.count_common(state, rule_id, host_hash, t) || routine;
            if state.first_event.is_none_or(|f| t < f) {
                state.first_event = Some(t);
            }
            self.row_entities(&c, row, &mut entities);
            tactics.clear();
            tactics.extend(c.tactics(row));
            let host_key = entities.iter().find(|e| e.kind == EntityKind::Host).map(|e| e.key);
            let source = entities.iter().find(|e| e.kind == EntityKind::Ip && e.actor).map(|e| e.key);
            let crowded = source.is_some_and(|ip| self.count_sources(state, rule_id, host_hash, ip, t));

            let specific = entities.iter().any(|e| e.link && self.config.link_at_any_level.contains(&e.kind));
            let strong = (level >= self.config.link_min_level || specific) && !routine;
            // A common rule's alerts link only through their own host and
            // file hashes: a scanner's sweep must not bridge hosts, the same
            // file appearing on several hosts must.
            if common {
                for e in entities.iter_mut() {
                    e.link &= matches!(e.kind, EntityKind::Host | EntityKind::Hash);
                }
            }
            // Live, non-hub entities → their clusters.
            candidates.clear();
            let windows = self.tenant_windows.get(&state.name).unwrap_or(&self.config.windows);
            for e in entities.iter().filter(|e| e.link) {
                let window = windows.get(e.kind).expect("only windowed kinds are extracted");
                if let Some(s) = state.entities.get(&(e.kind, e.key)) {
                    let live = t <= s.last.saturating_add(window) && t >= s.first.saturating_sub(window);
                    if live && !s.hub {
                        let id = s.cluster;
                        if let Some(id) = state.resolve_open(id, t)
                            && !candidates.contains(&id)
                        {
                            candidates.push(id);
                        }
                    }
                }
            }

            let target = if strong {
                let target = match candidates.as_slice() {
                    [] => {
                        let id = StableHasher::new().field(tenant_name.as_bytes()).field(alert_id.as_bytes()).finish();
                        state.clusters.insert(id, new_cluster(id));
                        counts[2] += 1;
                        id
                    }
                    [only] => *only,
                    many => merge_clusters(&self.config, state, many, &mut counts[4]),
                };
                // A full cluster takes no more alerts: start a fresh one.
                let target = if state.clusters[&target].unique >= self.config.max_cluster_alerts {
                    let id = StableHasher::new().field(tenant_name.as_bytes()).field(alert_id.as_bytes()).finish();
                    state.clusters.insert(id, new_cluster(id));
                    counts[2] += 1;
                    id
                } else {
                    target
                };
                // Register / refresh this alert's entities on the target.
                let mut retain = EventTime::MIN;
                let windows = self.tenant_windows.get(&state.name).unwrap_or(&self.config.windows);
                for e in entities.iter().filter(|e| e.link) {
                    let window = windows.get(e.kind).expect("windowed");
                    retain = retain.max(t.saturating_add(window));
                    let hub_degree = self.config.hub_degree.get(e.kind);
                    let entry = state.entities.entry((e.kind, e.key));
                    let s = entry.or_insert_with(|| EntityState {
                        cluster: target,
                        first: t,
                        last: t,
                        hosts: Vec::new(),
                        hub: false,
                    });
                    let live = t <= s.last.saturating_add(window) && t >= s.first.saturating_sub(window);
                    if !live {
                        *s = EntityState { cluster: target, first: t, last: t, hosts: Vec::new(), hub: false };
                    }
                    s.first = s.first.min(t);
                    s.last = s.last.max(t);
                    if !s.hub {
                        s.cluster = target;
                    }
                    if let Some(h) = host_key.filter(|_| e.kind != EntityKind::Host) {
                        if !s.hosts.contains(&h) && s.hosts.len() <= hub_degree.min(64) {
                            s.hosts.push(h);
                        }
                        if s.hosts.len() > hub_degree && !s.hub {
                            s.hub = true;
                            counts[3] += 1;
                        }
                    }
                }
                let cl = state.clusters.get_mut(&target).expect("target is live");
                cl.retain_until = cl.retain_until.max(retain);
                Some(target)
            } else {
                candidates.first().copied()
            };

            let Some(target) = target else {
                // Its duplicates stay unclustered with it, never counted in a
                // cluster an earlier alert of the same fingerprint joined.
                state.by_fingerprint.remove(&fingerprint);
                counts[1] += 1;
                continue;
            };
            counts[0] += 1;
            if marks.is_some() {
                state.by_fingerprint.insert(fingerprint, (target, t));
                state.fingerprint_order.push_back((fingerprint, t));
            }
            // An actor on many hosts (a scanner) says nothing about one target.
            let common_window = self.config.common_window.millis();
            for e in entities.iter_mut().filter(|e| e.actor) {
                let degree = self.config.hub_degree.get(e.kind);
                let hosts = state.actor_hosts.entry((e.kind, e.key)).or_insert_with(|| (t, Vec::new()));
                e.hub = over_cap(hosts, host_key, t, common_window, degree);
            }
            // Each actor's rules on this host, with when it last raised
            // them (expired on watermarks only).
            let counts_for_actors = level >= self.score.actor_min_level;
            if counts_for_actors {
                for e in entities.iter().filter(|e| e.actor && !e.hub) {
                    let rules = state.actor_rules.entry((e.kind, e.key, host_hash)).or_default();
                    if let Some(seen) = rules.iter_mut().find(|(r, _)| *r == rule_id) {
                        seen.1 = seen.1.max(t);
                    } else if rules.len() < MAX_ACTOR_RULES {
                        rules.push((rule_id, t));
                    } else if let Some(oldest) = rules.iter_mut().min_by_key(|(_, seen)| *seen) {
                        *oldest = (rule_id, t);
                    }
                }
            }
            let row_data = Row {
                t,
                level,
                rule_id,
                routine,
                crowded,
                fingerprint,
                alert_id,
                description: c.rule_description(row).unwrap_or(""),
                agent: c.agent_name(row),
                src_ip: opt_str(c.src_ip, row),
                user: opt_str(c.dst_user, row).or(opt_str(c.src_user, row)),
                full_log: opt_str(c.full_log, row),
            };
            let cluster = state.clusters.get_mut(&target).expect("target is live");
            let lookup = Lookup { intel: self.loaded_intel(), tenant: tenant_key };
            let history = counts_for_actors.then_some(ActorHistory {
                rules: &state.actor_rules,
                host: host_hash,
                window: self.config.actor_window.millis().unsigned_abs(),
            });
            Self::add_row(&self.config, cluster, &row_data, &tactics, &entities, lookup, history);
            let trigger = || Trigger { alert_id: alert_id.to_string(), ingest_time_us: c.ingest_time.value(row) };
            self.judge(state, target, t, trigger, ctx, out);
        }
        for (tenant, [clustered, unclustered, created, hubs, merged]) in per_tenant {
            ctx.counters.add(NAME, "clusters_merged", &tenant, merged);
            ctx.counters.add(NAME, "clustered", &tenant, clustered);
            ctx.counters.add(NAME, "unclustered", &tenant, unclustered);
            ctx.counters.add(NAME, "clusters_created", &tenant, created);
            ctx.counters.add(NAME, "hubs_demoted", &tenant, hubs);
        }
        Ok(())
    }

    /// Rescores a cluster that changed at event time `t` and reports it when
    /// the hand-off says so (never during the tenant's baseline warm-up).
    fn judge(
        &self,
        state: &mut TenantState,
        target: u64,
        t: EventTime,
        trigger: impl FnOnce() -> Trigger,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) {
        let common_hosts = self.config.common_rule_hosts;
        let common_window = self.config.common_window.millis();
        let rule_hosts = &state.rule_hosts;
        let priors = self.priors.0.get(&*state.name);
        let cluster = state.clusters.get_mut(&target).expect("target is live");
        // By event time, not by what the last sweep left: results must not
        // depend on when watermarks arrive.
        cluster.rescore(
            &self.score,
            |rule| {
                common_hosts > 0
                    && rule_hosts.get(&rule).is_some_and(|(start, hosts)| {
                        t < start.saturating_add(common_window) && hosts.len() > common_hosts
                    })
            },
            priors,
        );
        let signal = cluster.signal_tactics;
        let warming_up = state.first_event.is_some_and(|f| t < f.saturating_add(self.config.baseline_warmup.millis()));
        if warming_up {
            return;
        }
        let handoff = self.handoff_of(&state.name);
        if let Some(kind) = handoff.report_for(cluster.score, signal, cluster.handed) {
            cluster.handed = Some((cluster.score, signal));
            let report =
                cluster.report(&state.name, &self.score, handoff, Some(trigger()), self.config.track_members, priors);
            ctx.counters.add(NAME, if kind == ReportKind::Escalate { "escalated" } else { "updates" }, &state.name, 1);
            out.collect(Output::Cluster(kind, Box::new(report)));
        }
    }

    /// Joins a rule's detection to the live clusters holding its entities
    /// (merging them: the rule says they belong together) or starts a
    /// cluster for it, then rescores and judges that cluster.
    fn detect(&mut self, d: Detection, ctx: &mut Context, out: &mut dyn Collector) {
        let mut tenants = std::mem::take(&mut self.tenants);
        if !tenants.contains_key(d.tenant.as_str()) {
            let name: Arc<str> = Arc::from(d.tenant.as_str());
            tenants.insert(name.clone(), TenantState { name, ..TenantState::default() });
        }
        let state = tenants.get_mut(d.tenant.as_str()).expect("inserted above");
        let t = d.last;
        let mut keys: Vec<(EntityKind, u64, &str)> = Vec::new();
        for (kind, value) in &d.entities {
            if let Some(key) = self.entity_key(*kind, value)
                && !keys.iter().any(|k| k.1 == key)
            {
                keys.push((*kind, key, value));
            }
        }
        let mut candidates: Vec<u64> = Vec::new();
        let windows = self.tenant_windows.get(&state.name).unwrap_or(&self.config.windows);
        for &(kind, key, _) in &keys {
            let Some(window) = windows.get(kind) else { continue };
            if let Some(s) = state.entities.get(&(kind, key))
                && !s.hub
                && t <= s.last.saturating_add(window)
                && let Some(id) = state.resolve_open(s.cluster, t)
                && !candidates.contains(&id)
            {
                candidates.push(id);
            }
        }
        let mut merged = 0;
        let target = match candidates.as_slice() {
            [] => {
                let mut h = StableHasher::new();
                h.field(d.tenant.as_bytes()).field(d.rule.as_bytes()).u64(d.window_start as u64);
                for (kind, value) in &d.entities {
                    h.u64(*kind as u64).field(value.as_bytes());
                }
                let id = h.finish();
                let mut cluster = new_cluster(id);
                cluster.first = d.first;
                cluster.last = d.last;
                state.clusters.insert(id, cluster);
                ctx.counters.add(NAME, "clusters_created", &state.name, 1);
                id
            }
            [only] => *only,
            many => merge_clusters(&self.config, state, many, &mut merged),
        };
        ctx.counters.add(NAME, "clusters_merged", &state.name, merged);
        // The detection's entities join the cluster and keep it linkable.
        let mut retain = EventTime::MIN;
        let windows = self.tenant_windows.get(&state.name).unwrap_or(&self.config.windows);
        for &(kind, key, value) in &keys {
            let Some(window) = windows.get(kind) else { continue };
            retain = retain.max(t.saturating_add(window));
            let s = state.entities.entry((kind, key)).or_insert_with(|| EntityState {
                cluster: target,
                first: t,
                last: t,
                hosts: Vec::new(),
                hub: false,
            });
            s.first = s.first.min(t);
            s.last = s.last.max(t);
            if !s.hub {
                s.cluster = target;
            }
            let cluster = state.clusters.get_mut(&target).expect("target is live");
            let lookup = Lookup { intel: self.loaded_intel(), tenant: &state.name };
            cluster.add_entity(kind, value, key, self.config.report_entities_per_kind, lookup);
        }
        let cluster = state.clusters.get_mut(&target).expect("target is live");
        cluster.retain_until = cluster.retain_until.max(retain);
        cluster.fired += 1;
        let mut alert_ids = d.alert_ids;
        alert_ids.truncate(self.config.max_representatives.max(10));
        let report = DetectionReport {
            rule: d.rule.clone(),
            severity: d.severity,
            tags: d.tags,
            count: 1,
            window_start: Rfc3339(d.window_start).to_string(),
            window_end: Rfc3339(d.window_end).to_string(),
            entities: d.entities,
            alert_ids,
            summary: d.summary,
        };
        merge_detection(&mut cluster.detections, d.rule, report);
        ctx.counters.add(NAME, "detections", &state.name, 1);
        let trigger = || Trigger { alert_id: d.trigger_alert, ingest_time_us: d.trigger_ingest_us };
        self.judge(state, target, t, trigger, ctx, out);
        self.tenants = tenants;
    }

    /// The stable key of an entity value (see [`Correlate::entity_key_in`]).
    fn entity_key(&self, kind: EntityKind, value: &str) -> Option<u64> {
        self.entity_key_in(kind, value, &mut [0u8; 128])
    }

    /// The stable key of an entity value, the same for alerts and rule
    /// detections; `None` for values that never link (empty or machine
    /// accounts, ignored users and ips). `buf` holds a lower-cased user name.
    fn entity_key_in(&self, kind: EntityKind, value: &str, buf: &mut [u8; 128]) -> Option<u64> {
        let bytes: &[u8] = if kind == EntityKind::User {
            // `ACME\alice`, `alice@acme.local` and `Alice` are one person.
            let bare = user_name(value);
            if bare.len() > buf.len() {
                bare.as_bytes()
            } else {
                for (dst, src) in buf.iter_mut().zip(bare.bytes()) {
                    *dst = src.to_ascii_lowercase();
                }
                &buf[..bare.len()]
            }
        } else {
            value.as_bytes()
        };
        let ignored = match kind {
            EntityKind::User => std::str::from_utf8(bytes)
                .is_ok_and(|u| u.is_empty() || u.ends_with('$') || self.ignore_users.contains(u)),
            EntityKind::Ip => self.config.ignore_ips.iter().any(|ip| ip == value),
            _ => false,
        };
        (!ignored).then(|| StableHasher::new().u64(kind as u64).field(bytes).finish())
    }

    fn close_cluster(
        &self,
        tenant: &Arc<str>,
        state: &mut TenantState,
        id: u64,
        reason: &'static str,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) {
        let Some(cluster) = state.clusters.remove(&id) else { return };
        for a in &cluster.absorbed {
            state.forward.remove(a);
        }
        let handoff = self.handoff_of(tenant);
        let (decision, _) = if cluster.intel.is_empty() {
            handoff.decide(cluster.score, cluster.handed.is_some())
        } else {
            // Only intel and inventory lines are floor factors by default:
            // the breakdown is built only for clusters that have some.
            let (score, _) = cluster.scored(&self.score, true, self.priors.0.get(&**tenant));
            handoff.decide_with_floor(score.total, cluster.handed.is_some(), self.score.floor_line(&score.lines))
        };
        ctx.counters.add(NAME, reason, tenant, 1);
        ctx.counters.add(NAME, decision_metric(decision), tenant, 1);
        if cluster.handed.is_some() || self.config.report_all_closed {
            let priors = self.priors.0.get(&**tenant);
            let report = cluster.report(tenant, &self.score, handoff, None, self.config.track_members, priors);
            out.collect(Output::Cluster(ReportKind::Close, Box::new(report)));
        }
    }

    fn sweep(&mut self, wm: EventTime, which: Tenants<'_>, ctx: &mut Context, out: &mut dyn Collector, force: bool) {
        let mut tenants = std::mem::take(&mut self.tenants);
        for (tenant, state) in tenants.iter_mut().filter(|(t, _)| which.includes(t)) {
            if !force && state.last_sweep.is_some_and(|s| wm < s.saturating_add(self.config.sweep_interval.millis())) {
                continue;
            }
            state.last_sweep = Some(wm);
            // Close clusters none of whose entities can link any more.
            let mut closing: Vec<(EventTime, u64)> =
                state.clusters.values().filter(|c| force || c.retain_until < wm).map(|c| (c.first, c.id)).collect();
            closing.sort_unstable();
            for (_, id) in closing {
                self.close_cluster(tenant, state, id, "clusters_closed", ctx, out);
            }
            // Evict the least recently active beyond the bound.
            if state.clusters.len() > self.config.max_clusters_per_tenant {
                let mut by_age: Vec<(EventTime, u64)> = state.clusters.values().map(|c| (c.last, c.id)).collect();
                by_age.sort_unstable();
                let excess = state.clusters.len() - self.config.max_clusters_per_tenant;
                for (_, id) in by_age.into_iter().take(excess) {
                    self.close_cluster(tenant, state, id, "clusters_evicted", ctx, out);
                }
            }
            let windows = self.tenant_windows.get(tenant).unwrap_or(&self.config.windows);
            let before = state.entities.len();
            state
                .entities
                .retain(|(kind, _), s| windows.get(*kind).is_some_and(|w| s.last.saturating_add(w) >= wm) && !force);
            ctx.counters.add(NAME, "entities_expired", tenant, (before - state.entities.len()) as u64);
            if state.entities.len() > self.config.max_entities_per_tenant {
                let mut by_age: Vec<(EventTime, (EntityKind, u64))> =
                    state.entities.iter().map(|(k, s)| (s.last, *k)).collect();
                by_age.sort_unstable();
                let excess = state.entities.len() - self.config.max_entities_per_tenant;
                for (_, key) in by_age.into_iter().take(excess) {
                    state.entities.remove(&key);
                }
                ctx.counters.add(NAME, "entities_evicted", tenant, excess as u64);
            }
            let routine_window = self.config.routine_window.millis();
            state.routine.retain(|_, (start, _, _)| start.saturating_add(2 * routine_window) > wm && !force);
            let common_window = self.config.common_window.millis();
            state.rule_hosts.retain(|_, (start, _)| start.saturating_add(common_window) > wm && !force);
            state.actor_hosts.retain(|_, (start, _)| start.saturating_add(common_window) > wm && !force);
            state.rule_sources.retain(|_, (start, _)| start.saturating_add(common_window) > wm && !force);
            let actor_window = self.config.actor_window.millis();
            state.actor_rules.retain(|_, rules| {
                rules.retain(|&(_, seen)| seen.saturating_add(actor_window) > wm);
                !rules.is_empty() && !force
            });
            if force {
                state.by_fingerprint.clear();
                state.fingerprint_order.clear();
            }
        }
        // A tenant's state stays even when empty: its baseline warm-up must
        // not restart because a sweep happened to find it idle (results would
        // then depend on when watermarks arrive).
        self.tenants = tenants;
    }
}

impl Correlate {
    /// Looks every live cluster's entities up again in the intel now
    /// loaded, and updates its score (a cluster that this pushes over the
    /// threshold is handed off with its next alert).
    fn loaded_intel(&self) -> Option<&Intel> {
        self.intel_loaded.then_some(&*self.intel)
    }

    fn recheck_intel(&mut self) {
        self.recheck_intel_of(|_| true);
    }

    /// [`Correlate::recheck_intel`] for the tenants `which` picks.
    fn recheck_intel_of(&mut self, which: impl Fn(&str) -> bool) {
        let mut tenants = std::mem::take(&mut self.tenants);
        for (name, state) in tenants.iter_mut().filter(|(name, _)| which(name)) {
            let priors = self.priors.0.get(&**name);
            let lookup = Lookup { intel: self.loaded_intel(), tenant: name };
            for cluster in state.clusters.values_mut() {
                if cluster.intel.is_empty() && !self.intel_loaded {
                    continue;
                }
                cluster.recheck(lookup, |kind, value| self.entity_key(kind, value));
                cluster.rejudge(&self.score, priors);
            }
        }
        self.tenants = tenants;
    }
}

fn decision_metric(d: crate::cluster::Decision) -> &'static str {
    match d {
        crate::cluster::Decision::Escalate => "closed_escalate",
        crate::cluster::Decision::Review => "closed_review",
        crate::cluster::Decision::Suppress => "closed_suppress",
    }
}

impl Operator for Correlate {
    fn name(&self) -> &'static str {
        NAME
    }

    fn state_sizes(&self, out: &mut dyn FnMut(&'static str, &Arc<str>, u64)) {
        for (tenant, state) in &self.tenants {
            out("clusters", tenant, state.clusters.len() as u64);
            out("entities", tenant, state.entities.len() as u64);
            out("fingerprints", tenant, state.by_fingerprint.len() as u64);
            out("rule_sources", tenant, state.rule_sources.len() as u64);
            out("actor_rules", tenant, state.actor_rules.len() as u64);
        }
    }

    fn process(&mut self, batch: AlertBatch, ctx: &mut Context, out: &mut dyn Collector) -> Result<()> {
        self.process_rows(&batch, ctx, out)?;
        // Bound state between watermarks too: a burst must not outgrow the
        // caps. Only this batch's tenants: `ctx.watermark` is theirs, and
        // another tenant may be held at an older one (fair scheduling).
        let (clusters_cap, entities_cap) = (
            self.config.max_clusters_per_tenant + self.config.max_clusters_per_tenant / 4,
            self.config.max_entities_per_tenant + self.config.max_entities_per_tenant / 4,
        );
        let over: Vec<Arc<str>> = self
            .tenants
            .iter()
            .filter(|(_, s)| s.clusters.len() > clusters_cap || s.entities.len() > entities_cap)
            .map(|(t, _)| t.clone())
            .collect();
        let Some(wm) = ctx.watermark.filter(|_| !over.is_empty()) else { return Ok(()) };
        // Rarely reached: only then find which tenants the batch holds.
        let cols = AlertColumns::new(&batch.batch)?;
        let mut keys: Vec<i32> = Vec::new();
        let mut in_batch: Vec<&str> = Vec::new();
        for row in 0..batch.num_rows() {
            let key = cols.tenant_key(row);
            if !keys.contains(&key) {
                keys.push(key);
                in_batch.push(cols.tenant(row));
            }
        }
        for tenant in over.iter().filter(|t| in_batch.contains(&t.as_ref())) {
            self.sweep(wm, Tenants::Only(tenant), ctx, out, false);
        }
        Ok(())
    }

    fn on_detection(&mut self, detection: Box<Detection>, ctx: &mut Context, out: &mut dyn Collector) -> Result<()> {
        self.detect(*detection, ctx, out);
        Ok(())
    }

    fn on_watermark(
        &mut self,
        wm: EventTime,
        tenants: Tenants<'_>,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()> {
        // Fingerprints expire on every watermark, oldest first: the work is
        // what expired, not the size of the map, so no watermark stalls a
        // shard for long.
        for (tenant, state) in self.tenants.iter_mut().filter(|(t, _)| tenants.includes(t)) {
            let window = self.tenant_duplicate_window.get(tenant).copied().unwrap_or(self.duplicate_window);
            state.expire_fingerprints(wm, window);
        }
        self.sweep(wm, tenants, ctx, out, false);
        Ok(())
    }

    fn on_end(&mut self, ctx: &mut Context, out: &mut dyn Collector) -> Result<()> {
        self.sweep(EventTime::MAX, Tenants::All, ctx, out, true);
        Ok(())
    }

    fn reconfigure(&mut self, update: &(dyn std::any::Any + Send + Sync)) -> Result<()> {
        if let Some(priors) = update.downcast_ref::<Priors>() {
            let old = std::mem::replace(&mut self.priors, Arc::new(priors.clone()));
            // A cluster's judged actors follow the priors now in force (as
            // with intel): a stale judgement would apply a new prior as the
            // flat penalty, over points the judged actor did not bring.
            for (name, state) in self.tenants.iter_mut() {
                let priors = self.priors.0.get(&**name);
                if old.0.get(&**name) != priors {
                    state.clusters.values_mut().for_each(|c| c.rejudge(&self.score, priors));
                }
            }
        }
        if let Some(policies) = update.downcast_ref::<Arc<Policies>>() {
            self.tenant_handoff = policies
                .tenants()
                .map(|(t, _)| (Arc::from(t.as_str()), policies.handoff(&self.handoff, t)))
                .filter(|(_, h)| *h != self.handoff)
                .collect();
            self.tenant_windows = policies
                .tenants()
                .filter(|(_, p)| !p.entity_windows.is_empty())
                .map(|(t, p)| {
                    let mut w = self.config.windows.clone();
                    for (kind, d) in &p.entity_windows {
                        w.set(*kind, *d);
                    }
                    (Arc::from(t.as_str()), w)
                })
                .collect();
            // As dedup takes it from the same update.
            self.tenant_duplicate_window = policies
                .tenants()
                .filter_map(|(t, p)| p.dedup_window.map(|w| (Arc::from(t.as_str()), w.millis())))
                .collect();
        }
        if let Some(intel) = update.downcast_ref::<Arc<Intel>>() {
            self.intel = intel.clone();
            self.intel_loaded = !intel.is_empty();
            self.recheck_intel();
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut tenants: Vec<(&Arc<str>, &TenantState)> = self.tenants.iter().collect();
        tenants.sort_by(|a, b| a.0.cmp(b.0));
        crate::snapshot::encode(NAME, SNAPSHOT_VERSION, &tenants)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.tenants.clear();
        self.absorb(state)
    }

    fn snapshot_tenant(&self, tenant: &str) -> Result<Option<Vec<u8>>> {
        let Some(one) = self.tenants.get_key_value(tenant) else { return Ok(None) };
        let one: &[(&Arc<str>, &TenantState)] = &[one];
        crate::snapshot::encode(NAME, SNAPSHOT_VERSION, &one).map(Some)
    }

    fn absorb(&mut self, state: &[u8]) -> Result<()> {
        let mut tenants: Vec<(Arc<str>, TenantState)> = crate::snapshot::decode(NAME, SNAPSHOT_VERSION, state)?;
        for (_, state) in &mut tenants {
            let mut order: Vec<(u64, EventTime)> = state.by_fingerprint.iter().map(|(&f, &(_, t))| (f, t)).collect();
            order.sort_unstable_by_key(|&(f, t)| (t, f));
            state.fingerprint_order = order.into();
        }
        let names: FastSet<Arc<str>> = tenants.iter().map(|(name, _)| name.clone()).collect();
        self.tenants.extend(tenants);
        // The intel loaded now may differ from the intel of the checkpoint
        // (only the tenants taken in: one absorbs per tenant when a
        // partition moves).
        self.recheck_intel_of(|name| names.contains(name));
        Ok(())
    }

    fn forget(&mut self, tenant: &str) {
        self.tenants.remove(tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Decision;
    use crate::dedup::{Dedup, DedupConfig};
    use crate::operator::Chain;
    use crate::testkit::{A, batch};

    /// Test config: no warm-up unless a test asks for one.
    fn cfg() -> CorrelateConfig {
        CorrelateConfig { baseline_warmup: Duration(0), ..CorrelateConfig::default() }
    }

    fn chain(cfg: CorrelateConfig) -> Chain {
        scored_chain(cfg, ScoreConfig::default())
    }

    fn scored_chain(cfg: CorrelateConfig, score: ScoreConfig) -> Chain {
        let cfg = CorrelateConfig { report_all_closed: true, track_members: true, ..cfg };
        Chain::new(vec![
            Box::new(Dedup::new(DedupConfig::default()).unwrap()),
            Box::new(Correlate::new(cfg, score, HandoffConfig::default()).unwrap()),
        ])
    }

    /// A fresh chain of `cfg` holding `c`'s state, as after a restart.
    fn restored(c: &Chain, cfg: CorrelateConfig) -> Chain {
        let snaps: Vec<Vec<u8>> = c.operators().iter().map(|o| o.snapshot().unwrap()).collect();
        let mut fresh = chain(cfg);
        for (op, snap) in fresh.operators_mut().iter_mut().zip(&snaps) {
            op.restore(snap).unwrap();
        }
        fresh
    }

    /// Runs alerts through dedup → correlate; returns (live reports, final reports, counters).
    fn run(cfg: CorrelateConfig, alerts: &[A<'_>]) -> (Vec<(ReportKind, ClusterReport)>, Vec<ClusterReport>, Context) {
        let mut c = chain(cfg);
        let mut ctx = Context::default();
        let mut out = Vec::new();
        c.process(batch(alerts), &mut ctx, &mut out).unwrap();
        c.on_end(&mut ctx, &mut out).unwrap();
        let mut live = Vec::new();
        let mut finals = Vec::new();
        for o in out {
            if let Output::Cluster(kind, r) = o {
                if kind == ReportKind::Close { finals.push(*r) } else { live.push((kind, *r)) }
            }
        }
        finals.sort_by(|a, b| a.first_seen.cmp(&b.first_seen));
        (live, finals, ctx)
    }

    fn strong<'a>(id: &'a str, t: i64, host: &'a str, ip: Option<&'a str>) -> A<'a> {
        A {
            tenant: "acme",
            id,
            t,
            rule: 5712,
            level: 10,
            host,
            src_ip: ip,
            log: id,
            tactics: &["Credential Access"],
            ..A::default()
        }
    }

    /// The `close` reports among a chain's outputs.
    fn closed_reports(out: &[Output]) -> Vec<&ClusterReport> {
        out.iter()
            .filter_map(|o| match o {
                Output::Cluster(ReportKind::Close, r) => Some(&**r),
                _ => None,
            })
            .collect()
    }

    /// A policy update giving acme its own dedup window.
    fn acme_dedup_window(window: Duration) -> Arc<crate::policy::Policies> {
        let acme = crate::policy::TenantPolicy { dedup_window: Some(window), ..Default::default() };
        Arc::new(crate::policy::Policies::new(BTreeMap::from([("acme".to_string(), acme)])))
    }

    /// Passed alerts correlate keeps for their duplicates (all tenants).
    fn fingerprints(c: &Chain) -> u64 {
        let mut n = 0;
        c.operators()[1].state_sizes(&mut |kind, _, v| n += if kind == "fingerprints" { v } else { 0 });
        n
    }

    fn members(r: &ClusterReport) -> Vec<&str> {
        r.members.as_ref().unwrap().iter().map(String::as_str).collect()
    }

    #[test]
    fn shared_entity_within_window_joins_beyond_it_splits() {
        let (_, finals, _) = run(
            cfg(),
            &[strong("a", 0, "h1", None), strong("b", 1800, "h1", None), strong("c", 1800 + 3601, "h1", None)],
        );
        assert_eq!(finals.len(), 2);
        assert_eq!(members(&finals[0]), ["a", "b"]);
        assert_eq!(members(&finals[1]), ["c"]);
    }

    #[test]
    fn an_alert_with_two_entities_merges_their_clusters() {
        let (_, finals, _) = run(
            cfg(),
            &[
                strong("a", 0, "h1", None),
                strong("b", 10, "h2", Some("9.9.9.9")),
                strong("c", 20, "h1", Some("9.9.9.9")),
            ],
        );
        assert_eq!(finals.len(), 1);
        assert_eq!(members(&finals[0]), ["a", "b", "c"]);
        assert_eq!(finals[0].merged.len(), 1);
        assert_eq!(finals[0].entities[&EntityKind::Host], ["h1", "h2"]);
    }

    #[test]
    fn low_level_alerts_attach_but_never_create_or_bridge() {
        let weak = |id, t, host, ip| A { level: 3, rule: 5715, tactics: &[], ..strong(id, t, host, ip) };
        let (_, finals, ctx) = run(
            cfg(),
            &[
                weak("w0", 0, "h9", None), // nothing live: unclustered
                strong("a", 10, "h1", None),
                strong("b", 20, "h2", Some("5.5.5.5")),
                weak("w1", 30, "h1", Some("5.5.5.5")), // joins h1's cluster, does not bridge to h2's
            ],
        );
        assert_eq!(finals.len(), 2);
        assert_eq!(members(&finals[0]), ["a", "w1"]);
        assert_eq!(members(&finals[1]), ["b"]);
        assert_eq!(ctx.counters.total("correlate", "unclustered"), 1);
    }

    #[test]
    fn hub_ips_stop_linking() {
        let cfg = CorrelateConfig { hub_degree: HubDegrees { ip: 2, ..HubDegrees::default() }, ..cfg() };
        let hosts = ["h1", "h2", "h3", "h4", "h5"];
        let ids = ["a", "b", "c", "d", "e"];
        let alerts: Vec<A<'_>> =
            hosts.iter().zip(ids).enumerate().map(|(i, (h, id))| strong(id, i as i64, h, Some("6.6.6.6"))).collect();
        let (_, finals, ctx) = run(cfg, &alerts);
        // h1..h3 linked before the scanner became a hub on its third host.
        assert_eq!(finals.iter().map(|f| members(f).len()).collect::<Vec<_>>(), [3, 1, 1]);
        assert_eq!(ctx.counters.total("correlate", "hubs_demoted"), 1);
    }

    #[test]
    fn user_names_are_normalized() {
        assert_eq!(user_name("ACME\\alice"), "alice");
        assert_eq!(user_name("alice@acme.local"), "alice");
        assert_eq!(user_name("alice"), "alice");
        let a = A { user: Some("ACME\\Alice"), ..strong("a", 0, "h1", None) };
        let b = A { user: Some("alice@acme.local"), ..strong("b", 10, "h2", None) };
        let (_, finals, _) = run(cfg(), &[a, b]);
        assert_eq!(finals.len(), 1, "one person on two hosts links them");
        // Machine accounts and placeholder addresses identify nobody.
        let c = A { user: Some("ACME\\WS-01$"), src_ip: Some("-"), ..strong("c", 0, "h1", None) };
        let d = A { user: Some("ACME\\WS-01$"), src_ip: Some("-"), ..strong("d", 10, "h2", None) };
        let (_, finals, _) = run(cfg(), &[c, d]);
        assert_eq!(finals.len(), 2);
        assert!(
            finals
                .iter()
                .all(|f| !f.entities.contains_key(&EntityKind::User) && !f.entities.contains_key(&EntityKind::Ip))
        );
    }

    #[test]
    fn tenants_never_mix_even_with_identical_entities() {
        let a = strong("a", 0, "h1", Some("1.1.1.1"));
        let b = A { tenant: "globex", ..strong("b", 1, "h1", Some("1.1.1.1")) };
        let (_, finals, _) = run(cfg(), &[a, b]);
        assert_eq!(finals.len(), 2);
        assert!(finals.iter().all(|f| members(f).len() == 1));
        let tenants: BTreeSet<&str> = finals.iter().map(|f| f.tenant.as_str()).collect();
        assert_eq!(tenants.len(), 2);
    }

    #[test]
    fn escalates_on_the_crossing_alert_then_updates_on_a_new_tactic() {
        // No source ip: the actor factor stays out of this test's arithmetic.
        let step = |id, t, rule, level, tactics| A {
            tenant: "acme",
            id,
            t,
            rule,
            level,
            host: "h1",
            log: id,
            tactics,
            ..A::default()
        };
        let (live, finals, _) = run(
            cfg(),
            &[
                step("s1", 0, 5712, 10, &["Credential Access"]),
                step("s2", 60, 5715, 3, &["Initial Access"]), // level 3: tactic not a signal
                step("s3", 120, 5403, 6, &["Privilege Escalation"]),
                step("s4", 180, 5902, 8, &["Persistence"]),
                step("s5", 240, 2833, 8, &["Execution", "Persistence"]),
                step("s6", 300, 99548, 12, &["Exfiltration"]),
            ],
        );
        let kinds: Vec<(ReportKind, &str)> =
            live.iter().map(|(k, r)| (*k, r.trigger.as_ref().unwrap().alert_id.as_str())).collect();
        // Defaults: s4 scores 60 (below 65), s5 crosses, s6 adds a tactic.
        assert_eq!(kinds, [(ReportKind::Escalate, "s5"), (ReportKind::Update, "s6")]);
        let esc = &live[0].1;
        assert!(esc.score >= HandoffConfig::default().escalate_threshold);
        let sum: f64 = esc.breakdown.iter().map(|l| l.points).sum();
        assert!((sum - esc.score).abs() < 0.01, "breakdown explains every point");
        // Case files list tactics in kill-chain order, not as they came.
        assert_eq!(
            esc.tactics,
            ["Initial Access", "Execution", "Persistence", "Privilege Escalation", "Credential Access"]
        );
        assert_eq!(finals[0].decision, Decision::Escalate);
        assert!(live[1].1.version > esc.version);
        assert_ne!(live[1].1.idempotency_key, esc.idempotency_key);
    }

    #[test]
    fn duplicates_count_in_the_cluster_of_their_original() {
        let mut a = strong("a", 0, "h1", Some("1.1.1.1"));
        a.log = "sshd[1]: fail from 1.1.1.1";
        let mut b = a.clone();
        b.id = "b";
        b.t = 5;
        b.log = "sshd[2]: fail from 1.1.1.1";
        let (_, finals, ctx) = run(cfg(), &[a, b]);
        assert_eq!(finals[0].alerts, 2);
        assert_eq!(finals[0].duplicates, 1);
        assert_eq!(finals[0].representatives.len(), 1);
        assert_eq!(finals[0].representatives[0].count, 2);
        assert_eq!(ctx.counters.total("dedup", "duplicates"), 1);
    }

    #[test]
    fn duplicates_of_an_unclustered_alert_stay_out_of_the_cluster_an_earlier_copy_joined() {
        // The ip keeps the cluster open for 6 h; the host links for 60 min.
        let s = strong("s", 0, "h1", Some("1.1.1.1"));
        let low = |id, t| A { tenant: "acme", id, t, rule: 5501, level: 3, host: "h1", log: "opened", ..A::default() };
        // l1 joins through the host. l2, the same alert an hour later, finds
        // the host's window over and stays unclustered; l3 repeats l2.
        let (_, finals, ctx) = run(cfg(), &[s, low("l1", 10), low("l2", 3670), low("l3", 3671)]);
        assert_eq!(ctx.counters.total("dedup", "duplicates"), 1);
        assert_eq!(finals.len(), 1);
        assert_eq!(members(&finals[0]), ["l1", "s"]);
        assert_eq!(finals[0].duplicates, 0);
        assert_eq!(finals[0].last_seen, Rfc3339(10_000).to_string());
    }

    #[test]
    fn fingerprints_are_kept_for_the_dedup_window_and_no_longer() {
        let mut c = chain(cfg());
        let (mut ctx, mut out) = (Context::default(), Vec::new());
        let a = strong("a", 0, "h1", None);
        c.process(batch(std::slice::from_ref(&a)), &mut ctx, &mut out).unwrap();
        assert_eq!(fingerprints(&c), 1);
        // A repeat at the end of dedup's 5-minute window still counts with
        // its original...
        c.on_watermark(299_000, Tenants::All, &mut ctx, &mut out).unwrap();
        assert_eq!(fingerprints(&c), 1);
        let b = A { id: "b", t: 299, ..a };
        c.process(batch(&[b]), &mut ctx, &mut out).unwrap();
        // ...and once no record can repeat it, it is forgotten.
        c.on_watermark(300_000, Tenants::All, &mut ctx, &mut out).unwrap();
        assert_eq!(fingerprints(&c), 0);
        c.on_end(&mut ctx, &mut out).unwrap();
        let closed = closed_reports(&out);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].alerts, closed[0].duplicates), (2, 1));
    }

    #[test]
    fn fingerprints_survive_a_restore_and_still_expire_after_it() {
        let mut c = chain(cfg());
        let (mut ctx, mut out) = (Context::default(), Vec::new());
        let a = strong("a", 0, "h1", None);
        c.process(batch(std::slice::from_ref(&a)), &mut ctx, &mut out).unwrap();
        let mut fresh = restored(&c, cfg());
        assert_eq!(fingerprints(&fresh), 1);
        // A repeat after the restore counts with its original...
        fresh.process(batch(&[A { id: "b", t: 10, ..a }]), &mut ctx, &mut out).unwrap();
        // ...and the restored fingerprint still expires on time.
        fresh.on_watermark(300_000, Tenants::All, &mut ctx, &mut out).unwrap();
        assert_eq!(fingerprints(&fresh), 0);
        fresh.on_end(&mut ctx, &mut out).unwrap();
        let closed = closed_reports(&out);
        assert_eq!((closed.len(), closed[0].alerts, closed[0].duplicates), (1, 2, 1));
    }

    #[test]
    fn a_tenants_own_dedup_window_keeps_its_fingerprints_as_long() {
        let mut c = chain(cfg());
        let (mut ctx, mut out) = (Context::default(), Vec::new());
        c.reconfigure(&acme_dedup_window(Duration::from_mins(15))).unwrap();
        let a = strong("a", 0, "h1", Some("1.1.1.1"));
        c.process(batch(std::slice::from_ref(&a)), &mut ctx, &mut out).unwrap();
        // Past the global 5 minutes, acme's repeat still counts with its
        // original.
        c.on_watermark(600_000, Tenants::All, &mut ctx, &mut out).unwrap();
        assert_eq!(fingerprints(&c), 1);
        c.process(batch(&[A { id: "b", t: 600, ..a }]), &mut ctx, &mut out).unwrap();
        c.on_watermark(900_000, Tenants::All, &mut ctx, &mut out).unwrap();
        assert_eq!(fingerprints(&c), 0);
        c.on_end(&mut ctx, &mut out).unwrap();
        let closed = closed_reports(&out);
        assert_eq!((closed.len(), closed[0].alerts, closed[0].duplicates), (1, 2, 1));
    }

    #[test]
    fn a_longer_dedup_window_never_revives_a_repeat_correlate_has_forgotten() {
        let mut c = chain(cfg());
        let (mut ctx, mut out) = (Context::default(), Vec::new());
        // x (unclustered) goes first into dedup's expiry queue, e after it.
        let x = A { tenant: "acme", id: "x", t: 1000, rule: 5501, level: 3, host: "h2", log: "x", ..A::default() };
        let e = strong("e", 950, "h1", Some("1.1.1.1"));
        c.process(batch(&[x, e.clone()]), &mut ctx, &mut out).unwrap();
        // e's 5 minutes are over; dedup still holds it behind x, correlate
        // has forgotten it.
        c.on_watermark(1_250_000, Tenants::All, &mut ctx, &mut out).unwrap();
        c.reconfigure(&acme_dedup_window(Duration::from_mins(15))).unwrap();
        // r repeats e within the new 15 minutes: a new alert of e's
        // cluster, not a duplicate nobody can count.
        c.process(batch(&[A { id: "r", t: 1260, ..e }]), &mut ctx, &mut out).unwrap();
        c.on_end(&mut ctx, &mut out).unwrap();
        let closed = closed_reports(&out);
        assert_eq!(closed.len(), 1);
        assert_eq!(members(closed[0]), ["e", "r"]);
        assert_eq!(ctx.counters.total("dedup", "duplicates"), 0);
    }

    #[test]
    fn clusters_stop_growing_at_the_cap() {
        let cfg = CorrelateConfig { max_cluster_alerts: 3, ..cfg() };
        let ids = ["a", "b", "c", "d", "e"];
        let alerts: Vec<A<'_>> = ids.iter().enumerate().map(|(i, id)| strong(id, i as i64, "h1", None)).collect();
        let (_, finals, _) = run(cfg, &alerts);
        assert_eq!(finals.iter().map(|f| f.alerts).collect::<Vec<_>>(), [3, 2]);
    }

    #[test]
    fn snapshot_restore_continues_as_if_never_stopped() {
        let first = [strong("a", 0, "h1", Some("1.1.1.1")), strong("b", 10, "h2", None)];
        let second = [strong("c", 20, "h2", Some("1.1.1.1"))];
        let (uninterrupted, resumed) = with_and_without_a_restore(cfg, &first, &second);
        assert_eq!(uninterrupted, resumed);
        assert_eq!(resumed.len(), 1);
    }

    /// The final reports of `first` then `second` through one chain, and
    /// through a chain snapshotted after `first` and restored into a fresh one.
    fn with_and_without_a_restore(
        cfg: impl Fn() -> CorrelateConfig,
        first: &[A<'_>],
        second: &[A<'_>],
    ) -> (Vec<ClusterReport>, Vec<ClusterReport>) {
        let finals = |out: Vec<Output>| -> Vec<ClusterReport> { closed_reports(&out).into_iter().cloned().collect() };
        let uninterrupted = {
            let mut c = chain(cfg());
            let (mut ctx, mut out) = (Context::default(), Vec::new());
            c.process(batch(first), &mut ctx, &mut out).unwrap();
            c.process(batch(second), &mut ctx, &mut out).unwrap();
            c.on_end(&mut ctx, &mut out).unwrap();
            finals(out)
        };
        let resumed = {
            let mut c = chain(cfg());
            let (mut ctx, mut out) = (Context::default(), Vec::new());
            c.process(batch(first), &mut ctx, &mut Vec::new()).unwrap();
            let mut fresh = restored(&c, cfg());
            fresh.process(batch(second), &mut ctx, &mut out).unwrap();
            fresh.on_end(&mut ctx, &mut out).unwrap();
            finals(out)
        };
        (uninterrupted, resumed)
    }

    #[test]
    fn background_rules_and_actor_history_survive_a_restore() {
        let cfg = || CorrelateConfig { max_cluster_alerts: 3, ..cfg() };
        // The host's cluster fills with the scans and the first injection…
        let first = [
            on_web1("scan-a", 0, 31151, 10, "198.51.100.7"),
            on_web1("scan-b", 5, 31151, 10, "198.51.100.8"),
            on_web1("sqli", 10, 31103, 7, "198.51.100.7"),
        ];
        // … so these start a fresh one, which must still know what .7 did.
        let second = [on_web1("sqli2", 20, 31164, 6, "198.51.100.7"), on_web1("pwned", 30, 31106, 6, "198.51.100.7")];
        let (uninterrupted, resumed) = with_and_without_a_restore(cfg, &first, &second);
        assert_eq!(uninterrupted, resumed);
        let fresh = resumed.iter().find(|r| r.alerts == 2).expect("the fresh cluster");
        let actor = line(fresh, "actor_breadth").expect("breadth carried from the full cluster");
        assert!(actor.detail.starts_with("198.51.100.7 raised 4 distinct rules"), "{}", actor.detail);
    }

    /// A tenant moved mid-stream from one chain to another (its Kafka
    /// partition changing hands) ends with the same clusters as if it had
    /// stayed, and the tenant left behind is untouched by the move.
    #[test]
    fn a_tenant_moved_to_another_chain_continues_there_as_if_it_had_stayed() {
        let of = |tenant: &'static str, a: A<'static>| A { tenant, ..a };
        let first = [
            of("acme", strong("a1", 0, "h1", Some("1.1.1.1"))),
            of("beta", strong("b1", 5, "h9", Some("9.9.9.9"))),
            of("acme", strong("a2", 10, "h2", None)),
        ];
        let second =
            [of("acme", strong("a3", 20, "h2", Some("1.1.1.1"))), of("beta", strong("b2", 25, "h9", Some("9.9.9.9")))];
        let closed = |v: &[Output], tenant: &str| -> Vec<ClusterReport> {
            v.iter()
                .filter_map(|o| match o {
                    Output::Cluster(ReportKind::Close, r) if r.tenant == tenant => Some((**r).clone()),
                    _ => None,
                })
                .collect()
        };
        let mut ctx = Context::default();
        let stayed = {
            let (mut c, mut out) = (chain(cfg()), Vec::new());
            c.process(batch(&first), &mut ctx, &mut out).unwrap();
            c.process(batch(&second), &mut ctx, &mut out).unwrap();
            c.on_end(&mut ctx, &mut out).unwrap();
            out
        };
        let (mut here, mut there) = (chain(cfg()), chain(cfg()));
        here.process(batch(&first), &mut ctx, &mut Vec::new()).unwrap();
        let moved: Vec<Option<Vec<u8>>> = here.operators().iter().map(|o| o.snapshot_tenant("acme").unwrap()).collect();
        assert!(moved.iter().all(Option::is_some), "dedup and correlate both hold state of acme");
        for op in here.operators_mut() {
            op.forget("acme");
        }
        assert!(here.operators().iter().all(|o| o.snapshot_tenant("acme").unwrap().is_none()));
        for (op, state) in there.operators_mut().iter_mut().zip(&moved) {
            op.absorb(state.as_ref().unwrap()).unwrap();
        }
        let (mut out_here, mut out_there) = (Vec::new(), Vec::new());
        let (acme, beta): (Vec<A<'_>>, Vec<A<'_>>) = second.iter().cloned().partition(|a| a.tenant == "acme");
        there.process(batch(&acme), &mut ctx, &mut out_there).unwrap();
        here.process(batch(&beta), &mut ctx, &mut out_here).unwrap();
        there.on_end(&mut ctx, &mut out_there).unwrap();
        here.on_end(&mut ctx, &mut out_here).unwrap();
        assert_eq!(closed(&out_there, "acme"), closed(&stayed, "acme"));
        assert_eq!(closed(&out_here, "beta"), closed(&stayed, "beta"));
        assert!(closed(&out_here, "acme").is_empty() && closed(&out_there, "beta").is_empty());
        assert_eq!(closed(&stayed, "acme").len(), 1, "the test needs acme's alerts in one cluster");
    }

    fn campaign_step<'a>(id: &'a str, t: i64, rule: u32, level: u8, tactics: &'a [&'a str]) -> A<'a> {
        A { tenant: "acme", id, t, rule, level, host: "h1", src_ip: Some("7.7.7.7"), log: id, tactics, ..A::default() }
    }

    #[test]
    fn no_escalation_during_warm_up_then_on_the_next_alert() {
        let warm = CorrelateConfig { baseline_warmup: Duration::from_mins(30), ..cfg() };
        let (live, _, _) = run(
            warm,
            &[
                campaign_step("s1", 0, 5712, 10, &["Credential Access"]),
                campaign_step("s2", 60, 5403, 6, &["Privilege Escalation"]),
                campaign_step("s3", 120, 5902, 8, &["Persistence"]),
                campaign_step("s4", 180, 2833, 8, &["Execution", "Persistence"]),
                campaign_step("s5", 1900, 5901, 8, &["Persistence"]),
            ],
        );
        let fired: Vec<&str> = live.iter().map(|(_, r)| r.trigger.as_ref().unwrap().alert_id.as_str()).collect();
        assert_eq!(fired, ["s5"], "the cluster crossed the threshold at s4, inside the warm-up");
    }

    #[test]
    fn a_rule_common_across_hosts_is_discounted_and_bridges_nothing() {
        // Rule 31151 fires on five hosts from one ip: common (more than 3 hosts).
        let noise: Vec<A<'_>> = ["h1", "h2", "h3", "h4", "h5"]
            .iter()
            .enumerate()
            .map(|(i, h)| A {
                tenant: "acme",
                id: ["n1", "n2", "n3", "n4", "n5"][i],
                t: i as i64,
                rule: 31151,
                level: 10,
                host: h,
                src_ip: Some("198.51.100.1"),
                log: "scan",
                tactics: &["Reconnaissance"],
                ..A::default()
            })
            .collect();
        let (_, finals, _) =
            run(CorrelateConfig { hub_degree: HubDegrees { ip: 100, ..HubDegrees::default() }, ..cfg() }, &noise);
        // The first three hosts were linked by the ip before the rule was seen
        // on a fourth host; from then on it links only through its own host.
        assert_eq!(finals.iter().map(|f| f.alerts).collect::<Vec<_>>(), [3, 1, 1]);
        let last = &finals[2];
        assert!(last.breakdown[0].detail.contains("everyday here"), "{}", last.breakdown[0].detail);
        assert_eq!(last.breakdown[0].points, 15.0);
    }

    fn on_web1<'a>(id: &'a str, t: i64, rule: u32, level: u8, ip: &'a str) -> A<'a> {
        A { tenant: "acme", id, t, rule, level, host: "web1", src_ip: Some(ip), log: id, ..A::default() }
    }

    fn line<'a>(r: &'a ClusterReport, factor: &str) -> Option<&'a crate::score::ScoreLine> {
        r.breakdown.iter().find(|l| l.factor == factor)
    }

    #[test]
    fn a_rule_many_sources_raise_on_one_host_is_background_unless_one_of_them_did_more() {
        // Two scanners each trip 31151 on web1: the probing an exposed
        // server draws all day, so its level counts at a discount.
        let probes =
            [on_web1("scan-a", 0, 31151, 10, "198.51.100.1"), on_web1("scan-b", 60, 31151, 10, "198.51.100.2")];
        let (_, finals, _) = run(cfg(), &probes);
        assert_eq!(finals.len(), 1);
        let top = line(&finals[0], "max_level").expect("a level line");
        assert_eq!(top.points, 15.0, "{}", top.detail);
        assert!(top.detail.contains("everyday here"), "{}", top.detail);
        let (_, finals, _) = run(CorrelateConfig { crowded_sources: 0, ..cfg() }, &probes);
        assert_eq!(line(&finals[0], "max_level").unwrap().points, 30.0, "off: the full level");

        // One of the two goes on to inject and succeed: four distinct rules
        // from one source, so its 31151 counts in full again.
        let mut intrusion = probes.to_vec();
        intrusion.extend([
            on_web1("dirb", 120, 31101, 5, "198.51.100.1"),
            on_web1("sqli", 180, 31103, 7, "198.51.100.1"),
            on_web1("pwned", 240, 31106, 6, "198.51.100.1"),
        ]);
        let (_, finals, _) = run(cfg(), &intrusion);
        assert_eq!(finals.len(), 1);
        let top = line(&finals[0], "max_level").unwrap();
        assert_eq!(top.points, 30.0, "{}", top.detail);
        let actor = line(&finals[0], "actor_breadth").expect("the source is an actor");
        assert!(actor.detail.starts_with("198.51.100.1 raised 4 distinct rules"), "{}", actor.detail);
    }

    #[test]
    fn a_prior_on_a_broad_actors_pattern_takes_its_part_away_in_a_later_sweep() {
        // The same scan script from two addresses of a scanner's pool, on
        // two hosts, well apart: each cluster is one actor's doing.
        let sweep = |host: &'static str, ip: &'static str, t: i64| -> Vec<A<'static>> {
            [(31151u32, 10u8), (31101, 5), (31103, 7), (31106, 6), (5712, 10)]
                .iter()
                .enumerate()
                .map(|(i, &(rule, level))| A {
                    tenant: "acme",
                    id: ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"][i + if host == "web1" { 0 } else { 5 }],
                    t: t + i as i64 * 10,
                    rule,
                    level,
                    host,
                    src_ip: Some(ip),
                    log: "sweep",
                    ..A::default()
                })
                .collect()
        };
        let first = sweep("web1", "10.1.250.10", 0);
        let (_, finals, _) = run(cfg(), &first);
        let judged = &finals[0];
        assert!(line(judged, "actor_breadth").is_some(), "five distinct rules from one source");
        let signature = judged.signature.clone();

        let second = sweep("web2", "10.1.250.11", 10_000_000);
        let (_, plain, _) = run(cfg(), &second);
        assert_eq!(plain[0].signature, signature, "the actor's role and rules, not its address");
        let with_prior_on = |floor: bool, alerts: &[A<'_>], detection: Option<Box<Detection>>| {
            let mut priors = Priors::default();
            assert!(priors.insert("acme", &signature, "prior #1: judged false_positive".into()));
            let mut c = chain(cfg());
            c.reconfigure(&priors).unwrap();
            if floor {
                let mut t = crate::intel::TenantIntel::default();
                t.iocs.load_plain("feed.txt", "10.1.250.11\n", None).unwrap();
                let intel = Intel { tenants: [("acme".to_string(), t)].into(), ..Intel::default() };
                c.reconfigure(&Arc::new(intel)).unwrap();
            }
            let (mut ctx, mut out) = (Context::default(), Vec::new());
            c.process(batch(alerts), &mut ctx, &mut out).unwrap();
            if let Some(d) = detection {
                c.operators_mut()[1].on_detection(d, &mut ctx, &mut out).unwrap();
            }
            c.on_end(&mut ctx, &mut out).unwrap();
            closed_reports(&out)[0].clone()
        };
        let with_prior = |floor: bool| with_prior_on(floor, &second, None);
        let later = with_prior(false);
        // The ordinary lines, then one taking off what the actor brought:
        // its breadth, and its rules' full levels and tactics.
        let ordinary: Vec<&str> = plain[0].breakdown.iter().map(|l| l.factor.as_str()).collect();
        let lines: Vec<&str> = later.breakdown.iter().map(|l| l.factor.as_str()).collect();
        assert_eq!(lines[..lines.len() - 1], ordinary[..]);
        let prior = line(&later, "prior_false_positive").unwrap();
        assert!(prior.detail.contains("the same pattern from ip 10.1.250.11 (5 rules)"), "{}", prior.detail);
        assert_eq!(later.score, plain[0].score + prior.points);
        let breadth = line(&plain[0], "actor_breadth").unwrap().points;
        let everyday_level = line(&plain[0], "max_level").unwrap().points / 2.0;
        assert!(-prior.points >= breadth + everyday_level, "{} taken", prior.points);
        assert!(later.score < 65.0 && plain[0].score >= 65.0, "{} against {}", later.score, plain[0].score);
        // Over the safety floor (an IOC hit), the actor counts in full.
        let floored = with_prior(true);
        assert!(line(&floored, "actor_breadth").is_some());
        assert!(line(&floored, "prior_false_positive").unwrap().detail.contains("not applied"));

        // A rule the host raised by itself too (no actor) is not the actor's
        // to take: its level (30 points, 15 as everyday) stays.
        let mut shared = second.clone();
        shared.push(A { id: "own", t: 10_000_100, src_ip: None, log: "own", ..second[4] });
        let kept = with_prior_on(false, &shared, None);
        let taken = |r: &ClusterReport| -line(r, "prior_false_positive").unwrap().points;
        assert!(taken(&kept) <= taken(&later) - 15.0, "{} against {}", taken(&kept), taken(&later));

        // A rule's detection on the host joins the cluster: the actor's
        // pattern is the same, so its part is still taken, and the
        // detection counts in full.
        let detected = with_prior_on(
            false,
            &second,
            Some(super::detection_tests::detection("acme", &[(EntityKind::Host, "web2")], 50, 10_000_050)),
        );
        assert_eq!(detected.detections.len(), 1);
        let rule = line(&detected, "correlation_rule").expect("the detection's line").points;
        assert_eq!(taken(&detected), taken(&later), "{:?}", detected.breakdown);
        assert_eq!(detected.score, later.score + rule);

        // A prior that arrives after the alerts (a verdict coming back while
        // the cluster is open) takes the same part, not a flat penalty.
        let mut priors = Priors::default();
        assert!(priors.insert("acme", &signature, "prior #1: judged false_positive".into()));
        let mut c = chain(cfg());
        let (mut ctx, mut out) = (Context::default(), Vec::new());
        c.process(batch(&second), &mut ctx, &mut out).unwrap();
        c.reconfigure(&priors).unwrap();
        c.on_end(&mut ctx, &mut out).unwrap();
        let arrived = closed_reports(&out)[0].clone();
        assert_eq!(taken(&arrived), taken(&later), "{:?}", arrived.breakdown);
        assert_ne!(taken(&arrived), ScoreConfig::default().prior_penalty);
    }

    #[test]
    fn an_actors_breadth_on_a_host_survives_its_cluster_filling_up() {
        // One source scans, injects twice, then succeeds; the host's cluster
        // is full after three alerts, so the success starts a fresh one.
        let alerts = [
            on_web1("scan", 0, 31151, 10, "198.51.100.7"),
            on_web1("sqli", 10, 31103, 7, "198.51.100.7"),
            on_web1("sqli2", 20, 31164, 6, "198.51.100.7"),
            on_web1("pwned", 30, 31106, 6, "198.51.100.7"),
        ];
        let actor_of_last = |actor_window: Duration| {
            let cfg = CorrelateConfig { max_cluster_alerts: 3, actor_window, ..cfg() };
            let (_, finals, _) = run(cfg, &alerts);
            assert_eq!(finals.iter().map(|f| f.alerts).collect::<Vec<_>>(), [3, 1]);
            line(&finals[1], "actor_breadth").map(|l| l.detail.clone())
        };
        let carried = actor_of_last(Duration::from_mins(20)).expect("the fresh cluster knows the scan before");
        assert!(carried.starts_with("198.51.100.7 raised 4 distinct rules"), "{carried}");
        assert_eq!(actor_of_last(Duration(5_000)), None, "rules 10 s apart, remembered 5 s: only its own");
    }

    #[test]
    fn an_actors_rules_below_the_actor_level_do_not_count_toward_its_breadth() {
        // A user on their own workstation: logon, logoff, a special logon
        // (level 3 each), then two level-8 alerts.
        let user = |id, t, rule, level| A {
            tenant: "acme",
            id,
            t,
            rule,
            level,
            host: "ws1",
            user: Some("jdoe"),
            log: id,
            ..A::default()
        };
        let alerts = [
            user("task", 0, 60228, 8),
            user("logon", 10, 60106, 3),
            user("logoff", 20, 60137, 3),
            user("special", 30, 60110, 3),
            user("drop", 40, 92200, 8),
        ];
        let with = |level: u8| {
            let score = ScoreConfig { actor_min_level: level, ..ScoreConfig::default() };
            let mut c = scored_chain(cfg(), score);
            let (mut ctx, mut out) = (Context::default(), Vec::new());
            c.process(batch(&alerts), &mut ctx, &mut out).unwrap();
            c.on_end(&mut ctx, &mut out).unwrap();
            let finals = closed_reports(&out);
            assert_eq!(finals.len(), 1);
            line(finals[0], "actor_breadth").map(|l| l.detail.clone())
        };
        assert_eq!(with(4), None, "two rules at level ≥ 4 are not breadth");
        let all = with(0).expect("five distinct rules at any level");
        assert!(all.starts_with("jdoe raised 5 distinct rules"), "{all}");
    }
}

#[cfg(test)]
mod detection_tests {
    use super::*;
    use crate::testkit::{A, batch};

    pub(super) fn correlate() -> Correlate {
        let cfg = CorrelateConfig {
            baseline_warmup: Duration(0),
            report_all_closed: true,
            track_members: true,
            ..CorrelateConfig::default()
        };
        Correlate::new(cfg, ScoreConfig::default(), HandoffConfig::default()).unwrap()
    }

    /// A level-10 alert: it starts a cluster, but alone scores below the
    /// escalation threshold.
    pub(super) fn alert<'a>(tenant: &'a str, id: &'a str, t: i64, host: &'a str, ip: &'a str) -> A<'a> {
        A { tenant, id, t, rule: 5710, level: 10, host, src_ip: Some(ip), log: id, ..A::default() }
    }

    /// A detection whose newest alert is at `t` seconds (as the test alerts).
    pub(super) fn detection(tenant: &str, entities: &[(EntityKind, &str)], severity: u8, t: i64) -> Box<Detection> {
        let t = t * 1000;
        Box::new(Detection {
            rule: "brute-force-then-login".into(),
            tenant: tenant.into(),
            severity,
            tags: vec!["T1110".into()],
            window_start: t - 600_000,
            window_end: t + 1,
            first: t - 60_000,
            last: t,
            entities: entities.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            alert_ids: vec!["a1".into()],
            summary: None,
            trigger_alert: "a2".into(),
            trigger_ingest_us: 0,
        })
    }

    fn reports(out: Vec<Output>) -> Vec<(ReportKind, ClusterReport)> {
        out.into_iter()
            .filter_map(|o| match o {
                Output::Cluster(k, r) => Some((k, *r)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_detection_joins_the_cluster_of_its_entity_and_escalates_it_with_a_reason() {
        let mut c = correlate();
        let mut ctx = Context::default();
        let mut out = Vec::new();
        let alerts = [
            alert("acme", "a1", 1_000_000, "web-01", "203.0.113.7"),
            alert("acme", "a2", 1_001_000, "web-01", "203.0.113.7"),
        ];
        c.process(batch(&alerts), &mut ctx, &mut out).unwrap();
        assert!(reports(std::mem::take(&mut out)).is_empty(), "two level-10 alerts of one rule do not escalate");
        c.on_detection(detection("acme", &[(EntityKind::Ip, "203.0.113.7")], 90, 1_001_000), &mut ctx, &mut out)
            .unwrap();
        let got = reports(out);
        assert_eq!(got.len(), 1, "the rule's points escalate the cluster");
        let (kind, r) = &got[0];
        assert_eq!(*kind, ReportKind::Escalate);
        assert_eq!(r.members.as_ref().unwrap(), &["a1", "a2"], "joined the alerts' cluster, not a new one");
        assert_eq!(r.version, 3, "two alerts and one detection");
        assert_eq!(r.alerts, 2);
        assert_eq!(r.detections.len(), 1);
        assert_eq!(r.detections[0].rule, "brute-force-then-login");
        assert!(r.breakdown.iter().any(|l| l.factor == "correlation_rule" && l.points == 45.0), "{:?}", r.breakdown);
        assert_eq!(r.trigger.as_ref().unwrap().alert_id, "a2");
    }

    #[test]
    fn a_detection_spanning_two_clusters_merges_them_and_one_with_new_entities_starts_one() {
        let mut c = correlate();
        let mut ctx = Context::default();
        let mut out = Vec::new();
        let alerts = [
            alert("acme", "a1", 1_000_000, "web-01", "203.0.113.7"),
            alert("acme", "a2", 1_001_000, "db-01", "198.51.100.9"),
        ];
        c.process(batch(&alerts), &mut ctx, &mut out).unwrap();
        assert_eq!(c.live_clusters("acme"), 2);
        let both = [(EntityKind::Host, "web-01"), (EntityKind::Host, "db-01")];
        c.on_detection(detection("acme", &both, 10, 1_001_000), &mut ctx, &mut out).unwrap();
        assert_eq!(c.live_clusters("acme"), 1, "the rule links the two hosts");
        c.on_detection(detection("acme", &[(EntityKind::User, "ACME\\mallory")], 10, 1_001_000), &mut ctx, &mut out)
            .unwrap();
        assert_eq!(c.live_clusters("acme"), 2, "entities no cluster holds start one");
    }

    #[test]
    fn a_detection_never_joins_another_tenants_cluster() {
        let mut c = correlate();
        let mut ctx = Context::default();
        let mut out = Vec::new();
        let alerts = [alert("acme", "a1", 1_000_000, "web-01", "203.0.113.7")];
        c.process(batch(&alerts), &mut ctx, &mut out).unwrap();
        c.on_detection(detection("globex", &[(EntityKind::Ip, "203.0.113.7")], 90, 1_000_000), &mut ctx, &mut out)
            .unwrap();
        assert_eq!(c.live_clusters("acme"), 1);
        assert_eq!(c.live_clusters("globex"), 1, "a cluster of globex's own");
        let got = reports(out);
        assert!(got.iter().all(|(_, r)| r.tenant == "globex" && r.members.as_ref().unwrap().is_empty()), "{got:?}");
    }
}

#[cfg(test)]
mod intel_tests {
    use super::detection_tests::{alert, correlate};
    use super::*;
    use crate::cluster::Decision;
    use crate::intel::TenantIntel;
    use crate::testkit::{A, batch};

    fn intel(tenant: &str, iocs: &str, inventory_csv: &str) -> Arc<Intel> {
        let mut t = TenantIntel::default();
        t.iocs.load_plain("acme-iocs.txt", iocs, None).unwrap();
        if !inventory_csv.is_empty() {
            t.inventory.load_csv("acme-inventory.csv", inventory_csv).unwrap();
        }
        Arc::new(Intel { tenants: [(tenant.to_string(), t)].into(), ..Intel::default() })
    }

    fn feed(c: &mut Correlate, alerts: &[A<'_>]) -> Vec<(ReportKind, ClusterReport)> {
        let (mut ctx, mut out) = (Context::default(), Vec::new());
        c.process(batch(alerts), &mut ctx, &mut out).unwrap();
        reports(out)
    }

    fn end(c: &mut Correlate) -> Vec<ClusterReport> {
        let (mut ctx, mut out) = (Context::default(), Vec::new());
        c.on_end(&mut ctx, &mut out).unwrap();
        reports(out).into_iter().map(|(_, r)| r).collect()
    }

    fn reports(out: Vec<Output>) -> Vec<(ReportKind, ClusterReport)> {
        out.into_iter()
            .filter_map(|o| match o {
                Output::Cluster(k, r) => Some((k, *r)),
                _ => None,
            })
            .collect()
    }

    fn line<'a>(r: &'a ClusterReport, factor: &str) -> Option<&'a crate::score::ScoreLine> {
        r.breakdown.iter().find(|l| l.factor == factor)
    }

    #[test]
    fn an_ioc_hit_escalates_names_the_ioc_and_its_source_and_never_crosses_tenants() {
        let mut c = correlate();
        c.reconfigure(&intel("acme", "203.0.113.7\n", "")).unwrap();
        let got = feed(
            &mut c,
            &[
                alert("acme", "a1", 1_000_000, "web-01", "203.0.113.7"),
                alert("globex", "g1", 1_000_000, "web-01", "203.0.113.7"),
            ],
        );
        assert_eq!(got.len(), 1, "{got:?}");
        let (kind, r) = &got[0];
        assert_eq!((*kind, r.tenant.as_str()), (ReportKind::Escalate, "acme"));
        let hit = line(r, "threat_intel").expect("a threat_intel line");
        assert_eq!(hit.points, 50.0);
        assert!(hit.detail.contains("ip 203.0.113.7 is an IOC (acme-iocs.txt)"), "{}", hit.detail);
        assert!(ScoreConfig::default().over_floor(&r.breakdown), "threat intel is over the safety floor");
        let finals = end(&mut c);
        let globex = finals.iter().find(|r| r.tenant == "globex").unwrap();
        assert!(line(globex, "threat_intel").is_none(), "acme's IOC never scores globex: {:?}", globex.breakdown);
        assert_eq!(globex.decision, Decision::Suppress);
    }

    #[test]
    fn a_reload_rechecks_live_clusters_and_a_removed_ioc_stops_counting() {
        let mut c = correlate();
        assert!(feed(&mut c, &[alert("acme", "a1", 1_000_000, "web-01", "198.51.100.9")]).is_empty());
        // The IOC arrives while the cluster is live: its next alert escalates.
        c.reconfigure(&intel("acme", "198.51.100.9\n", "")).unwrap();
        let got = feed(&mut c, &[alert("acme", "a2", 1_000_010, "web-01", "10.0.0.1")]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(line(&got[0].1, "threat_intel").is_some_and(|l| l.detail.contains("198.51.100.9")));
        // Removed again: the closing report no longer counts it.
        c.reconfigure(&Arc::new(Intel::default())).unwrap();
        let finals = end(&mut c);
        assert_eq!(finals.len(), 1);
        assert!(line(&finals[0], "threat_intel").is_none(), "{:?}", finals[0].breakdown);
    }

    #[test]
    fn inventory_criticality_privilege_and_known_actors_are_named() {
        let inventory = "kind,value,criticality\nhost,dc01,critical\nhost,web-01,high\n\
                         privileged_user,administrator,\nscanner,10.9.9.9,\nservice_account,svc_backup,\n";
        let mut c = correlate();
        c.reconfigure(&intel("acme", "", inventory)).unwrap();
        let mut a = alert("acme", "a1", 1_000_000, "web-01", "10.9.9.9");
        a.user = Some("ACME\\Administrator");
        let mut b = alert("acme", "b1", 1_000_000, "dc01", "172.16.0.1");
        b.user = Some("svc_backup");
        b.rule = 5711;
        assert!(feed(&mut c, &[a, b]).is_empty(), "30 + 15 + 15 and 30 + 30 stay below 65");
        let finals = end(&mut c);
        let web = finals.iter().find(|r| r.entities[&EntityKind::Host].contains(&"web-01".to_string())).unwrap();
        let dc = finals.iter().find(|r| r.entities[&EntityKind::Host].contains(&"dc01".to_string())).unwrap();
        let high = line(web, "asset_criticality").expect("high host");
        assert_eq!(high.points, 15.0);
        assert!(high.detail.contains("host web-01 is high in the inventory (acme-inventory.csv)"), "{}", high.detail);
        assert!(line(web, "privileged_user").is_some_and(|l| l.points == 15.0 && l.detail.contains("Administrator")));
        let scanner = line(web, "known_scanner").expect("the scanner is named, not silently muted");
        assert_eq!(scanner.points, 0.0);
        assert!(scanner.detail.contains("ip 10.9.9.9"), "{}", scanner.detail);
        assert!(!ScoreConfig::default().over_floor(&web.breakdown), "high is not a floor factor");
        assert_eq!(web.decision, Decision::Review, "30 + 15 + 15 = 60");
        let critical = line(dc, "critical_asset").expect("critical host");
        assert_eq!(critical.points, 30.0);
        assert!(line(dc, "service_account").is_some_and(|l| l.detail.contains("svc_backup")));
        // 60 is in the review band anyway; a lower-level alert shows the floor.
        let mut c = correlate();
        c.reconfigure(&intel("acme", "", inventory)).unwrap();
        let low = A { level: 6, ..alert("acme", "c1", 1_000_000, "dc01", "172.16.0.2") };
        feed(&mut c, &[low]);
        let r = &end(&mut c)[0];
        assert_eq!(r.score, 48.0);
        assert_eq!(r.decision, Decision::Review);
        let mut c = Correlate::new(
            CorrelateConfig { baseline_warmup: Duration(0), report_all_closed: true, ..CorrelateConfig::default() },
            ScoreConfig {
                criticality_points: crate::score::CriticalityPoints { critical: 1.0, ..Default::default() },
                ..ScoreConfig::default()
            },
            HandoffConfig::default(),
        )
        .unwrap();
        c.reconfigure(&intel("acme", "", inventory)).unwrap();
        feed(&mut c, &[A { level: 6, ..alert("acme", "d1", 1_000_000, "dc01", "172.16.0.3") }]);
        let r = &end(&mut c)[0];
        assert_eq!(r.score, 19.0, "{:?}", r.breakdown);
        assert_eq!(r.decision, Decision::Review, "below review, but never suppressed: {}", r.reason);
        assert!(r.reason.contains("safety floor"), "{}", r.reason);
    }

    #[test]
    fn a_known_scanner_is_not_counted_as_an_actor() {
        let alerts: Vec<A<'_>> = (0..6u32)
            .map(|i| A {
                rule: 5700 + i,
                ..alert(
                    "acme",
                    ["a", "b", "c", "d", "e", "f"][i as usize],
                    1_000_000 + i64::from(i),
                    "web-01",
                    "10.9.9.9",
                )
            })
            .collect();
        let mut plain = correlate();
        feed(&mut plain, &alerts);
        let before = end(&mut plain);
        assert!(line(&before[0], "actor_breadth").is_some(), "{:?}", before[0].breakdown);
        let mut c = correlate();
        c.reconfigure(&intel("acme", "", "kind,value\nscanner,10.9.9.9\n")).unwrap();
        feed(&mut c, &alerts);
        let after = end(&mut c);
        assert!(line(&after[0], "actor_breadth").is_none(), "{:?}", after[0].breakdown);
        assert!(line(&after[0], "known_scanner").is_some());
    }

    #[test]
    fn a_restored_cluster_keeps_its_hits_and_is_rechecked_against_the_intel_now_loaded() {
        let mut c = correlate();
        c.reconfigure(&intel("acme", "203.0.113.7\n", "")).unwrap();
        feed(&mut c, &[alert("acme", "a1", 1_000_000, "web-01", "203.0.113.7")]);
        let snapshot = c.snapshot().unwrap();
        let mut same = correlate();
        same.reconfigure(&intel("acme", "203.0.113.7\n", "")).unwrap();
        same.restore(&snapshot).unwrap();
        assert!(line(&end(&mut same)[0], "threat_intel").is_some());
        let mut without = correlate();
        without.restore(&snapshot).unwrap();
        assert!(line(&end(&mut without)[0], "threat_intel").is_none());
    }
}
