//! `rackboot serve`: binds every socket first (so a port in use fails
//! start-up with a clear message), then runs the servers until SIGTERM or
//! SIGINT cancels one token.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::boot::{Admission, Catalog, CatalogCell, CatalogError, Limits};
use crate::config::StoreConfig;
use crate::config::{Config, SubnetMode};
use crate::control::admit::Door;
use crate::control::agent::ConfigWaits;
use crate::control::dhcp_client::DhcpClients;
use crate::control::lease::Pool;
use crate::control::timeline::Timeline;
use crate::control::{self, Control};
use crate::dhcp::metrics::PoolRanges;
use crate::dhcp::{self, DhcpContext, reply::ServerParams};
use crate::dns::{self, Zone};
use crate::http::auth::{Tokens, TokensError};
use crate::http::{self, ApiAuth, HttpContext};
use crate::metrics::Metrics;
use crate::routes::Urls;
use crate::store::{PostgresConfig, PostgresStore, SqliteStore, Store, StoreError};
use crate::{privileges, tftp};

/// Why rackboot could not start. Each names the config file and key to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "no network interface `{interface}` (network.interface in {config}); set it to the boot \
         network's interface (this host has: {})",
        .present.join(", ")
    )]
    NoInterface {
        interface: String,
        config: String,
        present: Vec<String>,
    },
    #[error(
        "interface `{interface}` has no IPv4 address; give it one or set network.address in {config}"
    )]
    NoAddress { interface: String, config: String },
    #[error(
        "rackboot's address {address} on `{interface}` is inside no [[dhcp.subnet]]: add the boot network's subnet to {config}"
    )]
    AddressOutsideSubnets {
        address: Ipv4Addr,
        interface: String,
        config: String,
    },
    #[error(
        "cannot bind {service} to {addr}: {source} (is another {service} server running? see {key} in {config})"
    )]
    Bind {
        service: &'static str,
        addr: String,
        key: &'static str,
        config: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "cannot read the database password from {path} (store.password_file in {config}): {source}"
    )]
    StorePassword {
        path: std::path::PathBuf,
        config: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Privileges(#[from] privileges::PrivilegeError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("dns.domain `{0}` is not a DNS name: {1} ({2})")]
    BadDomain(String, String, String),
    #[error("invalid DNS zone: {0} (dns.domain in {1})")]
    Zone(Box<dns::DnsError>, String),
    #[error("cannot set up the HTTP client for remote assets: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error(transparent)]
    Tokens(#[from] TokensError),
    #[error(transparent)]
    Tls(#[from] http::tls::TlsError),
    /// A service ended while nothing asked it to: rackboot stopped every
    /// other one and exits non-zero, so that its supervisor restarts it.
    #[error("the {service} server stopped unexpectedly ({why}); every service was shut down")]
    ServiceStopped { service: String, why: String },
}

/// The API's access rules from `api.tokens_file` (disabled without one).
pub fn api_auth(cfg: &Config) -> Result<ApiAuth, TokensError> {
    Ok(match &cfg.api.tokens_file {
        None => ApiAuth::disabled(&cfg.path),
        Some(path) => {
            let tokens = Tokens::load(path)?;
            if tokens.is_empty() {
                tracing::warn!(
                    "API tokens file {} holds no token: every API request will be refused",
                    path.display()
                );
            }
            ApiAuth::with_tokens(&cfg.path, tokens)
        }
    })
}

/// The boot network address: from the config, else the interface's first IPv4.
pub fn boot_address(cfg: &Config) -> Result<Ipv4Addr, StartError> {
    let config = cfg.path.display().to_string();
    if nix::net::if_::if_nametoindex(cfg.interface.as_str()).is_err() {
        let mut present: Vec<String> = nix::ifaddrs::getifaddrs()
            .into_iter()
            .flatten()
            .map(|i| i.interface_name)
            .collect();
        present.sort();
        present.dedup();
        return Err(StartError::NoInterface {
            interface: cfg.interface.clone(),
            config,
            present,
        });
    }
    let address = match cfg.address {
        Some(a) => a,
        None => nix::ifaddrs::getifaddrs()
            .ok()
            .into_iter()
            .flatten()
            .filter(|i| i.interface_name == cfg.interface)
            .find_map(|i| i.address?.as_sockaddr_in().map(|s| s.ip()))
            .ok_or_else(|| StartError::NoAddress {
                interface: cfg.interface.clone(),
                config: config.clone(),
            })?,
    };
    if cfg.dhcp.enabled && cfg.dhcp.subnet_of(address).is_none() {
        return Err(StartError::AddressOutsideSubnets {
            address,
            interface: cfg.interface.clone(),
            config,
        });
    }
    Ok(address)
}

/// The open-files limit rackboot runs with, and how it got there.
#[derive(Debug, Clone, Copy)]
pub struct OpenFiles {
    /// The soft `RLIMIT_NOFILE` in force.
    pub limit: u64,
    /// What it was before rackboot raised it, if it did.
    pub raised_from: Option<u64>,
    /// The hard limit, when raising to it failed.
    pub failed_to: Option<u64>,
}

impl OpenFiles {
    /// Says what happened (once start-up has succeeded: a start-up error
    /// is rackboot's one line of output).
    pub fn log(&self) {
        match (self.raised_from, self.failed_to) {
            (Some(from), _) => tracing::info!(
                from,
                to = self.limit,
                "open-files limit (RLIMIT_NOFILE) raised to its hard limit"
            ),
            (None, Some(hard)) => tracing::warn!(
                limit = self.limit,
                hard,
                "cannot raise the open-files limit (RLIMIT_NOFILE) to its hard limit"
            ),
            (None, None) => tracing::info!(
                limit = self.limit,
                "open-files limit (RLIMIT_NOFILE) is at its hard limit"
            ),
        }
    }
}

/// Opens the store `[store]` names: SQLite in the state directory, or the
/// PostgreSQL database this appliance shares with others.
async fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, StartError> {
    let store = open_engine(cfg).await?;
    // Loading read every record through a copy of its own, freed as soon
    // as it was packed: the allocator would keep those pages for as long as
    // this thread stays quiet.
    crate::memory::give_back();
    Ok(store)
}

async fn open_engine(cfg: &Config) -> Result<Arc<dyn Store>, StartError> {
    Ok(match &cfg.store {
        StoreConfig::Sqlite { sync } => {
            Arc::new(SqliteStore::open_with(&cfg.state_dir, *sync).await?)
        }
        StoreConfig::Postgres {
            url,
            password_file,
            appliance,
            ca_file,
        } => {
            let password = match password_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|source| StartError::StorePassword {
                            path: path.clone(),
                            config: cfg.path.display().to_string(),
                            source,
                        })?
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                ),
                None => std::env::var("RACKBOOT_STORE_PASSWORD").ok(),
            };
            let appliance = appliance.clone().unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "rackboot".to_string())
            });
            Arc::new(
                PostgresStore::open(PostgresConfig {
                    url: url.clone(),
                    password,
                    appliance,
                    ca_file: ca_file.clone(),
                })
                .await?,
            )
        }
    })
}

/// Raises the soft open-files limit to the hard one, as far as allowed.
/// Every HTTP connection, TFTP transfer and asset being sent holds a
/// descriptor; the usual soft limit of 1024 is what a flood of idle
/// connections exhausted.
pub fn raise_open_files_limit() -> OpenFiles {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return OpenFiles {
            limit: 1024,
            raised_from: None,
            failed_to: Some(1024),
        };
    };
    if soft >= hard {
        return OpenFiles {
            limit: soft,
            raised_from: None,
            failed_to: None,
        };
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => OpenFiles {
            limit: hard,
            raised_from: Some(soft),
            failed_to: None,
        },
        Err(_) => OpenFiles {
            limit: soft,
            raised_from: None,
            failed_to: Some(hard),
        },
    }
}

/// A service's task in `run`'s set: its name, and how it ended, in words.
async fn service<E: std::fmt::Display>(
    name: &'static str,
    serve: impl Future<Output = Result<(), E>>,
) -> (&'static str, Result<(), String>) {
    (name, serve.await.map_err(|e| e.to_string()))
}

/// Starts every enabled service and runs until `cancel` fires. `ready` is
/// called once every socket is bound.
pub async fn run(
    cfg: Config,
    cancel: CancellationToken,
    ready: impl FnOnce(),
) -> Result<(), StartError> {
    let config = cfg.path.display().to_string();
    let open_files = raise_open_files_limit();
    let address = boot_address(&cfg)?;
    // Looked up before anything is bound: a missing account fails the start.
    let account = cfg
        .run_as
        .as_ref()
        .map(privileges::Account::lookup)
        .transpose()?;
    let store = open_store(&cfg).await?;
    let catalog = Arc::new(CatalogCell::new(Catalog::load(
        &cfg.bootenvs_dir,
        &cfg.scripts_dir,
        &cfg.assets_dir,
        &cfg.default_bootenv,
    )?));
    let timeline = Timeline::new(store.clone());
    // Boot scripts and node tokens only for the node's own address.
    let binding = Arc::new(crate::control::bind::Binding::new(
        store.clone(),
        cfg.bind_tokens_to_address,
    ));
    if !cfg.bind_tokens_to_address {
        tracing::warn!(
            "[http] bind_tokens_to_address = false: ANY host on the network can fetch any node's boot script and use its token (its config scripts, secrets, reports); meant only for `rackboot storm` and tests, never for production"
        );
    }
    let auth = Arc::new(api_auth(&cfg)?);
    let tls = match &cfg.api.tls {
        Some(t) => Some((
            t.port,
            http::tls::server_config(&t.cert, &t.key, &cfg.path)?,
        )),
        None => None,
    };
    // One registry for every service; the pool gauges cover the subnets
    // rackboot hands addresses out on (proxy subnets have no ranges).
    let pools: Vec<PoolRanges> = cfg
        .dhcp
        .subnets
        .iter()
        .filter(|s| cfg.dhcp.enabled && s.mode == SubnetMode::Dhcp)
        .map(|s| PoolRanges {
            subnet: s.cidr,
            ranges: s.ranges.clone(),
        })
        .collect();
    let metrics = Arc::new(Metrics::new(&pools));
    // Every protocol asks this one door whether a MAC may boot; the rules
    // hold whether or not rackboot's DHCP runs (an HTTP client on a subnet
    // that ignores unknown clients is refused all the same).
    let door = Arc::new(
        Door::new(
            store.clone(),
            timeline.clone(),
            &cfg.default_bootenv,
            cfg.dhcp
                .subnets
                .iter()
                .map(|s| (s.cidr, s.unknown_clients))
                .collect(),
            metrics.clone(),
        )
        .with_hostnames(cfg.default_hostname),
    );
    let http_port = cfg.http.unwrap_or(80);
    let urls = Urls {
        http_base: if http_port == 80 {
            format!("http://{address}")
        } else {
            format!("http://{address}:{http_port}")
        },
    };
    let bind_err = |service, addr: String, key| {
        let config = config.clone();
        move |source| StartError::Bind {
            service,
            addr,
            key,
            config,
            source,
        }
    };

    let mut tasks: JoinSet<(&'static str, Result<(), String>)> = JoinSet::new();

    // Whatever follows the store's changes joins before any service answers:
    // a join reads every record under the store's lock (over a second with
    // a million records), and answers already being given would wait it out.
    {
        let sweep = crate::sweep::Sweep::new(
            store.clone(),
            timeline.clone(),
            cfg.lifecycle,
            cfg.reap_discovered_after,
            metrics.clone(),
        );
        let c = cancel.clone();
        tasks.spawn(async move {
            sweep.run(c).await;
            ("lifecycle sweep", Ok(()))
        });
    }
    let control = Arc::new(Control::new(control::Parts {
        store: store.clone(),
        timeline: timeline.clone(),
        catalog: catalog.clone(),
        http_base: urls.http_base.clone(),
        door: door.clone(),
        binding: binding.clone(),
        admission: Admission::new(Limits {
            subnets: cfg.admission.subnets.clone(),
            other: cfg.admission.max_booting,
            slot_timeout: cfg.admission.slot_timeout,
        }),
        config_waits: ConfigWaits::new(cancel.clone()),
        secrets_dir: cfg.secrets_dir.clone(),
        default_bootenv: cfg.default_bootenv.clone(),
        power: cfg.power.clone(),
        rollout_hooks: cfg.rollout_hooks.clone(),
    }));
    store.subscribe(control.clone());
    let console = cfg.console.as_ref().map(|c| {
        let console = Arc::new(http::console::Console::new(c));
        store.subscribe(console.nodes.clone());
        console
    });
    // `[dns] names = "none"`: an empty table, so no node name is answered
    // (A or PTR) and a walk of the reverse zones finds nothing; rackboot's
    // own apex records and forwarding are unchanged.
    let names = Arc::new(crate::names::NameTable::new());
    if cfg
        .dns
        .as_ref()
        .is_some_and(|d| d.names == crate::config::DnsNames::Hostname)
    {
        store.subscribe(names.clone());
    }

    if cfg.dhcp.enabled {
        // A boot subnet in proxy mode shares port 67 with the address server.
        let proxy_boot_subnet = cfg
            .dhcp
            .subnets
            .iter()
            .any(|s| s.mode == SubnetMode::Proxy && s.cidr.contains(&address));
        let sock = if proxy_boot_subnet {
            dhcp::server::bind_proxy(&cfg.interface, cfg.dhcp.subnets.len() == 1)
        } else {
            dhcp::bind(&cfg.interface, dhcp::server::SERVER_PORT)
        };
        let sock = sock.and_then(UdpSocket::from_std).map_err(bind_err(
            "DHCP",
            format!("{}:67", cfg.interface),
            "network.interface",
        ))?;
        let domain = cfg.dns.as_ref().map(|d| d.domain.clone());
        let subnets: Vec<dhcp::Subnet> = cfg
            .dhcp
            .subnets
            .iter()
            .map(|s| dhcp::Subnet {
                params: ServerParams {
                    server_ip: address,
                    subnet: s.cidr,
                    router: s.router,
                    dns: cfg.dns.is_some().then_some(address),
                    domain: domain.clone(),
                },
                pool: Pool {
                    subnet: s.cidr,
                    ranges: s.ranges.clone(),
                    lease_seconds: s.lease_seconds,
                    server_ip: address,
                },
                mode: s.mode,
                relays: s.relays.clone(),
                identity: s.identity,
                unknown: Arc::new(std::sync::Mutex::new(dhcp::unknown::Unknown::new(
                    s.ranges
                        .iter()
                        .map(|&(a, b)| u64::from(u32::from(b) - u32::from(a)) + 1)
                        .sum(),
                    s.unknown_share,
                    s.unknown_rate,
                ))),
                unknown_held: metrics.dhcp_pool_unknown(s.cidr),
            })
            .collect();
        let direct = subnets
            .iter()
            .position(|s| s.params.subnet.contains(&address));
        let any_proxy = subnets.iter().any(|s| s.mode == SubnetMode::Proxy);
        let clients = Arc::new(DhcpClients {
            store: store.clone(),
            timeline: timeline.clone(),
            door: door.clone(),
            binding: binding.clone(),
            loaders: cfg.dhcp.loaders.clone(),
            urls: urls.clone(),
            catalog: catalog.clone(),
        });
        clients
            .count_unknown_leases(&subnets, crate::model::Timestamp::now())
            .await?;
        let ctx = Arc::new(DhcpContext {
            clients,
            subnets,
            direct,
            limits: std::sync::Mutex::new(dhcp::ratelimit::RateLimits::new(
                cfg.dhcp.rate_limit_per_mac,
                cfg.dhcp.rate_limit_per_relay,
            )),
            started: std::time::Instant::now(),
            metrics: metrics.clone(),
        });
        if any_proxy {
            let boot = dhcp::bind(&cfg.interface, dhcp::server::BOOT_SERVER_PORT)
                .and_then(UdpSocket::from_std)
                .map_err(bind_err(
                    "PXE boot server",
                    format!("{}:4011", cfg.interface),
                    "network.interface",
                ))?;
            let (ctx, c) = (ctx.clone(), cancel.clone());
            tasks.spawn(service(
                "PXE boot server",
                dhcp::serve_boot_server(boot, ctx, c),
            ));
        }
        let c = cancel.clone();
        tasks.spawn(service("DHCP", dhcp::serve(sock, ctx, c)));
    }

    {
        let reloader = crate::reload::Reloader {
            bootenvs_dir: cfg.bootenvs_dir.clone(),
            scripts_dir: cfg.scripts_dir.clone(),
            assets_dir: cfg.assets_dir.clone(),
            default_bootenv: cfg.default_bootenv.clone(),
            cell: catalog.clone(),
            metrics: metrics.clone(),
            tokens: cfg.api.tokens_file.clone().map(|path| (path, auth.clone())),
        };
        let c = cancel.clone();
        tasks.spawn(async move {
            reloader.watch(c).await;
            ("reload", Ok(()))
        });
    }

    if let Some(dir) = &cfg.assets.drop_dir {
        let drop = crate::assets::drop::DropFolder::new(
            dir.clone(),
            crate::assets::into_bootenv::Target::from(&cfg),
            metrics.clone(),
        );
        tracing::info!("watching drop folder {}", dir.display());
        let c = cancel.clone();
        tasks.spawn(async move {
            drop.watch(c).await;
            ("drop folder", Ok(()))
        });
    }

    if let Some(port) = cfg.tftp {
        let addr = SocketAddr::new(IpAddr::V4(address), port);
        let sock = std::net::UdpSocket::bind(addr).map_err(bind_err(
            "TFTP",
            addr.to_string(),
            "tftp.port",
        ))?;
        let handler = tftp::AssetsHandler::new(
            cfg.assets_dir.clone(),
            binding.clone(),
            timeline.clone(),
            metrics.clone(),
            cfg.tftp_max_transfers,
            control.clone(),
        );
        let tftp_config = tftp::ServerConfig {
            limits: cfg.tftp_limits.clone(),
            interface: Some(cfg.interface.clone()),
            busy_poll: cfg.tftp_busy_poll,
            max_per_address: cfg.tftp_max_per_address,
        };
        let c = cancel.clone();
        tasks.spawn(service("TFTP", tftp::serve(sock, handler, tftp_config, c)));
    }

    {
        // Rollouts are driven by the leading appliance (every appliance on
        // SQLite); the runner looks who leads at each tick.
        let runner = crate::control::rollout::Runner::new(control.clone());
        let c = cancel.clone();
        tasks.spawn(async move {
            runner.run(c).await;
            ("rollout runner", Ok(()))
        });
    }
    let http_ctx = Arc::new(HttpContext {
        console,
        config_path: cfg.path.clone(),
        control,
        catalog: catalog.clone(),
        urls: urls.clone(),
        assets_dir: cfg.assets_dir.clone(),
        asset_files: crate::assets::cache::AssetFiles::new(&cfg.assets_dir),
        bootenvs_dir: cfg.bootenvs_dir.clone(),
        scripts_dir: cfg.scripts_dir.clone(),
        default_bootenv: cfg.default_bootenv.clone(),
        metrics: metrics.clone(),
        auth: auth.clone(),
        loaders: cfg.dhcp.loaders.clone(),
        services: [
            ("dhcp", cfg.dhcp.enabled),
            ("dns", cfg.dns.is_some()),
            ("tftp", cfg.tftp.is_some()),
            ("http", cfg.http.is_some()),
            ("https", cfg.api.tls.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect(),
        timeouts: cfg.lifecycle,
        cloud_init_dir: cfg.cloud_init_dir.clone(),
        answers_dir: cfg.answers_dir.clone(),
        fetcher: Arc::new(crate::assets::remote::Fetcher::new(
            &cfg.assets_dir,
            metrics.clone(),
        )?),
    });

    // One budget of connections for HTTP and HTTPS.
    let http_limits = {
        let resolved = cfg.http_bounds.resolve(open_files.limit);
        Arc::new(http::bounds::Limits::new(
            resolved,
            cfg.http_bounds.timeouts,
            metrics.clone(),
        ))
    };

    if let Some(port) = cfg.http {
        let addr = SocketAddr::new(IpAddr::V4(address), port);
        let listener = TcpListener::bind(addr).await.map_err(bind_err(
            "HTTP",
            addr.to_string(),
            "http.port",
        ))?;
        let (ctx, limits, c) = (http_ctx.clone(), http_limits.clone(), cancel.clone());
        tasks.spawn(service("HTTP", http::serve(listener, ctx, limits, c)));
    }

    if let Some((port, tls)) = tls {
        // The boot address, as for HTTP: boot scripts carry node tokens and
        // must not be reachable from every network the host is on.
        let addr = SocketAddr::new(IpAddr::V4(address), port);
        let listener = TcpListener::bind(addr).await.map_err(bind_err(
            "HTTPS",
            addr.to_string(),
            "api.tls_port",
        ))?;
        // Marked, so the console's session cookie is `Secure` here.
        let router = http::router(http_ctx.clone()).layer(axum::Extension(http::console::OverTls));
        let (limits, c) = (http_limits.clone(), cancel.clone());
        tasks.spawn(service(
            "HTTPS",
            http::tls::serve(listener, tls, router, limits, c),
        ));
    }

    if let Some(d) = &cfg.dns {
        let addr = SocketAddr::new(IpAddr::V4(address), d.port);
        let udp = UdpSocket::bind(addr).await.map_err(bind_err(
            "DNS",
            format!("{addr}/udp"),
            "dns.port",
        ))?;
        let tcp = TcpListener::bind(addr).await.map_err(bind_err(
            "DNS",
            format!("{addr}/tcp"),
            "dns.port",
        ))?;
        let name = hickory_proto::rr::Name::from_ascii(format!("{}.", d.domain))
            .map_err(|e| StartError::BadDomain(d.domain.clone(), e.to_string(), config.clone()))?;
        // Reverse names for every subnet rackboot serves (the boot subnet and each relayed
        // one), or for its own address alone when it is in none.
        let mut reverse: Vec<ipnet::Ipv4Net> =
            cfg.dhcp.subnets.iter().map(|s| s.cidr.trunc()).collect();
        if cfg.dhcp.subnet_of(address).is_none() {
            reverse.push(ipnet::Ipv4Net::new(address, 32).expect("/32 is valid"));
        }
        let zone = Zone::new(name, &reverse, address)
            .map_err(|e| StartError::Zone(Box::new(e), config.clone()))?;
        let forwarders = d.forwarders.clone();
        let dns_metrics = Arc::clone(&metrics);
        let c = cancel.clone();
        tasks.spawn(service(
            "DNS",
            dns::serve(udp, tcp, zone, names, forwarders, dns_metrics, c),
        ));
    }

    // Said once every socket is bound: a start-up error is rackboot's only line.
    open_files.log();
    if cfg.http.is_some() || cfg.api.tls.is_some() {
        let r = http_limits.resolved;
        tracing::info!(
            max_connections = r.max_connections,
            per_address = r.per_address,
            reserved = r.reserve,
            open_files = open_files.limit,
            "HTTP connection limits"
        );
        if r.max_connections as u64 > open_files.limit {
            tracing::warn!(
                "http.max_connections ({}) is above the open-files limit ({}): connections past it \
                 fail to be accepted, and TFTP and the store run out of files too",
                r.max_connections,
                open_files.limit
            );
        }
    }
    // Every socket is bound: root is no longer needed.
    privileges::after_binding(account.as_ref(), &cfg.state_dir)?;
    tracing::info!(
        %address,
        interface = %cfg.interface,
        dhcp = cfg.dhcp.enabled,
        tftp = ?cfg.tftp,
        http = ?cfg.http,
        https = ?cfg.api.tls.as_ref().map(|t| t.port),
        dns = ?cfg.dns.as_ref().map(|d| d.port),
        bootenvs = catalog.current().bootenvs().count(),
        "rackboot serving"
    );
    ready();

    // A server that stops on its own takes the others down with it: a
    // half-working appliance boots some machines and silently not others.
    // And rackboot then exits non-zero: systemd's `Restart=on-failure`
    // restarts only a process that failed.
    let mut failed = None;
    while let Some(joined) = tasks.join_next().await {
        let (name, why) = match joined {
            Ok((name, Ok(()))) if cancel.is_cancelled() => {
                tracing::debug!("{name} stopped");
                continue;
            }
            Ok((name, Ok(()))) => (name.to_string(), "it returned".to_string()),
            Ok((name, Err(e))) => (name.to_string(), e),
            Err(e) => ("a".to_string(), format!("its task panicked: {e}")),
        };
        tracing::error!("{name} server stopped unexpectedly ({why}); shutting down");
        cancel.cancel();
        failed.get_or_insert(StartError::ServiceStopped { service: name, why });
    }
    // Timeline entries are written behind the replies; save the last ones.
    store.sync().await?;
    failed.map_or(Ok(()), Err)
}
