//! Run timestamps as the model reads them: RFC 3339 text to nanoseconds since the epoch.
//!
//! Guarantees: total on any text (a time it cannot represent is `None`, never a panic).

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Parses an RFC 3339 time (`Z` or an offset, any fraction) into nanoseconds since the epoch;
/// `None` before 1970 or after 2554.
pub fn parse_ns(s: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .ok()?
        .to_offset(UtcOffset::UTC);
    u64::try_from(t.unix_timestamp_nanos()).ok()
}
