//! Request bodies: framing runs into `{"runs":[...]}` and cutting a buffer batch into requests.
//!
//! Owns: the body bytes and the plan of which runs go in which request.
//!
//! Guarantees: a body is the run bytes concatenated verbatim between the framing (never
//! re-serialized, so unknown fields, key order, big numbers and float spellings reach the
//! collector byte-identical); a planned request never holds more than `max_runs` runs or more than
//! `max_bytes` body bytes *including* the framing; runs keep their buffer order within a request
//! and across the requests of one client key; in passthrough mode a request only holds runs of
//! one client key. A run that cannot fit in any request alone is planned as [`Piece::TooLarge`].
//!
//! Fails: never; these are pure functions.

use bytes::{BufMut, Bytes, BytesMut};

use crate::model::auth_mode::AuthMode;

/// Opening of a body.
pub const OPEN: &[u8] = b"{\"runs\":[";
/// Closing of a body.
pub const CLOSE: &[u8] = b"]}";

/// One run taken from the buffer, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Buffer sequence number of the record.
    pub seq: u64,
    /// The client's key (passthrough records only).
    pub client_key: Option<String>,
    /// The run's JSON bytes, verbatim.
    pub run: Bytes,
    /// Content fingerprint for duplicate suppression (0 when suppression is off or the run is out
    /// of its scope).
    pub fingerprint: super::dedup::Fingerprint,
}

/// Body size of `n` runs whose bytes add up to `run_bytes`, framing included.
pub fn framed_len(n: usize, run_bytes: usize) -> usize {
    OPEN.len() + CLOSE.len() + run_bytes + n.saturating_sub(1)
}

/// Largest run that fits alone in a request of at most `max_bytes` body bytes (the framing
/// takes the rest). Ingest refuses larger runs; one already buffered is planned as
/// [`Piece::TooLarge`].
pub fn max_run_bytes(max_bytes: usize) -> usize {
    max_bytes.saturating_sub(framed_len(1, 0))
}

/// Body size of these items.
pub fn body_len(items: &[Item]) -> usize {
    framed_len(items.len(), items.iter().map(|i| i.run.len()).sum())
}

/// The request body `{"runs":[<run>,<run>...]}`, the runs' bytes copied verbatim.
pub fn frame(items: &[Item]) -> Bytes {
    let mut body = BytesMut::with_capacity(body_len(items));
    body.put_slice(OPEN);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(&item.run);
    }
    body.put_slice(CLOSE);
    body.freeze()
}

/// One step of delivering a buffer batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// One request's runs (non-empty, within the limits, one client key in passthrough).
    Send(Vec<Item>),
    /// A run that alone exceeds `max_bytes`: dead-letter it as `too_large`.
    TooLarge(Item),
}

/// Cuts a buffer batch into requests. In passthrough mode runs are grouped by client key (groups
/// ordered by their first run, order kept inside a group); otherwise all runs form one group.
/// Each group is then packed greedily, in order, up to `max_runs` runs and `max_bytes` bytes.
pub fn plan(items: Vec<Item>, mode: AuthMode, max_runs: usize, max_bytes: usize) -> Vec<Piece> {
    let max_runs = max_runs.max(1);
    let groups: Vec<Vec<Item>> = match mode {
        AuthMode::SidecarKey => vec![items],
        AuthMode::Passthrough => {
            let mut groups: Vec<(Option<String>, Vec<Item>)> = Vec::new();
            for item in items {
                match groups.iter_mut().find(|(k, _)| *k == item.client_key) {
                    Some((_, g)) => g.push(item),
                    None => groups.push((item.client_key.clone(), vec![item])),
                }
            }
            groups.into_iter().map(|(_, g)| g).collect()
        }
    };
    let mut pieces = Vec::new();
    for group in groups {
        let mut current: Vec<Item> = Vec::new();
        let mut current_bytes = 0usize;
        for item in group {
            if item.run.len() > max_run_bytes(max_bytes) {
                if !current.is_empty() {
                    pieces.push(Piece::Send(std::mem::take(&mut current)));
                    current_bytes = 0;
                }
                pieces.push(Piece::TooLarge(item));
                continue;
            }
            let fits = current.len() < max_runs
                && framed_len(current.len() + 1, current_bytes + item.run.len()) <= max_bytes;
            if !fits && !current.is_empty() {
                pieces.push(Piece::Send(std::mem::take(&mut current)));
                current_bytes = 0;
            }
            current_bytes += item.run.len();
            current.push(item);
        }
        if !current.is_empty() {
            pieces.push(Piece::Send(current));
        }
    }
    pieces
}

/// Splits a request in two halves (for a 413); `None` for a single run.
pub fn halve(mut items: Vec<Item>) -> Option<(Vec<Item>, Vec<Item>)> {
    if items.len() < 2 {
        return None;
    }
    let second = items.split_off(items.len() / 2);
    Some((items, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64, run: &str, key: Option<&str>) -> Item {
        Item {
            seq,
            client_key: key.map(str::to_string),
            run: Bytes::copy_from_slice(run.as_bytes()),
            fingerprint: 0,
        }
    }

    fn sent(pieces: &[Piece]) -> Vec<Vec<u64>> {
        pieces
            .iter()
            .map(|p| match p {
                Piece::Send(v) => v.iter().map(|i| i.seq).collect(),
                Piece::TooLarge(i) => vec![1000 + i.seq],
            })
            .collect()
    }

    #[test]
    fn the_body_is_the_run_bytes_verbatim_inside_the_framing() {
        let a = r#"{"z":1,"a":1.50,"big":123456789012345678901234567890,"unknown":{"x":[1e400]}}"#;
        let b = r#"  {"id" : "b"}"#;
        let body = frame(&[item(1, a, None), item(2, b, None)]);
        assert_eq!(body.as_ref(), format!(r#"{{"runs":[{a},{b}]}}"#).as_bytes());
        assert_eq!(body.len(), body_len(&[item(1, a, None), item(2, b, None)]));
        assert_eq!(frame(&[item(1, "{}", None)]).as_ref(), br#"{"runs":[{}]}"#);
        assert_eq!(framed_len(0, 0), frame(&[]).len());
    }

    #[test]
    fn planned_requests_never_exceed_max_runs_or_max_bytes_including_the_framing() {
        let runs: Vec<Item> = (0..50)
            .map(|i| {
                item(
                    i,
                    &format!(r#"{{"n":"{}"}}"#, "x".repeat(i as usize % 13)),
                    None,
                )
            })
            .collect();
        for max_runs in [1, 3, 7, 100] {
            for max_bytes in [40, 64, 100, 333, 10_000] {
                let pieces = plan(runs.clone(), AuthMode::SidecarKey, max_runs, max_bytes);
                let mut seen = Vec::new();
                for p in &pieces {
                    match p {
                        Piece::Send(v) => {
                            assert!(!v.is_empty() && v.len() <= max_runs);
                            assert!(
                                frame(v).len() <= max_bytes,
                                "{} > {max_bytes}",
                                frame(v).len()
                            );
                            seen.extend(v.iter().map(|i| i.seq));
                        }
                        Piece::TooLarge(i) => {
                            assert!(i.run.len() + 11 > max_bytes);
                            seen.push(i.seq);
                        }
                    }
                }
                assert_eq!(
                    seen,
                    (0..50).collect::<Vec<_>>(),
                    "order kept, nothing lost"
                );
            }
        }
    }

    #[test]
    fn a_run_that_fits_exactly_is_sent_and_one_byte_more_is_too_large() {
        let run = "x".repeat(89); // 89 + 11 framing = 100
        assert_eq!(
            sent(&plan(
                vec![item(1, &run, None)],
                AuthMode::SidecarKey,
                10,
                100
            )),
            vec![vec![1]]
        );
        assert_eq!(
            sent(&plan(
                vec![item(1, &run, None)],
                AuthMode::SidecarKey,
                10,
                99
            )),
            vec![vec![1001]]
        );
    }

    #[test]
    fn max_run_bytes_is_max_bytes_less_the_framing() {
        assert_eq!(max_run_bytes(100), 89);
        assert_eq!(framed_len(1, max_run_bytes(4096)), 4096);
        assert_eq!(max_run_bytes(5), 0);
    }

    #[test]
    fn a_too_large_run_keeps_its_place_in_the_order() {
        let big = "x".repeat(200);
        let p = plan(
            vec![
                item(1, "{}", None),
                item(2, &big, None),
                item(3, "{}", None),
            ],
            AuthMode::SidecarKey,
            10,
            100,
        );
        assert_eq!(sent(&p), vec![vec![1], vec![1002], vec![3]]);
    }

    #[test]
    fn passthrough_groups_by_client_key_keeping_order_inside_each_group() {
        let items = vec![
            item(1, "{}", Some("a")),
            item(2, "{}", Some("b")),
            item(3, "{}", Some("a")),
            item(4, "{}", None),
            item(5, "{}", Some("b")),
        ];
        assert_eq!(
            sent(&plan(items.clone(), AuthMode::Passthrough, 10, 1000)),
            vec![vec![1, 3], vec![2, 5], vec![4]]
        );
        assert_eq!(
            sent(&plan(items, AuthMode::SidecarKey, 10, 1000)),
            vec![vec![1, 2, 3, 4, 5]]
        );
    }

    #[test]
    fn halving_splits_down_to_single_runs() {
        let v: Vec<Item> = (0..5).map(|i| item(i, "{}", None)).collect();
        let (a, b) = halve(v).unwrap();
        assert_eq!(a.iter().map(|i| i.seq).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(b.iter().map(|i| i.seq).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert!(halve(vec![item(0, "{}", None)]).is_none());
    }
}
