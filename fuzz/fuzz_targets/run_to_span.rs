//! `cargo fuzz run run_to_span`: see `checks::run_to_span_invariants` for what is checked.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::run_to_span_invariants(data));
