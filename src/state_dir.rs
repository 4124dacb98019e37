//! The layout of the state directory (`buffer.path`): the one place that names what lives in it.
//!
//! ```text
//!  <buffer.path>/                 0700, flock()ed through LOCK while a sidecar runs
//!    LOCK                         the lock file (buffer)
//!    <20-digit seq>.seg           segments of the disk log (buffer::segment names them)
//!    cursor-<consumer>            one acknowledgement cursor per sink (buffer::cursor)
//!    cursor-<consumer>.tmp        transient: a cursor being replaced (removed at start-up)
//!    corrupt/                     copies of corrupt regions found by recovery (never read)
//!    dead-letter/                 the dead-letter store (crate::deadletter)
//!    forward-state/dedup.snapshot the Dynamiq sink's duplicate-suppression memory
//!    query-state/index.snapshot   the trace index's snapshot
//! ```
//!
//! Every file under it is 0600 and every directory 0700 ([`crate::private_fs`]). Guarantees:
//! recovery treats exactly the entries named here, the segments and the cursors as the
//! sidecar's own; anything else is reported as unexpected and left alone.

use std::path::{Path, PathBuf};

/// The lock file.
pub const LOCK_FILE: &str = "LOCK";
/// Where recovery copies corrupt bytes.
pub const CORRUPT_DIR: &str = "corrupt";
/// The dead-letter store's directory.
pub const DEAD_LETTER_DIR: &str = "dead-letter";
/// The Dynamiq sink's own state.
pub const FORWARD_STATE_DIR: &str = "forward-state";
/// The trace index's own state.
pub const QUERY_STATE_DIR: &str = "query-state";

/// Entries of the state directory that belong to the sidecar besides segments and cursors.
const RESERVED: [&str; 5] = [
    LOCK_FILE,
    CORRUPT_DIR,
    DEAD_LETTER_DIR,
    FORWARD_STATE_DIR,
    QUERY_STATE_DIR,
];

/// Whether `name` (an entry directly under the state directory) is one of [`RESERVED`]'s.
pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name)
}

/// The dead-letter store's directory for the state directory `root`.
pub fn dead_letter_dir(root: &Path) -> PathBuf {
    root.join(DEAD_LETTER_DIR)
}

/// The Dynamiq sink's duplicate-suppression snapshot for the state directory `root`.
pub fn dedup_snapshot(root: &Path) -> PathBuf {
    root.join(FORWARD_STATE_DIR).join("dedup.snapshot")
}

/// The trace index's snapshot for the state directory `root`.
pub fn query_snapshot(root: &Path) -> PathBuf {
    root.join(QUERY_STATE_DIR).join("index.snapshot")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_path_is_a_reserved_entry() {
        let root = Path::new("/state");
        for path in [
            dead_letter_dir(root),
            dedup_snapshot(root),
            query_snapshot(root),
        ] {
            let first = path
                .strip_prefix(root)
                .unwrap()
                .components()
                .next()
                .unwrap();
            assert!(is_reserved(first.as_os_str().to_str().unwrap()), "{path:?}");
        }
        assert!(!is_reserved("notes.txt"));
        assert!(!is_reserved("00000000000000000001.seg"));
    }
}
