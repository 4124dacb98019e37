//! `cargo fuzz run envelope_decode`: see `checks::envelope_invariants` for what is checked.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::envelope_invariants(data));
