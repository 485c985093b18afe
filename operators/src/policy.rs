//! Per-tenant policy: what one tenant does differently from the global
//! settings. An MSSP tunes tenants apart: a noisy customer gets a higher
//! escalation threshold, a sensitive one a lower, one a longer dedup
//! window, one only some correlation rules, and one is switched off at once.
//!
//! Operators receive a whole [`Policies`] set as an update (an
//! `Arc<Policies>`, see `Operator::reconfigure`) and swap it in; their
//! state is untouched. A tenant without an entry follows the global
//! settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cluster::EntityKind;
use crate::correlate::EntityWindows;
use crate::handoff::HandoffConfig;
use crate::time::Duration;

/// One tenant's overrides; every field absent means "the global setting".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantPolicy {
    /// `false`: the tenant's alerts are counted and set aside (not
    /// correlated, nothing handed off) until it is enabled again.
    pub enabled: Option<bool>,
    /// `handoff.escalate_threshold` for this tenant.
    pub escalate_threshold: Option<f64>,
    /// `handoff.review_threshold` for this tenant.
    pub review_threshold: Option<f64>,
    /// `handoff.update_score_delta` for this tenant.
    pub update_score_delta: Option<f64>,
    /// `dedup.window` for this tenant.
    pub dedup_window: Option<Duration>,
    /// The correlation rules (by name) that run for this tenant; absent:
    /// every rule whose own scope includes it.
    pub rules: Option<Vec<String>>,
    /// `correlate.windows` lengths for this tenant, by entity kind
    /// (`host = "2h"`); only kinds that have a global window.
    pub entity_windows: BTreeMap<EntityKind, Duration>,
    /// Its share of a busy shard relative to other tenants (default 1).
    pub weight: Option<u32>,
}

/// Every tenant's policy, by tenant name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policies {
    tenants: BTreeMap<String, TenantPolicy>,
}

impl Policies {
    pub fn new(tenants: BTreeMap<String, TenantPolicy>) -> Self {
        Self { tenants }
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    pub fn get(&self, tenant: &str) -> Option<&TenantPolicy> {
        self.tenants.get(tenant)
    }

    pub fn tenants(&self) -> impl Iterator<Item = (&String, &TenantPolicy)> {
        self.tenants.iter()
    }

    /// The tenant's scheduling weight: its share of a busy shard.
    pub fn weight(&self, tenant: &str) -> u32 {
        self.get(tenant).and_then(|p| p.weight).unwrap_or(1).max(1)
    }

    /// Whether the tenant's alerts are processed.
    pub fn enabled(&self, tenant: &str) -> bool {
        self.get(tenant).and_then(|p| p.enabled).unwrap_or(true)
    }

    /// The hand-off settings for a tenant: `base` with its overrides.
    pub fn handoff(&self, base: &HandoffConfig, tenant: &str) -> HandoffConfig {
        let mut h = base.clone();
        if let Some(p) = self.get(tenant) {
            if let Some(v) = p.escalate_threshold {
                h.escalate_threshold = v;
            }
            if let Some(v) = p.review_threshold {
                h.review_threshold = v;
            }
            if let Some(v) = p.update_score_delta {
                h.update_score_delta = v;
            }
        }
        h
    }

    /// The dedup window for a tenant, in ms.
    pub fn dedup_window_ms(&self, base: Duration, tenant: &str) -> i64 {
        self.get(tenant).and_then(|p| p.dedup_window).unwrap_or(base).millis()
    }

    /// Whether the correlation rule `rule` runs for `tenant`.
    pub fn rule_enabled(&self, tenant: &str, rule: &str) -> bool {
        match self.get(tenant).and_then(|p| p.rules.as_ref()) {
            Some(list) => list.iter().any(|r| r == rule),
            None => true,
        }
    }

    /// Every problem, naming `<origin>.<tenant>.<key>`, with the global
    /// hand-off settings and entity windows the overrides apply to.
    pub fn validate(&self, base: &HandoffConfig, windows: &EntityWindows, origin: &str) -> Vec<String> {
        let mut errors = Vec::new();
        for (tenant, p) in &self.tenants {
            let key = |k: &str| format!("{origin}.{tenant}.{k}");
            for (name, v) in [
                ("escalate_threshold", p.escalate_threshold),
                ("review_threshold", p.review_threshold),
                ("update_score_delta", p.update_score_delta),
            ] {
                if let Some(v) = v
                    && (!v.is_finite() || v < 0.0)
                {
                    errors.push(format!("{} = {v} must be a finite number >= 0", key(name)));
                }
            }
            let h = self.handoff(base, tenant);
            if h.review_threshold > h.escalate_threshold {
                errors.push(format!(
                    "{}: review_threshold {} is above escalate_threshold {} (with the global settings)",
                    key(""),
                    h.review_threshold,
                    h.escalate_threshold
                ));
            }
            if let Some(w) = p.dedup_window
                && w.millis() <= 0
            {
                errors.push(format!("{} must be positive", key("dedup_window")));
            }
            if let Some(w) = p.weight
                && !(1..=1000).contains(&w)
            {
                errors.push(format!("{} = {w} must be between 1 and 1000", key("weight")));
            }
            for (kind, w) in &p.entity_windows {
                if windows.get(*kind).is_none() {
                    errors.push(format!(
                        "{}: {kind} has no window in correlate.windows, so it never links; only lengths change per tenant",
                        key("entity_windows")
                    ));
                } else if w.millis() <= 0 {
                    errors.push(format!("{}.{kind} must be positive", key("entity_windows")));
                }
            }
            if p.rules.as_ref().is_some_and(|r| r.iter().any(|n| n.trim().is_empty())) {
                errors.push(format!("{} has an empty rule name", key("rules")));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> Policies {
        let mut t = BTreeMap::new();
        t.insert(
            "acme".to_string(),
            TenantPolicy {
                escalate_threshold: Some(90.0),
                dedup_window: Some(Duration(600_000)),
                rules: Some(vec!["brute-force".into()]),
                ..TenantPolicy::default()
            },
        );
        t.insert("globex".to_string(), TenantPolicy { enabled: Some(false), ..TenantPolicy::default() });
        Policies::new(t)
    }

    #[test]
    fn a_tenant_gets_its_overrides_and_the_others_the_global_settings() {
        let p = policies();
        let base = HandoffConfig::default();
        assert_eq!(p.handoff(&base, "acme").escalate_threshold, 90.0);
        assert_eq!(p.handoff(&base, "acme").review_threshold, base.review_threshold);
        assert_eq!(p.handoff(&base, "initech"), base);
        assert_eq!(p.dedup_window_ms(Duration(300_000), "acme"), 600_000);
        assert_eq!(p.dedup_window_ms(Duration(300_000), "globex"), 300_000);
        assert!(p.rule_enabled("acme", "brute-force") && !p.rule_enabled("acme", "webshell"));
        assert!(p.rule_enabled("globex", "webshell"));
        assert!(!p.enabled("globex") && p.enabled("acme") && p.enabled("initech"));
    }

    #[test]
    fn bad_overrides_are_named() {
        let mut t = BTreeMap::new();
        t.insert(
            "acme".to_string(),
            TenantPolicy { review_threshold: Some(99.0), dedup_window: Some(Duration(0)), ..TenantPolicy::default() },
        );
        let errors = Policies::new(t).validate(&HandoffConfig::default(), &EntityWindows::default(), "tenants");
        assert!(errors.iter().any(|e| e.contains("tenants.acme.") && e.contains("review_threshold 99")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("tenants.acme.dedup_window")), "{errors:?}");
    }
}
