//! DNS over UDP and TCP for rackboot's zones, on sockets the caller has already bound.
//!
//! hickory-server owns the wire: framing, parsing, FORMERR for undecodable messages, dropping
//! packets too short to carry a header, TCP idle timeouts. This file turns one parsed question
//! into an answer using [`Zone`] for the shape and [`NameSource`] for the data.

use std::{future::Future, iter, net::Ipv4Addr, sync::Arc, time::Duration};

use hickory_proto::{
    op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, PTR},
    },
};
use hickory_server::{
    Server,
    net::runtime::Time,
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    DnsError,
    zone::{Answer, Zone},
};

/// Time to live of every answer, in seconds. Short because a node's address and hostname
/// follow its lease and its record, which admins and DHCP change at any time.
pub const ANSWER_TTL: u32 = 60;

/// How long one question may wait for the store before it gets SERVFAIL. A stuck store must
/// not pile up in-flight UDP questions without bound.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a TCP connection may stay silent before hickory closes it.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Responses queued per TCP connection; one question gets one response, so a few suffice.
const TCP_RESPONSE_QUEUE: usize = 32;

/// Where the DNS service reads node names and addresses from: rackboot's node records.
pub trait NameSource: Send + Sync + 'static {
    /// IPv4 address of the node with this hostname (case-insensitive, no domain), if any.
    fn host_addr(&self, hostname: &str) -> impl Future<Output = Option<Ipv4Addr>> + Send;

    /// Hostname (no domain) of the node holding this address, if any.
    fn addr_host(&self, ip: Ipv4Addr) -> impl Future<Output = Option<String>> + Send;
}

/// Answers questions for `zone` over `udp` and `tcp` until `cancel` fires, then stops both
/// gracefully.
///
/// Returns an error when either transport stops on its own (the other is then stopped too), so
/// the caller learns that rackboot no longer answers DNS. A malformed packet never stops
/// serving: hickory answers it with FORMERR or drops it.
pub async fn serve<S: NameSource>(
    udp: UdpSocket,
    tcp: TcpListener,
    zone: Zone,
    source: Arc<S>,
    cancel: CancellationToken,
) -> Result<(), DnsError> {
    info!(
        udp = ?udp.local_addr().ok(),
        tcp = ?tcp.local_addr().ok(),
        domain = %zone.domain(),
        subnet = ?zone.subnet(),
        "serving DNS"
    );
    let handler = Handler {
        zone: Arc::new(zone),
        source,
    };
    // One hickory server per transport: hickory reports a failed socket only once all of a
    // server's sockets have ended, and we want to know as soon as either one does.
    let mut udp_server = Server::new(handler.clone());
    udp_server.register_socket(udp);
    let mut tcp_server = Server::new(handler);
    tcp_server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_QUEUE);

    let stopped = tokio::select! {
        () = cancel.cancelled() => None,
        result = udp_server.block_until_done() => Some(("UDP", result)),
        result = tcp_server.block_until_done() => Some(("TCP", result)),
    };

    match stopped {
        None => {
            let udp = udp_server.shutdown_gracefully().await;
            let tcp = tcp_server.shutdown_gracefully().await;
            udp.map_err(|source| DnsError::Shutdown {
                transport: "UDP",
                source,
            })?;
            tcp.map_err(|source| DnsError::Shutdown {
                transport: "TCP",
                source,
            })?;
            info!("DNS stopped");
            Ok(())
        }
        Some((transport, result)) => {
            let survivor = if transport == "UDP" {
                &mut tcp_server
            } else {
                &mut udp_server
            };
            if let Err(error) = survivor.shutdown_gracefully().await {
                warn!(%error, "DNS transport did not shut down cleanly after the other one stopped");
            }
            Err(DnsError::Stopped {
                transport,
                source: result.err(),
            })
        }
    }
}

/// Answers one request at a time; shared by both transports.
struct Handler<S> {
    zone: Arc<Zone>,
    source: Arc<S>,
}

// A derive would demand `S: Clone`; only the `Arc`s are cloned.
impl<S> Clone for Handler<S> {
    fn clone(&self) -> Self {
        Self {
            zone: Arc::clone(&self.zone),
            source: Arc::clone(&self.source),
        }
    }
}

/// The decided response, before it is encoded.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
}

impl Reply {
    fn authoritative(code: ResponseCode, answers: Vec<Record>) -> Self {
        Self {
            code,
            authoritative: true,
            answers,
        }
    }

    /// An answer we do not vouch for: REFUSED, FORMERR, SERVFAIL…
    fn error(code: ResponseCode) -> Self {
        Self {
            code,
            authoritative: false,
            answers: Vec::new(),
        }
    }

    fn record(name: &Name, rdata: RData) -> Self {
        let record = Record::from_rdata(name.clone(), ANSWER_TTL, rdata);
        Self::authoritative(ResponseCode::NoError, vec![record])
    }

    /// NOERROR with no answer when the name exists, NXDOMAIN when it does not.
    fn exists(exists: bool) -> Self {
        let code = if exists {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        Self::authoritative(code, Vec::new())
    }
}

#[async_trait::async_trait]
impl<S: NameSource> RequestHandler for Handler<S> {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let reply = self.reply(request).await;

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = reply.authoritative;
        metadata.response_code = reply.code;
        // RFC 6891 §7: a query with an OPT record gets one back. Its extended RCODE bits carry
        // BADVERS, the only code here that does not fit in the header.
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(512))
                .set_version(0)
                .set_rcode_high(reply.code.high());
            edns
        });

        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            reply.answers.iter(),
            iter::empty(),
            iter::empty(),
            iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                warn!(%error, src = %request.src(), "could not send DNS response");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

impl<S: NameSource> Handler<S> {
    async fn reply(&self, request: &Request) -> Reply {
        // RFC 6891 §6.1.3: we implement EDNS version 0 only.
        if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
            return Reply::error(ResponseCode::BADVERS);
        }
        // hickory drops responses before they reach us; this keeps the handler correct alone.
        if request.metadata.message_type != MessageType::Query {
            return Reply::error(ResponseCode::FormErr);
        }
        // NOTIFY, UPDATE, IQUERY, STATUS: nothing here can be changed or notified.
        if request.metadata.op_code != OpCode::Query {
            return Reply::error(ResponseCode::NotImp);
        }
        // RFC 9619: a query carries exactly one question.
        let Ok(info) = request.request_info() else {
            return Reply::error(ResponseCode::FormErr);
        };
        let query = info.query.original();
        let reply = self
            .resolve(query.name(), query.query_type(), query.query_class())
            .await;
        debug!(
            name = %query.name(),
            qtype = %query.query_type(),
            code = %reply.code,
            answers = reply.answers.len(),
            "answered DNS question"
        );
        reply
    }

    async fn resolve(&self, name: &Name, qtype: RecordType, qclass: DNSClass) -> Reply {
        match self.zone.answer(name, qtype, qclass) {
            Answer::Host(host) => match lookup(self.source.host_addr(&host)).await {
                Ok(Some(ip)) => Reply::record(name, RData::A(A(ip))),
                Ok(None) => Reply::exists(false),
                Err(reply) => reply,
            },
            Answer::HostNoData(host) => match lookup(self.source.host_addr(&host)).await {
                Ok(found) => Reply::exists(found.is_some()),
                Err(reply) => reply,
            },
            Answer::Ptr(ip) => match lookup(self.source.addr_host(ip)).await {
                Ok(Some(host)) => match self.zone.host_name(&host) {
                    Some(target) => Reply::record(name, RData::PTR(PTR(target))),
                    None => {
                        warn!(
                            %ip, hostname = %host,
                            "node hostname is not a single DNS label, so no PTR can point at it; \
                             rename the node (letters, digits and hyphens, at most 63)"
                        );
                        Reply::error(ResponseCode::ServFail)
                    }
                },
                Ok(None) => Reply::exists(false),
                Err(reply) => reply,
            },
            Answer::PtrNoData(ip) => match lookup(self.source.addr_host(ip)).await {
                Ok(found) => Reply::exists(found.is_some()),
                Err(reply) => reply,
            },
            Answer::NoData => Reply::exists(true),
            Answer::NxDomain => Reply::exists(false),
            Answer::Refused => Reply::error(ResponseCode::Refused),
        }
    }
}

/// Awaits a store lookup for at most [`LOOKUP_TIMEOUT`]; on timeout, the SERVFAIL to send.
async fn lookup<F: Future>(lookup: F) -> Result<F::Output, Reply> {
    tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
        .await
        .map_err(|_| {
            warn!(
                timeout = ?LOOKUP_TIMEOUT,
                "node record lookup for DNS timed out; answering SERVFAIL (is the store reachable?)"
            );
            Reply::error(ResponseCode::ServFail)
        })
}
