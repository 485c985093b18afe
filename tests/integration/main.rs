//! Sluice's integration tests: one test binary, one module per concern.
//! Fixtures live in `tests/data/`.

mod checkpoints;
mod common;
mod differential;
mod golden;
mod late;
mod priors;
mod properties;
mod quality;
