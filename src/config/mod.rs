//! The configuration machinery every component's section uses: reading a TOML document into a
//! typed value, `<PREFIX><SECTION>_<KEY>` environment overrides, and errors that name the key
//! and where it came from. It knows no component: each one keeps its section type beside its
//! code (`buffer::config::BufferConfig`, ...) and the application assembles them
//! (`app::config::Config`).
//!
//! Guarantees: every error names the offending key and, where the key came from a file, the
//! file and line (`config/dynamiq-sidecar.toml:23: buffer.max_bytes: ...`); where it came from
//! the environment, the variable. Unknown keys are errors (sections use
//! `deny_unknown_fields`), so a typo never silently falls back to a default. Messages quote
//! URLs with their credentials as `***`.

mod env;
mod error;
mod source;
pub mod values;

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use env::EnvOverrides;
pub use error::ConfigError;
pub use source::Source;

/// Parses `text` (with `file` used only in messages) into `T`, then applies `overrides` from
/// `env`. Returns the value and where each key set from the environment came from.
pub fn parse<T>(
    text: &str,
    file: Option<&Path>,
    env: &[(String, String)],
    overrides: &EnvOverrides<'_>,
) -> Result<(T, Vec<(String, String)>), ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let file_origin = file.map(|p| p.display().to_string());
    // Deserializing the text itself gives spans, hence the line and the key of an error.
    let value: T = toml::from_str(text).map_err(|e| ConfigError {
        origin: match (&file_origin, e.span()) {
            (Some(f), Some(span)) => Some(format!("{f}:{}", source::line_of(text, span.start))),
            (f, _) => f.clone(),
        },
        key: e
            .span()
            .map(|s| source::key_at(text, s.start))
            .unwrap_or_default(),
        message: e.message().trim().to_string(),
    })?;
    let mut table: toml::Table = toml::from_str(text).unwrap_or_default();
    let env_keys = overrides.apply::<T>(&mut table, env)?;
    if env_keys.is_empty() {
        return Ok((value, env_keys));
    }
    let value = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| {
            // Overrides were checked one by one in `apply`; this is a fallback.
            ConfigError {
                origin: Some("environment".into()),
                key: String::new(),
                message: e.message().trim().to_string(),
            }
        })?;
    Ok((value, env_keys))
}
