//! The OTLP wire names the receivers and the OTLP sink share: where traces are posted over
//! HTTP and the gRPC method that exports them.

/// OTLP/HTTP path of trace exports.
pub const HTTP_TRACES_PATH: &str = "/v1/traces";

/// OTLP/HTTP path of metric exports.
pub const HTTP_METRICS_PATH: &str = "/v1/metrics";

/// OTLP/gRPC method path of `MetricsService/Export`.
pub const GRPC_METRICS_EXPORT_PATH: &str =
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// OTLP/gRPC method path of `TraceService/Export`.
pub const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
