//! Reading a request body within bounds: the declared length, the bytes on the wire and the
//! bytes after gzip decompression are all held to `ingest.max_body_bytes`, so neither a large
//! upload nor a gzip bomb can make the sidecar allocate more than the limit (+1 byte); and
//! every byte kept is charged to the request's share of `ingest.max_inflight_bytes` before it
//! is allocated (see [`super::budget`]).

use std::io::Read;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use http_body_util::BodyExt;

use super::budget::Reservation;
use super::error::ApiError;

/// Content encodings the receivers accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No `Content-Encoding` (or `identity`).
    Identity,
    /// `gzip` / `x-gzip`.
    Gzip,
}

/// Reads `Content-Encoding`; anything but identity and gzip is a 415.
pub fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let text = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match text.as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        _ => Err(ApiError::unsupported_media(
            "unsupported Content-Encoding: only gzip and identity are accepted",
        )),
    }
}

/// Collects the body, refusing more than `limit` bytes on the wire and charging each chunk to
/// `reservation` before it is kept.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    reservation: &mut Reservation,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared {
        if declared > limit {
            return Err(ApiError::too_large(limit, false));
        }
        reservation.grow(declared, "the request body")?;
    }
    let mut body = body;
    let mut received: Vec<Bytes> = Vec::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|_| ApiError::bad_request("the request body could not be read completely"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len() as u64);
        if total > limit {
            return Err(ApiError::too_large(limit, false));
        }
        if total > reservation.bytes() {
            reservation.grow(total - reservation.bytes(), "the request body")?;
        }
        received.push(data);
    }
    Ok(match received.len() {
        0 => Bytes::new(),
        1 => received.pop().unwrap_or_default(),
        _ => {
            let mut all = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
            for chunk in received {
                all.extend_from_slice(&chunk);
            }
            Bytes::from(all)
        }
    })
}

/// The first allocation for decompressed bytes when the gzip trailer gives no size.
const FIRST_STEP: usize = 1 << 20;
/// Decompressed bytes are written (and their pages touched) this much at a time.
const READ_WINDOW: usize = 64 << 10;

/// Decodes `bytes` per `encoding`, refusing more than `limit` decoded bytes. Every byte of the
/// output buffer is charged to `reservation` before it is allocated, including the old buffer
/// while a growing one is copied, so what decompression really holds never passes its charge.
/// The buffer is sized from the gzip trailer (`ISIZE`, capped at the limit), so a one-member
/// body is inflated in one allocation, never copied (the decoder checks `ISIZE`: a body whose
/// trailer lies is a 400); several members announce only the last one's size, and the rest
/// costs doublings, each charged.
pub fn decode(
    bytes: Bytes,
    encoding: Encoding,
    limit: u64,
    reservation: &mut Reservation,
) -> Result<Bytes, ApiError> {
    match encoding {
        Encoding::Identity => Ok(bytes),
        Encoding::Gzip => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            // One byte past the limit is enough to know the limit is passed.
            let most = limit.saturating_add(1);
            let first = gzip_size_hint(&bytes).unwrap_or(FIRST_STEP).clamp(1, most);
            reservation.grow(first as u64, "the decompressed request body")?;
            let mut out: Vec<u8> = Vec::with_capacity(first);
            let mut charged = first;
            let mut decoder = flate2::read::MultiGzDecoder::new(bytes.as_ref());
            let mut read = |buf: &mut [u8]| {
                decoder
                    .read(buf)
                    .map_err(|e| ApiError::bad_request(format!("invalid gzip body: {e}")))
            };
            loop {
                if out.len() == out.capacity() {
                    // Full: look for one more byte before growing, so that a body the trailer
                    // sized right ends here instead of being copied into a larger buffer.
                    let mut probe = [0u8; 1];
                    if read(&mut probe)? == 0 {
                        break;
                    }
                    if out.len() >= limit {
                        return Err(ApiError::too_large(limit as u64, true));
                    }
                    let grown = out.capacity().saturating_mul(2).max(FIRST_STEP).min(most);
                    // The old buffer lives until the new one holds its copy: charge both.
                    reservation.grow(grown as u64, "the decompressed request body")?;
                    out.reserve_exact(grown - out.len());
                    reservation.shrink_to(reservation.bytes() - charged as u64);
                    charged = out.capacity();
                    if charged > grown {
                        // The allocator may round up; what it gave is what is held.
                        reservation
                            .grow((charged - grown) as u64, "the decompressed request body")?;
                    }
                    out.push(probe[0]);
                    continue;
                }
                let start = out.len();
                let end = out.capacity().min(start + READ_WINDOW);
                out.resize(end, 0);
                let n = read(&mut out[start..end])?;
                out.truncate(start + n);
                if out.len() > limit {
                    return Err(ApiError::too_large(limit as u64, true));
                }
                if n == 0 {
                    break;
                }
            }
            // Capacity past the last window was never written, so it is not resident.
            let untouched = charged.saturating_sub(out.len().max(1));
            reservation.shrink_to(reservation.bytes() - untouched as u64);
            Ok(Bytes::from(out))
        }
    }
}

/// The decompressed size a gzip body announces in its trailer (`ISIZE`: the last member's
/// size modulo 2^32), or `None` when the body is too short to be gzip. Only a sizing hint: a
/// client can put anything there, and several members announce only the last one's size.
fn gzip_size_hint(bytes: &[u8]) -> Option<usize> {
    // A gzip member is at least a 10-byte header, an empty deflate block and the 8-byte trailer.
    if bytes.len() < 18 || bytes[..2] != [0x1f, 0x8b] {
        return None;
    }
    let tail: [u8; 4] = bytes[bytes.len() - 4..].try_into().ok()?;
    usize::try_from(u32::from_le_bytes(tail)).ok()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::receivers::budget::MemoryBudget;

    fn room() -> Reservation {
        MemoryBudget::unregistered(1 << 30).reservation()
    }

    #[test]
    fn decompressed_bytes_are_charged_and_a_small_budget_refuses_them() {
        let data = vec![7u8; 3 << 20];
        let mut r = room();
        assert_eq!(
            decode(gzip(&data), Encoding::Gzip, 10 << 20, &mut r)
                .unwrap()
                .len(),
            3 << 20
        );
        assert!(
            r.bytes() >= 3 << 20 && r.bytes() < (3 << 20) + 4096,
            "{}",
            r.bytes()
        );
        let mut small = MemoryBudget::unregistered(2 << 20).reservation();
        let e = decode(gzip(&data), Encoding::Gzip, 10 << 20, &mut small).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("decompressed"));
    }

    fn gzip(data: &[u8]) -> Bytes {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).unwrap();
        Bytes::from(enc.finish().unwrap())
    }

    #[test]
    fn a_gzip_body_is_inflated_in_one_allocation_and_several_members_still_decode() {
        let data: Vec<u8> = (0..(5u32 << 20)).map(|i| (i % 251) as u8).collect();
        let body = gzip(&data);
        assert_eq!(gzip_size_hint(&body), Some(data.len()));
        let mut r = room();
        let out = decode(body.clone(), Encoding::Gzip, 10 << 20, &mut r).unwrap();
        assert_eq!(out.as_ref(), &data[..]);
        assert_eq!(r.bytes(), data.len() as u64, "charged exactly what is held");
        // A budget of exactly the decompressed size is enough: the buffer is never grown.
        let mut exact = MemoryBudget::unregistered(data.len() as u64).reservation();
        let out = decode(body.clone(), Encoding::Gzip, 10 << 20, &mut exact).unwrap();
        assert_eq!(out.len(), data.len());

        // Two members: the trailer names only the last (tiny) one, so the buffer doubles, each
        // step charged, and the result is whole.
        let mut two = body.to_vec();
        two.extend_from_slice(&gzip(b"tail"));
        let mut r = room();
        let out = decode(Bytes::from(two), Encoding::Gzip, 10 << 20, &mut r).unwrap();
        assert_eq!(out.len(), data.len() + 4);
        assert!(out.ends_with(b"tail"));
        assert!(
            r.bytes() >= out.len() as u64 && r.bytes() < out.len() as u64 + (64 << 10),
            "{}",
            r.bytes()
        );

        // A trailer that lies is refused: by the budget when it claims more than there is room
        // for, else by the decoder's own check.
        let mut lying = gzip(b"{\"runs\":[]}").to_vec();
        let n = lying.len();
        lying[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut tight = MemoryBudget::unregistered(1 << 20).reservation();
        let e = decode(
            Bytes::from(lying.clone()),
            Encoding::Gzip,
            2 << 20,
            &mut tight,
        )
        .unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        let e = decode(Bytes::from(lying), Encoding::Gzip, 1000, &mut room()).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn gzip_bodies_decode_within_the_limit() {
        let data = b"{\"runs\":[]}".repeat(10);
        assert_eq!(
            decode(gzip(&data), Encoding::Gzip, 1000, &mut room())
                .unwrap()
                .as_ref(),
            &data[..]
        );
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit_with_413() {
        let bomb = gzip(&vec![0u8; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024);
        let e = decode(bomb, Encoding::Gzip, 1024 * 1024, &mut room()).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("after decompression"));
    }

    #[test]
    fn corrupt_gzip_is_a_400() {
        let e = decode(
            Bytes::from_static(b"\x1f\x8b\x08garbage"),
            Encoding::Gzip,
            1000,
            &mut room(),
        )
        .unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn unknown_encodings_are_415() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        assert_eq!(
            encoding(&h).unwrap_err().status,
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        h.insert(header::CONTENT_ENCODING, "GZIP".parse().unwrap());
        assert_eq!(encoding(&h).unwrap(), Encoding::Gzip);
    }
}
