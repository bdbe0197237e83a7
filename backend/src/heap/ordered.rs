//! [`Ordered`]: the heap backend's map for timer states, ordered by key like RocksDB, where a
//! timer service reads each key group's earliest timers (`timers.rs`) and every timer is held once.
//!
//! Timer keys start with their 8-byte timestamp. An entry's key is split into its first 8 bytes as
//! a big-endian integer (zero-padded when shorter), how many of them there are, and the rest, so
//! that most comparisons are one integer comparison rather than a `memcmp` of the key. That order
//! is exactly the keys' byte order (a test checks): equal integers mean equal first bytes, and a
//! key shorter than 8 bytes whose padded integer equals another's is a prefix of it, so it sorts
//! first by its smaller count; keys of 8 bytes or more compare their rests.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::bytes::Bytes;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct OrdKey {
    head: u64,
    head_len: u8,
    rest: Bytes,
}

impl OrdKey {
    fn of(k: &[u8]) -> OrdKey {
        let n = k.len().min(8);
        let mut head = [0u8; 8];
        head[..n].copy_from_slice(&k[..n]);
        OrdKey {
            head: u64::from_be_bytes(head),
            head_len: n as u8,
            rest: Bytes::from(&k[n..]),
        }
    }

    fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head_len as usize + self.rest.len());
        out.extend_from_slice(&self.head.to_be_bytes()[..self.head_len as usize]);
        out.extend_from_slice(&self.rest);
        out
    }
}

/// A sorted map of byte keys to byte values.
#[derive(Clone, Default)]
pub(super) struct Ordered {
    map: BTreeMap<OrdKey, Bytes>,
}

impl Ordered {
    pub(super) fn get(&self, k: &[u8]) -> Option<&[u8]> {
        self.map.get(&OrdKey::of(k)).map(|v| v.as_slice())
    }

    pub(super) fn insert(&mut self, k: &[u8], v: &[u8]) {
        self.map
            .entry(OrdKey::of(k))
            .and_modify(|old| old.set(v))
            .or_insert_with(|| Bytes::from(v));
    }

    pub(super) fn append(&mut self, k: &[u8], v: &[u8]) {
        self.map
            .entry(OrdKey::of(k))
            .and_modify(|old| old.extend_from_slice(v))
            .or_insert_with(|| Bytes::from(v));
    }

    pub(super) fn remove(&mut self, k: &[u8]) {
        self.map.remove(&OrdKey::of(k));
    }

    /// Calls `f(suffix, value)` for the entries whose key starts with `prefix`, in key order,
    /// until `f` returns false.
    pub(super) fn for_prefix(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        for (k, v) in self
            .map
            .range((Bound::Included(OrdKey::of(prefix)), Bound::Unbounded))
        {
            let k = k.to_vec();
            if !k.starts_with(prefix) || !f(&k[prefix.len()..], v) {
                return;
            }
        }
    }

    /// Every entry, in key order.
    pub(super) fn sorted(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.map
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    /// Up to `limit` entries after `after` (from the start if `None`), in key order.
    pub(super) fn after(&self, after: Option<&[u8]>, limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let lower = match after {
            Some(a) => Bound::Excluded(OrdKey::of(a)),
            None => Bound::Unbounded,
        };
        self.map
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The map's order is the keys' byte order, and every key comes back as it went in.
        #[test]
        fn order_is_byte_order(keys in prop::collection::vec(prop::collection::vec(0u8..4, 0..14), 0..60)) {
            let mut m = Ordered::default();
            for k in &keys {
                m.insert(k, k);
            }
            let mut want: Vec<Vec<u8>> = keys.clone();
            want.sort();
            want.dedup();
            let got: Vec<Vec<u8>> = m.sorted().into_iter().map(|(k, v)| { assert_eq!(k, v); k }).collect();
            prop_assert_eq!(&got, &want);
            if let Some(mid) = want.get(want.len() / 2) {
                let after: Vec<Vec<u8>> = m.after(Some(mid), 5).into_iter().map(|(k, _)| k).collect();
                let expect: Vec<Vec<u8>> = want.iter().filter(|k| *k > mid).take(5).cloned().collect();
                prop_assert_eq!(after, expect);
                let prefix = &mid[..mid.len().min(2)];
                let mut scanned = Vec::new();
                m.for_prefix(prefix, &mut |suffix, _| { scanned.push([prefix, suffix].concat()); true });
                let expect: Vec<Vec<u8>> = want.iter().filter(|k| k.starts_with(prefix)).cloned().collect();
                prop_assert_eq!(scanned, expect);
            }
        }
    }
}
