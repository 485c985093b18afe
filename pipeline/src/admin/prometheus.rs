//! `/metrics`: the live metrics in Prometheus' text exposition format
//! (version 0.0.4).
//!
//! Per-tenant series are bounded: the `max_tenant_series` tenants with the
//! most alerts keep their own `tenant` label, the rest are summed under
//! `tenant="_other"`, so a fleet of thousands of tenants cannot blow up the
//! scraper. The list of metrics and their meaning is in the README.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::metrics::Metrics;
use crate::store::OutboxCounts;

/// The label every tenant beyond the bound is counted under.
pub const OTHER_TENANTS: &str = "_other";

/// Triage latency histogram buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Renders every metric. `outbox` is the store's outbox by sink and status,
/// when there is a store.
pub fn render(metrics: &Metrics, outbox: Option<&OutboxCounts>, max_tenant_series: usize) -> String {
    let counters = metrics.counters();
    let per_tenant = metrics.tenant_events();
    let set_aside: BTreeMap<&str, u64> = per_tenant.iter().map(|(t, e)| (t.as_str(), e.disabled)).collect();
    let labels = TenantLabels::new(&counters, &set_aside, max_tenant_series);
    let mut out = Exposition::default();

    out.family("sluice_uptime_seconds", "gauge", "Seconds since the process started.");
    out.sample("sluice_uptime_seconds", &[], metrics.uptime().as_secs_f64());

    out.family("sluice_source_records_read_total", "counter", "Records read from the source, good or bad.");
    out.sample("sluice_source_records_read_total", &[], metrics.read.load(Ordering::Relaxed) as f64);
    out.family(
        "sluice_source_lag_records",
        "gauge",
        "Records behind the newest available per source input (Kafka: high watermark minus next offset).",
    );
    for ((source, partition), lag) in metrics.lag() {
        out.sample("sluice_source_lag_records", &[("source", &source), ("partition", &partition)], lag as f64);
    }
    out.family(
        "sluice_source_lag_seconds",
        "gauge",
        "Seconds of event time between the newest record available and the newest read, per source input (OpenSearch).",
    );
    for ((source, partition), secs) in metrics.lag_seconds() {
        out.sample("sluice_source_lag_seconds", &[("source", &source), ("partition", &partition)], secs);
    }
    out.family(
        "sluice_partition_handovers_total",
        "counter",
        "Kafka partitions that left (released) or arrived (acquired) with their state on a rebalance.",
    );
    let h = &metrics.handovers;
    for (direction, n) in [("released", &h.released), ("acquired", &h.acquired)] {
        out.sample("sluice_partition_handovers_total", &[("direction", direction)], n.load(Ordering::Relaxed) as f64);
    }
    out.family(
        "sluice_partition_handover_seconds_total",
        "counter",
        "Seconds reading stood still while partitions' state was saved or loaded on rebalances.",
    );
    out.sample("sluice_partition_handover_seconds_total", &[], h.paused_us.load(Ordering::Relaxed) as f64 / 1e6);
    out.family("sluice_dead_letters_total", "counter", "Records Sluice could not take, by reason.");
    for (reason, n) in metrics.dead_letters() {
        out.sample("sluice_dead_letters_total", &[("reason", reason)], n as f64);
    }

    // Operators: records in, out and dropped by reason; everything else
    // they count as events.
    let mut in_ = BTreeMap::<(&str, &str), u64>::new();
    let mut out_ = BTreeMap::<(&str, &str), u64>::new();
    let mut dropped = BTreeMap::<(&str, &str, &str), u64>::new();
    let mut events = BTreeMap::<(&str, &str, &str), u64>::new();
    for ((op, metric, tenant), n) in &counters.0 {
        let t = labels.get(tenant);
        match (*op, *metric) {
            ("dedup", "records_in") => *in_.entry((op, t)).or_default() += n,
            ("dedup", "passed") | ("correlate", "clustered") => *out_.entry((op, t)).or_default() += n,
            ("dedup", "duplicates") => *dropped.entry((op, "duplicate", t)).or_default() += n,
            ("correlate", "unclustered") => *dropped.entry((op, "unclustered", t)).or_default() += n,
            _ => *events.entry((op, metric, t)).or_default() += n,
        }
        if *op == "correlate" && matches!(*metric, "clustered" | "unclustered") {
            *in_.entry((op, t)).or_default() += n;
        }
    }
    out.family("sluice_operator_records_in_total", "counter", "Alerts into an operator, per tenant.");
    for ((op, t), n) in &in_ {
        out.sample("sluice_operator_records_in_total", &[("operator", op), ("tenant", t)], *n as f64);
    }
    out.family("sluice_operator_records_out_total", "counter", "Alerts an operator passed on, per tenant.");
    for ((op, t), n) in &out_ {
        out.sample("sluice_operator_records_out_total", &[("operator", op), ("tenant", t)], *n as f64);
    }
    out.family(
        "sluice_operator_records_dropped_total",
        "counter",
        "Alerts an operator did not pass on, by reason (duplicate: folded into an earlier alert; unclustered: joined no cluster).",
    );
    for ((op, reason, t), n) in &dropped {
        out.sample(
            "sluice_operator_records_dropped_total",
            &[("operator", op), ("reason", reason), ("tenant", t)],
            *n as f64,
        );
    }
    out.family(
        "sluice_operator_events_total",
        "counter",
        "What operators did: clusters created, merged, escalated, closed, evicted, expired, detections…",
    );
    for ((op, event, t), n) in &events {
        out.sample("sluice_operator_events_total", &[("operator", op), ("event", event), ("tenant", t)], *n as f64);
    }
    out.family(
        "sluice_operator_state_entries",
        "gauge",
        "Live state per operator and tenant (clusters, entities, dedup fingerprints, rule window rows).",
    );
    let mut state = BTreeMap::<(&str, &str, &str), u64>::new();
    let sizes = metrics.state_sizes();
    for ((op, what, tenant), n) in &sizes {
        *state.entry((op, what, labels.get(tenant))).or_default() += n;
    }
    for ((op, what, t), n) in &state {
        out.sample("sluice_operator_state_entries", &[("operator", op), ("state", what), ("tenant", t)], *n as f64);
    }

    // What reached the caller, per tenant.
    let mut tenant_events = BTreeMap::<(&str, &str), u64>::new();
    for (tenant, e) in &per_tenant {
        let t = labels.get(tenant);
        for (kind, n) in [("escalate", e.escalated), ("update", e.updates), ("close", e.closed)] {
            *tenant_events.entry((kind, t)).or_default() += n;
        }
    }
    out.family("sluice_reports_total", "counter", "Cluster reports handed over, by kind (escalate, update, close).");
    for ((kind, t), n) in &tenant_events {
        out.sample("sluice_reports_total", &[("kind", kind), ("tenant", t)], *n as f64);
    }
    out.family("sluice_late_records_total", "counter", "Records behind the watermark, kept out of correlation.");
    let mut late = BTreeMap::<&str, u64>::new();
    for (tenant, e) in &per_tenant {
        *late.entry(labels.get(tenant)).or_default() += e.late;
    }
    for (t, n) in &late {
        out.sample("sluice_late_records_total", &[("tenant", t)], *n as f64);
    }

    out.family(
        "sluice_tenant_disabled_records_total",
        "counter",
        "Alerts set aside because the tenant's policy disables it (policy.tenants.<name>.enabled = false).",
    );
    let mut disabled = BTreeMap::<&str, u64>::new();
    for (tenant, e) in &per_tenant {
        if e.disabled > 0 {
            *disabled.entry(labels.get(tenant)).or_default() += e.disabled;
        }
    }
    for (t, n) in &disabled {
        out.sample("sluice_tenant_disabled_records_total", &[("tenant", t)], *n as f64);
    }

    // Fair scheduling, per tenant (see fair.rs).
    let mut backlog = BTreeMap::<&str, (u64, bool, f64)>::new();
    let report = metrics.backlog.report();
    for r in &report {
        let e = backlog.entry(labels.get(&r.tenant)).or_default();
        e.0 += r.in_flight;
        e.1 |= r.held;
        e.2 += r.held_secs;
    }
    out.family("sluice_tenant_in_flight_records", "gauge", "The tenant's alerts read or routed and not yet processed.");
    for (t, (in_flight, ..)) in &backlog {
        out.sample("sluice_tenant_in_flight_records", &[("tenant", t)], *in_flight as f64);
    }
    out.family(
        "sluice_tenant_held_back",
        "gauge",
        "1 while fair scheduling holds the tenant back: more than runtime.tenant_backlog of its alerts are in flight, or runtime.contended_backlog while it is heavy and others send too (with a Kafka topic per tenant, its records wait in the source).",
    );
    for (t, (_, held, _)) in &backlog {
        out.sample("sluice_tenant_held_back", &[("tenant", t)], if *held { 1.0 } else { 0.0 });
    }
    out.family("sluice_tenant_held_back_seconds_total", "counter", "Seconds the tenant has been held back in all.");
    for (t, (.., secs)) in &backlog {
        out.sample("sluice_tenant_held_back_seconds_total", &[("tenant", t)], *secs);
    }

    // Threat intel and inventories in force.
    let intel = metrics.intel();
    let mut iocs = BTreeMap::<(&str, &str), usize>::new();
    let mut inventory = BTreeMap::<(&str, &str), usize>::new();
    if let Some((counts, _)) = &intel {
        for (scope, kind, n) in &counts.iocs {
            let t = scope.as_deref().map_or("_global", |t| labels.get(t));
            *iocs.entry((t, kind)).or_default() += n;
        }
        for (tenant, kind, n) in &counts.inventory {
            *inventory.entry((labels.get(tenant), kind)).or_default() += n;
        }
    }
    out.family(
        "sluice_intel_iocs",
        "gauge",
        "IOCs loaded and in force, by kind; tenant=\"_global\" for the IOCs of every tenant.",
    );
    for ((t, kind), n) in &iocs {
        out.sample("sluice_intel_iocs", &[("tenant", t), ("kind", kind)], *n as f64);
    }
    out.family("sluice_inventory_entries", "gauge", "Inventory entries in force per tenant, by kind.");
    for ((t, kind), n) in &inventory {
        out.sample("sluice_inventory_entries", &[("tenant", t), ("kind", kind)], *n as f64);
    }
    out.family(
        "sluice_intel_loaded_timestamp_seconds",
        "gauge",
        "When the threat intel and inventories in force were loaded (Unix time).",
    );
    if let Some((_, loaded_us)) = &intel {
        out.sample("sluice_intel_loaded_timestamp_seconds", &[], *loaded_us as f64 / 1e6);
    }

    // Sinks.
    out.family("sluice_sink_deliveries_total", "counter", "Hand-off attempts per sink, by outcome.");
    out.family("sluice_sink_llm_tokens_total", "counter", "LLM tokens used, as the sink's responses report them.");
    let sinks = metrics.sinks();
    for (name, s) in &sinks {
        for (outcome, c) in [
            ("attempt", &s.attempts),
            ("delivered", &s.delivered),
            ("retry", &s.retries),
            ("parked", &s.parked),
            ("deferred", &s.deferred),
        ] {
            out.sample(
                "sluice_sink_deliveries_total",
                &[("sink", name), ("outcome", outcome)],
                c.load(Ordering::Relaxed) as f64,
            );
        }
        out.sample("sluice_sink_llm_tokens_total", &[("sink", name)], s.llm_tokens.load(Ordering::Relaxed) as f64);
    }
    out.family("sluice_sink_queue", "gauge", "Cases in the store's outbox per sink and status.");
    if let Some(outbox) = outbox {
        for (sink, status, n) in &outbox.rows {
            out.sample("sluice_sink_queue", &[("sink", sink), ("status", status)], *n as f64);
        }
    }

    // Triage latency: from the first record of a hand-off's trigger being
    // read to the hand-off being acknowledged.
    let h = metrics.latency();
    out.family(
        "sluice_triage_latency_seconds",
        "histogram",
        "From reading an alert to handing off the case it triggered.",
    );
    for le in LATENCY_BUCKETS {
        let n = h.count_between(0, (le * 1e6) as u64);
        out.sample_le("sluice_triage_latency_seconds_bucket", &fmt_le(le), n as f64);
    }
    out.sample_le("sluice_triage_latency_seconds_bucket", "+Inf", h.len() as f64);
    out.sample("sluice_triage_latency_seconds_sum", &[], h.mean() * h.len() as f64 / 1e6);
    out.sample("sluice_triage_latency_seconds_count", &[], h.len() as f64);

    let (reloads, last_refused) = crate::reload::outcomes();
    out.family(
        "sluice_config_reloads_total",
        "counter",
        "Reloads of rules, intel and per-tenant policy while running, applied or refused (a refused set leaves the one in force).",
    );
    for ((what, outcome), n) in &reloads {
        out.sample("sluice_config_reloads_total", &[("what", what), ("outcome", outcome)], *n as f64);
    }
    out.family(
        "sluice_config_reload_refused",
        "gauge",
        "1 while the last reload attempt of rules, intel or policy was refused (the files on disk are not the ones in force).",
    );
    for (what, refused) in &last_refused {
        out.sample("sluice_config_reload_refused", &[("what", what)], if *refused { 1.0 } else { 0.0 });
    }

    out.family(
        "sluice_tenant_triage_latency_seconds",
        "histogram",
        "Triage latency per tenant (tenants beyond admin.max_tenant_series under _other).",
    );
    let mut per_label: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let tenant_latency = metrics.tenant_latency();
    for (tenant, h) in &tenant_latency {
        let counts = per_label.entry(labels.get(tenant)).or_insert_with(|| vec![0; LATENCY_BUCKETS.len() + 1]);
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            counts[i] += h.count_between(0, (le * 1e6) as u64);
        }
        counts[LATENCY_BUCKETS.len()] += h.len();
    }
    for (t, counts) in &per_label {
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            out.sample(
                "sluice_tenant_triage_latency_seconds_bucket",
                &[("tenant", t), ("le", &fmt_le(*le))],
                counts[i] as f64,
            );
        }
        let total = counts[LATENCY_BUCKETS.len()] as f64;
        out.sample("sluice_tenant_triage_latency_seconds_bucket", &[("tenant", t), ("le", "+Inf")], total);
        out.sample("sluice_tenant_triage_latency_seconds_count", &[("tenant", t)], total);
    }

    out.family("sluice_component_ready", "gauge", "1 when the component is ready (see /ready).");
    for (name, c) in metrics.components() {
        let ready = c.state == crate::metrics::ComponentState::Ready;
        out.sample("sluice_component_ready", &[("component", &name)], if ready { 1.0 } else { 0.0 });
    }
    out.text
}

fn fmt_le(le: f64) -> String {
    format!("{le}")
}

/// Which tenants keep their own label.
struct TenantLabels {
    own: HashMap<String, ()>,
}

impl TenantLabels {
    /// Ranks tenants by their alerts: processed, or set aside (disabled).
    fn new(counters: &sluice_operators::operator::Counters, set_aside: &BTreeMap<&str, u64>, max: usize) -> Self {
        let mut alerts = set_aside.clone();
        for ((op, metric, tenant), n) in &counters.0 {
            let entry = alerts.entry(tenant.as_ref()).or_default();
            if *op == "dedup" && *metric == "records_in" {
                *entry += n;
            }
        }
        let mut ranked: Vec<(&str, u64)> = alerts.into_iter().collect();
        // Most alerts first, then by name: the same tenants keep their label
        // from one scrape to the next.
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        Self { own: ranked.into_iter().take(max).map(|(t, _)| (t.to_string(), ())).collect() }
    }

    fn get<'a>(&self, tenant: &'a str) -> &'a str {
        if self.own.contains_key(tenant) { tenant } else { OTHER_TENANTS }
    }
}

/// A text exposition being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn sample_le(&mut self, name: &str, le: &str, value: f64) {
        self.sample(name, &[("le", le)], value);
    }
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_operators::operator::Counters;

    use super::*;

    #[test]
    fn partition_handovers_are_counted_by_direction_with_their_pause() {
        let metrics = Metrics::default();
        metrics.handovers.record(true, 2, std::time::Duration::from_millis(1500));
        metrics.handovers.record(false, 3, std::time::Duration::from_millis(500));
        metrics.handovers.record(false, 1, std::time::Duration::from_millis(250));
        let text = render(&metrics, None, 10);
        assert!(text.contains("sluice_partition_handovers_total{direction=\"released\"} 2\n"), "{text}");
        assert!(text.contains("sluice_partition_handovers_total{direction=\"acquired\"} 4\n"), "{text}");
        assert!(text.contains("sluice_partition_handover_seconds_total 2.25\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::default();
        e.sample("m", &[("tenant", "a\"b\\c\nd")], 1.0);
        assert_eq!(e.text, "m{tenant=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn tenants_beyond_the_bound_share_one_label() {
        let mut c = Counters::default();
        for (t, n) in [("big", 100), ("mid", 50), ("small", 1), ("tiny", 1)] {
            c.add("dedup", "records_in", &Arc::from(t), n);
        }
        let labels = TenantLabels::new(&c, &BTreeMap::new(), 2);
        assert_eq!(labels.get("big"), "big");
        assert_eq!(labels.get("mid"), "mid");
        assert_eq!(labels.get("small"), OTHER_TENANTS);
        assert_eq!(labels.get("tiny"), OTHER_TENANTS);
        assert_eq!(labels.get("never-seen"), OTHER_TENANTS);
    }

    #[test]
    fn intel_in_force_is_counted_per_scope_and_kind() {
        use sluice_operators::intel::{Intel, TenantIntel};
        let metrics = Metrics::default();
        let text = render(&metrics, None, 100);
        assert!(text.contains("# TYPE sluice_intel_iocs gauge\n") && !text.contains("sluice_intel_iocs{"), "{text}");
        let mut intel = Intel::default();
        intel.global.load_plain("feed.txt", "203.0.113.7\n198.51.100.1\nevil.example\n", None).unwrap();
        let mut acme = TenantIntel::default();
        acme.iocs.load_plain("acme.txt", "c2.example\n", None).unwrap();
        acme.inventory
            .load_json("acme.json", r#"{"scanners": ["10.0.0.5"], "privileged_users": ["root", "admin"]}"#)
            .unwrap();
        intel.tenants.insert("acme".into(), acme);
        let mut c = Counters::default();
        c.add("dedup", "records_in", &Arc::from("acme"), 1);
        metrics.publish_shard(0, &c, &[], &[]);
        metrics.set_intel(&intel);
        let text = render(&metrics, None, 100);
        for line in [
            "sluice_intel_iocs{tenant=\"_global\",kind=\"ip\"} 2\n",
            "sluice_intel_iocs{tenant=\"_global\",kind=\"domain\"} 1\n",
            "sluice_intel_iocs{tenant=\"acme\",kind=\"domain\"} 1\n",
            "sluice_intel_iocs{tenant=\"acme\",kind=\"ip\"} 0\n",
            "sluice_inventory_entries{tenant=\"acme\",kind=\"privileged_user\"} 2\n",
            "sluice_inventory_entries{tenant=\"acme\",kind=\"scanner\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.contains("sluice_intel_loaded_timestamp_seconds 1"), "{text}");
    }

    #[test]
    fn a_held_back_tenant_is_shown_and_the_others_are_not() {
        let metrics = Metrics::default();
        metrics.backlog.configure(Some(crate::fair::Limits { alone: 100, contended: 100 }));
        let (flood, quiet): (Arc<str>, Arc<str>) = ("flood".into(), "quiet".into());
        let mut c = Counters::default();
        c.add("dedup", "records_in", &flood, 1000);
        c.add("dedup", "records_in", &quiet, 10);
        metrics.publish_shard(0, &c, &[], &[]);
        metrics.backlog.entered(&flood, 500);
        metrics.backlog.entered(&quiet, 5);
        let text = render(&metrics, None, 100);
        assert!(text.contains("sluice_tenant_held_back{tenant=\"flood\"} 1\n"), "{text}");
        assert!(text.contains("sluice_tenant_held_back{tenant=\"quiet\"} 0\n"), "{text}");
        assert!(text.contains("sluice_tenant_in_flight_records{tenant=\"flood\"} 500\n"), "{text}");
        metrics.backlog.left("flood", 500);
        let text = render(&metrics, None, 100);
        assert!(text.contains("sluice_tenant_held_back{tenant=\"flood\"} 0\n"), "{text}");
        assert!(
            !text.contains("sluice_tenant_held_back_seconds_total{tenant=\"flood\"} 0\n"),
            "some time held: {text}"
        );
    }
}
