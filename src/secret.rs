//! The access key toward the collector: [`Secret`] (a string that never prints) and
//! [`KeyProvider`] (where the current key comes from, and the watcher that notices a rotation).
//!
//! Owns: reading `upstream.access_key_file` (or taking `DYNAMIQ_ACCESS_KEY` from the app),
//! re-reading the file every `upstream.key_reload_interval`, and telling the forwarder when the
//! key changed (a `watch` channel whose value is bumped on every change).
//!
//! Guarantees: the key's value is never logged, never part of an error message, a metric or a
//! `Debug`/`Display` rendering (both print `[redacted]`). A key file that becomes unreadable or
//! empty keeps the last good key (one warning per bad spell, not one per poll). Kubernetes Secret
//! rotations (an atomic symlink swap of `..data`) are handled by simply re-reading the path.
//!
//! Also here: [`redact_url`] and [`redact_reqwest_error`], the one way a configured URL
//! (`upstream.url`, `query.upstream_url`, `outputs.otlp.endpoint`) reaches a log line, an error
//! or `check-config`: credentials in it (`https://user:pass@host`) show as `***`.
//!
//! Fails: at start, a configured key file that cannot be read or is empty is a
//! [`KeyStartError`] naming `upstream.access_key_file`. No key at all (no file, no environment
//! variable) is not an error here: the forwarder holds delivery and says so.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Environment variable holding the project-scoped access key.
pub const ACCESS_KEY_ENV: &str = "DYNAMIQ_ACCESS_KEY";
/// Environment variable holding a separate token for the `/api/*` passthrough.
pub const API_TOKEN_ENV: &str = "DYNAMIQ_API_TOKEN";

/// The config key named by errors about the key file.
pub const KEY_FILE_KEY: &str = "upstream.access_key_file";

/// Where a key comes from: a file (re-read when it changes), else an environment variable.
#[derive(Debug, Clone)]
pub struct KeySource {
    /// The config key that names the file, for errors (`upstream.access_key_file`).
    pub config_key: &'static str,
    /// The key file; empty: the key comes from the environment.
    pub file: String,
    /// How often the file is checked for changes.
    pub reload_interval: Duration,
}

impl Default for KeySource {
    fn default() -> Self {
        Self {
            config_key: KEY_FILE_KEY,
            file: String::new(),
            reload_interval: Duration::from_secs(5),
        }
    }
}

/// A configured key file that cannot be used at start (the message never holds the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct KeyStartError {
    /// The config key at fault (e.g. [`KEY_FILE_KEY`]).
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// A secret string (the access key). `Debug` and `Display` print `[redacted]`; the only way to
/// the value is [`Secret::expose`], used when building the `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    /// The value itself. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why the key file could not provide a key. Its messages never contain the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read (missing, permissions, not a file).
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The configured path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds only whitespace.
    #[error("{path} is empty; it must hold the project-scoped access key")]
    Empty {
        /// The configured path.
        path: PathBuf,
    },
}

/// Reads and trims a key file.
fn read_key_file(path: &Path) -> Result<Secret, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let key = text.trim();
    if key.is_empty() {
        return Err(KeyFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Secret::new(key.to_string()))
}

struct Inner {
    key: RwLock<Option<Secret>>,
    version: watch::Sender<u64>,
    file: Option<PathBuf>,
    /// The config key naming `file`, for the reloader's log lines.
    config_key: &'static str,
    reload_interval: Duration,
}

/// Where the sidecar's access key comes from; cheap to clone (all clones share the key).
#[derive(Clone)]
pub struct KeyProvider {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyProvider")
            .field("file", &self.inner.file)
            .field("has_key", &self.current().is_some())
            .finish()
    }
}

impl KeyProvider {
    /// The key from `upstream.access_key_file` when set (which must then be readable and
    /// non-empty), else `env_key` (the app passes `DYNAMIQ_ACCESS_KEY`; empty counts as unset).
    pub fn from_config(source: &KeySource, env_key: Option<String>) -> Result<Self, KeyStartError> {
        let file = (!source.file.trim().is_empty()).then(|| PathBuf::from(source.file.trim()));
        let key = match &file {
            Some(path) => Some(read_key_file(path).map_err(|e| KeyStartError {
                key: source.config_key,
                message: e.to_string(),
            })?),
            None => env_key
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .map(Secret::new),
        };
        Ok(Self::build(
            key,
            file,
            source.config_key,
            source.reload_interval,
        ))
    }

    /// A provider with a fixed key and no file (tests, tools).
    pub fn fixed(key: Option<Secret>) -> Self {
        Self::build(key, None, KEY_FILE_KEY, Duration::from_secs(5))
    }

    fn build(
        key: Option<Secret>,
        file: Option<PathBuf>,
        config_key: &'static str,
        reload_interval: Duration,
    ) -> Self {
        let (version, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                key: RwLock::new(key),
                version,
                file,
                config_key,
                reload_interval: reload_interval.max(Duration::from_millis(10)),
            }),
        }
    }

    /// The current key, if any.
    pub fn current(&self) -> Option<Secret> {
        self.inner
            .key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A receiver whose value is bumped every time the key changes.
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    /// Replaces the key; bumps [`changed`](Self::changed) and returns true if it differs from the
    /// current one. Used by the reloader (and by tests).
    pub fn set(&self, key: Option<Secret>) -> bool {
        {
            let mut guard = self.inner.key.write().unwrap_or_else(|e| e.into_inner());
            if *guard == key {
                return false;
            }
            *guard = key;
        }
        self.inner.version.send_modify(|v| *v = v.wrapping_add(1));
        true
    }

    /// Re-reads the key file every `upstream.key_reload_interval` until `stop` is cancelled. Does
    /// nothing when the key does not come from a file. Must be called inside a tokio runtime.
    pub fn spawn_reloader(&self, stop: CancellationToken) {
        let Some(path) = self.inner.file.clone() else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(this.inner.reload_interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // the first tick is immediate; the key was read at start
            let mut warned = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let read_path = path.clone();
                let read = tokio::task::spawn_blocking(move || read_key_file(&read_path)).await;
                this.apply_reload(
                    read.unwrap_or_else(|e| {
                        Err(KeyFileError::Unreadable {
                            path: path.clone(),
                            source: std::io::Error::other(e.to_string()),
                        })
                    }),
                    &mut warned,
                );
            }
        });
    }

    /// One reload step: adopt a new key (logging without the value) or keep the last good one.
    fn apply_reload(&self, read: Result<Secret, KeyFileError>, warned: &mut bool) {
        match read {
            Ok(key) => {
                if *warned {
                    tracing::info!(key = self.inner.config_key, "key file is readable again");
                    *warned = false;
                }
                if self.set(Some(key)) {
                    tracing::info!(key = self.inner.config_key, "key reloaded from its file");
                }
            }
            Err(e) => {
                if !*warned {
                    tracing::warn!(key = self.inner.config_key, error = %e, "cannot reload the key file; keeping the last good key");
                    *warned = true;
                }
            }
        }
    }
}

/// `url` with its userinfo (`user:password@`) replaced by `***@`, e.g.
/// `https://***@collector.example/`: how a configured URL is shown in logs, errors and
/// `check-config`. Works on any text, since a URL that does not parse may still hold a
/// password; borrowed when there is nothing to hide.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => Cow::Owned(format!("{}***{}", &url[..start], &rest[at..])),
        None => Cow::Borrowed(url),
    }
}

/// `e` with the userinfo of its URL removed. `reqwest` already moves userinfo into an
/// `Authorization` header for the requests it builds; this covers every other path (its
/// messages name the URL).
pub fn redact_reqwest_error(mut e: reqwest::Error) -> reqwest::Error {
    if let Some(url) = e.url_mut() {
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_are_redacted_whatever_the_url_looks_like() {
        for (url, shown) in [
            (
                "https://user:s3cret@host:8443/path?q=1",
                "https://***@host:8443/path?q=1",
            ),
            ("https://s3cret@host", "https://***@host"),
            ("http://a:b@c@host/x@y", "http://***@host/x@y"),
            ("user:s3cret@host", "***@host"),
            ("https://us er:s3cret@ho st", "https://***@ho st"),
            ("https://host/a@b", "https://host/a@b"),
            ("https://host?who=a@b", "https://host?who=a@b"),
            (
                "https://collector.getdynamiq.ai",
                "https://collector.getdynamiq.ai",
            ),
            ("not a url", "not a url"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        assert!(matches!(
            redact_url("https://host/"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[tokio::test]
    async fn a_reqwest_error_loses_the_credentials_of_its_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut req = client
            .get(format!("http://127.0.0.1:{port}/x"))
            .build()
            .unwrap();
        // Put the userinfo back as a URL built elsewhere would carry it.
        req.url_mut().set_password(Some("s3cret")).unwrap();
        req.url_mut().set_username("user").unwrap();
        let e = client.execute(req).await.unwrap_err();
        assert!(
            e.to_string().contains("s3cret"),
            "the test needs a URL with userinfo: {e}"
        );
        let e = redact_reqwest_error(e);
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("user"),
            "{shown}"
        );
    }

    fn upstream_with_file(path: &Path, interval: Duration) -> KeySource {
        KeySource {
            file: path.display().to_string(),
            reload_interval: interval,
            ..KeySource::default()
        }
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("sk-very-secret".into());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "sk-very-secret");
        let p = KeyProvider::fixed(Some(s));
        assert!(!format!("{p:?}").contains("sk-very-secret"));
    }

    #[test]
    fn the_key_file_is_read_and_trimmed_and_wins_over_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "  file-key\n").unwrap();
        let p = KeyProvider::from_config(
            &upstream_with_file(&path, Duration::from_secs(5)),
            Some("env-key".into()),
        )
        .unwrap();
        assert_eq!(p.current().unwrap().expose(), "file-key");
    }

    #[test]
    fn the_environment_key_is_used_when_no_file_is_configured() {
        let p = KeyProvider::from_config(&KeySource::default(), Some("env-key\n".into())).unwrap();
        assert_eq!(p.current().unwrap().expose(), "env-key");
        let p = KeyProvider::from_config(&KeySource::default(), Some("  ".into())).unwrap();
        assert!(p.current().is_none());
        let p = KeyProvider::from_config(&KeySource::default(), None).unwrap();
        assert!(p.current().is_none());
    }

    #[test]
    fn a_missing_or_empty_key_file_at_start_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e =
            KeyProvider::from_config(&upstream_with_file(&missing, Duration::from_secs(5)), None)
                .unwrap_err();
        assert_eq!(e.key, "upstream.access_key_file");
        assert!(e.message.contains("nope"), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = KeyProvider::from_config(&upstream_with_file(&empty, Duration::from_secs(5)), None)
            .unwrap_err();
        assert_eq!(e.key, "upstream.access_key_file");
        assert!(e.message.contains("empty"), "{e}");
    }

    #[test]
    fn set_bumps_the_watch_only_on_a_real_change() {
        let p = KeyProvider::fixed(Some(Secret::new("a".into())));
        let rx = p.changed();
        assert!(!p.set(Some(Secret::new("a".into()))));
        assert!(!rx.has_changed().unwrap());
        assert!(p.set(Some(Secret::new("b".into()))));
        assert!(rx.has_changed().unwrap());
        assert_eq!(p.current().unwrap().expose(), "b");
    }

    #[tokio::test]
    async fn the_reloader_picks_up_a_rotation_and_keeps_the_last_good_key_when_the_file_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "one\n").unwrap();
        let p =
            KeyProvider::from_config(&upstream_with_file(&path, Duration::from_millis(20)), None)
                .unwrap();
        let mut rx = p.changed();
        let stop = CancellationToken::new();
        p.spawn_reloader(stop.clone());

        // A Kubernetes-style swap: write elsewhere, rename over the path.
        let tmp = dir.path().join("key.tmp");
        std::fs::write(&tmp, "two\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        tokio::time::timeout(Duration::from_secs(2), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.current().unwrap().expose(), "two");

        std::fs::remove_file(&path).unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(p.current().unwrap().expose(), "two");
        std::fs::write(&path, "  \n").unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(p.current().unwrap().expose(), "two");

        std::fs::write(&path, "three").unwrap();
        tokio::time::timeout(Duration::from_secs(2), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.current().unwrap().expose(), "three");
        stop.cancel();
    }

    #[test]
    fn a_broken_file_warns_once_until_it_recovers() {
        let p = KeyProvider::fixed(Some(Secret::new("a".into())));
        let mut warned = false;
        let err = || {
            Err(KeyFileError::Empty {
                path: PathBuf::from("k"),
            })
        };
        p.apply_reload(err(), &mut warned);
        assert!(warned);
        p.apply_reload(err(), &mut warned);
        assert!(warned);
        assert_eq!(p.current().unwrap().expose(), "a");
        p.apply_reload(Ok(Secret::new("b".into())), &mut warned);
        assert!(!warned);
        assert_eq!(p.current().unwrap().expose(), "b");
    }
}
