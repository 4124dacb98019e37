//! STUB — replaced by the forwarder implementation. The API below is the contract.
#![allow(missing_docs, unused_variables, dead_code)]

pub mod deadletter;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::admin::readiness::Readiness;
use crate::buffer::Reader;
use crate::config::{ForwardConfig, UpstreamConfig};
use crate::secret::KeyProvider;
use deadletter::DeadLetterStore;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

pub struct Forwarder {}

impl Forwarder {
    pub fn new(
        upstream: &UpstreamConfig,
        forward: &ForwardConfig,
        reader: Reader,
        key: KeyProvider,
        dead_letters: DeadLetterStore,
        readiness: Readiness,
        registry: &mut Registry,
    ) -> Result<Self, ForwardError> {
        unimplemented!()
    }
    pub async fn run(self, drain: CancellationToken, stop: CancellationToken) {
        unimplemented!()
    }
}

pub fn install_crypto_provider() {}
