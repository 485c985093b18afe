//! Helpers shared by the pipeline's integration tests.

#![allow(dead_code)]

pub mod cli;
pub mod http;
