//! Generated run batches for integration tests: unique, valid runs with recognisable ids.

use serde_json::{Value, json};

/// A valid run with this id (trace `trace`), as a JSON value.
pub fn run(id: &str, trace: &str) -> Value {
    json!({
        "id": id,
        "name": format!("node {id}"),
        "type": "node",
        "trace_id": trace,
        "source_id": "source-1",
        "session_id": "session-1",
        "start_time": "2026-11-24T08:15:38.271234+00:00",
        "end_time": "2026-11-24T08:15:38.776932+00:00",
        "parent_run_id": null,
        "status": "succeeded",
        "input": {"text": "x".repeat(200)},
        "output": {"ok": true},
        "metadata": {"n": 1.50},
        "error": null,
        "executions": [],
        "tags": ["test"]
    })
}

/// A batch of `n` runs with ids `{prefix}-{i}`.
pub fn batch(prefix: &str, n: usize) -> Value {
    let runs: Vec<Value> = (0..n)
        .map(|i| run(&format!("{prefix}-{i}"), prefix))
        .collect();
    json!({ "runs": runs })
}

/// The ids of a batch's runs.
pub fn ids(batch: &Value) -> Vec<String> {
    batch["runs"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .filter_map(|r| r["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
