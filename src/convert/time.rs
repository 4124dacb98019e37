//! Timestamps: OTLP nanoseconds since the epoch ⇄ the Dynamiq SDK's RFC 3339 spelling
//! (`2026-11-24T08:15:38.275127+00:00`, microseconds, the fraction omitted when zero).
//!
//! Guarantees: formatting is total (every `u64` nanosecond count has a spelling) and
//! `parse(format(ns)) == ns` truncated to the microsecond.

use time::OffsetDateTime;

/// Formats `ns` since the Unix epoch as the SDK does, truncated to microseconds, in UTC.
pub fn format_ns(ns: u64) -> String {
    // u64 nanoseconds end in the year 2554, well inside `time`'s range.
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let micros = t.microsecond();
    let (year, month, day) = (t.year(), u8::from(t.month()), t.day());
    let (h, m, s) = (t.hour(), t.minute(), t.second());
    if micros == 0 {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}+00:00")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{micros:06}+00:00")
    }
}

/// The time [`write_ns`] writes for `ns`, in ns: runs carry microseconds.
pub fn as_written(ns: u64) -> u64 {
    ns - ns % 1_000
}

/// Appends `"<format_ns(ns)>"` (a JSON string) without allocating.
pub fn write_ns(out: &mut Vec<u8>, ns: u64) {
    out.extend_from_slice(QuotedSpelling::of(ns).as_bytes());
}

/// Whether `text` is exactly how the SDK spells `ns` (what [`format_ns`] gives), without
/// allocating.
pub fn is_sdk_spelling(ns: u64, text: &str) -> bool {
    let quoted = QuotedSpelling::of(ns);
    let quoted = quoted.as_bytes();
    quoted.get(1..quoted.len() - 1) == Some(text.as_bytes())
}

/// `"<format_ns(ns)>"` written into a stack buffer: at most
/// `"YYYY-MM-DDTHH:MM:SS.ffffff+00:00"`, 34 bytes.
struct QuotedSpelling {
    buf: [u8; 34],
    len: usize,
}

impl QuotedSpelling {
    fn of(ns: u64) -> Self {
        let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let mut s = QuotedSpelling {
            buf: [0; 34],
            len: 0,
        };
        s.push(b'"');
        s.digits(u32::try_from(t.year()).unwrap_or(0), 4);
        s.push(b'-');
        s.digits(u32::from(u8::from(t.month())), 2);
        s.push(b'-');
        s.digits(u32::from(t.day()), 2);
        s.push(b'T');
        s.digits(u32::from(t.hour()), 2);
        s.push(b':');
        s.digits(u32::from(t.minute()), 2);
        s.push(b':');
        s.digits(u32::from(t.second()), 2);
        let micros = t.microsecond();
        if micros != 0 {
            s.push(b'.');
            s.digits(micros, 6);
        }
        for &b in b"+00:00\"" {
            s.push(b);
        }
        s
    }

    fn push(&mut self, b: u8) {
        // Never out of bounds: the longest spelling is exactly the buffer's size.
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    /// `n`'s last `width` decimal digits, zero-padded.
    fn digits(&mut self, n: u32, width: u32) {
        for i in (0..width).rev() {
            self.push(b'0' + ((n / 10u32.pow(i)) % 10) as u8);
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

pub use crate::model::time::parse_ns;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_like_the_sdk() {
        assert_eq!(
            format_ns(1_795_508_170_112_968_549),
            "2026-11-24T08:16:10.112968+00:00"
        );
        assert_eq!(
            format_ns(1_795_508_170_000_000_999),
            "2026-11-24T08:16:10+00:00"
        );
        assert_eq!(format_ns(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(format_ns(u64::MAX).len(), 32);
    }

    #[test]
    fn parses_offsets_and_zulu() {
        assert_eq!(parse_ns("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(parse_ns("1970-01-01T01:00:01+01:00"), Some(1_000_000_000));
        assert_eq!(parse_ns("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_ns("yesterday"), None);
    }

    proptest! {
        #[test]
        fn write_ns_is_format_ns_quoted(ns in 0u64..=u64::MAX) {
            let mut out = Vec::new();
            write_ns(&mut out, ns);
            prop_assert_eq!(String::from_utf8(out).unwrap(), format!("\"{}\"", format_ns(ns)));
            prop_assert!(is_sdk_spelling(ns, &format_ns(ns)));
            let zulu = format_ns(ns).replace("+00:00", "Z");
            prop_assert!(!is_sdk_spelling(ns, &zulu));
        }

        #[test]
        fn format_then_parse_keeps_microseconds(ns in 0u64..=u64::MAX) {
            prop_assert_eq!(parse_ns(&format_ns(ns)), Some(ns / 1000 * 1000));
        }
    }
}
