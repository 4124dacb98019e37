//! Permissions of everything the sidecar keeps under `buffer.path`: segments, cursors, the lock,
//! `corrupt/` copies, dead letters, the duplicate-suppression and trace-index state files. They
//! hold trace data and, in passthrough mode, client keys, so they are the sidecar user's alone.
//!
//! Guarantees: files are created 0600 ([`file_options`]), directories 0700
//! ([`create_dir_all`]), whatever the umask. [`ensure_private_dir`] (run on the buffer directory
//! at start-up and on the dead-letter directory when it is opened) also tightens an existing
//! directory that group or others can reach to 0700, and the files and directories below it
//! (dropping their group/other bits), with a warning saying what changed, so a buffer written
//! by an older build or a hand-made `mkdir` is private from then on.
//!
//! Fails: [`ensure_private_dir`] refuses, with an error naming the directory, its mode and what
//! to do, when the directory is reachable by others and cannot be chmod-ed (the sidecar's user
//! does not own it). Entries below a private directory that cannot be tightened are only logged:
//! the directory's 0700 already keeps everyone else out.
//!
//! Unix only, like the buffer itself (modes, `flock`, `pread`).

use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every file the sidecar creates under `buffer.path`.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory the sidecar creates under `buffer.path`.
pub const DIR_MODE: u32 = 0o700;
/// Permission bits that let someone other than the owner in.
const GROUP_OTHER: u32 = 0o077;
/// How deep [`ensure_private_dir`] looks below the directory (the buffer's tree is two deep).
const MAX_DEPTH: usize = 4;

/// `OpenOptions` that create a missing file with mode 0600 (an existing file keeps its mode).
pub fn file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Creates `path` and missing parents with mode 0700 (existing directories are left as they are).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// What [`ensure_private_dir`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tightened {
    /// The directory's mode before, if it had to be tightened.
    pub dir_was: Option<u32>,
    /// Entries below it whose group/other bits were dropped.
    pub entries: u64,
}

/// Creates `dir` (0700) if missing; if group or others can reach it, chmods it to 0700 and drops
/// the group/other bits of everything below it. Logs a warning naming what changed.
///
/// Errors: `dir` cannot be created or inspected, or it is reachable by others and the chmod
/// fails (an [`io::Error`] of the same kind whose message says what to do).
pub fn ensure_private_dir(dir: &Path) -> io::Result<Tightened> {
    create_dir_all(dir)?;
    let mode = fs::metadata(dir)?.mode() & 0o7777;
    let mut out = Tightened::default();
    if mode & GROUP_OTHER != 0 {
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "the directory's mode {mode:04o} lets group or others in and it cannot be made \
                     {DIR_MODE:04o} ({e}); give it to the sidecar's user, chmod 700 it, or point \
                     the setting at a subdirectory the sidecar creates"
                ),
            )
        })?;
        out.dir_was = Some(mode);
    }
    out.entries = tighten_below(dir, MAX_DEPTH);
    if out.dir_was.is_some() || out.entries > 0 {
        tracing::warn!(
            path = %dir.display(),
            was = out.dir_was.map(|m| format!("{m:04o}")),
            now = format!("{DIR_MODE:04o}"),
            entries_tightened = out.entries,
            "the sidecar's data directory was readable by group or others; made private"
        );
    }
    Ok(out)
}

/// Drops the group/other bits of every entry below `dir` (symbolic links are not followed);
/// returns how many changed. Failures are logged, not returned.
fn tighten_below(dir: &Path, depth: usize) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut changed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.mode() & 0o7777;
        if mode & GROUP_OTHER != 0 {
            match fs::set_permissions(&path, Permissions::from_mode(mode & 0o700)) {
                Ok(()) => changed += 1,
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:04o}"),
                    error = %e,
                    "cannot drop group/other access to a file in the sidecar's data directory"
                ),
            }
        }
        if meta.is_dir() && depth > 1 {
            changed += tighten_below(&path, depth - 1);
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn created_files_and_directories_are_private_whatever_the_umask_allows() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_dir_all(&sub).unwrap();
        file_options()
            .write(true)
            .create_new(true)
            .open(sub.join("f"))
            .unwrap();
        assert_eq!(mode(&dir.path().join("a")), DIR_MODE);
        assert_eq!(mode(&sub), DIR_MODE);
        assert_eq!(mode(&sub.join("f")), FILE_MODE);
    }

    #[test]
    fn a_loose_directory_and_what_is_below_it_are_tightened_and_reported() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("buf");
        fs::create_dir(&dir).unwrap();
        fs::create_dir(dir.join("sub")).unwrap();
        fs::write(dir.join("seg"), b"x").unwrap();
        fs::write(dir.join("sub/state"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
        for (p, m) in [
            (dir.clone(), 0o755),
            (dir.join("sub"), 0o2775),
            (dir.join("seg"), 0o644),
            (dir.join("sub/state"), 0o660),
        ] {
            fs::set_permissions(&p, Permissions::from_mode(m)).unwrap();
        }
        let passwd = mode(Path::new("/etc/passwd"));
        let t = ensure_private_dir(&dir).unwrap();
        assert_eq!(t.dir_was, Some(0o755));
        assert_eq!(t.entries, 3);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(
            mode(&dir.join("sub")),
            0o700,
            "setgid and group bits dropped"
        );
        assert_eq!(mode(&dir.join("seg")), 0o600);
        assert_eq!(mode(&dir.join("sub/state")), 0o600);
        assert_eq!(
            mode(Path::new("/etc/passwd")),
            passwd,
            "links are not followed"
        );
        // Private already: nothing to do.
        assert_eq!(ensure_private_dir(&dir).unwrap(), Tightened::default());
    }

    #[test]
    fn a_missing_directory_is_created_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("x/y");
        assert_eq!(ensure_private_dir(&dir).unwrap(), Tightened::default());
        assert_eq!(mode(&dir), DIR_MODE);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_loose_directory_that_cannot_be_chmodded_is_refused_with_what_to_do() {
        // A /proc/<pid> directory is 0555 and refuses chmod even to root.
        let e = ensure_private_dir(Path::new("/proc/self")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("0555") && text.contains("chmod 700"),
            "{text}"
        );
    }
}
