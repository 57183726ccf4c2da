//! Reviewing snapshots before they serve: [`diff`] tells who gains and who
//! loses which operations between two snapshots (a plan for access, run on
//! every change of the snapshot), and [`policy_test`] checks expected
//! decisions written in YAML against a snapshot. docs/review.md describes
//! both, their output formats and exit codes.

pub mod access;
pub mod diff;
pub mod patterns;
pub mod policy_test;
