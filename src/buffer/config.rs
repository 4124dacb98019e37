//! `[buffer]`: the disk buffer's section of the configuration, with its defaults and checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::values::duration_str;
use crate::config::{ConfigError, Source};

/// What the buffer does when `max_bytes` (or the disk) is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest segment (counted as dropped) to make room (default).
    DropOldest,
    /// Refuse new batches with 429/503 + `Retry-After` until the forwarder frees space.
    Block,
}

/// When appended records are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Before every acknowledgement, grouped across concurrent requests (default; survives power loss).
    Always,
    /// Every `fsync_interval`; a power loss may lose up to that much acknowledged data.
    Interval,
    /// Never explicitly; the OS decides. Survives a process crash, not a power loss.
    Never,
}

/// `[buffer]`: the disk buffer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Directory of the buffer (created if missing).
    pub path: PathBuf,
    /// Bound on the bytes of all segment files.
    pub max_bytes: u64,
    /// `drop_oldest` or `block`.
    pub when_full: WhenFull,
    /// `always`, `interval` or `never`.
    pub fsync: FsyncPolicy,
    /// Period of the `interval` fsync policy.
    #[serde(with = "duration_str")]
    pub fsync_interval: Duration,
    /// Size at which a segment file is closed and a new one started.
    pub segment_bytes: u64,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./data"),
            max_bytes: 1024 * 1024 * 1024,
            when_full: WhenFull::DropOldest,
            fsync: FsyncPolicy::Always,
            fsync_interval: Duration::from_secs(1),
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

impl BufferConfig {
    /// Checks the section (`at` locates the keys).
    pub fn validate(&self, at: &Source<'_>) -> Result<(), ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(at.error("buffer.path", "must not be empty"));
        }
        if self.segment_bytes < 4096 {
            return Err(at.error("buffer.segment_bytes", "must be at least 4096"));
        }
        if self.max_bytes < 2 * self.segment_bytes {
            return Err(at.error(
                "buffer.max_bytes",
                format!(
                    "must be at least twice buffer.segment_bytes ({}), got {}",
                    self.segment_bytes, self.max_bytes
                ),
            ));
        }
        Ok(())
    }
}
