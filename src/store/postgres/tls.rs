//! TLS to the database. `sslmode=require` in `[store] url` turns it on, and
//! then the server is always verified, certificate chain and host name (what
//! libpq calls `verify-full`): against the CA certificates in
//! `[store] ca_file`, or the system's roots when there is none. Without it
//! the connection is plain (a Unix socket, or a network the site trusts).
//! One connector type either way, so the writer, the listener and the copy
//! hold one kind of connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::rows::db;
use crate::store::{Fault, StoreError};

/// A live connection's own half, to be polled by a task.
pub(super) type Conn = Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// How to reach the database: its settings and the TLS to use.
#[derive(Clone)]
pub(in crate::store) struct Connector {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl Connector {
    /// `config` as parsed from `[store] url`; `ca_file` as configured.
    pub(super) fn new(
        mut config: tokio_postgres::Config,
        ca_file: Option<&Path>,
    ) -> Result<Connector, StoreError> {
        let roots = match config.get_ssl_mode() {
            SslMode::Require => roots(ca_file)?,
            // tokio-postgres would try TLS by default ("prefer"): only when
            // asked for, so that it is verified whenever it is used.
            _ => {
                if let Some(f) = ca_file {
                    return Err(refused(format!(
                        "store.ca_file = {} is set but store.url does not say sslmode=require: \
                         add it to use TLS to the database",
                        f.display()
                    )));
                }
                config.ssl_mode(SslMode::Disable);
                rustls::RootCertStore::empty()
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| refused(format!("TLS to the database: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Connector {
            config,
            tls: MakeRustlsConnect::new(tls),
        })
    }

    /// A new connection: the client, and the half a task must poll.
    pub(super) async fn connect(&self) -> Result<(Client, Conn), StoreError> {
        self.config
            .connect(self.tls.clone())
            .await
            .map_err(db("connect"))
    }
}

/// The certificates to verify the server against.
fn roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, StoreError> {
    let mut store = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = match ca_file {
        Some(f) => CertificateDer::pem_file_iter(f)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| refused(format!("store.ca_file = {}: {e}", f.display())))?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                return Err(refused(format!(
                    "sslmode=require needs CA certificates to verify the database with: \
                     set store.ca_file (none found among the system's roots: {:?})",
                    found.errors
                )));
            }
            found.certs
        }
    };
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        let from = ca_file.map_or_else(|| PathBuf::from("the system's roots"), Path::to_path_buf);
        return Err(refused(format!(
            "no usable CA certificate in {}",
            from.display()
        )));
    }
    Ok(store)
}

fn refused(cause: String) -> StoreError {
    StoreError::Engine {
        op: "open",
        fault: Fault::Permanent,
        cause,
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::super::{PostgresConfig, scratch::ScratchCluster};
    use super::*;

    /// Runs openssl with `args` in `dir`.
    fn openssl(dir: &Path, args: &[&str]) {
        crate::store::run_for_test(Command::new("openssl").current_dir(dir).args(args));
    }

    /// A CA `<name>-ca.crt` and a certificate for `localhost` it signed,
    /// `<name>.crt` with its key `<name>.key`, made with openssl in `dir`.
    fn signed(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let (ca, ca_key) = (format!("{name}-ca.crt"), format!("{name}-ca.key"));
        let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut args = vec!["req", "-x509", "-days", "2", "-subj", "/CN=test CA"];
        args.extend(ec);
        args.extend(["-keyout", &ca_key, "-out", &ca]);
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        openssl(dir, &args);
        let mut args = vec!["req", "-x509", "-days", "2", "-subj", "/CN=localhost"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &crt, "-CA", &ca, "-CAkey", &ca_key]);
        args.extend(["-addext", "basicConstraints=critical,CA:FALSE"]);
        args.extend(["-addext", "subjectAltName=DNS:localhost"]);
        openssl(dir, &args);
        (dir.join(ca), dir.join(crt), dir.join(key))
    }

    async fn reach(url: String, ca_file: Option<PathBuf>) -> Result<String, StoreError> {
        let config = PostgresConfig {
            url,
            password: None,
            appliance: "tls".into(),
            ca_file,
        };
        let (client, conn) = config.connector()?.connect().await?;
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(db("ask"))?;
        Ok(row.get(0))
    }

    /// With sslmode=require the connection is encrypted and the server
    /// verified: its certificate must chain to `ca_file`, or nothing is
    /// sent; without it, the connection is plain.
    #[tokio::test]
    async fn sslmode_require_encrypts_and_verifies_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = signed(dir.path(), "db");
        let (other, _, _) = signed(dir.path(), "other");
        let pg = ScratchCluster::start().expect("a scratch PostgreSQL");
        let port = pg.serve_tls(&cert, &key).expect("TLS on");
        let tcp = format!("host=localhost port={port} user=postgres dbname=postgres");

        let tls = reach(format!("{tcp} sslmode=require"), Some(ca.clone())).await;
        assert_eq!(tls.expect("TLS to a verified server"), "true");

        let err = reach(format!("{tcp} sslmode=require"), Some(other))
            .await
            .expect_err("a server whose certificate the CA did not sign");
        assert!(err.to_string().contains("certificate"), "{err}");

        let plain = reach(tcp.clone(), None).await;
        assert_eq!(plain.expect("plain without sslmode"), "false");

        let err = reach(tcp, Some(ca))
            .await
            .expect_err("ca_file without sslmode=require");
        assert!(err.to_string().contains("sslmode=require"), "{err}");
    }
}
