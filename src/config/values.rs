//! Value types and serde adapters the sections share: durations written as humantime strings,
//! URLs shown without credentials, http(s) URL checks, positive numbers.

use crate::secret::redact_url;

/// Serde adapter for durations written as humantime strings (`"200ms"`, `"24h"`).
pub mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as a humantime string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads a humantime string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); use e.g. \"200ms\", \"10s\", \"24h\""
            ))
        })
    }
}

/// `Debug` of a section as its serialised form, which `check-config` prints: URLs with their
/// credentials as `***`, header values redacted. For the sections holding URLs, so that a `{:?}`
/// never shows what `check-config` hides.
pub fn debug_serialized<T: serde::Serialize>(
    name: &str,
    section: &T,
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    match serde_json::to_string(section) {
        Ok(text) => write!(f, "{name} {text}"),
        Err(_) => f.write_str(name),
    }
}

/// A URL as `check-config` prints it: credentials as `***`.
pub fn serialize_redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

/// `url` parsed, if it is an `http://` or `https://` URL with a host; else what is wrong (the
/// URL quoted without its credentials).
pub fn http_url(url: &str) -> Result<reqwest::Url, String> {
    let shown = redact_url(url);
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("not a valid URL ({e}): {shown:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "must be an http:// or https:// URL with a host, got {shown:?}"
        ));
    }
    Ok(parsed)
}
