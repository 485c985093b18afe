//! `[policy]`: per-tenant overrides, in the config and, for large fleets,
//! one file per tenant in a directory.
//!
//! ```toml
//! [policy]
//! dir = "/etc/sluice/tenants.d"      # acme.toml, globex.toml, …
//!
//! [policy.tenants.initech]
//! escalate_threshold = 80
//! dedup_window = "15m"
//! rules = ["ssh-brute-force-then-success", "new-admin-account"]
//! entity_windows = { host = "2h" }
//! weight = 2                          # its share of a busy shard
//! fields = { "data.custom.owner" = "owner" }   # extra columns, this tenant only
//!
//! [policy.tenants.initech.budget]    # the same keys as [sinks.budget]
//! cases_per_hour = 10
//! ```
//!
//! A file `<tenant>.toml` holds the same keys as a `[policy.tenants.<tenant>]`
//! table (its name is the tenant). A tenant may be in the config or in a
//! file, not both. Every file is read and checked in full; any problem
//! refuses the whole set, naming the file and the key. At start that stops
//! the run; while running, the set in force stays (see [`crate::reload`]).
//! Thresholds, dedup and entity windows, enabled rules and `enabled` apply to the
//! running pipeline on SIGHUP or a file change, without losing state;
//! budgets and extra fields apply from the next start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_operators::cluster::EntityKind;
use sluice_operators::correlate::EntityWindows;
use sluice_operators::handoff::HandoffConfig;
pub use sluice_operators::policy::{Policies, TenantPolicy};

use crate::reload::{Update, Watcher};
use crate::sinks::BudgetLimits;

/// `[policy]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// A directory of `<tenant>.toml` files, one tenant each.
    pub dir: Option<PathBuf>,
    /// Tenants' overrides in the config itself.
    pub tenants: BTreeMap<String, TenantPolicyConfig>,
}

/// One tenant's overrides: `[policy.tenants.<name>]`, or a file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TenantPolicyConfig {
    /// `false`: the tenant's alerts are counted (`sluice_tenant_disabled_records_total`)
    /// and set aside: not correlated, nothing handed off.
    pub enabled: Option<bool>,
    pub escalate_threshold: Option<f64>,
    pub review_threshold: Option<f64>,
    pub update_score_delta: Option<f64>,
    pub dedup_window: Option<sluice_operators::time::Duration>,
    /// Correlation rules (by name) that run for this tenant; absent: all.
    pub rules: Option<Vec<String>>,
    /// `correlate.windows` lengths for this tenant (`host = "2h"`).
    pub entity_windows: BTreeMap<EntityKind, sluice_operators::time::Duration>,
    /// Its hand-off budgets (as `[sinks.budget.tenants.<name>]`, which
    /// this replaces).
    pub budget: Option<BudgetLimits>,
    /// Its share of a busy shard relative to other tenants (default 1;
    /// see "Fair scheduling" in the README).
    pub weight: Option<u32>,
    /// Extra decoded columns for this tenant, as `[decode.fields]` (JSON
    /// path → column name); applied at start.
    pub fields: BTreeMap<String, String>,
}

impl TenantPolicyConfig {
    fn policy(&self) -> TenantPolicy {
        TenantPolicy {
            enabled: self.enabled,
            escalate_threshold: self.escalate_threshold,
            review_threshold: self.review_threshold,
            update_score_delta: self.update_score_delta,
            dedup_window: self.dedup_window,
            rules: self.rules.clone(),
            entity_windows: self.entity_windows.clone(),
            weight: self.weight,
        }
    }
}

impl PolicyConfig {
    pub fn is_empty(&self) -> bool {
        self.dir.is_none() && self.tenants.is_empty()
    }

    /// Every tenant's overrides, from the config and the directory.
    pub fn tenants(&self) -> Result<BTreeMap<String, TenantPolicyConfig>, Vec<String>> {
        let mut all = self.tenants.clone();
        let mut problems = Vec::new();
        if let Some(dir) = &self.dir {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) => return Err(vec![format!("policy.dir {}: {e}", dir.display())]),
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            for path in files {
                let Some(tenant) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
                match std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|text| toml::from_str::<TenantPolicyConfig>(&text).map_err(|e| e.to_string()))
                {
                    Ok(_) if all.contains_key(&tenant) => {
                        problems.push(format!(
                            "{}: tenant {tenant:?} is also in [policy.tenants.{tenant}]: keep one",
                            path.display()
                        ));
                    }
                    Ok(p) => {
                        all.insert(tenant, p);
                    }
                    Err(e) => problems.push(format!("{}: {}", path.display(), e.trim_end())),
                }
            }
        }
        if problems.is_empty() { Ok(all) } else { Err(problems) }
    }

    /// The operators' view, checked against the global settings.
    pub fn load(&self, handoff: &HandoffConfig, windows: &EntityWindows) -> Result<Policies, Vec<String>> {
        let tenants = self.tenants()?;
        let policies = Policies::new(tenants.iter().map(|(t, p)| (t.clone(), p.policy())).collect());
        let errors = policies.validate(handoff, windows, "policy.tenants");
        if errors.is_empty() { Ok(policies) } else { Err(errors) }
    }

    /// Every problem, naming the file or key.
    pub fn validate(&self, handoff: &HandoffConfig, windows: &EntityWindows) -> Vec<String> {
        if self.is_empty() {
            return Vec::new();
        }
        self.load(handoff, windows).err().unwrap_or_default()
    }

    /// The files to watch.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dir.iter().cloned().collect()
    }
}

/// Loads the policies now and starts their watcher (when a directory is
/// configured). `Ok(None)` when there is no policy at all.
pub fn start(
    config: &PolicyConfig,
    handoff: &HandoffConfig,
    windows: &EntityWindows,
) -> Result<Option<(Update, Option<Watcher>)>, sluice_operators::Error> {
    if config.is_empty() {
        return Ok(None);
    }
    let watcher = if config.dir.is_some() {
        Watcher::policy(config.clone(), handoff.clone(), windows.clone())
            .inspect_err(
                |e| tracing::warn!(error = %e, "policy will not reload while running (SIGHUP or file watch failed)"),
            )
            .ok()
    } else {
        None
    };
    let policies = config.load(handoff, windows).map_err(|problems| {
        sluice_operators::Error::Config(format!("{} policy problem(s):\n  {}", problems.len(), problems.join("\n  ")))
    })?;
    tracing::info!(tenants = policies.tenants().count(), "per-tenant policy loaded");
    Ok(Some((Arc::new(Arc::new(policies)), watcher)))
}

/// Whether `p` is a policy file.
pub fn is_policy_file(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "toml")
}
