//! A site's own power commands (a PDU's CLI, a VM manager's), from the
//! configuration, never from a node record: an API token must not be a way
//! to run commands on the appliance. Each command is a `sh -c` line in
//! which `{{ address }}`, `{{ mac }}` and `{{ hostname }}` are replaced by
//! the node's values, always shell-quoted, so no value can become a second
//! command.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{BmcError, BmcRecord, NextBoot, Power, PowerState};

/// One command, whole.
const RUN_WITHIN: Duration = Duration::from_secs(60);

/// `[power.command]`: a line per action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    /// Prints `on` or `off` (its last word counts).
    pub status: String,
    pub on: String,
    pub off: String,
    /// A hard reset; without it, a cycle is `off`, then `on`.
    #[serde(default)]
    pub reset: Option<String>,
    /// Makes the next boot (only) a network boot.
    pub pxe_once: String,
    /// Prints what the next boot will be; `pxe` in it means a network boot.
    /// Without it a PXE-once reboot is refused: nothing can prove it took.
    #[serde(default)]
    pub pxe_check: Option<String>,
}

impl Commands {
    /// Each line with its key, as `[power.command]` names it.
    pub fn lines(&self) -> Vec<(&'static str, &str)> {
        let mut v = vec![
            ("status", self.status.as_str()),
            ("on", self.on.as_str()),
            ("off", self.off.as_str()),
            ("pxe_once", self.pxe_once.as_str()),
        ];
        if let Some(r) = &self.reset {
            v.push(("reset", r));
        }
        if let Some(c) = &self.pxe_check {
            v.push(("pxe_check", c));
        }
        v
    }
}

/// Whether `template` renders (at start, so a typo is found by `rackboot
/// check`, not by the first reboot that needs it).
pub fn check_template(template: &str) -> Result<(), String> {
    render(template, "", &Vars::default()).map(|_| ())
}

/// The node's values the commands are given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    pub mac: String,
    pub hostname: String,
}

pub struct Command {
    address: String,
    commands: Commands,
    vars: Vars,
}

impl Command {
    pub fn new(record: &BmcRecord, commands: Commands, vars: Vars) -> Command {
        Command {
            address: record.address.clone(),
            commands,
            vars,
        }
    }

    async fn run(&self, what: &'static str, template: &str) -> Result<String, BmcError> {
        let line =
            render(template, &self.address, &self.vars).map_err(|message| BmcError::Config {
                bmc: self.name(),
                message,
            })?;
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", &line]);
        super::run_tool(cmd, self.name(), what, &line, RUN_WITHIN).await
    }
}

/// `template` with each `{{ name }}` replaced by its value, shell-quoted.
pub fn render(template: &str, address: &str, vars: &Vars) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("an unclosed {{{{ in {template:?}"))?;
        let value = match after[..close].trim() {
            "address" => address,
            "mac" => &vars.mac,
            "hostname" => &vars.hostname,
            other => {
                return Err(format!(
                    "{{{{ {other} }}}} in {template:?}: the names are address, mac and hostname"
                ));
            }
        };
        out.push_str(&shell_quote(value));
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[async_trait]
impl Power for Command {
    fn name(&self) -> String {
        format!("command {}", self.address)
    }

    async fn state(&self) -> Result<PowerState, BmcError> {
        let out = self
            .run("read the power state", &self.commands.status)
            .await?;
        super::state_said(self.name(), &out)
    }

    async fn on(&self) -> Result<(), BmcError> {
        self.run("power on", &self.commands.on).await.map(drop)
    }

    async fn off(&self) -> Result<(), BmcError> {
        self.run("power off", &self.commands.off).await.map(drop)
    }

    async fn reset(&self) -> Result<(), BmcError> {
        match &self.commands.reset {
            Some(reset) => self.run("reset", reset).await.map(drop),
            None => {
                self.off().await?;
                super::wait_off(self).await?;
                self.on().await
            }
        }
    }

    async fn set_pxe_once(&self) -> Result<(), BmcError> {
        self.run("set the one-time PXE boot", &self.commands.pxe_once)
            .await
            .map(drop)
    }

    async fn next_boot(&self) -> Result<NextBoot, BmcError> {
        let Some(check) = &self.commands.pxe_check else {
            return Ok(NextBoot {
                pxe: false,
                said: "nothing: [power.command] has no pxe_check to read it".into(),
            });
        };
        let out = self.run("read the next boot back", check).await?;
        Ok(NextBoot {
            pxe: out.to_ascii_lowercase().contains("pxe"),
            said: format!("{:?}", out.trim()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmc::{Driver, PowerAction, act};

    #[test]
    fn values_are_quoted_so_none_becomes_a_command() {
        let vars = Vars {
            mac: "52:54:00:00:00:01".into(),
            hostname: "b1'; rm -rf / #".into(),
        };
        let line = render("pdu --outlet {{address}} --name {{ hostname }}", "7", &vars).unwrap();
        assert_eq!(line, r"pdu --outlet '7' --name 'b1'\''; rm -rf / #'");
        assert!(
            render("x {{ token }}", "7", &vars)
                .unwrap_err()
                .contains("address, mac and hostname")
        );
        assert!(
            render("x {{ address", "7", &vars)
                .unwrap_err()
                .contains("unclosed")
        );
    }

    /// A "PDU" that is a file holding the power state and the next boot.
    fn pdu(dir: &std::path::Path, with_check: bool) -> Command {
        let state = dir.join("power");
        let boot = dir.join("boot");
        std::fs::write(&state, "off\n").unwrap();
        std::fs::write(&boot, "disk\n").unwrap();
        let (s, b) = (state.display(), boot.display());
        let commands = Commands {
            status: format!("cat {s}"),
            on: format!("echo on > {s}"),
            off: format!("echo off > {s}"),
            reset: None,
            pxe_once: format!("echo pxe > {b}"),
            pxe_check: with_check.then(|| format!("cat {b}")),
        };
        let record = BmcRecord {
            driver: Driver::Command,
            address: "outlet-7".into(),
            system: None,
            username: None,
            password_secret: None,
            insecure: false,
        };
        Command::new(&record, commands, Vars::default())
    }

    #[tokio::test]
    async fn commands_switch_the_power_and_a_pxe_once_without_a_check_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = pdu(dir.path(), true);
        act(&p, PowerAction::On).await.unwrap();
        assert_eq!(p.state().await.unwrap(), PowerState::On);
        let done = act(&p, PowerAction::PxeOnce).await.unwrap();
        assert!(done.detail.contains("power-cycled"), "{}", done.detail);
        assert_eq!(p.state().await.unwrap(), PowerState::On);

        let unchecked = pdu(dir.path(), false);
        act(&unchecked, PowerAction::On).await.unwrap();
        let e = act(&unchecked, PowerAction::PxeOnce).await.unwrap_err();
        assert!(e.to_string().contains("no pxe_check"), "{e}");
    }

    #[tokio::test]
    async fn a_failing_command_says_which_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pdu(dir.path(), true);
        p.commands.on = "echo outlet 7 is locked >&2; exit 3".into();
        let e = act(&p, PowerAction::On).await.unwrap_err().to_string();
        assert!(
            e.contains("power on refused") && e.contains("outlet 7 is locked"),
            "{e}"
        );
    }
}
