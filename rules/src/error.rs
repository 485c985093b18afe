//! Errors of loading and running rules: each names the rule file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// A rule that cannot be loaded; every problem found is listed.
    #[error("rule {}: {}", origin.display(), problems.join("; "))]
    Invalid { origin: PathBuf, problems: Vec<String> },
    #[error("cannot read rules from {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// Two rules with one name: detections and metrics are keyed by it.
    #[error("rule name {name:?} is used by both {} and {}", first.display(), second.display())]
    Duplicate { name: String, first: PathBuf, second: PathBuf },
    /// A rule failed while running (a runtime SQL error, say).
    #[error("rule {rule}: {message}")]
    Eval { rule: String, message: String },
    #[error("rules state: {0}")]
    State(String),
}
