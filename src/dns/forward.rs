//! Forwarding names outside rackboot's zones to the upstream resolvers of `[dns] forwarders`.
//!
//! A small relay on raw messages rather than hickory-resolver: the client's query goes upstream
//! as it came (its EDNS options, DO and CD bits, its question's case) under a fresh random ID and
//! from a fresh ephemeral port, and the upstream's answer comes back as it was, with the client's
//! ID restored. A resolver library would rebuild both messages, cache answers behind the
//! upstream's back and pull in a second DNS stack; rackboot only passes questions through.
//!
//! Per upstream, in configured order: UDP, then TCP when the UDP answer is truncated; an upstream
//! that does not answer within [`UPSTREAM_TIMEOUT`], answers something else, or says SERVFAIL or
//! REFUSED is skipped. When all fail, the client gets SERVFAIL.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::{
    op::Query,
    serialize::binary::{BinDecodable, BinDecoder},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{debug, warn};

/// How long one upstream may take to answer one query (per transport).
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Queries being forwarded at once; beyond this a query gets SERVFAIL at once, so a flood of
/// outside names cannot pile up sockets and tasks without bound.
pub const MAX_IN_FLIGHT: usize = 512;

/// The upstream resolvers, tried in order.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    in_flight: Arc<Semaphore>,
}

/// Why one upstream did not give an answer to relay (logged at debug, then the next is tried).
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {UPSTREAM_TIMEOUT:?}")]
    Timeout,
    #[error("it answered {0}")]
    Failed(&'static str),
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Self {
            upstreams,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// A slot for one more forwarded query, or `None` when [`MAX_IN_FLIGHT`] are out already.
    pub fn slot(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.in_flight).try_acquire_owned().ok()
    }

    /// The first usable upstream answer to `query` (a whole DNS message as the client sent it),
    /// with the client's ID, or `None` when every upstream failed. `limit` is the most the
    /// client can take (its UDP payload size, or 65535 over TCP): a TCP answer larger than that
    /// is not relayed, the truncated UDP one is, and the client retries over TCP itself.
    pub async fn forward(&self, query: &[u8], limit: usize) -> Option<Vec<u8>> {
        let question = question_len(query)?;
        for &upstream in &self.upstreams {
            match ask(upstream, query, question, limit).await {
                Ok(mut answer) => {
                    answer[..2].copy_from_slice(&query[..2]);
                    // AA would claim rackboot is the authority for the name; it only relayed.
                    answer[2] &= !0x04;
                    return Some(answer);
                }
                Err(error) => {
                    debug!(%upstream, %error, "upstream resolver failed; trying the next")
                }
            }
        }
        warn!(
            upstreams = ?self.upstreams,
            "no upstream resolver answered a forwarded query; answering SERVFAIL \
             (check [dns] forwarders and that they are reachable)"
        );
        None
    }
}

/// One upstream: UDP, then TCP if the answer was truncated.
async fn ask(
    upstream: SocketAddr,
    query: &[u8],
    question: usize,
    limit: usize,
) -> Result<Vec<u8>, UpstreamError> {
    let id = random_id();
    let mut ours = query.to_vec();
    ours[..2].copy_from_slice(&id.to_be_bytes());

    let udp = ask_udp(upstream, &ours, question).await?;
    if udp[2] & 0x02 == 0 || limit <= udp.len() {
        return Ok(udp);
    }
    match ask_tcp(upstream, &ours, question).await {
        Ok(full) if full.len() <= limit => Ok(full),
        // Too big for the client, or TCP failed: the truncated answer tells it to retry over TCP.
        Ok(_) => Ok(udp),
        Err(error) => {
            debug!(%upstream, %error, "TCP retry of a truncated answer failed; relaying it truncated");
            Ok(udp)
        }
    }
}

async fn ask_udp(
    upstream: SocketAddr,
    query: &[u8],
    question: usize,
) -> Result<Vec<u8>, UpstreamError> {
    // A fresh socket per query: a random source port, and answers to anyone else's query
    // cannot reach it.
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let deadline = Instant::now() + UPSTREAM_TIMEOUT;
    let mut buf = vec![0u8; 65535];
    loop {
        let len = timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        // Anything that is not the answer to this question is ignored, not believed.
        if matches(query, &buf[..len], question) {
            buf.truncate(len);
            return usable(buf);
        }
    }
}

async fn ask_tcp(
    upstream: SocketAddr,
    query: &[u8],
    question: usize,
) -> Result<Vec<u8>, UpstreamError> {
    let exchange = async {
        let mut stream = TcpStream::connect(upstream).await?;
        let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await?;
        let len = stream.read_u16().await?;
        let mut answer = vec![0u8; usize::from(len)];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| UpstreamError::Timeout)??;
    if !matches(query, &answer, question) {
        return Err(UpstreamError::Failed("a message that is not the answer"));
    }
    usable(answer)
}

/// SERVFAIL and REFUSED say "ask someone else"; anything else (NXDOMAIN included) is an answer.
fn usable(answer: Vec<u8>) -> Result<Vec<u8>, UpstreamError> {
    match answer[3] & 0x0f {
        2 => Err(UpstreamError::Failed("SERVFAIL")),
        5 => Err(UpstreamError::Failed("REFUSED")),
        _ => Ok(answer),
    }
}

/// Whether `answer` is a response to `query`: same ID, QR set, and the same question
/// (compared case-insensitively, as names are).
fn matches(query: &[u8], answer: &[u8], question: usize) -> bool {
    let end = 12 + question;
    answer.len() >= end
        && answer[..2] == query[..2]
        && answer[2] & 0x80 != 0
        && answer[4..6] == query[4..6]
        && answer[12..end].eq_ignore_ascii_case(&query[12..end])
}

/// Length of the one question of `query`, after its 12-byte header; `None` when it has no
/// whole question (the responder has decoded it already, so this does not happen).
fn question_len(query: &[u8]) -> Option<usize> {
    let rest = query.get(12..)?;
    let mut decoder = BinDecoder::new(rest);
    Query::read(&mut decoder).ok()?;
    Some(decoder.index())
}

fn random_id() -> u16 {
    // getrandom failing means the kernel has no entropy source at all; a fixed ID still works,
    // it only loses spoofing resistance, which the random port keeps.
    getrandom::u32().map_or(0x5243, |r| r as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> Vec<u8> {
        let mut q = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x07Example\x03com\x00\x00\x01\x00\x01");
        q
    }

    #[test]
    fn answers_must_match_the_question() {
        let q = query();
        let len = question_len(&q).unwrap();
        assert_eq!(len, 17);
        let mut a = q.clone();
        a[2] |= 0x80;
        assert!(matches(&q, &a, len));
        // Case may differ.
        a[13] = b'e';
        assert!(matches(&q, &a, len));
        let mut wrong_id = a.clone();
        wrong_id[1] ^= 1;
        assert!(!matches(&q, &wrong_id, len));
        let mut wrong_name = a.clone();
        wrong_name[15] = b'z';
        assert!(!matches(&q, &wrong_name, len));
        let mut not_response = a.clone();
        not_response[2] &= 0x7f;
        assert!(!matches(&q, &not_response, len));
        assert!(!matches(&q, &a[..20], len));
    }

    #[test]
    fn servfail_and_refused_mean_try_the_next() {
        let mut a = query();
        a[3] = 0x82;
        assert!(usable(a.clone()).is_err());
        a[3] = 0x85;
        assert!(usable(a.clone()).is_err());
        a[3] = 0x83;
        assert!(usable(a).is_ok(), "NXDOMAIN is an answer");
    }

    #[tokio::test]
    async fn all_upstreams_failing_gives_none() {
        // A bound UDP socket that never answers: each try times out.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let forwarder = Forwarder::new(vec![silent.local_addr().unwrap()]);
        let started = std::time::Instant::now();
        assert!(forwarder.forward(&query(), 512).await.is_none());
        assert!(started.elapsed() < UPSTREAM_TIMEOUT * 2);
    }
}
