//! The envelope of one buffered record: a single run's JSON bytes exactly as the client sent
//! them, plus the client's key when `auth_mode = "passthrough"`.
//!
//! ```text
//!  byte 0      1        2..4            4..4+K       4+K..
//!  ┌────────┬───────┬──────────────┬────────────┬──────────────────┐
//!  │ version│ kind  │ key_len K u16│ client key │ run JSON (as     │
//!  │   = 1  │ 1=run │  little-end. │ (UTF-8)    │ received, valid) │
//!  └────────┴───────┴──────────────┴────────────┴──────────────────┘
//! ```
//! WARNING: this is an on-disk format. Never reorder or retype these fields; add a new
//! `version` instead and keep decoding the old one.

use bytes::{BufMut, Bytes, BytesMut};

/// Current envelope version.
pub const ENVELOPE_VERSION: u8 = 1;
/// `kind` of a Dynamiq run record.
pub const KIND_RUN: u8 = 1;
const HEADER_LEN: usize = 4;

/// A decoded envelope: borrowed views into the record payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The key the client sent (passthrough mode only).
    pub client_key: Option<String>,
    /// The run's JSON bytes, verbatim.
    pub run: Bytes,
}

/// Why a record payload could not be decoded (a bug or corruption the checksum missed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Shorter than its header or its declared key.
    #[error("envelope truncated")]
    Truncated,
    /// Written by a newer sidecar.
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    /// A kind this version does not know.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// The client key is not UTF-8.
    #[error("client key is not UTF-8")]
    BadKey,
}

/// Encodes one run (its JSON bytes) with an optional client key.
pub fn encode_run(run_json: &[u8], client_key: Option<&str>) -> Bytes {
    let prefix = run_prefix(client_key);
    let mut buf = BytesMut::with_capacity(prefix.len() + run_json.len());
    buf.put_slice(&prefix);
    buf.put_slice(run_json);
    buf.freeze()
}

/// The bytes that precede the run JSON in a run record: `prefix ‖ run JSON` equals
/// `encode_run(run JSON, client_key)`. Lets a producer write runs straight into records.
pub fn run_prefix(client_key: Option<&str>) -> Vec<u8> {
    let key = client_key.unwrap_or("").as_bytes();
    let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    let key = &key[..key_len as usize];
    let mut prefix = Vec::with_capacity(HEADER_LEN + key.len());
    prefix.push(ENVELOPE_VERSION);
    prefix.push(KIND_RUN);
    prefix.extend_from_slice(&key_len.to_le_bytes());
    prefix.extend_from_slice(key);
    prefix
}

/// Decodes a record payload produced by [`encode_run`]. Zero-copy: `run` shares `payload`.
pub fn decode(payload: &Bytes) -> Result<Envelope, EnvelopeError> {
    if payload.len() < HEADER_LEN {
        return Err(EnvelopeError::Truncated);
    }
    if payload[0] != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnknownVersion(payload[0]));
    }
    if payload[1] != KIND_RUN {
        return Err(EnvelopeError::UnknownKind(payload[1]));
    }
    let key_len = u16::from_le_bytes([payload[2], payload[3]]) as usize;
    if payload.len() < HEADER_LEN + key_len {
        return Err(EnvelopeError::Truncated);
    }
    let client_key = if key_len == 0 {
        None
    } else {
        Some(
            std::str::from_utf8(&payload[HEADER_LEN..HEADER_LEN + key_len])
                .map_err(|_| EnvelopeError::BadKey)?
                .to_string(),
        )
    };
    Ok(Envelope {
        client_key,
        run: payload.slice(HEADER_LEN + key_len..),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_round_trips_byte_for_byte_with_and_without_a_key() {
        let run = br#"{"id":"a","x":1.50,"big":123456789012345678901234567890}"#;
        let e = decode(&encode_run(run, None)).unwrap();
        assert_eq!(e.run.as_ref(), run);
        assert_eq!(e.client_key, None);
        let e = decode(&encode_run(run, Some("client-key"))).unwrap();
        assert_eq!(e.run.as_ref(), run);
        assert_eq!(e.client_key.as_deref(), Some("client-key"));
    }

    #[test]
    fn prefix_then_run_is_the_encoded_record() {
        let run = br#"{"id":"a"}"#;
        for key in [None, Some("k")] {
            let mut record = run_prefix(key);
            record.extend_from_slice(run);
            assert_eq!(record, encode_run(run, key).as_ref());
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x01",
            b"\x02\x01\x00\x00{}",
            b"\x01\x09\x00\x00{}",
            b"\x01\x01\xff\x00ab",
        ] {
            assert!(decode(&Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }
}
