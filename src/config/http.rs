//! `[http]`: the HTTP server's port, its connection caps and timeouts, and
//! whether node tokens are bound to their node's address.

use serde::Deserialize;

use super::{ConfigError, Source, duration_text};
use crate::http::bounds::{Bounds, Timeouts};

/// Durations as humantime text, at least 1s.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    pub enabled: bool,
    pub port: u16,
    /// 0: from the open-files limit.
    pub max_connections: usize,
    /// 0: no limit.
    pub max_connections_per_address: usize,
    /// Absent: an eighth of max_connections.
    pub reserved_connections: Option<usize>,
    pub header_timeout: String,
    pub body_timeout: String,
    pub idle_timeout: String,
    pub send_timeout: String,
    /// Off only for `rackboot storm` and tests that fetch many nodes'
    /// scripts from one address.
    pub bind_tokens_to_address: bool,
}

/// The caps and timeouts are [`Bounds::default`], which the HTTP server's
/// own tests use too.
impl Default for Section {
    fn default() -> Self {
        let b = Bounds::default();
        Section {
            enabled: true,
            port: 80,
            max_connections: b.max_connections.unwrap_or(0),
            max_connections_per_address: b.per_address,
            reserved_connections: b.reserve,
            header_timeout: duration_text(b.timeouts.header),
            body_timeout: duration_text(b.timeouts.body),
            idle_timeout: duration_text(b.timeouts.idle),
            send_timeout: duration_text(b.timeouts.send),
            bind_tokens_to_address: true,
        }
    }
}

/// `[http]` validated: what the HTTP server is started with.
pub(super) struct Settings {
    /// `None` when HTTP is off.
    pub port: Option<u16>,
    pub bounds: Bounds,
    pub bind_tokens_to_address: bool,
}

impl Section {
    pub fn validate(self, src: &Source) -> Result<Settings, ConfigError> {
        let max_connections = (self.max_connections > 0).then_some(self.max_connections);
        if let (Some(max), Some(reserve)) = (max_connections, self.reserved_connections)
            && reserve >= max
        {
            return Err(src.invalid(
                "http.reserved_connections",
                format!("{reserve} is not below http.max_connections ({max})"),
            ));
        }
        let bounds = Bounds {
            max_connections,
            per_address: self.max_connections_per_address,
            reserve: self.reserved_connections,
            timeouts: Timeouts {
                header: src.duration("http.header_timeout", &self.header_timeout)?,
                body: src.duration("http.body_timeout", &self.body_timeout)?,
                idle: src.duration("http.idle_timeout", &self.idle_timeout)?,
                send: src.duration("http.send_timeout", &self.send_timeout)?,
            },
        };
        Ok(Settings {
            port: self.enabled.then_some(self.port),
            bounds,
            bind_tokens_to_address: self.bind_tokens_to_address,
        })
    }
}
