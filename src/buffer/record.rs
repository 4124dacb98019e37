//! Record framing: the 32-byte header in front of every payload, and its checksums. Pure code,
//! no I/O.
//!
//! ```text
//!  0        4        8                16               24        28        32
//!  ┌────────┬────────┬────────────────┬────────────────┬─────────┬─────────┬─────────────┐
//!  │ magic  │ len    │ seq            │ appended_at_ms │ pay_crc │ hdr_crc │ payload     │
//!  │ 4 B    │ u32 LE │ u64 LE         │ u64 LE         │ u32 LE  │ u32 LE  │ len bytes   │
//!  └────────┴────────┴────────────────┴────────────────┴─────────┴─────────┴─────────────┘
//!  magic   = D9 5B F1 01 (last byte = format version 1)
//!  pay_crc = crc32 (IEEE, crc32fast) of the payload
//!  hdr_crc = crc32 of header bytes 0..28 (so it also covers pay_crc)
//! ```
//!
//! WARNING: this is an on-disk format. Never reorder, resize or retype these fields and never
//! change the magic or the checksum algorithm; a new format gets a new magic (new last byte) and
//! the old one keeps being decoded.

#[cfg(test)]
use bytes::Bytes;

/// Marks the start of every record; lets a reader re-synchronise after corruption by scanning
/// forward for it. Mostly non-ASCII so JSON payloads rarely contain it.
pub(crate) const MAGIC: [u8; 4] = [0xD9, 0x5B, 0xF1, 0x01];
/// Size of the record header in bytes.
pub(crate) const HEADER_LEN: usize = 32;
/// [`HEADER_LEN`] as a `u64`, for file offsets.
pub(crate) const HEADER_LEN_U64: u64 = HEADER_LEN as u64;
/// Largest sequence number the buffer hands out, and the largest it believes from disk (a
/// record header, a cursor, a segment name): a larger value is corrupt (damaged or crafted) and
/// takes the corruption path, so `seq + 1` and its kin can never wrap. 2^63 - 1 numbers last
/// 29 000 years at ten million records a second; the writer refuses appends past it
/// (`AppendError::SequenceExhausted`) rather than reuse a number.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// Why bytes are not a valid record header or record. Never retried: the bytes are what they are;
/// the caller skips them (corruption) or truncates them (torn tail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordError {
    /// Fewer than [`HEADER_LEN`] bytes are left.
    #[error("fewer than {HEADER_LEN} bytes left for a record header")]
    Short,
    /// The first four bytes are not [`MAGIC`].
    #[error("bad record magic")]
    BadMagic,
    /// The header does not match its checksum (bit flip, or not a header at all).
    #[error("record header checksum mismatch")]
    HeaderChecksum,
    /// The payload does not match the checksum in the (valid) header.
    #[error("record payload checksum mismatch")]
    PayloadChecksum,
    /// The header is intact but its `seq` is above [`MAX_SEQ`] (crafted or corrupt).
    #[error("record sequence number above the largest the buffer uses")]
    SeqOutOfRange,
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Payload length in bytes.
    pub len: u32,
    /// Sequence number of the record.
    pub seq: u64,
    /// Wall-clock time the writer stamped on the record (ms since the Unix epoch).
    pub appended_at_ms: u64,
    /// crc32 of the payload.
    pub payload_crc: u32,
}

impl Header {
    /// Bytes of the whole record (header and payload).
    pub fn record_len(&self) -> u64 {
        HEADER_LEN_U64 + u64::from(self.len)
    }

    /// Encodes the header, computing its checksum.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.appended_at_ms.to_le_bytes());
        b[24..28].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies a header from the first [`HEADER_LEN`] bytes of `buf` (magic,
    /// checksum, `seq <= MAX_SEQ`).
    pub fn decode(buf: &[u8]) -> Result<Header, RecordError> {
        let b: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(RecordError::Short)?;
        if b[0..4] != MAGIC {
            return Err(RecordError::BadMagic);
        }
        let stored = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
        if crc32fast::hash(&b[0..28]) != stored {
            return Err(RecordError::HeaderChecksum);
        }
        let seq = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        if seq > MAX_SEQ {
            return Err(RecordError::SeqOutOfRange);
        }
        Ok(Header {
            len: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            seq,
            appended_at_ms: u64::from_le_bytes([
                b[16], b[17], b[18], b[19], b[20], b[21], b[22], b[23],
            ]),
            payload_crc: u32::from_le_bytes([b[24], b[25], b[26], b[27]]),
        })
    }

    /// Checks `payload` against the header's length and checksum.
    pub fn verify_payload(&self, payload: &[u8]) -> Result<(), RecordError> {
        if payload.len() != self.len as usize {
            return Err(RecordError::Short);
        }
        if payload_crc(payload) != self.payload_crc {
            return Err(RecordError::PayloadChecksum);
        }
        Ok(())
    }
}

/// Checksum of a payload, as stored in the header.
pub(crate) fn payload_crc(payload: &[u8]) -> u32 {
    crc32fast::hash(payload)
}

/// Encodes a complete record (header and payload) into one buffer. The writer does not use this
/// (it writes header and payload as two vectored slices, without copying the payload); tests and
/// tools do.
#[cfg(test)]
pub(crate) fn encode_record(seq: u64, appended_at_ms: u64, payload: &[u8]) -> Vec<u8> {
    let header = Header {
        len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
        seq,
        appended_at_ms,
        payload_crc: payload_crc(payload),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    out
}

/// Decodes one complete record at the start of `buf`, returning its header and payload. Zero-copy: the payload shares `buf`.
#[cfg(test)]
pub(crate) fn decode_record(buf: &Bytes) -> Result<(Header, Bytes), RecordError> {
    let header = Header::decode(buf)?;
    let end = HEADER_LEN + header.len as usize;
    if buf.len() < end {
        return Err(RecordError::Short);
    }
    let payload = buf.slice(HEADER_LEN..end);
    header.verify_payload(&payload)?;
    Ok((header, payload))
}

/// Index of the first occurrence of [`MAGIC`] in `buf`.
pub(crate) fn find_magic(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf.get(from..)?.iter().position(|&b| b == MAGIC[0]) {
        let at = from + i;
        if buf.get(at..at + MAGIC.len())? == MAGIC {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode_record(42, 1_700_000_000_123, b"{\"run\":\"hello\"}")
    }

    #[test]
    fn a_record_round_trips_through_encode_and_decode() {
        let bytes = Bytes::from(sample());
        let (h, p) = decode_record(&bytes).unwrap();
        assert_eq!(h.seq, 42);
        assert_eq!(h.appended_at_ms, 1_700_000_000_123);
        assert_eq!(&p[..], b"{\"run\":\"hello\"}");
        assert_eq!(h.record_len(), bytes.len() as u64);
    }

    #[test]
    fn an_empty_payload_is_a_valid_record() {
        let bytes = Bytes::from(encode_record(1, 0, b""));
        let (h, p) = decode_record(&bytes).unwrap();
        assert_eq!((h.len, p.len()), (0, 0));
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let good = sample();
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode_record(&Bytes::from(bad)).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn a_truncated_record_is_rejected_as_short() {
        let good = sample();
        for cut in 0..good.len() {
            let r = decode_record(&Bytes::copy_from_slice(&good[..cut]));
            assert!(r.is_err(), "cut at {cut} accepted");
        }
        assert_eq!(Header::decode(&good[..10]), Err(RecordError::Short));
    }

    #[test]
    fn header_errors_say_what_is_wrong() {
        let mut bad = sample();
        bad[0] = 0;
        assert_eq!(Header::decode(&bad), Err(RecordError::BadMagic));
        let mut bad = sample();
        bad[9] ^= 1;
        assert_eq!(Header::decode(&bad), Err(RecordError::HeaderChecksum));
        let mut bad = sample();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            decode_record(&Bytes::from(bad)).map(|_| ()),
            Err(RecordError::PayloadChecksum)
        );
    }

    fn header_with(seq: u64, len: u32) -> [u8; HEADER_LEN] {
        Header {
            len,
            seq,
            appended_at_ms: 0,
            payload_crc: 0,
        }
        .encode()
    }

    #[test]
    fn an_intact_header_with_a_sequence_number_above_max_seq_is_refused() {
        assert_eq!(
            Header::decode(&header_with(MAX_SEQ, 1)).unwrap().seq,
            MAX_SEQ
        );
        for seq in [MAX_SEQ + 1, u64::MAX] {
            assert_eq!(
                Header::decode(&header_with(seq, 1)),
                Err(RecordError::SeqOutOfRange)
            );
        }
    }

    #[test]
    fn the_largest_length_a_header_can_claim_does_not_overflow_the_record_length() {
        let h = Header::decode(&header_with(1, u32::MAX)).unwrap();
        assert_eq!(h.record_len(), HEADER_LEN_U64 + u64::from(u32::MAX));
        let short = Bytes::from(header_with(1, u32::MAX).to_vec());
        assert_eq!(decode_record(&short).map(|_| ()), Err(RecordError::Short));
    }

    #[test]
    fn the_magic_is_found_anywhere_in_a_buffer() {
        let mut buf = vec![0xD9u8; 7];
        buf.extend_from_slice(&sample());
        assert_eq!(find_magic(&buf), Some(7));
        assert_eq!(find_magic(&buf[..9]), None);
        assert_eq!(find_magic(b""), None);
        assert_eq!(find_magic(&MAGIC), Some(0));
    }
}
