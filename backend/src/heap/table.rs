//! [`Table`]: the heap backend's hash table of one state and key group.
//!
//! Open addressing with linear probing and backward-shift deletion. Each slot holds the whole entry
//! (hash, key, value), so a lookup that hits its home slot touches one place in memory. A
//! SwissTable (std's and hashbrown's `HashMap`) first reads a control byte array and then the slot
//! it points to: two dependent cache misses per access once a state outgrows the CPU caches, which
//! is where the time of a heap state access went (two thirds of it, measured).
//!
//! The entry type decides the slot's size: `MapSlot` (a map state's prefix and packed entries in
//! 128 bytes, `map_slot.rs`) or `Kv` (a key and a byte value in one 32-byte slot, `kv.rs`); the
//! tests use `Full` (a key and any value).
//!
//! Invariants:
//! - `slots.len()` is 0 or a power of two, and `len <= slots.len() * MAX_LOAD`; a table with more
//!   than 16 slots is at least 1/8 full after a removal (it shrinks);
//! - every full slot is reachable from its home slot (`hash & mask`) through full slots only
//!   (no tombstones: a removal shifts later entries of the probe run back);
//! - an entry's `hash()` is the table's hash of its `key()` (tables are per key group, far below
//!   2^32 slots, so 32 bits of hash pick the home slot).

#[cfg(test)]
use super::bytes::Bytes;

/// Grow when more than 7/10 of the slots are full: probe runs stay short under linear probing.
const MAX_LOAD_NUM: usize = 7;
const MAX_LOAD_DEN: usize = 10;

/// What a slot holds: an entry that knows its key and the table hash of it.
pub(super) trait TableEntry {
    fn hash(&self) -> u32;
    fn key(&self) -> &[u8];
}

/// A key and any value (the tests' entry type).
#[cfg(test)]
#[derive(Clone)]
#[repr(C, align(64))]
pub(super) struct Full<V> {
    hash: u32,
    key: Bytes,
    pub(super) value: V,
}

#[cfg(test)]
impl<V> TableEntry for Full<V> {
    fn hash(&self) -> u32 {
        self.hash
    }
    fn key(&self) -> &[u8] {
        self.key.as_slice()
    }
}

#[derive(Clone)]
pub(super) struct Table<E> {
    slots: Box<[Option<E>]>,
    len: usize,
    hasher: KeyHasher,
}

/// The tables' hash of a key. Randomly seeded: keys come from the stream, and a fixed hash would
/// let crafted keys build one long probe run (hash flooding). One seed serves every table of a
/// backend, so a key's hash, computed once, finds its slot in any state ([`Table::prefetch`]).
///
/// Keys are mostly short (a u64 key's composite key is 9 to 18 bytes): up to 16 bytes are read as
/// two overlapping words and mixed by two folded 64x64->128-bit multiplies, the mixing foldhash
/// and wyhash use. This costs about 20 instructions; `foldhash`'s `BuildHasher` path, which
/// hashes a slice through the `Hash` trait, took 85 per lookup.
#[derive(Clone, Copy)]
pub(super) struct KeyHasher {
    s0: u64,
    s1: u64,
}

/// The high and low halves of the 128-bit product, xored.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = (a as u128) * (b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

impl KeyHasher {
    pub(super) fn random() -> Self {
        use std::hash::{BuildHasher, RandomState};
        let r = RandomState::new();
        KeyHasher {
            s0: r.hash_one(0x5eed_u64) | 1,
            s1: r.hash_one(0xfeed_u64) | 1,
        }
    }

    #[inline(always)]
    pub(super) fn hash(&self, key: &[u8]) -> u32 {
        let n = key.len();
        let w8 = |at: usize| u64::from_le_bytes(key[at..at + 8].try_into().expect("8 bytes"));
        let w4 = |at: usize| u32::from_le_bytes(key[at..at + 4].try_into().expect("4 bytes"));
        let (a, b) = match n {
            0 => (0, 0),
            1..=3 => (
                (key[0] as u64) << 16 | (key[n / 2] as u64) << 8 | key[n - 1] as u64,
                0,
            ),
            4..=7 => (w4(0) as u64, w4(n - 4) as u64),
            8..=16 => (w8(0), w8(n - 8)),
            _ => {
                let mut acc = self.s1;
                let mut at = 0;
                while at + 16 < n {
                    acc = fold(w8(at) ^ self.s0, w8(at + 8) ^ acc);
                    at += 16;
                }
                // The last 16 bytes, overlapping the last chunk when `n` is not a multiple of 16.
                (w8(n - 16) ^ acc, w8(n - 8))
            }
        };
        let h = fold(a ^ self.s0, b ^ self.s1 ^ n as u64);
        fold(h ^ self.s1, self.s0) as u32
    }
}

/// Starts loading the cache lines of `slot` after its first, so a slot wider than a line (a map
/// state's, with its entries inline) costs one memory round trip, not one per line: the first
/// line is being loaded by the caller's read at the same time.
#[inline(always)]
fn prefetch_rest<T>(slot: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let base = slot as *const T as *const i8;
        let mut off = 64;
        while off < std::mem::size_of::<T>() {
            // SAFETY: a prefetch is a hint. It never faults, reads nothing into the program and
            // changes no memory; SSE is baseline on x86_64. The address lies inside `slot`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(off)) };
            off += 64;
        }
    }
}

/// Starts loading the cache line where `slot` begins.
#[inline(always)]
fn prefetch_line<T>(slot: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: as in `prefetch_rest`; the address is that of a slot of the table.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(slot as *const T as *const i8) };
    }
}

/// Starts loading the first line of the slot after the home slot, when slots span whole lines: at
/// the load this table keeps, about 45% of the lookups that find their key walk on to the next
/// slot (linear probing), and every lookup of an absent key past an occupied home slot does.
#[inline(always)]
fn prefetch_next<T>(slot: &T) {
    #[cfg(target_arch = "x86_64")]
    if std::mem::size_of::<T>() >= 64 {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: as in `prefetch_rest`; the address is that of a slot of the table.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(slot as *const T as *const i8) };
    }
}

/// Byte equality. Keys are mostly a few bytes (a u64 key's composite key is 5 to 12), where a call
/// to libc's memcmp cost 8% of a value lookup; up to 16 bytes compare as two overlapping words.
#[inline(always)]
fn same_key(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    match n {
        0..=7 => a.iter().zip(b).all(|(x, y)| x == y),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

impl<E: TableEntry> Table<E> {
    /// An empty table hashing with `hasher`.
    pub(super) fn with_hasher(hasher: KeyHasher) -> Self {
        Table {
            slots: Box::new([]),
            len: 0,
            hasher,
        }
    }

    fn hash(&self, key: &[u8]) -> u32 {
        self.hasher.hash(key)
    }

    /// Starts loading the home slot of a key whose hash is `hash` (and the slot after it, which
    /// the lookup reaches in about 45% of hits), so that a lookup soon after finds it in cache.
    /// Changes nothing.
    #[inline]
    pub(super) fn prefetch(&self, hash: u32) {
        if self.slots.is_empty() {
            return;
        }
        let mask = self.mask();
        let i = hash as usize & mask;
        prefetch_line(&self.slots[i]);
        prefetch_rest(&self.slots[i]);
        prefetch_next(&self.slots[(i + 1) & mask]);
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The slot holding `key`, if any.
    fn find(&self, hash: u32, key: &[u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        prefetch_rest(&self.slots[i]);
        prefetch_next(&self.slots[(i + 1) & mask]);
        loop {
            match &self.slots[i] {
                None => return None,
                Some(e) if e.hash() == hash && same_key(e.key(), key) => return Some(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<&E> {
        let i = self.find(self.hash(key), key)?;
        self.slots[i].as_ref()
    }

    pub(super) fn get_mut(&mut self, key: &[u8]) -> Option<&mut E> {
        let i = self.find(self.hash(key), key)?;
        self.slots[i].as_mut()
    }

    /// The entry of `key`, and whether it was just made by `make(hash, key)`.
    pub(super) fn find_or_insert_with(
        &mut self,
        key: &[u8],
        make: impl FnOnce(u32, &[u8]) -> E,
    ) -> (&mut E, bool) {
        let hash = self.hash(key);
        let (i, inserted) = match self.find(hash, key) {
            Some(i) => (i, false),
            None => {
                if (self.len + 1) * MAX_LOAD_DEN > self.slots.len() * MAX_LOAD_NUM {
                    self.grow();
                }
                // Absent, and there are no tombstones: the first empty slot of its run is its place.
                let mask = self.mask();
                let mut i = hash as usize & mask;
                while self.slots[i].is_some() {
                    i = (i + 1) & mask;
                }
                self.slots[i] = Some(make(hash, key));
                self.len += 1;
                (i, true)
            }
        };
        (
            self.slots[i].as_mut().expect("found or filled above"),
            inserted,
        )
    }

    fn grow(&mut self) {
        self.resize((self.slots.len() * 2).max(16));
    }

    /// Rebuilds the table with `cap` slots (a power of two that holds `len` within the load limit).
    fn resize(&mut self, cap: usize) {
        let old = std::mem::replace(&mut self.slots, (0..cap).map(|_| None).collect());
        let mask = cap - 1;
        for e in old.into_vec().into_iter().flatten() {
            let mut i = e.hash() as usize & mask;
            while self.slots[i].is_some() {
                i = (i + 1) & mask;
            }
            self.slots[i] = Some(e);
        }
    }

    pub(super) fn remove(&mut self, key: &[u8]) -> Option<E> {
        let mut hole = self.find(self.hash(key), key)?;
        let removed = self.slots[hole].take();
        self.len -= 1;
        // Backward shift: move later entries of the run into the hole when their home slot allows
        // it (the hole lies cyclically in [home, position)), so no lookup meets a gap early.
        let mask = self.mask();
        let mut j = (hole + 1) & mask;
        while let Some(e) = &self.slots[j] {
            let home = e.hash() as usize & mask;
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots.swap(hole, j);
                hole = j;
            }
            j = (j + 1) & mask;
        }
        // A table that emptied out gives its memory back: below 1/8 full it halves (past the
        // minimum), leaving it about a quarter full, so removals and inserts do not flip-flop.
        if self.slots.len() > 16 && self.len * 8 < self.slots.len() {
            self.resize(self.slots.len() / 2);
        }
        removed
    }

    /// Entries in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &E> {
        self.slots.iter().flatten()
    }
}

#[cfg(test)]
impl<V> Table<Full<V>> {
    pub(super) fn get_value(&self, key: &[u8]) -> Option<&V> {
        self.get(key).map(|e| &e.value)
    }

    /// The value of `key`, inserted as `V::default()` if missing.
    pub(super) fn entry_or_default(&mut self, key: &[u8]) -> &mut V
    where
        V: Default,
    {
        let (e, _) = self.find_or_insert_with(key, |hash, key| Full {
            hash,
            key: Bytes::from(key),
            value: V::default(),
        });
        &mut e.value
    }

    /// Entries in no particular order.
    pub(super) fn entries(&self) -> impl Iterator<Item = (&Bytes, &V)> {
        self.iter().map(|e| (&e.key, &e.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u16, u8),
        Remove(u16),
        Get(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        // A small key space, so puts, overwrites and removals collide and probe runs wrap.
        prop_oneof![
            (0u16..300, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            (0u16..300).prop_map(Op::Remove),
            (0u16..300).prop_map(Op::Get),
        ]
    }

    fn key(k: u16) -> Vec<u8> {
        // Variable lengths, some past the inline limit of `Bytes`.
        let mut v = k.to_be_bytes().to_vec();
        v.resize(2 + (k as usize % 30), b'x');
        v
    }

    /// `same_key` is slice equality at every length up to past its word path, including keys that
    /// differ only in their first or last byte.
    #[test]
    fn same_key_is_slice_equality() {
        let base: Vec<u8> = (1..=40).collect();
        for n in 0..=40 {
            let a = &base[..n];
            assert!(same_key(a, a));
            for at in 0..n {
                let mut b = a.to_vec();
                b[at] ^= 0x80;
                assert!(!same_key(a, &b), "len {n}, byte {at}");
            }
            if n > 0 {
                assert!(!same_key(a, &base[..n - 1]));
            }
        }
    }

    /// Mean and longest displacement from the home slot of `keys` inserted by linear probing into
    /// a table twice their number.
    fn displacement(h: &KeyHasher, keys: &[Vec<u8>]) -> (f64, usize) {
        let cap = (keys.len() * 2).next_power_of_two();
        let mut full = vec![false; cap];
        let (mut total, mut worst) = (0, 0);
        for k in keys {
            let mut i = h.hash(k) as usize & (cap - 1);
            let mut d = 0;
            while full[i] {
                i = (i + 1) & (cap - 1);
                d += 1;
            }
            full[i] = true;
            total += d;
            worst = worst.max(d);
        }
        (total as f64 / keys.len() as f64, worst)
    }

    /// The hash spreads the keys a state really sees (composite keys of consecutive integers, which
    /// differ in one or two bytes) and keys of every length branch as well as a random function
    /// would: at half load, linear probing displaces an entry by 0.5 slots on average.
    #[test]
    fn key_hash_spreads_keys_of_every_length() {
        let h = KeyHasher::random();
        let composite: Vec<Vec<u8>> = (0..200_000u64)
            .map(|k| crate::backend::composite_key(&postcard::to_allocvec(&k).unwrap(), &[], &[]))
            .collect();
        for len in [0usize, 1, 2, 3, 5, 8, 13, 16, 17, 31, 32, 33, 100] {
            let keys: Vec<Vec<u8>> = (0..20_000u32)
                .map(|i| {
                    let mut k = vec![0xa5; len];
                    // Vary the bytes a weak hash would skip: first, middle and last.
                    for (j, at) in [0, len / 2, len.saturating_sub(1)].into_iter().enumerate() {
                        if at < len {
                            k[at] ^= (i >> (8 * j)) as u8;
                        }
                    }
                    k
                })
                .collect();
            let distinct: std::collections::HashSet<_> = keys.iter().collect();
            let keys: Vec<Vec<u8>> = distinct.into_iter().cloned().collect();
            let (mean, worst) = displacement(&h, &keys);
            assert!(
                mean < 0.8 && worst < 80,
                "length {len}: mean {mean}, worst {worst}"
            );
        }
        let (mean, worst) = displacement(&h, &composite);
        assert!(
            mean < 0.8 && worst < 80,
            "composite keys: mean {mean}, worst {worst}"
        );
        // Two seeds place the same key differently (flooding needs the seed).
        let other = KeyHasher::random();
        let same = composite
            .iter()
            .take(1000)
            .filter(|k| h.hash(k) == other.hash(k))
            .count();
        assert!(same < 5, "{same} of 1000 keys hash alike under two seeds");
    }

    /// Removing most entries gives the memory back, and what is left is still found.
    #[test]
    fn shrinks_after_removals() {
        let mut t: Table<Full<u32>> = Table::with_hasher(KeyHasher::random());
        for k in 0..1000u32 {
            *t.entry_or_default(&k.to_be_bytes()) = k;
        }
        let full = t.slots.len();
        for k in 10..1000u32 {
            assert_eq!(t.remove(&k.to_be_bytes()).map(|e| e.value), Some(k));
        }
        assert!(
            t.slots.len() * 16 <= full,
            "{} slots of {full} kept",
            t.slots.len()
        );
        for k in 0..10u32 {
            assert_eq!(t.get_value(&k.to_be_bytes()), Some(&k));
        }
        assert!(t.get(&500u32.to_be_bytes()).is_none());
        assert_eq!(t.len(), 10);
    }

    proptest! {
        /// Against a HashMap model: every lookup, the length and the full contents agree after any
        /// sequence of puts, overwrites and removals (backward shift included).
        #[test]
        fn agrees_with_a_hashmap(ops in proptest::collection::vec(op(), 1..2000)) {
            let mut t: Table<Full<u8>> = Table::with_hasher(KeyHasher::random());
            let mut model: HashMap<Vec<u8>, u8> = HashMap::new();
            for o in ops {
                match o {
                    Op::Put(k, v) => {
                        *t.entry_or_default(&key(k)) = v;
                        model.insert(key(k), v);
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(t.remove(&key(k)).map(|e| e.value), model.remove(&key(k)));
                    }
                    Op::Get(k) => {
                        prop_assert_eq!(t.get_value(&key(k)), model.get(&key(k)));
                    }
                }
                prop_assert_eq!(t.len(), model.len());
            }
            let mut got: Vec<(Vec<u8>, u8)> = t.entries().map(|(k, v)| (k.to_vec(), *v)).collect();
            let mut want: Vec<(Vec<u8>, u8)> = model.into_iter().collect();
            got.sort();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }
}
