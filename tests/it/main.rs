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
//!
//! The ledger areas (issue_flow, batch, station, lifecycle, manifest, audit, audit_log) run
//! their ledger tests on both engines: each test is the SQLite run, and the module's
//! `postgres_twins!` list runs the same function again as `AREA::postgres::NAME`, every line
//! it makes on a database of its own in one PostgreSQL cluster per test process
//! (`common::pg::shared`). Tests read and edit the ledger through `Line::ledger_query` /
//! `ledger_exec`, never a driver of their own. `CERTFAB_TEST_LEDGER=postgres` puts every
//! line of a whole run on PostgreSQL.

mod common;

mod audit;
mod audit_log;
mod audit_memory;
mod batch;
mod batch_faults;
mod central_ledger;
mod cli_habits;
mod export_aws;
mod export_memory;
mod export_other;
mod fuzz_corpus;
mod hard_input;
mod house;
mod hsm_faults;
mod issue_flow;
mod lifecycle;
mod manifest;
mod manifest_stream;
mod pg_bench;
mod pg_station;
mod policy_corpus;
mod process_guard;
mod spy;
mod station;
mod token_matrix;
mod wycheproof_p1363;
