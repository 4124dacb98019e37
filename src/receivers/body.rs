//! Reading a request body within bounds: the declared length, the bytes on the wire and the
//! bytes after gzip decompression are all held to `ingest.max_body_bytes`, so neither a large
//! upload nor a gzip bomb can make the sidecar allocate more than the limit (+1 byte).

use std::io::Read;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

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

/// Collects the body, refusing more than `limit` bytes on the wire.
pub async fn read_limited(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, ApiError> {
    if let Some(declared) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && declared > limit
    {
        return Err(ApiError::too_large(limit, false));
    }
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::too_large(limit, false))
        }
        Err(_) => Err(ApiError::bad_request(
            "the request body could not be read completely",
        )),
    }
}

/// Decodes `bytes` per `encoding`, refusing more than `limit` decoded bytes.
pub fn decode(bytes: Bytes, encoding: Encoding, limit: u64) -> Result<Bytes, ApiError> {
    match encoding {
        Encoding::Identity => Ok(bytes),
        Encoding::Gzip => {
            let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(limit as usize));
            let decoder = flate2::read::MultiGzDecoder::new(bytes.as_ref());
            decoder
                .take(limit.saturating_add(1))
                .read_to_end(&mut out)
                .map_err(|e| ApiError::bad_request(format!("invalid gzip body: {e}")))?;
            if out.len() as u64 > limit {
                return Err(ApiError::too_large(limit, true));
            }
            Ok(Bytes::from(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Bytes {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).unwrap();
        Bytes::from(enc.finish().unwrap())
    }

    #[test]
    fn gzip_bodies_decode_within_the_limit() {
        let data = b"{\"runs\":[]}".repeat(10);
        assert_eq!(
            decode(gzip(&data), Encoding::Gzip, 1000).unwrap().as_ref(),
            &data[..]
        );
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit_with_413() {
        let bomb = gzip(&vec![0u8; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024);
        let e = decode(bomb, Encoding::Gzip, 1024 * 1024).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("after decompression"));
    }

    #[test]
    fn corrupt_gzip_is_a_400() {
        let e = decode(
            Bytes::from_static(b"\x1f\x8b\x08garbage"),
            Encoding::Gzip,
            1000,
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
