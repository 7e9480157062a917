//! IPMI v2.0 through `ipmitool -I lanplus`: `chassis power`, `chassis
//! bootdev pxe`, and boot parameter 5 (the boot flags) to read it back.
//! The password goes to ipmitool in its environment (`-E`, `IPMI_PASSWORD`),
//! never on its command line where `ps` would show it, nor in a file.

use std::time::Duration;

use async_trait::async_trait;

use super::{BmcError, BmcRecord, NextBoot, Power, PowerState};

/// One ipmitool run, whole: its own retries (`-R`, `-N`) fit well inside.
const RUN_WITHIN: Duration = Duration::from_secs(30);

pub struct Ipmi {
    host: String,
    port: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl Ipmi {
    pub fn new(record: &BmcRecord, password: Option<String>) -> Ipmi {
        let (host, port) = match record.address.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => {
                (h.to_string(), Some(p.to_string()))
            }
            _ => (record.address.clone(), None),
        };
        Ipmi {
            host,
            port,
            username: record.username.clone(),
            password,
        }
    }

    /// Runs `ipmitool ... args`; its standard output.
    async fn run(&self, what: &'static str, args: &[&str]) -> Result<String, BmcError> {
        let mut cmd = tokio::process::Command::new("ipmitool");
        cmd.args(["-I", "lanplus", "-H", &self.host, "-R", "2", "-N", "3"]);
        if let Some(p) = &self.port {
            cmd.args(["-p", p]);
        }
        if let Some(u) = &self.username {
            cmd.args(["-U", u]);
        }
        // Nothing of the appliance's own environment reaches ipmitool.
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        if let Some(p) = &self.password {
            cmd.arg("-E").env("IPMI_PASSWORD", p);
        }
        cmd.args(args);
        super::run_tool(cmd, self.name(), what, "ipmitool", RUN_WITHIN).await
    }
}

#[async_trait]
impl Power for Ipmi {
    fn name(&self) -> String {
        match &self.port {
            Some(p) => format!("ipmi {}:{p}", self.host),
            None => format!("ipmi {}", self.host),
        }
    }

    async fn state(&self) -> Result<PowerState, BmcError> {
        let out = self
            .run("read the power state", &["chassis", "power", "status"])
            .await?;
        // "Chassis Power is on" / "Chassis Power is off"
        super::state_said(self.name(), &out)
    }

    async fn on(&self) -> Result<(), BmcError> {
        self.run("power on", &["chassis", "power", "on"])
            .await
            .map(drop)
    }

    async fn off(&self) -> Result<(), BmcError> {
        self.run("power off", &["chassis", "power", "off"])
            .await
            .map(drop)
    }

    // reset: the trait's off-then-on. `chassis power cycle` is optional in
    // IPMI and refused by many BMCs (and by pyghmi's).

    async fn set_pxe_once(&self) -> Result<(), BmcError> {
        self.run("set the one-time PXE boot", &["chassis", "bootdev", "pxe"])
            .await
            .map(drop)
    }

    async fn next_boot(&self) -> Result<NextBoot, BmcError> {
        let out = self
            .run(
                "read the boot flags back",
                &["chassis", "bootparam", "get", "5"],
            )
            .await?;
        let selector = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("- Boot Device Selector :"))
            .map(str::trim)
            .unwrap_or("none");
        let valid = out.lines().any(|l| l.trim() == "- Boot Flag Valid");
        Ok(NextBoot {
            pxe: valid && selector == "Force PXE",
            said: format!(
                "boot device {selector}{}",
                if valid { "" } else { ", flags not valid" }
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmc::Driver;

    fn record(address: &str) -> BmcRecord {
        BmcRecord {
            driver: Driver::Ipmi,
            address: address.into(),
            system: None,
            username: None,
            password_secret: None,
            insecure: false,
        }
    }

    #[test]
    fn an_address_may_carry_a_port_and_an_ipv6_host_is_whole() {
        let i = Ipmi::new(&record("10.1.0.5:6230"), None);
        assert_eq!(
            (i.host.as_str(), i.port.as_deref()),
            ("10.1.0.5", Some("6230"))
        );
        let i = Ipmi::new(&record("bmc-r1-07"), None);
        assert_eq!((i.host.as_str(), i.port), ("bmc-r1-07", None));
        let i = Ipmi::new(&record("fd00::5"), None);
        assert_eq!((i.host.as_str(), i.port), ("fd00::5", None));
    }
}
