//! Small state files the sidecar keeps beside the buffer (the duplicate-suppression memory, the
//! trace index snapshot): written whole and atomically, read back only if intact.
//!
//! Guarantees: [`write`] leaves either the old file or the complete new one (temporary file,
//! fsync, rename, directory fsync); [`read`] returns the body only when its trailing CRC32
//! matches, so a torn or corrupted file is reported, never half-loaded. Files are 0600 and a
//! directory [`write`] creates is 0700 ([`crate::private_fs`]). These files are conveniences:
//! callers log and ignore a bad one.

use std::io::{self, Write};
use std::path::Path;

use crate::private_fs;

/// Writes `body` plus its CRC32 to `path` atomically, creating the directory if needed.
pub fn write(path: &Path, body: &[u8]) -> io::Result<()> {
    write_with(path, |w| w.write_all(body))
}

/// Like [`write`], with the body streamed by `fill` (no copy of a large body in memory).
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        private_fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    // A leftover temporary file would keep its mode; a fresh one is created 0600.
    remove(Path::new(&tmp))?;
    {
        let file = private_fs::file_options()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let mut w = CrcWriter {
            inner: io::BufWriter::with_capacity(1 << 16, file),
            crc: crc32fast::Hasher::new(),
        };
        fill(&mut w)?;
        let crc = w.crc.finalize();
        let mut f = w
            .inner
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        f.write_all(&crc.to_le_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Passes writes through and checksums them.
struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What [`read`] found wrong.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
    /// Too short for a checksum, or the checksum does not match.
    #[error("checksum mismatch (torn or corrupted file)")]
    Checksum,
}

/// The body of the file at `path` (without its CRC), `Ok(None)` if there is no file.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, ReadError> {
    let mut bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(body_len) = bytes.len().checked_sub(4) else {
        return Err(ReadError::Checksum);
    };
    let crc = u32::from_le_bytes(
        bytes[body_len..]
            .try_into()
            .map_err(|_| ReadError::Checksum)?,
    );
    bytes.truncate(body_len);
    if crc32fast::hash(&bytes) != crc {
        return Err(ReadError::Checksum);
    }
    Ok(Some(bytes))
}

/// Removes the file at `path`; a missing file is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_body_reads_back_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.bin");
        assert!(read(&path).unwrap().is_none());
        write(&path, b"hello state").unwrap();
        assert_eq!(read(&path).unwrap().unwrap(), b"hello state");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(read(&path), Err(ReadError::Checksum)));
        std::fs::write(&path, b"ab").unwrap();
        assert!(matches!(read(&path), Err(ReadError::Checksum)));
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert!(read(&path).unwrap().is_none());
    }

    #[test]
    fn state_files_and_their_directory_are_private_even_over_a_loose_leftover() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/s.bin");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        std::fs::create_dir(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("state/s.bin.tmp"), b"old").unwrap();
        std::fs::set_permissions(
            dir.path().join("state/s.bin.tmp"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        write(&path, b"x").unwrap();
        assert_eq!(mode(&path), 0o600);
        let fresh = dir.path().join("new/deeper/s.bin");
        write(&fresh, b"y").unwrap();
        assert_eq!(mode(&fresh), 0o600);
        assert_eq!(mode(&dir.path().join("new")), 0o700);
        assert_eq!(mode(&dir.path().join("new/deeper")), 0o700);
    }
}
