//! `[console]`: the admin console in the browser, served beside the API on
//! the same listeners. Off unless enabled; it signs admins in with the API's
//! tokens, so it needs `api.tokens_file`.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Source, duration_text};

/// How long a console sign-in lasts without being used.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    pub enabled: bool,
    pub session_idle: String,
}

impl Default for Section {
    fn default() -> Section {
        Section {
            enabled: false,
            session_idle: duration_text(DEFAULT_SESSION_IDLE),
        }
    }
}

/// The console, when it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// A sign-in unused this long is over (`session_idle`).
    pub session_idle: Duration,
}

impl Section {
    /// `tokens`: whether `api.tokens_file` is set (the console's sign-in).
    pub fn validate(
        self,
        src: &Source,
        tokens: bool,
    ) -> Result<Option<ConsoleConfig>, ConfigError> {
        let session_idle = src.duration("console.session_idle", &self.session_idle)?;
        if !self.enabled {
            return Ok(None);
        }
        if !tokens {
            return Err(src.invalid(
                "console.enabled",
                "the console signs in with the API's tokens: set api.tokens_file too",
            ));
        }
        Ok(Some(ConsoleConfig { session_idle }))
    }
}
