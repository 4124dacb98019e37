//! Per-consumer acknowledgement cursors: one small file per consumer, replaced atomically.
//!
//! ```text
//!  file `cursor-<escaped consumer name>`, 20 bytes:
//!  0                 8                  16        20
//!  ┌─────────────────┬──────────────────┬─────────┐
//!  │ magic "DQCURS01"│ acked_through u64│ crc32   │   crc32 of bytes 0..16
//!  │                 │ little-endian    │ u32 LE  │
//!  └─────────────────┴──────────────────┴─────────┘
//! ```
//! `acked_through = N`: every record with `seq <= N` is done for this consumer (0 = nothing).
//! A value above [`MAX_SEQ`] is corrupt, like a bad checksum.
//!
//! Written as: write `cursor-<name>.tmp`, fsync it, rename over `cursor-<name>`, fsync the
//! directory. A crash leaves either the old or the new cursor (plus maybe a stale `.tmp`, which
//! recovery deletes). A missing or corrupt cursor means "start from the oldest record available"
//! (at-least-once redelivery, never loss).
//!
//! Consumer names are escaped into file names: `[A-Za-z0-9_-]` are kept, every other byte is
//! `%XX`; names whose escaped form would exceed 200 bytes are cut and suffixed with a checksum
//! of the full name, so any string is a usable consumer name.
//!
//! WARNING: on-disk format. Never reorder or retype the fields; a new layout gets a new magic.

use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use super::io::Fs;
use super::record::MAX_SEQ;

/// Prefix of cursor files.
pub(crate) const PREFIX: &str = "cursor-";
/// Suffix of the temporary file a cursor is written to before the rename.
pub(crate) const TMP_SUFFIX: &str = ".tmp";
const MAGIC: [u8; 8] = *b"DQCURS01";
/// Size of a cursor file.
pub(crate) const CURSOR_LEN: usize = 20;
const MAX_ESCAPED: usize = 200;

/// Why a cursor could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CursorError {
    /// Reading the file failed (permissions, I/O). Retrying may help.
    #[error("cannot read cursor {path}: {source}")]
    Io {
        /// The cursor file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file exists but is not a valid cursor (wrong size, magic or checksum). Not
    /// retryable; the consumer restarts from the oldest record available.
    #[error("cursor {path} is corrupt: {reason}")]
    Corrupt {
        /// The cursor file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Escapes a consumer name into the part of a file name after [`PREFIX`].
pub(crate) fn escape(consumer: &str) -> String {
    let mut out = String::with_capacity(consumer.len());
    for b in consumer.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX_ESCAPED {
        out.truncate(MAX_ESCAPED - 9);
        out.push_str(&format!("~{:08x}", crc32fast::hash(consumer.as_bytes())));
    }
    out
}

/// Inverse of [`escape`] (lossy for cut names).
pub(crate) fn unescape(escaped: &str) -> String {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = escaped
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// File name of `consumer`'s cursor.
pub(crate) fn file_name(consumer: &str) -> String {
    format!("{PREFIX}{}", escape(consumer))
}

/// The consumer a directory entry is the cursor of, or `None` (temp files included).
pub(crate) fn parse_file_name(name: &str) -> Option<String> {
    let escaped = name.strip_prefix(PREFIX)?;
    if escaped.ends_with(TMP_SUFFIX) {
        return None;
    }
    Some(unescape(escaped))
}

/// Whether a directory entry is a leftover temporary cursor file.
pub(crate) fn is_tmp_file_name(name: &str) -> bool {
    name.starts_with(PREFIX) && name.ends_with(TMP_SUFFIX)
}

/// Encodes a cursor.
pub(crate) fn encode(acked_through: u64) -> [u8; CURSOR_LEN] {
    let mut b = [0u8; CURSOR_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..16].copy_from_slice(&acked_through.to_le_bytes());
    let crc = crc32fast::hash(&b[0..16]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a cursor file's contents.
pub(crate) fn decode(bytes: &[u8]) -> Result<u64, &'static str> {
    let b: &[u8; CURSOR_LEN] = bytes.try_into().map_err(|_| "wrong size")?;
    if b[0..8] != MAGIC {
        return Err("bad magic");
    }
    if crc32fast::hash(&b[0..16]).to_le_bytes() != b[16..20] {
        return Err("checksum mismatch");
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[8..16]);
    let acked_through = u64::from_le_bytes(v);
    if acked_through > MAX_SEQ {
        return Err("acknowledged sequence number out of range");
    }
    Ok(acked_through)
}

/// Reads a cursor file: `Ok(None)` if it does not exist.
pub(crate) fn read_path(path: &Path) -> Result<Option<u64>, CursorError> {
    match fs::read(path) {
        Ok(bytes) => decode(&bytes)
            .map(Some)
            .map_err(|reason| CursorError::Corrupt {
                path: path.to_path_buf(),
                reason,
            }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CursorError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads `consumer`'s cursor in `dir`.
pub(crate) fn read(dir: &Path, consumer: &str) -> Result<Option<u64>, CursorError> {
    read_path(&dir.join(file_name(consumer)))
}

/// Atomically replaces `consumer`'s cursor: temp file, fsync, rename, fsync directory.
pub(crate) fn write(fs: &dyn Fs, dir: &Path, consumer: &str, acked_through: u64) -> io::Result<()> {
    let name = file_name(consumer);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    fs.write_synced(&tmp, &encode(acked_through))?;
    fs.rename(&tmp, &dir.join(name))?;
    fs.sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::super::io::RealFs;
    use super::*;

    #[test]
    fn a_cursor_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), "dynamiq").unwrap(), None);
        write(&RealFs, dir.path(), "dynamiq", 42).unwrap();
        write(&RealFs, dir.path(), "dynamiq", 43).unwrap();
        assert_eq!(read(dir.path(), "dynamiq").unwrap(), Some(43));
        assert!(dir.path().join("cursor-dynamiq").exists());
        assert!(!dir.path().join("cursor-dynamiq.tmp").exists());
    }

    #[test]
    fn a_corrupt_cursor_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name("x"));
        let mut bytes = encode(7);
        bytes[9] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(
            read(dir.path(), "x"),
            Err(CursorError::Corrupt { .. })
        ));
        fs::write(&path, b"short").unwrap();
        assert!(matches!(
            read(dir.path(), "x"),
            Err(CursorError::Corrupt { .. })
        ));
        // Intact checksum, impossible value: corrupt too.
        fs::write(&path, encode(u64::MAX)).unwrap();
        assert!(matches!(
            read(dir.path(), "x"),
            Err(CursorError::Corrupt { reason, .. }) if reason.contains("out of range")
        ));
        fs::write(&path, encode(MAX_SEQ)).unwrap();
        assert_eq!(read(dir.path(), "x").unwrap(), Some(MAX_SEQ));
    }

    #[test]
    fn any_consumer_name_becomes_a_safe_file_name_and_back() {
        for name in ["dynamiq", "otlp", "a/b", "../x", "x.tmp", "", "é ü", "%41"] {
            let f = file_name(name);
            assert!(!f.contains('/') && !f.contains('.'), "{f}");
            assert_eq!(parse_file_name(&f).as_deref(), Some(name));
        }
        let long = "y".repeat(1000);
        assert!(file_name(&long).len() <= PREFIX.len() + MAX_ESCAPED);
        assert_ne!(file_name(&long), file_name(&"y".repeat(999)));
        assert!(is_tmp_file_name("cursor-x.tmp"));
        assert_eq!(parse_file_name("cursor-x.tmp"), None);
        assert_eq!(parse_file_name("LOCK"), None);
    }
}
