//! certfab's integration tests, one module per area, in one test binary (as ripgrep keeps its
//! own): one link instead of one per file, and one test runner that keeps both cores busy from
//! the first test to the last instead of draining at the end of every file. The SoftHSM dev
//! line that most tests start from is built once per run and copied per test
//! (`common::Line::new`).
//!
//! `tests/hsm_recovery.rs` stays a binary of its own: its tests load PKCS#11 modules into the
//! test process itself, point them at their token through the process environment, finalize
//! one under open sessions and kill a remote token under another, which would pull the module
//! (or the environment) out from under any other in-process test.
//!
//! Run one area with `cargo test --test it AREA::` (e.g. `cargo test --test it station::`).

mod common;

mod audit;
mod audit_log;
mod batch;
mod batch_faults;
mod central_ledger;
mod cli_habits;
mod export_aws;
mod export_other;
mod fuzz_corpus;
mod hard_input;
mod house;
mod hsm_faults;
mod issue_flow;
mod lifecycle;
mod manifest;
mod policy_corpus;
mod process_guard;
mod spy;
mod station;
mod token_matrix;
mod wycheproof_p1363;
