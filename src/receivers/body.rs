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

/// Decompressed bytes are charged to the request in steps of this size, before they are kept.
const CHARGE_STEP: usize = 1 << 20;

/// Decodes `bytes` per `encoding`, refusing more than `limit` decoded bytes; decompressed
/// bytes are charged to `reservation` as they are produced.
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
            let mut decoder = flate2::read::MultiGzDecoder::new(bytes.as_ref());
            let mut out: Vec<u8> = Vec::new();
            let mut charged = 0usize;
            loop {
                if out.len() >= charged {
                    let step = CHARGE_STEP.min(limit.saturating_add(1) - charged);
                    reservation.grow(step as u64, "the decompressed request body")?;
                    charged += step;
                    out.reserve_exact(charged - out.len());
                }
                let end = charged.min(out.capacity());
                let start = out.len();
                out.resize(end, 0);
                let n = decoder
                    .read(&mut out[start..end])
                    .map_err(|e| ApiError::bad_request(format!("invalid gzip body: {e}")))?;
                out.truncate(start + n);
                if out.len() > limit {
                    return Err(ApiError::too_large(limit as u64, true));
                }
                if n == 0 {
                    break;
                }
            }
            reservation.shrink_to(reservation.bytes() - (charged - out.len()) as u64);
            Ok(Bytes::from(out))
        }
    }
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
