//! The gRPC codec of the OTLP output: the request goes out as the protobuf bytes
//! [`crate::convert::runs_to_request_bytes`] already wrote (no `ExportTraceServiceRequest`
//! struct is built or re-encoded, and a retry re-sends the same `Bytes`), the answer is decoded
//! with prost as the generated client would.
//!
//! Guarantees: the frame sent is exactly the given bytes; a response that does not decode is an
//! `INTERNAL` status, never a panic.

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// The `TraceService/Export` method path.
pub const EXPORT_PATH: &str = crate::model::otlp::GRPC_EXPORT_PATH;

/// Pre-encoded request out, prost-decoded response in.
#[derive(Debug, Default, Clone, Copy)]
pub struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = PreEncoded;
    type Decoder = PreEncoded;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        PreEncoded
    }
}

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for PreEncoded {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode the export response: {e}")))
    }
}
