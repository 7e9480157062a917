//! The admin console in a real browser: Debian's chromium, headless, driven over WebDriver,
//! against the real `rackboot serve` in a private network namespace. Sign-in with the API's
//! tokens (a read token sees, an admin token acts), a bootenv set once from a node's page and
//! seen in the API, the fleet page following nodes through their states without a reload (with
//! a thousand more nodes paged), a protected node refusing a change with the CLI's words, and a
//! bulk change previewed before it is applied. Screenshots of the fleet and node pages are kept
//! under `$CARGO_TARGET_TMPDIR/console-screenshots/`.
//!
//! Needs root (namespaces), curl, chromium and chromium-driver (boot-assets/setup.sh installs
//! them). Every wait is bounded; rackboot, chromedriver and the browser end with the lab.

mod common;

use fantoccini::{Client, Locator};
use serde_json::Value;

use common::api::{ADMIN_TOKEN, READ_TOKEN};
use common::browser::{Browser, text_of, until};
use common::lab::SERVER_IP;
use common::server::Server;
use common::setup::{Setup, rsa_cert};

fn console(name: &str) -> Server {
    Setup::new(name)
        .standard_files()
        .tokens_from_any_address()
        .table("console", "enabled = true")
        .start()
}

fn url(path: &str) -> String {
    format!("http://{SERVER_IP}/console{path}")
}

/// Creates a node through the API.
fn create(rb: &Server, json: &str) {
    let r = rb.request("POST", "/api/v1/nodes", Some(ADMIN_TOKEN), Some(json));
    assert_eq!(r.status, 201, "{}", r.text());
}

/// Signs in with `token` (the console's sign-in page, as a person would) and checks who it says.
fn sign_in(b: &Browser, token: &'static str, who: &'static str) {
    let shown = b.run("sign in", move |c| async move {
        c.goto(&url("")).await?;
        // Not signed in: the fleet sends the browser to sign in.
        c.wait()
            .at_most(common::browser::WAIT)
            .for_element(Locator::Id("token"))
            .await?
            .send_keys(token)
            .await?;
        c.find(Locator::Id("sign-in")).await?.click().await?;
        text_of(&c, "#who").await
    });
    let shown = shown.unwrap_or_else(|e| panic!("sign in: {e}"));
    assert!(shown.contains(who), "{shown}");
}

fn sign_out(b: &Browser) {
    b.run("sign out", |c| async move {
        c.find(Locator::Id("sign-out")).await?.click().await?;
        c.wait()
            .at_most(common::browser::WAIT)
            .for_element(Locator::Id("token"))
            .await
            .map(|_| ())
    })
    .unwrap_or_else(|e| panic!("sign out: {e}"));
}

/// Sets `bootenv` on node `mac`'s page (from now on, or `once`) and returns the message the
/// page shows after.
async fn set_bootenv(
    c: &Client,
    mac: &str,
    bootenv: &str,
    once: bool,
) -> Result<String, fantoccini::error::CmdError> {
    c.goto(&url(&format!("/nodes/{mac}"))).await?;
    c.wait()
        .at_most(common::browser::WAIT)
        .for_element(Locator::Id("bootenv-choice"))
        .await?
        .select_by_value(bootenv)
        .await?;
    if once {
        c.find(Locator::Id("mode-once")).await?.click().await?;
    }
    c.find(Locator::Id("set-bootenv-submit"))
        .await?
        .click()
        .await?;
    text_of(c, "#flash").await
}

/// Posts a form from inside the signed-in page (the page's own CSRF token unless `csrf` is
/// given), as a forged or hand-made form would: the answer's status and text.
async fn post_from_page(
    c: &Client,
    path: String,
    fields: Vec<(&'static str, String)>,
    csrf: Option<&'static str>,
) -> Result<(u16, String), fantoccini::error::CmdError> {
    let script = r#"
        const [path, fields, csrf, done] = arguments;
        const body = new URLSearchParams(fields);
        body.set("csrf", csrf ?? document.querySelector("input[name=csrf]").value);
        fetch(path, { method: "POST", body, redirect: "manual" })
            .then(async r => done([r.status, await r.text()]))
            .catch(e => done([0, String(e)]));
    "#;
    let fields: serde_json::Map<String, Value> = fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect();
    let args = vec![
        Value::String(path),
        Value::Object(fields),
        csrf.map_or(Value::Null, |c| Value::String(c.into())),
    ];
    let v = c.execute_async(script, args).await?;
    Ok((
        v[0].as_u64().unwrap_or(0) as u16,
        v[1].as_str().unwrap_or_default().to_string(),
    ))
}

#[test]
fn a_read_token_only_sees_and_an_admin_token_sets_a_bootenv_once() {
    let rb = console("console-scopes");
    let mac = "52:54:00:c0:00:01";
    create(
        &rb,
        &format!(r#"{{"mac":"{mac}","hostname":"builder01","labels":{{"rack":"r1"}}}}"#),
    );
    let b = Browser::start(&rb.lab);

    // Read only: the node is there, its page has no form that changes it, and a change posted
    // by hand (with the session's own CSRF token) is refused with the API's words.
    sign_in(&b, READ_TOKEN, "read only");
    let (row, forms, refused) = b
        .run("read-only node page", move |c| async move {
            let row = text_of(&c, &format!("#node-{}", mac.replace(':', "\\:"))).await?;
            c.goto(&url(&format!("/nodes/{mac}"))).await?;
            text_of(&c, "#state").await?;
            let forms = c.find_all(Locator::Css("form#set-bootenv")).await?.len();
            let refused = post_from_page(
                &c,
                format!("/console/nodes/{mac}/bootenv"),
                vec![("bootenv", "rescue".into()), ("mode", "once".into())],
                None,
            )
            .await?;
            Ok::<_, fantoccini::error::CmdError>((row, forms, refused))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        row.contains("builder01") && row.contains("discovered"),
        "{row}"
    );
    assert_eq!(forms, 0, "a read token gets no change form");
    assert_eq!(refused.0, 403, "{}", refused.1);
    assert!(
        refused
            .1
            .contains("may only read (scope `read`); POST needs an `admin` token"),
        "{}",
        refused.1
    );
    assert_eq!(rb.node(mac)["next_bootenv"], Value::Null, "nothing changed");
    sign_out(&b);

    // Admin: set the bootenv once from the node's page; the page and the API both say so.
    sign_in(&b, ADMIN_TOKEN, "admin");
    let (flash, next, forged) = b
        .run("set bootenv once", move |c| async move {
            let flash = set_bootenv(&c, mac, "rescue", true).await?;
            let next = text_of(&c, "#next-bootenv").await?;
            // A form whose CSRF token is not the session's changes nothing.
            let forged = post_from_page(
                &c,
                format!("/console/nodes/{mac}/bootenv"),
                vec![("bootenv", "discovery".into()), ("mode", "always".into())],
                Some("00000000000000000000000000000000"),
            )
            .await?;
            Ok::<_, fantoccini::error::CmdError>((flash, next, forged))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(flash, "builder01 boots rescue once, then discovery");
    assert_eq!(next, "rescue once, then discovery");
    assert_eq!(forged.0, 403, "{}", forged.1);
    assert!(forged.1.contains("CSRF"), "{}", forged.1);
    let n = rb.node(mac);
    assert_eq!(
        (&n["bootenv"], &n["next_bootenv"], &n["bootenv_expires"]),
        (&"discovery".into(), &"rescue".into(), &Value::Null)
    );
    // Audited as the API audits: by the token's name.
    assert!(
        rb.details(mac, "admin.change")
            .iter()
            .any(|d| d.contains("token `tests` (patch)") && d.contains("next_bootenv")),
        "{:?}",
        rb.details(mac, "admin.change")
    );
    b.screenshot("node");
    // No token in the log, whatever was signed in with.
    let log = rb.log_text();
    assert!(!log.contains(ADMIN_TOKEN) && !log.contains(READ_TOKEN));
}

#[test]
fn the_fleet_page_follows_nodes_through_their_states_without_a_reload() {
    let rb = console("console-live");
    // A thousand nodes to page through, and three in the rack the page watches.
    let many: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                r#"{{"mac":"52:54:01:00:{:02x}:{:02x}","hostname":"b{i:04}","labels":{{"rack":"r{}"}}}}"#,
                i / 256,
                i % 256,
                i % 40
            )
        })
        .collect();
    let r = rb.request(
        "POST",
        "/api/v1/nodes/import",
        Some(ADMIN_TOKEN),
        Some(&format!("[{}]", many.join(","))),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let watched = ["52:54:00:c1:00:01", "52:54:00:c1:00:02"];
    for (i, mac) in watched.iter().enumerate() {
        create(
            &rb,
            &format!(r#"{{"mac":"{mac}","hostname":"live{i}","labels":{{"rack":"live"}}}}"#),
        );
    }
    let b = Browser::start(&rb.lab);
    sign_in(&b, READ_TOKEN, "read only");

    // Every node counted, a hundred a page.
    let (all, pager) = b
        .run("fleet paged", |c| async move {
            let all = text_of(&c, "#count-all").await?;
            let pager = text_of(&c, "nav.pager").await?;
            Ok::<_, fantoccini::error::CmdError>((all, pager))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all, "1002");
    assert!(pager.contains("page 1 of 11"), "{pager}");
    b.screenshot("fleet");

    // The rack's view, marked so that a reload would show (the mark would be gone).
    b.run("watch the rack", |c| async move {
        c.goto(&url("?rack=live")).await?;
        text_of(&c, "#count-all").await?;
        c.execute("window.rackbootMark = 'kept'; return null;", vec![])
            .await
            .map(|_| ())
    })
    .unwrap_or_else(|e| panic!("{e}"));

    // Each change made through rackboot's own endpoints shows on the open page.
    let wait_state = |mac: &'static str, want: &'static str| {
        b.run(&format!("{mac} becomes {want}"), move |c| async move {
            let sel = format!("#node-{}", mac.replace(':', "\\:"));
            until(
                || async {
                    match c.find(Locator::Css(&sel)).await {
                        Ok(e) => e.attr("data-state").await.ok().flatten(),
                        Err(_) => None,
                    }
                },
                |s| s.as_deref() == Some(want),
            )
            .await
        })
    };
    let (ok, seen) = wait_state(watched[0], "discovered");
    assert!(ok, "{seen:?}");
    rb.boot(watched[0], "x86_64_efi");
    let (ok, seen) = wait_state(watched[0], "booting");
    if !ok {
        let page = b.run("why", |c| async move {
            let live = c.find(Locator::Id("fleet")).await?;
            Ok::<_, fantoccini::error::CmdError>((
                live.attr("data-opened").await?,
                live.attr("data-refreshed").await?,
                c.source().await?,
            ))
        });
        panic!(
            "booting not shown: {seen:?}; API: {}; page: {page:?}",
            rb.node(watched[0])["state"]
        );
    }
    let token = rb.boot(watched[1], "x86_64_efi");
    let r = rb.http(
        &[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {token}"),
            "--data-binary",
            "up",
        ],
        &format!("/node/{}/report?state=booted", watched[1]),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let (ok, seen) = wait_state(watched[1], "booted");
    assert!(ok, "booted not shown: {seen:?}");
    // A node made now appears too.
    let new = "52:54:00:c1:00:03";
    create(
        &rb,
        &format!(r#"{{"mac":"{new}","hostname":"live2","labels":{{"rack":"live"}}}}"#),
    );
    let (ok, seen) = wait_state(new, "discovered");
    assert!(ok, "the new node not shown: {seen:?}");
    let (mark, booting) = b
        .run("still the same page", |c| async move {
            let mark = c
                .execute("return window.rackbootMark || null;", vec![])
                .await?;
            let booting = text_of(&c, "#count-booting").await?;
            Ok::<_, fantoccini::error::CmdError>((mark, booting))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mark, Value::String("kept".into()), "the page was reloaded");
    assert_eq!(booting, "1");
    b.screenshot("fleet-live");
}

#[test]
fn a_protected_node_refuses_the_console_as_it_refuses_the_cli_and_bulk_changes_are_previewed() {
    let rb = console("console-protect");
    let guarded = "52:54:00:c2:00:01";
    create(
        &rb,
        &format!(
            r#"{{"mac":"{guarded}","hostname":"db1","protected":true,"labels":{{"rack":"r9"}}}}"#
        ),
    );
    for i in 2..=4 {
        create(
            &rb,
            &format!(
                r#"{{"mac":"52:54:00:c2:00:0{i}","hostname":"web{i}","labels":{{"rack":"r9","role":"web"}}}}"#
            ),
        );
    }
    let (code, cli) = rb.cli(&["node", "set", guarded, "--bootenv", "rescue"]);
    assert_eq!(code, Some(1), "{cli}");

    let b = Browser::start(&rb.lab);
    sign_in(&b, ADMIN_TOKEN, "admin");
    let flash = b
        .run("set a protected node's bootenv", move |c| async move {
            set_bootenv(&c, guarded, "rescue", false).await
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        flash,
        format!("node db1 ({guarded}) is protected; pass force to change its bootenv")
    );
    assert!(cli.contains(&flash), "the CLI says it otherwise:\n{cli}");
    assert_eq!(rb.node(guarded)["bootenv"], "discovery");

    // Bulk: the preview lists every node of the rack and names the protected one; nothing
    // changes until the narrower selection is applied.
    let (listed, refused, applies) = b
        .run("preview a rack", |c| async move {
            c.goto(&url("/bulk")).await?;
            let f = c
                .wait()
                .at_most(common::browser::WAIT)
                .for_element(Locator::Id("selector"))
                .await?;
            f.send_keys("rack=r9").await?;
            c.find(Locator::Id("bulk-bootenv"))
                .await?
                .select_by_value("rescue")
                .await?;
            c.find(Locator::Id("preview")).await?.click().await?;
            text_of(&c, "#plan").await?;
            let listed = c.find_all(Locator::Css("tr.planned")).await?.len();
            let refused = text_of(&c, "#plan-refused").await?;
            let applies = c.find_all(Locator::Id("apply-submit")).await?.len();
            Ok::<_, fantoccini::error::CmdError>((listed, refused, applies))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed, 4);
    assert!(refused.contains("1 of them are protected"), "{refused}");
    assert_eq!(
        applies, 0,
        "a preview that would be refused offers no apply"
    );
    let flash = b
        .run("apply to the web nodes", |c| async move {
            let f = c.find(Locator::Id("selector")).await?;
            f.clear().await?;
            f.send_keys("rack=r9,role=web").await?;
            c.find(Locator::Id("preview")).await?.click().await?;
            let rows = c
                .wait()
                .at_most(common::browser::WAIT)
                .for_element(Locator::Id("apply-submit"))
                .await?;
            rows.click().await?;
            text_of(&c, "#flash").await
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(flash, "`rack=r9,role=web`: 3 nodes matched, 3 changed");
    for i in 2..=4 {
        assert_eq!(
            rb.node(&format!("52:54:00:c2:00:0{i}"))["bootenv"],
            "rescue"
        );
    }
    assert_eq!(rb.node(guarded)["bootenv"], "discovery");
}

#[test]
fn the_console_is_off_unless_configured_and_its_cookie_is_guarded() {
    let off = Setup::new("console-off").standard_files().start();
    let r = off.get("/console");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("the console is off"), "{}", r.text());
    drop(off);

    let (_certs, cert, key) = rsa_cert();
    let rb = Setup::new("console-cookie")
        .standard_files()
        .table("console", "enabled = true")
        .table(
            "api",
            &format!("tls_cert = \"{cert}\"\ntls_key = \"{key}\"\ntls_port = 8443"),
        )
        .start();
    let token_field = format!("token={ADMIN_TOKEN}");
    let sign_in = ["--data-urlencode", token_field.as_str()];
    let r = rb.curl(
        "https://10.77.0.1:8443/console/login",
        "POST",
        None,
        None,
        &[&sign_in[..], &["--cacert", &cert]].concat(),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = r.header("set-cookie").unwrap_or_default();
    for part in [
        "rackboot_console=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Secure",
    ] {
        assert!(cookie.contains(part), "over HTTPS: {cookie}");
    }
    assert!(!cookie.contains(ADMIN_TOKEN), "{cookie}");
    // Over plain HTTP the same, but not `Secure` (a browser would not send it back).
    let r = rb.http(&[&["-X", "POST"][..], &sign_in].concat(), "/console/login");
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = r.header("set-cookie").unwrap_or_default();
    assert!(
        cookie.contains("HttpOnly") && !cookie.contains("Secure"),
        "over HTTP: {cookie}"
    );
    let r = rb.http(
        &[
            "-X",
            "POST",
            "--data-urlencode",
            "token=not-a-token-at-all-0000",
        ],
        "/console/login",
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("unknown API token"), "{}", r.text());
    // A page without a session goes to sign-in; a page part says 401.
    assert_eq!(rb.get("/console").status, 303);
    assert_eq!(rb.get("/console/fleet").status, 401);
    assert!(
        rb.get("/console")
            .header("content-security-policy")
            .is_some()
    );
}

#[test]
fn the_bootenvs_page_shows_a_refused_reload_and_validates_a_file() {
    let rb = console("console-bootenvs");
    // A file the hot reload refuses: the previous version keeps serving, the page says why.
    rb.write(
        "bootenvs/broken.toml",
        "description = \"half a file\"\n[arch.x86_64_efi\n",
    );
    let b = Browser::start(&rb.lab);
    sign_in(&b, READ_TOKEN, "read only");
    let (ok, rejected) = b.run("the refused reload", |c| async move {
        until(
            || async {
                c.goto(&url("/bootenvs")).await.ok()?;
                text_of(&c, "#bootenvs").await.ok()?;
                c.find(Locator::Id("rejected"))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()
            },
            |t: &Option<String>| t.is_some(),
        )
        .await
    });
    let rejected = rejected.unwrap_or_default();
    assert!(
        ok && rejected.contains("broken.toml"),
        "{rejected}; the API: {}",
        rb.get("/api/v1/bootenvs").text()
    );

    // The validate box answers as a reload would (of the whole folder: the broken file fixed
    // first), and writes nothing.
    std::fs::remove_file(rb.path("bootenvs/broken.toml")).expect("remove broken.toml");
    let missing = common::setup::bootenv(
        "new",
        &[],
        &[("x86_64_efi", "x86_64/nope", "x86_64/initrd.img")],
    );
    let good = common::setup::bootenv(
        "new",
        &[],
        &[("x86_64_efi", "x86_64/vmlinuz", "x86_64/initrd.img")],
    );
    let verdicts = b
        .run("validate", move |c| async move {
            let mut out = Vec::new();
            for text in [missing, good] {
                c.goto(&url("/bootenvs")).await?;
                let area = c
                    .wait()
                    .at_most(common::browser::WAIT)
                    .for_element(Locator::Id("validate-text"))
                    .await?;
                area.send_keys(&text).await?;
                c.find(Locator::Id("validate-submit"))
                    .await?
                    .click()
                    .await?;
                out.push(text_of(&c, "#verdict").await?);
            }
            Ok::<_, fantoccini::error::CmdError>(out)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        verdicts[0].contains("refuse") && verdicts[0].contains("x86_64/nope"),
        "{}",
        verdicts[0]
    );
    assert_eq!(verdicts[1], "A reload would take it.");
    assert!(!rb.path("bootenvs/candidate.toml").exists());
}
