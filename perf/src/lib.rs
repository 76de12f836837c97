//! Ferrite's benchmarks: shared table, JSON and SVG output for `results/`.
#![forbid(unsafe_code)]

pub mod kill;
pub mod report;
