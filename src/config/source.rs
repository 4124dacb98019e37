//! Where the configuration text came from, so that an error can name the file and line of a key
//! (or the environment variable that set it).

use std::path::Path;

use super::ConfigError;

/// The configuration's text and the keys the environment set, for error messages.
pub struct Source<'a> {
    file: Option<&'a Path>,
    text: &'a str,
    /// Keys set from the environment: (dotted key, variable).
    env_keys: Vec<(String, String)>,
}

impl<'a> Source<'a> {
    /// `text` as read from `file` (if any), with the keys `env_keys` set from the environment.
    pub fn new(file: Option<&'a Path>, text: &'a str, env_keys: Vec<(String, String)>) -> Self {
        Self {
            file,
            text,
            env_keys,
        }
    }

    /// `file:line` of `section.key`, `env VAR` if the environment set it, or the file alone.
    pub fn origin_of(&self, dotted: &str) -> Option<String> {
        if let Some((_, var)) = self.env_keys.iter().find(|(k, _)| k == dotted) {
            return Some(format!("env {var}"));
        }
        let file = self.file?.display().to_string();
        match find_key_line(self.text, dotted) {
            Some(line) => Some(format!("{file}:{line}")),
            None => Some(file),
        }
    }

    /// An error about `key`, located.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.origin_of(key),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// 1-based line of `key` inside `[section]` (or `[a.b]` for `a.b.key`), by a plain text scan.
fn find_key_line(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.rsplit_once('.')?;
    let mut in_section = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[') {
            in_section = header.trim_end_matches(']').trim() == section;
            continue;
        }
        if in_section && key_name(line) == key {
            return Some(i + 1);
        }
    }
    None
}

/// The key written on a `key = value` line (quotes removed).
fn key_name(line: &str) -> &str {
    line.split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"')
}

/// 1-based line number of byte `offset` in `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The dotted key written on the line holding byte `offset`: the nearest `[section]` header
/// above it, plus the name before `=` on that line.
pub(super) fn key_at(text: &str, offset: usize) -> String {
    let line_no = line_of(text, offset);
    let mut section = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[') {
            section = header.trim_end_matches(']').trim().to_string();
        }
        if i + 1 == line_no {
            if line.starts_with('[') {
                return section;
            }
            let name = key_name(line);
            return if section.is_empty() {
                name.to_string()
            } else {
                format!("{section}.{name}")
            };
        }
    }
    section
}
