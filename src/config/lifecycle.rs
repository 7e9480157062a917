//! `[lifecycle]`: how long a boot may stall, and how long a record DHCP
//! made for an unknown MAC may stay idle.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Source, duration_text};
use crate::boot::{HEARTBEAT_MIN, Timeouts};

/// Durations as humantime text ("10m", "2h 30m").
#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    pub report_timeout: String,
    pub install_timeout: String,
    pub heartbeat_timeout: String,
    /// "0" or "never": never.
    pub reap_discovered_after: String,
}

/// The timeouts are [`Timeouts::default`], which the sweep and its tests use too.
impl Default for Section {
    fn default() -> Self {
        let t = Timeouts::default();
        Section {
            report_timeout: duration_text(t.report),
            install_timeout: duration_text(t.install),
            heartbeat_timeout: duration_text(t.heartbeat),
            reap_discovered_after: "1h".into(),
        }
    }
}

impl Section {
    /// The stall timeouts, and how long before an idle discovered record is
    /// reaped (`None`: never).
    pub fn validate(self, src: &Source) -> Result<(Timeouts, Option<Duration>), ConfigError> {
        let timeouts = Timeouts {
            report: src.duration("lifecycle.report_timeout", &self.report_timeout)?,
            install: src.duration("lifecycle.install_timeout", &self.install_timeout)?,
            heartbeat: src.duration("lifecycle.heartbeat_timeout", &self.heartbeat_timeout)?,
        };
        // A waiting agent's heartbeat is its long poll, which lasts up to
        // WAIT_MAX: a shorter timeout would call every idle node unreachable.
        if timeouts.heartbeat < HEARTBEAT_MIN {
            return Err(src.invalid(
                "lifecycle.heartbeat_timeout",
                format!(
                    "`{}` is shorter than {}: nodes heartbeat about every 25 s",
                    self.heartbeat_timeout,
                    humantime::format_duration(HEARTBEAT_MIN)
                ),
            ));
        }
        let reap = match self.reap_discovered_after.trim() {
            "0" | "never" | "none" => None,
            text => Some(src.duration("lifecycle.reap_discovered_after", text)?),
        };
        Ok((timeouts, reap))
    }
}
