//! Loading the whole configuration: defaults, file errors with their lines, environment
//! overrides, the OTLP variables, cross-section rules, the redacted `check-config` view.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::buffer::config::{FsyncPolicy, WhenFull};
use crate::sinks::dynamiq::config::Compression;
use crate::sinks::otlp::config::*;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml_str(
        text,
        Some(Path::new("test.toml")),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

#[test]
fn empty_file_gives_the_documented_defaults() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.ingest.http_addr.to_string(), "127.0.0.1:4318");
    assert_eq!(c.buffer.max_bytes, 1 << 30);
    assert_eq!(c.buffer.when_full, WhenFull::DropOldest);
    assert_eq!(c.buffer.fsync, FsyncPolicy::Always);
    assert_eq!(c.forward.max_delay, Duration::from_millis(200));
    assert_eq!(c.upstream.auth_mode, AuthMode::SidecarKey);
    assert_eq!(c.upstream.compression, Compression::None);
    assert_eq!(c.forward.dedup_entries, 100_000);
    assert_eq!(c.forward.dead_letter_max_bytes, 256 << 20);
    assert_eq!(c.forward.auth_hold_max_bytes, 64 << 20);
}

#[test]
fn delivery_bounds_below_1024_bytes_are_refused_naming_the_key() {
    for key in ["dead_letter_max_bytes", "auth_hold_max_bytes"] {
        let e = load(&format!("[forward]\n{key} = 100\n"), &[]).unwrap_err();
        assert_eq!(e.key, format!("forward.{key}"));
    }
}

#[test]
fn compression_and_dedup_entries_parse_and_bad_values_name_the_key() {
    let c = load(
        "[upstream]\ncompression = \"gzip\"\n[forward]\ndedup_entries = 0\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.upstream.compression, Compression::Gzip);
    assert_eq!(c.forward.dedup_entries, 0);
    let e = load("[upstream]\ncompression = \"br\"\n", &[]).unwrap_err();
    assert_eq!(e.key, "upstream.compression");
    let c = load(
        "",
        &[
            ("DYNAMIQ_SIDECAR_UPSTREAM_COMPRESSION", "gzip"),
            ("DYNAMIQ_SIDECAR_FORWARD_DEDUP_ENTRIES", "5"),
        ],
    )
    .unwrap();
    assert_eq!(c.upstream.compression, Compression::Gzip);
    assert_eq!(c.forward.dedup_entries, 5);
}

#[test]
fn the_shipped_config_file_loads_and_equals_the_defaults() {
    let text = include_str!("../../../config/dynamiq-sidecar.toml");
    let c = load(text, &[]).unwrap();
    assert_eq!(c.to_toml(), Config::default().to_toml());
}

#[test]
fn unknown_key_is_an_error_naming_the_key_and_line() {
    let e = load("[buffer]\npath = \"x\"\nmax_byte = 5\n", &[]).unwrap_err();
    assert_eq!(e.key, "buffer.max_byte");
    assert_eq!(e.origin.as_deref(), Some("test.toml:3"));
    assert!(e.message.contains("unknown field"), "{e}");
}

#[test]
fn wrong_type_names_the_key_and_line() {
    let e = load("[forward]\n\nmax_runs = \"many\"\n", &[]).unwrap_err();
    assert_eq!(e.key, "forward.max_runs");
    assert_eq!(e.origin.as_deref(), Some("test.toml:3"));
}

#[test]
fn bad_enum_value_names_the_key() {
    let e = load("[buffer]\nwhen_full = \"explode\"\n", &[]).unwrap_err();
    assert_eq!(e.key, "buffer.when_full");
    assert!(e.to_string().contains("test.toml:2"), "{e}");
}

#[test]
fn bad_duration_names_the_key() {
    let e = load("[forward]\nmax_delay = \"soon\"\n", &[]).unwrap_err();
    assert_eq!(e.key, "forward.max_delay");
    assert!(e.message.contains("invalid duration"), "{e}");
}

#[test]
fn syntax_error_names_the_file() {
    let e = load("[ingest]\n[buffer\n", &[]).unwrap_err();
    assert_eq!(e.origin.as_deref(), Some("test.toml:2"));
}

#[test]
fn env_overrides_win_and_keep_string_types() {
    let c = load(
        "[buffer]\nmax_bytes = 1000000000\n",
        &[
            ("DYNAMIQ_SIDECAR_BUFFER_MAX_BYTES", "200000000"),
            ("DYNAMIQ_SIDECAR_BUFFER_PATH", "12345"),
            ("DYNAMIQ_SIDECAR_FORWARD_MAX_DELAY", "1s"),
            ("DYNAMIQ_SIDECAR_INGEST_HTTP_ADDR", "127.0.0.1:9999"),
        ],
    )
    .unwrap();
    assert_eq!(c.buffer.max_bytes, 200_000_000);
    assert_eq!(c.buffer.path, PathBuf::from("12345"));
    assert_eq!(c.forward.max_delay, Duration::from_secs(1));
    assert_eq!(c.ingest.http_addr.port(), 9999);
}

#[test]
fn env_override_errors_name_the_variable() {
    let e = load("", &[("DYNAMIQ_SIDECAR_BUFFER_MAX_BYTES", "lots")]).unwrap_err();
    assert_eq!(e.key, "buffer.max_bytes");
    assert_eq!(
        e.origin.as_deref(),
        Some("env DYNAMIQ_SIDECAR_BUFFER_MAX_BYTES")
    );
    let e = load("", &[("DYNAMIQ_SIDECAR_BUFFER_COLOUR", "red")]).unwrap_err();
    assert_eq!(e.key, "buffer.colour");
}

#[test]
fn non_loopback_listener_requires_a_token() {
    let e = load("[ingest]\nhttp_addr = \"0.0.0.0:4318\"\n", &[]).unwrap_err();
    assert_eq!(e.key, "ingest.auth_token_file");
    load(
        "[ingest]\nhttp_addr = \"0.0.0.0:4318\"\nallow_unauthenticated = true\n",
        &[],
    )
    .unwrap();
    load(
        "[ingest]\nhttp_addr = \"0.0.0.0:4318\"\nauth_token_file = \"/run/token\"\n",
        &[],
    )
    .unwrap();
}

#[test]
fn cross_field_rules_are_checked() {
    let e = load("[buffer]\nmax_bytes = 10000\nsegment_bytes = 8192\n", &[]).unwrap_err();
    assert_eq!(e.key, "buffer.max_bytes");
    let e = load("[forward]\nruns_burst = 10\n", &[]).unwrap_err();
    assert_eq!(e.key, "forward.runs_burst");
    let e = load("[upstream]\nurl = \"ftp://x\"\n", &[]).unwrap_err();
    assert_eq!(e.key, "upstream.url");
}

#[test]
fn rendered_config_never_contains_a_key_value() {
    // The key lives only in the environment or its file; the Config has no field for it.
    let c = load("", &[("DYNAMIQ_ACCESS_KEY", "sk-secret-123")]).unwrap();
    assert!(!c.to_toml().contains("sk-secret-123"));
    assert!(!format!("{c:?}").contains("sk-secret-123"));
}

#[test]
fn credentials_in_urls_are_redacted_in_the_rendered_config_and_in_errors() {
    let c = load(
        "[upstream]\nurl = \"https://user:s3cret@collector.example\"\n[query]\nupstream_url = \"https://user:s3cret@api.example/\"\n[outputs.otlp]\nendpoint = \"http://u:s3cret@tempo:4318\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.upstream.url, "https://user:s3cret@collector.example");
    let text = c.to_toml();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("https://***@collector.example"), "{text}");
    assert!(text.contains("http://***@tempo:4318"), "{text}");
    for bad in [
        "[upstream]\nurl = \"ftp://user:s3cret@x\"\n",
        "[query]\nupstream_url = \"https://user:s3cret@\"\n",
        "[outputs.otlp]\nendpoint = \"https://u:s3cret@ho st\"\n",
    ] {
        let e = load(bad, &[]).unwrap_err().to_string();
        assert!(!e.contains("s3cret") && e.contains("***@"), "{e}");
    }
}

#[test]
fn no_outputs_section_means_no_otlp_output_even_with_otel_env() {
    let c = load(
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    )
    .unwrap();
    assert!(c.outputs.otlp.is_none());
    assert!(!c.to_toml().contains("outputs"));
}

#[test]
fn otlp_output_section_parses_with_defaults() {
    let c = load("[outputs.otlp]\n", &[]).unwrap();
    let o = c.outputs.otlp.unwrap();
    assert_eq!(o.endpoint, "http://127.0.0.1:4318");
    assert_eq!(o.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(o.service_name, "dynamiq");
    assert_eq!(o.max_spans, 512);
    assert_eq!(o.max_delay, Duration::from_millis(200));
    assert!(o.headers.0.is_empty());

    let c = load(
        "[outputs.otlp]\nendpoint = \"http://tempo:4317\"\nprotocol = \"grpc\"\ntimeout = \"3s\"\nservice_name = \"svc\"\nmax_spans = 10\nmax_delay = \"1s\"\n[outputs.otlp.headers]\nx-api-key = \"secret-value-1\"\n",
        &[],
    )
    .unwrap();
    let o = c.outputs.otlp.as_ref().unwrap();
    assert_eq!(o.protocol, OtlpProtocol::Grpc);
    assert_eq!(o.timeout, Duration::from_secs(3));
    assert_eq!(o.max_spans, 10);
    assert_eq!(o.headers.0["x-api-key"], "secret-value-1");
    // Header values never show in check-config or Debug.
    assert!(!c.to_toml().contains("secret-value-1"), "{}", c.to_toml());
    assert!(c.to_toml().contains("x-api-key"));
    assert!(!format!("{c:?}").contains("secret-value-1"));
}

#[test]
fn otlp_output_errors_name_the_key_and_line() {
    let e = load("[outputs.otlp]\nprotocol = \"http/json\"\n", &[]).unwrap_err();
    assert_eq!(e.key, "outputs.otlp.protocol");
    assert_eq!(e.origin.as_deref(), Some("test.toml:2"));
    let e = load("[outputs.otlp]\nendpont = \"x\"\n", &[]).unwrap_err();
    assert_eq!(e.key, "outputs.otlp.endpont");
    let e = load("[outputs.otlp]\n\nendpoint = \"ftp://x\"\n", &[]).unwrap_err();
    assert_eq!(e.key, "outputs.otlp.endpoint");
    assert_eq!(e.origin.as_deref(), Some("test.toml:3"));
    let e = load("[outputs.otlp]\nmax_spans = 0\n", &[]).unwrap_err();
    assert_eq!(e.key, "outputs.otlp.max_spans");
    let e = load("[outputs.otlp.headers]\n\"bad name\" = \"v\"\n", &[]).unwrap_err();
    assert_eq!(e.key, "outputs.otlp.headers");
    let e = load("[outputs]\nkafka = 1\n", &[]).unwrap_err();
    assert_eq!(e.key, "outputs.kafka");
}

#[test]
fn otel_env_overrides_the_otlp_output() {
    let text = "[outputs.otlp]\nendpoint = \"http://file:4318\"\n[outputs.otlp.headers]\na = \"file\"\nb = \"file\"\n";
    let c = load(
        text,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=x%3Dy%2Cz, c = 3"),
        ],
    )
    .unwrap();
    let o = c.outputs.otlp.unwrap();
    assert_eq!(o.endpoint, "http://env:4318/v1/traces");
    assert_eq!(o.headers.0["a"], "x=y,z");
    assert_eq!(o.headers.0["b"], "file");
    assert_eq!(o.headers.0["c"], "3");

    // The traces endpoint wins and is used as is; gRPC gets no path.
    let c = load(
        text,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/custom"),
        ],
    )
    .unwrap();
    assert_eq!(c.outputs.otlp.unwrap().endpoint, "http://t:1/custom");
    let c = load(
        text,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    )
    .unwrap();
    let o = c.outputs.otlp.unwrap();
    assert_eq!(o.endpoint, "http://env:4317");
    assert_eq!(o.protocol, OtlpProtocol::Grpc);
}

#[test]
fn otlp_ca_file_must_hold_certificates_and_comes_from_otel_env_too() {
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem");
    let c = load(&format!("[outputs.otlp]\nca_file = {ca:?}\n"), &[]).unwrap();
    assert_eq!(c.outputs.otlp.unwrap().ca_file, Some(PathBuf::from(ca)));

    let e = load("[outputs.otlp]\n\nca_file = \"/nonexistent/ca.pem\"\n", &[]).unwrap_err();
    assert_eq!(e.key, "outputs.otlp.ca_file");
    assert!(e.message.contains("cannot read"), "{}", e.message);
    let not_pem = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let e = load(&format!("[outputs.otlp]\nca_file = {not_pem:?}\n"), &[]).unwrap_err();
    assert_eq!(e.key, "outputs.otlp.ca_file");
    assert!(e.message.contains("no PEM certificate"), "{}", e.message);

    let env = [
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/general.pem"),
        ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", ca),
    ];
    let c = load("[outputs.otlp]\n", &env).unwrap();
    assert_eq!(c.outputs.otlp.unwrap().ca_file, Some(PathBuf::from(ca)));
    let e = load("[outputs.otlp]\n", &env[..1]).unwrap_err();
    assert_eq!(e.key, "outputs.otlp.ca_file");
}

#[test]
fn otel_env_errors_name_the_variable_and_hide_values() {
    let e = load(
        "[outputs.otlp]\n",
        &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
    )
    .unwrap_err();
    assert_eq!(e.key, "outputs.otlp.protocol");
    assert_eq!(e.origin.as_deref(), Some("env OTEL_EXPORTER_OTLP_PROTOCOL"));
    let e = load(
        "[outputs.otlp]\n",
        &[("OTEL_EXPORTER_OTLP_HEADERS", "secret-token-value")],
    )
    .unwrap_err();
    assert_eq!(e.key, "outputs.otlp.headers");
    assert!(!e.to_string().contains("secret-token-value"), "{e}");
    let e = load(
        "[outputs.otlp]\n",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")],
    )
    .unwrap_err();
    assert_eq!(e.key, "outputs.otlp.endpoint");
    assert_eq!(e.origin.as_deref(), Some("env OTEL_EXPORTER_OTLP_ENDPOINT"));
}

#[test]
fn the_config_file_variable_is_not_a_key_override() {
    let c = load(
        "",
        &[("DYNAMIQ_SIDECAR_CONFIG", "/etc/dynamiq-sidecar.toml")],
    )
    .unwrap();
    assert_eq!(c.buffer.path, Config::default().buffer.path);
}

#[test]
fn debug_output_hides_url_credentials_and_header_values() {
    let c = load(
        "[upstream]\nurl = \"https://user:s3cret-pw@collector.example\"\n[query]\nupstream_url = \"https://u:api-pw@api.example\"\n[outputs.otlp]\nendpoint = \"https://o:otlp-pw@otlp.example\"\nheaders = { authorization = \"Bearer hdr-secret\" }\n",
        &[],
    )
    .unwrap();
    let shown = format!("{c:?}");
    for secret in ["s3cret-pw", "api-pw", "otlp-pw", "hdr-secret"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains("collector.example") && shown.contains("***"),
        "{shown}"
    );
    let target = c.outputs.otlp.as_ref().unwrap().resolve().unwrap();
    let shown = format!("{target:?}");
    assert!(
        !shown.contains("otlp-pw") && !shown.contains("hdr-secret"),
        "{shown}"
    );
}
