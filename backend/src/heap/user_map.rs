//! The user keys of one (key, namespace) of a heap map state.
//!
//! Most map states hold a handful of small user keys per key (Flink's benchmarks: 10 u64 keys).
//! Those live packed in one byte buffer, sorted by key: `[u8 key len][key][u16 LE value len][value]`
//! per entry. Ten u64 entries take about 90 bytes, two cache lines, where an array of inline slots
//! or a B-tree node spans ten; a lookup is a short forward scan. A map whose buffer would pass
//! [`PACK_LIMIT`] bytes, or with a key or value too long for the length fields, becomes a B-tree.
//! Either way iteration is in user-key byte order.

use std::collections::BTreeMap;

use smallvec::SmallVec;

use super::Bytes;

/// Largest packed buffer; past it a map is a B-tree (a write shifts at most this many bytes).
const PACK_LIMIT: usize = 1024;

#[derive(Clone)]
pub(super) enum UserMap {
    /// Entries sorted by key, keys unique, `len() <= PACK_LIMIT`.
    Packed(SmallVec<[u8; 120]>),
    Large(BTreeMap<Bytes, Bytes>),
}

impl Default for UserMap {
    fn default() -> Self {
        UserMap::Packed(SmallVec::new())
    }
}

/// One entry of a packed buffer: where it starts and ends, its key and value.
struct Slot<'a> {
    start: usize,
    end: usize,
    key: &'a [u8],
    value: &'a [u8],
}

/// Entries of a packed buffer, in order.
struct PackedIter<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Iterator for PackedIter<'a> {
    type Item = Slot<'a>;
    fn next(&mut self) -> Option<Slot<'a>> {
        let b = self.buf;
        let start = self.at;
        if start >= b.len() {
            return None;
        }
        // Buffers are only built by `put_packed`, so the lengths are in bounds.
        let kl = b[start] as usize;
        let k_end = start + 1 + kl;
        let vl = u16::from_le_bytes([b[k_end], b[k_end + 1]]) as usize;
        let v_start = k_end + 2;
        let end = v_start + vl;
        self.at = end;
        Some(Slot {
            start,
            end,
            key: &b[start + 1..k_end],
            value: &b[v_start..end],
        })
    }
}

fn packed(buf: &[u8]) -> PackedIter<'_> {
    PackedIter { buf, at: 0 }
}

/// Byte order of two keys. User keys are mostly a few bytes, where a loop beats a call to memcmp.
#[inline]
fn cmp_key(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    if a.len() <= 16 && b.len() <= 16 {
        for (x, y) in a.iter().zip(b) {
            if x != y {
                return x.cmp(y);
            }
        }
        a.len().cmp(&b.len())
    } else {
        a.cmp(b)
    }
}

/// The entry with key `k`, or where it would be inserted.
fn find(buf: &[u8], k: &[u8]) -> Result<(usize, usize), usize> {
    for slot in packed(buf) {
        match cmp_key(slot.key, k) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => return Ok((slot.start, slot.end)),
            std::cmp::Ordering::Greater => return Err(slot.start),
        }
    }
    Err(buf.len())
}

fn encode(k: &[u8], v: &[u8]) -> impl Iterator<Item = u8> {
    std::iter::once(k.len() as u8)
        .chain(k.iter().copied())
        .chain((v.len() as u16).to_le_bytes())
        .chain(v.iter().copied())
}

impl UserMap {
    pub(super) fn get(&self, k: &[u8]) -> Option<&[u8]> {
        match self {
            UserMap::Packed(buf) => match find(buf, k) {
                Ok((start, end)) => Some(&buf[start + 1 + k.len() + 2..end]),
                Err(_) => None,
            },
            UserMap::Large(m) => m.get(k).map(|v| v.as_slice()),
        }
    }

    pub(super) fn set(&mut self, k: &[u8], value: &[u8]) {
        if let UserMap::Packed(buf) = self {
            if k.len() <= u8::MAX as usize && value.len() <= u16::MAX as usize {
                let (range, grows) = match find(buf, k) {
                    Ok((start, end)) => (start..end, (3 + k.len() + value.len()) > end - start),
                    Err(at) => (at..at, true),
                };
                let new_len = buf.len() - range.len() + 3 + k.len() + value.len();
                if !grows || new_len <= PACK_LIMIT {
                    let entry: SmallVec<[u8; 64]> = encode(k, value).collect();
                    if range.len() == entry.len() {
                        buf[range].copy_from_slice(&entry);
                    } else {
                        buf.drain(range.clone());
                        buf.insert_from_slice(range.start, &entry);
                    }
                    return;
                }
            }
            self.spill();
        }
        if let UserMap::Large(m) = self {
            super::set(m, k, value);
        }
    }

    /// Turns a packed map into a B-tree.
    fn spill(&mut self) {
        if let UserMap::Packed(buf) = self {
            let m = packed(buf)
                .map(|s| (Bytes::from(s.key), Bytes::from(s.value)))
                .collect();
            *self = UserMap::Large(m);
        }
    }

    pub(super) fn extend(&mut self, k: &[u8], bytes: &[u8]) {
        if let UserMap::Large(m) = self {
            return super::extend(m, k, bytes);
        }
        let mut v = self.get(k).map(<[u8]>::to_vec).unwrap_or_default();
        v.extend_from_slice(bytes);
        self.set(k, &v);
    }

    pub(super) fn remove(&mut self, k: &[u8]) {
        match self {
            UserMap::Packed(buf) => {
                if let Ok((start, end)) = find(buf, k) {
                    buf.drain(start..end);
                }
            }
            UserMap::Large(m) => {
                m.remove(k);
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        match self {
            UserMap::Packed(buf) => buf.is_empty(),
            UserMap::Large(m) => m.is_empty(),
        }
    }

    /// Entries in key order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let (small, large) = match self {
            UserMap::Packed(buf) => (Some(packed(buf)), None),
            UserMap::Large(m) => (None, Some(m.iter())),
        };
        small.into_iter().flatten().map(|s| (s.key, s.value)).chain(
            large
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a BTreeMap model, across the spill point and back down: same lookups, same order.
    #[test]
    fn matches_a_btreemap_across_the_spill() {
        let mut m = UserMap::default();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        // Deterministic pseudo-random keys, enough to spill.
        let mut x = 12345u64;
        for round in 0..400u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = ((x >> 33) % 150).to_be_bytes()[5..].to_vec();
            match round % 5 {
                0 => {
                    m.remove(&k);
                    model.remove(&k);
                }
                1 => {
                    m.extend(&k, b"+");
                    model.entry(k.clone()).or_default().extend_from_slice(b"+");
                }
                _ => {
                    m.set(&k, &round.to_le_bytes());
                    model.insert(k.clone(), round.to_le_bytes().to_vec());
                }
            }
            assert_eq!(m.get(&k), model.get(&k).map(|v| v.as_slice()));
        }
        assert!(matches!(m, UserMap::Large(_)), "150 keys do not fit packed");
        let got: Vec<(Vec<u8>, Vec<u8>)> =
            m.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = model.into_iter().collect();
        assert_eq!(got, want);
        assert!(!m.is_empty());
    }

    /// A key longer than 255 bytes or a value longer than 64 KiB cannot be packed: the map turns
    /// into a B-tree and keeps every entry, in order.
    #[test]
    fn long_keys_and_values_spill_and_keep_everything() {
        for (k, v) in [
            (vec![7u8; 300], vec![1u8; 3]),
            (vec![7u8; 3], vec![1u8; 70_000]),
        ] {
            let mut m = UserMap::default();
            m.set(b"a", b"first");
            m.set(b"z", b"last");
            m.set(&k, &v);
            assert!(matches!(m, UserMap::Large(_)));
            assert_eq!(m.get(b"a"), Some(&b"first"[..]));
            assert_eq!(m.get(&k), Some(&v[..]));
            let keys: Vec<Vec<u8>> = m.iter().map(|(k, _)| k.to_vec()).collect();
            let mut want = vec![b"a".to_vec(), k.clone(), b"z".to_vec()];
            want.sort();
            assert_eq!(keys, want, "byte order");
            m.remove(&k);
            assert_eq!(m.get(&k), None);
            assert_eq!(m.iter().count(), 2);
        }
    }
}
