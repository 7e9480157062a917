//! One DNS message in, one response out: decoding, the checks every query passes, the records of
//! each answer, and encoding. No I/O: both transports call [`Responder::respond`] and send what
//! it wrote, or hand the query to the forwarder when it says so.
//!
//! Records come from the name table (memory, no store call), so a question is answered without
//! awaiting anything. Each message is counted once, by question type and result, with one atomic
//! add ([`Metrics::dns_query`]).

use std::sync::Arc;

use hickory_proto::{
    op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, NS, PTR, SOA},
    },
    serialize::binary::{BinEncodable, BinEncoder},
};
use tracing::{debug, warn};

use super::metrics::{DnsResult, DnsType};
use super::zone::{Answer, Apex, Zone};
use crate::metrics::Metrics;
use crate::model::Timestamp;
use crate::names::NameTable;

/// Time to live of every positive answer, in seconds. Short because a node's address and
/// hostname follow its lease and its record, which admins and DHCP change at any time.
pub const ANSWER_TTL: u32 = 60;

/// How long resolvers may cache "no such name" (RFC 2308: the SOA MINIMUM, and the TTL of the
/// SOA in a negative answer). Shorter than [`ANSWER_TTL`]: a node that is asked for before its
/// first lease should resolve soon after it gets one.
pub const NEGATIVE_TTL: u32 = 10;

/// SOA timers for a secondary, in seconds. rackboot offers no zone transfers, so nothing
/// refreshes from these; they are conventional values for a small, fast-changing zone.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86400;

/// The UDP payload rackboot advertises in EDNS (RFC 9715's recommendation: no fragmentation).
pub const EDNS_PAYLOAD: u16 = 1232;

/// How a transport carries the response, which decides its size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with a message, once decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send the bytes written to `out`.
    Reply,
    /// The question is for a name outside rackboot's zones and asks for recursion: forward the
    /// message as received to the upstream resolvers.
    Forward,
    /// Send nothing: the message is a response, or too short to carry a header.
    Drop,
}

/// Decides and encodes responses for one [`Zone`] from one [`NameTable`].
pub struct Responder {
    zone: Zone,
    names: Arc<NameTable>,
    /// Whether upstream resolvers are configured: outside names with RD are forwarded, not
    /// refused.
    forwarding: bool,
    /// The NS target of every zone: the domain apex, which holds rackboot's own address.
    ns: Name,
    /// The SOA mailbox (`hostmaster.<domain>`).
    hostmaster: Name,
    metrics: Arc<Metrics>,
}

/// The decided response, before it is encoded.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authority: Vec<Record>,
}

impl Reply {
    /// An answer we do not vouch for: REFUSED, FORMERR, NOTIMP, SERVFAIL…
    fn error(code: ResponseCode) -> Self {
        Self {
            code,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
        }
    }

    fn answers(answers: Vec<Record>) -> Self {
        Self {
            code: ResponseCode::NoError,
            authoritative: true,
            answers,
            authority: Vec::new(),
        }
    }
}

impl Responder {
    pub fn new(zone: Zone, names: Arc<NameTable>, forwarding: bool, metrics: Arc<Metrics>) -> Self {
        let ns = zone.domain().clone();
        let hostmaster = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(zone.domain()))
            .unwrap_or_else(|_| zone.domain().clone());
        Self {
            zone,
            names,
            forwarding,
            ns,
            hostmaster,
            metrics,
        }
    }

    /// Decodes `request`, decides, and on [`Outcome::Reply`] leaves the encoded response in
    /// `out` (cleared first). Undecodable messages with a whole header get FORMERR.
    pub fn respond(&self, request: &[u8], transport: Transport, out: &mut Vec<u8>) -> Outcome {
        let (outcome, qtype, result) = self.respond_uncounted(request, transport, out);
        self.metrics.dns_query(qtype, result);
        outcome
    }

    /// [`Responder::respond`], also saying what to count.
    fn respond_uncounted(
        &self,
        request: &[u8],
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> (Outcome, DnsType, DnsResult) {
        out.clear();
        let message = match Message::from_vec(request) {
            Ok(message) => message,
            Err(error) => {
                debug!(%error, "undecodable DNS message");
                return (formerr(request, out), DnsType::Other, DnsResult::Malformed);
            }
        };
        let qtype = match message.queries.as_slice() {
            [query] => DnsType::of(query.query_type()),
            _ => DnsType::Other,
        };
        // Responses are never answered: that is how reflection loops start.
        if message.metadata.message_type == MessageType::Response {
            return (Outcome::Drop, qtype, DnsResult::Malformed);
        }
        let limit = match (transport, &message.edns) {
            (Transport::Tcp, _) => u16::MAX,
            (Transport::Udp, None) => 512,
            (Transport::Udp, Some(edns)) => edns.max_payload().clamp(512, EDNS_PAYLOAD),
        };
        let reply = match self.decide(&message) {
            Some(reply) => reply,
            None => return (Outcome::Forward, qtype, DnsResult::Forwarded),
        };
        let mut result = match reply.code {
            ResponseCode::NoError if reply.answers.is_empty() => DnsResult::NoData,
            ResponseCode::NoError => DnsResult::Answered,
            ResponseCode::NXDomain => DnsResult::NxDomain,
            ResponseCode::Refused => DnsResult::Refused,
            ResponseCode::FormErr => DnsResult::Malformed,
            ResponseCode::NotImp | ResponseCode::BADVERS => DnsResult::Unsupported,
            _ => DnsResult::ServFail,
        };

        let mut metadata = Metadata::response_from_request(&message.metadata);
        metadata.authoritative = reply.authoritative;
        metadata.response_code = reply.code;
        let mut response =
            Message::new(message.metadata.id, MessageType::Response, metadata.op_code);
        response.metadata = metadata;
        // The question is echoed only when there is one: a FORMERR for many questions would
        // otherwise send them all back, however large (RFC 9619 lets it carry none).
        if message.queries.len() == 1 {
            response.queries = message.queries;
        }
        response.answers = reply.answers;
        response.authorities = reply.authority;
        // RFC 6891 §7: a query with an OPT record gets one back; the encoder puts BADVERS's high
        // bits in it.
        if message.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD).set_version(0);
            response.set_edns(edns);
        }
        let mut encoder = BinEncoder::new(out);
        // Records that do not fit are left out and TC set (the encoder does both).
        encoder.set_max_size(limit);
        if let Err(error) = response.emit(&mut encoder) {
            warn!(%error, "could not encode a DNS response; answering SERVFAIL");
            result = DnsResult::ServFail;
            out.clear();
            let mut failed = Message::new(
                response.metadata.id,
                MessageType::Response,
                metadata.op_code,
            );
            failed.metadata = metadata;
            failed.metadata.response_code = ResponseCode::ServFail;
            failed.metadata.authoritative = false;
            failed.queries = response.queries;
            let mut encoder = BinEncoder::new(out);
            if failed.emit(&mut encoder).is_err() {
                return (Outcome::Drop, qtype, result);
            }
        }
        // The encoder keeps records within `limit` but not every part of a message (a question
        // is written whole); a reply that still does not fit is dropped rather than sent over
        // the limit, which a UDP client could not take.
        if out.len() > usize::from(limit) {
            warn!(
                bytes = out.len(),
                limit, "a DNS reply does not fit the transport; not sent"
            );
            out.clear();
            return (Outcome::Drop, qtype, DnsResult::ServFail);
        }
        (Outcome::Reply, qtype, result)
    }

    /// The reply, or `None` when the message should be forwarded.
    fn decide(&self, message: &Message) -> Option<Reply> {
        // RFC 6891 §6.1.3: we implement EDNS version 0 only.
        if message.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
            return Some(Reply::error(ResponseCode::BADVERS));
        }
        // NOTIFY, UPDATE, IQUERY, STATUS: nothing here can be changed or notified.
        if message.metadata.op_code != OpCode::Query {
            return Some(Reply::error(ResponseCode::NotImp));
        }
        // RFC 9619: a query carries exactly one question.
        let [query] = message.queries.as_slice() else {
            return Some(Reply::error(ResponseCode::FormErr));
        };
        let (name, qtype) = (query.name(), query.query_type());
        let answer = self.zone.answer(name, qtype, query.query_class());
        if answer == Answer::Elsewhere && self.forwarding && message.metadata.recursion_desired {
            return None;
        }
        let reply = self.resolve(name, qtype, answer, Timestamp::now());
        debug!(
            %name, %qtype,
            code = %reply.code,
            answers = reply.answers.len(),
            "answered DNS question"
        );
        Some(reply)
    }

    fn resolve(&self, name: &Name, qtype: RecordType, answer: Answer, now: Timestamp) -> Reply {
        let names = &self.names;
        match answer {
            Answer::Host(host) => match names.host_addr(&host, now) {
                Some(ip) => Reply::answers(vec![record(name, RData::A(A(ip)))]),
                None => self.negative(names.has_host(&host), Apex::Domain),
            },
            Answer::HostNoData(host) => self.negative(names.has_host(&host), Apex::Domain),
            Answer::Ptr(ip, apex) => match names.addr_host(ip, now) {
                Some(host) => match self.zone.host_name(&host) {
                    Some(target) => Reply::answers(vec![record(name, RData::PTR(PTR(target)))]),
                    None => {
                        warn!(
                            %ip, hostname = %host,
                            "node hostname is not a single DNS label, so no PTR can point at it; \
                             rename the node (letters, digits and hyphens, at most 63)"
                        );
                        Reply::error(ResponseCode::ServFail)
                    }
                },
                None => self.negative(false, apex),
            },
            Answer::PtrNoData(ip, apex) => self.negative(names.addr_host(ip, now).is_some(), apex),
            Answer::Apex(apex) => self.apex(name, qtype, apex),
            Answer::NoData(apex) => self.negative(true, apex),
            Answer::NxDomain(apex) => self.negative(false, apex),
            Answer::Elsewhere | Answer::Refused => Reply::error(ResponseCode::Refused),
        }
    }

    /// What the apex of a zone holds: SOA, NS, and for the domain rackboot's own address.
    fn apex(&self, name: &Name, qtype: RecordType, apex: Apex) -> Reply {
        let any = qtype == RecordType::ANY;
        let mut answers = Vec::new();
        if any || qtype == RecordType::SOA {
            answers.push(self.soa(apex, ANSWER_TTL));
        }
        if any || qtype == RecordType::NS {
            answers.push(record(name, RData::NS(NS(self.ns.clone()))));
        }
        if (any || qtype == RecordType::A) && apex == Apex::Domain {
            answers.push(record(name, RData::A(A(self.zone.server()))));
        }
        if answers.is_empty() {
            return self.negative(true, apex);
        }
        Reply::answers(answers)
    }

    /// NODATA (the name exists) or NXDOMAIN, with the zone's SOA in the authority section so
    /// resolvers cache it for [`NEGATIVE_TTL`] (RFC 2308 §3).
    fn negative(&self, exists: bool, apex: Apex) -> Reply {
        Reply {
            code: if exists {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            },
            authoritative: true,
            answers: Vec::new(),
            authority: vec![self.soa(apex, NEGATIVE_TTL)],
        }
    }

    fn soa(&self, apex: Apex, ttl: u32) -> Record {
        let soa = SOA::new(
            self.ns.clone(),
            self.hostmaster.clone(),
            self.names.serial(),
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            NEGATIVE_TTL,
        );
        Record::from_rdata(self.zone.apex_name(apex), ttl, RData::SOA(soa))
    }

    /// A response to `request` that only says `code` (SERVFAIL when forwarding failed). The
    /// question is echoed when it decodes.
    pub fn error_response(request: &[u8], code: ResponseCode, out: &mut Vec<u8>) -> Outcome {
        out.clear();
        let Ok(message) = Message::from_vec(request) else {
            return formerr(request, out);
        };
        let mut metadata = Metadata::response_from_request(&message.metadata);
        metadata.response_code = code;
        let mut response = Message::new(metadata.id, MessageType::Response, metadata.op_code);
        response.metadata = metadata;
        if message.queries.len() == 1 {
            response.queries = message.queries;
        }
        if message.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD).set_version(0);
            response.set_edns(edns);
        }
        match response.emit(&mut BinEncoder::new(out)) {
            Ok(()) => Outcome::Reply,
            Err(_) => Outcome::Drop,
        }
    }
}

fn record(name: &Name, rdata: RData) -> Record {
    Record::from_rdata(name.clone(), ANSWER_TTL, rdata)
}

/// FORMERR for a message that did not decode, built from its header alone (ID and opcode
/// echoed, no sections); nothing for one too short to have a header, or that is a response.
fn formerr(request: &[u8], out: &mut Vec<u8>) -> Outcome {
    let Some(header) = request.get(..12) else {
        return Outcome::Drop;
    };
    if header[2] & 0x80 != 0 {
        return Outcome::Drop;
    }
    out.clear();
    out.extend_from_slice(&header[..2]);
    // QR set, opcode and RD kept; AA, TC cleared. RA clear, RCODE 1 (FORMERR).
    out.push(0x80 | (header[2] & 0x79));
    out.push(0x01);
    out.extend_from_slice(&[0; 8]);
    Outcome::Reply
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::Query;
    use ipnet::Ipv4Net;

    use super::*;
    use crate::model::{Lease, LeaseState, Mac};

    fn responder(forwarding: bool) -> Responder {
        responder_counting(forwarding, Arc::new(Metrics::new(&[])))
    }

    fn responder_counting(forwarding: bool, metrics: Arc<Metrics>) -> Responder {
        let names = Arc::new(NameTable::new());
        names.set_node(
            Mac::new([2, 0, 0, 0, 0, 1]),
            "node1",
            Some(Ipv4Addr::new(10, 0, 0, 11)),
        );
        names.set_node(Mac::new([2, 0, 0, 0, 0, 2]), "relayed", None);
        names.set_lease(&Lease {
            ip: Ipv4Addr::new(10, 1, 2, 3),
            mac: Some(Mac::new([2, 0, 0, 0, 0, 2])),
            state: LeaseState::Bound,
            expires: Timestamp(i64::MAX),
        });
        let zone = Zone::new(
            Name::from_ascii("rack.internal.").unwrap(),
            &[
                "10.0.0.0/24".parse::<Ipv4Net>().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
            ],
            Ipv4Addr::new(10, 0, 0, 1),
        )
        .unwrap();
        Responder::new(zone, names, forwarding, metrics)
    }

    fn ask(r: &Responder, name: &str, qtype: RecordType, rd: bool) -> (Outcome, Option<Message>) {
        let mut query = Message::query();
        query.metadata.id = 0x4242;
        query.metadata.recursion_desired = rd;
        query.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        let bytes = query.to_vec().unwrap();
        let mut out = Vec::new();
        let outcome = r.respond(&bytes, Transport::Udp, &mut out);
        let response = (outcome == Outcome::Reply).then(|| Message::from_vec(&out).unwrap());
        (outcome, response)
    }

    fn reply(r: &Responder, name: &str, qtype: RecordType) -> Message {
        let response = ask(r, name, qtype, true).1.expect("a reply");
        assert_eq!(response.metadata.id, 0x4242);
        assert_eq!(response.metadata.message_type, MessageType::Response);
        response
    }

    #[test]
    fn answers_from_the_table() {
        let r = responder(false);
        let m = reply(&r, "node1.rack.internal.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(10, 0, 0, 11))));

        // PTR in a relayed subnet's reverse zone, from a lease.
        let m = reply(&r, "3.2.1.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(
            m.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("relayed.rack.internal.").unwrap()))
        );
    }

    #[test]
    fn negative_answers_carry_the_zone_soa() {
        let r = responder(false);
        for (name, qtype, code, apex) in [
            (
                "nosuch.rack.internal.",
                RecordType::A,
                ResponseCode::NXDomain,
                "rack.internal.",
            ),
            (
                "node1.rack.internal.",
                RecordType::AAAA,
                ResponseCode::NoError,
                "rack.internal.",
            ),
            (
                "9.9.1.10.in-addr.arpa.",
                RecordType::PTR,
                ResponseCode::NXDomain,
                "1.10.in-addr.arpa.",
            ),
            (
                "9.0.0.10.in-addr.arpa.",
                RecordType::PTR,
                ResponseCode::NXDomain,
                "0.0.10.in-addr.arpa.",
            ),
            (
                "rack.internal.",
                RecordType::MX,
                ResponseCode::NoError,
                "rack.internal.",
            ),
        ] {
            let m = reply(&r, name, qtype);
            assert_eq!(m.metadata.response_code, code, "{name} {qtype}");
            assert!(m.answers.is_empty(), "{name} {qtype}");
            assert_eq!(m.authorities.len(), 1, "{name} {qtype}");
            let soa = &m.authorities[0];
            assert_eq!(soa.name.to_ascii(), apex, "{name} {qtype}");
            assert_eq!(soa.ttl, NEGATIVE_TTL);
            let RData::SOA(soa) = &soa.data else {
                panic!("{name} {qtype}: not an SOA: {soa:?}");
            };
            assert_eq!(soa.minimum, NEGATIVE_TTL);
        }
    }

    #[test]
    fn apexes_hold_soa_and_ns() {
        let r = responder(false);
        let m = reply(&r, "rack.internal.", RecordType::SOA);
        assert!(matches!(m.answers[0].data, RData::SOA(_)));
        let m = reply(&r, "1.10.in-addr.arpa.", RecordType::NS);
        assert_eq!(
            m.answers[0].data,
            RData::NS(NS(Name::from_ascii("rack.internal.").unwrap()))
        );
        let m = reply(&r, "rack.internal.", RecordType::A);
        assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(10, 0, 0, 1))));
        let m = reply(&r, "rack.internal.", RecordType::ANY);
        assert_eq!(m.answers.len(), 3);
    }

    #[test]
    fn outside_names_are_forwarded_only_when_allowed() {
        let refused = |r: &Responder, rd| {
            let (outcome, m) = ask(r, "example.com.", RecordType::A, rd);
            assert_eq!(outcome, Outcome::Reply);
            let m = m.unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::Refused);
            assert!(!m.metadata.authoritative);
            assert!(!m.metadata.recursion_available);
        };
        refused(&responder(false), true);
        refused(&responder(false), false);
        // Without RD the client asks us as an authority: we are not one for example.com.
        refused(&responder(true), false);
        assert_eq!(
            ask(&responder(true), "example.com.", RecordType::A, true).0,
            Outcome::Forward
        );
        // Our own names are never forwarded.
        assert_eq!(
            ask(
                &responder(true),
                "nosuch.rack.internal.",
                RecordType::A,
                true
            )
            .0,
            Outcome::Reply
        );
    }

    #[test]
    fn undecodable_and_response_messages() {
        let r = responder(false);
        let mut out = Vec::new();
        assert_eq!(r.respond(&[1, 2], Transport::Udp, &mut out), Outcome::Drop);
        let truncated = [0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, b'n'];
        assert_eq!(
            r.respond(&truncated, Transport::Udp, &mut out),
            Outcome::Reply
        );
        assert_eq!(out[..4], [0x12, 0x34, 0x81, 0x01]);
        let mut response = truncated;
        response[2] |= 0x80;
        assert_eq!(
            r.respond(&response, Transport::Udp, &mut out),
            Outcome::Drop
        );
    }

    #[test]
    fn many_questions_get_a_formerr_that_echoes_none() {
        let r = responder(false);
        let mut query = Message::query();
        query.metadata.id = 0x0f0f;
        for i in 0..13 {
            let long = format!("{}.{i}.rack.internal.", "a".repeat(60));
            query.add_query(Query::query(
                Name::from_ascii(&long).unwrap(),
                RecordType::A,
            ));
        }
        let bytes = query.to_vec().unwrap();
        assert!(
            bytes.len() > 512,
            "the question section alone is {} bytes",
            bytes.len()
        );
        for transport in [Transport::Udp, Transport::Tcp] {
            let mut out = Vec::new();
            assert_eq!(r.respond(&bytes, transport, &mut out), Outcome::Reply);
            let response = Message::from_vec(&out).unwrap();
            assert_eq!(response.metadata.id, 0x0f0f);
            assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
            assert!(response.queries.is_empty(), "{response:?}");
            assert!(out.len() <= 512, "{} bytes", out.len());
        }
    }

    #[test]
    fn counts_each_message_by_type_and_result() {
        let metrics = Arc::new(Metrics::new(&[]));
        let r = responder_counting(true, Arc::clone(&metrics));
        let plain = responder_counting(false, Arc::clone(&metrics));
        ask(&r, "node1.rack.internal.", RecordType::A, true);
        ask(&r, "node1.rack.internal.", RecordType::A, true);
        ask(&r, "3.2.1.10.in-addr.arpa.", RecordType::PTR, true);
        ask(&r, "nosuch.rack.internal.", RecordType::A, true);
        ask(&r, "node1.rack.internal.", RecordType::AAAA, true);
        ask(&r, "example.com.", RecordType::MX, true);
        ask(&plain, "example.com.", RecordType::A, true);
        ask(&r, "example.com.", RecordType::A, false);
        let mut out = Vec::new();
        r.respond(&[1, 2], Transport::Udp, &mut out);
        let truncated = [0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, b'n'];
        r.respond(&truncated, Transport::Udp, &mut out);
        let mut notify = Message::query();
        notify.metadata.op_code = OpCode::Notify;
        notify.add_query(Query::query(
            Name::from_ascii("rack.internal.").unwrap(),
            RecordType::SOA,
        ));
        r.respond(&notify.to_vec().unwrap(), Transport::Udp, &mut out);

        use {DnsResult as R, DnsType as T};
        let want = [
            (T::A, R::Answered, 2),
            (T::Ptr, R::Answered, 1),
            (T::A, R::NxDomain, 1),
            (T::Aaaa, R::NoData, 1),
            (T::Other, R::Forwarded, 1),
            (T::A, R::Refused, 2),
            (T::Other, R::Malformed, 2),
            (T::Soa, R::Unsupported, 1),
        ];
        for &t in DnsType::ALL {
            for &result in DnsResult::ALL {
                let n = want
                    .iter()
                    .find(|w| w.0 == t && w.1 == result)
                    .map_or(0, |w| w.2);
                assert_eq!(metrics.dns_count(t, result), n, "{t:?} {result:?}");
            }
        }
    }
}
