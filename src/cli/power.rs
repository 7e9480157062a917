//! `rackboot power status|on|off|cycle|pxe-once <MAC...|--selector S>`:
//! power control through the API (`POST /api/v1/power`). Exit 0 when every
//! node's BMC did what was asked, 4 when some did not (each says why).

use clap::Args;
use serde_json::{Value, json};

use super::client::{Client, Failure, cell, flag, print_json, print_rows};
use crate::model::PowerAction;
use crate::routes::api;

#[derive(Debug, Args)]
pub struct PowerArgs {
    /// status, on, off, cycle, or pxe-once (boot from the network once,
    /// then power-cycle; refused, with no reboot, when the BMC does not
    /// keep the one-time boot override).
    pub action: PowerAction,
    /// The nodes, by label selector (e.g. role=builder,rack=r12).
    #[arg(long, short, conflicts_with = "macs")]
    pub selector: Option<String>,
    /// The nodes, by MAC.
    pub macs: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(client: &Client, a: PowerArgs) -> anyhow::Result<()> {
    let body = match (&a.selector, a.macs.is_empty()) {
        (Some(s), _) => json!({"action": a.action, "selector": s}),
        (None, false) => json!({"action": a.action, "macs": a.macs}),
        (None, true) => {
            return Err(
                Failure::Input("say which nodes: --selector SELECTOR or MAC...".into()).into(),
            );
        }
    };
    let reply = client.post(api::POWER, &body)?;
    let nodes = reply["nodes"].as_array().cloned().unwrap_or_default();
    if a.json {
        print_json(&reply);
    } else {
        print_rows(
            &["MAC", "HOSTNAME", "BEFORE", "RESULT", "DETAIL"],
            &reply["nodes"],
            |n| {
                let (mac, hostname, before) =
                    (cell(&n["mac"]), cell(&n["hostname"]), cell(&n["before"]));
                vec![
                    mac,
                    hostname,
                    before,
                    flag(&n["ok"], "ok", "FAILED"),
                    cell(&n["detail"]),
                ]
            },
        );
    }
    let failed = nodes
        .iter()
        .filter(|n| n["ok"] != Value::Bool(true))
        .count();
    if nodes.is_empty() {
        eprintln!("no node matched");
    }
    if failed > 0 {
        return Err(Failure::CheckFailed(format!(
            "{failed} of {} node(s): {} not done (see DETAIL, and each node's timeline)",
            nodes.len(),
            a.action.as_str()
        ))
        .into());
    }
    Ok(())
}
