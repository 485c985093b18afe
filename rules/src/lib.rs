//! Correlation rules for detection engineers: SQL on DataFusion over each
//! tenant's windows of alerts.
//!
//! * [`rule`]: the rule file (TOML or YAML with the SQL inside, or `.sql`
//!   with a header) and its checks.
//! * [`sigma`]: Sigma correlation rules, compiled to the same SQL engine.
//! * [`engine`]: DataFusion, the `alerts` table and the JSON functions.
//! * [`operator`]: the pipeline stage that closes windows on event time and
//!   emits [`sluice_operators::detection::Detection`]s.
//! * [`library`]: the rules that ship with Sluice (`rules/library/`).
//!
//! Loading is strict and complete: every bad rule is reported, each with its
//! file and every problem found, before anything runs.

pub mod engine;
pub mod error;
pub mod library;
pub mod operator;
mod patterns;
pub mod rule;
pub mod sigma;
pub mod workbench;

use std::path::{Path, PathBuf};

pub use engine::{Compiled, Engine, Guard};
pub use error::RuleError;
pub use operator::{Reload, RuleStats, Rules};
pub use rule::{Limits, Rule};

/// Reads rule files: each path is a rule file (`.toml`, `.yaml`/`.yml`,
/// `.sql`) or a directory of them (not recursive, in name order). Every file is read; all failures are
/// returned together.
pub fn load_paths(paths: &[PathBuf], limits: Limits) -> Result<Vec<Rule>, Vec<RuleError>> {
    let (rules, errors) = read_paths(paths, limits);
    if errors.is_empty() { Ok(rules) } else { Err(errors) }
}

/// Every rule of `paths` that parsed, and every problem.
pub fn read_paths(paths: &[PathBuf], limits: Limits) -> (Vec<Rule>, Vec<RuleError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| rule::Format::of(p).is_some())
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(source) => errors.push(RuleError::Read { path: path.clone(), source }),
            }
        } else {
            files.push(path.clone());
        }
    }
    let mut rules = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => match rule::parse_file(&text, &file, limits) {
                Ok(parsed) => rules.extend(parsed),
                Err(e) => errors.push(e),
            },
            Err(source) => errors.push(RuleError::Read { path: file, source }),
        }
    }
    (rules, errors)
}

/// Plans every rule; refuses duplicate names. All failures are returned.
pub fn compile_all(engine: &Engine, rules: Vec<Rule>) -> Result<Vec<Compiled>, Vec<RuleError>> {
    let mut compiled: Vec<Compiled> = Vec::new();
    let mut errors = Vec::new();
    for rule in rules {
        if let Some(first) = compiled.iter().find(|c| c.rule.name == rule.name) {
            errors.push(RuleError::Duplicate {
                name: rule.name.clone(),
                first: first.rule.origin.clone(),
                second: rule.origin.clone(),
            });
            continue;
        }
        match engine.compile(rule) {
            Ok(c) => compiled.push(c),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(compiled) } else { Err(errors) }
}

/// The shipped library, then the files at `paths`: every rule that parsed,
/// and every problem (so that planning can report the SQL errors of the
/// good files alongside the bad ones).
pub fn load(builtin: bool, paths: &[PathBuf], limits: Limits) -> (Vec<Rule>, Vec<RuleError>) {
    let mut errors = Vec::new();
    let mut rules = if builtin {
        library::rules(limits).unwrap_or_else(|e| {
            errors.extend(e);
            Vec::new()
        })
    } else {
        Vec::new()
    };
    let (more, bad) = read_paths(paths, limits);
    rules.extend(more);
    errors.extend(bad);
    (rules, errors)
}

/// Where a shipped rule says it came from.
pub fn builtin_origin(file: &str) -> PathBuf {
    Path::new("builtin").join(file)
}
