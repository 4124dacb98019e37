//! Parsing and validation of a Dynamiq run batch (`{"runs": [...]}`) without rebuilding it.
//!
//! Owns: the collector's validation rules (docs/http-contract.md §3). Guarantees:
//! - Each accepted run is kept as the exact bytes the client sent ([`RawRun::json`]), so unknown
//!   fields, key order, big integers and float spellings reach the collector unchanged.
//! - Only the fields the sidecar needs are read, borrowed from the body (no tree is built, no
//!   string is copied unless it contains escapes).
//! - A batch is valid as a whole or rejected as a whole; the error lists every bad field as
//!   `runs[i].field → problem`, up to [`MAX_DETAILS`] entries.
//! - Hostile input fails cleanly: nesting deeper than serde_json's recursion limit (128), invalid
//!   UTF-8 and truncated JSON are errors, never panics or unbounded recursion.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::json_scan::{Scan, scan};

/// Most per-field problems reported in one error (the rest are summarised).
pub const MAX_DETAILS: usize = 50;

/// Deepest nesting of arrays/objects accepted in a body. serde_json skips unread values
/// without a depth limit, so the sidecar checks it itself: 128 is serde_json's own recursion
/// limit, so every later stage (query API, conversion) can parse what was accepted.
pub const MAX_DEPTH: usize = 128;

/// The run types the collector accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunType {
    /// A whole workflow (usually the root).
    Workflow,
    /// A flow inside a workflow.
    Flow,
    /// A node (LLM, tool, agent, ...).
    Node,
}

impl RunType {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "workflow" => Some(Self::Workflow),
            "flow" => Some(Self::Flow),
            "node" => Some(Self::Node),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Workflow => "workflow",
            Self::Flow => "flow",
            Self::Node => "node",
        }
    }
}

/// The statuses the collector accepts (`null` is `None` on [`RawRun::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Not executed.
    Skipped,
    /// Stopped before it finished.
    Canceled,
}

impl RunStatus {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "skipped" => Some(Self::Skipped),
            "canceled" => Some(Self::Canceled),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Canceled => "canceled",
        }
    }
}

/// One validated run: its bytes as received and the fields the sidecar reads.
#[derive(Debug, Clone)]
pub struct RawRun<'a> {
    /// The run's JSON exactly as the client sent it.
    pub json: &'a str,
    /// `id`.
    pub id: Cow<'a, str>,
    /// `name`.
    pub name: Cow<'a, str>,
    /// `type`.
    pub run_type: RunType,
    /// `trace_id`.
    pub trace_id: Cow<'a, str>,
    /// `source_id`.
    pub source_id: Cow<'a, str>,
    /// `session_id`, when present and a string.
    pub session_id: Option<Cow<'a, str>>,
    /// `parent_run_id`, when present and a string.
    pub parent_run_id: Option<Cow<'a, str>>,
    /// `start_time`.
    pub start_time: OffsetDateTime,
    /// `end_time` (`None` for `null`: a run that never ended).
    pub end_time: Option<OffsetDateTime>,
    /// `status` (`None` for `null`).
    pub status: Option<RunStatus>,
}

/// A validated batch, borrowing from the request body.
#[derive(Debug, Clone)]
pub struct RunBatch<'a> {
    /// The runs, in the order sent.
    pub runs: Vec<RawRun<'a>>,
}

/// Why a batch was rejected. Rendered as the collector's 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    /// One sentence for humans.
    pub message: String,
    /// `runs[3].start_time` → what is wrong with it.
    pub details: BTreeMap<String, String>,
}

impl ValidationError {
    fn whole(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            details: BTreeMap::new(),
        }
    }
}

/// The top level of a JSON body, read in one pass: which kind of body it is and, for a
/// Dynamiq batch, its runs split into raw values.
#[derive(Deserialize)]
struct TopLevel<'a> {
    #[serde(borrow, default, deserialize_with = "runs_present")]
    runs: Option<RunsField<'a>>,
    #[serde(
        rename = "resourceSpans",
        default,
        deserialize_with = "ignored_present"
    )]
    resource_spans: Option<()>,
    #[serde(
        rename = "resource_spans",
        default,
        deserialize_with = "ignored_present"
    )]
    resource_spans_snake: Option<()>,
}

/// The value of `runs`: split into raw runs when it is an array (their syntax checked, their
/// bytes borrowed), otherwise skipped (still checked) and only remembered as "not an array".
enum RunsField<'a> {
    Array(Vec<&'a RawValue>),
    NotArray,
}

impl<'de: 'a, 'a> Deserialize<'de> for RunsField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RunsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for RunsVisitor<'a> {
            type Value = RunsField<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut runs = Vec::with_capacity(seq.size_hint().unwrap_or(8).min(1024));
                while let Some(run) = seq.next_element::<&'a RawValue>()? {
                    runs.push(run);
                }
                Ok(RunsField::Array(runs))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(RunsField::NotArray)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(RunsField::NotArray)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(RunsField::NotArray)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(RunsField::NotArray)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(RunsField::NotArray)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(RunsField::NotArray)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(RunsField::NotArray)
            }
        }
        d.deserialize_any(RunsVisitor(std::marker::PhantomData))
    }
}

/// What a JSON body posted to `/v1/traces` is, told by its top-level key (docs/http-contract.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonBodyKind {
    /// `{"runs": ...}`: a Dynamiq batch.
    DynamiqRuns,
    /// `{"resourceSpans": ...}`: OTLP/JSON.
    OtlpJson,
}

/// A JSON body posted to `/v1/traces`, classified and, when it is a Dynamiq batch, validated.
#[derive(Debug, Clone)]
pub enum JsonBody<'a> {
    /// A valid Dynamiq batch.
    Runs(RunBatch<'a>),
    /// OTLP/JSON (checked to be JSON; its content is the OTLP decoder's to judge).
    OtlpJson,
}

/// Tells a Dynamiq body from an OTLP/JSON body, or explains why it is neither.
pub fn classify_json_body(body: &[u8]) -> Result<JsonBodyKind, ValidationError> {
    kind_of_body(&parse_top(body)?)
}

/// Classifies a JSON body and validates it when it is a Dynamiq batch, reading it once (one
/// depth scan, one parse): what the HTTP receiver calls for every JSON request.
pub fn parse_json_body(body: &[u8]) -> Result<JsonBody<'_>, ValidationError> {
    let top = parse_top(body)?;
    match kind_of_body(&top)? {
        JsonBodyKind::OtlpJson => Ok(JsonBody::OtlpJson),
        JsonBodyKind::DynamiqRuns => validate_runs(top.runs).map(JsonBody::Runs),
    }
}

fn kind_of_body(top: &TopLevel<'_>) -> Result<JsonBodyKind, ValidationError> {
    match (top.runs.is_some(), top.resource_spans.is_some()) {
        (true, false) => Ok(JsonBodyKind::DynamiqRuns),
        (false, true) => Ok(JsonBodyKind::OtlpJson),
        (true, true) => Err(ValidationError::whole(
            "body has both `runs` and `resourceSpans`; send one kind per request",
        )),
        (false, false) if top.resource_spans_snake.is_some() => Err(ValidationError::whole(
            "OTLP/JSON field names are lowerCamelCase: use `resourceSpans`, not `resource_spans`",
        )),
        (false, false) => Err(ValidationError::whole(
            "body must be a JSON object with a `runs` array (Dynamiq) or `resourceSpans` (OTLP/JSON)",
        )),
    }
}

/// The one pass: nesting depth and surrogates first (serde_json skips unread values without
/// a depth limit), then the parse that checks the syntax of everything and splits `runs`.
fn parse_top(body: &[u8]) -> Result<TopLevel<'_>, ValidationError> {
    check_depth(body)?;
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ValidationError::whole(
                "body must be a JSON object with a `runs` array (Dynamiq) or `resourceSpans` (OTLP/JSON)",
            )
        } else {
            ValidationError::whole(format!("invalid JSON: {e}"))
        }
    })
}

/// Parses and validates a Dynamiq batch (`{"runs": [...]}`; other top-level keys are
/// ignored).
pub fn parse_batch(body: &[u8]) -> Result<RunBatch<'_>, ValidationError> {
    let top = parse_top(body)?;
    if top.runs.is_none() {
        return Err(ValidationError::whole(
            "body must be a JSON object with a `runs` array",
        ));
    }
    validate_runs(top.runs)
}

/// Validates every run of `runs`. Callers pass the field of a body that has the key, so `None`
/// does not occur; it is answered like a value that is not an array rather than trusted away.
fn validate_runs(runs: Option<RunsField<'_>>) -> Result<RunBatch<'_>, ValidationError> {
    let Some(RunsField::Array(items)) = runs else {
        return Err(ValidationError {
            message: "`runs` must be an array of run objects".into(),
            details: BTreeMap::from([("runs".into(), "must be an array".into())]),
        });
    };
    if items.is_empty() {
        return Err(ValidationError {
            message: "`runs` must contain at least one run".into(),
            details: BTreeMap::from([("runs".into(), "must not be empty".into())]),
        });
    }
    let mut details = BTreeMap::new();
    let mut overflow = 0usize;
    let mut out = Vec::with_capacity(items.len());
    for (i, raw) in items.into_iter().enumerate() {
        let mut problems = Vec::new();
        let run = validate_run(raw, &mut problems);
        for (field, problem) in problems {
            if details.len() < MAX_DETAILS {
                let key = if field.is_empty() {
                    format!("runs[{i}]")
                } else {
                    format!("runs[{i}].{field}")
                };
                details.insert(key, problem);
            } else {
                overflow += 1;
            }
        }
        if let Some(run) = run {
            out.push(run);
        }
    }
    if details.is_empty() {
        return Ok(RunBatch { runs: out });
    }
    let mut message = format!(
        "{} invalid field(s) in the batch; nothing was stored",
        details.len() + overflow
    );
    if overflow > 0 {
        message.push_str(&format!(" ({overflow} more not listed)"));
    }
    Err(ValidationError { message, details })
}

/// Rejects bodies nested deeper than [`MAX_DEPTH`]: one pass over the bytes, aware of
/// strings and escapes, before any parsing.
fn check_depth(body: &[u8]) -> Result<(), ValidationError> {
    match scan(body, MAX_DEPTH) {
        Scan::Fine => Ok(()),
        Scan::TooDeep => Err(ValidationError::whole(format!(
            "JSON nested deeper than {MAX_DEPTH} levels"
        ))),
        Scan::LoneSurrogate(at) => Err(ValidationError::whole(format!(
            "a string holds a lone UTF-16 surrogate escape at byte {at} (a \\uD800-\\uDFFF \
             escape without its pair is not text; the collector would reject the batch)"
        ))),
    }
}

/// Whether the JSON text `body` nests arrays and objects at most `max` levels deep (one pass,
/// aware of strings and escapes; an unterminated string ends the scan).
pub fn nesting_within(body: &[u8], max: usize) -> bool {
    scan(body, max) != Scan::TooDeep
}

/// The required fields of a run, borrowed. `Some(raw)` even for `null`, `None` when absent.
#[derive(Default)]
pub(crate) struct RunFields<'a> {
    pub(crate) id: Option<&'a RawValue>,
    pub(crate) name: Option<&'a RawValue>,
    pub(crate) run_type: Option<&'a RawValue>,
    pub(crate) trace_id: Option<&'a RawValue>,
    pub(crate) source_id: Option<&'a RawValue>,
    pub(crate) session_id: Option<&'a RawValue>,
    pub(crate) parent_run_id: Option<&'a RawValue>,
    pub(crate) start_time: Option<&'a RawValue>,
    pub(crate) end_time: Option<&'a RawValue>,
    pub(crate) status: Option<&'a RawValue>,
    /// Set when all ten were found and the scan stopped early.
    complete: bool,
}

const FIELD_COUNT: usize = 10;

/// Keys of a run the sidecar reads; everything else is `Other` and skipped.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    Id,
    Name,
    #[serde(rename = "type")]
    Type,
    TraceId,
    SourceId,
    SessionId,
    ParentRunId,
    StartTime,
    EndTime,
    Status,
    #[serde(other)]
    Other,
}

/// Reads the fields of one run. The run's syntax was already checked when the batch was split,
/// so the scan stops as soon as all ten fields are found (the SDK writes them before the large
/// `input`/`output`/`metadata` values): per run, a few hundred bytes are read, not the whole run.
/// The first occurrence of a duplicated key is the one read. `json` must be one JSON object
/// whose syntax was already checked (text after the last needed field is not read).
pub(crate) fn read_fields(json: &[u8]) -> Result<RunFields<'_>, serde_json::Error> {
    struct FieldsVisitor<'s, 'a> {
        out: &'s mut RunFields<'a>,
    }
    impl<'a> serde::de::Visitor<'a> for FieldsVisitor<'_, 'a> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a run object")
        }
        fn visit_map<A: serde::de::MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
            let mut found = 0usize;
            while let Some(key) = map.next_key::<Field>()? {
                let slot = match key {
                    Field::Id => &mut self.out.id,
                    Field::Name => &mut self.out.name,
                    Field::Type => &mut self.out.run_type,
                    Field::TraceId => &mut self.out.trace_id,
                    Field::SourceId => &mut self.out.source_id,
                    Field::SessionId => &mut self.out.session_id,
                    Field::ParentRunId => &mut self.out.parent_run_id,
                    Field::StartTime => &mut self.out.start_time,
                    Field::EndTime => &mut self.out.end_time,
                    Field::Status => &mut self.out.status,
                    Field::Other => {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                };
                let value: &'a RawValue = map.next_value()?;
                if slot.is_none() {
                    *slot = Some(value);
                    found += 1;
                }
                if found == FIELD_COUNT {
                    self.out.complete = true;
                    // Stop here; the error is recognised by `complete` and discarded.
                    return Err(serde::de::Error::custom("all fields found"));
                }
            }
            Ok(())
        }
    }
    let mut out = RunFields::default();
    let mut de = serde_json::Deserializer::from_slice(json);
    let result = de.deserialize_map(FieldsVisitor { out: &mut out });
    match result {
        Ok(()) => Ok(out),
        Err(_) if out.complete => Ok(out),
        Err(e) => Err(e),
    }
}

/// `Some` whenever the key is there (`null` included: it is "not an array", not absent).
fn runs_present<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<RunsField<'a>>, D::Error> {
    RunsField::deserialize(d).map(Some)
}

fn ignored_present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<()>, D::Error> {
    IgnoredAny::deserialize(d).map(|_| Some(()))
}

/// What a raw JSON value is, for messages.
fn kind_of(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        _ => "a number",
    }
}

/// Reads a JSON string value, borrowing when it has no escapes. `raw` was checked by the
/// parser (a string holds no raw control character and ends with an unescaped quote), so
/// without a backslash its text between the quotes is the value. (`Cow<str>`'s own
/// `Deserialize` always allocates.)
fn as_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

type Problems = Vec<(&'static str, String)>;

fn required_string<'a>(
    field: &'static str,
    raw: Option<&'a RawValue>,
    problems: &mut Problems,
) -> Option<Cow<'a, str>> {
    match raw {
        None => {
            problems.push((field, "is required".into()));
            None
        }
        Some(r) => match as_str(r) {
            Some(s) => Some(s),
            None => {
                problems.push((field, format!("must be a string, got {}", kind_of(r))));
                None
            }
        },
    }
}

fn optional_string<'a>(
    field: &'static str,
    raw: Option<&'a RawValue>,
    problems: &mut Problems,
) -> Option<Cow<'a, str>> {
    match raw {
        None => None,
        Some(r) if r.get() == "null" => None,
        Some(r) => match as_str(r) {
            Some(s) => Some(s),
            None => {
                problems.push((
                    field,
                    format!("must be a string or null, got {}", kind_of(r)),
                ));
                None
            }
        },
    }
}

fn timestamp(
    field: &'static str,
    raw: Option<&RawValue>,
    nullable: bool,
    problems: &mut Problems,
) -> Option<Option<OffsetDateTime>> {
    let Some(r) = raw else {
        problems.push((field, "is required".into()));
        return None;
    };
    if nullable && r.get() == "null" {
        return Some(None);
    }
    let Some(text) = as_str(r) else {
        let expected = if nullable {
            "an RFC 3339 string or null"
        } else {
            "an RFC 3339 string"
        };
        problems.push((field, format!("must be {expected}, got {}", kind_of(r))));
        return None;
    };
    match OffsetDateTime::parse(&text, &Rfc3339) {
        Ok(t) => Some(Some(t)),
        Err(_) => {
            let shown: String = text.chars().take(40).collect();
            problems.push((
                field,
                format!("must be an RFC 3339 timestamp like 2026-01-31T12:00:00.123456+00:00, got {shown:?}"),
            ));
            None
        }
    }
}

fn validate_run<'a>(raw: &'a RawValue, problems: &mut Problems) -> Option<RawRun<'a>> {
    if !raw.get().starts_with('{') {
        problems.push(("", format!("must be an object, got {}", kind_of(raw))));
        return None;
    }
    let fields = match read_fields(raw.get().as_bytes()) {
        Ok(f) => f,
        Err(e) => {
            problems.push(("", format!("invalid run object: {e}")));
            return None;
        }
    };
    let id = required_string("id", fields.id, problems);
    let name = required_string("name", fields.name, problems);
    let type_text = required_string("type", fields.run_type, problems);
    let run_type = type_text.as_deref().and_then(|t| {
        let parsed = RunType::parse(t);
        if parsed.is_none() {
            problems.push((
                "type",
                format!("must be one of workflow, flow, node; got {t:?}"),
            ));
        }
        parsed
    });
    let trace_id = required_string("trace_id", fields.trace_id, problems);
    let source_id = required_string("source_id", fields.source_id, problems);
    let session_id = optional_string("session_id", fields.session_id, problems);
    let parent_run_id = optional_string("parent_run_id", fields.parent_run_id, problems);
    let start_time = timestamp("start_time", fields.start_time, false, problems);
    let end_time = timestamp("end_time", fields.end_time, true, problems);
    let status = match fields.status {
        None => {
            problems.push(("status", "is required (null is allowed)".into()));
            None
        }
        Some(r) if r.get() == "null" => Some(None),
        Some(r) => {
            match as_str(r) {
                Some(s) => match RunStatus::parse(&s) {
                    Some(st) => Some(Some(st)),
                    None => {
                        problems.push((
                        "status",
                        format!("must be one of succeeded, failed, skipped, canceled or null; got {s:?}"),
                    ));
                        None
                    }
                },
                None => {
                    problems.push((
                        "status",
                        format!("must be a string or null, got {}", kind_of(r)),
                    ));
                    None
                }
            }
        }
    };
    Some(RawRun {
        json: raw.get(),
        id: id?,
        name: name?,
        run_type: run_type?,
        trace_id: trace_id?,
        source_id: source_id?,
        session_id,
        parent_run_id,
        start_time: start_time??,
        end_time: end_time?,
        status: status?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUCCESS: &str = include_str!("../../tests/fixtures/workflow-success.json");
    const FAILURE: &str = include_str!("../../tests/fixtures/workflow-node-failure.json");

    fn run(extra: &str) -> String {
        format!(
            r#"{{"id":"r1","name":"n","type":"node","trace_id":"t","source_id":"s","start_time":"2026-11-24T08:15:38.271234+00:00","end_time":null,"status":null{extra}}}"#
        )
    }

    fn details(body: &str) -> BTreeMap<String, String> {
        parse_batch(body.as_bytes()).unwrap_err().details
    }

    #[test]
    fn real_sdk_fixtures_validate_and_keep_their_exact_bytes() {
        for fixture in [SUCCESS, FAILURE] {
            let batch = parse_batch(fixture.as_bytes()).unwrap();
            let reparsed: serde_json::Value = serde_json::from_str(fixture).unwrap();
            let expected = reparsed["runs"].as_array().unwrap();
            assert_eq!(batch.runs.len(), expected.len());
            for (got, want) in batch.runs.iter().zip(expected) {
                assert_eq!(got.id, want["id"].as_str().unwrap());
                // The bytes are a verbatim slice of the body.
                assert!(fixture.contains(got.json));
                assert_eq!(
                    &serde_json::from_str::<serde_json::Value>(got.json).unwrap(),
                    want
                );
            }
        }
        let failed = parse_batch(FAILURE.as_bytes()).unwrap();
        assert!(
            failed
                .runs
                .iter()
                .any(|r| r.status == Some(RunStatus::Failed))
        );
    }

    #[test]
    fn lone_surrogate_escapes_are_refused_and_pairs_kept() {
        let body =
            |value: &str| format!(r#"{{"runs":[{}]}}"#, run(&format!(r#","input":"{value}""#)));
        for bad in [
            r"\ud800",
            r"\uDC00",
            r"x\ud83dy",
            r"\ud83d\u0041",
            r"\ud83d\n",
            r"\ud800\ud800",
            // Found by fuzzing: `DuDDe6` after a high surrogate is text, not a `\u` escape.
            r"\uDBBdDuDDe6",
            r"\ud83d_udc00",
        ] {
            let e = parse_batch(body(bad).as_bytes()).unwrap_err();
            assert!(
                e.message.contains("lone UTF-16 surrogate"),
                "{bad}: {}",
                e.message
            );
        }
        for good in [r"\ud83d\ude00", r"\\ud800", r"\u00e9\\", r"\\\ud83d\ude00"] {
            let b = body(good);
            let batch = parse_batch(b.as_bytes()).unwrap_or_else(|e| panic!("{good}: {e:?}"));
            let v: serde_json::Value = serde_json::from_str(batch.runs[0].json).unwrap();
            assert!(v["input"].is_string(), "{good}");
        }
        // Keys and object nesting count too; depth still works.
        assert!(parse_batch(br#"{"runs":[{"\udc00":1}]}"#).is_err());
        assert!(nesting_within(br#"["\ud800"]"#, 1));
    }

    #[test]
    fn unknown_fields_big_numbers_and_float_spellings_are_kept_verbatim() {
        let r = run(
            r#","zzz":{"b":1,"a":2},"big":123456789012345678901234567890,"f":1.50,"e":1E+2,"huge":1e999,"u":"\u00e9""#,
        );
        let body = format!(r#"{{"runs":[{r}]}}"#);
        let batch = parse_batch(body.as_bytes()).unwrap();
        assert_eq!(batch.runs[0].json, r);
    }

    #[test]
    fn fields_are_found_in_any_order_and_after_large_values() {
        let r = r#"{"input":{"deep":[1,{"status":"x"}]},"status":"failed","end_time":null,"start_time":"2026-11-24T08:15:38Z","source_id":"s","trace_id":"t","type":"flow","name":"n","id":"r9"}"#;
        let body = format!(r#"{{"runs":[{r}]}}"#);
        let b = parse_batch(body.as_bytes()).unwrap();
        assert_eq!(b.runs[0].id, "r9");
        assert_eq!(b.runs[0].status, Some(RunStatus::Failed));
        assert_eq!(b.runs[0].run_type, RunType::Flow);
        assert_eq!(b.runs[0].json, r);
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_nesting() {
        let r = run(&format!(
            r#","x":"{}\\\"{}""#,
            "[".repeat(500),
            "{".repeat(500)
        ));
        assert!(parse_batch(format!(r#"{{"runs":[{r}]}}"#).as_bytes()).is_ok());
        let ok_depth = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH - 3),
            "]".repeat(MAX_DEPTH - 3)
        );
        let r = run(&format!(r#","x":{ok_depth}"#));
        assert!(parse_batch(format!(r#"{{"runs":[{r}]}}"#).as_bytes()).is_ok());
    }

    #[test]
    fn null_end_time_and_status_are_accepted() {
        let body = format!(r#"{{"runs":[{}]}}"#, run(""));
        let b = parse_batch(body.as_bytes()).unwrap();
        assert_eq!(b.runs[0].end_time, None);
        assert_eq!(b.runs[0].status, None);
    }

    #[test]
    fn missing_required_fields_are_listed_per_run_and_field() {
        let d = details(r#"{"runs":[{"id":"a"}]}"#);
        for f in [
            "name",
            "type",
            "trace_id",
            "source_id",
            "start_time",
            "end_time",
            "status",
        ] {
            assert_eq!(
                d.get(&format!("runs[0].{f}"))
                    .map(String::as_str)
                    .unwrap_or(""),
                if f == "status" {
                    "is required (null is allowed)"
                } else {
                    "is required"
                },
                "{f}"
            );
        }
        assert!(!d.contains_key("runs[0].id"));
    }

    #[test]
    fn wrongly_typed_fields_say_what_they_got() {
        let bad = r#"{"id":5,"name":"n","type":"task","trace_id":"t","source_id":null,"start_time":"yesterday","end_time":7,"status":"done"}"#;
        let body = format!(r#"{{"runs":[{},{bad}]}}"#, run(""));
        let d = details(&body);
        assert_eq!(d["runs[1].id"], "must be a string, got a number");
        assert!(d["runs[1].type"].contains("workflow, flow, node"));
        assert_eq!(d["runs[1].source_id"], "must be a string, got null");
        assert!(d["runs[1].start_time"].contains("RFC 3339"));
        assert!(d["runs[1].end_time"].contains("or null"));
        assert!(d["runs[1].status"].contains("succeeded"));
        assert!(!d.keys().any(|k| k.starts_with("runs[0]")));
    }

    #[test]
    fn both_z_and_offset_timestamps_are_rfc3339() {
        for t in [
            "2026-11-24T08:15:38Z",
            "2026-11-24T08:15:38.5+00:00",
            "2026-11-24T08:15:38.123456789-05:30",
        ] {
            let r = run("").replace("2026-11-24T08:15:38.271234+00:00", t);
            assert!(
                parse_batch(format!(r#"{{"runs":[{r}]}}"#).as_bytes()).is_ok(),
                "{t}"
            );
        }
        for t in [
            "2026-11-24 08:15:38",
            "2026-11-24T08:15:38",
            "2026-13-24T08:15:38Z",
            "",
        ] {
            let r = run("").replace("2026-11-24T08:15:38.271234+00:00", t);
            assert!(
                parse_batch(format!(r#"{{"runs":[{r}]}}"#).as_bytes()).is_err(),
                "{t}"
            );
        }
    }

    #[test]
    fn batch_shape_errors_are_clear() {
        assert_eq!(details(r#"{"runs":[]}"#)["runs"], "must not be empty");
        assert_eq!(details(r#"{"runs":{}}"#)["runs"], "must be an array");
        assert_eq!(
            details(r#"{"runs":[1]}"#)["runs[0]"],
            "must be an object, got a number"
        );
        assert!(
            parse_batch(br#"{"other":1}"#)
                .unwrap_err()
                .message
                .contains("`runs`")
        );
        assert!(
            parse_batch(b"[1,2]")
                .unwrap_err()
                .message
                .contains("`runs`")
        );
        assert!(
            parse_batch(b"{\"runs\":[")
                .unwrap_err()
                .message
                .contains("invalid JSON")
        );
    }

    #[test]
    fn hostile_inputs_are_errors_not_panics() {
        let deep = format!(
            r#"{{"runs":[{}]}}"#,
            run(&format!(
                r#","x":{}{}"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            ))
        );
        assert!(parse_batch(deep.as_bytes()).is_err());
        let mut invalid_utf8 = format!(r#"{{"runs":[{}]}}"#, run(r#","x":"AB""#)).into_bytes();
        let pos = invalid_utf8.iter().position(|&b| b == b'A').unwrap();
        invalid_utf8[pos] = 0xff;
        assert!(parse_batch(&invalid_utf8).is_err());
        assert!(parse_batch(b"").is_err());
        assert!(parse_batch(b"\x00\x01").is_err());
    }

    /// The byte-at-a-time definition `check_depth` must agree with.
    fn reference_depth_ok(body: &[u8]) -> bool {
        let in_string = super::super::json_scan::reference_in_string(body);
        let mut depth = 0usize;
        for (&b, _) in body.iter().zip(in_string).filter(|(_, s)| !s) {
            match b {
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return false;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        true
    }

    proptest::proptest! {
        #[test]
        fn the_fast_depth_guard_agrees_with_the_byte_by_byte_definition(
            body in proptest::collection::vec(proptest::sample::select(b"[[[{{\"\\ab]}".to_vec()), 0..600)
        ) {
            proptest::prop_assert_eq!(check_depth(&body).is_ok(), reference_depth_ok(&body));
        }
    }

    #[test]
    fn too_many_problems_are_capped_and_counted() {
        let runs = vec![r#"{}"#; 20].join(",");
        let e = parse_batch(format!(r#"{{"runs":[{runs}]}}"#).as_bytes()).unwrap_err();
        assert_eq!(e.details.len(), MAX_DETAILS);
        assert!(e.message.contains("more not listed"), "{}", e.message);
    }

    #[test]
    fn string_fields_are_borrowed_unless_escaped() {
        let raw = |json: &'static str| -> &'static RawValue {
            serde_json::from_str::<&RawValue>(json).unwrap()
        };
        assert!(matches!(
            as_str(raw(r#""abc""#)),
            Some(Cow::Borrowed("abc"))
        ));
        assert!(matches!(as_str(raw(r#""""#)), Some(Cow::Borrowed(""))));
        assert!(matches!(
            as_str(raw(r#""é€😀""#)),
            Some(Cow::Borrowed("é€😀"))
        ));
        let escaped = as_str(raw(r#""a\"b\u00e9\n""#)).unwrap();
        assert!(matches!(escaped, Cow::Owned(_)));
        assert_eq!(escaped, "a\"bé\n");
        assert_eq!(as_str(raw("12")), None);
        assert_eq!(as_str(raw("null")), None);
        let batch = parse_batch(SUCCESS.as_bytes()).unwrap();
        assert!(batch.runs.iter().all(|r| matches!(r.id, Cow::Borrowed(_))));
    }

    #[test]
    fn one_pass_classifies_and_validates_a_json_body() {
        let JsonBody::Runs(batch) = parse_json_body(SUCCESS.as_bytes()).unwrap() else {
            panic!("the SDK fixture is a Dynamiq batch");
        };
        let separately = parse_batch(SUCCESS.as_bytes()).unwrap();
        assert_eq!(batch.runs.len(), separately.runs.len());
        for (a, b) in batch.runs.iter().zip(&separately.runs) {
            assert_eq!((a.json, &a.id), (b.json, &b.id));
        }
        assert!(matches!(
            parse_json_body(br#"{"resourceSpans":[{"x":[1,{"y":null}]}]}"#).unwrap(),
            JsonBody::OtlpJson
        ));
        for not_array in [
            "null",
            "\"x\"",
            "5",
            "-1.5e3",
            "true",
            r#"{"a":[1,{"b":2}]}"#,
        ] {
            let body = format!(r#"{{"x":1,"runs":{not_array},"y":[2]}}"#);
            let e = parse_json_body(body.as_bytes()).unwrap_err();
            assert_eq!(
                e.details.get("runs").map(String::as_str),
                Some("must be an array"),
                "{not_array}: {e:?}"
            );
            assert_eq!(details(&body)["runs"], "must be an array", "{not_array}");
        }
        let both = parse_json_body(br#"{"runs":[],"resourceSpans":[]}"#).unwrap_err();
        assert!(both.message.contains("both"), "{}", both.message);
        let e = parse_json_body(br#"{"runs":[{"id":1}"#).unwrap_err();
        assert!(e.message.contains("invalid JSON"), "{}", e.message);
        let e = parse_json_body(br#"{"runs":{"a":[}}"#).unwrap_err();
        assert!(e.message.contains("invalid JSON"), "{}", e.message);
        let e = parse_json_body(br#"{"runs":[1],"runs":[2]}"#).unwrap_err();
        assert!(e.message.contains("`runs`"), "{}", e.message);
        // `parse_batch` reads only `runs`.
        let with_spans = format!(r#"{{"resourceSpans":[],"runs":[{}]}}"#, run(""));
        assert_eq!(parse_batch(with_spans.as_bytes()).unwrap().runs.len(), 1);
    }

    #[test]
    fn body_kind_is_told_by_the_top_level_key() {
        assert_eq!(
            classify_json_body(SUCCESS.as_bytes()).unwrap(),
            JsonBodyKind::DynamiqRuns
        );
        assert_eq!(
            classify_json_body(br#"{"resourceSpans":[]}"#).unwrap(),
            JsonBodyKind::OtlpJson
        );
        assert!(
            classify_json_body(br#"{"resource_spans":[]}"#)
                .unwrap_err()
                .message
                .contains("lowerCamelCase")
        );
        assert!(classify_json_body(br#"{"foo":1}"#).is_err());
    }
}
