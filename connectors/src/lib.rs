//! Sluice's connectors: where alerts come from and where results go.
//!
//! Sources ([`source::Source`]) produce chunks of raw records with their
//! positions; they run on their own threads and may block. This crate holds
//! the file source (with `tail -F` following), the synthetic Wazuh
//! [`generator`] and its source, and NDJSON writers for case files, dead
//! letters and late records.

pub mod file;
pub mod generator;
pub mod kafka;
pub mod ndjson;
pub mod opensearch;
pub mod source;
pub mod synthetic;
