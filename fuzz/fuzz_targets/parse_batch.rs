//! `cargo fuzz run parse_batch`: see `checks::parse_batch_invariants` for what is checked.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::parse_batch_invariants(data));
