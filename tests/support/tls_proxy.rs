//! A TLS-terminating TCP proxy on loopback, for testing TLS toward a backend: it accepts TLS
//! with the test certificate in `tests/fixtures/tls/` (`localhost` and 127.0.0.1, issued by the
//! test CA in `ca.pem`, whose key was discarded) and pipes the plain bytes to `target`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A test TLS file.
pub fn tls_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// The running proxy; stops when dropped.
pub struct TlsProxy {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl TlsProxy {
    /// Starts a proxy to `target` offering `alpn` (e.g. `h2` for gRPC, `http/1.1`).
    pub fn start(target: SocketAddr, alpn: &[&[u8]]) -> Self {
        let certs = CertificateDer::pem_file_iter(tls_fixture("server.pem"))
            .expect("server.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("server.pem certificates");
        let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).expect("server.key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("test certificate and key");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Ok(mut plain) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        Self {
            addr,
            _runtime: runtime,
        }
    }

    /// `https://localhost:PORT`.
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}
