//! [`Bytes`]: the heap backend's stored keys and values, 24 bytes wide.
//!
//! Hash-table slots hold their key and value inline, so a small entry costs no allocation and no
//! pointer chase. Up to [`INLINE`] (22) bytes live in the value itself: a u64 key's composite key
//! (11 to 18 bytes), a postcard u64 (at most 10), three small list elements. Longer ones, and lists
//! that grow, go behind one pointer. (A 16-byte variant with 14 inline bytes measured no faster at
//! 500k keys and spilled lists sooner.)

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Bytes held without allocating.
pub(super) const INLINE: usize = 22;

#[derive(Clone)]
pub(super) enum Bytes {
    Inline {
        len: u8,
        data: [u8; INLINE],
    },
    /// Boxed so the enum stays 24 bytes (a bare `Vec` would make it 32); a `Vec` so appends
    /// amortize.
    #[allow(clippy::box_collection)]
    Heap(Box<Vec<u8>>),
}

impl Bytes {
    pub(super) const fn new() -> Self {
        Bytes::Inline {
            len: 0,
            data: [0; INLINE],
        }
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Inline { len, data } => &data[..*len as usize],
            Bytes::Heap(v) => v,
        }
    }

    /// Replaces the contents; a heap buffer is kept only if the new contents need one.
    pub(super) fn set(&mut self, value: &[u8]) {
        match self {
            Bytes::Heap(v) if value.len() > INLINE => {
                v.clear();
                v.extend_from_slice(value);
            }
            _ => *self = Bytes::from(value),
        }
    }

    pub(super) fn extend_from_slice(&mut self, more: &[u8]) {
        match self {
            Bytes::Inline { len, data } => {
                let l = *len as usize;
                if l + more.len() <= INLINE {
                    data[l..l + more.len()].copy_from_slice(more);
                    *len += more.len() as u8;
                } else {
                    // Headroom for one-at-a-time appends, exactly enough for a bulk one (as
                    // `Kv::spilled`); `Vec` doubles from there.
                    let mut v = Vec::with_capacity((l + more.len()).max(64));
                    v.extend_from_slice(&data[..l]);
                    v.extend_from_slice(more);
                    *self = Bytes::Heap(Box::new(v));
                }
            }
            Bytes::Heap(v) => v.extend_from_slice(more),
        }
    }
}

impl Default for Bytes {
    fn default() -> Self {
        Bytes::new()
    }
}

impl From<&[u8]> for Bytes {
    fn from(s: &[u8]) -> Self {
        if s.len() <= INLINE {
            let mut data = [0; INLINE];
            data[..s.len()].copy_from_slice(s);
            Bytes::Inline {
                len: s.len() as u8,
                data,
            }
        } else {
            Bytes::Heap(Box::new(s.to_vec()))
        }
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Lookups by `&[u8]` find `Bytes` keys: equality, order and hash are the slice's.
impl Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Hash for Bytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Bytes {}

impl PartialOrd for Bytes {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bytes {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bytes_and_slice_semantics_at_every_length() {
        assert_eq!(std::mem::size_of::<Bytes>(), 24);
        let all: Vec<u8> = (0..100).collect();
        for n in 0..all.len() {
            let b = Bytes::from(&all[..n]);
            assert_eq!(b.as_slice(), &all[..n]);
            // Grown one byte at a time across the inline limit.
            let mut g = Bytes::new();
            for x in &all[..n] {
                g.extend_from_slice(std::slice::from_ref(x));
            }
            assert!(g == b);
            let mut s = Bytes::from(&all[..50]);
            s.set(&all[..n]);
            assert_eq!(s.as_slice(), &all[..n]);
            assert_eq!(
                matches!(s, Bytes::Inline { .. }),
                n <= INLINE,
                "inline exactly when it fits"
            );
        }
        assert!(Bytes::from(&b"ab"[..]) < Bytes::from(&b"abc"[..]));
        let mut h1 = std::collections::hash_map::DefaultHasher::new();
        let mut h2 = std::collections::hash_map::DefaultHasher::new();
        Bytes::from(&all[..20]).hash(&mut h1);
        all[..20].hash(&mut h2);
        assert_eq!(h1.finish(), h2.finish());
    }
}
