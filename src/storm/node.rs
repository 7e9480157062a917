//! One simulated node's boot, phase by phase, with the I/O each sans-IO
//! client needs: the shared DHCP socket, a TFTP socket of its own, HTTP.
//! Each phase is timed and bounded; the first failure ends the node.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use url::Url;

use super::StormConfig;
use super::dhcp_client::{self, Ask, Exchange, Flavor, Lease};
use super::dhcp_socket::DhcpSocket;
use super::fleet::{self, NodeId};
use super::http::{self, Agent, HttpFailure};
use super::ipxe;
use super::progress::Progress;
use super::report::{Failure, NodeOutcome, Phase};
use super::tftp_client::{self, Transfer};

/// What every node task shares.
pub struct Shared {
    pub cfg: Arc<StormConfig>,
    pub dhcp: Arc<DhcpSocket>,
    pub http: reqwest::Client,
    pub progress: Arc<Progress>,
}

/// A phase's failure before it is tied to its phase.
struct Why {
    reason: String,
    detail: String,
}

impl Why {
    fn new(reason: impl Into<String>) -> Why {
        Why {
            reason: reason.into(),
            detail: String::new(),
        }
    }
}

impl From<HttpFailure> for Why {
    fn from(f: HttpFailure) -> Why {
        Why {
            reason: f.reason,
            detail: f.detail,
        }
    }
}

/// Boots node `id` through the configured phases.
pub async fn boot(shared: &Shared, id: NodeId) -> NodeOutcome {
    let mut out = NodeOutcome {
        mac: id.mac_string(),
        ..NodeOutcome::default()
    };
    shared.progress.started();
    let start = Instant::now();
    let result = Run {
        shared,
        id: &id,
        out: &mut out,
    }
    .phases()
    .await;
    out.total = start.elapsed();
    shared.progress.finished(result.is_ok());
    if let Err(f) = result {
        out.failure = Some(f);
    }
    out
}

struct Run<'a> {
    shared: &'a Shared,
    id: &'a NodeId,
    out: &'a mut NodeOutcome,
}

impl Run<'_> {
    fn wants(&self, p: Phase) -> bool {
        self.shared.cfg.phases.contains(&p)
    }

    /// Runs one phase: counted in progress, bounded, timed; `fut` returns
    /// its value and the bytes it moved.
    async fn phase<T>(
        &mut self,
        phase: Phase,
        bound: Duration,
        fut: impl Future<Output = Result<(T, u64), Why>>,
    ) -> Result<T, Failure> {
        let _in = self.shared.progress.enter(phase);
        let t0 = Instant::now();
        let result = tokio::time::timeout(bound, fut).await;
        let took = t0.elapsed();
        match result {
            Ok(Ok((v, bytes))) => {
                self.out.phases.push((phase, took, bytes));
                Ok(v)
            }
            Ok(Err(why)) => Err(Failure {
                phase,
                reason: why.reason,
                detail: why.detail,
            }),
            Err(_) => Err(Failure {
                phase,
                reason: format!("not done within the {bound:?} phase timeout"),
                detail: String::new(),
            }),
        }
    }

    async fn phases(&mut self) -> Result<(), Failure> {
        let cfg = self.shared.cfg.clone();
        let timeout = cfg.phase_timeout;
        // The exchange's own deadline names what was missing; the phase bound is a backstop.
        let dhcp_bound = timeout + Duration::from_secs(2);

        let lease = self
            .phase(Phase::Dhcp, dhcp_bound, self.dhcp(Flavor::Firmware, 0))
            .await?;
        if !self.wants(Phase::Tftp) {
            return Ok(());
        }
        let (file, server) = tftp_target(&lease).map_err(|w| Failure {
            phase: Phase::Tftp,
            reason: w.reason,
            detail: w.detail,
        })?;
        let opts = cfg.tftp;
        self.phase(Phase::Tftp, timeout, async move {
            let r = tftp(&file, server, opts).await?;
            Ok(((), r))
        })
        .await?;
        if !self.wants(Phase::IpxeDhcp) {
            return Ok(());
        }
        let lease = self
            .phase(Phase::IpxeDhcp, dhcp_bound, self.dhcp(Flavor::Ipxe, 1))
            .await?;
        if !self.wants(Phase::Script) {
            return Ok(());
        }
        let http = self.shared.http.clone();
        let images = self
            .phase(Phase::Script, timeout, async {
                let url = script_url(&lease)?;
                let text = http::get_text(&http, "GET boot script", &url, None).await?;
                let images = ipxe::parse(&text, &url).map_err(|e| Why {
                    reason: e.to_string(),
                    detail: url.to_string(),
                })?;
                Ok((images, text.len() as u64))
            })
            .await?;
        if !self.wants(Phase::Kernel) {
            return Ok(());
        }
        self.phase(Phase::Kernel, timeout, async {
            let n = http::fetch_discard(&http, "GET kernel", &images.kernel).await?;
            Ok(((), n))
        })
        .await?;
        if !self.wants(Phase::Initrd) {
            return Ok(());
        }
        self.phase(Phase::Initrd, timeout, async {
            let mut n = 0;
            for url in &images.initrds {
                n += http::fetch_discard(&http, "GET initrd", url).await?;
            }
            Ok(((), n))
        })
        .await?;
        if !self.wants(Phase::Booted) {
            return Ok(());
        }
        let params = ipxe::agent_params(&images.cmdline);
        let missing = |what: &str| Failure {
            phase: Phase::Booted,
            reason: format!(
                "no {what} on the kernel command line: the operational image could not report (add it to the bootenv's cmdline)"
            ),
            detail: images.cmdline.clone(),
        };
        let agent = Agent {
            http: &http,
            base: params.url.clone().ok_or_else(|| missing("rackboot.url"))?,
            mac: params.mac.clone().unwrap_or_else(|| self.id.mac_string()),
            token: params
                .token
                .clone()
                .ok_or_else(|| missing("rackboot.token"))?,
        };
        self.phase(Phase::Booted, timeout, async {
            agent
                .report("POST report state=booted", "state=booted", String::new())
                .await?;
            Ok(((), 0))
        })
        .await?;
        if !self.wants(Phase::Config) {
            return Ok(());
        }
        let generation = self
            .phase(Phase::Config, timeout, async {
                let (g, bytes) = agent.pull_config().await?;
                Ok((g, bytes))
            })
            .await?;
        if !self.wants(Phase::Configured) {
            return Ok(());
        }
        self.phase(Phase::Configured, timeout, async {
            agent
                .report(
                    "POST report state=configured",
                    &format!("state=configured&generation={generation}"),
                    String::new(),
                )
                .await?;
            Ok(((), 0))
        })
        .await
    }

    /// One DORA exchange; `n` tells the exchanges of one node apart (xid).
    fn dhcp(
        &self,
        flavor: Flavor,
        n: u32,
    ) -> impl Future<Output = Result<(Lease, u64), Why>> + use<> {
        let cfg = self.shared.cfg.clone();
        let socket = self.shared.dhcp.clone();
        let id = self.id.clone();
        async move {
            let xid = fleet::xid(cfg.seed, id.index, n);
            let mac = id.mac;
            let ask = Ask {
                node: id,
                flavor,
                xid,
                relay: socket.relay(),
                retry: cfg.dhcp_retry,
                timeout: cfg.phase_timeout,
            };
            let mut ex = Exchange::new(ask, Instant::now());
            let mut reg = socket.register(xid, mac);
            loop {
                match ex.poll(Instant::now()) {
                    dhcp_client::Poll::Transmit(m) => {
                        socket.send(&m).await.map_err(|e| Why {
                            reason: format!("cannot send DHCP: {}", e.kind()),
                            detail: e.to_string(),
                        })?;
                    }
                    dhcp_client::Poll::Wait(at) => {
                        tokio::select! {
                            got = reg.replies.recv() => {
                                let Some(msg) = got else {
                                    return Err(Why::new("the DHCP socket closed"));
                                };
                                if let Some(done) = ex.handle(&msg, Instant::now()) {
                                    return done.map(|l| (l, 0)).map_err(|e| Why::new(e.to_string()));
                                }
                            }
                            _ = tokio::time::sleep_until(at.into()) => {}
                        }
                    }
                    dhcp_client::Poll::Failed(e) => return Err(Why::new(e.to_string())),
                }
            }
        }
    }
}

/// The loader file and its server, from the lease.
fn tftp_target(lease: &Lease) -> Result<(String, Ipv4Addr), Why> {
    let file = lease
        .boot_file
        .clone()
        .ok_or_else(|| Why::new("the DHCP ACK named no boot file (option 67 / file)"))?;
    if file.contains("://") {
        return Err(Why {
            reason: "the DHCP ACK names a URL, not a TFTP file (is the server treating this firmware as iPXE or HTTP boot?)".into(),
            detail: file,
        });
    }
    let server = lease
        .next_server
        .ok_or_else(|| Why::new("the DHCP ACK named no TFTP server (siaddr / option 66)"))?;
    Ok((file, server))
}

/// The iPXE script URL from the second ACK.
fn script_url(lease: &Lease) -> Result<Url, Why> {
    let file = lease
        .boot_file
        .clone()
        .ok_or_else(|| Why::new("the iPXE DHCP ACK named no boot file"))?;
    let url = Url::parse(&file).map_err(|_| Why {
        reason: "the iPXE DHCP ACK's boot file is not a URL (the server did not recognise iPXE?)"
            .into(),
        detail: file.clone(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Why {
            reason: format!(
                "the iPXE DHCP ACK's boot file is a {} URL, not HTTP",
                url.scheme()
            ),
            detail: file,
        });
    }
    Ok(url)
}

/// Reads `file` from `server` over a socket of its own (the transfer id).
async fn tftp(file: &str, server: Ipv4Addr, opts: tftp_client::Options) -> Result<u64, Why> {
    let io = |e: std::io::Error| Why {
        reason: format!("TFTP socket: {}", e.kind()),
        detail: e.to_string(),
    };
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(io)?;
    let to = SocketAddr::from(SocketAddrV4::new(server, 69));
    let mut t = Transfer::new(file, to, opts, Instant::now());
    let mut buf = vec![0u8; usize::from(opts.blksize) + 4];
    loop {
        match t.poll(Instant::now()) {
            tftp_client::Poll::Transmit(p, to) => {
                socket.send_to(&p, to).await.map_err(io)?;
            }
            tftp_client::Poll::Wait(at) => {
                tokio::select! {
                    got = socket.recv_from(&mut buf) => {
                        match got {
                            Ok((n, from)) => t.handle(&buf[..n], from, Instant::now()),
                            // ICMP port unreachable surfaces here: nothing serves TFTP there.
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                return Err(Why {
                                    reason: "TFTP: connection refused (nothing listens on port 69)".into(),
                                    detail: format!("{server}:69 {file}"),
                                });
                            }
                            Err(e) => return Err(io(e)),
                        }
                    }
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
            }
            tftp_client::Poll::Done(r) => return Ok(r.bytes),
            tftp_client::Poll::Failed(e) => {
                return Err(Why {
                    reason: e.to_string(),
                    detail: format!("{server}:69 {file}"),
                });
            }
        }
    }
}
