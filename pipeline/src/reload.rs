//! Reloading correlation rules while running: on SIGHUP, or when a file
//! under `rules.paths` changes (polled: edits, new files, removals,
//! renames; editors that write a temporary file and rename it too).
//!
//! A new rule set is loaded and planned in full first. If any rule is bad,
//! every problem is logged and the running rules stay; nothing is half
//! applied. A good set travels down the pipeline in order with the alerts
//! (like a checkpoint barrier), and each shard's rules stage takes it
//! without losing state: unchanged rules keep their windows, new and
//! changed ones start with the windows still open (see
//! [`sluice_rules::Reload`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use sluice_rules::{Reload, Rule};

use crate::config::RulesConfig;

/// How often rule files are checked for changes.
const POLL: Duration = Duration::from_millis(500);

/// A good rule set waiting to be sent down the pipeline.
pub type Pending = Arc<Mutex<Option<Arc<Reload>>>>;

/// Watches the rule files and SIGHUP; stops when dropped.
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
        let seen = fingerprint(&config.paths);
        let running = config.load().0;
        tracing::info!(paths = ?config.paths, "rules reload on SIGHUP or when a rule file changes");
        let hangup = Arc::new(AtomicBool::new(false));
        let signal = signal_hook::flag::register(signal_hook::consts::SIGHUP, hangup.clone())?;
        let pending: Pending = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (pending.clone(), stop.clone());
        let handle = std::thread::Builder::new().name("sluice-rules-watch".into()).spawn(move || {
            let (mut running, mut seen) = (running, seen);
            while !s.load(Ordering::Relaxed) {
                std::thread::park_timeout(POLL);
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let now = fingerprint(&config.paths);
                let why = if hangup.swap(false, Ordering::Relaxed) {
                    "SIGHUP"
                } else if now != seen {
                    "a rule file changed"
                } else {
                    continue;
                };
                seen = now;
                if let Some((rules, [added, removed, changed])) = check(&config, &extra_columns, &running, why) {
                    running = rules.clone();
                    *p.lock().expect("pending rules") = Some(Arc::new(Reload(rules)));
                    tracing::info!(
                        trigger = why,
                        rules = running.len(),
                        added = ?added,
                        removed = ?removed,
                        changed = ?changed,
                        "rules reloaded"
                    );
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

    /// The rule set to send down the pipeline next, if any.
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

/// Every rule file under `paths` with its size and modification time.
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<(u64, SystemTime)>)> {
    let mut files = Vec::new();
    for path in paths {
        match std::fs::read_dir(path) {
            Ok(entries) => files.extend(
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| sluice_rules::rule::Format::of(p).is_some()),
            ),
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
