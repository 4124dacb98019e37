//! `dynamiq-sidecar convert`: the real binary converts files between Dynamiq runs and OTLP
//! (JSON, protobuf), through files and standard input/output, and fails clearly on bad input.

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_dynamiq-sidecar");
const FAILURE: &[u8] = include_bytes!("fixtures/workflow-node-failure.json");

fn convert(args: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(BIN)
        .arg("convert")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn runs_go_to_otlp_protobuf_and_come_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("runs.json");
    let pb = dir.path().join("spans.pb");
    std::fs::write(&input, FAILURE).unwrap();
    let (code, _, err) = convert(
        &[
            "--from",
            "dynamiq",
            "--to",
            "otlp-proto",
            input.to_str().unwrap(),
            pb.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("converted 6 of 6"), "{err}");
    let spans = std::fs::read(&pb).unwrap();
    let (code, runs, err) = convert(
        &["--from", "otlp-proto", "--to", "dynamiq", "-", "-"],
        &spans,
    );
    assert_eq!(code, 0, "{err}");
    let a: serde_json::Value = serde_json::from_slice(FAILURE).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&runs).unwrap();
    assert_eq!(a, b);
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let (code, out, err) = convert(
        &["--from", "otlp-json", "--to", "dynamiq", "-", "-"],
        FAILURE,
    );
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("use --from dynamiq"), "{err}");
    let (code, _, err) = convert(
        &[
            "--from",
            "dynamiq",
            "--to",
            "otlp-json",
            "/nonexistent/x",
            "-",
        ],
        b"",
    );
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent/x"), "{err}");
    let (code, _, err) = convert(&["--from", "yaml", "--to", "dynamiq", "-", "-"], b"");
    assert_eq!(code, 2, "clap rejects an unknown format: {err}");
}
