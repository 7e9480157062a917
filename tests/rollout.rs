//! Rollouts through `rackboot rollout` against a real `rackboot serve` in a private network
//! namespace, its nodes powered through the `command` driver: each node a small shell
//! "machine" (a power state and a one-time boot device in files) that, when powered on into
//! PXE, fetches its boot script and kernel from rackboot over HTTP and calls the installer's
//! callback as an installed system would, or, for a bootenv whose kernel is `…-broken`,
//! never calls back (a kernel that panics). These prove the rollout's own rules quickly: the
//! budget, the order of steps on each timeline, canaries, reverts, pausing, a restart of
//! rackboot mid-rollout, and (on PostgreSQL) the loss of the appliance running it. They do not
//! prove that real firmware netboots on the power cycle: the VM tests do that, and
//! tests/vm_rollout.rs reinstalls VMs powered through a Redfish BMC.
//!
//! Needs root (namespaces), curl, and PostgreSQL's server binaries. Every wait is bounded; rackboot is ended by PID when the
//! lab drops.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::api::ADMIN_TOKEN;
use common::lab::SERVER_IP;
use common::rollout::{in_order, phases, rollout, start, steps, watch};
use common::server::Server;
use common::setup::Setup;
use serde_json::Value;

const NODES: [&str; 4] = [
    "52:54:00:c0:00:01",
    "52:54:00:c0:00:02",
    "52:54:00:c0:00:03",
    "52:54:00:c0:00:04",
];

/// A machine: `machine.sh ACTION MAC` for [power.command]; power and next boot in files
/// under `machines/<mac>/`.
const MACHINE: &str = r#"#!/bin/sh
set -eu
here=$(dirname "$0")
dir="$here/machines/$2"
mkdir -p "$dir"
[ -f "$dir/power" ] || echo on > "$dir/power"
[ -f "$dir/boot" ] || echo disk > "$dir/boot"
case "$1" in
status) cat "$dir/power" ;;
off) echo off > "$dir/power" ;;
pxe) echo pxe > "$dir/boot" ;;
next) cat "$dir/boot" ;;
on|reset)
    echo on > "$dir/power"
    if [ "$(cat "$dir/boot")" = pxe ]; then
        echo disk > "$dir/boot"
        nohup sh "$here/netboot.sh" "$2" >>"$dir/netboot.log" 2>&1 &
    fi ;;
esac
"#;

/// What a machine powered on into PXE does: its boot script, its kernel, and (unless the
/// kernel is a broken one) the installer's callback with the token of that boot.
const NETBOOT: &str = r#"#!/bin/sh
set -eu
sleep 1
get() { curl -sf --retry 20 --retry-connrefused --retry-delay 1 -m 5 "$@"; }
script=$(get "http://SERVER/boot/$1.ipxe?arch=x86_64_efi")
echo "$script" > "$(dirname "$0")/machines/$1/script"
# One read of the hold: the test removes it while machines may be looking.
if hold=$(cat "$(dirname "$0")/hold" 2>/dev/null); then sleep "$hold"; fi
kernel=$(echo "$script" | awk '/^kernel /{for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}')
get -o /dev/null "$kernel"
case "$kernel" in *broken*) echo "kernel panic"; exit 0 ;; esac
token=$(echo "$script" | tr ' ' '\n' | sed -n 's/^rackboot.token=//p')
sleep 1
get -X POST -H "Authorization: Bearer $token" --data-binary done \
    "http://SERVER/node/$1/installed?bootenv=install"
echo installed
"#;

fn setup(name: &str) -> Server {
    let rb = appliance(name, None, None);
    rb.serve();
    import(&rb);
    rb
}

/// A rackboot (not yet serving) whose nodes are the stand-in machines of `room`, a site
/// directory holding `machine.sh` and `netboot.sh` (its own when `None`: several appliances
/// share one room), with `store` as its `[store]` table when given.
fn appliance(name: &str, store: Option<&str>, room: Option<&Path>) -> Server {
    let installer = |kernel: &str| {
        format!(
            "installer = true\n[arch.x86_64_efi]\nkernel = \"{kernel}\"\ncmdline = \"{}\"\n",
            common::setup::CMDLINE
        )
    };
    let mut setup = Setup::new(name)
        .standard_files()
        .file("assets/x86_64/vmlinuz-broken", "a kernel that panics")
        .file("bootenvs/install.toml", installer("x86_64/vmlinuz"))
        .file("bootenvs/broken.toml", installer("x86_64/vmlinuz-broken"))
        .file("machine.sh", MACHINE)
        .file(
            "netboot.sh",
            NETBOOT.replace("SERVER", &SERVER_IP.to_string()),
        )
        .tokens_from_any_address();
    if let Some(store) = store {
        setup = setup.table("store", store);
    }
    let rb = setup.prepare();
    let site = room.unwrap_or(rb.site_dir()).display().to_string();
    let machine = format!("sh {site}/machine.sh");
    let hooks_log = format!("{site}/hooks.log");
    let config = format!(
        "{}\n[power.command]\nstatus = \"{machine} status {{{{ mac }}}}\"\non = \"{machine} on {{{{ mac }}}}\"\n\
         off = \"{machine} off {{{{ mac }}}}\"\nreset = \"{machine} reset {{{{ mac }}}}\"\n\
         pxe_once = \"{machine} pxe {{{{ mac }}}}\"\npxe_check = \"{machine} next {{{{ mac }}}}\"\n\
         [rollout.hooks]\ndrain = 'echo \"drain $RACKBOOT_HOSTNAME\" >> {hooks_log}'\n\
         slow-drain = 'sleep 3; echo \"drain $RACKBOOT_HOSTNAME\" >> {hooks_log}'\n\
         undrain = 'echo \"undrain $RACKBOOT_HOSTNAME\" >> {hooks_log}'\n\
         refuse = 'echo \"jobs still running on $RACKBOOT_HOSTNAME\"; exit 3'\n",
        rb.config_text()
    );
    std::fs::write(rb.config(), config).unwrap();
    rb
}

/// The four builders, each with its machine's outlet as BMC, through `rb`'s CLI.
fn import(rb: &Server) {
    let nodes: Vec<Value> = NODES
        .iter()
        .enumerate()
        .map(|(i, mac)| {
            serde_json::json!({"mac": mac, "hostname": format!("b{}", i + 1), "labels": {"role": "builder"},
                               "bootenv": "local", "bmc": {"driver": "command", "address": format!("outlet-{}", i + 1)}})
        })
        .collect();
    let file = rb.path("nodes.json");
    std::fs::write(&file, Value::Array(nodes).to_string()).unwrap();
    let (code, out) = rb.cli(&["node", "import", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
}

/// `rackboot rollout start` of `bootenv` over the builders, with `more` flags; its id.
fn reinstall(rb: &Server, bootenv: &str, more: &[&str]) -> String {
    let mut args = vec!["--selector", "role=builder", "--bootenv", bootenv];
    args.extend_from_slice(more);
    start(rb, &args)
}

/// What each machine's network boots printed.
fn machines(rb: &Server) -> String {
    NODES
        .iter()
        .map(|mac| {
            let log = std::fs::read_to_string(rb.path(&format!("machines/{mac}/netboot.log")))
                .unwrap_or_else(|e| format!("({e})"));
            format!("--- {mac}\n{log}")
        })
        .collect()
}

#[test]
fn a_rollout_takes_each_node_through_drain_install_and_undrain_one_at_a_time() {
    let rb = setup("rollout-fleet");
    let id = reinstall(
        &rb,
        "install",
        &[
            "--canary",
            "1",
            "--max-unavailable",
            "1",
            "--drain",
            "drain",
            "--undrain",
            "undrain",
            "--deadline",
            "1m",
        ],
    );
    let (r, most) = watch(
        &rb,
        &id,
        Duration::from_secs(240),
        || machines(&rb),
        |r| r["state"] == "done",
    );
    assert_eq!(most, 1, "never more than one node out of service: {r:#}");
    assert!(phases(&r).values().all(|p| p == "done"), "{r:#}");
    assert_eq!(r["nodes"][0]["canary"], true);
    for mac in NODES {
        in_order(
            &steps(&rb, mac),
            &[
                "rollout: rollout r-1: drain: hook `drain`: exited 0",
                "rollout: rollout r-1: bootenv: install once, then local",
                "power: pxe-once by rollout r-1 via command",
                "report.installed",
                "bootenv.changed",
                "rollout: rollout r-1: installed",
                "rollout: rollout r-1: undrain: hook `undrain`: exited 0",
                "rollout: rollout r-1: done",
            ],
        );
        let n = rb.node(mac);
        assert_eq!(
            (n["state"].as_str(), n["bootenv"].as_str()),
            (Some("installed"), Some("local")),
            "{n}"
        );
    }
    // One node at a time: each drained and put back before the next is drained.
    let hooks = std::fs::read_to_string(rb.path("hooks.log")).unwrap();
    let want: Vec<String> = (1..=4)
        .flat_map(|i| [format!("drain b{i}"), format!("undrain b{i}")])
        .collect();
    assert_eq!(hooks.lines().collect::<Vec<_>>(), want, "{hooks}");
    let (code, out) = rb.cli(&["rollout", "status", &id]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("4 done, 0 in flight, 0 failed, 0 skipped of 4"),
        "{out}"
    );
    rb.assert_running();
}

#[test]
fn a_failing_canary_is_reverted_and_pauses_the_rollout_before_any_other_node() {
    let rb = setup("rollout-canary");
    // A protected node is skipped, and listed with why.
    let r = rb.request(
        "PATCH",
        &format!("/api/v1/nodes/{}", NODES[3]),
        Some(ADMIN_TOKEN),
        Some(r#"{"protected":true}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let id = reinstall(
        &rb,
        "broken",
        &[
            "--canary",
            "1",
            "--max-unavailable",
            "2",
            "--deadline",
            "6s",
        ],
    );
    let (r, _) = watch(
        &rb,
        &id,
        Duration::from_secs(60),
        || machines(&rb),
        |r| r["state"] == "paused",
    );
    let canary = NODES[0];
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!("canary b1 ({canary}) failed: no `installed`")),
        "{r:#}"
    );
    let p = phases(&r);
    assert_eq!(p[canary], "failed", "{r:#}");
    assert_eq!(
        (p[NODES[1]].as_str(), p[NODES[2]].as_str()),
        ("pending", "pending"),
        "{r:#}"
    );
    assert_eq!(p[NODES[3]], "skipped", "{r:#}");
    // The canary is back on what it booted before; no other node was touched.
    assert_eq!(rb.node(canary)["bootenv"], "local");
    assert!(
        rb.node(canary)["next_bootenv"].is_null(),
        "{}",
        rb.node(canary)
    );
    in_order(
        &steps(&rb, canary),
        &[
            "bootenv: broken once, then local",
            "power: pxe-once",
            "reverted: back to local",
            "failed: no `installed`",
        ],
    );
    for mac in &NODES[1..3] {
        assert!(
            steps(&rb, mac).is_empty(),
            "{mac} was touched: {:#?}",
            steps(&rb, mac)
        );
    }
    assert!(
        steps(&rb, NODES[3])
            .iter()
            .any(|s| s.contains("skipped: protected"))
    );
    // Paused stays paused; abort ends it, and a paused or aborted rollout starts nothing.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(phases(&rollout(&rb, &id))[NODES[1]], "pending");
    let (code, out) = rb.cli(&["rollout", "abort", &id]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = rb.cli(&["rollout", "resume", &id]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("is aborted: it is over"), "{out}");
    rb.assert_running();
}

#[test]
fn a_rollout_goes_on_where_it_was_after_rackboot_is_killed() {
    let rb = setup("rollout-restart");
    // Machines wait between their boot script and their kernel: rackboot is killed there,
    // so the first machine's boot is one the restarted rackboot never handed out.
    let hold = rb.path("hold");
    std::fs::write(&hold, "4").unwrap();
    let id = reinstall(
        &rb,
        "install",
        &["--max-unavailable", "2", "--deadline", "1m"],
    );
    let held = wait_for_script(&rb, Duration::from_secs(60));
    rb.kill();
    std::fs::remove_file(&hold).unwrap();
    rb.serve();
    let (r, most) = watch(
        &rb,
        &id,
        Duration::from_secs(240),
        || machines(&rb),
        |r| r["state"] == "done",
    );
    assert!(most <= 2, "{r:#}");
    assert!(phases(&r).values().all(|p| p == "done"), "{r:#}");
    for mac in NODES {
        assert_eq!(rb.node(mac)["state"], "installed", "{}", rb.node(mac));
    }
    // The lost boot was seen and the machine power-cycled again, not left to its deadline.
    in_order(
        &steps(&rb, &held),
        &[
            "rollout: rollout",
            "power: pxe-once",
            "power-cycling it again",
            "power: pxe-once",
            "report.installed",
        ],
    );
    rb.assert_running();
}

/// The first machine that has fetched its boot script (and is holding before its kernel).
fn wait_for_script(rb: &Server, within: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Some(mac) = NODES
            .iter()
            .find(|mac| rb.path(&format!("machines/{mac}/script")).exists())
        {
            return mac.to_string();
        }
        assert!(
            start.elapsed() < within,
            "no machine fetched its boot script: {}",
            machines(rb)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_rollout_names_what_it_cannot_do() {
    let rb = setup("rollout-refusals");
    for (args, want) in [
        (
            vec!["--bootenv", "nope", "--max-unavailable", "1"],
            "no bootenv `nope`",
        ),
        (
            vec!["--bootenv", "install", "--max-unavailable", "0"],
            "at least one node",
        ),
        (
            vec![
                "--bootenv",
                "install",
                "--max-unavailable",
                "1",
                "--drain",
                "rm-rf",
            ],
            "no hook `rm-rf` in [rollout.hooks]",
        ),
    ] {
        let mut all = vec!["rollout", "start", "--selector", "role=builder"];
        all.extend(args);
        let (code, out) = rb.cli(&all);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains(want), "{want}: {out}");
    }
    // A drain hook that fails: the node is not rebooted, and its output is on the timeline.
    let id = reinstall(
        &rb,
        "install",
        &["--max-unavailable", "1", "--drain", "refuse"],
    );
    let (r, _) = watch(
        &rb,
        &id,
        Duration::from_secs(30),
        || machines(&rb),
        |r| r["state"] == "paused",
    );
    let first = r["nodes"][0]["mac"].as_str().unwrap().to_string();
    assert!(
        steps(&rb, &first).iter().any(|s| s.contains("drain: FAILED: hook `refuse`: exited 3: jobs still running on b1")),
        "{:#?}",
        steps(&rb, &first)
    );
    assert!(
        !steps(&rb, &first).iter().any(|s| s.starts_with("power:")),
        "not rebooted"
    );
    rb.assert_running();
}

/// Two appliances on one PostgreSQL database, sharing the machine room: the rollout runs on
/// the one that leads; that one is killed while a node drains, and the other, taking the lead,
/// drains that node again and takes the rollout to `done` on its own.
#[test]
fn a_rollout_goes_on_when_its_appliance_dies_and_another_leads() {
    use rackboot::store::postgres::scratch::ScratchCluster;
    let pg = ScratchCluster::start().expect("a scratch PostgreSQL");
    pg.create_database("rackboot").expect("a database");
    let store = |name: &str| {
        format!(
            "engine = \"postgres\"\nurl = \"{}\"\nappliance = \"{name}\"\n",
            pg.url("rackboot")
        )
    };
    let a = appliance("rollout-pg-a", Some(&store("row-a")), None);
    a.serve();
    let b = appliance("rollout-pg-b", Some(&store("row-b")), Some(a.site_dir()));
    b.serve();
    let leads = |rb: &Server| rb.request("GET", "/healthz", None, None).json()["leads"] == true;
    let leader =
        common::lab::poll_until(Duration::from_secs(15), || match (leads(&a), leads(&b)) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        })
        .expect("one appliance (and only one) leads");
    let (first, second) = if leader { (&a, &b) } else { (&b, &a) };
    import(first);
    let id = reinstall(
        first,
        "install",
        &[
            "--max-unavailable",
            "1",
            "--drain",
            "slow-drain",
            "--undrain",
            "undrain",
            "--deadline",
            "1m",
        ],
    );
    // Killed while the first node's drain hook runs.
    watch(
        first,
        &id,
        Duration::from_secs(30),
        || machines(&a),
        |r| phases(r).values().any(|p| p == "draining"),
    );
    first.kill();
    let (r, most) = watch(
        second,
        &id,
        Duration::from_secs(240),
        || machines(&a),
        |r| r["state"] == "done",
    );
    assert_eq!(most, 1, "{r:#}");
    assert!(phases(&r).values().all(|p| p == "done"), "{r:#}");
    for mac in NODES {
        assert_eq!(
            second.node(mac)["state"],
            "installed",
            "{}",
            second.node(mac)
        );
    }
    assert!(leads(second), "the survivor leads");
    second.wait_log(&["rollout done", &id]);
    // Every node was put back in service, each once.
    let drained = std::fs::read_to_string(a.path("hooks.log")).unwrap_or_default();
    assert_eq!(drained.matches("undrain b").count(), 4, "{drained}");
    second.assert_running();
}
