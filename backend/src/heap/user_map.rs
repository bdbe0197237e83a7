//! The user keys of one (key, namespace) of a heap map state, once they no longer fit in the
//! table slot ([`super::map_slot`]), and the packed entry format both use.
//!
//! Most map states hold a handful of small user keys per key (Flink's benchmarks: 10 u64 keys).
//! Those live packed in one byte buffer, sorted by key: `[u8 key len][u8 value len][key][value]` per
//! entry. Ten u64 -> f64 entries take 110 bytes, where an array of inline slots or a B-tree node
//! spans ten cache lines; a lookup is a short forward scan whose next position depends on one
//! two-byte load. A map whose buffer would pass [`PACK_LIMIT`] bytes, or with a key or value longer
//! than 255 bytes, becomes a B-tree. Either way iteration is in user-key byte order.

use std::collections::BTreeMap;

use super::Bytes;

/// Largest packed buffer; past it a map is a B-tree (a write shifts at most this many bytes).
const PACK_LIMIT: usize = 1024;

/// The packed entry format. A buffer is a sequence of well-formed entries sorted by key, keys
/// unique; only the functions here write one, so the lengths they read are in bounds.
pub(super) mod packed {
    use std::cmp::Ordering;

    /// Whether `k` and `v` can be one packed entry.
    #[inline]
    pub(in super::super) fn fits(k: &[u8], v: &[u8]) -> bool {
        k.len() <= u8::MAX as usize && v.len() <= u8::MAX as usize
    }

    #[inline]
    pub(in super::super) fn entry_len(k: &[u8], v: &[u8]) -> usize {
        2 + k.len() + v.len()
    }

    /// Writes the entry at the start of `dst` (which `fits` allowed and is long enough).
    #[inline]
    pub(in super::super) fn write_entry(dst: &mut [u8], k: &[u8], v: &[u8]) {
        dst[0] = k.len() as u8;
        dst[1] = v.len() as u8;
        dst[2..2 + k.len()].copy_from_slice(k);
        dst[2 + k.len()..2 + k.len() + v.len()].copy_from_slice(v);
    }

    /// Byte order of two keys. User keys are mostly a few bytes, where a loop beats memcmp.
    #[inline(always)]
    fn cmp_key(a: &[u8], b: &[u8]) -> Ordering {
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

    /// The byte range of the entry with key `k`, or the offset where it would be inserted.
    ///
    /// Most entries are told apart by their first key byte, so that is compared before the whole
    /// key: a scan step is three byte loads and two compares.
    #[inline(always)]
    pub(in super::super) fn find(buf: &[u8], k: &[u8]) -> Result<(usize, usize), usize> {
        let Some(&first) = k.first() else {
            // The empty key sorts first: it is the first entry or absent.
            return match buf {
                [0, vl, ..] => Ok((0, 2 + *vl as usize)),
                _ => Err(0),
            };
        };
        let mut at = 0;
        while at < buf.len() {
            let (kl, vl) = (buf[at] as usize, buf[at + 1] as usize);
            let key_end = at + 2 + kl;
            // An empty entry key sorts before `k`.
            if kl != 0 {
                let b0 = buf[at + 2];
                if b0 > first {
                    return Err(at);
                }
                if b0 == first {
                    match cmp_key(&buf[at + 2..key_end], k) {
                        Ordering::Less => {}
                        Ordering::Equal => return Ok((at, key_end + vl)),
                        Ordering::Greater => return Err(at),
                    }
                }
            }
            at = key_end + vl;
        }
        Err(buf.len())
    }

    /// The value of the entry at `range` (from `find`) whose key is `k`.
    #[inline(always)]
    pub(in super::super) fn value_at<'a>(
        buf: &'a [u8],
        range: (usize, usize),
        k: &[u8],
    ) -> &'a [u8] {
        &buf[range.0 + 2 + k.len()..range.1]
    }

    /// The value of key `k`.
    #[inline(always)]
    pub(in super::super) fn get<'a>(buf: &'a [u8], k: &[u8]) -> Option<&'a [u8]> {
        find(buf, k).ok().map(|r| value_at(buf, r, k))
    }

    /// Entries in key order.
    pub(in super::super) fn iter(buf: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= buf.len() {
                return None;
            }
            let (kl, vl) = (buf[at] as usize, buf[at + 1] as usize);
            let key_end = at + 2 + kl;
            let entry = (&buf[at + 2..key_end], &buf[key_end..key_end + vl]);
            at = key_end + vl;
            Some(entry)
        })
    }

    /// Sets `k` to `v` in the buffer `buf[..*used]` of capacity `buf.len()`, shifting the entries
    /// after it. False, with nothing changed, if the result would not fit.
    #[inline]
    pub(in super::super) fn set_in(buf: &mut [u8], used: &mut usize, k: &[u8], v: &[u8]) -> bool {
        let len = entry_len(k, v);
        let (start, end) = match find(&buf[..*used], k) {
            // Same key, same length, so same value length: only the value bytes change (the
            // common overwrite of a fixed-width value).
            Ok((start, end)) if end - start == len => {
                buf[end - v.len()..end].copy_from_slice(v);
                return true;
            }
            Ok(r) => r,
            Err(at) => (at, at),
        };
        let new_used = *used - (end - start) + len;
        if new_used > buf.len() {
            return false;
        }
        buf.copy_within(end..*used, start + len);
        write_entry(&mut buf[start..], k, v);
        *used = new_used;
        true
    }

    /// Removes `k` from `buf[..*used]`; whether it was there.
    #[inline]
    pub(in super::super) fn remove_in(buf: &mut [u8], used: &mut usize, k: &[u8]) -> bool {
        match find(&buf[..*used], k) {
            Ok((start, end)) => {
                buf.copy_within(end..*used, start);
                *used -= end - start;
                true
            }
            Err(_) => false,
        }
    }
}

#[derive(Clone)]
pub(super) enum UserMap {
    /// A packed buffer (see [`packed`]), `len() <= PACK_LIMIT`.
    Packed(Vec<u8>),
    Large(BTreeMap<Bytes, Bytes>),
}

impl Default for UserMap {
    fn default() -> Self {
        UserMap::Packed(Vec::new())
    }
}

impl UserMap {
    /// A map of the packed entries `buf`.
    pub(super) fn from_packed(buf: &[u8]) -> UserMap {
        UserMap::Packed(buf.to_vec())
    }

    pub(super) fn get(&self, k: &[u8]) -> Option<&[u8]> {
        match self {
            UserMap::Packed(buf) => packed::get(buf, k),
            UserMap::Large(m) => m.get(k).map(|v| v.as_slice()),
        }
    }

    pub(super) fn set(&mut self, k: &[u8], value: &[u8]) {
        if let UserMap::Packed(buf) = self {
            if packed::fits(k, value) {
                let mut used = buf.len();
                // Room for the entry, as much as the limit allows; the buffer is cut back below.
                buf.resize(
                    (used + packed::entry_len(k, value))
                        .min(PACK_LIMIT)
                        .max(used),
                    0,
                );
                let done = packed::set_in(buf, &mut used, k, value);
                buf.truncate(used);
                if done {
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
            let m = packed::iter(buf)
                .map(|(k, v)| (Bytes::from(k), Bytes::from(v)))
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
                let mut used = buf.len();
                packed::remove_in(buf, &mut used, k);
                buf.truncate(used);
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

    /// The packed buffer, if the map is packed.
    pub(super) fn as_packed(&self) -> Option<&[u8]> {
        match self {
            UserMap::Packed(buf) => Some(buf),
            UserMap::Large(_) => None,
        }
    }

    /// Entries in key order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let (small, large) = match self {
            UserMap::Packed(buf) => (Some(packed::iter(buf)), None),
            UserMap::Large(m) => (None, Some(m.iter())),
        };
        small.into_iter().flatten().chain(
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

    /// A key longer than 255 bytes or a value longer than 255 bytes cannot be packed: the map turns
    /// into a B-tree and keeps every entry, in order.
    #[test]
    fn long_keys_and_values_spill_and_keep_everything() {
        for (k, v) in [
            (vec![7u8; 300], vec![1u8; 3]),
            (vec![7u8; 3], vec![1u8; 256]),
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
