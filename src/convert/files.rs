//! Offline conversion of whole files between Dynamiq runs (`{"runs": [...]}`), OTLP/JSON and
//! OTLP/protobuf (`ExportTraceServiceRequest`): the `dynamiq-sidecar convert` command. Uses the
//! same conversion code as the receivers and the OTLP output.
//!
//! Guarantees: input is validated as the receivers validate it (a Dynamiq file must pass the
//! collector's validation, an OTLP file must decode); nothing is dropped silently: invalid spans
//! and unconvertible runs are counted in the report.

use clap::ValueEnum;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::{RunConvertOptions, SpanConvertOptions, convert_request, runs_to_request};

/// A file format `convert` reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    /// Dynamiq runs: `{"runs": [...]}`.
    Dynamiq,
    /// OTLP/JSON `ExportTraceServiceRequest` (hex ids, integer enums).
    OtlpJson,
    /// OTLP/protobuf `ExportTraceServiceRequest`.
    OtlpProto,
}

/// What a conversion did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// Runs or spans read.
    pub read: usize,
    /// Runs or spans written.
    pub written: usize,
    /// Why items were left out (invalid spans, unconvertible runs).
    pub problems: Vec<String>,
}

/// Converts `input` from one format to another.
pub fn convert_file(
    input: &[u8],
    from: FileFormat,
    to: FileFormat,
) -> Result<(Vec<u8>, FileReport), String> {
    let mut report = FileReport::default();
    match from {
        FileFormat::Dynamiq => {
            let batch = crate::model::parse_batch(input).map_err(|e| {
                let details: Vec<String> = e
                    .details
                    .iter()
                    .take(5)
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect();
                format!(
                    "not a valid Dynamiq batch: {} {}",
                    e.message,
                    details.join("; ")
                )
            })?;
            let runs: Vec<&[u8]> = batch.runs.iter().map(|r| r.json.as_bytes()).collect();
            report.read = runs.len();
            if to == FileFormat::Dynamiq {
                report.written = runs.len();
                return Ok((runs_document(runs.iter().copied()), report));
            }
            let converted = runs_to_request(runs.iter().copied(), &RunConvertOptions::default());
            for (i, why) in &converted.failed {
                report.problems.push(format!("runs[{i}]: {why}"));
            }
            report.written = report.read - converted.failed.len();
            Ok((encode_request(&converted.request, to)?, report))
        }
        FileFormat::OtlpJson | FileFormat::OtlpProto => {
            let request = decode_request(input, from)?;
            report.read = super::count_spans(&request) as usize;
            if to != FileFormat::Dynamiq {
                report.written = report.read;
                return Ok((encode_request(&request, to)?, report));
            }
            let converted = convert_request(&request, &SpanConvertOptions::default());
            if converted.rejected_spans > 0 {
                report.problems.push(format!(
                    "{} invalid span(s): {}",
                    converted.rejected_spans, converted.error_message
                ));
            }
            report.written = converted.runs.len();
            Ok((
                runs_document(converted.runs.iter().map(Vec::as_slice)),
                report,
            ))
        }
    }
}

fn runs_document<'a>(runs: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = b"{\"runs\":[".to_vec();
    for (i, run) in runs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(run);
    }
    out.extend_from_slice(b"]}\n");
    out
}

fn decode_request(input: &[u8], from: FileFormat) -> Result<ExportTraceServiceRequest, String> {
    if from == FileFormat::OtlpProto {
        return ExportTraceServiceRequest::decode(input)
            .map_err(|e| format!("not an OTLP/protobuf ExportTraceServiceRequest: {e}"));
    }
    match crate::model::classify_json_body(input) {
        Ok(crate::model::JsonBodyKind::OtlpJson) => serde_json::from_slice(input)
            .map_err(|e| format!("not a valid OTLP/JSON ExportTraceServiceRequest: {e}")),
        Ok(crate::model::JsonBodyKind::DynamiqRuns) => {
            Err("this is a Dynamiq runs file: use --from dynamiq".to_owned())
        }
        Err(e) => Err(format!("not OTLP/JSON: {}", e.message)),
    }
}

fn encode_request(request: &ExportTraceServiceRequest, to: FileFormat) -> Result<Vec<u8>, String> {
    match to {
        FileFormat::OtlpProto => Ok(request.encode_to_vec()),
        FileFormat::OtlpJson => {
            let mut out =
                serde_json::to_vec(request).map_err(|e| format!("cannot write OTLP/JSON: {e}"))?;
            out.push(b'\n');
            Ok(out)
        }
        FileFormat::Dynamiq => Err("internal: runs are written by runs_document".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUCCESS: &[u8] = include_bytes!("../../tests/fixtures/workflow-success.json");
    const GENAI_JSON: &[u8] = include_bytes!("../../tests/fixtures/otlp/genai-semconv.json");

    #[test]
    fn dynamiq_to_otlp_and_back_is_exact() {
        for via in [FileFormat::OtlpJson, FileFormat::OtlpProto] {
            let (otlp, r1) = convert_file(SUCCESS, FileFormat::Dynamiq, via).unwrap();
            assert_eq!((r1.read, r1.written), (6, 6));
            let (runs, r2) = convert_file(&otlp, via, FileFormat::Dynamiq).unwrap();
            assert!(r2.problems.is_empty(), "{:?}", r2.problems);
            let a: serde_json::Value = serde_json::from_slice(SUCCESS).unwrap();
            let b: serde_json::Value = serde_json::from_slice(&runs).unwrap();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn otlp_json_to_runs_and_protobuf() {
        let (runs, r) =
            convert_file(GENAI_JSON, FileFormat::OtlpJson, FileFormat::Dynamiq).unwrap();
        assert_eq!(r.read, r.written);
        assert!(crate::model::parse_batch(runs.strip_suffix(b"\n").unwrap()).is_ok());
        let (pb, _) =
            convert_file(GENAI_JSON, FileFormat::OtlpJson, FileFormat::OtlpProto).unwrap();
        let (json, _) = convert_file(&pb, FileFormat::OtlpProto, FileFormat::OtlpJson).unwrap();
        let a: ExportTraceServiceRequest = serde_json::from_slice(GENAI_JSON).unwrap();
        let b: ExportTraceServiceRequest = serde_json::from_slice(&json).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn wrong_inputs_say_what_is_wrong() {
        let e = convert_file(SUCCESS, FileFormat::OtlpJson, FileFormat::Dynamiq).unwrap_err();
        assert!(e.contains("--from dynamiq"), "{e}");
        let e = convert_file(b"{}", FileFormat::Dynamiq, FileFormat::OtlpJson).unwrap_err();
        assert!(e.contains("not a valid Dynamiq batch"), "{e}");
        let e = convert_file(b"\xff\xff", FileFormat::OtlpProto, FileFormat::Dynamiq).unwrap_err();
        assert!(e.contains("protobuf"), "{e}");
    }
}
