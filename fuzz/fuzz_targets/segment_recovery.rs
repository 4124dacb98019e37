//! `cargo fuzz run segment_recovery`: see `checks::segment_recovery_invariants` for what is checked.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::segment_recovery_invariants(data));
