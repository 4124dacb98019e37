//! Inbound authentication: the bearer token clients must present when the sidecar listens
//! beyond loopback, and the client key read for `auth_mode = "passthrough"`.
//!
//! Guarantees: tokens are compared in constant time; neither the token nor a client key is
//! ever logged or echoed in a response.

use axum::http::{HeaderMap, header};

use crate::config::ConfigError;
use crate::receivers::config::IngestConfig;

use crate::receivers::config::INGEST_TOKEN_ENV;
use crate::secret::Secret;

/// The inbound token, when one is required.
#[derive(Clone, Debug, Default)]
pub struct InboundAuth {
    token: Option<Secret>,
}

impl InboundAuth {
    /// Loads the token from `DYNAMIQ_SIDECAR_INGEST_AUTH_TOKEN` (passed in as `env_token`) or
    /// from `ingest.auth_token_file`.
    pub fn load(ingest: &IngestConfig, env_token: Option<String>) -> Result<Self, ConfigError> {
        if let Some(t) = env_token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
        {
            return Ok(Self {
                token: Some(Secret::new(t)),
            });
        }
        let path = &ingest.auth_token_file;
        if path.is_empty() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: None,
            key: "ingest.auth_token_file".into(),
            message: format!("cannot read the inbound token file {path:?}: {e}"),
        })?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(ConfigError {
                origin: None,
                key: "ingest.auth_token_file".into(),
                message: format!(
                    "the inbound token file {path:?} is empty (or set {INGEST_TOKEN_ENV})"
                ),
            });
        }
        Ok(Self {
            token: Some(Secret::new(token)),
        })
    }

    /// An `InboundAuth` requiring `token` (tests).
    pub fn with_token(token: &str) -> Self {
        Self {
            token: Some(Secret::new(token.to_string())),
        }
    }

    /// Whether a token is required.
    pub fn is_required(&self) -> bool {
        self.token.is_some()
    }

    /// Checks the request's `Authorization: Bearer` against the token (always true when none
    /// is required).
    pub fn check(&self, headers: &HeaderMap) -> bool {
        match &self.token {
            None => true,
            Some(expected) => bearer(headers)
                .map(|got| constant_time_eq(got.as_bytes(), expected.expose().as_bytes()))
                .unwrap_or(false),
        }
    }
}

/// The bearer credential of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credential) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let credential = credential.trim();
    (!credential.is_empty()).then_some(credential)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn no_token_configured_lets_everyone_in() {
        assert!(InboundAuth::default().check(&HeaderMap::new()));
    }

    #[test]
    fn a_configured_token_must_match_exactly() {
        let auth = InboundAuth::with_token("s3cret");
        assert!(auth.check(&headers("Bearer s3cret")));
        assert!(auth.check(&headers("bearer s3cret")));
        assert!(!auth.check(&headers("Bearer s3cre")));
        assert!(!auth.check(&headers("Basic s3cret")));
        assert!(!auth.check(&HeaderMap::new()));
    }

    #[test]
    fn bearer_extracts_the_credential() {
        assert_eq!(bearer(&headers("Bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&headers("Bearer")), None);
    }
}
