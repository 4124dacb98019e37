//! Runs → the protobuf bytes of one `ExportTraceServiceRequest`, written straight from the
//! runs' raw fields: the OTLP output's path. Dynamiq runs never become `opentelemetry-proto`
//! structs (their attributes go through [`ProtoAttrs`]); runs made from foreign spans, rare on
//! this path, are rebuilt as structs and encoded with prost.
//!
//! Guarantees: the bytes decode to exactly the request [`super::runs_to_request`] builds for the
//! same runs (same grouping by resource and scope, same spans, same attribute order), and the
//! same runs fail with the same reasons; writing never panics.

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use super::proto_writer::{
    Open, ProtoAttrs, bytes_field, close, fixed64_field, open, varint_field,
};
use super::runs_to_spans::{
    ReadRun, RunConvertOptions, SpanHead, dynamiq_resource, dynamiq_scope, dynamiq_span, read_run,
};

/// Runs encoded as one export request.
#[derive(Debug, Default)]
pub struct EncodedRuns {
    /// The `ExportTraceServiceRequest`, protobuf-encoded.
    pub bytes: Vec<u8>,
    /// Spans in the request.
    pub spans: u64,
    /// Runs that could not be converted: their index in the input and why.
    pub failed: Vec<(usize, String)>,
}

/// Converts runs (JSON bytes each) into one encoded export request.
pub fn runs_to_request_bytes<'a>(
    runs: impl IntoIterator<Item = &'a [u8]>,
    options: &RunConvertOptions,
) -> EncodedRuns {
    let resource = dynamiq_resource(options);
    let scope = dynamiq_scope();
    let runs: Vec<&[u8]> = runs.into_iter().collect();
    // A span takes a little more than its run (attribute keys, ids, times): sized up front, the
    // buffer is never moved while it grows.
    let estimate: usize = runs.iter().map(|r| 2 * r.len() + 256).sum();
    let mut w = RequestWriter {
        out: Vec::with_capacity(estimate),
        ..RequestWriter::default()
    };
    let mut failed = Vec::new();
    for (i, run) in runs.into_iter().enumerate() {
        match read_run(run) {
            Ok(ReadRun::Foreign(rs)) => {
                w.group(
                    (&rs.resource, &rs.resource_schema_url),
                    (&rs.scope, &rs.scope_schema_url),
                );
                prost::encoding::message::encode(SCOPE_SPANS_SPANS, &rs.span, &mut w.out);
                w.spans += 1;
            }
            Ok(ReadRun::Dynamiq(run)) => {
                w.group_dynamiq(&resource, &scope);
                let span = open(&mut w.out, SCOPE_SPANS_SPANS, 2);
                let mut attrs = ProtoAttrs {
                    out: &mut w.out,
                    field: SPAN_ATTRIBUTES,
                };
                let head = dynamiq_span(&run, options, &mut attrs);
                write_head(&mut w.out, &head);
                close(&mut w.out, span);
                w.spans += 1;
            }
            Err(reason) => failed.push((i, reason)),
        }
    }
    EncodedRuns {
        spans: w.spans,
        bytes: w.finish(),
        failed,
    }
}

/// Field numbers (opentelemetry/proto/trace/v1/trace.proto and the collector's service).
const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const RESOURCE_SPANS_SCHEMA_URL: u32 = 3;
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;
const SCOPE_SPANS_SCHEMA_URL: u32 = 3;
const SPAN_TRACE_ID: u32 = 1;
const SPAN_SPAN_ID: u32 = 2;
const SPAN_PARENT_SPAN_ID: u32 = 4;
const SPAN_NAME: u32 = 5;
const SPAN_KIND: u32 = 6;
const SPAN_START: u32 = 7;
const SPAN_END: u32 = 8;
const SPAN_ATTRIBUTES: u32 = 9;
const SPAN_EVENTS: u32 = 11;
const SPAN_STATUS: u32 = 15;
const EVENT_TIME: u32 = 1;
const EVENT_NAME: u32 = 2;
const EVENT_ATTRIBUTES: u32 = 3;
const STATUS_MESSAGE: u32 = 2;
const STATUS_CODE: u32 = 3;

/// Writes the span fields other than the attributes (as prost would: defaults omitted).
fn write_head(out: &mut Vec<u8>, head: &SpanHead<'_>) {
    bytes_field(out, SPAN_TRACE_ID, &head.trace_id);
    bytes_field(out, SPAN_SPAN_ID, &head.span_id);
    if let Some(parent) = &head.parent_span_id {
        bytes_field(out, SPAN_PARENT_SPAN_ID, parent);
    }
    if !head.name.is_empty() {
        bytes_field(out, SPAN_NAME, head.name.as_bytes());
    }
    varint_field(out, SPAN_KIND, head.kind as u64);
    for (field, ns) in [(SPAN_START, head.start), (SPAN_END, head.end)] {
        if ns != 0 {
            fixed64_field(out, field, ns);
        }
    }
    if let Some(failure) = &head.failure {
        let event = open(out, SPAN_EVENTS, 1);
        if head.end != 0 {
            fixed64_field(out, EVENT_TIME, head.end);
        }
        bytes_field(out, EVENT_NAME, b"exception");
        failure.event_attributes(&mut ProtoAttrs {
            out: &mut *out,
            field: EVENT_ATTRIBUTES,
        });
        close(out, event);
        let status = open(out, SPAN_STATUS, 1);
        if let Some(message) = failure.message.as_deref().filter(|m| !m.is_empty()) {
            bytes_field(out, STATUS_MESSAGE, message.as_bytes());
        }
        varint_field(out, STATUS_CODE, StatusCode::Error as u64);
        close(out, status);
    }
}

/// An open `ResourceSpans` or `ScopeSpans` group: what it is keyed by and where it started.
struct Group<T> {
    key: T,
    schema_url: String,
    open: Open,
}

impl<T: prost::Message + PartialEq + Clone> Group<T> {
    /// Whether `group` is open and keyed by `key`.
    fn holds(group: &Option<Self>, (key, schema_url): (&T, &str)) -> bool {
        group
            .as_ref()
            .is_some_and(|g| &g.key == key && g.schema_url == schema_url)
    }

    /// Opens the group as field `fields.0`, its key written as its field `fields.1`.
    fn open(out: &mut Vec<u8>, fields: (u32, u32), (key, schema_url): (&T, &str)) -> Self {
        let open = open(out, fields.0, 3);
        prost::encoding::message::encode(fields.1, key, out);
        Group {
            key: key.clone(),
            schema_url: schema_url.to_owned(),
            open,
        }
    }
}

/// The request being written, with its open groups.
#[derive(Default)]
struct RequestWriter {
    out: Vec<u8>,
    resource: Option<Group<Resource>>,
    scope: Option<Group<InstrumentationScope>>,
    /// The open groups are keyed by the Dynamiq resource and scope (so a Dynamiq run need not
    /// compare them again).
    dynamiq: bool,
    spans: u64,
}

impl RequestWriter {
    /// Makes sure the next span goes under `resource` and `scope`, reusing the open groups when
    /// they match (as [`super::runs_to_request`] does).
    fn group(&mut self, resource: (&Resource, &str), scope: (&InstrumentationScope, &str)) {
        if !Group::holds(&self.resource, resource) || !Group::holds(&self.scope, scope) {
            self.dynamiq = false;
        }
        if !Group::holds(&self.resource, resource) {
            self.close_scope();
            self.close_resource();
            self.resource = Some(Group::open(
                &mut self.out,
                (REQUEST_RESOURCE_SPANS, RESOURCE_SPANS_RESOURCE),
                resource,
            ));
        }
        if !Group::holds(&self.scope, scope) {
            self.close_scope();
            self.scope = Some(Group::open(
                &mut self.out,
                (RESOURCE_SPANS_SCOPE_SPANS, SCOPE_SPANS_SCOPE),
                scope,
            ));
        }
    }

    /// [`Self::group`] for a Dynamiq run: `resource` and `scope` are the Dynamiq ones.
    fn group_dynamiq(&mut self, resource: &Resource, scope: &InstrumentationScope) {
        if !self.dynamiq {
            self.group((resource, ""), (scope, ""));
            self.dynamiq = true;
        }
    }

    fn close_scope(&mut self) {
        if let Some(g) = self.scope.take() {
            close_group(&mut self.out, g, SCOPE_SPANS_SCHEMA_URL);
        }
    }

    fn close_resource(&mut self) {
        if let Some(g) = self.resource.take() {
            close_group(&mut self.out, g, RESOURCE_SPANS_SCHEMA_URL);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.close_scope();
        self.close_resource();
        self.out
    }
}

/// Ends a group: its schema URL (when set) and its length.
fn close_group<T>(out: &mut Vec<u8>, g: Group<T>, schema_url_field: u32) {
    if !g.schema_url.is_empty() {
        bytes_field(out, schema_url_field, g.schema_url.as_bytes());
    }
    close(out, g.open);
}
