//! Byte-level JSON scanning for the passes that must find where strings end without parsing:
//! the batch validator's guard ([`super::batch`]) on nesting depth and lone surrogate escapes,
//! run over the whole body before serde_json reads it.
//!
//! Guarantees: total on any bytes (no panics, no out-of-bounds reads); looks only at ASCII bytes
//! (quotes, backslashes, brackets, the hex digits of `\u` escapes), which are never part of a
//! multi-byte UTF-8 sequence.

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

/// What [`scan`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Nothing wrong found (a string left open ends the scan; the parser reports it).
    Fine,
    /// Arrays and objects nest deeper than the limit.
    TooDeep,
    /// Byte offset of a `\u` escape of a surrogate without its pair.
    LoneSurrogate(usize),
}

/// One pass over `body`: nesting depth against `max`, and `\u` surrogate escapes in strings
/// (a high one must be followed by a low one, a low one must follow a high one).
pub(crate) fn scan(body: &[u8], max: usize) -> Scan {
    let mut depth = 0usize;
    let mut i = 0usize;
    let n = body.len();
    while i < n {
        match body[i] {
            b'"' => match skip_string(body, i + 1) {
                Ok(next) => {
                    i = next;
                    continue;
                }
                Err(Some(at)) => return Scan::LoneSurrogate(at),
                Err(None) => return Scan::Fine, // unterminated: the parser reports it
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Scan::TooDeep;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Scan::Fine
}

/// The code unit of a `\uXXXX` escape starting at `at` (the backslash), if there is one.
fn escape_unit(body: &[u8], at: usize) -> Option<u16> {
    let [b'\\', b'u', hex @ ..] = body.get(at..at + 6)? else {
        return None;
    };
    hex.iter().try_fold(0u16, |unit, &digit| {
        let value = char::from(digit).to_digit(16)?;
        Some(unit << 4 | value as u16)
    })
}

/// Index just past the `"` closing the string whose contents start at `i`; `Err(None)` when
/// the string is unterminated, `Err(Some(at))` for a lone surrogate escape at `at`.
fn skip_string(body: &[u8], mut i: usize) -> Result<usize, Option<usize>> {
    loop {
        i = find_quote_or_backslash(body, i).ok_or(None)?;
        if body[i] == b'"' {
            return Ok(i + 1);
        }
        match escape_unit(body, i) {
            Some(0xD800..=0xDBFF) => match escape_unit(body, i + 6) {
                Some(0xDC00..=0xDFFF) => i += 12,
                _ => return Err(Some(i)),
            },
            Some(0xDC00..=0xDFFF) => return Err(Some(i)),
            _ => i += 2,
        }
    }
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
