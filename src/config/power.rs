//! `[power]`: how many BMCs one request acts on at once, and the site's own
//! power commands for nodes whose BMC driver is `command`.

use serde::Deserialize;

use super::{ConfigError, Source};
use crate::bmc::command::Commands;

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    pub parallel: usize,
    pub command: Option<Commands>,
}

impl Default for Section {
    fn default() -> Self {
        Section {
            parallel: PowerConfig::default().parallel,
            command: None,
        }
    }
}

/// `[power]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerConfig {
    /// BMCs one power request (or rollout step) talks to at once.
    pub parallel: usize,
    /// `[power.command]`: the commands of driver `command`.
    pub command: Option<Commands>,
}

impl Default for PowerConfig {
    fn default() -> Self {
        PowerConfig {
            parallel: 8,
            command: None,
        }
    }
}

impl Section {
    pub fn validate(self, src: &Source) -> Result<PowerConfig, ConfigError> {
        if self.parallel == 0 {
            return Err(src.invalid("power.parallel", "must be at least 1"));
        }
        if let Some(c) = &self.command {
            for (key, line) in c.lines() {
                crate::bmc::command::check_template(line)
                    .map_err(|reason| src.invalid(&format!("power.command.{key}"), reason))?;
            }
        }
        Ok(PowerConfig {
            parallel: self.parallel,
            command: self.command,
        })
    }
}
