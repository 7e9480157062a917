//! The node records a mirror keeps, each packed into one allocation of
//! bytes: about 100 for a record as an import makes it, where a [`Node`]
//! is 344 bytes plus an allocation per string and map (a map with one
//! label alone allocates a B-tree leaf of some 540 bytes). A fleet of a
//! million records fits in memory beside its database.
//!
//! Reads unpack a copy, as they cloned one before. What every DHCP packet
//! changes (last seen, architecture) sits at a fixed place and is patched
//! in place, and the hostname and fixed address are read without unpacking.
//!
//! Layout: a fixed header (times, counters, addresses, flags, enums), then
//! the hostname, bootenv and token, the optional strings (length + 1, 0 for
//! none), the labels and params (count, then key and value each), and a
//! BMC record as JSON when there is one (rare). Lengths are LEB128.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use crate::model::{BootArch, Mac, Node, NodeOrigin, NodeState, Timestamp};

const LAST_SEEN: usize = 0;
const CREATED: usize = 8;
const EXPIRES: usize = 16;
const GENERATION: usize = 24;
const IPV4: usize = 32;
const BOOT_IPV4: usize = 36;
const FLAGS: usize = 40;
const STATE: usize = 41;
const ORIGIN: usize = 42;
const ARCH: usize = 43;
const HEADER: usize = 44;

const HAS_IPV4: u8 = 1;
const HAS_BOOT_IPV4: u8 = 2;
const PROTECTED: u8 = 4;
const HAS_BMC: u8 = 8;

/// A time that is absent.
const NO_TIME: i64 = i64::MIN;

/// Token kinds: as written, or the 32 lowercase hex digits rackboot makes,
/// kept as their 16 bytes.
const TOKEN_TEXT: u8 = 0;
const TOKEN_HEX16: u8 = 1;

/// Node records by MAC, packed, with an index by hostname (compared
/// without regard to ASCII case, as DNS does) that holds MACs only: the
/// name is read from the record itself.
#[derive(Default)]
pub struct NodeMap {
    map: HashMap<Mac, Packed>,
    by_hostname: hashbrown::HashTable<Mac>,
    hasher: hashbrown::DefaultHashBuilder,
}

struct Packed(Box<[u8]>);

/// What a search may look at in a packed record without unpacking it.
pub struct Peek<'a> {
    pub last_seen: Option<Timestamp>,
    pub created: Timestamp,
    pub bootenv_expires: Option<Timestamp>,
    pub relay_info: Option<&'a str>,
    pub uuid: Option<&'a str>,
}

impl NodeMap {
    pub fn new() -> NodeMap {
        NodeMap::default()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn contains_key(&self, mac: &Mac) -> bool {
        self.map.contains_key(mac)
    }

    /// A copy of `mac`'s record.
    pub fn get(&self, mac: &Mac) -> Option<Node> {
        self.map.get(mac).map(|p| p.unpack(*mac))
    }

    /// Puts `node` in, in place of the record of its MAC.
    pub fn insert(&mut self, node: &Node) {
        self.unindex(&node.mac);
        self.map.insert(node.mac, Packed::pack(node));
        let (map, hasher) = (&self.map, &self.hasher);
        let rehash = |m: &Mac| map.get(m).map_or(0, |p| host_hash(hasher, p.hostname()));
        self.by_hostname
            .insert_unique(host_hash(hasher, &node.hostname), node.mac, rehash);
    }

    pub fn remove(&mut self, mac: &Mac) -> Option<Node> {
        self.unindex(mac);
        let node = self.map.remove(mac).map(|p| p.unpack(*mac));
        super::sparse::shrink(&mut self.map);
        let (map, hasher) = (&self.map, &self.hasher);
        super::sparse::shrink_table(&mut self.by_hostname, |m| {
            map.get(m).map_or(0, |p| host_hash(hasher, p.hostname()))
        });
        node
    }

    /// The MAC whose record is called `hostname` (ASCII case aside). Two
    /// records share a name only for a moment, while a sibling appliance's
    /// swap of names arrives one record at a time: either is given then.
    pub fn by_hostname(&self, hostname: &str) -> Option<Mac> {
        let hash = host_hash(&self.hasher, hostname);
        let named = |m: &Mac| {
            self.map
                .get(m)
                .is_some_and(|p| p.hostname().eq_ignore_ascii_case(hostname))
        };
        self.by_hostname.find(hash, named).copied()
    }

    /// Takes `mac` out of the hostname index (while its record still
    /// says under which name it is there).
    fn unindex(&mut self, mac: &Mac) {
        let Some(p) = self.map.get(mac) else {
            return;
        };
        let hash = host_hash(&self.hasher, p.hostname());
        if let Ok(entry) = self.by_hostname.find_entry(hash, |m| m == mac) {
            entry.remove();
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &Mac> {
        self.map.keys()
    }

    /// A copy of every record, in no order.
    pub fn values(&self) -> impl Iterator<Item = Node> + '_ {
        self.map.iter().map(|(mac, p)| p.unpack(*mac))
    }

    /// Every record's MAC, hostname and fixed address, read in place.
    pub fn names(&self) -> impl Iterator<Item = (&Mac, &str, Option<Ipv4Addr>)> {
        self.map
            .iter()
            .map(|(mac, p)| (mac, p.hostname(), p.ipv4()))
    }

    /// A copy of each record `maybe` lets through, given a look at it in
    /// place: a search for a few records (by switch port, by board UUID)
    /// unpacks those, not the fleet.
    pub fn values_where<'a>(
        &'a self,
        maybe: impl Fn(&Peek<'_>) -> bool + 'a,
    ) -> impl Iterator<Item = Node> + 'a {
        self.map
            .iter()
            .filter(move |(_, p)| maybe(&p.peek()))
            .map(|(mac, p)| p.unpack(*mac))
    }

    /// `mac`'s hostname, as written, without unpacking the record.
    pub fn hostname(&self, mac: &Mac) -> Option<&str> {
        self.map.get(mac).map(Packed::hostname)
    }

    /// `mac`'s fixed address (`Some(None)`: a record without one).
    pub fn ipv4(&self, mac: &Mac) -> Option<Option<Ipv4Addr>> {
        self.map.get(mac).map(Packed::ipv4)
    }

    /// Notes that `mac` was seen at `now`, announcing `arch` if it did;
    /// `None` if there is no such record, else whether its architecture
    /// changed.
    pub fn seen(&mut self, mac: &Mac, arch: Option<BootArch>, now: Timestamp) -> Option<bool> {
        let p = self.map.get_mut(mac)?;
        p.put_i64(LAST_SEEN, now.0);
        let Some(arch) = arch else {
            return Some(false);
        };
        let code = arch_code(Some(arch));
        let changed = p.0[ARCH] != code;
        p.0[ARCH] = code;
        Some(changed)
    }

    /// Changes `mac`'s record with `edit` and gives the result.
    pub fn update(&mut self, mac: &Mac, edit: impl FnOnce(&mut Node)) -> Option<Node> {
        let mut node = self.get(mac)?;
        edit(&mut node);
        node.mac = *mac;
        self.insert(&node);
        Some(node)
    }
}

impl FromIterator<Node> for NodeMap {
    fn from_iter<I: IntoIterator<Item = Node>>(iter: I) -> NodeMap {
        let mut m = NodeMap::new();
        for n in iter {
            m.insert(&n);
        }
        m
    }
}

/// A hostname's hash, ASCII case folded (no allocation for a name asked in
/// capitals): for the indexes that keep MACs and read names from records.
pub(crate) fn host_hash(hasher: &hashbrown::DefaultHashBuilder, hostname: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = hasher.build_hasher();
    for b in hostname.bytes() {
        h.write_u8(b.to_ascii_lowercase());
    }
    h.finish()
}

impl std::fmt::Debug for NodeMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeMap({} records)", self.len())
    }
}

fn arch_code(arch: Option<BootArch>) -> u8 {
    arch.and_then(|a| BootArch::ALL.iter().position(|x| *x == a))
        .map_or(0, |i| i as u8 + 1)
}

fn time(t: Option<Timestamp>) -> i64 {
    t.map_or(NO_TIME, |t| t.0)
}

impl Packed {
    fn pack(n: &Node) -> Packed {
        let mut b = Vec::with_capacity(HEADER + 96);
        b.extend_from_slice(&time(n.last_seen).to_le_bytes());
        b.extend_from_slice(&n.created.0.to_le_bytes());
        b.extend_from_slice(&time(n.bootenv_expires).to_le_bytes());
        b.extend_from_slice(&n.config_generation.to_le_bytes());
        b.extend_from_slice(&n.ipv4.map_or(0, u32::from).to_le_bytes());
        b.extend_from_slice(&n.boot_ipv4.map_or(0, u32::from).to_le_bytes());
        let flags = [
            (n.ipv4.is_some(), HAS_IPV4),
            (n.boot_ipv4.is_some(), HAS_BOOT_IPV4),
            (n.protected, PROTECTED),
            (n.bmc.is_some(), HAS_BMC),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |f, (_, bit)| f | bit);
        b.push(flags);
        let state = NodeState::ALL.iter().position(|s| *s == n.state);
        b.push(state.unwrap_or(0) as u8);
        b.push(match n.origin {
            NodeOrigin::Admin => 0,
            NodeOrigin::Discovered => 1,
        });
        b.push(arch_code(n.arch));
        debug_assert_eq!(b.len(), HEADER);
        let mut w = Writer(b);
        w.str(&n.hostname);
        w.str(&n.bootenv);
        match hex16(&n.token) {
            Some(bytes) => {
                w.0.push(TOKEN_HEX16);
                w.0.extend_from_slice(&bytes);
            }
            None => {
                w.0.push(TOKEN_TEXT);
                w.str(&n.token);
            }
        }
        for s in [
            &n.next_bootenv,
            &n.booted_bootenv,
            &n.loader,
            &n.state_reason,
            &n.relay_info,
            &n.uuid,
        ] {
            w.opt(s.as_deref());
        }
        w.map(&n.labels);
        w.map(&n.params);
        if let Some(bmc) = &n.bmc {
            // Serializing plain strings and enums cannot fail.
            let json = serde_json::to_vec(bmc).unwrap_or_default();
            w.varint(json.len());
            w.0.extend_from_slice(&json);
        }
        Packed(w.0.into_boxed_slice())
    }

    fn unpack(&self, mac: Mac) -> Node {
        let b = &self.0;
        let flags = b[FLAGS];
        let some_time = |at| Some(Timestamp(self.i64(at))).filter(|t| t.0 != NO_TIME);
        let addr = |at, bit| (flags & bit != 0).then(|| Ipv4Addr::from(self.u32(at)));
        let mut r = Reader { b, at: HEADER };
        let hostname = r.str().to_string();
        let bootenv = r.str().to_string();
        let token = match r.byte() {
            TOKEN_HEX16 => crate::nodes::hex(r.take(16)),
            _ => r.str().to_string(),
        };
        let mut opt = || r.opt().map(str::to_string);
        let (next_bootenv, booted_bootenv, loader) = (opt(), opt(), opt());
        let (state_reason, relay_info, uuid) = (opt(), opt(), opt());
        let labels = r.map();
        let params = r.map();
        let bmc = if flags & HAS_BMC != 0 {
            let len = r.varint();
            serde_json::from_slice(r.take(len)).ok().map(Box::new)
        } else {
            None
        };
        Node {
            mac,
            hostname,
            ipv4: addr(IPV4, HAS_IPV4),
            labels,
            params,
            bootenv,
            next_bootenv,
            bootenv_expires: some_time(EXPIRES),
            booted_bootenv,
            loader,
            protected: flags & PROTECTED != 0,
            state: NodeState::ALL
                .get(usize::from(b[STATE]))
                .copied()
                .unwrap_or(NodeState::Discovered),
            state_reason,
            relay_info,
            uuid,
            boot_ipv4: addr(BOOT_IPV4, HAS_BOOT_IPV4),
            arch: usize::from(b[ARCH])
                .checked_sub(1)
                .and_then(|i| BootArch::ALL.get(i).copied()),
            last_seen: some_time(LAST_SEEN),
            config_generation: self.i64(GENERATION) as u64,
            token,
            created: Timestamp(self.i64(CREATED)),
            origin: if b[ORIGIN] == 1 {
                NodeOrigin::Discovered
            } else {
                NodeOrigin::Admin
            },
            bmc,
        }
    }

    fn peek(&self) -> Peek<'_> {
        let some_time = |at| Some(Timestamp(self.i64(at))).filter(|t| t.0 != NO_TIME);
        let mut r = Reader {
            b: &self.0,
            at: HEADER,
        };
        r.str(); // hostname
        r.str(); // bootenv
        match r.byte() {
            TOKEN_HEX16 => {
                r.take(16);
            }
            _ => {
                r.str();
            }
        }
        for _ in 0..4 {
            r.opt(); // next_bootenv, booted_bootenv, loader, state_reason
        }
        Peek {
            last_seen: some_time(LAST_SEEN),
            created: Timestamp(self.i64(CREATED)),
            bootenv_expires: some_time(EXPIRES),
            relay_info: r.opt(),
            uuid: r.opt(),
        }
    }

    fn hostname(&self) -> &str {
        Reader {
            b: &self.0,
            at: HEADER,
        }
        .str()
    }

    fn ipv4(&self) -> Option<Ipv4Addr> {
        (self.0[FLAGS] & HAS_IPV4 != 0).then(|| Ipv4Addr::from(self.u32(IPV4)))
    }

    fn i64(&self, at: usize) -> i64 {
        let mut x = [0; 8];
        x.copy_from_slice(&self.0[at..at + 8]);
        i64::from_le_bytes(x)
    }

    fn u32(&self, at: usize) -> u32 {
        let mut x = [0; 4];
        x.copy_from_slice(&self.0[at..at + 4]);
        u32::from_le_bytes(x)
    }

    fn put_i64(&mut self, at: usize, v: i64) {
        self.0[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
}

/// The 16 bytes of a token of 32 lowercase hex digits.
fn hex16(token: &str) -> Option<[u8; 16]> {
    let t = token.as_bytes();
    if t.len() != 32 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; 16];
    for (i, pair) in t.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut v: usize) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn str(&mut self, s: &str) {
        self.varint(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt(&mut self, s: Option<&str>) {
        match s {
            None => self.0.push(0),
            Some(s) => {
                self.varint(s.len() + 1);
                self.0.extend_from_slice(s.as_bytes());
            }
        }
    }

    fn map(&mut self, m: &BTreeMap<String, String>) {
        self.varint(m.len());
        for (k, v) in m {
            self.str(k);
            self.str(v);
        }
    }
}

/// Reads what [`Writer`] wrote (so every slice is in bounds and every
/// string UTF-8: the bytes never come from outside).
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        let x = self.b[self.at];
        self.at += 1;
        x
    }

    fn varint(&mut self) -> usize {
        let mut v = 0usize;
        let mut shift = 0;
        loop {
            let x = self.byte();
            v |= usize::from(x & 0x7f) << shift;
            if x & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }

    fn take(&mut self, len: usize) -> &'a [u8] {
        let s = &self.b[self.at..self.at + len];
        self.at += len;
        s
    }

    fn text(&mut self, len: usize) -> &'a str {
        std::str::from_utf8(self.take(len)).unwrap_or_default()
    }

    fn str(&mut self) -> &'a str {
        let len = self.varint();
        self.text(len)
    }

    fn opt(&mut self) -> Option<&'a str> {
        let len = self.varint().checked_sub(1)?;
        Some(self.text(len))
    }

    fn map(&mut self) -> BTreeMap<String, String> {
        (0..self.varint())
            .map(|_| (self.str().to_string(), self.str().to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BmcRecord, Driver};

    fn mac(n: u8) -> Mac {
        Mac::new([0x52, 0x54, 0, 0, 0, n])
    }

    /// A record with every field set, none at its default.
    fn full() -> Node {
        let mut n = Node::discovered(mac(1), "install", crate::nodes::new_token(), Timestamp(7));
        n.hostname = "Rack1-Node07".into();
        n.ipv4 = Some("10.0.3.7".parse().unwrap());
        n.labels.insert("rack".into(), "r1".into());
        n.labels.insert("role".into(), "builder é".into());
        n.params.insert("disk".into(), "/dev/sda".into());
        n.next_bootenv = Some("rescue".into());
        n.bootenv_expires = Some(Timestamp(1_700_000_000_000));
        n.booted_bootenv = Some("install".into());
        n.loader = Some("grub".into());
        n.protected = true;
        n.state = NodeState::Unreachable;
        n.state_reason = Some("x".repeat(300));
        n.relay_info = Some("circuit-id=Gi1/0/7".into());
        n.uuid = Some("4c4c4544-0042".into());
        n.boot_ipv4 = Some("10.0.9.9".parse().unwrap());
        n.arch = Some(BootArch::Arm64Efi);
        n.last_seen = Some(Timestamp(-5));
        n.config_generation = u64::MAX - 1;
        n.origin = NodeOrigin::Admin;
        n.bmc = Some(Box::new(BmcRecord {
            driver: Driver::Redfish,
            address: "https://10.1.0.7".into(),
            system: Some("/redfish/v1/Systems/1".into()),
            username: Some("admin".into()),
            password_secret: Some("bmc-r1".into()),
            insecure: true,
        }));
        n
    }

    #[test]
    fn a_record_comes_out_as_it_went_in_with_every_field_set_or_none() {
        let mut bare = Node::discovered(mac(2), "", "tok".into(), Timestamp(0));
        bare.last_seen = None;
        bare.origin = NodeOrigin::Admin;
        for n in [full(), bare] {
            let m: NodeMap = [n.clone()].into_iter().collect();
            assert_eq!(m.get(&n.mac).as_ref(), Some(&n));
            assert_eq!(m.hostname(&n.mac), Some(n.hostname.as_str()));
            assert_eq!(m.ipv4(&n.mac), Some(n.ipv4));
        }
        // Every state and architecture has its code.
        for state in NodeState::ALL {
            for arch in BootArch::ALL.map(Some).into_iter().chain([None]) {
                let mut n = full();
                (n.state, n.arch) = (state, arch);
                assert_eq!(Packed::pack(&n).unpack(n.mac), n);
            }
        }
    }

    #[test]
    fn an_imported_record_packs_into_about_a_hundred_bytes() {
        let mut n = Node::discovered(mac(3), "local", crate::nodes::new_token(), Timestamp(0));
        n.hostname = "n0001234".into();
        n.labels.insert("rack".into(), "r030".into());
        let packed = Packed::pack(&n);
        assert!(packed.0.len() <= 100, "{} bytes", packed.0.len());
        // A token rackboot did not make is kept as written.
        n.token = "ABCDEF0123456789abcdef0123456789".into();
        assert_eq!(Packed::pack(&n).unpack(n.mac).token, n.token);
    }

    #[test]
    fn a_peek_reads_what_a_search_needs_in_place() {
        let n = full();
        let m: NodeMap = [n.clone()].into_iter().collect();
        let by_uuid = |u: &'static str| move |p: &Peek<'_>| p.uuid == Some(u);
        assert_eq!(m.values_where(by_uuid("4c4c4544-0042")).count(), 1);
        assert_eq!(m.values_where(by_uuid("other")).count(), 0);
        let p = m.map[&n.mac].peek();
        assert_eq!(p.relay_info, n.relay_info.as_deref());
        assert_eq!(
            (p.last_seen, p.created, p.bootenv_expires),
            (n.last_seen, n.created, n.bootenv_expires)
        );
    }

    #[test]
    fn being_seen_patches_the_time_and_architecture_in_place() {
        let mut m: NodeMap = [full()].into_iter().collect();
        assert_eq!(
            m.seen(&mac(1), Some(BootArch::Arm64Efi), Timestamp(99)),
            Some(false)
        );
        assert_eq!(
            m.seen(&mac(1), Some(BootArch::Bios), Timestamp(100)),
            Some(true)
        );
        assert_eq!(m.seen(&mac(1), None, Timestamp(101)), Some(false));
        let n = m.get(&mac(1)).unwrap();
        assert_eq!(
            (n.last_seen, n.arch),
            (Some(Timestamp(101)), Some(BootArch::Bios))
        );
        assert_eq!(m.seen(&mac(9), None, Timestamp(1)), None);
        let after = m.update(&mac(1), |n| n.state = NodeState::Booting).unwrap();
        assert_eq!(m.get(&mac(1)), Some(after));
    }

    #[test]
    fn the_hostname_index_follows_renames_and_removals_in_any_case() {
        let mut m = NodeMap::new();
        let named = |n: u8, host: &str| {
            let mut x = Node::discovered(mac(n), "local", "t".into(), Timestamp(0));
            x.hostname = host.into();
            x
        };
        for i in 0..200 {
            m.insert(&named(i, &format!("Node-{i}")));
        }
        assert_eq!(m.by_hostname("node-7"), Some(mac(7)));
        assert_eq!(m.by_hostname("NODE-199"), Some(mac(199)));
        m.insert(&named(7, "spare"));
        assert_eq!(m.by_hostname("node-7"), None);
        assert_eq!(m.by_hostname("Spare"), Some(mac(7)));
        m.update(&mac(8), |n| n.hostname = "node-7".into());
        assert_eq!(m.by_hostname("node-7"), Some(mac(8)));
        assert_eq!(m.by_hostname("node-8"), None);
        m.remove(&mac(8));
        assert_eq!(m.by_hostname("node-7"), None);
        assert_eq!(m.by_hostname("nothing"), None);
        assert_eq!(m.len(), 199);
    }
}
