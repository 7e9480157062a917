//! Power control through a machine's BMC: status, on, off, cycle, and a
//! cycle into PXE once.
//!
//! Three drivers speak to BMCs ([`redfish`], [`ipmi`] through `ipmitool`,
//! and [`command`], a site's own commands for a PDU or a VM); each knows
//! only its protocol. The rules every power action follows are here, once:
//!
//! - **A PXE-once reboot reads the override back first** and refuses to
//!   reboot when the BMC did not keep it. Real BMCs answer 200 OK to a boot
//!   override they then forget; a reboot after that boots the old disk, and
//!   a reinstall that was promised never happens.
//! - A cycle of a machine that is off powers it on (IPMI's own `cycle` is
//!   refused by many BMCs when the power is off).
//! - Every call to a BMC is bounded in time; a BMC that does not answer is
//!   an error that names it, never a wait without end.
//!
//! The password comes from a secret on the appliance (the caller reads
//! it at each action) and appears in no error, log line or API answer.

pub mod command;
pub mod ipmi;
pub mod redfish;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

/// How long one power-off may take to show before a cycle gives up on it.
const OFF_WITHIN: Duration = Duration::from_secs(30);
/// How often a cycle looks whether the power is off yet.
const OFF_POLL: Duration = Duration::from_millis(500);

pub use crate::model::{BmcRecord, Driver, PowerAction, PowerState};

/// What a power action did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub action: PowerAction,
    /// The power before the action.
    pub before: PowerState,
    /// What was done, in a sentence for the timeline.
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BmcError {
    #[error("BMC {bmc}: {what} failed: {cause}")]
    Unreachable {
        bmc: String,
        what: &'static str,
        cause: String,
    },
    #[error("BMC {bmc}: {what} refused: {answer}")]
    Refused {
        bmc: String,
        what: &'static str,
        answer: String,
    },
    #[error(
        "BMC {bmc} accepted the one-time PXE boot but reads back {read_back}: not rebooting, or the \
         machine would boot its disk instead of reinstalling (set the boot order by hand, or fix the BMC)"
    )]
    NotKept { bmc: String, read_back: String },
    #[error("BMC {bmc}: the power is still on {secs} s after it was switched off", secs = OFF_WITHIN.as_secs())]
    StaysOn { bmc: String },
    #[error("BMC {bmc}: {0}", .message)]
    Config { bmc: String, message: String },
}

/// What the one-time boot override reads back as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextBoot {
    /// Whether the next boot is from the network.
    pub pxe: bool,
    /// What the BMC said, for the error when it is not.
    pub said: String,
}

/// One BMC, through one driver.
#[async_trait]
pub trait Power: Send + Sync {
    /// Where it is, for errors and the timeline.
    fn name(&self) -> String;
    async fn state(&self) -> Result<PowerState, BmcError>;
    async fn on(&self) -> Result<(), BmcError>;
    /// Off at once (not a shutdown the OS may ignore).
    async fn off(&self) -> Result<(), BmcError>;
    /// A hard reset of a machine that is on. A driver without one leaves
    /// the default: off, then on.
    async fn reset(&self) -> Result<(), BmcError> {
        self.off().await?;
        wait_off(self).await?;
        self.on().await
    }
    async fn set_pxe_once(&self) -> Result<(), BmcError>;
    async fn next_boot(&self) -> Result<NextBoot, BmcError>;
}

async fn wait_off<P: Power + ?Sized>(p: &P) -> Result<(), BmcError> {
    let deadline = tokio::time::Instant::now() + OFF_WITHIN;
    loop {
        if p.state().await? == PowerState::Off {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BmcError::StaysOn { bmc: p.name() });
        }
        tokio::time::sleep(OFF_POLL).await;
    }
}

/// Does `action` through `power`, by the rules above.
pub async fn act(power: &dyn Power, action: PowerAction) -> Result<Outcome, BmcError> {
    let before = power.state().await?;
    let detail = match action {
        PowerAction::Status => format!("power is {before}"),
        PowerAction::On => {
            power.on().await?;
            format!("powered on (was {before})")
        }
        PowerAction::Off => {
            power.off().await?;
            format!("powered off (was {before})")
        }
        PowerAction::Cycle => cycle(power, before).await?,
        PowerAction::PxeOnce => {
            power.set_pxe_once().await?;
            let next = power.next_boot().await?;
            if !next.pxe {
                return Err(BmcError::NotKept {
                    bmc: power.name(),
                    read_back: next.said,
                });
            }
            format!(
                "next boot from the network ({}); {}",
                next.said,
                cycle(power, before).await?
            )
        }
    };
    Ok(Outcome {
        action,
        before,
        detail,
    })
}

async fn cycle(power: &dyn Power, before: PowerState) -> Result<String, BmcError> {
    Ok(match before {
        PowerState::Off => {
            power.on().await?;
            "powered on (was off)".into()
        }
        PowerState::On => {
            power.reset().await?;
            "power-cycled".into()
        }
    })
}

/// The power state a tool printed as its last word (`on` or `off`, in any
/// case): `ipmitool chassis power status`, or an admin's status command.
pub(crate) fn state_said(bmc: String, out: &str) -> Result<PowerState, BmcError> {
    match out
        .split_whitespace()
        .last()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("on") => Ok(PowerState::On),
        Some("off") => Ok(PowerState::Off),
        _ => Err(BmcError::Refused {
            bmc,
            what: "read the power state",
            answer: format!("printed {:?}, not on or off", out.trim()),
        }),
    }
}

/// Runs a power tool (`ipmitool`, an admin's command) for `what` within
/// `within`, and gives its standard output. `tool` names it in errors: a
/// tool that cannot start or does not end leaves the BMC unreachable; one
/// that fails is the BMC's refusal, in the last line it printed.
pub(crate) async fn run_tool(
    mut cmd: tokio::process::Command,
    bmc: String,
    what: &'static str,
    tool: &str,
    within: std::time::Duration,
) -> Result<String, BmcError> {
    let failed = |cause: String| BmcError::Unreachable {
        bmc: bmc.clone(),
        what,
        cause,
    };
    let out = tokio::time::timeout(within, cmd.kill_on_drop(true).output())
        .await
        .map_err(|_| failed(format!("{tool}: no end in {} s", within.as_secs())))?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => failed(format!("{tool} is not installed ({e})")),
            _ => failed(format!("cannot run {tool}: {e}")),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(BmcError::Refused {
            bmc,
            what,
            answer: format!("{tool}: {}: {}", out.status, last_said(&stderr, &stdout)),
        });
    }
    Ok(stdout)
}

/// The last line a failed command printed (its standard output read after its error output).
pub(crate) fn last_said<'a>(stderr: &'a str, stdout: &'a str) -> &'a str {
    stderr
        .lines()
        .chain(stdout.lines())
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
}

/// The driver for `record`, with its password (read by the caller from
/// the secret the record names); `commands` are the site's, for `command`.
pub fn power_of(
    record: &BmcRecord,
    password: Option<String>,
    commands: Option<&command::Commands>,
    vars: command::Vars,
) -> Result<Box<dyn Power>, BmcError> {
    Ok(match record.driver {
        Driver::Redfish => Box::new(redfish::Redfish::new(record, password)?),
        Driver::Ipmi => Box::new(ipmi::Ipmi::new(record, password)),
        Driver::Command => {
            let commands = commands.ok_or_else(|| BmcError::Config {
                bmc: record.address.clone(),
                message: "driver \"command\" but no [power.command] in the configuration".into(),
            })?;
            Box::new(command::Command::new(record, commands.clone(), vars))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A BMC in memory, to prove the rules; the drivers meet real BMC
    /// emulators in tests/power.rs.
    struct Fake {
        power: Mutex<PowerState>,
        keeps_override: bool,
        next_pxe: Mutex<bool>,
        calls: Mutex<Vec<&'static str>>,
    }

    impl Fake {
        fn new(power: PowerState, keeps_override: bool) -> Fake {
            Fake {
                power: Mutex::new(power),
                keeps_override,
                next_pxe: Mutex::new(false),
                calls: Mutex::new(Vec::new()),
            }
        }
        fn calls(&self) -> Vec<&'static str> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl Power for Fake {
        fn name(&self) -> String {
            "fake".into()
        }
        async fn state(&self) -> Result<PowerState, BmcError> {
            Ok(*self.power.lock().unwrap())
        }
        async fn on(&self) -> Result<(), BmcError> {
            self.calls.lock().unwrap().push("on");
            *self.power.lock().unwrap() = PowerState::On;
            Ok(())
        }
        async fn off(&self) -> Result<(), BmcError> {
            self.calls.lock().unwrap().push("off");
            *self.power.lock().unwrap() = PowerState::Off;
            Ok(())
        }
        async fn set_pxe_once(&self) -> Result<(), BmcError> {
            self.calls.lock().unwrap().push("pxe");
            *self.next_pxe.lock().unwrap() = self.keeps_override;
            Ok(())
        }
        async fn next_boot(&self) -> Result<NextBoot, BmcError> {
            let pxe = *self.next_pxe.lock().unwrap();
            Ok(NextBoot {
                pxe,
                said: if pxe { "Pxe" } else { "Hdd" }.into(),
            })
        }
    }

    #[tokio::test]
    async fn a_pxe_once_the_bmc_did_not_keep_reboots_nothing() {
        let bmc = Fake::new(PowerState::On, false);
        let e = act(&bmc, PowerAction::PxeOnce).await.unwrap_err();
        assert!(matches!(e, BmcError::NotKept { .. }), "{e}");
        assert!(e.to_string().contains("reads back Hdd"), "{e}");
        assert_eq!(bmc.calls(), ["pxe"], "no power call after the refusal");
        assert_eq!(bmc.state().await.unwrap(), PowerState::On);
    }

    #[tokio::test]
    async fn a_kept_pxe_once_cycles_a_running_machine_and_starts_a_stopped_one() {
        let running = Fake::new(PowerState::On, true);
        let done = act(&running, PowerAction::PxeOnce).await.unwrap();
        assert_eq!(running.calls(), ["pxe", "off", "on"]);
        assert_eq!(done.before, PowerState::On);
        assert!(done.detail.contains("power-cycled"), "{}", done.detail);

        let stopped = Fake::new(PowerState::Off, true);
        act(&stopped, PowerAction::PxeOnce).await.unwrap();
        assert_eq!(stopped.calls(), ["pxe", "on"]);
    }

    #[tokio::test]
    async fn status_changes_nothing() {
        let bmc = Fake::new(PowerState::Off, true);
        let done = act(&bmc, PowerAction::Status).await.unwrap();
        assert_eq!(done.detail, "power is off");
        assert!(bmc.calls().is_empty());
    }

    #[test]
    fn power_actions_parse_by_their_cli_names_and_refuse_others() {
        for a in [
            PowerAction::Status,
            PowerAction::On,
            PowerAction::Off,
            PowerAction::Cycle,
            PowerAction::PxeOnce,
        ] {
            assert_eq!(a.as_str().parse::<PowerAction>(), Ok(a));
        }
        assert!(
            "reboot"
                .parse::<PowerAction>()
                .unwrap_err()
                .contains("pxe-once")
        );
    }
}
