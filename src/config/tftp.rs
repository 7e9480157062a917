//! `[tftp]`: the TFTP server's port, its transfer slots, and the option caps
//! and retransmission timing of its engine.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Source, duration_text};
use crate::tftp::Limits;
use crate::tftp::packet::{MAX_BLKSIZE, MIN_BLKSIZE};

/// Durations as humantime text ("1s", "500ms", "200us").
#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    pub enabled: bool,
    pub port: u16,
    pub max_transfers: usize,
    pub max_blksize: u32,
    pub max_windowsize: u32,
    pub timeout: String,
    pub max_timeout: String,
    pub give_up: String,
    pub first_ack_timeout: String,
    /// 0: no limit.
    pub max_transfers_per_address: usize,
    pub honor_client_timeout: bool,
    /// "0s": never.
    pub busy_poll: String,
}

/// The engine's caps and timing are [`Limits::default`], which its own tests
/// use too.
impl Default for Section {
    fn default() -> Self {
        let limits = Limits::default();
        Section {
            enabled: true,
            port: 69,
            max_transfers: 256,
            max_blksize: limits.max_blksize.into(),
            max_windowsize: limits.max_windowsize.into(),
            timeout: duration_text(limits.timeout),
            max_timeout: duration_text(limits.max_timeout),
            give_up: duration_text(limits.give_up),
            first_ack_timeout: duration_text(limits.first_ack),
            max_transfers_per_address: 8,
            honor_client_timeout: limits.honor_client_timeout,
            busy_poll: "200us".into(),
        }
    }
}

/// `[tftp]` validated: what the TFTP server is started with.
pub(super) struct Settings {
    /// `None` when TFTP is off.
    pub port: Option<u16>,
    pub max_transfers: usize,
    pub max_per_address: usize,
    pub limits: Limits,
    pub busy_poll: Duration,
}

impl Section {
    pub fn validate(self, src: &Source) -> Result<Settings, ConfigError> {
        if self.max_transfers == 0 {
            return Err(src.invalid(
                "tftp.max_transfers",
                "must be at least 1: with 0 no transfer could ever start",
            ));
        }
        let max_blksize = u16::try_from(self.max_blksize)
            .ok()
            .filter(|b| (MIN_BLKSIZE..=MAX_BLKSIZE).contains(b))
            .ok_or_else(|| {
                src.invalid(
                    "tftp.max_blksize",
                    format!(
                        "{} is outside RFC 2348's {MIN_BLKSIZE}..={MAX_BLKSIZE}",
                        self.max_blksize
                    ),
                )
            })?;
        let max_windowsize = u16::try_from(self.max_windowsize)
            .ok()
            .filter(|&w| w >= 1)
            .ok_or_else(|| {
                src.invalid(
                    "tftp.max_windowsize",
                    format!("{} is outside RFC 7440's 1..=65535", self.max_windowsize),
                )
            })?;
        let timeout = retransmission(src, "tftp.timeout", &self.timeout)?;
        let max_timeout = retransmission(src, "tftp.max_timeout", &self.max_timeout)?;
        let give_up = retransmission(src, "tftp.give_up", &self.give_up)?;
        let first_ack = retransmission(src, "tftp.first_ack_timeout", &self.first_ack_timeout)?;
        for (key, value, wait, consequence) in [
            ("tftp.max_timeout", max_timeout, &self.max_timeout, ""),
            (
                "tftp.give_up",
                give_up,
                &self.give_up,
                ": no retransmission could happen",
            ),
            (
                "tftp.first_ack_timeout",
                first_ack,
                &self.first_ack_timeout,
                ": a client's first answer could never be waited for",
            ),
        ] {
            if value < timeout {
                return Err(src.invalid(
                    key,
                    format!(
                        "{wait} is shorter than tftp.timeout ({}){consequence}",
                        self.timeout
                    ),
                ));
            }
        }
        let busy_poll = src.parse_duration(
            "tftp.busy_poll",
            &self.busy_poll,
            "\"200us\", or \"0s\" for never",
        )?;
        if busy_poll > Duration::from_millis(1) {
            return Err(src.invalid(
                "tftp.busy_poll",
                format!(
                    "`{}` is above 1ms: past that, sleeping costs less than it saves",
                    self.busy_poll
                ),
            ));
        }
        Ok(Settings {
            port: self.enabled.then_some(self.port),
            max_transfers: self.max_transfers,
            max_per_address: self.max_transfers_per_address,
            limits: Limits {
                max_blksize,
                max_windowsize,
                timeout,
                max_timeout,
                give_up,
                first_ack,
                honor_client_timeout: self.honor_client_timeout,
            },
            busy_poll,
        })
    }
}

/// A retransmission timer. Sub-second values are allowed (a LAN answers in
/// microseconds); RFC 2349's range tops out at 255 s.
fn retransmission(src: &Source, key: &str, text: &str) -> Result<Duration, ConfigError> {
    let d = src.parse_duration(key, text, "\"1s\" or \"500ms\"")?;
    if !(Duration::from_millis(10)..=Duration::from_secs(255)).contains(&d) {
        return Err(src.invalid(key, format!("`{text}` is outside 10ms..=255s")));
    }
    Ok(d)
}
