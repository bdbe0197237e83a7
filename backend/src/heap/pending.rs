//! Blind writes held back for a few operations, so that their cache misses overlap.
//!
//! A state access of the heap backend is one random slot of a table much larger than the CPU's
//! caches: a DRAM miss (about 180 ns on the benchmark machine), against about 80 ns of work around
//! it. A read must wait for its miss. A put or an append that returns nothing need not: the
//! backend records it here, starts loading its slot, and returns. When [`MAX_OPS`] writes are
//! held, or anything reads a state that has some, they are applied in order; by then their slots
//! are in cache, and the misses of the batch were in flight together instead of one after another.
//!
//! Invariants:
//! - Ops are applied in the order they were made, and every read of a state, every other write to
//!   it, every snapshot and every listing applies that state's held ops first: no caller can see
//!   the difference, apart from time.
//! - Everything that can fail (the key-group check) is checked before an op is held; applying one
//!   cannot fail.
//! - At most [`MAX_OPS`] ops and about [`MAX_BYTES`] bytes are held.

use crate::backend::StateId;

/// Ops held at most: enough misses in flight to cover a DRAM round trip with the work of the
/// ops in between, and few enough that their slots stay in L1/L2 until they are applied.
pub(super) const MAX_OPS: usize = 16;
/// Bytes (keys and values) held at most before the ops are applied, whatever their count.
pub(super) const MAX_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Replace the value.
    Put,
    /// Append to the value (list states), or insert it.
    Append,
}

struct Op {
    state: StateId,
    kg: u32,
    kind: Kind,
    /// The op's composite key is `bytes[start..key_end]`, its value `bytes[key_end..end]`.
    start: usize,
    key_end: usize,
    end: usize,
}

/// Writes held back. Only states below 64 are held (one bit each in `states`).
#[derive(Default)]
pub(super) struct Pending {
    ops: Vec<Op>,
    bytes: Vec<u8>,
    /// Bit `s` is set while state `s` has held ops.
    states: u64,
}

impl Pending {
    /// Whether state `s` has held ops.
    #[inline(always)]
    pub(super) fn holds(&self, s: StateId) -> bool {
        s < 64 && self.states & (1 << s) != 0
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether writes to state `s` can be held at all.
    #[inline(always)]
    pub(super) fn can_hold(s: StateId) -> bool {
        s < 64
    }

    /// Holds a write of `value` at `key` in state `s` (< 64), key group `kg`; returns whether the
    /// held ops must be applied now (they reached a limit).
    pub(super) fn push(
        &mut self,
        s: StateId,
        kg: u32,
        kind: Kind,
        key: &[u8],
        value: &[u8],
    ) -> bool {
        debug_assert!(Self::can_hold(s));
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.ops.push(Op {
            state: s,
            kg,
            kind,
            start,
            key_end,
            end: self.bytes.len(),
        });
        self.states |= 1 << s;
        self.ops.len() >= MAX_OPS || self.bytes.len() >= MAX_BYTES
    }

    /// The states that have held ops, as a bit set.
    pub(super) fn states(&self) -> u64 {
        self.states
    }

    /// Calls `apply(kg, kind, key, value)` for each of state `s`'s held ops, oldest first, and
    /// lets them go. Other states' ops stay, in their order: ops of different states never touch
    /// the same map, so only the order within a state matters.
    pub(super) fn drain_state(
        &mut self,
        s: StateId,
        mut apply: impl FnMut(u32, Kind, &[u8], &[u8]),
    ) {
        if !self.holds(s) {
            return;
        }
        let bytes = &self.bytes;
        if self.states == 1 << s {
            // Every held op is this state's (the usual case): no sorting out.
            for op in self.ops.drain(..) {
                apply(
                    op.kg,
                    op.kind,
                    &bytes[op.start..op.key_end],
                    &bytes[op.key_end..op.end],
                );
            }
        }
        // `retain` visits the ops in order, once each.
        self.ops.retain(|op| {
            if op.state != s {
                return true;
            }
            apply(
                op.kg,
                op.kind,
                &bytes[op.start..op.key_end],
                &bytes[op.key_end..op.end],
            );
            false
        });
        self.states &= !(1 << s);
        // The bytes of applied ops stay until none is held (and count towards MAX_BYTES).
        if self.ops.is_empty() {
            // A rare large value should not keep its buffer for good.
            if self.bytes.capacity() > 2 * MAX_BYTES {
                self.bytes = Vec::new();
            } else {
                self.bytes.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_come_back_in_order_and_limits_ask_for_a_drain() {
        let mut p = Pending::default();
        assert!(p.is_empty() && !p.holds(3));
        for i in 0..MAX_OPS - 1 {
            let full = p.push(3, i as u32, Kind::Put, &[i as u8], &[i as u8, 9]);
            assert!(!full, "op {i} is under both limits");
        }
        assert!(p.holds(3) && !p.holds(4));
        assert!(
            p.push(4, 99, Kind::Append, b"k", b""),
            "the 16th op fills it"
        );
        assert_eq!(p.states(), 1 << 3 | 1 << 4);
        let mut seen = Vec::new();
        p.drain_state(4, |kg, kind, k, v| {
            seen.push((4, kg, kind, k.to_vec(), v.to_vec()))
        });
        assert_eq!(seen, vec![(4, 99, Kind::Append, b"k".to_vec(), vec![])]);
        assert!(
            !p.is_empty() && p.holds(3) && !p.holds(4),
            "state 3's ops stay"
        );
        p.drain_state(3, |kg, kind, k, v| {
            seen.push((3, kg, kind, k.to_vec(), v.to_vec()))
        });
        assert_eq!(seen.len(), MAX_OPS);
        assert_eq!(
            seen[1],
            (3, 0, Kind::Put, vec![0], vec![0, 9]),
            "oldest first"
        );
        let last = MAX_OPS as u8 - 2;
        assert_eq!(
            seen[MAX_OPS - 1],
            (3, u32::from(last), Kind::Put, vec![last], vec![last, 9])
        );
        assert!(p.is_empty() && !p.holds(3) && !p.holds(4));

        assert!(
            p.push(0, 0, Kind::Put, b"k", &vec![1; MAX_BYTES]),
            "bytes limit"
        );
        assert!(!Pending::can_hold(64));
    }
}
