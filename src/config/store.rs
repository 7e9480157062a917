//! `[store]`: which engine keeps nodes, leases and timelines. SQLite (the
//! default) in the state directory, with how durable its lease journal is
//! ([`crate::store::SyncMode`]); or PostgreSQL, shared by several appliances.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Source};

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    pub engine: Engine,
    pub sync: crate::store::SyncMode,
    pub url: Option<String>,
    pub password_file: Option<PathBuf>,
    pub appliance: Option<String>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Engine {
    #[default]
    Sqlite,
    Postgres,
}

/// The store engine and where it keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In the state directory.
    Sqlite { sync: crate::store::SyncMode },
    /// A PostgreSQL database other appliances may share.
    Postgres {
        /// libpq's connection string or URL, without the password.
        url: String,
        /// Where the password is, when the database wants one (else
        /// `$RACKBOOT_STORE_PASSWORD`, if set).
        password_file: Option<PathBuf>,
        /// This appliance's name among those sharing the database
        /// (default: the host's name).
        appliance: Option<String>,
        /// CA certificates (PEM) the database's certificate must chain to,
        /// with `sslmode=require` in `url` (default: the system's roots).
        ca_file: Option<PathBuf>,
    },
}

impl Section {
    pub fn validate(self, src: &Source) -> Result<StoreConfig, ConfigError> {
        match self.engine {
            Engine::Sqlite => {
                for (key, set) in [
                    ("store.url", self.url.is_some()),
                    ("store.password_file", self.password_file.is_some()),
                    ("store.appliance", self.appliance.is_some()),
                    ("store.ca_file", self.ca_file.is_some()),
                ] {
                    if set {
                        return Err(src
                            .invalid(key, "only for engine = \"postgres\" (the store is SQLite)"));
                    }
                }
                Ok(StoreConfig::Sqlite { sync: self.sync })
            }
            Engine::Postgres => {
                let Some(url) = self.url.filter(|u| !u.trim().is_empty()) else {
                    return Err(src.invalid(
                        "store.url",
                        "engine = \"postgres\" needs the database: url = \"host=db1 dbname=rackboot user=rackboot\"",
                    ));
                };
                let parsed = match url.parse::<tokio_postgres::Config>() {
                    Ok(parsed) => parsed,
                    Err(e) => {
                        return Err(src.invalid(
                            "store.url",
                            format!("not a PostgreSQL connection string or URL: {e}"),
                        ));
                    }
                };
                if self.ca_file.is_some()
                    && parsed.get_ssl_mode() != tokio_postgres::config::SslMode::Require
                {
                    return Err(src.invalid(
                        "store.ca_file",
                        "TLS to the database is on only with sslmode=require in store.url: add it, or drop ca_file",
                    ));
                }
                if self.sync != crate::store::SyncMode::default() {
                    return Err(src.invalid(
                        "store.sync",
                        "only for SQLite: PostgreSQL commits every lease before its ACK",
                    ));
                }
                if let Some(name) = &self.appliance
                    && (name.is_empty() || name.len() > 63 || name.chars().any(char::is_whitespace))
                {
                    return Err(src.invalid(
                        "store.appliance",
                        "a short name without spaces (at most 63 characters)",
                    ));
                }
                Ok(StoreConfig::Postgres {
                    url,
                    password_file: self.password_file.as_deref().map(|p| src.resolve(p)),
                    appliance: self.appliance,
                    ca_file: self.ca_file.as_deref().map(|p| src.resolve(p)),
                })
            }
        }
    }
}
