//! STUB
#![allow(missing_docs, unused_variables, dead_code)]
use crate::config::{ConfigError, UpstreamConfig};

#[derive(Clone)]
pub struct Secret(String);
impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Clone)]
pub struct KeyProvider {}
impl KeyProvider {
    pub fn from_config(
        upstream: &UpstreamConfig,
        env_key: Option<String>,
    ) -> Result<Self, ConfigError> {
        unimplemented!()
    }
    pub fn current(&self) -> Option<Secret> {
        unimplemented!()
    }
    pub fn changed(&self) -> tokio::sync::watch::Receiver<u64> {
        unimplemented!()
    }
    pub fn spawn_reloader(&self, stop: tokio_util::sync::CancellationToken) {
        unimplemented!()
    }
}
