//! The two exposition formats `GET /metrics` speaks, and which one a scraper gets.
//!
//! prometheus-client encodes OpenMetrics only. Prometheus's own text format (0.0.4) is what
//! Prometheus asks for when OpenMetrics is off, what `promtool check metrics` and most other
//! tools read, and what a scraper without an `Accept` header gets from every Prometheus client
//! library. The two differ in the details that matter to a parser: a counter family is named
//! without `_total` in OpenMetrics (`# TYPE x counter`, samples `x_total`) and with it in the
//! text format (`# TYPE x_total counter`), the text format has no `# UNIT`, no `# EOF`, no
//! exemplars and no `info` type. [`openmetrics_to_text`] rewrites prometheus-client's output
//! family by family; it does not re-encode values or labels, whose syntax is the same in both.
//!
//! Owns neither the registry (`metrics.rs`) nor the route (`http/metrics.rs`).

use std::fmt::Write as _;

/// What a scraper gets from `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: the default, as in every Prometheus client library.
    Text,
    /// OpenMetrics 1.0.0, for a scraper that asks for `application/openmetrics-text`
    /// (Prometheus does, first, unless told not to).
    OpenMetrics,
}

impl Format {
    /// The format to answer a request with this `Accept` header, as the Prometheus Go client
    /// chooses: the acceptable media range with the highest `q` that is
    /// `application/openmetrics-text` (version absent, 0.0.1 or 1.0.0) or `text/plain` (version
    /// absent or 0.0.4), the first listed among equals; the text format when none is (no header,
    /// `*/*`, anything else). A range with `q=0` is refused, as RFC 9110 says.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut best: Option<(f32, Format)> = None;
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let (mut q, mut version) = (1.0f32, None);
            for param in parts {
                let Some((key, value)) = param.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => q = value.parse().unwrap_or(0.0),
                    "version" => version = Some(value),
                    _ => {}
                }
            }
            let format = if media.eq_ignore_ascii_case("application/openmetrics-text")
                && matches!(version, None | Some("0.0.1" | "1.0.0"))
            {
                Format::OpenMetrics
            } else if media.eq_ignore_ascii_case("text/plain")
                && matches!(version, None | Some("0.0.4"))
            {
                Format::Text
            } else {
                continue;
            };
            if q > 0.0 && best.is_none_or(|(best_q, _)| q > best_q) {
                best = Some((q, format));
            }
        }
        best.map_or(Format::Text, |(_, format)| format)
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Why a scrape could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("could not encode the metrics registry")]
    Encode(#[from] std::fmt::Error),
    /// Only a metric type rackboot never registers gets here (prometheus-client's own types
    /// all have a text-format equivalent).
    #[error("metric family {family}: OpenMetrics type {kind} has no Prometheus text format")]
    NoTextType { family: String, kind: String },
    /// A line prometheus-client would not write; the OpenMetrics output itself is then broken.
    #[error("metrics line {line:?} is not OpenMetrics as prometheus-client writes it")]
    Unexpected { line: String },
}

/// One family's `# HELP` and `# TYPE`, held until its first sample (or the next family) because
/// the text format names a counter family after its samples.
#[derive(Default)]
struct Header {
    name: String,
    help: Option<String>,
    kind: Option<String>,
}

/// Rewrites OpenMetrics text, as prometheus-client writes it, as Prometheus text format 0.0.4:
/// counter families are named `<name>_total` like their samples and lose any `_created` sample,
/// `info` becomes a gauge named `<name>_info` (its one sample's name), `unknown` becomes
/// `untyped`; `# UNIT`, `# EOF` and exemplars are dropped. HELP text is escaped as the text
/// format wants (backslash and newline; prometheus-client writes it as registered).
pub fn openmetrics_to_text(om: &str) -> Result<String, RenderError> {
    let mut out = String::with_capacity(om.len());
    let mut header: Option<Header> = None;
    // The text-format type of the family whose samples follow.
    let mut kind = String::new();
    for line in om.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (keyword, name, rest) = (
                words.next().unwrap_or_default(),
                words.next().unwrap_or_default(),
                words.next().unwrap_or_default(),
            );
            match keyword {
                "EOF" => break,
                "UNIT" => continue,
                "HELP" | "TYPE" => {}
                _ => return Err(unexpected(line)),
            }
            if header.as_ref().is_none_or(|h| h.name != name) {
                if let Some(done) = header.take() {
                    kind = write_header(&mut out, done)?;
                }
                header = Some(Header {
                    name: name.to_string(),
                    ..Header::default()
                });
            }
            let h = header.as_mut().expect("set above");
            if keyword == "HELP" {
                h.help = Some(rest.to_string());
            } else {
                h.kind = Some(rest.to_string());
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            return Err(unexpected(line));
        }
        if let Some(done) = header.take() {
            kind = write_header(&mut out, done)?;
        }
        let (series, value) = split_sample(line).ok_or_else(|| unexpected(line))?;
        // Created timestamps are OpenMetrics only; the text format would read them as a second
        // family without HELP or TYPE.
        if kind == "counter" && series.split('{').next().unwrap_or("").ends_with("_created") {
            continue;
        }
        out.push_str(series);
        out.push(' ');
        out.push_str(value);
        out.push('\n');
    }
    if let Some(done) = header.take() {
        write_header(&mut out, done)?;
    }
    Ok(out)
}

/// Writes one family's `# HELP` and `# TYPE` in the text format and returns its type there.
fn write_header(out: &mut String, h: Header) -> Result<String, RenderError> {
    let om_kind = h.kind.as_deref().unwrap_or("unknown");
    let (name, kind) = match om_kind {
        "counter" => (format!("{}_total", h.name), "counter"),
        "gauge" => (h.name, "gauge"),
        "histogram" => (h.name, "histogram"),
        "summary" => (h.name, "summary"),
        "info" => (format!("{}_info", h.name), "gauge"),
        "unknown" => (h.name, "untyped"),
        other => {
            return Err(RenderError::NoTextType {
                family: h.name,
                kind: other.to_string(),
            });
        }
    };
    if let Some(help) = h.help {
        let help = help.replace('\\', r"\\");
        writeln!(out, "# HELP {name} {help}")?;
    }
    writeln!(out, "# TYPE {name} {kind}")?;
    Ok(kind.to_string())
}

/// A sample line as (`name{labels}`, value), without its exemplar; the label values are skipped
/// as quoted strings, so a `#` or `}` inside one is not mistaken for syntax.
fn split_sample(line: &str) -> Option<(&str, &str)> {
    let bytes = line.as_bytes();
    let mut i = line.find(['{', ' '])?;
    if bytes[i] == b'{' {
        let mut quoted = false;
        i += 1;
        loop {
            match (*bytes.get(i)?, quoted) {
                (b'\\', true) => i += 1,
                (b'"', _) => quoted = !quoted,
                (b'}', false) => break,
                _ => {}
            }
            i += 1;
        }
        i += 1;
    }
    let series = &line[..i];
    let rest = line[i..].strip_prefix(' ')?;
    // `value`, `value timestamp`, then maybe ` # {exemplar labels} value`.
    let rest = rest.split(" # ").next().unwrap_or(rest);
    (!rest.is_empty()).then_some((series, rest))
}

fn unexpected(line: &str) -> RenderError {
    RenderError::Unexpected {
        line: line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_as_prometheus_clients_do() {
        use Format::{OpenMetrics, Text};
        // What Prometheus 2.x sends with OpenMetrics on (the default), and without.
        let prometheus = "application/openmetrics-text;version=1.0.0,\
                          application/openmetrics-text;version=0.0.1;q=0.75,\
                          text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let prometheus_text_only = "text/plain;version=0.0.4;q=1,*/*;q=0.1";
        for (accept, want) in [
            (None, Text),
            (Some(""), Text),
            (Some("*/*"), Text),
            (Some(prometheus), OpenMetrics),
            (Some(prometheus_text_only), Text),
            (Some("text/plain; version=0.0.4"), Text),
            (Some("text/plain"), Text),
            (Some("application/openmetrics-text"), OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; Version=\"1.0.0\""),
                OpenMetrics,
            ),
            (
                Some("application/openmetrics-text; version=0.0.1"),
                OpenMetrics,
            ),
            // A version we do not write is not what was asked for.
            (Some("application/openmetrics-text; version=2.0.0"), Text),
            (Some("text/plain; version=1.0.0"), Text),
            // Preference by q, then by order.
            (
                Some("text/plain;version=0.0.4;q=0.5, application/openmetrics-text"),
                OpenMetrics,
            ),
            (
                Some("application/openmetrics-text;q=0.3, text/plain;q=0.9"),
                Text,
            ),
            (Some("text/plain, application/openmetrics-text"), Text),
            (
                Some("application/openmetrics-text, text/plain"),
                OpenMetrics,
            ),
            // q=0: not acceptable at all.
            (Some("application/openmetrics-text;q=0"), Text),
            (
                Some("application/json, application/openmetrics-text;q=0.2"),
                OpenMetrics,
            ),
        ] {
            assert_eq!(Format::negotiate(accept), want, "Accept: {accept:?}");
        }
    }

    #[test]
    fn rewrites_each_family_type_for_the_text_format() {
        let om = "\
# HELP process_cpu_seconds Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds counter
# UNIT process_cpu_seconds seconds
process_cpu_seconds_total 0.25
# HELP rackboot_dhcp_received DHCP packets received, by type (a \\ b).
# TYPE rackboot_dhcp_received counter
rackboot_dhcp_received_total{type=\"discover\"} 2
rackboot_dhcp_received_created{type=\"discover\"} 1700000000.0
rackboot_dhcp_received_total{type=\"odd # } \\\" label\"} 1 # {trace_id=\"x\"} 1.0 1700000000.5
# HELP rackboot_tftp_queued TFTP transfers waiting.
# TYPE rackboot_tftp_queued gauge
rackboot_tftp_queued 3
# HELP rackboot_dhcp_decision_seconds Time to decide.
# TYPE rackboot_dhcp_decision_seconds histogram
# UNIT rackboot_dhcp_decision_seconds seconds
rackboot_dhcp_decision_seconds_sum 3.00007
rackboot_dhcp_decision_seconds_count 2
rackboot_dhcp_decision_seconds_bucket{le=\"0.0001\"} 1
rackboot_dhcp_decision_seconds_bucket{le=\"+Inf\"} 2
# HELP rackboot_build Version.
# TYPE rackboot_build info
rackboot_build_info{version=\"0.1.0\"} 1
# HELP rackboot_odd Something.
# TYPE rackboot_odd unknown
rackboot_odd NaN
# EOF
";
        let want = "\
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 0.25
# HELP rackboot_dhcp_received_total DHCP packets received, by type (a \\\\ b).
# TYPE rackboot_dhcp_received_total counter
rackboot_dhcp_received_total{type=\"discover\"} 2
rackboot_dhcp_received_total{type=\"odd # } \\\" label\"} 1
# HELP rackboot_tftp_queued TFTP transfers waiting.
# TYPE rackboot_tftp_queued gauge
rackboot_tftp_queued 3
# HELP rackboot_dhcp_decision_seconds Time to decide.
# TYPE rackboot_dhcp_decision_seconds histogram
rackboot_dhcp_decision_seconds_sum 3.00007
rackboot_dhcp_decision_seconds_count 2
rackboot_dhcp_decision_seconds_bucket{le=\"0.0001\"} 1
rackboot_dhcp_decision_seconds_bucket{le=\"+Inf\"} 2
# HELP rackboot_build_info Version.
# TYPE rackboot_build_info gauge
rackboot_build_info{version=\"0.1.0\"} 1
# HELP rackboot_odd Something.
# TYPE rackboot_odd untyped
rackboot_odd NaN
";
        assert_eq!(openmetrics_to_text(om).unwrap(), want);
    }

    #[test]
    fn refuses_what_it_cannot_translate() {
        let gauge_histogram = "# TYPE x gaugehistogram\nx_gcount 1\n# EOF\n";
        assert!(matches!(
            openmetrics_to_text(gauge_histogram),
            Err(RenderError::NoTextType { family, kind }) if family == "x" && kind == "gaugehistogram"
        ));
        for broken in ["x_total\n", "x_total{a=\"1\" 1\n", "# WHAT x\n", "\n"] {
            assert!(
                matches!(
                    openmetrics_to_text(broken),
                    Err(RenderError::Unexpected { .. })
                ),
                "{broken:?}"
            );
        }
    }
}
