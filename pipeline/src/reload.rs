//! Reloading correlation rules, threat intel and inventories while
//! running: on SIGHUP, or when a file under `rules.paths` or of `[intel]`
//! changes (polled: edits, new files, removals, renames; editors that write
//! a temporary file and rename it too). Each has its own [`Watcher`].
//!
//! A new rule set is loaded and planned in full first. If any rule is bad,
//! every problem is logged and the running rules stay; nothing is half
//! applied. A good set travels down the pipeline in order with the alerts
//! (like a checkpoint barrier), and each shard's rules stage takes it
//! without losing state: unchanged rules keep their windows, new and
//! changed ones start with the windows still open (see
//! [`sluice_rules::Reload`]).
//!
//! Threat intel and inventories ([`Watcher::intel`]) are the same: every
//! file is read and checked in full; a bad one is refused with its reason
//! (file, line, why) and the set in force stays. A good set is swapped in
//! whole by the correlate operator, which keeps its clusters and looks
//! their entities up again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use sluice_rules::{Reload, Rule};

use crate::config::RulesConfig;
use crate::intel::IntelConfig;
use crate::policy::{PolicyConfig, is_policy_file};
use sluice_operators::correlate::EntityWindows;
use sluice_operators::handoff::HandoffConfig;

/// How often rule files are checked for changes.
const POLL: Duration = Duration::from_millis(500);

/// Reload outcomes in this process: `(what, outcome) → count`, and whether
/// the last attempt of each `what` was refused. Process-wide, as reloads
/// are (shown in `/metrics` as `sluice_config_reloads_total` and
/// `sluice_config_reload_refused`).
static OUTCOMES: Mutex<ReloadCounts> = Mutex::new(BTreeMap::new());
static LAST_REFUSED: Mutex<BTreeMap<&'static str, bool>> = Mutex::new(BTreeMap::new());

/// `(what, outcome) → count`.
pub type ReloadCounts = BTreeMap<(&'static str, &'static str), u64>;

/// Counts a reload of `what` (`rules`, `intel`, `policy`): `refused` when
/// the watcher refuses a set, `applied` when the pipeline's source sends a
/// good one down, in order with the alerts (from then on it is in force).
pub fn record(what: &'static str, applied: bool) {
    let outcome = if applied { "applied" } else { "refused" };
    *OUTCOMES.lock().unwrap_or_else(|e| e.into_inner()).entry((what, outcome)).or_default() += 1;
    LAST_REFUSED.lock().unwrap_or_else(|e| e.into_inner()).insert(what, !applied);
}

/// Reload counts so far, and whether each kind's last attempt was refused.
pub fn outcomes() -> (ReloadCounts, BTreeMap<&'static str, bool>) {
    (
        OUTCOMES.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        LAST_REFUSED.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    )
}

/// An operator update (see `Operator::reconfigure`).
pub type Update = Arc<dyn std::any::Any + Send + Sync>;

/// A good set (rules, or intel) waiting to be sent down the pipeline.
pub type Pending = Arc<Mutex<Option<Update>>>;

/// Watches files and SIGHUP; stops when dropped.
#[derive(Debug)]
pub struct Watcher {
    pending: Pending,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    signal: signal_hook::SigId,
}

impl Watcher {
    /// Starts watching, before the pipeline loads its rules: a change from
    /// here on is seen.
    pub fn start(config: RulesConfig, extra_columns: Vec<String>) -> std::io::Result<Watcher> {
        let is_rule = |p: &Path| sluice_rules::rule::Format::of(p).is_some();
        // The files as they are before the running set is read: a change
        // from here on is seen.
        let seen = fingerprint(&config.paths, is_rule);
        let mut running = config.load().0;
        let paths = config.paths.clone();
        let watcher = Self::spawn("rules", "a rule file changed", paths.clone(), is_rule, seen, move |why| {
            let (rules, [added, removed, changed]) = check(&config, &extra_columns, &running, why)?;
            running = rules.clone();
            tracing::info!(
                trigger = why,
                rules = running.len(),
                added = ?added,
                removed = ?removed,
                changed = ?changed,
                "rules reloaded"
            );
            Some(Arc::new(Reload(rules)))
        })?;
        tracing::info!(paths = ?paths, "rules reload on SIGHUP or when a rule file changes");
        Ok(watcher)
    }

    /// Watches the files of `[intel]`; a good set is an `Arc<Intel>` update.
    /// Start it before loading the set in force, so a change from there on
    /// is seen.
    pub fn intel(config: IntelConfig) -> std::io::Result<Watcher> {
        let paths = config.paths();
        let seen = fingerprint(&paths, |_| true);
        let watcher = Self::spawn(
            "intel",
            "an intel file changed",
            paths.clone(),
            |_| true,
            seen,
            move |why| match config.load() {
                Ok((intel, report)) => {
                    tracing::info!(trigger = why, files = %report.join("; "), "intel reloaded: {}", intel.describe());
                    Some(Arc::new(Arc::new(intel)))
                }
                Err(problems) => {
                    record("intel", false);
                    tracing::error!(
                        trigger = why,
                        "intel not reloaded, the set in force stays: {} problem(s): {}",
                        problems.len(),
                        problems.join(" | ")
                    );
                    None
                }
            },
        )?;
        tracing::info!(files = paths.len(), "intel reloads on SIGHUP or when an intel or inventory file changes");
        Ok(watcher)
    }

    /// Watches `[policy] dir`; a good set is an `Arc<Policies>` update.
    /// Start it before loading the policy in force, so a change from there
    /// on is seen.
    pub fn policy(config: PolicyConfig, handoff: HandoffConfig, windows: EntityWindows) -> std::io::Result<Watcher> {
        let seen = fingerprint(&config.paths(), is_policy_file);
        let dir = config.dir.clone();
        let watcher = Self::spawn(
            "policy",
            "a policy file changed",
            config.paths(),
            is_policy_file,
            seen,
            move |why| match config.load(&handoff, &windows) {
                Ok(policies) => {
                    tracing::info!(trigger = why, tenants = policies.tenants().count(), "policy reloaded");
                    Some(Arc::new(Arc::new(policies)))
                }
                Err(problems) => {
                    record("policy", false);
                    tracing::error!(
                        trigger = why,
                        "policy not reloaded, the policy in force stays: {} problem(s): {}",
                        problems.len(),
                        problems.join(" | ")
                    );
                    None
                }
            },
        )?;
        tracing::info!(dir = ?dir, "per-tenant policy reloads on SIGHUP or when a policy file changes");
        Ok(watcher)
    }

    /// Polls the files under `paths` (in directories, those `keep` picks)
    /// and SIGHUP; on either, `check` says what to send, if anything.
    /// `seen` is the files' fingerprint taken before the set in force was
    /// read, so that nothing changed since goes unnoticed.
    fn spawn(
        what: &'static str,
        changed: &'static str,
        paths: Vec<PathBuf>,
        keep: fn(&Path) -> bool,
        seen: Fingerprint,
        mut check: impl FnMut(&str) -> Option<Update> + Send + 'static,
    ) -> std::io::Result<Watcher> {
        let hangup = Arc::new(AtomicBool::new(false));
        let signal = signal_hook::flag::register(signal_hook::consts::SIGHUP, hangup.clone())?;
        let pending: Pending = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (pending.clone(), stop.clone());
        let handle = std::thread::Builder::new().name(format!("sluice-{what}-watch")).spawn(move || {
            let mut seen = seen;
            while !s.load(Ordering::Relaxed) {
                std::thread::park_timeout(POLL);
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let now = fingerprint(&paths, keep);
                let why = if hangup.swap(false, Ordering::Relaxed) {
                    "SIGHUP"
                } else if now != seen {
                    changed
                } else {
                    continue;
                };
                seen = now;
                if let Some(update) = check(why) {
                    *p.lock().expect("pending update") = Some(update);
                }
            }
        });
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                signal_hook::low_level::unregister(signal);
                return Err(e);
            }
        };
        Ok(Watcher { pending, stop, handle: Some(handle), signal })
    }

    /// The set to send down the pipeline next, if any.
    pub fn pending(&self) -> Pending {
        self.pending.clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        signal_hook::low_level::unregister(self.signal);
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

/// Loads and plans the configured rules: the new set with the names of the
/// rules added, removed and changed, or `None` (every problem logged, or
/// nothing changed) to keep the running rules.
fn check(
    config: &RulesConfig,
    extra_columns: &[String],
    running: &[Rule],
    why: &str,
) -> Option<(Vec<Rule>, [Vec<String>; 3])> {
    let (rules, mut problems) = config.load();
    if problems.is_empty() {
        match sluice_rules::Engine::new(extra_columns) {
            Ok(engine) => {
                if let Err(errors) = sluice_rules::compile_all(&engine, rules.clone()) {
                    problems.extend(errors.iter().map(ToString::to_string));
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        record("rules", false);
        tracing::error!(
            trigger = why,
            "rules not reloaded, the running rules stay: {} problem(s): {}",
            problems.len(),
            problems.join(" | ")
        );
        return None;
    }
    let names = |list: &[Rule], pick: &dyn Fn(&Rule) -> bool| -> Vec<String> {
        list.iter().filter(|r| pick(r)).map(|r| r.name.clone()).collect()
    };
    let added = names(&rules, &|r| !running.iter().any(|o| o.name == r.name));
    let removed = names(running, &|o| !rules.iter().any(|r| r.name == o.name));
    let changed = names(&rules, &|r| running.iter().any(|o| o.name == r.name && o != r));
    if added.is_empty() && removed.is_empty() && changed.is_empty() {
        tracing::info!(trigger = why, rules = rules.len(), "rules unchanged");
        return None;
    }
    Some((rules, [added, removed, changed]))
}

/// Files with their size and modification time (`None`: missing).
type Fingerprint = Vec<(PathBuf, Option<(u64, SystemTime)>)>;

/// Every file under `paths` (in directories, those `keep` picks) with its
/// size and modification time.
fn fingerprint(paths: &[PathBuf], keep: fn(&Path) -> bool) -> Fingerprint {
    let mut files = Vec::new();
    for path in paths {
        match std::fs::read_dir(path) {
            Ok(entries) => files.extend(entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| keep(p))),
            Err(_) => files.push(path.clone()),
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok().and_then(|m| Some((m.len(), m.modified().ok()?)));
            (f, meta)
        })
        .collect()
}
