//! What both sinks share: the consumer toolkit that reads the disk buffer ([`consumer`]), the
//! HTTP client toolkit ([`http`]) and the retry policy ([`retry`]: full-jitter backoff and
//! `Retry-After`).
//!
//! Nothing here knows a backend's wire format or its answers' meaning: that is each sink's.

pub mod consumer;
pub mod http;
pub mod retry;
