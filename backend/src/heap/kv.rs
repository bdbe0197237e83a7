//! [`Kv`]: a hash-table entry of a value or list state, key and value bytes in one 32-byte slot.
//!
//! Value and list states look keys up by their exact composite key, and most entries are small: a
//! u64 key's composite key and a postcard u64 take about 8 to 20 bytes together. Up to
//! [`INLINE`] (24) bytes of key plus value live in the slot itself; longer ones, and lists that
//! grow, move behind one pointer with the key and value in one buffer. A 32-byte slot is half of
//! the 64-byte `Full<Bytes>` slot these states had, so a state of 500k keys spans half the memory
//! (and a larger share of it stays in the CPU's last-level cache).
//!
//! Invariants: `Inline` holds `klen + vlen <= INLINE` bytes of `data`, key first; `Spilled` holds
//! the key as `buf[..klen]` and the value as `buf[klen..]`. An entry whose key and value fit
//! inline after a `set_value` is inline again, so a list reset to one element gives back its buffer.

use super::table::TableEntry;

/// Key and value bytes held in the slot.
pub(super) const INLINE: usize = 24;

#[derive(Clone)]
pub(super) struct Spilled {
    klen: usize,
    buf: Vec<u8>,
}

/// 32 bytes, aligned to 32 so no slot straddles two cache lines (checked in the tests).
#[derive(Clone)]
#[repr(align(32))]
pub(super) enum Kv {
    Inline {
        hash: u32,
        klen: u8,
        vlen: u8,
        data: [u8; INLINE],
    },
    Spilled {
        hash: u32,
        kv: Box<Spilled>,
    },
}

impl TableEntry for Kv {
    #[inline]
    fn hash(&self) -> u32 {
        match self {
            Kv::Inline { hash, .. } | Kv::Spilled { hash, .. } => *hash,
        }
    }
    #[inline]
    fn key(&self) -> &[u8] {
        match self {
            Kv::Inline { klen, data, .. } => &data[..*klen as usize],
            Kv::Spilled { kv, .. } => &kv.buf[..kv.klen],
        }
    }
}

impl Kv {
    pub(super) fn new(hash: u32, key: &[u8], value: &[u8]) -> Kv {
        if key.len() + value.len() <= INLINE {
            let mut data = [0; INLINE];
            data[..key.len()].copy_from_slice(key);
            data[key.len()..key.len() + value.len()].copy_from_slice(value);
            Kv::Inline {
                hash,
                klen: key.len() as u8,
                vlen: value.len() as u8,
                data,
            }
        } else {
            Kv::spilled(hash, key, value, 0)
        }
    }

    /// A spilled entry with room for `extra` more value bytes: at least 64 bytes in all (an entry
    /// that just outgrew the slot, as a list does one append at a time, gets headroom), else
    /// exactly what a bulk append needs; later appends grow the buffer by doubling.
    fn spilled(hash: u32, key: &[u8], value: &[u8], extra: usize) -> Kv {
        let need = key.len() + value.len();
        let cap = if extra == 0 {
            need
        } else {
            (need + extra).max(64)
        };
        let mut buf = Vec::with_capacity(cap);
        buf.extend_from_slice(key);
        buf.extend_from_slice(value);
        Kv::Spilled {
            hash,
            kv: Box::new(Spilled {
                klen: key.len(),
                buf,
            }),
        }
    }

    #[inline]
    pub(super) fn value(&self) -> &[u8] {
        match self {
            Kv::Inline {
                klen, vlen, data, ..
            } => &data[*klen as usize..(*klen + *vlen) as usize],
            Kv::Spilled { kv, .. } => &kv.buf[kv.klen..],
        }
    }

    /// Replaces the value.
    pub(super) fn set_value(&mut self, value: &[u8]) {
        match self {
            Kv::Inline {
                klen, vlen, data, ..
            } if *klen as usize + value.len() <= INLINE => {
                let k = *klen as usize;
                data[k..k + value.len()].copy_from_slice(value);
                *vlen = value.len() as u8;
            }
            Kv::Spilled { kv, .. } if kv.klen + value.len() > INLINE => {
                kv.buf.truncate(kv.klen);
                kv.buf.extend_from_slice(value);
            }
            _ => {
                let moved = Kv::new(self.hash(), self.key(), value);
                *self = moved;
            }
        }
    }

    /// Appends `more` to the value.
    pub(super) fn append_value(&mut self, more: &[u8]) {
        match self {
            Kv::Inline {
                hash,
                klen,
                vlen,
                data,
            } => {
                let (k, end) = (*klen as usize, (*klen + *vlen) as usize);
                if end + more.len() <= INLINE {
                    data[end..end + more.len()].copy_from_slice(more);
                    *vlen += more.len() as u8;
                } else {
                    let mut grown = Kv::spilled(*hash, &data[..k], &data[k..end], more.len());
                    if let Kv::Spilled { kv, .. } = &mut grown {
                        kv.buf.extend_from_slice(more);
                    }
                    *self = grown;
                }
            }
            Kv::Spilled { kv, .. } => kv.buf.extend_from_slice(more),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<Option<Kv>>(), 32);
        assert_eq!(std::mem::align_of::<Option<Kv>>(), 32);
    }

    /// Every key and value length across the inline limit, through new, set and append, against
    /// plain vectors; an entry that fits is inline.
    #[test]
    fn keeps_key_and_value_at_every_length() {
        let all: Vec<u8> = (0..100).collect();
        for kl in [0usize, 1, 8, 23, 24, 25, 40] {
            let key = &all[..kl];
            for vl in 0..60 {
                let value = &all[..vl];
                let mut e = Kv::new(7, key, value);
                assert_eq!((e.hash(), e.key(), e.value()), (7, key, value));
                assert_eq!(matches!(e, Kv::Inline { .. }), kl + vl <= INLINE);
                // Grown one byte at a time, then set back.
                let mut want = value.to_vec();
                for x in &all[..30] {
                    e.append_value(std::slice::from_ref(x));
                    want.push(*x);
                    assert_eq!((e.key(), e.value()), (key, want.as_slice()));
                }
                for nl in [0usize, 3, 24, 50] {
                    e.set_value(&all[..nl]);
                    assert_eq!((e.key(), e.value()), (key, &all[..nl]));
                    assert_eq!(
                        matches!(e, Kv::Inline { .. }),
                        kl + nl <= INLINE,
                        "inline exactly when it fits"
                    );
                }
                assert_eq!(e.hash(), 7);
            }
        }
    }
}
