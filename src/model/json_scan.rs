//! Byte-level JSON scanning for the passes that must find where strings end without parsing:
//! the batch validator's depth guard ([`super::batch`]).
//!
//! Guarantees: total on any bytes (no panics, no out-of-bounds reads); answers only about the
//! bytes `"` and `\`, which are ASCII and so never part of a multi-byte UTF-8 sequence.

/// Index of the first `"` or `\` in `bytes` at or after `from`, if any. Scans eight bytes at
/// a time (SWAR): measured faster than `memchr2` on run JSON, whose strings are mostly short.
#[inline]
pub fn find_quote_or_backslash(bytes: &[u8], mut from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    /// High bit set in each byte of `word` equal to `byte` (exact for the lowest match).
    fn matches(word: u64, byte: u8) -> u64 {
        let x = word ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGHS
    }
    while let Some(chunk) = bytes.get(from..from + 8) {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let hits = matches(word, b'"') | matches(word, b'\\');
        if hits != 0 {
            return Some(from + (hits.trailing_zeros() / 8) as usize);
        }
        from += 8;
    }
    let rest = bytes.get(from..)?;
    rest.iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|at| from + at)
}

/// Byte-at-a-time reference for tests: whether each byte of `bytes` belongs to a string (its
/// quotes included; a backslash in a string escapes the next byte; an unterminated string runs
/// to the end).
#[cfg(test)]
pub(crate) fn reference_in_string(bytes: &[u8]) -> Vec<bool> {
    let (mut in_string, mut escaped) = (false, false);
    bytes
        .iter()
        .map(|&b| {
            if !in_string {
                in_string = b == b'"';
                return in_string;
            }
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            true
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_the_first_quote_or_backslash_in_and_after_whole_words() {
        assert_eq!(find_quote_or_backslash(b"abc\"", 0), Some(3));
        assert_eq!(find_quote_or_backslash(b"abcdefghij\\k\"", 0), Some(10));
        assert_eq!(find_quote_or_backslash(b"\"abcdefgh\"", 1), Some(9));
        assert_eq!(find_quote_or_backslash(b"abcdefgh", 0), None);
        assert_eq!(find_quote_or_backslash(b"ab", 5), None);
        // Multi-byte UTF-8 around the match.
        assert_eq!(
            find_quote_or_backslash("é€😀\"".as_bytes(), 0),
            Some("é€😀".len())
        );
    }

    proptest! {
        #[test]
        fn equals_a_byte_by_byte_search(bytes in proptest::collection::vec(any::<u8>(), 0..64), from in 0usize..70) {
            let expected = (from..bytes.len()).find(|&i| bytes[i] == b'"' || bytes[i] == b'\\');
            prop_assert_eq!(find_quote_or_backslash(&bytes, from), expected);
        }
    }
}
