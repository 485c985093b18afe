//! Dedup: fold repeats of the same alert within a window into a count.
//!
//! The fingerprint hashes the tenant plus configurable fields (default: rule
//! id, agent, source ip, destination user and the `full_log` template with
//! numbers, ips, hashes and timestamps masked). Within `window` of the first
//! occurrence, the first alert passes and repeats are marked duplicate: they
//! only bump counts downstream. A repeat with a higher level, or from another
//! source, is never a duplicate (the level is checked and the source ip is in
//! the fingerprint), so an exploit never hides in a scanner's row.
//!
//! Whether a row is a duplicate depends only on event times, never on when
//! the watermark expired state, so the result is independent of batch size.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash::{FastMap, StableHasher};
use crate::operator::{AlertBatch, Collector, Context, DedupMarks, Operator, Output, Tenants};
use crate::schema::{AlertColumns, opt_str};
use crate::time::{Duration, EventTime};

/// A field that takes part in the dedup fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DedupField {
    RuleId,
    Agent,
    SrcIp,
    DstIp,
    SrcUser,
    DstUser,
    Process,
    FileHash,
    Url,
    /// `full_log` with every token that contains a digit masked.
    FullLogTemplate,
}

/// `[dedup]` settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// Turn dedup off entirely (every alert passes).
    pub enabled: bool,
    /// Repeats within this long after the first occurrence are folded.
    pub window: Duration,
    /// Fields hashed into the fingerprint (the tenant always is).
    pub fields: Vec<DedupField>,
    /// Most fingerprints kept per tenant; the oldest are evicted beyond it
    /// (counted in `dedup.evicted`).
    pub max_entries_per_tenant: NonZeroUsize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_mins(5),
            fields: vec![
                DedupField::RuleId,
                DedupField::Agent,
                DedupField::SrcIp,
                DedupField::DstUser,
                DedupField::FullLogTemplate,
            ],
            max_entries_per_tenant: NonZeroUsize::new(200_000).expect("non-zero"),
        }
    }
}

impl DedupConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.window.millis() <= 0 {
            errors.push("dedup.window must be positive".into());
        }
        if self.enabled && self.fields.is_empty() {
            errors.push("dedup.fields is empty: every alert of a tenant would be one duplicate".into());
        }
        errors
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Entry {
    first: EventTime,
    last: EventTime,
    level: u8,
    count: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TenantState {
    entries: FastMap<u64, Entry>,
    /// Fingerprints in insertion order, for expiry and eviction. An item whose
    /// time no longer matches its entry's `first` is stale and skipped.
    order: VecDeque<(u64, EventTime)>,
    /// The last watermark the tenant saw (not checkpointed).
    watermark: Option<EventTime>,
}

/// Masks every alphanumeric token containing a digit with `#`, so
/// `sshd[17584]: ... from 172.17.1.1 port 56404` and the same line with other
/// numbers share a template.
pub fn mask_template(log: &str, out: &mut String) {
    out.clear();
    let bytes = log.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        if bytes[i].is_ascii_alphanumeric() {
            let mut has_digit = false;
            while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                has_digit |= bytes[i].is_ascii_digit();
                i += 1;
            }
            if has_digit {
                out.push('#');
            } else {
                out.push_str(&log[start..i]);
            }
        } else {
            // Everything up to the next ASCII letter or digit, copied at
            // once: no byte of a multi-byte character is ASCII, so the run
            // ends on a character boundary.
            while i < bytes.len() && !bytes[i].is_ascii_alphanumeric() {
                i += 1;
            }
            out.push_str(&log[start..i]);
        }
    }
}

/// The dedup operator. Marks rows; never removes them, so correlation can
/// still count repeats into the right cluster.
#[derive(Debug)]
pub struct Dedup {
    config: DedupConfig,
    tenants: FastMap<Arc<str>, TenantState>,
    /// Windows (ms) of tenants whose policy sets their own.
    tenant_window: FastMap<Arc<str>, i64>,
    template: String,
}

const NAME: &str = "dedup";
const SNAPSHOT_VERSION: u32 = 1;

impl Dedup {
    pub fn new(config: DedupConfig) -> Result<Self> {
        let errors = config.validate();
        if !errors.is_empty() {
            return Err(Error::Config(errors.join("; ")));
        }
        Ok(Self { config, tenants: FastMap::default(), tenant_window: FastMap::default(), template: String::new() })
    }

    /// Number of fingerprints held for `tenant`.
    pub fn state_size(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).map_or(0, |t| t.entries.len())
    }

    fn fingerprint(&mut self, c: &AlertColumns<'_>, row: usize) -> u64 {
        let mut h = StableHasher::new();
        h.field(c.tenant(row).as_bytes());
        for f in &self.config.fields {
            match f {
                DedupField::RuleId => h.u64(u64::from(c.rule_id.value(row))),
                DedupField::Agent => h.opt(c.agent_id(row).or(c.agent_name(row))),
                DedupField::SrcIp => h.opt(opt_str(c.src_ip, row)),
                DedupField::DstIp => h.opt(opt_str(c.dst_ip, row)),
                DedupField::SrcUser => h.opt(opt_str(c.src_user, row)),
                DedupField::DstUser => h.opt(opt_str(c.dst_user, row)),
                DedupField::Process => h.opt(opt_str(c.process, row)),
                DedupField::FileHash => h.opt(opt_str(c.file_hash, row)),
                DedupField::Url => h.opt(opt_str(c.url, row)),
                DedupField::FullLogTemplate => {
                    mask_template(opt_str(c.full_log, row).unwrap_or(""), &mut self.template);
                    h.field(self.template.as_bytes())
                }
            };
        }
        h.finish()
    }
}

fn evict_front(state: &mut TenantState, mut keep: impl FnMut(EventTime) -> bool) -> u64 {
    let mut removed = 0;
    while let Some(&(fp, t)) = state.order.front() {
        let live = state.entries.get(&fp).is_some_and(|e| e.first == t);
        if live && keep(t) {
            break;
        }
        state.order.pop_front();
        if live {
            state.entries.remove(&fp);
            removed += 1;
        }
    }
    removed
}

impl Operator for Dedup {
    fn name(&self) -> &'static str {
        NAME
    }

    fn state_sizes(&self, out: &mut dyn FnMut(&'static str, &Arc<str>, u64)) {
        for (tenant, state) in &self.tenants {
            out("fingerprints", tenant, state.entries.len() as u64);
        }
    }

    fn reconfigure(&mut self, update: &(dyn std::any::Any + Send + Sync)) -> Result<()> {
        if let Some(policies) = update.downcast_ref::<Arc<crate::policy::Policies>>() {
            let base = self.config.window;
            let windows: FastMap<Arc<str>, i64> = policies
                .tenants()
                .filter(|(_, p)| p.dedup_window.is_some())
                .map(|(t, _)| (Arc::from(t.as_str()), policies.dedup_window_ms(base, t)))
                .collect();
            // Expiry stops at the oldest live entry, so older ones that
            // expired may still be held. Under a longer window they would
            // match again although correlate, which forgets a passed alert
            // once no duplicate can come, has forgotten them: drop every one
            // expired under the window it had.
            for (tenant, state) in &mut self.tenants {
                let old = self.tenant_window.get(tenant).copied().unwrap_or(base.millis());
                let new = windows.get(tenant).copied().unwrap_or(base.millis());
                if new > old
                    && let Some(wm) = state.watermark
                {
                    state.entries.retain(|_, e| e.first.saturating_add(old) > wm);
                }
            }
            self.tenant_window = windows;
        }
        Ok(())
    }

    fn process(&mut self, mut batch: AlertBatch, ctx: &mut Context, out: &mut dyn Collector) -> Result<()> {
        let rows = batch.num_rows();
        let mut marks = DedupMarks { fingerprint: Vec::with_capacity(rows), duplicate: Vec::with_capacity(rows) };
        {
            let c = AlertColumns::new(&batch.batch)?;
            let window = self.config.window.millis();
            let cap = self.config.max_entries_per_tenant.get();
            for row in 0..rows {
                let fp = self.fingerprint(&c, row);
                marks.fingerprint.push(fp);
                if !self.config.enabled {
                    marks.duplicate.push(false);
                    continue;
                }
                let t = c.event_time.value(row);
                let level = c.rule_level.value(row);
                let tenant = c.tenant(row);
                let window = if self.tenant_window.is_empty() {
                    window
                } else {
                    self.tenant_window.get(tenant).copied().unwrap_or(window)
                };
                let state = match self.tenants.get_mut(tenant) {
                    Some(s) => s,
                    None => self.tenants.entry(Arc::from(tenant)).or_default(),
                };
                let dup = match state.entries.get_mut(&fp) {
                    Some(e) if (t - e.first).abs() < window && level <= e.level => {
                        e.count += 1;
                        e.last = e.last.max(t);
                        true
                    }
                    _ => false,
                };
                if !dup {
                    state.entries.insert(fp, Entry { first: t, last: t, level, count: 1 });
                    state.order.push_back((fp, t));
                    if state.entries.len() > cap {
                        let mut budget = state.entries.len() - cap;
                        let evicted = evict_front(state, |_| {
                            let go = budget > 0;
                            budget = budget.saturating_sub(1);
                            !go
                        });
                        let key: Arc<str> = Arc::from(tenant);
                        ctx.counters.add(NAME, "evicted", &key, evicted);
                    }
                }
                marks.duplicate.push(dup);
            }
            // Count per tenant once per batch, not per row.
            let mut per_tenant: FastMap<&str, (u64, u64)> = FastMap::default();
            for row in 0..rows {
                let e = per_tenant.entry(c.tenant(row)).or_default();
                e.0 += 1;
                e.1 += u64::from(marks.duplicate[row]);
            }
            for (tenant, (n, dups)) in per_tenant {
                let key: Arc<str> =
                    self.tenants.get_key_value(tenant).map_or_else(|| Arc::from(tenant), |(k, _)| k.clone());
                ctx.counters.add(NAME, "records_in", &key, n);
                ctx.counters.add(NAME, "duplicates", &key, dups);
                ctx.counters.add(NAME, "passed", &key, n - dups);
            }
        }
        batch.dedup = Some(marks);
        out.collect(Output::Batch(batch));
        Ok(())
    }

    fn on_watermark(
        &mut self,
        wm: EventTime,
        tenants: Tenants<'_>,
        ctx: &mut Context,
        _out: &mut dyn Collector,
    ) -> Result<()> {
        let base = self.config.window.millis();
        for (tenant, state) in self.tenants.iter_mut().filter(|(t, _)| tenants.includes(t)) {
            let window = self.tenant_window.get(tenant).copied().unwrap_or(base);
            state.watermark = Some(wm);
            // An entry can still match a non-late record (t >= wm) only while
            // first + window > wm.
            let expired = evict_front(state, |t| t.saturating_add(window) > wm);
            ctx.counters.add(NAME, "expired", tenant, expired);
        }
        self.tenants.retain(|_, s| !s.entries.is_empty());
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        // The map is written as it is (no copy, no sort): a checkpoint pauses
        // the shard while it is taken.
        let mut tenants: Vec<TenantSnapshot<'_>> =
            self.tenants.iter().map(|(k, s)| (k, &s.entries, &s.order)).collect();
        tenants.sort_by(|a, b| a.0.cmp(b.0));
        crate::snapshot::encode(NAME, SNAPSHOT_VERSION, &tenants)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.tenants.clear();
        self.absorb(state)
    }

    fn snapshot_tenant(&self, tenant: &str) -> Result<Option<Vec<u8>>> {
        let Some((k, s)) = self.tenants.get_key_value(tenant) else { return Ok(None) };
        // A slice: postcard writes it with its length, as `snapshot` writes
        // its list (a fixed-size array would have none).
        let one: &[TenantSnapshot<'_>] = &[(k, &s.entries, &s.order)];
        crate::snapshot::encode(NAME, SNAPSHOT_VERSION, &one).map(Some)
    }

    fn absorb(&mut self, state: &[u8]) -> Result<()> {
        type Snap = Vec<(Arc<str>, FastMap<u64, Entry>, VecDeque<(u64, EventTime)>)>;
        let tenants: Snap = crate::snapshot::decode(NAME, SNAPSHOT_VERSION, state)?;
        self.tenants.extend(
            tenants.into_iter().map(|(k, entries, order)| (k, TenantState { entries, order, watermark: None })),
        );
        Ok(())
    }

    fn forget(&mut self, tenant: &str) {
        self.tenants.remove(tenant);
    }
}

type TenantSnapshot<'a> = (&'a Arc<str>, &'a FastMap<u64, Entry>, &'a VecDeque<(u64, EventTime)>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{A, batch};

    fn alert<'a>(id: &'a str, t: i64, level: u8, ip: &'a str, log: &'a str) -> A<'a> {
        A { tenant: "acme", id, t, rule: 5710, level, host: "web-1", src_ip: Some(ip), log, ..A::default() }
    }

    fn dups(d: &mut Dedup, alerts: &[A<'_>]) -> Vec<bool> {
        let mut out = Vec::new();
        d.process(batch(alerts), &mut Context::default(), &mut out).unwrap();
        let Some(Output::Batch(b)) = out.pop() else { panic!("dedup emits its batch") };
        b.dedup.unwrap().duplicate
    }

    #[test]
    fn template_masks_numbers_ips_and_pids() {
        let mut a = String::new();
        let mut b = String::new();
        mask_template("May 11 12:29:18 host sshd[17584]: Invalid user paco from 172.17.1.1 port 56404", &mut a);
        mask_template("May 11 13:01:02 host sshd[99]: Invalid user paco from 10.0.0.7 port 22", &mut b);
        assert_eq!(a, b);
        assert_eq!(a, "May # #:#:# host sshd[#]: Invalid user paco from #.#.#.# port #");
        mask_template("héllo wörld 42", &mut a);
        assert_eq!(a, "héllo wörld #");
    }

    proptest::proptest! {
        /// The template is the text with each maximal run of ASCII letters
        /// and digits that holds a digit replaced by `#`, whatever else
        /// (punctuation, other scripts) surrounds it.
        #[test]
        fn a_template_masks_exactly_the_ascii_tokens_with_a_digit(log in "[a-z0-9 .:\\[\\]é日ß-]{0,40}") {
            let mut expected = String::new();
            let mut token = String::new();
            let flush = |token: &mut String, out: &mut String| {
                out.push_str(if token.bytes().any(|b| b.is_ascii_digit()) { "#" } else { token.as_str() });
                token.clear();
            };
            for ch in log.chars() {
                if ch.is_ascii_alphanumeric() {
                    token.push(ch);
                } else {
                    flush(&mut token, &mut expected);
                    expected.push(ch);
                }
            }
            flush(&mut token, &mut expected);
            let mut got = String::new();
            mask_template(&log, &mut got);
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn repeats_fold_within_the_window_only() {
        let mut d = Dedup::new(DedupConfig::default()).unwrap();
        let log = "sshd[1]: Invalid user x from 1.2.3.4 port 5";
        let r = dups(
            &mut d,
            &[
                alert("1", 1000, 5, "1.2.3.4", log),
                alert("2", 1010, 5, "1.2.3.4", "sshd[2]: Invalid user x from 1.2.3.4 port 6"),
                alert("3", 1000 + 299, 5, "1.2.3.4", log),
                alert("4", 1000 + 300, 5, "1.2.3.4", log), // window is 5 min from the first: new first
                alert("5", 1000 + 301, 5, "1.2.3.4", log),
            ],
        );
        assert_eq!(r, [false, true, true, false, true]);
    }

    #[test]
    fn higher_level_or_other_source_is_never_a_duplicate() {
        let mut d = Dedup::new(DedupConfig::default()).unwrap();
        let log = "GET /index.php 400";
        let r = dups(
            &mut d,
            &[
                alert("1", 1000, 5, "1.1.1.1", log),
                alert("2", 1001, 5, "2.2.2.2", log),
                alert("3", 1002, 12, "1.1.1.1", log),
            ],
        );
        assert_eq!(r, [false, false, false]);
    }

    #[test]
    fn tenants_never_share_fingerprints() {
        let mut d = Dedup::new(DedupConfig::default()).unwrap();
        let a = alert("1", 1000, 5, "1.1.1.1", "x");
        let b = A { tenant: "globex", ..alert("2", 1000, 5, "1.1.1.1", "x") };
        assert_eq!(dups(&mut d, &[a, b]), [false, false]);
    }

    #[test]
    fn state_is_bounded_and_evictions_counted() {
        let cfg = DedupConfig { max_entries_per_tenant: NonZeroUsize::new(2).unwrap(), ..DedupConfig::default() };
        let mut d = Dedup::new(cfg).unwrap();
        let mut ctx = Context::default();
        let logs = ["a", "b", "c", "d"];
        let alerts: Vec<A<'_>> =
            logs.iter().enumerate().map(|(i, l)| alert("x", 1000 + i as i64, 5, "1.1.1.1", l)).collect();
        d.process(batch(&alerts), &mut ctx, &mut Vec::new()).unwrap();
        assert_eq!(d.state_size("acme"), 2);
        assert_eq!(ctx.counters.total("dedup", "evicted"), 2);
    }

    #[test]
    fn watermark_expires_state_and_snapshot_round_trips() {
        let mut d = Dedup::new(DedupConfig::default()).unwrap();
        let mut ctx = Context::default();
        d.process(
            batch(&[alert("1", 1000, 5, "1.1.1.1", "a"), alert("2", 1200, 5, "1.1.1.1", "b")]),
            &mut ctx,
            &mut Vec::new(),
        )
        .unwrap();
        let snap = d.snapshot().unwrap();
        d.on_watermark(1_300_000, Tenants::All, &mut ctx, &mut Vec::new()).unwrap();
        assert_eq!(d.state_size("acme"), 1, "entry first seen at 1000 s expires at 1300 s");
        let mut restored = Dedup::new(DedupConfig::default()).unwrap();
        restored.restore(&snap).unwrap();
        assert_eq!(restored.state_size("acme"), 2);
        assert_eq!(dups(&mut restored, &[alert("3", 1001, 5, "1.1.1.1", "a")]), [true]);
        assert!(restored.restore(b"{not a snapshot").is_err());
    }
}
