//! The offline side of the store: reading its files back ([`summarize`] for `buffer inspect`,
//! [`replay`] for `buffer replay-dead-letters`), tolerating a torn last line.

use super::*;

/// One parsed line.
#[derive(Debug, Deserialize)]
struct Line<'a> {
    #[serde(default)]
    dead_lettered_at: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(borrow, default)]
    run: Option<&'a RawValue>,
    #[serde(default)]
    run_raw: Option<String>,
    #[serde(default)]
    client_key: Option<String>,
}

impl Line<'_> {
    fn run_bytes(&self) -> Option<Vec<u8>> {
        match (self.run, &self.run_raw) {
            (Some(raw), _) if raw.get() != "null" => Some(raw.get().as_bytes().to_vec()),
            (_, Some(text)) => Some(text.as_bytes().to_vec()),
            _ => None,
        }
    }
}

/// A file's parsed lines plus the damage found.
struct Parsed<'a> {
    lines: Vec<Line<'a>>,
    torn_last: bool,
    damaged_at: Vec<usize>,
}

fn parse(text: &[u8]) -> Parsed<'_> {
    let mut out = Parsed {
        lines: Vec::new(),
        torn_last: false,
        damaged_at: Vec::new(),
    };
    let pieces: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let last = pieces.len().saturating_sub(1);
    for (i, piece) in pieces.iter().enumerate() {
        if piece.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Line<'_>>(piece) {
            Ok(line) => out.lines.push(line),
            // The last piece has no newline after it: a write cut short by a crash.
            Err(_) if i == last => out.torn_last = true,
            Err(_) => out.damaged_at.push(i + 1),
        }
    }
    out
}

/// Counts the dead-letter files, runs and bytes in `dir` (by reason and status). Never reads
/// out or returns client keys. A missing directory is an empty summary.
pub fn summarize(dir: &Path) -> Result<DeadLetterSummary, DeadLetterError> {
    let mut s = DeadLetterSummary::default();
    for path in list_files(dir)? {
        let text = std::fs::read(&path).map_err(io(&path))?;
        s.files += 1;
        s.bytes += text.len() as u64;
        let parsed = parse(&text);
        s.damaged_lines += parsed.damaged_at.len() as u64 + u64::from(parsed.torn_last);
        for line in &parsed.lines {
            s.runs += 1;
            *s.by_reason
                .entry(line.reason.clone().unwrap_or_else(|| "unknown".into()))
                .or_default() += 1;
            if let Some(status) = line.status {
                *s.by_status.entry(status).or_default() += 1;
            }
            if let Some(at) = &line.dead_lettered_at {
                if s.oldest.as_ref().is_none_or(|o| at < o) {
                    s.oldest = Some(at.clone());
                }
                if s.newest.as_ref().is_none_or(|n| at > n) {
                    s.newest = Some(at.clone());
                }
            }
        }
    }
    Ok(s)
}

/// Re-appends every dead-lettered run in `dir` to `buffer` (client keys restored in the
/// envelope), oldest file first, removing each file once all its runs were appended. Run it while
/// the sidecar is stopped (`dynamiq-sidecar buffer replay-dead-letters`).
pub async fn replay(dir: &Path, buffer: &Buffer) -> Result<ReplayReport, DeadLetterError> {
    replay_with(dir, |payloads| async move {
        buffer
            .append(payloads)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
}

/// [`replay`] with any append function (the seam the tests use).
pub async fn replay_with<F, Fut>(dir: &Path, mut append: F) -> Result<ReplayReport, DeadLetterError>
where
    F: FnMut(Vec<Bytes>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut report = ReplayReport::default();
    for path in list_files(dir)? {
        let text = std::fs::read(&path).map_err(io(&path))?;
        let parsed = parse(&text);
        if let Some(&line) = parsed.damaged_at.first() {
            return Err(DeadLetterError::Corrupt { path, line });
        }
        report.torn_lines += u64::from(parsed.torn_last);
        let payloads: Vec<Bytes> = parsed
            .lines
            .iter()
            .filter_map(|l| {
                l.run_bytes()
                    .map(|run| envelope::encode_run(&run, l.client_key.as_deref()))
            })
            .collect();
        let runs = payloads.len() as u64;
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        for payload in payloads {
            if !chunk.is_empty()
                && (chunk.len() >= REPLAY_CHUNK_RUNS
                    || chunk_bytes + payload.len() > REPLAY_CHUNK_BYTES)
            {
                append(std::mem::take(&mut chunk))
                    .await
                    .map_err(|message| DeadLetterError::Append {
                        path: path.clone(),
                        message,
                    })?;
                chunk_bytes = 0;
            }
            chunk_bytes += payload.len();
            chunk.push(payload);
        }
        if !chunk.is_empty() {
            append(chunk)
                .await
                .map_err(|message| DeadLetterError::Append {
                    path: path.clone(),
                    message,
                })?;
        }
        std::fs::remove_file(&path).map_err(io(&path))?;
        sync_dir(dir)?;
        report.files += 1;
        report.runs += runs;
    }
    Ok(report)
}
