//! The offline `buffer` tools behind the CLI: `inspect`, `export`, `replay-dead-letters`.
//!
//! Guarantees: `inspect` and `export` only read (no lock, nothing modified), so they are safe
//! next to a running sidecar; `replay-dead-letters` takes the buffer's lock, so it refuses to
//! run while the sidecar does. No tool prints a client key: export prints only the run JSON of
//! each record's envelope.

use std::io::Write;

use prometheus_client::registry::Registry;
use serde_json::json;

use crate::app::DYNAMIQ_CONSUMER;
use crate::app::config::Config;
use crate::buffer::{self, Buffer};
use crate::deadletter;
use crate::model::envelope;
use crate::state_dir::dead_letter_dir;

/// A tool failure, printed as `error: ...` with exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(String);

impl ToolError {
    /// An error with this message.
    pub fn from_message(message: String) -> Self {
        Self(message)
    }
}

fn err(e: impl std::fmt::Display) -> ToolError {
    ToolError(e.to_string())
}

fn ms_to_rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// `buffer inspect`: a summary of segments, cursors, corruption and dead letters.
pub fn inspect(config: &Config, as_json: bool, out: &mut dyn Write) -> Result<(), ToolError> {
    let path = &config.buffer.path;
    if !path.exists() {
        return Err(ToolError(format!(
            "no buffer at {} (buffer.path)",
            path.display()
        )));
    }
    let mut report = buffer::inspect(path).map_err(err)?;
    // A consumer that never acknowledged anything has no cursor file yet: everything is pending.
    if !report.consumers.iter().any(|c| c.name == DYNAMIQ_CONSUMER) {
        report.consumers.push(buffer::ConsumerReport {
            name: DYNAMIQ_CONSUMER.to_string(),
            acked_through: None,
            pending_records: report.records,
            error: None,
        });
    }
    let dead_dir = dead_letter_dir(path);
    let dead = deadletter::summarize(&dead_dir).unwrap_or_default();
    let value = json!({
        "path": report.path.display().to_string(),
        "bytes": report.bytes,
        "max_bytes": config.buffer.max_bytes,
        "records": report.records,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "oldest_record": report.oldest_record_ms.map(ms_to_rfc3339),
        "newest_record": report.newest_record_ms.map(ms_to_rfc3339),
        "corrupt_records": report.corrupt_records,
        "corrupt_bytes": report.corrupt_bytes,
        "torn_tail_bytes": report.torn_tail_bytes,
        "segments": report.segments.iter().map(|s| json!({
            "file": s.path.file_name().map(|n| n.to_string_lossy().to_string()),
            "bytes": s.bytes,
            "records": s.records,
            "first_seq": s.first_seq,
            "last_seq": s.last_seq,
            "corrupt_regions": s.corrupt_regions,
        })).collect::<Vec<_>>(),
        "consumers": report.consumers.iter().map(|c| json!({
            "name": c.name,
            "acked_through": c.acked_through,
            "pending_records": c.pending_records,
            "error": c.error,
        })).collect::<Vec<_>>(),
        "dead_letters": {
            "files": dead.files,
            "runs": dead.runs,
            "bytes": dead.bytes,
            "by_reason": dead.by_reason,
            "by_status": dead.by_status,
            "oldest": dead.oldest,
        },
        "ignored_files": report.ignored_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    });
    if as_json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&value).map_err(err)?
        )
        .map_err(err)?;
        return Ok(());
    }
    let mut text = format!(
        "buffer {}\n  {} records in {} segment(s), {} of {} bytes used\n",
        report.path.display(),
        report.records,
        report.segments.len(),
        report.bytes,
        config.buffer.max_bytes
    );
    if let (Some(first), Some(last)) = (report.first_seq, report.last_seq) {
        text.push_str(&format!("  sequence numbers {first}..={last}\n"));
    }
    if let Some(ms) = report.oldest_record_ms {
        text.push_str(&format!("  oldest record appended {}\n", ms_to_rfc3339(ms)));
    }
    for c in &report.consumers {
        match (&c.acked_through, &c.error) {
            (Some(a), _) => text.push_str(&format!(
                "  consumer {}: acknowledged through {a}, {} pending\n",
                c.name, c.pending_records
            )),
            (None, Some(e)) => text.push_str(&format!(
                "  consumer {}: cursor unreadable ({e}); {} pending\n",
                c.name, c.pending_records
            )),
            (None, None) => text.push_str(&format!(
                "  consumer {}: {} pending\n",
                c.name, c.pending_records
            )),
        }
    }
    if report.corrupt_records > 0 || report.torn_tail_bytes > 0 {
        text.push_str(&format!(
            "  corrupt: {} record(s), {} bytes; torn tail {} bytes\n",
            report.corrupt_records, report.corrupt_bytes, report.torn_tail_bytes
        ));
    }
    text.push_str(&format!(
        "  dead letters: {} run(s) in {} file(s)",
        dead.runs, dead.files
    ));
    if !dead.by_status.is_empty() {
        let statuses: Vec<String> = dead
            .by_status
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        text.push_str(&format!(" (by collector status {})", statuses.join(", ")));
    }
    text.push('\n');
    out.write_all(text.as_bytes()).map_err(err)
}

/// `buffer export`: the runs not yet delivered to the collector, as `{"runs":[...]}`.
pub fn export(config: &Config, out: &mut dyn Write) -> Result<u64, ToolError> {
    let records = buffer::export(&config.buffer.path, Some(DYNAMIQ_CONSUMER)).map_err(err)?;
    let mut count = 0u64;
    out.write_all(b"{\"runs\":[").map_err(err)?;
    for record in records {
        let record = record.map_err(err)?;
        let Ok(env) = envelope::decode(&record.payload) else {
            continue;
        };
        if count > 0 {
            out.write_all(b",").map_err(err)?;
        }
        out.write_all(&env.run).map_err(err)?;
        count += 1;
    }
    out.write_all(b"]}\n").map_err(err)?;
    Ok(count)
}

/// `buffer replay-dead-letters`: appends every dead-lettered run to the buffer again.
pub async fn replay_dead_letters(config: &Config) -> Result<deadletter::ReplayReport, ToolError> {
    let mut registry = Registry::default();
    let (buffer, _) =
        Buffer::open(&config.buffer, &[DYNAMIQ_CONSUMER], &mut registry).map_err(|e| {
            ToolError(format!(
                "{e} (stop the sidecar before replaying dead letters)"
            ))
        })?;
    let dir = dead_letter_dir(&config.buffer.path);
    let result = if dir.exists() {
        deadletter::replay(&dir, &buffer).await.map_err(err)
    } else {
        Ok(deadletter::ReplayReport::default())
    };
    buffer.close().await.map_err(err)?;
    result
}
