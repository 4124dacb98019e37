//! `cargo fuzz run otlp_decode`: see `checks::otlp_decode_invariants` for what is checked.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::otlp_decode_invariants(data));
