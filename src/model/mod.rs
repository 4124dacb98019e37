//! The run model: a batch is kept as the bytes the client sent; only the fields the sidecar
//! needs are read.

pub mod envelope;
