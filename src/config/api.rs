//! `[api]`: the admin API's tokens file and its HTTPS listener.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Source};

/// Unset: the API refuses every request, and there is no HTTPS.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    pub tokens_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_port: Option<u16>,
}

/// The admin API's access and transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiConfig {
    /// Bearer tokens, one `<scope> <token> [name]` a line; `None` disables
    /// the API (every `/api/v1` request is refused).
    pub tokens_file: Option<PathBuf>,
    /// The same routes over HTTPS.
    pub tls: Option<TlsConfig>,
}

/// PEM files and the port of the API's HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub port: u16,
}

impl Section {
    /// `http_port`: plain HTTP's port when it is served, which HTTPS cannot share.
    pub fn validate(self, src: &Source, http_port: Option<u16>) -> Result<ApiConfig, ConfigError> {
        let tls = match (&self.tls_cert, &self.tls_key, self.tls_port) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(port)) => Some(TlsConfig {
                cert: src.resolve(cert),
                key: src.resolve(key),
                port,
            }),
            _ => {
                return Err(src.invalid(
                    "api.tls_cert",
                    "HTTPS needs all three of api.tls_cert, api.tls_key and api.tls_port",
                ));
            }
        };
        if let Some(port) = http_port
            && tls.as_ref().is_some_and(|t| t.port == port)
        {
            return Err(src.invalid(
                "api.tls_port",
                format!("{port} is http.port already: choose another"),
            ));
        }
        Ok(ApiConfig {
            tokens_file: self.tokens_file.as_deref().map(|p| src.resolve(p)),
            tls,
        })
    }
}
