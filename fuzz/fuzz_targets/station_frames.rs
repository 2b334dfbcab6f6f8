#![no_main]
//! `cargo +nightly fuzz run station_frames`: see docs/fuzzing.md.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| certfab::fuzzing::station_frames(data));
