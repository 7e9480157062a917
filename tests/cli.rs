//! The CLI (`rackboot node|bootenv|explain|events`) end to end against a real `rackboot serve`
//! in a private network namespace: tables, --json, all-or-nothing imports with the bad line
//! named, and exit codes scripts can rely on (0 ok, 1 refused, 3 unreachable, 4 check failed).
//!
//! Needs root (namespaces). Every wait is bounded; rackboot is ended by PID when the lab drops.

mod common;

use std::process::Output;
use std::time::Duration;

use common::api::{ADMIN_TOKEN, READ_TOKEN};
use common::lab::SERVER_IP;
use common::server::Server;
use common::setup::Setup;
use serde_json::Value;

const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

/// `rackboot <args>` inside the lab, pointed at its server with `token`.
fn cli(rb: &Server, token: Option<&str>, args: &[&str]) -> Output {
    let server = format!("http://{SERVER_IP}");
    // Connection options are global: they may follow the subcommand's own.
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["--server", &server]);
    if let Some(t) = token {
        all.extend_from_slice(&["--token", t]);
    }
    rb.lab.run(RACKBOOT, &all, Duration::from_secs(30))
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(o: Output, code: i32, wants: &[&str]) -> String {
    let all = text(&o);
    assert_eq!(o.status.code(), Some(code), "{all}");
    for w in wants {
        assert!(all.contains(w), "wanted `{w}` in:\n{all}");
    }
    all
}

fn write(rb: &Server, name: &str, text: &str) -> String {
    let p = rb.path(name);
    std::fs::write(&p, text).expect("write");
    p.to_str().expect("utf-8").to_string()
}

#[test]
fn a_rack_is_imported_all_or_nothing_and_listed_changed_and_exported() {
    let rb = Setup::new("cli-nodes").standard_files().start();
    let admin = Some(ADMIN_TOKEN);

    // A bad line refuses the whole file, and says which line.
    let bad = write(
        &rb,
        "bad.csv",
        "mac,hostname,labels\n52:54:00:12:00:01,b1,rack=r12;role=builder\nnot-a-mac,b2,rack=r12\n",
    );
    fails(
        cli(&rb, admin, &["node", "import", &bad]),
        1,
        &["bad.csv, line 3", "mac"],
    );
    let none: Value =
        serde_json::from_str(&ok(cli(&rb, admin, &["node", "list", "--json"]))).expect("json");
    assert_eq!(
        none.as_array().map(Vec::len),
        Some(0),
        "nothing imported: {none}"
    );

    let rack = write(
        &rb,
        "rack12.csv",
        "# rack 12\nmac,hostname,ipv4,labels,protected\n\
         52:54:00:12:00:01,b1,10.77.0.201,rack=r12;role=builder,\n\
         52:54:00:12:00:02,b2,,rack=r12;role=builder,\n\
         52:54:00:12:00:03,db1,,rack=r12;role=db,true\n",
    );
    let out = ok(cli(&rb, admin, &["node", "import", &rack]));
    assert!(out.contains("3 created"), "{out}");

    let table = ok(cli(
        &rb,
        admin,
        &["node", "list", "--selector", "role=builder"],
    ));
    assert!(table.starts_with("MAC"), "{table}");
    assert!(
        table.contains("b1") && table.contains("b2") && !table.contains("db1"),
        "{table}"
    );

    // Once: next boot only; the table says so.
    let out = ok(cli(
        &rb,
        admin,
        &[
            "node",
            "set",
            "52:54:00:12:00:01",
            "--bootenv",
            "rescue",
            "--once",
        ],
    ));
    assert!(out.contains("rescue once (then discovery)"), "{out}");
    // A protected node refuses, and says how to force.
    fails(
        cli(
            &rb,
            admin,
            &["node", "set", "52:54:00:12:00:03", "--bootenv", "rescue"],
        ),
        1,
        &["protected", "force"],
    );
    // A bulk change that includes it changes nothing, unless forced.
    fails(
        cli(
            &rb,
            admin,
            &[
                "node",
                "bulk",
                "--selector",
                "rack=r12",
                "--bootenv",
                "local",
            ],
        ),
        1,
        &["protected"],
    );
    let out = ok(cli(
        &rb,
        admin,
        &[
            "node",
            "bulk",
            "--selector",
            "rack=r12",
            "--bootenv",
            "local",
            "--force",
        ],
    ));
    assert!(
        out.contains("3 node(s) match") && out.contains("3 changed"),
        "{out}"
    );
    // A read-only token may look but not change.
    ok(cli(
        &rb,
        Some(READ_TOKEN),
        &["node", "show", "52:54:00:12:00:02"],
    ));
    fails(
        cli(
            &rb,
            Some(READ_TOKEN),
            &["node", "set", "52:54:00:12:00:02", "--label", "x=y"],
        ),
        1,
        &["403", "read"],
    );

    // Export is what import reads: a round trip leaves the records as they were.
    let exported = ok(cli(&rb, admin, &["node", "export", "--format", "csv"]));
    assert!(exported.starts_with("mac,hostname,ipv4"), "{exported}");
    let again = write(&rb, "again.csv", &exported);
    let out = ok(cli(&rb, admin, &["node", "import", &again]));
    assert!(out.contains("3 updated"), "{out}");
    let show = ok(cli(&rb, admin, &["node", "show", "52:54:00:12:00:01"]));
    assert!(
        show.contains("10.77.0.201") && show.contains("role=builder"),
        "{show}"
    );

    // A re-run of config scripts for the rack, without a reboot.
    let out = ok(cli(
        &rb,
        admin,
        &["node", "reconfigure", "--selector", "rack=r12"],
    ));
    assert!(
        out.contains("3 node(s) will run their config scripts again"),
        "{out}"
    );
    let show = ok(cli(
        &rb,
        admin,
        &["node", "show", "52:54:00:12:00:01", "--json"],
    ));
    let n: Value = serde_json::from_str(&show).expect("json");
    assert_eq!(n["config_generation"], 1, "{n}");

    ok(cli(&rb, admin, &["node", "delete", "52:54:00:12:00:02"]));
    fails(
        cli(&rb, admin, &["node", "show", "52:54:00:12:00:02"]),
        1,
        &["404"],
    );
}

#[test]
fn bootenvs_explain_events_and_exit_codes() {
    // Its curl fetches a node's boot script from rackboot's own address.
    let rb = Setup::new("cli-boot")
        .standard_files()
        .tokens_from_any_address()
        .start();
    let admin = Some(ADMIN_TOKEN);

    let list = ok(cli(&rb, admin, &["bootenv", "list"]));
    assert!(
        list.contains("discovery") && list.contains("rescue"),
        "{list}"
    );
    let show = ok(cli(&rb, admin, &["bootenv", "show", "rescue"]));
    assert!(
        show.contains("[x86_64_efi]") && show.contains("x86_64/vmlinuz"),
        "{show}"
    );
    ok(cli(&rb, admin, &["bootenv", "check"]));

    // A typo in a template is caught before the file goes live: file and line named, exit 4.
    let broken = write(
        &rb,
        "install.toml",
        "description = \"typo\"\n[arch.x86_64_efi]\nkernel = \"x86_64/vmlinuz\"\ncmdline = \"{{ nod.mac }}\"\n",
    );
    fails(
        cli(&rb, admin, &["bootenv", "check", &broken]),
        4,
        &["install.toml, line 4"],
    );
    let good = write(
        &rb,
        "fine.toml",
        "[arch.x86_64_efi]\nkernel = \"x86_64/vmlinuz\"\ncmdline = \"{{ node.mac }}\"\n",
    );
    assert!(ok(cli(&rb, admin, &["bootenv", "check", &good])).contains("ok"));

    let out = ok(cli(
        &rb,
        admin,
        &["explain", "52:54:00:99:00:01", "--arch", "bios"],
    ));
    assert!(
        out.contains("unknown") && out.contains("undionly.kpxe"),
        "{out}"
    );
    assert!(
        out.contains("hello.sh  (listed by bootenv discovery)"),
        "{out}"
    );
    let out = ok(cli(
        &rb,
        admin,
        &[
            "explain",
            "52:54:00:99:00:01",
            "--arch",
            "x86_64_efi",
            "--user-class",
            "iPXE",
            "--json",
        ],
    ));
    let e: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(e["decision"], "script", "{e}");
    assert!(
        e["script"].as_str().unwrap_or_default().contains("#!ipxe"),
        "{e}"
    );

    // A node's timeline: the boot script fetched over HTTP is on it once its kernel is.
    let r = rb.request("GET", "/boot/52:54:00:99:00:02.ipxe?arch=bios", None, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = rb.request(
        "GET",
        "/assets/x86_64/vmlinuz?mac=52:54:00:99:00:02",
        None,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let out = ok(cli(&rb, admin, &["events", "52:54:00:99:00:02"]));
    assert!(out.contains("http.script"), "{out}");

    // No token: refused, with what to do.
    fails(
        cli(&rb, None, &["node", "list"]),
        1,
        &["401", "--token-file"],
    );
    // Nothing listening: exit 3, saying where it looked.
    let o = rb.lab.run(
        RACKBOOT,
        &[
            "node",
            "--server",
            "http://127.0.0.1:9",
            "--token",
            ADMIN_TOKEN,
            "list",
        ],
        Duration::from_secs(30),
    );
    fails(o, 3, &["cannot reach rackboot at http://127.0.0.1:9"]);
}

/// "Who put alibuild03 into the installer?" from the shell: `node history` by hostname shows
/// each admin change with the token's name; a protected node is neither re-imported onto
/// another bootenv nor deleted without `--force`, and the refusal names it.
#[test]
fn node_history_names_who_changed_what_and_protected_nodes_need_force() {
    let rb = Setup::new("cli-audit").standard_files().start();
    let admin = Some(ADMIN_TOKEN);
    let mac = "52:54:00:12:03:03";
    let rack = write(
        &rb,
        "rack.csv",
        &format!("mac,hostname,protected\n{mac},alibuild03,true\n"),
    );
    ok(cli(&rb, admin, &["node", "import", &rack]));
    ok(cli(
        &rb,
        admin,
        &["node", "set", mac, "--bootenv", "rescue", "--force"],
    ));

    let out = ok(cli(&rb, admin, &["node", "history", "alibuild03"]));
    assert!(
        out.contains("admin.change")
            && out.contains(
                "token `tests` (patch): bootenv discovery -> rescue; forced (the node is protected)"
            ),
        "{out}"
    );
    assert!(
        out.contains("token `tests` (import): hostname - -> alibuild03"),
        "{out}"
    );
    let json: Value =
        serde_json::from_str(&ok(cli(&rb, admin, &["node", "history", mac, "--json"])))
            .expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(2), "{json}");
    fails(
        cli(&rb, admin, &["node", "history", "nosuchhost"]),
        1,
        &["no node has the hostname `nosuchhost`"],
    );

    // Import onto another bootenv, and delete: refused, naming the node, unless forced.
    let back = write(&rb, "back.csv", &format!("mac,bootenv\n{mac},discovery\n"));
    fails(
        cli(&rb, admin, &["node", "import", &back]),
        1,
        &["back.csv, line 2", "alibuild03", mac, "protected", "409"],
    );
    fails(
        cli(&rb, admin, &["node", "delete", mac]),
        1,
        &["alibuild03", "protected", "409"],
    );
    assert!(ok(cli(&rb, admin, &["node", "show", mac])).contains("rescue"));
    ok(cli(&rb, admin, &["node", "import", &back, "--force"]));
    ok(cli(&rb, admin, &["node", "delete", mac, "--force"]));
    fails(cli(&rb, admin, &["node", "show", mac]), 1, &["404"]);
}

/// `rackboot node list --json | head -1`: a reader that went away ends the
/// command quietly by SIGPIPE, as it ends any Unix filter, not with a panic
/// (exit 101) on the broken pipe. The pipe's read end is closed before the
/// command starts, so its first write meets the broken pipe every time.
#[test]
fn output_into_a_closed_pipe_ends_quietly_like_a_unix_filter() {
    let rb = Setup::new("cli-pipe").standard_files().start();
    let server = format!("http://{SERVER_IP}");
    let script = format!(
        "import os, subprocess, sys\n\
         r, w = os.pipe()\n\
         os.close(r)\n\
         p = subprocess.run([{RACKBOOT:?}, 'node', 'list', '--json', '--server', {server:?}, \
         '--token', {ADMIN_TOKEN:?}], stdout=w, stderr=subprocess.PIPE, timeout=20)\n\
         print(p.returncode)\n\
         sys.stdout.write(p.stderr.decode())\n"
    );
    let out = rb
        .lab
        .run("python3", &["-c", &script], Duration::from_secs(30));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        said.lines().next(),
        Some("-13"),
        "want an end by SIGPIPE (13) and nothing said:\n{said}"
    );
    assert!(!said.contains("panicked"), "{said}");
}
