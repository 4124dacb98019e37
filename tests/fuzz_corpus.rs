//! Replays the kept fuzz corpora (`fuzz/corpus/*`) through the same invariants the `cargo fuzz`
//! targets check, so every input the fuzzers found interesting stays a regression test in the
//! normal suite, without cargo-fuzz or a nightly toolchain.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

fn replay(target: &str, check: fn(&[u8])) {
    for (name, data) in corpus(target) {
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("corpus input {name} breaks an invariant");
        }
    }
}

/// Scenario: every kept parser input. Guarantees: no panic, accepted runs are verbatim slices.
#[test]
fn the_parse_batch_corpus_holds_its_invariants() {
    replay("parse_batch", checks::parse_batch_invariants);
}

/// Scenario: every kept envelope input. Guarantees: no panic, encode/decode round-trips.
#[test]
fn the_envelope_corpus_holds_its_invariants() {
    replay("envelope_decode", checks::envelope_invariants);
}

/// Scenario: every kept segment file. Guarantees: recovery never fails on contents and the
/// buffer keeps working after it.
#[test]
fn the_segment_recovery_corpus_holds_its_invariants() {
    replay("segment_recovery", checks::segment_recovery_invariants);
}

/// Scenario: every kept OTLP input (the real fixtures first). Guarantees: no panic in either
/// decoder; every span converted or rejected; every run valid.
#[test]
fn the_otlp_decode_corpus_holds_its_invariants() {
    replay("otlp_decode", checks::otlp_decode_invariants);
}

/// Scenario: every kept run → span input. Guarantees: no panic, the one-pass read equals the
/// two-step read, every run is converted or reported.
#[test]
fn the_run_to_span_corpus_holds_its_invariants() {
    replay("run_to_span", checks::run_to_span_invariants);
}
