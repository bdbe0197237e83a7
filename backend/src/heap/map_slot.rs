//! [`MapSlot`]: a hash-table entry of a map state: one (key, namespace) prefix and its user keys,
//! in one 128-byte slot while they fit.
//!
//! A map state's point access is dominated by the cache misses of finding the slot (perf: 60-75%
//! of `mapGet` at 500k keys). The prefix and the packed entries (`user_map::packed`) share the
//! slot's [`INLINE`] (121) bytes, so a u64 key with ten u64 -> f64 entries (11 + 110 bytes) is two
//! adjacent cache lines and no pointer. The table prefetches the second line with the first. A map
//! that outgrows the slot moves behind one pointer as a [`UserMap`] (packed buffer, then B-tree).
//!
//! Invariants: `Inline`'s bytes are `[hash u32 LE][klen][used][prefix: klen][entries: used]`
//! with `klen + used <= INLINE`; `Spilled` holds the prefix and a `UserMap`. A spilled map whose
//! entries fit the slot again after a removal moves back inline.

use super::table::TableEntry;
use super::user_map::{UserMap, packed};

/// Prefix and packed-entry bytes held in the slot.
pub(super) const INLINE: usize = 121;

/// `Inline`'s bytes: hash (4, little endian), prefix length, entry bytes used, then the data.
const HEAD: usize = 6;

#[derive(Clone)]
pub(super) struct Spilled {
    key: Box<[u8]>,
    map: UserMap,
}

/// 128 bytes, aligned to 128 so a slot is one adjacent-line pair (checked in the tests).
///
/// `Inline` is one byte array so its hash sits right after the tag, on the first cache line: a
/// probe that passes over a slot compares hashes and touches only that line. (As separate fields
/// the compiler put the u32 after the 121 data bytes, on the second line, and `mapAdd`'s probes
/// for absent keys paid for both lines.)
#[derive(Clone)]
#[repr(align(128))]
pub(super) enum MapSlot {
    Inline { bytes: [u8; HEAD + INLINE] },
    Spilled { hash: u32, s: Box<Spilled> },
}

impl TableEntry for MapSlot {
    #[inline]
    fn hash(&self) -> u32 {
        match self {
            MapSlot::Inline { bytes } => {
                u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
            }
            MapSlot::Spilled { hash, .. } => *hash,
        }
    }
    #[inline]
    fn key(&self) -> &[u8] {
        match self {
            MapSlot::Inline { bytes } => &bytes[HEAD..HEAD + bytes[4] as usize],
            MapSlot::Spilled { s, .. } => &s.key,
        }
    }
}

/// The packed entries of an inline slot's bytes.
#[inline(always)]
fn entries(bytes: &[u8; HEAD + INLINE]) -> &[u8] {
    let start = HEAD + bytes[4] as usize;
    &bytes[start..start + bytes[5] as usize]
}

impl MapSlot {
    /// A prefix without entries (the caller adds one at once).
    pub(super) fn new(hash: u32, key: &[u8]) -> MapSlot {
        MapSlot::with_entries(hash, key, &[])
    }

    /// A prefix with the packed entries `buf`.
    fn with_entries(hash: u32, key: &[u8], buf: &[u8]) -> MapSlot {
        if key.len() + buf.len() <= INLINE {
            let mut bytes = [0; HEAD + INLINE];
            bytes[..4].copy_from_slice(&hash.to_le_bytes());
            bytes[4] = key.len() as u8;
            bytes[5] = buf.len() as u8;
            bytes[HEAD..HEAD + key.len()].copy_from_slice(key);
            bytes[HEAD + key.len()..HEAD + key.len() + buf.len()].copy_from_slice(buf);
            MapSlot::Inline { bytes }
        } else {
            MapSlot::Spilled {
                hash,
                s: Box::new(Spilled {
                    key: key.into(),
                    map: UserMap::from_packed(buf),
                }),
            }
        }
    }

    #[inline]
    pub(super) fn get(&self, uk: &[u8]) -> Option<&[u8]> {
        match self {
            MapSlot::Inline { bytes } => packed::get(entries(bytes), uk),
            MapSlot::Spilled { s, .. } => s.map.get(uk),
        }
    }

    pub(super) fn set(&mut self, uk: &[u8], value: &[u8]) {
        if let MapSlot::Inline { bytes } = self
            && packed::fits(uk, value)
        {
            let mut n = bytes[5] as usize;
            let start = HEAD + bytes[4] as usize;
            if packed::set_in(&mut bytes[start..], &mut n, uk, value) {
                bytes[5] = n as u8;
                return;
            }
        }
        self.spilled().map.set(uk, value);
    }

    pub(super) fn extend(&mut self, uk: &[u8], more: &[u8]) {
        if let MapSlot::Spilled { s, .. } = self {
            return s.map.extend(uk, more);
        }
        let mut v = self.get(uk).map(<[u8]>::to_vec).unwrap_or_default();
        v.extend_from_slice(more);
        self.set(uk, &v);
    }

    pub(super) fn remove(&mut self, uk: &[u8]) {
        match self {
            MapSlot::Inline { bytes } => {
                let mut n = bytes[5] as usize;
                let start = HEAD + bytes[4] as usize;
                packed::remove_in(&mut bytes[start..], &mut n, uk);
                bytes[5] = n as u8;
            }
            MapSlot::Spilled { hash, s } => {
                s.map.remove(uk);
                if let Some(buf) = s.map.as_packed()
                    && s.key.len() + buf.len() <= INLINE
                {
                    *self = MapSlot::with_entries(*hash, &s.key, buf);
                }
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        match self {
            MapSlot::Inline { bytes } => bytes[5] == 0,
            MapSlot::Spilled { s, .. } => s.map.is_empty(),
        }
    }

    /// Entries in user-key byte order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let (small, large) = match self {
            MapSlot::Inline { bytes } => (Some(packed::iter(entries(bytes))), None),
            MapSlot::Spilled { s, .. } => (None, Some(s.map.iter())),
        };
        small
            .into_iter()
            .flatten()
            .chain(large.into_iter().flatten())
    }

    /// The spilled form of this slot, moving the entries out of the slot first if they are inline.
    fn spilled(&mut self) -> &mut Spilled {
        if let MapSlot::Inline { bytes } = &*self {
            let moved = MapSlot::Spilled {
                hash: self.hash(),
                s: Box::new(Spilled {
                    key: self.key().into(),
                    map: UserMap::from_packed(entries(bytes)),
                }),
            };
            *self = moved;
        }
        match self {
            MapSlot::Spilled { s, .. } => s,
            MapSlot::Inline { .. } => unreachable!("made spilled above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_slot_is_two_cache_lines() {
        assert_eq!(std::mem::size_of::<Option<MapSlot>>(), 128);
        assert_eq!(std::mem::align_of::<Option<MapSlot>>(), 128);
        // The hash of an inline slot is on its first cache line.
        let slot = Some(MapSlot::new(1, b"k"));
        if let Some(MapSlot::Inline { bytes }) = &slot {
            let at = bytes.as_ptr() as usize - &slot as *const _ as usize;
            assert!(at + 4 <= 64, "hash at byte {at}");
        } else {
            panic!("a short prefix is inline");
        }
    }

    /// The benchmark shape that motivated the slot: an 11-byte prefix (a u64 key's) and ten
    /// u64 -> f64 entries stay inline.
    #[test]
    fn ten_small_entries_stay_inline() {
        let mut e = MapSlot::new(1, &[0u8; 11]);
        for k in 0u8..10 {
            e.set(&[k], &(k as f64).to_le_bytes());
        }
        assert!(matches!(e, MapSlot::Inline { .. }));
        assert_eq!(e.get(&[3]), Some(&3f64.to_le_bytes()[..]));
        // An overwrite of the same width changes that value only.
        e.set(&[3], &7.5f64.to_le_bytes());
        let got: Vec<(u8, f64)> = e
            .iter()
            .map(|(k, v)| (k[0], f64::from_le_bytes(v.try_into().unwrap())))
            .collect();
        let want: Vec<(u8, f64)> = (0u8..10)
            .map(|k| (k, if k == 3 { 7.5 } else { k as f64 }))
            .collect();
        assert_eq!(got, want);
    }

    /// Against a BTreeMap model, for prefixes short and long: entries grow past the slot, past the
    /// packed limit into a B-tree, shrink back, and every lookup and the iteration order agree.
    #[test]
    fn matches_a_btreemap_across_every_form() {
        for prefix_len in [0usize, 11, 100, 121, 122, 300] {
            let prefix: Vec<u8> = (0..prefix_len).map(|i| i as u8).collect();
            let mut e = MapSlot::new(9, &prefix);
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut x = 12345u64 + prefix_len as u64;
            for round in 0..600u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let k = ((x >> 33) % 120).to_be_bytes()[6..].to_vec();
                let vlen = ((x >> 20) % 40) as usize + if round % 97 == 0 { 300 } else { 0 };
                match round % 7 {
                    0 | 1 => {
                        e.remove(&k);
                        model.remove(&k);
                    }
                    2 => {
                        e.extend(&k, b"+");
                        model.entry(k.clone()).or_default().extend_from_slice(b"+");
                    }
                    _ => {
                        let v = vec![round as u8; vlen];
                        e.set(&k, &v);
                        model.insert(k.clone(), v);
                    }
                }
                assert_eq!(e.get(&k), model.get(&k).map(|v| v.as_slice()));
                assert_eq!(e.key(), &prefix[..]);
                assert_eq!(e.hash(), 9);
                assert_eq!(e.is_empty(), model.is_empty());
            }
            let got: Vec<(Vec<u8>, Vec<u8>)> =
                e.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            let want: Vec<(Vec<u8>, Vec<u8>)> = model.into_iter().collect();
            assert_eq!(got, want, "prefix of {prefix_len} bytes");
        }
    }

    /// The empty user key (a `()` user key serializes to nothing) sorts first and is found,
    /// overwritten and removed like any other; a key that only starts like another is not it.
    #[test]
    fn the_empty_user_key_is_a_key() {
        let mut e = MapSlot::new(1, b"p");
        e.set(b"b", b"2");
        assert_eq!(e.get(b""), None);
        e.set(b"", b"0");
        e.set(b"a", b"1");
        e.set(b"ab", b"3");
        assert_eq!(e.get(b""), Some(&b"0"[..]));
        e.set(b"", b"zero");
        let all: Vec<(&[u8], &[u8])> = e.iter().collect();
        assert_eq!(
            all,
            vec![
                (&b""[..], &b"zero"[..]),
                (&b"a"[..], &b"1"[..]),
                (&b"ab"[..], &b"3"[..]),
                (&b"b"[..], &b"2"[..])
            ]
        );
        e.remove(b"");
        assert_eq!(e.get(b""), None);
        assert_eq!(e.get(b"a"), Some(&b"1"[..]));
        assert_eq!(e.get(b"abc"), None);
        e.remove(b"a");
        assert_eq!(e.get(b"ab"), Some(&b"3"[..]));
    }

    /// A spilled packed map that fits again after removals moves back into the slot.
    #[test]
    fn moves_back_inline_after_removals() {
        let mut e = MapSlot::new(1, b"prefix");
        for k in 0u8..40 {
            e.set(&[k], &[k; 8]);
        }
        assert!(matches!(e, MapSlot::Spilled { .. }));
        for k in 5u8..40 {
            e.remove(&[k]);
        }
        assert!(matches!(e, MapSlot::Inline { .. }));
        let keys: Vec<u8> = e.iter().map(|(k, _)| k[0]).collect();
        assert_eq!(keys, vec![0, 1, 2, 3, 4]);
        assert_eq!(e.get(&[4]), Some(&[4u8; 8][..]));
    }
}
