//! Sluice's alert schema, cluster model and pure stream operators.
//!
//! Everything here is synchronous and free of I/O: operators transform Arrow
//! batches of alerts and advance on event-time watermarks. The connectors
//! crate reads and writes; the pipeline crate wires operators into threads.
//!
//! The path of an alert: [`decode`] (raw JSON → Arrow, bad records to dead
//! letters) → [`dedup`] (repeats folded into counts) → [`correlate`]
//! (alerts sharing entities join one cluster; each cluster is scored by
//! [`score`] and judged by [`handoff`] as soon as it changes). Correlation
//! rules (the `sluice-rules` crate) sit between dedup and correlate and send
//! [`detection`]s down the same chain.

pub mod cluster;
pub mod correlate;
pub mod dead_letter;
pub mod decode;
pub mod dedup;
pub mod detection;
pub mod error;
pub mod handoff;
pub mod hash;
pub mod intel;
pub mod inventory;
pub mod mitre;
pub mod operator;
pub mod policy;
pub mod redact;
pub mod schema;
pub mod score;
pub mod snapshot;
pub mod time;

#[cfg(test)]
pub(crate) mod testkit;

pub use error::{Error, Result};
