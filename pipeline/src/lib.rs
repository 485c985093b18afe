//! Sluice's runtime: config, the sharded topology, watermarks, evaluation and
//! output formatting. The `sluice` binary (`main.rs`) is a thin CLI over it.

pub mod admin;
pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod fair;
pub mod intel;
pub mod metrics;
pub mod output;
pub mod policy;
pub mod preflight;
pub mod reload;
pub mod runtime;
pub mod sinks;
pub mod store;
pub mod watermark;

pub use config::Config;
pub use runtime::{CheckpointOptions, Event, RunError, RunOptions, Summary, run};
