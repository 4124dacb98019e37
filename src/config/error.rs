//! [`ConfigError`]: what is wrong, with the key and where it came from.

use std::fmt;

/// A configuration error that names the key and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `file:line` or `env VAR`, when known.
    pub origin: Option<String>,
    /// Dotted key, e.g. `buffer.max_bytes`; empty for whole-file errors (syntax).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}
