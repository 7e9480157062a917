//! `GET /metrics` of the real `rackboot serve` in a private network namespace, checked by the
//! Prometheus project's own tools (Debian's `prometheus` package): `promtool check metrics` on
//! the text format, `promtool tsdb create-blocks-from openmetrics` and a real Prometheus scrape
//! on OpenMetrics. Also: the format follows the `Accept` header as Prometheus clients choose it,
//! DNS questions asked with `dig` are counted by type and result, and the `process_*` metrics
//! describe the rackboot process.
//!
//! `promtool check metrics` reads the text format only: on OpenMetrics it reports every counter
//! as having "no help text", since OpenMetrics names a counter family without the `_total` its
//! samples carry. Hence the OpenMetrics body goes through Prometheus's OpenMetrics parser
//! instead (promtool's backfill, and a scrape).
//!
//! Needs root (namespaces), curl, dig (bind9-dnsutils) and promtool/prometheus (prometheus).
//! Every wait is bounded; rackboot and Prometheus are ended by PID when the lab drops.

mod common;

use std::fs;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::lab::{SERVER_IP, poll_until, read_text, tail};
use common::server::{Reply, Server};
use common::setup::Setup;
use serde_json::Value;

/// The `Accept` header Prometheus 2.42 scrapes with (OpenMetrics on, the default).
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
     application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// One promtool run; one wait for Prometheus to start and scrape.
const TOOL: Duration = Duration::from_secs(60);

fn scrape(rb: &Server, accept: Option<&str>) -> Reply {
    // curl sends `Accept: */*` unless told otherwise; `Accept:` alone removes the header.
    let header = format!(
        "Accept:{}",
        accept.map(|a| format!(" {a}")).unwrap_or_default()
    );
    let r = rb.curl(
        &format!("http://{SERVER_IP}/metrics"),
        "GET",
        None,
        None,
        &["-H", &header],
    );
    assert_eq!(r.status, 200, "Accept {accept:?}: {}", r.text());
    r
}

/// Runs a host tool with `input` on stdin, for at most [`TOOL`].
fn run_with_input(cmd: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{cmd}: {e}; install Debian's prometheus package (apt-get install prometheus)")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    let pid = child.id();
    let done = poll_until(TOOL, || child.try_wait().expect("wait").map(|_| ()));
    if done.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd} {args:?} (pid {pid}) did not finish within {TOOL:?}");
    }
    child.wait_with_output().expect("output")
}

fn promtool_check_metrics(body: &str) -> Output {
    run_with_input("promtool", &["check", "metrics"], body.as_bytes())
}

/// The value of the sample `series` (name and labels as rackboot writes them) in a scrape.
fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

fn dig(rb: &Server, name: &str, qtype: &str, extra: &[&str], status: &str) {
    let server = format!("@{SERVER_IP}");
    let mut args = vec![server.as_str(), "+time=3", "+tries=1", name, qtype];
    args.extend_from_slice(extra);
    let out = rb.lab.run("dig", &args, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("status: {status}")),
        "dig {name} {qtype}: want {status}:\n{text}"
    );
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

#[test]
fn the_text_format_passes_promtool_and_the_format_follows_accept() {
    let started = now_secs();
    let rb = Setup::new("metrics-promtool")
        .standard_files()
        .dns("")
        .start();

    // The format each scraper gets, as Prometheus's own client libraries choose it.
    for (accept, content_type) in [
        (None, TEXT),
        (Some("*/*"), TEXT),
        (Some("text/plain;version=0.0.4"), TEXT),
        (Some("text/plain;version=0.0.4;q=1,*/*;q=0.1"), TEXT),
        (Some(PROMETHEUS_ACCEPT), OPENMETRICS),
        (Some("application/openmetrics-text"), OPENMETRICS),
        (
            Some("text/plain;version=0.0.4;q=0.5,application/openmetrics-text;version=1.0.0"),
            OPENMETRICS,
        ),
    ] {
        let r = scrape(&rb, accept);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some(content_type),
            "Accept {accept:?}"
        );
        assert_eq!(r.header("vary").as_deref(), Some("accept"));
        let body = r.text();
        assert_eq!(
            body.ends_with("# EOF\n"),
            content_type == OPENMETRICS,
            "Accept {accept:?}:\n{body}"
        );
        if content_type == TEXT {
            let out = promtool_check_metrics(&body);
            assert!(
                out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
                "promtool check metrics (Accept {accept:?}): {}\n{}{}\n--- body:\n{body}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
        }
    }

    // OpenMetrics through Prometheus's own OpenMetrics parser: promtool's backfill, which wants
    // a timestamp on every sample (a scrape has none; the time of the scrape is what it means).
    let om = scrape(&rb, Some("application/openmetrics-text")).text();
    let at = format!(" {}", now_secs() as u64);
    let stamped: String = om
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                format!("{l}\n")
            } else {
                format!("{l}{at}\n")
            }
        })
        .collect();
    let input = rb.path("scrape.om");
    fs::write(&input, stamped).expect("write scrape.om");
    let blocks = rb.path("blocks");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&blocks)
        .stdin(Stdio::null())
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "promtool tsdb create-blocks-from openmetrics: {}\n{}{}\n--- body:\n{om}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );

    // DNS questions by type and result, asked with dig from the lab.
    dig(&rb, "rack.internal", "A", &[], "NOERROR");
    dig(&rb, "rack.internal", "SOA", &[], "NOERROR");
    dig(&rb, "nosuch.rack.internal", "A", &[], "NXDOMAIN");
    dig(&rb, "nosuch.rack.internal", "A", &[], "NXDOMAIN");
    dig(&rb, "rack.internal", "AAAA", &[], "NOERROR");
    dig(&rb, "example.com", "A", &[], "REFUSED");
    // A NoCloud seed and an answer file asked for by a node rackboot does not know: each is
    // counted under its own route, not as "other".
    for path in [
        "/cloud-init/52:54:00:00:00:01/no-token/user-data",
        "/answers/52:54:00:00:00:01/no-token/preseed.cfg",
    ] {
        let r = rb.curl(&format!("http://{SERVER_IP}{path}"), "GET", None, None, &[]);
        assert!((400..500).contains(&r.status), "{path}: {}", r.status);
    }
    let body = scrape(&rb, None).text();
    for (labels, want) in [
        (r#"route="cloud_init",status="4xx""#, 1.0),
        (r#"route="answers",status="4xx""#, 1.0),
        (r#"route="other",status="4xx""#, 0.0),
    ] {
        let series = format!("rackboot_http_requests_total{{{labels}}}");
        assert_eq!(value(&body, &series), want, "{series}");
    }
    for (labels, want) in [
        (r#"type="a",result="answered""#, 1.0),
        (r#"type="soa",result="answered""#, 1.0),
        (r#"type="a",result="nxdomain""#, 2.0),
        (r#"type="aaaa",result="nodata""#, 1.0),
        (r#"type="a",result="refused""#, 1.0),
        (r#"type="ptr",result="answered""#, 0.0),
        (r#"type="other",result="malformed""#, 0.0),
    ] {
        let series = format!("rackboot_dns_queries_total{{{labels}}}");
        assert_eq!(value(&body, &series), want, "{series}");
    }

    // The process metrics describe rackboot itself.
    let limits = fs::read_to_string(format!("/proc/{}/limits", rb.pid())).expect("limits");
    let soft_nofile: f64 = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .expect("Max open files");
    assert_eq!(value(&body, "process_max_fds"), soft_nofile);
    let open = value(&body, "process_open_fds");
    // Sockets for HTTP and DNS, the SQLite store, the log: more than stdio alone.
    assert!(open > 3.0 && open < soft_nofile, "process_open_fds {open}");
    let rss = value(&body, "process_resident_memory_bytes");
    assert!(rss > 1e6, "process_resident_memory_bytes {rss}");
    assert!(value(&body, "process_virtual_memory_bytes") >= rss);
    assert!(value(&body, "process_cpu_seconds_total") > 0.0);
    let start = value(&body, "process_start_time_seconds");
    // /proc/stat's btime has a resolution of one second.
    assert!(
        start >= started - 2.0 && start <= now_secs() + 1.0,
        "process_start_time_seconds {start}, test started at {started}"
    );
}

#[test]
fn prometheus_scrapes_openmetrics_with_units() {
    let rb = Setup::new("metrics-prometheus").standard_files().start();
    let config = rb.path("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: rackboot\n    static_configs:\n\
             \x20     - targets: ['{SERVER_IP}:80']\n"
        ),
    )
    .expect("write prometheus.yml");
    let config_arg = format!("--config.file={}", config.display());
    let data_arg = format!(
        "--storage.tsdb.path={}",
        rb.path("prometheus-data").display()
    );
    rb.lab.spawn(
        "prometheus",
        &[
            &config_arg,
            &data_arg,
            "--web.listen-address=127.0.0.1:9090",
            "--log.level=warn",
        ],
        "prometheus.log",
    );
    let api = |path: &str| -> Option<Value> {
        let r = rb.curl(
            &format!("http://127.0.0.1:9090{path}"),
            "GET",
            None,
            None,
            &[],
        );
        (r.status == 200).then(|| r.json())
    };

    // Up once a scrape has gone through; a scrape that failed to parse says why.
    let begun = Instant::now();
    let target = poll_until(TOOL, || {
        let targets = api("/api/v1/targets")?;
        let t = targets["data"]["activeTargets"].get(0)?.clone();
        let error = t["lastError"].as_str().unwrap_or_default();
        assert!(
            error.is_empty(),
            "Prometheus could not scrape rackboot: {error}"
        );
        (t["health"] == "up").then_some(t)
    });
    assert!(
        target.is_some(),
        "Prometheus did not scrape rackboot within {TOOL:?} ({:?}):\n{}",
        begun.elapsed(),
        tail(&read_text(&rb.lab.dir().join("prometheus.log")), 20)
    );

    // Units exist only in OpenMetrics: Prometheus negotiated it and read them.
    let metadata = |metric: &str| -> Value {
        let m = api(&format!(
            "/api/v1/targets/metadata?match_target=%7Bjob%3D%22rackboot%22%7D&metric={metric}"
        ))
        .unwrap_or_else(|| panic!("metadata of {metric}"));
        m["data"][0].clone()
    };
    let decision = metadata("rackboot_dhcp_decision_seconds");
    assert_eq!(decision["type"], "histogram", "{decision}");
    assert_eq!(decision["unit"], "seconds", "{decision}");
    assert!(
        decision["help"]
            .as_str()
            .is_some_and(|h| h.starts_with("Time from receiving a DHCP packet")),
        "{decision}"
    );
    // An OpenMetrics counter family is named without `_total`.
    let received = metadata("rackboot_dhcp_received");
    assert_eq!(received["type"], "counter", "{received}");

    // The samples themselves, the process metrics included.
    let open_fds = poll_until(TOOL, || {
        let q = api("/api/v1/query?query=process_open_fds%7Bjob%3D%22rackboot%22%7D")?;
        let v = q["data"]["result"].get(0)?["value"][1]
            .as_str()?
            .parse::<f64>()
            .ok()?;
        Some(v)
    })
    .expect("process_open_fds in Prometheus");
    assert!(open_fds > 3.0, "process_open_fds {open_fds}");
    let q = api("/api/v1/query?query=rackboot_http_requests_total%7Broute%3D%22metrics%22%2Cstatus%3D%222xx%22%7D")
        .expect("query");
    assert!(
        q["data"]["result"][0]["value"][1].as_str().is_some(),
        "rackboot_http_requests_total in Prometheus: {q}"
    );
}
