//! `rackboot node ...`: node records through the API, for admins and their
//! scripts (tables by default, `--json` for machines).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

use super::client::{Client, Failure, cell, flag, print_json, print_rows, query_value};
use crate::routes::api;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Node records, one a line: MAC, hostname, state, bootenv, last seen.
    List {
        /// Only nodes whose labels match, e.g. `rack=r12,role=builder` (`k!=v`, bare `k`).
        #[arg(long, short)]
        selector: Option<String>,
        #[arg(long)]
        state: Option<String>,
        /// Nodes that boot (or will boot next) this bootenv.
        #[arg(long)]
        bootenv: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One node's record and its timeline.
    Show {
        mac: String,
        #[arg(long)]
        json: bool,
    },
    /// Change one node: bootenv (now, --once or --for), labels, params, ...
    Set {
        mac: String,
        #[command(flatten)]
        change: Change,
        #[arg(long)]
        json: bool,
    },
    /// The same change for every node a selector matches, all or nothing.
    Bulk {
        #[arg(long, short)]
        selector: String,
        #[command(flatten)]
        change: Change,
        #[arg(long)]
        json: bool,
    },
    /// Delete node records (their leases stay until they expire).
    Delete {
        #[arg(required = true)]
        macs: Vec<String>,
        /// Delete protected nodes too.
        #[arg(long)]
        force: bool,
    },
    /// Create or update many nodes from a CSV or JSON file in one
    /// transaction: all or nothing, the bad line named.
    Import {
        file: PathBuf,
        /// Default: from the file's extension (.csv, else JSON).
        #[arg(long)]
        format: Option<Format>,
        /// Let the file change what protected nodes boot.
        #[arg(long)]
        force: bool,
    },
    /// Who changed a node, and how: its admin changes and deletions, oldest
    /// first (API token, operation, each field before -> after, forced).
    History {
        /// The node's MAC or hostname.
        node: String,
        #[arg(long)]
        json: bool,
    },
    /// Node records in the format `import` reads.
    Export {
        #[arg(long, short)]
        selector: Option<String>,
        #[arg(long, default_value = "json")]
        format: Format,
    },
    /// Make booted nodes pull and run their config scripts again, without a reboot.
    Reconfigure {
        #[arg(long, short, conflicts_with = "macs")]
        selector: Option<String>,
        macs: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Csv,
    Json,
}

/// A change to node records (the API's merge patch).
#[derive(Debug, Args)]
pub struct Change {
    /// Boot this bootenv from now on (or with --once / --for).
    #[arg(long)]
    bootenv: Option<String>,
    /// Boot --bootenv once, then the node's own bootenv again.
    #[arg(long, requires = "bootenv", conflicts_with = "for")]
    once: bool,
    /// Boot --bootenv for this long (e.g. 2h), then the node's own again.
    #[arg(long = "for", requires = "bootenv", value_name = "DURATION")]
    r#for: Option<String>,
    /// Change the bootenv of a protected node.
    #[arg(long)]
    force: bool,
    /// Set a label, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Remove a label (repeatable).
    #[arg(long = "unlabel", value_name = "KEY")]
    unlabels: Vec<String>,
    /// Set a template parameter, KEY=VALUE (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Remove a parameter (repeatable).
    #[arg(long = "unparam", value_name = "KEY")]
    unparams: Vec<String>,
    #[arg(long)]
    hostname: Option<String>,
    /// A fixed address (`none` to drop it).
    #[arg(long)]
    ipv4: Option<String>,
    /// A first-stage loader for this node (`none` to drop it).
    #[arg(long)]
    loader: Option<String>,
    /// Refuse bootenv changes unless forced.
    #[arg(long, conflicts_with = "unprotect")]
    protect: bool,
    #[arg(long)]
    unprotect: bool,
    /// Its BMC's driver: redfish, ipmi or command (with --bmc-address;
    /// replaces the whole BMC record).
    #[arg(long, requires = "bmc_address", value_name = "DRIVER")]
    bmc_driver: Option<crate::model::Driver>,
    /// redfish: the BMC's URL (https://10.1.0.5); ipmi: host or host:port;
    /// command: what [power.command] gets as {{ address }}.
    #[arg(long, requires = "bmc_driver", value_name = "ADDRESS")]
    bmc_address: Option<String>,
    #[arg(long, requires = "bmc_driver", value_name = "USER")]
    bmc_user: Option<String>,
    /// The secret (a file in secrets_dir, mode 0600) holding the BMC's password.
    #[arg(long, requires = "bmc_driver", value_name = "NAME")]
    bmc_password_secret: Option<String>,
    /// redfish: the system's id, when the BMC has several.
    #[arg(long, requires = "bmc_driver", value_name = "ID")]
    bmc_system: Option<String>,
    /// redfish over HTTPS: accept the BMC's self-signed certificate.
    #[arg(long, requires = "bmc_driver")]
    bmc_insecure: bool,
    /// Remove the node's BMC record.
    #[arg(long, conflicts_with = "bmc_driver")]
    no_bmc: bool,
}

impl Change {
    fn patch(&self) -> Result<Value, Failure> {
        let mut p = Map::new();
        if let Some(b) = &self.bootenv {
            p.insert("bootenv".into(), json!(b));
        }
        if self.once {
            p.insert("once".into(), json!(true));
        }
        if let Some(d) = &self.r#for {
            p.insert("for".into(), json!(d));
        }
        if self.force {
            p.insert("force".into(), json!(true));
        }
        for (key, set, unset) in [
            ("labels", &self.labels, &self.unlabels),
            ("params", &self.params, &self.unparams),
        ] {
            let mut m = Map::new();
            for kv in set {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| Failure::Input(format!("`{kv}`: expected KEY=VALUE")))?;
                m.insert(k.into(), json!(v));
            }
            for k in unset {
                m.insert(k.clone(), Value::Null);
            }
            if !m.is_empty() {
                p.insert(key.into(), Value::Object(m));
            }
        }
        if let Some(h) = &self.hostname {
            p.insert("hostname".into(), json!(h));
        }
        for (key, v) in [("ipv4", &self.ipv4), ("loader", &self.loader)] {
            if let Some(v) = v {
                let v = if v == "none" { Value::Null } else { json!(v) };
                p.insert(key.into(), v);
            }
        }
        if self.protect || self.unprotect {
            p.insert("protected".into(), json!(self.protect));
        }
        if let (Some(driver), Some(address)) = (self.bmc_driver, &self.bmc_address) {
            let mut b = Map::new();
            b.insert("driver".into(), json!(driver));
            b.insert("address".into(), json!(address));
            for (k, v) in [
                ("username", &self.bmc_user),
                ("password_secret", &self.bmc_password_secret),
                ("system", &self.bmc_system),
            ] {
                if let Some(v) = v {
                    b.insert(k.into(), json!(v));
                }
            }
            if self.bmc_insecure {
                b.insert("insecure".into(), json!(true));
            }
            p.insert("bmc".into(), Value::Object(b));
        }
        if self.no_bmc {
            p.insert("bmc".into(), Value::Null);
        }
        if p.is_empty() {
            return Err(Failure::Input(
                "nothing to change: give --bootenv, --label, --param, --hostname, --ipv4, --loader, --protect or --bmc-driver".into(),
            ));
        }
        Ok(Value::Object(p))
    }
}

pub fn run(client: &Client, cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::List {
            selector,
            state,
            bootenv,
            json,
        } => {
            let mut q = Vec::new();
            for (k, v) in [("label", selector), ("state", state), ("bootenv", bootenv)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", query_value(&v)));
                }
            }
            let path = if q.is_empty() {
                api::NODES.to_string()
            } else {
                format!("{}?{}", api::NODES, q.join("&"))
            };
            let nodes = client.get(&path)?;
            if json {
                print_json(&nodes);
            } else {
                print_nodes(&nodes);
            }
        }
        NodeCommand::Show { mac, json } => {
            let node = client.get(&api::node(mac))?;
            if json {
                print_json(&node);
            } else {
                print_node(&node);
            }
        }
        NodeCommand::Set { mac, change, json } => {
            let node = client.patch(&api::node(mac), &change.patch()?)?;
            if json {
                print_json(&node);
            } else {
                print_nodes(&Value::Array(vec![node]));
            }
        }
        NodeCommand::Bulk {
            selector,
            change,
            json,
        } => {
            let body = json!({"selector": selector, "patch": change.patch()?});
            let r = client.post(api::NODES_BULK, &body)?;
            if json {
                print_json(&r);
            } else {
                let count = |k: &str| r[k].as_array().map_or(0, Vec::len);
                println!(
                    "{} node(s) match `{selector}`; {} changed",
                    count("matched"),
                    count("changed")
                );
                for m in r["changed"].as_array().into_iter().flatten() {
                    println!("  {}", cell(m));
                }
            }
        }
        NodeCommand::Delete { macs, force } => {
            let q = if force { "?force=true" } else { "" };
            for mac in macs {
                client.delete(&format!("{}{q}", api::node(&mac)))?;
                println!("deleted {mac}");
            }
        }
        NodeCommand::Import {
            file,
            format,
            force,
        } => import(client, &file, format, force)?,
        NodeCommand::History { node, json } => {
            let mac = mac_of(client, &node)?;
            let events = client.get(&format!("{}?kind=admin", api::node_events(mac)))?;
            if json {
                print_json(&events);
            } else if events.as_array().is_none_or(Vec::is_empty) {
                println!(
                    "no admin changes of {node} on its timeline (it keeps the latest events; the log keeps every change, target rackboot::audit)"
                );
            } else {
                super::explain::print_events(&events);
            }
        }
        NodeCommand::Export { selector, format } => {
            let path = match &selector {
                Some(s) => format!("{}?label={}", api::NODES, query_value(s)),
                None => api::NODES.into(),
            };
            let nodes = client.get(&path)?;
            let records: Vec<Value> = nodes
                .as_array()
                .into_iter()
                .flatten()
                .map(exportable)
                .collect();
            match format {
                Format::Json => print_json(&Value::Array(records)),
                Format::Csv => print!("{}", to_csv(&records)?),
            }
        }
        NodeCommand::Reconfigure { selector, macs } => {
            let body = match selector {
                Some(s) => json!({"selector": s}),
                None if !macs.is_empty() => json!({"macs": macs}),
                None => {
                    return Err(Failure::Input(
                        "say which nodes: --selector SELECTOR or MAC...".into(),
                    )
                    .into());
                }
            };
            let r = client.post(api::RECONFIGURE, &body)?;
            let macs = r["macs"].as_array().cloned().unwrap_or_default();
            println!("{} node(s) will run their config scripts again", macs.len());
            for m in &macs {
                println!("  {}", cell(m));
            }
        }
    }
    Ok(())
}

fn print_nodes(nodes: &Value) {
    let headers = ["MAC", "HOSTNAME", "IPV4", "BOOTENV", "LAST SEEN", "STATE"];
    print_rows(&headers, nodes, |n| {
        let bootenv = match (n["next_bootenv"].as_str(), n["bootenv_expires"].as_str()) {
            (Some(next), Some(until)) => {
                format!("{next} until {until} (then {})", cell(&n["bootenv"]))
            }
            (Some(next), None) => format!("{next} once (then {})", cell(&n["bootenv"])),
            _ => cell(&n["bootenv"]),
        };
        let state = match n["state_reason"].as_str() {
            Some(r) if n["state"] == "failed" || n["state"] == "unreachable" => {
                format!("{}: {r}", cell(&n["state"]))
            }
            _ => cell(&n["state"]),
        };
        let bootenv = bootenv + &flag(&n["protected"], " [protected]", "");
        let (mac, hostname, ipv4) = (cell(&n["mac"]), cell(&n["hostname"]), cell(&n["ipv4"]));
        vec![mac, hostname, ipv4, bootenv, cell(&n["last_seen"]), state]
    });
}

fn print_node(n: &Value) {
    let keys = [
        "mac",
        "hostname",
        "ipv4",
        "state",
        "state_reason",
        "bootenv",
        "next_bootenv",
        "bootenv_expires",
        "protected",
        "loader",
        "arch",
        "relay_info",
        "last_seen",
        "created",
    ];
    for k in keys {
        println!("{:<16}{}", format!("{k}:"), cell(&n[k]));
    }
    if let Some(d) = n["diagnosis"].as_str() {
        println!("{:<16}{d}", "stuck:");
    }
    for k in ["labels", "params"] {
        let pairs: Vec<String> = n[k]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect();
        println!("{:<16}{}", format!("{k}:"), pairs.join(", "));
    }
    if let Some(b) = n["bmc"].as_object() {
        let fields: Vec<String> = ["driver", "address", "system", "username", "password_secret"]
            .iter()
            .filter_map(|k| b.get(*k).map(|v| format!("{k}={}", cell(v))))
            .collect();
        println!("{:<16}{}", "bmc:", fields.join(", "));
    }
    println!();
    super::explain::print_events(&n["events"]);
}

/// The fields of a record that `import` takes, from a record the API shows.
fn exportable(n: &Value) -> Value {
    let mut m = Map::new();
    for k in [
        "mac",
        "hostname",
        "ipv4",
        "labels",
        "params",
        "bootenv",
        "next_bootenv",
        "bootenv_expires",
        "loader",
        "protected",
        "bmc",
    ] {
        if !n[k].is_null() {
            m.insert(k.into(), n[k].clone());
        }
    }
    Value::Object(m)
}

/// CSV columns: the scalar fields, then `labels` and `params` as `k=v;k=v`.
const CSV_COLUMNS: [&str; 10] = [
    "mac",
    "hostname",
    "ipv4",
    "bootenv",
    "next_bootenv",
    "bootenv_expires",
    "loader",
    "protected",
    "labels",
    "params",
];

pub(crate) fn to_csv(records: &[Value]) -> Result<String, Failure> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| Failure::Unavailable(format!("cannot write CSV: {e}"));
    w.write_record(CSV_COLUMNS).map_err(io)?;
    for r in records {
        let row: Vec<String> = CSV_COLUMNS
            .iter()
            .map(|c| match (*c, &r[*c]) {
                (_, Value::Null) => String::new(),
                ("labels" | "params", Value::Object(m)) => m
                    .iter()
                    .map(|(k, v)| format!("{k}={}", cell(v)))
                    .collect::<Vec<_>>()
                    .join(";"),
                (_, v) => cell(v),
            })
            .collect();
        w.write_record(&row).map_err(io)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Failure::Unavailable(format!("cannot write CSV: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Records read from an import file, each with where it starts (for errors).
pub(crate) struct Records {
    pub(crate) records: Vec<Value>,
    /// Per record: how to name it in an error, e.g. `nodes.csv, line 7`.
    places: Vec<String>,
}

pub(crate) fn read_csv(path: &Path, text: &str) -> Result<Records, Failure> {
    let mut r = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let bad =
        |line: u64, why: String| Failure::Input(format!("{}, line {line}: {why}", path.display()));
    let headers = r.headers().map_err(|e| bad(1, e.to_string()))?.clone();
    for h in &headers {
        if !CSV_COLUMNS.contains(&h) {
            return Err(bad(
                1,
                format!("unknown column `{h}` (columns: {})", CSV_COLUMNS.join(", ")),
            ));
        }
    }
    if !headers.iter().any(|h| h == "mac") {
        return Err(bad(1, "a `mac` column is required".into()));
    }
    let mut out = Records {
        records: Vec::new(),
        places: Vec::new(),
    };
    for row in r.records() {
        let row = row.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            bad(line, e.to_string())
        })?;
        let line = row.position().map_or(0, |p| p.line());
        let mut m = Map::new();
        for (h, v) in headers.iter().zip(row.iter()) {
            if v.is_empty() {
                continue;
            }
            let value = match h {
                "protected" => match v {
                    "true" | "yes" | "1" => json!(true),
                    "false" | "no" | "0" => json!(false),
                    _ => return Err(bad(line, format!("protected: `{v}` is not true or false"))),
                },
                "labels" | "params" => {
                    let mut kv = BTreeMap::new();
                    for pair in v.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                        let (k, val) = pair
                            .split_once('=')
                            .ok_or_else(|| bad(line, format!("{h}: `{pair}` is not KEY=VALUE")))?;
                        kv.insert(k.trim().to_string(), json!(val.trim()));
                    }
                    // Only separators (`;;`) say nothing, as an empty cell does:
                    // an export of the record must read back the same.
                    if kv.is_empty() {
                        continue;
                    }
                    json!(kv)
                }
                _ => json!(v),
            };
            m.insert(h.into(), value);
        }
        out.records.push(Value::Object(m));
        out.places.push(format!("{}, line {line}", path.display()));
    }
    Ok(out)
}

fn read_json(path: &Path, text: &str) -> Result<Records, Failure> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        Failure::Input(format!(
            "{}, line {}: not JSON: {e}",
            path.display(),
            e.line()
        ))
    })?;
    let Value::Array(records) = v else {
        return Err(Failure::Input(format!(
            "{}: expected a JSON array of node records",
            path.display()
        )));
    };
    let places = (0..records.len())
        .map(|i| format!("{}, record {}", path.display(), i + 1))
        .collect();
    Ok(Records { records, places })
}

/// The MAC of `node`: itself when it is one, else the node with that hostname.
fn mac_of(client: &Client, node: &str) -> Result<String, Failure> {
    if let Ok(mac) = node.parse::<crate::model::Mac>() {
        return Ok(mac.to_string());
    }
    let found = client.get(&format!("{}?hostname={}", api::NODES, query_value(node)))?;
    found
        .as_array()
        .and_then(|a| a.first())
        .and_then(|n| n["mac"].as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            Failure::Input(format!(
                "no node has the hostname `{node}` (nor is it a MAC); `rackboot node list` shows them"
            ))
        })
}

fn import(client: &Client, file: &Path, format: Option<Format>, force: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::Input(format!("cannot read {}: {e}", file.display())))?;
    let format = format.unwrap_or(
        if file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            Format::Csv
        } else {
            Format::Json
        },
    );
    let recs = match format {
        Format::Csv => read_csv(file, &text)?,
        Format::Json => read_json(file, &text)?,
    };
    if recs.records.is_empty() {
        return Err(Failure::Input(format!("{}: no records", file.display())).into());
    }
    let path = if force {
        format!("{}?force=true", api::NODES_IMPORT)
    } else {
        api::NODES_IMPORT.to_string()
    };
    match client.post(&path, &Value::Array(recs.records.clone())) {
        Ok(r) => {
            let n = |k: &str| r[k].as_array().map_or(0, Vec::len);
            println!(
                "imported {}: {} created, {} updated",
                file.display(),
                n("created"),
                n("updated")
            );
            Ok(())
        }
        Err(Failure::Refused {
            what,
            status,
            message,
            hint,
        }) => {
            // The server names the record by its index: name the line instead.
            let place = index_of(&message).and_then(|i| recs.places.get(i)).cloned();
            Err(match place {
                Some(place) => Failure::Refused {
                    what: place,
                    status,
                    message,
                    hint,
                },
                None => Failure::Refused {
                    what,
                    status,
                    message,
                    hint,
                },
            }
            .into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The record index in an import refusal (`record I, field ...`).
fn index_of(message: &str) -> Option<usize> {
    let rest = message.split("record ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_become_records_and_bad_lines_are_named() {
        let p = Path::new("rack12.csv");
        let text = "# rack 12\nmac,hostname,bootenv,labels,protected\n\
                    52:54:00:00:12:01,b1,discovery,rack=r12;role=builder,yes\n\
                    52:54:00:00:12:02,b2,,rack=r12,\n";
        let r = read_csv(p, text).unwrap();
        assert_eq!(r.records.len(), 2);
        assert_eq!(r.records[0]["labels"]["role"], "builder");
        assert_eq!(r.records[0]["protected"], true);
        assert!(r.records[1].get("bootenv").is_none());
        assert_eq!(r.places[1], "rack12.csv, line 4");
        // A cell of separators only is no cell, as an export writes an empty map.
        let sep = read_csv(p, "mac,params\n52:54:00:00:12:03,;;;\r\n").unwrap();
        assert!(
            sep.records[0].get("params").is_none(),
            "{:?}",
            sep.records[0]
        );

        let e = read_csv(p, "mac,colour\n").err().unwrap().to_string();
        assert!(e.contains("line 1") && e.contains("colour"), "{e}");
        let e = read_csv(p, "mac,labels\n52:54:00:00:00:01,rack\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("line 2") && e.contains("KEY=VALUE"), "{e}");
        assert_eq!(index_of("record 3, field `mac`: bad"), Some(3));
    }

    #[test]
    fn export_round_trips_through_csv() {
        let rec = json!({"mac": "52:54:00:00:00:01", "hostname": "b1",
            "labels": {"rack": "r1", "role": "builder"}, "protected": true, "bootenv": "discovery"});
        let csv = to_csv(std::slice::from_ref(&rec)).unwrap();
        let back = read_csv(Path::new("x.csv"), &csv).unwrap();
        assert_eq!(back.records[0], rec);
    }
}
