//! Errors of the operators crate.
//!
//! Operators never fail a batch for one bad record (that record is
//! dead-lettered instead); an [`enum@Error`] here means the operator itself could
//! not go on: a bug, a corrupt snapshot or a schema mismatch.

use thiserror::Error;

/// Result alias used across the operators crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong inside an operator, and whose fault it is.
#[derive(Debug, Error)]
pub enum Error {
    /// A snapshot could not be read back: wrong version or corrupt bytes.
    /// Not retryable; start fresh or restore another checkpoint.
    #[error("cannot restore {operator} state: {reason}")]
    Restore { operator: &'static str, reason: String },
    /// A batch did not have the column an operator needs (internal bug).
    #[error("internal error in {operator}: column {column} missing or of the wrong type")]
    Schema { operator: &'static str, column: &'static str },
    /// Arrow refused to build or slice a batch (internal bug).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Invalid configuration (the user's to fix).
    #[error("invalid configuration: {0}")]
    Config(String),
}
