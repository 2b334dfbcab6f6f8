#![no_main]
//! `cargo +nightly fuzz run manifest_verify`: see docs/fuzzing.md.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| certfab::fuzzing::manifest_verify(data));
