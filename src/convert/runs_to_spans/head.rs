//! The span of a Dynamiq run apart from its attributes, and where it is exported.
//!
//! Owns the span's head (trace, span and parent ids, name, kind, times), a failed run's
//! `ERROR` status and `exception` event (type from the traceback's last line, message and
//! stack trace from the run's `error`), the resource (`service.name`, `telemetry.sdk.name`)
//! and scope (`dynamiq-sidecar` and its version) Dynamiq runs are exported under, and the
//! struct form of the whole span.
//!
//! Guarantees: the struct path ([`SpanHead::into_run_span`]) and the protobuf path
//! (`runs_to_bytes.rs`) emit the same head, status and event from the same [`SpanHead`].

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

use super::{RunConvertOptions, RunSpan};
use crate::convert::attr_sink::{AttrSink, kv};

/// The resource Dynamiq runs are exported under.
pub(in crate::convert) fn dynamiq_resource(options: &RunConvertOptions) -> Resource {
    Resource {
        attributes: vec![
            kv(
                "service.name",
                Value::StringValue(options.service_name.clone()),
            ),
            kv("telemetry.sdk.name", Value::StringValue("dynamiq".into())),
        ],
        ..Default::default()
    }
}

/// The instrumentation scope of Dynamiq runs.
pub(in crate::convert) fn dynamiq_scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "dynamiq-sidecar".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

/// A Dynamiq run's span apart from its attributes (which went to an [`AttrSink`]).
pub(in crate::convert) struct SpanHead<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: Cow<'a, str>,
    pub kind: SpanKind,
    pub start: u64,
    pub end: u64,
    /// Set for a failed run: `ERROR` status and an `exception` event at the end time.
    pub failure: Option<Failure<'a>>,
}

/// Why a run failed, from its `error`.
pub(in crate::convert) struct Failure<'a> {
    pub message: Option<Cow<'a, str>>,
    pub(super) traceback: Option<Cow<'a, str>>,
}

impl Failure<'_> {
    /// The exception type named by the traceback's last line (`ValueError: boom` →
    /// `ValueError`), else `Error`.
    pub(super) fn exception_type(&self) -> &str {
        self.traceback
            .as_deref()
            .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()))
            .and_then(|line| line.split_once(':').map(|(head, _)| head.trim()))
            .filter(|head| {
                !head.is_empty()
                    && head
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
            })
            .unwrap_or("Error")
    }

    /// The attributes of the `exception` event.
    pub fn event_attributes(&self, attrs: &mut impl AttrSink) {
        attrs.str("exception.type", self.exception_type());
        if let Some(m) = &self.message {
            attrs.str("exception.message", m);
        }
        if let Some(t) = &self.traceback {
            attrs.str("exception.stacktrace", t);
        }
    }
}

impl SpanHead<'_> {
    /// The struct path: the span with its attributes, under the Dynamiq resource and scope.
    pub(super) fn into_run_span(
        self,
        attributes: Vec<KeyValue>,
        options: &RunConvertOptions,
    ) -> RunSpan {
        let mut span = Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            parent_span_id: self.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
            name: self.name.into_owned(),
            kind: self.kind as i32,
            start_time_unix_nano: self.start,
            end_time_unix_nano: self.end,
            attributes,
            ..Default::default()
        };
        if let Some(failure) = &self.failure {
            span.status = Some(Status {
                code: StatusCode::Error as i32,
                message: failure.message.as_deref().unwrap_or_default().to_owned(),
            });
            let mut event_attrs = Vec::new();
            failure.event_attributes(&mut event_attrs);
            span.events.push(Event {
                time_unix_nano: span.end_time_unix_nano,
                name: "exception".to_owned(),
                attributes: event_attrs,
                dropped_attributes_count: 0,
            });
        }
        RunSpan {
            span,
            resource: dynamiq_resource(options),
            resource_schema_url: String::new(),
            scope: dynamiq_scope(),
            scope_schema_url: String::new(),
        }
    }
}
