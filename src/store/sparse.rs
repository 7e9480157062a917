//! Memory given back when a map empties: after a flood of made-up MACs is
//! reaped, the per-node maps (records, names, due times, leases held) would
//! otherwise keep the room of the flood for the life of the process.
//!
//! A map is shrunk once it holds under a quarter of what it has room for,
//! to twice what it holds: three quarters of it must be removed before the
//! next shrink, so the rehash is paid for by the removals (amortised O(1)),
//! and a map that shrinks still has room to grow back a little for free.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// Maps with room for fewer entries than this are left alone.
const SMALL: usize = 1024;

fn sparse(len: usize, capacity: usize) -> bool {
    capacity > SMALL && len < capacity / 4
}

/// Shrinks `map` if it is sparse (see the module docs). (Its capacity is
/// what it can still take without growing: removals that leave tombstones
/// lower it, so "sparse" means room for four times what it holds.)
pub fn shrink<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    if sparse(map.len(), map.capacity()) {
        map.shrink_to(map.len() * 2);
    }
}

/// [`shrink`] for a hashbrown table, whose entries' hashes `hash` gives.
pub fn shrink_table<T>(table: &mut hashbrown::HashTable<T>, hash: impl Fn(&T) -> u64) {
    if sparse(table.len(), table.capacity()) {
        table.shrink_to(table.len() * 2, hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_emptied_by_three_quarters_gives_its_room_back() {
        let mut m: HashMap<u32, u64> = (0..100_000).map(|i| (i, 0)).collect();
        let full = m.capacity();
        for i in 0..99_000 {
            m.remove(&i);
            shrink(&mut m);
        }
        assert!(m.capacity() < full / 8, "{} of {full}", m.capacity());
        assert_eq!(m.len(), 1000);
        // Small maps are left alone.
        let mut small: HashMap<u32, u64> = (0..500).map(|i| (i, 0)).collect();
        small.retain(|k, _| *k < 10);
        let room = small.capacity();
        shrink(&mut small);
        assert_eq!(small.capacity(), room);
    }
}
