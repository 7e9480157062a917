//! HTTPS for the same routes (the API above all): rustls with the ring
//! provider, TLS 1.2 and 1.3. Certificates must work for iPXE, which speaks
//! TLS 1.2 with RSA only: an ECDSA certificate would shut iPXE out, so the
//! README and the example config say RSA.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::listener::DRAIN;

/// How long a client may take for its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Why the certificate or key cannot be used; names the file and its key.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {what} {path}: {reason} ({key} in {config})")]
pub struct TlsError {
    pub what: &'static str,
    pub path: PathBuf,
    pub key: &'static str,
    pub reason: String,
    pub config: String,
}

/// The server config for `cert` (PEM chain, leaf first) and `key` (PEM).
pub fn server_config(
    cert: &Path,
    key: &Path,
    config: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let err = |what, path: &Path, key, reason: String| TlsError {
        what,
        path: path.to_path_buf(),
        key,
        reason,
        config: config.display().to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| err("TLS certificate", cert, "api.tls_cert", e.to_string()))?;
    if certs.is_empty() {
        return Err(err(
            "TLS certificate",
            cert,
            "api.tls_cert",
            "no PEM certificate in it".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| err("TLS key", key, "api.tls_key", e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("TLS key", key, "api.tls_key", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map(Arc::new)
        .map_err(|e| {
            err(
                "TLS key",
                key,
                "api.tls_key",
                format!("{e} (is it the key of {}?)", cert.display()),
            )
        })
}

/// Serves `router` over TLS until `cancel` fires, then lets requests in
/// flight finish (bounded).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    while let Some((tcp, peer)) = super::listener::accept(&listener, &cancel, "HTTPS").await {
        let (acceptor, router, watcher) = (acceptor.clone(), router.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            // As axum::serve does for plain HTTP: the peer address picks
            // the subnet whose boot slots a node takes.
            let router = router.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, "HTTPS connection ended: {e}");
            }
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("HTTPS connections still open after {DRAIN:?}; closing them");
    }
    Ok(())
}
