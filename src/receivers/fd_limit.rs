//! File descriptors: the listeners' connections may never take the descriptors the buffer
//! (segment files, cursors, state files), the forwarder and the OTLP output (upstream sockets)
//! and the query passthrough need, so running out of them can stop new connections but never
//! appends or delivery.
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit (as most servers do), then the
//! two listeners' `ingest.max_connections` are lowered, with a warning, when together with
//! [`RESERVED_FDS`] they would not fit under it.

/// Descriptors kept out of the listeners' reach.
pub const RESERVED_FDS: u64 = 256;

/// Raises the soft descriptor limit to the hard one; returns the limit in force (`None` when
/// it cannot be read, e.g. not on Unix).
pub fn raise_nofile_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let soft = limit.current?;
        if limit.maximum.is_some_and(|hard| hard > soft) || limit.maximum.is_none() {
            let raised = rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                return getrlimit(Resource::Nofile).current.or(Some(u64::MAX));
            }
        }
        Some(soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The connection cap of each of `listeners` listeners asked to hold `wanted` connections each,
/// under a descriptor limit of `nofile`. `None` when it fits as asked.
pub fn capped_connections(wanted: usize, listeners: usize, nofile: u64) -> Option<usize> {
    let room = nofile.saturating_sub(RESERVED_FDS);
    let asked = (wanted as u64).saturating_mul(listeners as u64);
    if asked <= room {
        return None;
    }
    let each = room / (listeners.max(1) as u64);
    Some(usize::try_from(each).unwrap_or(usize::MAX).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_leave_the_reserve_free() {
        assert_eq!(capped_connections(4096, 2, 1 << 20), None);
        assert_eq!(capped_connections(4096, 2, 1024), Some(384));
        assert_eq!(capped_connections(100, 2, 456), None);
        assert_eq!(capped_connections(100, 2, 455), Some(99));
        // A limit below the reserve still leaves each listener one connection.
        assert_eq!(capped_connections(4096, 2, 64), Some(1));
    }

    #[test]
    fn the_limit_can_be_read_and_raised() {
        let limit = raise_nofile_limit();
        assert!(limit.is_some_and(|n| n > 0));
    }
}
