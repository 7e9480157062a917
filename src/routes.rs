//! Every URL shape rackboot serves or hands out, in one place: the patterns
//! the HTTP router matches, the builders that write the same URLs into DHCP
//! answers, iPXE scripts, templates and the CLI's requests, and the route
//! class each request path is counted under at `/metrics`.
//!
//! A URL handed to a node (by DHCP, in a script, in a template) must match a
//! pattern the router serves; keeping both here, next to each other, is what
//! keeps them in step (the tests below hold a built URL against its pattern).
//!
//! Owns shapes only: no handler, no I/O, no escaping of what goes in (a MAC,
//! a token and a bootenv name are already URL-safe; the CLI escapes its
//! query values itself).

use std::fmt::Display;

use crate::model::Mac;

/// `GET /boot/<mac>.ipxe`: a node's iPXE script.
pub const BOOT_SCRIPT: &str = "/boot/{file}";
/// `GET /assets/<path>[?mac=]`: a file under the assets directory.
pub const ASSET: &str = "/assets/{*path}";
/// `GET /node/<mac>/scripts`: the config scripts a node runs, one name a line.
pub const NODE_SCRIPTS: &str = "/node/{mac}/scripts";
/// `GET /node/<mac>/scripts/<name>`: one config script.
pub const NODE_SCRIPT: &str = "/node/{mac}/scripts/{name}";
/// `POST /node/<mac>/report`: a script's outcome.
pub const NODE_REPORT: &str = "/node/{mac}/report";
/// `POST /node/<mac>/installed?bootenv=`: the installer finished.
pub const NODE_INSTALLED: &str = "/node/{mac}/installed";
/// `GET /node/<mac>/wait`: long poll for a new config generation.
pub const NODE_WAIT: &str = "/node/{mac}/wait";
/// `GET /cloud-init/<mac>/<token>/<doc>`: a NoCloud document.
pub const CLOUD_INIT: &str = "/cloud-init/{mac}/{token}/{doc}";
/// `GET /answers/<mac>/<token>/<name>`: an installer answer file.
pub const ANSWERS: &str = "/answers/{mac}/{token}/{name}";
/// `GET /metrics`: Prometheus.
pub const METRICS: &str = "/metrics";
/// Health for load balancers and monitoring (counted with `/metrics`).
pub const HEALTHZ: &str = "/healthz";
/// Where the admin API lives; the paths in [`api`] are under it.
pub const API_PREFIX: &str = "/api/v1";

/// What a boot script's file name ends in, after the MAC.
pub const SCRIPT_SUFFIX: &str = ".ipxe";

/// The admin API's paths, under [`API_PREFIX`]: patterns for the router and
/// builders for the CLI (which adds the prefix and any query).
pub mod api {
    use std::fmt::Display;

    pub const NODES: &str = "/nodes";
    pub const NODES_BULK: &str = "/nodes/bulk";
    pub const NODES_IMPORT: &str = "/nodes/import";
    pub const NODE: &str = "/nodes/{mac}";
    pub const NODE_EVENTS: &str = "/nodes/{mac}/events";
    pub const NODE_REPORTS: &str = "/nodes/{mac}/reports";
    pub const LEASES: &str = "/leases";
    pub const BOOTENVS: &str = "/bootenvs";
    pub const BOOTENVS_VALIDATE: &str = "/bootenvs/validate";
    pub const BOOTENV: &str = "/bootenvs/{name}";
    pub const EXPLAIN: &str = "/explain/{mac}";
    pub const RECONFIGURE: &str = "/reconfigure";
    pub const POWER: &str = "/power";
    pub const ROLLOUTS: &str = "/rollouts";
    pub const ROLLOUT: &str = "/rollouts/{id}";
    pub const ROLLOUT_STEER: &str = "/rollouts/{id}/{action}";

    /// `/rollouts/<id>`.
    pub fn rollout(id: &str) -> String {
        format!("{ROLLOUTS}/{id}")
    }
    pub const OPENAPI: &str = "/openapi.json";

    /// `/nodes/<mac>` (the CLI also passes a hostname it resolved, never
    /// anything with a `/`).
    pub fn node(mac: impl Display) -> String {
        format!("{NODES}/{mac}")
    }

    /// `/nodes/<mac>/events`.
    pub fn node_events(mac: impl Display) -> String {
        format!("{NODES}/{mac}/events")
    }

    /// `/explain/<mac>`.
    pub fn explain(mac: impl Display) -> String {
        format!("/explain/{mac}")
    }

    /// `/bootenvs/<name>`.
    pub fn bootenv(name: &str) -> String {
        format!("{BOOTENVS}/{name}")
    }
}

/// Where the admin console lives; the paths in [`console`] are under it.
pub const CONSOLE_PREFIX: &str = "/console";

/// The admin console's paths, under [`CONSOLE_PREFIX`]: patterns for the
/// router, and the full paths its pages link to and its forms post to.
pub mod console {
    use std::fmt::Display;

    use super::CONSOLE_PREFIX;

    pub const FLEET: &str = "/";
    pub const FLEET_ROWS: &str = "/fleet";
    pub const LOGIN: &str = "/login";
    pub const LOGOUT: &str = "/logout";
    pub const STREAM: &str = "/stream";
    pub const NODE: &str = "/nodes/{mac}";
    pub const NODE_LIVE: &str = "/nodes/{mac}/live";
    pub const NODE_BOOTENV: &str = "/nodes/{mac}/bootenv";
    pub const NODE_RECONFIGURE: &str = "/nodes/{mac}/reconfigure";
    pub const NODE_PROTECT: &str = "/nodes/{mac}/protect";
    pub const BULK: &str = "/bulk";
    pub const BULK_APPLY: &str = "/bulk/apply";
    pub const BOOTENVS: &str = "/bootenvs";
    pub const BOOTENVS_VALIDATE: &str = "/bootenvs/validate";
    pub const STATIC: &str = "/static/{file}";

    /// The full path of a console page (`FLEET` is the prefix itself).
    pub fn path(p: &str) -> String {
        if p == FLEET {
            CONSOLE_PREFIX.to_string()
        } else {
            format!("{CONSOLE_PREFIX}{p}")
        }
    }

    /// The full path of node `mac`'s page, with `rest` (`""`, `/live`...).
    pub fn node(mac: impl Display, rest: &str) -> String {
        format!("{CONSOLE_PREFIX}/nodes/{mac}{rest}")
    }
}

/// A full API path (prefix included), as error messages name it.
pub fn api_path(path: &str) -> String {
    format!("{API_PREFIX}{path}")
}

/// Whether `path` is one iPXE fetches (a boot script or an asset): those
/// take rackboot's own HTTP/1.1 loop instead of hyper's.
pub fn is_boot_path(path: &str) -> bool {
    path.starts_with("/boot/") || path.starts_with("/assets/")
}

/// The MAC part of a boot script's file name (`<mac>.ipxe`), unparsed.
pub fn script_file_mac(file: &str) -> Option<&str> {
    file.strip_suffix(SCRIPT_SUFFIX)
}

/// `<base>/boot/<mac>.ipxe`, and `?arch=` when the client named its
/// architecture itself (so a retry keeps it).
pub fn boot_script(base: &str, mac: &Mac, arch: Option<&str>) -> String {
    match arch {
        Some(a) => format!("{base}/boot/{mac}{SCRIPT_SUFFIX}?arch={a}"),
        None => format!("{base}/boot/{mac}{SCRIPT_SUFFIX}"),
    }
}

/// `<base>/assets/<path>`.
pub fn asset(base: &str, path: &str) -> String {
    format!("{base}/assets/{path}")
}

/// `<base>/assets/<path>?mac=<mac>`: an asset fetched by (or for) a node,
/// so that the download lands on the node's timeline.
pub fn node_asset(base: &str, path: &str, mac: &Mac) -> String {
    format!("{}?mac={mac}", asset(base, path))
}

/// `<base>/node/<mac>`: the agent endpoints' common prefix; `rest` is one
/// of `/scripts`, `/scripts/<name>`, `/report?...`, `/installed?...`,
/// `/wait[?...]`. The MAC is a [`Display`] because the agent names itself
/// as the kernel command line did.
pub fn node(base: &str, mac: impl Display, rest: &str) -> String {
    format!("{base}/node/{mac}{rest}")
}

/// `<base>/node/<mac>/installed?bootenv=<bootenv>`: the installer's callback.
pub fn installed(base: &str, mac: &Mac, bootenv: &str) -> String {
    node(base, mac, &format!("/installed?bootenv={bootenv}"))
}

/// `<base>/cloud-init/<mac>/<token>/`: a NoCloud seed (`ds=nocloud;s=`);
/// the trailing slash is the datasource's: it appends `user-data` and so on.
pub fn cloud_init(base: &str, mac: &Mac, token: &str) -> String {
    format!("{base}/cloud-init/{mac}/{token}/")
}

/// `<base>/answers/<mac>/<token>`: where answer files live (the template
/// appends `/<name>`).
pub fn answers(base: &str, mac: &Mac, token: &str) -> String {
    format!("{base}/answers/{mac}/{token}")
}

/// Where nodes reach rackboot: the base every URL handed to a node starts with.
#[derive(Debug, Clone)]
pub struct Urls {
    /// `http://<address>[:port]`, no trailing slash.
    pub http_base: String,
}

impl Urls {
    /// A node's boot script, as DHCP hands it to iPXE.
    pub fn script(&self, mac: &Mac) -> String {
        boot_script(&self.http_base, mac, None)
    }

    pub fn asset(&self, path: &str) -> String {
        asset(&self.http_base, path)
    }

    /// The loader URL handed to UEFI HTTP boot firmware. It names the node
    /// (`?mac=`) so the firmware's download lands on the node's timeline, as
    /// the TFTP loader does. Quirk (OVMF 2022.11 HttpBootDxe, measured): the
    /// query is fine; the firmware picks the image type from Content-Type or
    /// else from the path's `.efi`, and the query is not part of the path.
    pub fn http_loader(&self, path: &str, mac: &Mac) -> String {
        node_asset(&self.http_base, path, mac)
    }
}

/// Which part of the HTTP service a request is for: the `route` label of
/// `rackboot_http_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Area {
    Boot,
    Assets,
    Node,
    CloudInit,
    Answers,
    Api,
    Console,
    Metrics,
    Other,
}

impl Area {
    /// Every area, so each series exists (at 0) from start-up on.
    pub const ALL: &[Area] = &[
        Area::Boot,
        Area::Assets,
        Area::Node,
        Area::CloudInit,
        Area::Answers,
        Area::Api,
        Area::Console,
        Area::Metrics,
        Area::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Area::Boot => "boot",
            Area::Assets => "assets",
            Area::Node => "node",
            Area::CloudInit => "cloud_init",
            Area::Answers => "answers",
            Area::Api => "api",
            Area::Console => "console",
            Area::Metrics => "metrics",
            Area::Other => "other",
        }
    }

    /// The area of a request path, by its first segment (before routing, so
    /// a 404 is classed too).
    pub fn of_path(path: &str) -> Area {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match first {
            "boot" => Area::Boot,
            "assets" => Area::Assets,
            "node" => Area::Node,
            "cloud-init" => Area::CloudInit,
            "answers" => Area::Answers,
            "api" => Area::Api,
            "console" => Area::Console,
            _ if path == METRICS || path == HEALTHZ => Area::Metrics,
            _ => Area::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac() -> Mac {
        "52:54:00:aa:bb:cc".parse().unwrap()
    }

    /// Whether `url`'s path (after `base`, query dropped) matches the axum
    /// `pattern`: `{x}` takes one non-empty segment, `{*x}` the rest.
    fn matches(pattern: &str, url: &str, base: &str) -> bool {
        let path = url.strip_prefix(base).expect("built on the base");
        let path = path.split('?').next().unwrap();
        let (mut p, mut u) = (pattern.split('/'), path.split('/'));
        loop {
            match (p.next(), u.next()) {
                (None, None) => return true,
                (Some(s), Some(v)) if s.starts_with("{*") => return !v.is_empty(),
                (Some(s), Some(v)) if s.starts_with('{') => {
                    if v.is_empty() {
                        return false;
                    }
                }
                (Some(s), Some(v)) if s == v => {}
                _ => return false,
            }
        }
    }

    #[test]
    fn every_url_handed_out_is_one_the_router_serves() {
        let base = "http://10.0.0.1:8080";
        let m = mac();
        let urls = Urls {
            http_base: base.into(),
        };
        for (pattern, url) in [
            (BOOT_SCRIPT, urls.script(&m)),
            (BOOT_SCRIPT, boot_script(base, &m, Some("bios"))),
            (ASSET, urls.asset("x86_64/vmlinuz")),
            (ASSET, urls.http_loader("ipxe-amd64.efi", &m)),
            (ASSET, node_asset(base, "arm64/Image", &m)),
            (NODE_INSTALLED, installed(base, &m, "debian-12")),
            (NODE_SCRIPTS, node(base, m, "/scripts")),
            (
                NODE_SCRIPT,
                node(base, "52-54-00-AA-BB-CC", "/scripts/a.sh"),
            ),
            (NODE_REPORT, node(base, m, "/report?script=a.sh&exit=0")),
            (NODE_WAIT, node(base, m, "/wait?generation=3")),
            (
                CLOUD_INIT,
                format!("{}user-data", cloud_init(base, &m, "tok")),
            ),
            (ANSWERS, format!("{}/preseed.cfg", answers(base, &m, "tok"))),
        ] {
            assert!(matches(pattern, &url, base), "{url} is not {pattern}");
        }
        for (pattern, path) in [
            (api::NODE, api::node(m)),
            (api::NODE_EVENTS, api::node_events(m)),
            (api::BOOTENV, api::bootenv("debian-12")),
            (api::EXPLAIN, api::explain(m)),
        ] {
            assert!(matches(pattern, &path, ""), "{path} is not {pattern}");
        }
    }

    #[test]
    fn the_urls_are_the_ones_nodes_were_always_handed() {
        let base = "http://10.0.0.1";
        let m = mac();
        assert_eq!(
            boot_script(base, &m, None),
            "http://10.0.0.1/boot/52:54:00:aa:bb:cc.ipxe"
        );
        assert_eq!(
            node_asset(base, "arm64/Image", &m),
            "http://10.0.0.1/assets/arm64/Image?mac=52:54:00:aa:bb:cc"
        );
        assert_eq!(
            installed(base, &m, "install"),
            "http://10.0.0.1/node/52:54:00:aa:bb:cc/installed?bootenv=install"
        );
        assert_eq!(
            cloud_init(base, &m, "tok"),
            "http://10.0.0.1/cloud-init/52:54:00:aa:bb:cc/tok/"
        );
        assert_eq!(
            answers(base, &m, "tok"),
            "http://10.0.0.1/answers/52:54:00:aa:bb:cc/tok"
        );
        assert_eq!(
            script_file_mac("52:54:00:aa:bb:cc.ipxe"),
            Some("52:54:00:aa:bb:cc")
        );
        assert_eq!(script_file_mac("52:54:00:aa:bb:cc"), None);
    }

    #[test]
    fn each_served_pattern_is_counted_as_its_own_area() {
        for (pattern, area) in [
            (BOOT_SCRIPT, Area::Boot),
            (ASSET, Area::Assets),
            (NODE_SCRIPTS, Area::Node),
            (NODE_SCRIPT, Area::Node),
            (NODE_REPORT, Area::Node),
            (NODE_INSTALLED, Area::Node),
            (NODE_WAIT, Area::Node),
            (CLOUD_INIT, Area::CloudInit),
            (ANSWERS, Area::Answers),
            (METRICS, Area::Metrics),
            (HEALTHZ, Area::Metrics),
        ] {
            assert_eq!(Area::of_path(pattern), area, "{pattern}");
        }
        assert_eq!(Area::of_path(&api_path(api::NODES)), Area::Api);
        assert_eq!(Area::of_path("/metricsx"), Area::Other);
        assert_eq!(Area::of_path("/"), Area::Other);
        assert_eq!(Area::of_path("/favicon.ico"), Area::Other);
        let labels: std::collections::HashSet<_> = Area::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(labels.len(), Area::ALL.len(), "one label per area");
    }

    #[test]
    fn only_scripts_and_assets_are_boot_paths() {
        assert!(is_boot_path("/boot/52:54:00:aa:bb:cc.ipxe"));
        assert!(is_boot_path("/assets/x86_64/vmlinuz"));
        for p in ["/boot", "/node/x/report", "/api/v1/nodes", "/metrics"] {
            assert!(!is_boot_path(p), "{p}");
        }
    }
}
