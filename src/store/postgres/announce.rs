//! What a batch announces: each change as a JSON note, all of a batch's
//! notes packed into as few `NOTIFY` payloads as PostgreSQL's 8000-byte
//! limit allows, each headed by the writing process and its batch number.
//!
//! Packed, because a storm announces a record and an address or two for
//! every exchange: one notification each cost PostgreSQL a queue entry and
//! a message, and the listener a message, a parse and a hand-over, for
//! every change. The writing appliance keeps what it announced, already in
//! memory form, until its batch comes back: it applies that at the batch's
//! place in commit order without reading its own JSON again; its siblings
//! read the notes.

use serde_json::json;

use super::rows::{mac_text, node_text};
use crate::model::{Lease, Mac, Node};

/// A note longer than this names the record instead of carrying it: with
/// its batch's header it stays under PostgreSQL's 8000 bytes.
const NOTE_MAX: usize = 7900;

/// A payload's most bytes (PostgreSQL's limit is "shorter than 8000").
const PAYLOAD_MAX: usize = 7999;

/// A change, as the writing appliance applies it when its batch comes
/// back.
pub(super) enum Held {
    Node(Box<Node>),
    Lease(Lease),
    /// Read back from its note, as a sibling would.
    Note(String),
}

/// One batch's announcements, in the order its changes were made.
#[derive(Default)]
pub(super) struct Notes {
    list: Vec<(String, Option<Held>)>,
}

impl Notes {
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// A change this appliance applies by reading its note back.
    pub(super) fn push(&mut self, note: String) {
        debug_assert!(note.len() <= NOTE_MAX, "a note over NOTE_MAX: {note}");
        self.list.push((note, None));
    }

    /// A node record written, from its JSON text (made once for the
    /// statement; a record too long to announce is announced by its MAC).
    pub(super) fn node(&mut self, node: &Node, record: &str) {
        let note = node_note_of(node.mac, record);
        let held = note
            .starts_with(r#"{"node""#)
            .then(|| Held::Node(Box::new(node.clone())));
        self.list.push((note, held));
    }

    /// A node record written, made into JSON here.
    pub(super) fn node_record(&mut self, node: &Node) {
        match node_text(node) {
            Ok(record) => self.node(node, &record),
            Err(_) => self.push(fetch_note(node.mac)),
        }
    }

    pub(super) fn lease(&mut self, lease: Lease) {
        let note = lease_note(&lease);
        self.list.push((note, Some(Held::Lease(lease))));
    }

    /// `other`'s notes after these.
    pub(super) fn append(&mut self, other: Notes) {
        self.list.extend(other.list);
    }

    /// The payloads to send, in order, each at most [`PAYLOAD_MAX`] bytes,
    /// the last marked so; and the changes as this appliance applies them
    /// when it hears that last one.
    pub(super) fn pack(self, process: u64, batch: u64) -> (Vec<String>, Vec<Held>) {
        let head = |last: bool| {
            format!(r#"{{"batch":{{"process":{process},"n":{batch},"last":{last},"notes":["#)
        };
        const TAIL: &str = "]}}";
        // "false" is the longer mark: every payload is sized for it.
        let room = PAYLOAD_MAX - head(false).len() - TAIL.len();
        let mut groups: Vec<String> = Vec::new();
        let mut group = String::new();
        let mut held = Vec::with_capacity(self.list.len());
        for (note, h) in self.list {
            if !group.is_empty() && group.len() + 1 + note.len() > room {
                groups.push(std::mem::take(&mut group));
            }
            if !group.is_empty() {
                group.push(',');
            }
            group.push_str(&note);
            held.push(h.unwrap_or(Held::Note(note)));
        }
        groups.push(group);
        let count = groups.len();
        let payloads = groups
            .into_iter()
            .enumerate()
            .map(|(i, g)| format!("{}{g}{TAIL}", head(i + 1 == count)))
            .collect();
        (payloads, held)
    }
}

/// A node's note from its record already in JSON text.
pub(super) fn node_note_of(mac: Mac, record: &str) -> String {
    if record.len() + 10 <= NOTE_MAX {
        format!(r#"{{"node":{record}}}"#)
    } else {
        fetch_note(mac)
    }
}

/// A note that names a record to read from the table.
fn fetch_note(mac: Mac) -> String {
    json!({ "fetch": mac_text(mac) }).to_string()
}

/// A lease as `[ip, mac, state, expires]`, the expiry in milliseconds (as
/// stored: any i64, where the text form has a range).
pub(super) fn lease_note(l: &Lease) -> String {
    // Written out, not through a tree of JSON values: every address an
    // exchange takes is announced. Addresses, MACs and states need no escaping.
    let mac = match l.mac {
        Some(mac) => format!(r#""{mac}""#),
        None => "null".into(),
    };
    format!(
        r#"{{"lease":["{}",{mac},"{}",{}]}}"#,
        l.ip,
        l.state.as_str(),
        l.expires.millis()
    )
}

/// How many MACs one `bumped` note carries: at most 43 bytes each (a MAC
/// and a u64), so under [`NOTE_MAX`] whatever the generations.
pub(super) const BUMPED_PER_NOTE: usize = 150;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LeaseState, Timestamp};
    use std::net::Ipv4Addr;

    fn lease(i: u32) -> Lease {
        Lease {
            ip: Ipv4Addr::from(0x0a00_0000 + i),
            mac: Some(
                format!("02:00:00:00:{:02x}:{:02x}", i >> 8, i & 0xff)
                    .parse()
                    .unwrap(),
            ),
            state: LeaseState::Bound,
            expires: Timestamp(1_700_000_000_000),
        }
    }

    #[test]
    fn a_batch_packs_into_payloads_under_the_limit_that_read_back_in_order() {
        let mut notes = Notes::default();
        for i in 0..500 {
            notes.lease(lease(i));
        }
        notes.push(fetch_note("02:00:00:00:00:09".parse().unwrap()));
        let (payloads, held) = notes.pack(u64::MAX, u64::MAX);
        assert!(payloads.len() > 1, "500 leases fit one payload?");
        assert_eq!(held.len(), 501);
        let mut read = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            assert!(p.len() <= PAYLOAD_MAX, "payload {i} is {} bytes", p.len());
            let v: serde_json::Value = serde_json::from_str(p).unwrap();
            let b = &v["batch"];
            assert_eq!(b["process"], json!(u64::MAX));
            assert_eq!(b["last"], json!(i + 1 == payloads.len()));
            read.extend(b["notes"].as_array().unwrap().iter().cloned());
        }
        assert_eq!(read.len(), 501);
        assert_eq!(
            read[0],
            serde_json::from_str::<serde_json::Value>(&lease_note(&lease(0))).unwrap()
        );
        assert_eq!(read[500]["fetch"], json!("02:00:00:00:00:09"));
        assert!(matches!(&held[0], Held::Lease(l) if *l == lease(0)));
        assert!(matches!(&held[500], Held::Note(n) if n.contains("fetch")));
    }

    #[test]
    fn a_full_bumped_note_fits_whatever_the_generations() {
        let worst: Vec<(Mac, u64)> = (0..BUMPED_PER_NOTE)
            .map(|i| (lease(i as u32).mac.unwrap(), u64::MAX))
            .collect();
        let note = json!({ "bumped": worst }).to_string();
        assert!(note.len() <= NOTE_MAX, "{} bytes", note.len());
    }

    #[test]
    fn a_note_of_the_longest_kind_fits_a_payload_alone() {
        let mut notes = Notes::default();
        notes.push(format!(r#"{{"node":"{}"}}"#, "x".repeat(NOTE_MAX - 11)));
        notes.lease(lease(1));
        let (payloads, _) = notes.pack(u64::MAX, u64::MAX);
        assert_eq!(payloads.len(), 2);
        assert!(payloads.iter().all(|p| p.len() <= PAYLOAD_MAX));
    }
}
