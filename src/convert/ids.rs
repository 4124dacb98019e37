//! Stateless, deterministic id mapping between Dynamiq runs and OTLP spans (docs/run-span-mapping.md §2).
//!
//! Guarantees: the same input always maps to the same id; a foreign span id survives
//! span → run → span exactly (the run id is a reversible UUIDv8 bound to its trace); no mapping
//! ever yields the all-zero (invalid) trace or span id.

use sha2::{Digest, Sha256};

/// Domain separator of a run's span id.
const SPAN_DOMAIN: &[u8] = b"dynamiq-span-v1";
/// Domain separator of the trace tag inside a UUIDv8 run id.
const OTEL_DOMAIN: &[u8] = b"dynamiq-otel-v1";

/// Parses a UUID in hyphenated (8-4-4-4-12) or plain 32-hex form, any case.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    let mut out = [0u8; 16];
    // Every hex piece has a fixed length, so a `0x` that `const_hex` would strip makes the
    // piece too short and is refused like any other non-hex character.
    let pieces: &[(std::ops::Range<usize>, std::ops::Range<usize>)] = match b.len() {
        32 => &[(0..32, 0..16)],
        36 if b[8] == b'-' && b[13] == b'-' && b[18] == b'-' && b[23] == b'-' => &[
            (0..8, 0..4),
            (9..13, 4..6),
            (14..18, 6..8),
            (19..23, 8..10),
            (24..36, 10..16),
        ],
        _ => return None,
    };
    for (text, bytes) in pieces {
        const_hex::decode_to_slice(&b[text.clone()], &mut out[bytes.clone()]).ok()?;
    }
    Some(out)
}

/// Formats 16 bytes as a hyphenated lowercase UUID.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let mut out = [0u8; 36];
    uuid_into(bytes, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes the hyphenated lowercase UUID form of `bytes` into `out`.
pub fn uuid_into(bytes: &[u8; 16], out: &mut [u8; 36]) {
    let mut hex = [0u8; 32];
    // The buffer is exactly twice the input: encoding cannot fail.
    let _ = const_hex::encode_to_slice(bytes, &mut hex);
    out[0..8].copy_from_slice(&hex[0..8]);
    out[8] = b'-';
    out[9..13].copy_from_slice(&hex[8..12]);
    out[13] = b'-';
    out[14..18].copy_from_slice(&hex[12..16]);
    out[18] = b'-';
    out[19..23].copy_from_slice(&hex[16..20]);
    out[23] = b'-';
    out[24..36].copy_from_slice(&hex[20..32]);
}

/// Appends `"<uuid>"` (a JSON string) to `out`.
pub fn write_uuid(out: &mut Vec<u8>, bytes: &[u8; 16]) {
    let mut text = [0u8; 36];
    uuid_into(bytes, &mut text);
    out.push(b'"');
    out.extend_from_slice(&text);
    out.push(b'"');
}

/// The OTLP trace id of a Dynamiq `trace_id`: its UUID bytes, else the first 16 bytes of its
/// SHA-256; never all-zero.
pub fn trace_id_of(trace_id: &str) -> [u8; 16] {
    let mut id = parse_uuid(trace_id).unwrap_or_else(|| {
        let digest = Sha256::digest(trace_id.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        id
    });
    if id == [0u8; 16] {
        id[15] = 1;
    }
    id
}

/// The Dynamiq `trace_id` string of an OTLP trace id (hyphenated lowercase hex).
pub fn trace_id_string(trace_id: &[u8; 16]) -> String {
    format_uuid(trace_id)
}

/// The 58-bit tag that binds a UUIDv8 run id to its trace.
pub fn trace_tag(trace_id: &[u8; 16]) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(OTEL_DOMAIN);
    hasher.update(trace_id);
    let digest = hasher.finalize();
    let mut top = [0u8; 8];
    top.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(top) >> 6
}

/// The run id of a foreign span: a UUIDv8 packing the span id and a tag of its trace.
pub fn run_id_of_span(trace_id: &[u8; 16], span_id: &[u8; 8]) -> [u8; 16] {
    run_id_with_tag(trace_tag(trace_id), span_id)
}

/// [`run_id_of_span`] with the trace's tag already computed (it is the same for every span of
/// a trace, and computing it is a SHA-256).
pub fn run_id_with_tag(h: u64, span_id: &[u8; 8]) -> [u8; 16] {
    let s = u64::from_be_bytes(*span_id);
    let high: u64 = ((s >> 16) << 16) | (0x8 << 12) | ((s >> 4) & 0xFFF);
    let low: u64 = (0b10u64 << 62) | ((s & 0xF) << 58) | h;
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&high.to_be_bytes());
    out[8..].copy_from_slice(&low.to_be_bytes());
    out
}

/// The span id packed in a run id made by [`run_id_of_span`] for this trace, if it is one.
pub fn span_of_run_id(trace_id: &[u8; 16], run_id: &[u8; 16]) -> Option<[u8; 8]> {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&run_id[..8]);
    lo.copy_from_slice(&run_id[8..]);
    let high = u64::from_be_bytes(hi);
    let low = u64::from_be_bytes(lo);
    if (high >> 12) & 0xF != 0x8 || low >> 62 != 0b10 {
        return None;
    }
    let h = low & ((1u64 << 58) - 1);
    if h != trace_tag(trace_id) {
        return None;
    }
    let s = ((high >> 16) << 16) | ((high & 0xFFF) << 4) | ((low >> 58) & 0xF);
    Some(s.to_be_bytes())
}

/// The span id of a Dynamiq run id: the packed span id for a UUIDv8 made from a span of this
/// trace, else the first 8 bytes of `SHA-256("dynamiq-span-v1" ‖ uuid bytes or UTF-8)`;
/// never all-zero.
pub fn span_id_of_run(trace_id: &[u8; 16], run_id: &str) -> [u8; 8] {
    let uuid = parse_uuid(run_id);
    if let Some(span) = uuid.and_then(|u| span_of_run_id(trace_id, &u)) {
        return span;
    }
    let mut hasher = Sha256::new();
    hasher.update(SPAN_DOMAIN);
    match &uuid {
        Some(bytes) => hasher.update(bytes),
        None => hasher.update(run_id.as_bytes()),
    }
    let digest = hasher.finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    if id == [0u8; 8] {
        id[7] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uuid_forms_parse_and_format() {
        let a = parse_uuid("217f4289-aab5-48c6-ae28-2bface088d13").unwrap();
        let b = parse_uuid("217F4289AAB548C6AE282BFACE088D13").unwrap();
        assert_eq!(a, b);
        assert_eq!(format_uuid(&a), "217f4289-aab5-48c6-ae28-2bface088d13");
        assert!(parse_uuid("217f4289-aab5-48c6-ae28-2bface088d1").is_none());
        assert!(parse_uuid("217f4289+aab5-48c6-ae28-2bface088d13").is_none());
        assert!(parse_uuid("zz7f4289-aab5-48c6-ae28-2bface088d13").is_none());
        assert!(parse_uuid("0x7f4289-aab5-48c6-ae28-2bface088d13").is_none());
        assert!(parse_uuid("217f4289-0xb5-48c6-ae28-2bface088d13").is_none());
        assert!(parse_uuid("0x7F4289AAB548C6AE282BFACE088D13").is_none());
        assert!(parse_uuid("217f4289-aab5-48c6-ae28-2bface088d1é").is_none());
    }

    #[test]
    fn trace_ids_are_uuid_bytes_or_hashed_and_never_zero() {
        let t = trace_id_of("217f4289-aab5-48c6-ae28-2bface088d13");
        assert_eq!(trace_id_string(&t), "217f4289-aab5-48c6-ae28-2bface088d13");
        let h = trace_id_of("my-trace");
        assert_eq!(h, trace_id_of("my-trace"));
        assert_ne!(h, trace_id_of("my-trace2"));
        assert_eq!(
            trace_id_of("00000000-0000-0000-0000-000000000000"),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
    }

    #[test]
    fn uuidv8_has_version_and_variant() {
        let id = run_id_of_span(&[7; 16], &[0xAB; 8]);
        let s = format_uuid(&id);
        assert_eq!(&s[14..15], "8", "{s}");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
    }

    #[test]
    fn uuidv8_of_another_trace_is_not_decoded() {
        let id = run_id_of_span(&[7; 16], &[0xAB; 8]);
        assert_eq!(span_of_run_id(&[8; 16], &id), None);
        // A random v4 UUID is not one of ours.
        let v4 = parse_uuid("217f4289-aab5-48c6-ae28-2bface088d13").unwrap();
        assert_eq!(span_of_run_id(&[7; 16], &v4), None);
    }

    #[test]
    fn run_span_ids_are_stable_and_nonzero() {
        let t = trace_id_of("t");
        let a = span_id_of_run(&t, "d892abb1-6c06-4ba8-9aed-0f1da290fb55");
        assert_eq!(a, span_id_of_run(&t, "D892ABB16C064BA89AED0F1DA290FB55"));
        assert_ne!(a, [0; 8]);
        assert_ne!(a, span_id_of_run(&t, "not-a-uuid"));
    }

    proptest! {
        #[test]
        fn span_run_span_restores_the_span_id(trace in any::<[u8; 16]>(), span in any::<[u8; 8]>()) {
            let run = run_id_of_span(&trace, &span);
            prop_assert_eq!(span_of_run_id(&trace, &run), Some(span));
            prop_assert_eq!(span_id_of_run(&trace, &format_uuid(&run)), span);
            prop_assert_eq!(parse_uuid(&format_uuid(&run)), Some(run));
        }
    }
}
