//! The file-system seam: every write-side operation of the buffer (segment appends, fsyncs,
//! truncation, unlink, cursor files) goes through [`Fs`] so tests can inject faults (ENOSPC,
//! short writes, failing or slow fsyncs). Reads use `std::fs` directly: a read failure is handled
//! like corruption or surfaced as an I/O error, and needs no injection seam.
//!
//! All files are created with mode 0600 (they may hold client keys), directories with 0700
//! (see [`crate::private_fs`]).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, ErrorKind, IoSlice, Write};
use std::path::Path;

use crate::private_fs::file_options;

/// A segment file opened for appending (`O_APPEND`: every write goes to the current end, so
/// after [`AppendFile::set_len`] the next write lands at the new end).
pub(crate) trait AppendFile: Send + fmt::Debug {
    /// One `writev`; may write fewer bytes than given (short write).
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// `fdatasync`.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Truncates (or extends) the file. Shrinking never needs free space.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Current length of the file.
    fn len(&self) -> io::Result<u64>;
}

/// Write-side file-system operations.
pub(crate) trait Fs: Send + Sync + fmt::Debug {
    /// Opens a segment for appending, creating it (mode 0600) if missing.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;
    /// Creates or replaces `path` with `bytes` and fsyncs it (not atomic by itself; see
    /// `cursor::write_cursor` for the rename dance).
    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// `rename(2)`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsyncs a directory so entries created, renamed or removed in it are durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// `unlink(2)`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl AppendFile for RealFile {
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl Fs for RealFs {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let f = file_options().create(true).append(true).open(path)?;
        Ok(Box::new(RealFile(f)))
    }
    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut f = file_options()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
}

/// Whether `e` means the disk (or the quota) is full: treated like a full buffer, not a failure.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
    )
}

/// A copy of `e` (an `io::Error` is not `Clone`), keeping kind and message.
pub(crate) fn clone_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

/// Writes all of `bufs`, looping over short writes. On error some prefix may have been written;
/// the caller truncates it away.
pub(crate) fn write_all_vectored(
    file: &mut dyn AppendFile,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    while !bufs.is_empty() {
        match file.write_vectored(bufs) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::WriteZero,
                    "segment write wrote 0 bytes",
                ));
            }
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fault-injecting [`Fs`] for tests.

    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    use super::*;

    /// What to break.
    #[derive(Debug, Default)]
    pub struct Faults {
        /// Bytes that may still be written to segments before writes fail with ENOSPC (a full
        /// disk); removing a segment gives its bytes back. `None` = unlimited.
        pub space_left: Option<u64>,
        /// Largest number of bytes one `writev` accepts (short writes).
        pub max_write: Option<usize>,
        /// Bytes that may still be written to segments before writes fail with EIO.
        pub eio_after: Option<u64>,
        /// The next this-many fsyncs fail with EIO.
        pub fail_syncs: u32,
        /// Sleep in every fsync (to make group commit observable).
        pub sync_delay: Option<Duration>,
    }

    /// A shared, adjustable fault plan over the real file system.
    #[derive(Debug, Clone, Default)]
    pub struct FaultFs {
        /// The faults; adjust at any time.
        pub faults: Arc<Mutex<Faults>>,
        /// Number of file fsyncs performed (not counting directories).
        pub syncs: Arc<AtomicU64>,
        /// Number of `write_synced` calls (cursor writes).
        pub synced_writes: Arc<AtomicU64>,
    }

    impl FaultFs {
        /// Runs `f` on the fault plan.
        pub fn with<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
            f(&mut self.faults.lock().unwrap_or_else(PoisonError::into_inner))
        }
    }

    #[derive(Debug)]
    struct FaultFile {
        inner: Box<dyn AppendFile>,
        fs: FaultFs,
    }

    fn eio() -> io::Error {
        io::Error::other("injected I/O error")
    }

    impl AppendFile for FaultFile {
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            let allowed = self.fs.with(|f| {
                let mut allowed = total;
                if let Some(left) = f.eio_after {
                    if left == 0 && total > 0 {
                        f.eio_after = None;
                        return Err(eio());
                    }
                    allowed = allowed.min(usize::try_from(left).unwrap_or(usize::MAX));
                }
                if let Some(m) = f.max_write {
                    allowed = allowed.min(m.max(1));
                }
                if let Some(left) = f.space_left {
                    if left == 0 && total > 0 {
                        return Err(io::Error::from(ErrorKind::StorageFull));
                    }
                    allowed = allowed.min(usize::try_from(left).unwrap_or(usize::MAX));
                }
                Ok(allowed)
            })?;
            // Write exactly `allowed` bytes (a prefix of the slices).
            let mut written = 0;
            for b in bufs {
                if written >= allowed {
                    break;
                }
                let take = b.len().min(allowed - written);
                super::write_all_vectored(&mut *self.inner, &mut [IoSlice::new(&b[..take])])?;
                written += take;
            }
            self.fs.with(|f| {
                for left in [f.space_left.as_mut(), f.eio_after.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    *left -= written as u64;
                }
            });
            Ok(written)
        }
        fn sync_data(&mut self) -> io::Result<()> {
            let (fail, delay) = self.fs.with(|f| {
                let fail = f.fail_syncs > 0;
                if fail {
                    f.fail_syncs -= 1;
                }
                (fail, f.sync_delay)
            });
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
            if fail {
                return Err(eio());
            }
            self.fs.syncs.fetch_add(1, Ordering::SeqCst);
            self.inner.sync_data()
        }
        fn set_len(&mut self, len: u64) -> io::Result<()> {
            let before = self.inner.len()?;
            self.inner.set_len(len)?;
            self.fs.with(|f| {
                if let Some(left) = f.space_left.as_mut() {
                    *left = (*left + before).saturating_sub(len);
                }
            });
            Ok(())
        }
        fn len(&self) -> io::Result<u64> {
            self.inner.len()
        }
    }

    impl Fs for FaultFs {
        fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
            Ok(Box::new(FaultFile {
                inner: RealFs.open_append(path)?,
                fs: self.clone(),
            }))
        }
        fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
            self.synced_writes.fetch_add(1, Ordering::SeqCst);
            RealFs.write_synced(path, bytes)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            RealFs.rename(from, to)
        }
        fn sync_dir(&self, path: &Path) -> io::Result<()> {
            RealFs.sync_dir(path)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            RealFs.remove_file(path)?;
            self.with(|f| {
                if let Some(left) = f.space_left.as_mut() {
                    *left += len;
                }
            });
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FaultFs;
    use super::*;
    use crate::private_fs::create_dir_all;

    #[test]
    fn short_writes_are_completed_by_write_all_vectored() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultFs::default();
        fs.with(|f| f.max_write = Some(3));
        let mut file = fs.open_append(&dir.path().join("a")).unwrap();
        let (a, b) = (b"hello ".to_vec(), b"world".to_vec());
        write_all_vectored(&mut *file, &mut [IoSlice::new(&a), IoSlice::new(&b)]).unwrap();
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"hello world");
    }

    #[test]
    fn a_full_disk_writes_a_prefix_then_reports_no_space() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultFs::default();
        fs.with(|f| f.space_left = Some(4));
        let mut file = fs.open_append(&dir.path().join("a")).unwrap();
        let e = write_all_vectored(&mut *file, &mut [IoSlice::new(b"123456")]).unwrap_err();
        assert!(is_no_space(&e));
        assert_eq!(file.len().unwrap(), 4);
        file.set_len(0).unwrap();
        assert_eq!(fs.with(|f| f.space_left), Some(4));
    }

    #[test]
    fn files_and_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("x/y");
        create_dir_all(&sub).unwrap();
        RealFs.open_append(&sub.join("f")).unwrap();
        RealFs.write_synced(&sub.join("g"), b"1").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&dir.path().join("x")), 0o700);
        assert_eq!(mode(&sub.join("f")), 0o600);
        assert_eq!(mode(&sub.join("g")), 0o600);
    }
}
