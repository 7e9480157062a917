//! HTTPS for the same routes (the API above all): rustls with the ring
//! provider, TLS 1.2 and 1.3. Certificates must work for iPXE, which speaks
//! TLS 1.2 with RSA only: an ECDSA certificate would shut iPXE out, so the
//! README and the example config say RSA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::bounds::Limits;
use super::listener::DRAIN;
use super::metrics::HttpTimeout;

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
/// flight finish (bounded). Connections count against the same `limits`
/// as plain HTTP's; a TLS handshake has `header_timeout`, like a head.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: Arc<Limits>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    while let Some((tcp, peer)) = super::listener::accept(&listener, &cancel, "HTTPS").await {
        let ticket = match limits.admit(peer.ip()) {
            Ok(t) => t,
            Err(why) => {
                // No HTTP answer is possible before a handshake: closed.
                tracing::debug!(%peer, ?why, "HTTPS connection refused");
                continue;
            }
        };
        let (acceptor, router, watcher) = (acceptor.clone(), router.clone(), graceful.watcher());
        let limits = limits.clone();
        tokio::spawn(async move {
            let _ticket = ticket;
            let handshake = limits.timeouts.header;
            let stream = match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    limits.timed_out(HttpTimeout::Header);
                    return;
                }
            };
            // As for plain HTTP: the peer address picks the subnet whose
            // boot slots a node takes.
            super::listener::serve_hyper(stream, router, peer, &limits, watcher, "HTTPS").await;
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
