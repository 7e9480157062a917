//! The `process_*` metrics every Prometheus client library exports (open and maximum file
//! descriptors, resident and virtual memory, CPU time, start time), with the names, types and
//! HELP texts of the Go client's process collector, so existing dashboards and alerts work
//! unchanged. Read from `/proc/self` at scrape time: nothing runs between scrapes.
//!
//! A value that cannot be read (no `/proc`, an unexpected line) is left out of that scrape rather
//! than failing it: the other metrics matter more than one process gauge.

use std::fs;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Registered unprefixed in the root registry (`process_…`, not `rackboot_process_…`).
#[derive(Debug)]
pub struct ProcessCollector;

/// What one scrape read about this process.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
    pub resident_bytes: Option<i64>,
    pub virtual_bytes: Option<i64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads `/proc/self/{stat,fd,limits}` and `/proc/stat` now.
    pub fn read() -> ProcessStats {
        let stat = fs::read_to_string("/proc/self/stat").ok();
        let stat = stat.as_deref().and_then(parse_stat);
        // SAFETY: sysconf only reads a configuration value.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let boot_time = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_boot_time(&s));
        let mut stats = ProcessStats {
            // The directory listing holds one descriptor of its own while it runs, as in the Go
            // client.
            open_fds: fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| i64::try_from(d.count()).unwrap_or(i64::MAX)),
            max_fds: fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|s| parse_max_open_files(&s)),
            ..ProcessStats::default()
        };
        if let Some(stat) = stat {
            if ticks > 0 {
                let ticks = ticks as f64;
                stats.cpu_seconds = Some((stat.utime + stat.stime) as f64 / ticks);
                stats.start_time_seconds =
                    boot_time.map(|boot| boot as f64 + stat.start_ticks as f64 / ticks);
            }
            stats.virtual_bytes = i64::try_from(stat.vsize).ok();
            if page > 0 {
                stats.resident_bytes =
                    i64::try_from(stat.rss_pages.saturating_mul(page as u64)).ok();
            }
        }
        stats
    }
}

/// The fields of `/proc/<pid>/stat` the metrics use (proc(5)).
#[derive(Debug, PartialEq)]
struct Stat {
    /// Fields 14 and 15, in clock ticks.
    utime: u64,
    stime: u64,
    /// Field 22: clock ticks after boot.
    start_ticks: u64,
    /// Field 23, in bytes.
    vsize: u64,
    /// Field 24, in pages.
    rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so the fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The `btime` line of `/proc/stat`: the boot time, in seconds since the epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit on open files from `/proc/<pid>/limits`; "unlimited" as the largest value.
fn parse_max_open_files(text: &str) -> Option<i64> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    match rest.split_whitespace().next()? {
        "unlimited" => Some(i64::MAX),
        n => n.parse().ok(),
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = ProcessStats::read();
        encode_one(
            &mut encoder,
            "process_cpu",
            "Total user and system CPU time spent in seconds.",
            Some(&Unit::Seconds),
            s.cpu_seconds.map(ConstCounter::new),
        )?;
        for (name, help, unit, value) in [
            (
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                s.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                s.max_fds,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(Unit::Bytes),
                s.virtual_bytes,
            ),
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                s.resident_bytes,
            ),
        ] {
            encode_one(
                &mut encoder,
                name,
                help,
                unit.as_ref(),
                value.map(ConstGauge::new),
            )?;
        }
        encode_one(
            &mut encoder,
            "process_start_time",
            "Start time of the process since unix epoch in seconds.",
            Some(&Unit::Seconds),
            s.start_time_seconds.map(ConstGauge::new),
        )
    }
}

/// One family and its one sample; none where the value could not be read.
fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: Option<impl EncodeMetric>,
) -> Result<(), std::fmt::Error> {
    if let Some(m) = metric {
        m.encode(encoder.encode_descriptor(name, help, unit, m.metric_type())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        // A command name with a space and a parenthesis, as prctl(PR_SET_NAME) allows.
        let stat = "4242 (rack) boot) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    150 25 0 0 20 0 9 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                utime: 150,
                stime: 25,
                start_ticks: 123456,
                vsize: 987654321,
                rss_pages: 2048,
            })
        );
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);

        assert_eq!(
            parse_boot_time("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             96363                96363                processes\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited), Some(i64::MAX));
    }

    #[test]
    fn reads_this_process() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let s = ProcessStats::read();
        let open = s.open_fds.expect("open fds");
        // stdin, stdout, stderr and the listing's own descriptor at least.
        assert!(open >= 3, "{s:?}");
        assert!(s.max_fds.expect("max fds") >= open, "{s:?}");
        let rss = s.resident_bytes.expect("rss");
        assert!(rss > 0 && s.virtual_bytes.expect("vsize") >= rss, "{s:?}");
        assert!(s.cpu_seconds.expect("cpu") >= 0.0, "{s:?}");
        // The test binary started before this test, and not long before (btime has a second's
        // resolution, hence the slack).
        let start = s.start_time_seconds.expect("start time");
        assert!(start <= before + 1.0 && start > before - 3600.0, "{s:?}");
    }
}
