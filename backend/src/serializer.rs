//! Serializers: how typed keys, namespaces and values become bytes.
//!
//! Each serializer has an id and a version that state metadata records, so restoring a state with an
//! incompatible serializer fails with a migration error instead of misreading bytes.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub trait StateSerializer<T>: Send + Sync {
    fn serialize(&self, value: &T) -> Vec<u8>;
    /// Appends the serialized value to `out` (hot paths reuse one buffer).
    fn serialize_into(&self, value: &T, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.serialize(value));
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<T, String>;
    /// Identity of the format, e.g. `serde-postcard:u64`.
    fn id(&self) -> String;
    fn version(&self) -> u32;
}

/// The default: serde with postcard's compact, stable binary format. Its id names the Rust type, so
/// a state written as `u64` is not silently read as `String`.
pub struct Serde<T>(PhantomData<fn() -> T>);

impl<T> Default for Serde<T> {
    fn default() -> Self {
        Serde(PhantomData)
    }
}

impl<T: Serialize + DeserializeOwned + 'static> StateSerializer<T> for Serde<T> {
    fn serialize(&self, value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        self.serialize_into(value, &mut out);
        out
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<T, String> {
        match primitive::decode(bytes) {
            Some(v) => Ok(v),
            // Other types, and bytes the fast path refuses (postcard words the error).
            None => postcard::from_bytes(bytes).map_err(|e| e.to_string()),
        }
    }
    fn serialize_into(&self, value: &T, out: &mut Vec<u8>) {
        if !primitive::encode(value, out) {
            postcard::serialize_with_flavor(value, AppendTo(out))
                .expect("serde types serialize to postcard");
        }
    }
    fn id(&self) -> String {
        format!("serde-postcard:{}", std::any::type_name::<T>())
    }
    fn version(&self) -> u32 {
        1
    }
}

/// A postcard output that appends to a borrowed `Vec` with plain pushes (postcard's own
/// `to_extend` goes through `Extend` one byte at a time, a third of a list append's cost).
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();
    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }
    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // Varints and fixed-width numbers are at most 16 bytes: byte pushes after one reserve
        // cost less than a call to memcpy (9% of an in-cache map lookup).
        if data.len() <= 16 {
            self.0.reserve(data.len());
            for &b in data {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// postcard's encodings of the common number types, written and read without serde's machinery:
/// the bytes are postcard's (checked against postcard in the tests), in a fifth of the
/// instructions. Keys and values of Flink-shaped jobs are mostly these types. The type checks are
/// `TypeId` comparisons of constants, which the compiler folds away per type.
mod primitive {
    use std::any::Any;

    /// Unsigned LEB128, as postcard writes u16/u32/u64.
    fn put_varint(mut v: u64, out: &mut Vec<u8>) {
        // Ten bytes of room written in place, then cut to the varint's length: no capacity check
        // per byte (pushes were 15% of a list bulk append).
        let at = out.len();
        out.resize(at + 10, 0);
        let room: &mut [u8; 10] = (&mut out[at..at + 10]).try_into().expect("ten bytes");
        let mut n = 0;
        while v >= 0x80 {
            room[n] = v as u8 | 0x80;
            v >>= 7;
            n += 1;
        }
        room[n] = v as u8;
        out.truncate(at + n + 1);
    }

    /// postcard's varint read for a type of `bits` bits: at most `ceil(bits / 7)` bytes, and the
    /// last byte of a maximal one carries no bits past the type. Trailing bytes are ignored, as
    /// `postcard::from_bytes` ignores them. None where postcard fails.
    fn get_varint(bytes: &[u8], bits: u32) -> Option<u64> {
        let max = bits.div_ceil(7) as usize;
        let last_max = (1u64 << (bits % 7)) - 1;
        let mut out = 0u64;
        for (i, &b) in bytes.iter().take(max).enumerate() {
            out |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return (i < max - 1 || b as u64 <= last_max).then_some(out);
            }
        }
        None
    }

    /// Writes `value` if its type is one of the fast ones; false otherwise (nothing written).
    pub(super) fn encode<T: 'static>(value: &T, out: &mut Vec<u8>) -> bool {
        let v = value as &dyn Any;
        if let Some(v) = v.downcast_ref::<u64>() {
            put_varint(*v, out);
        } else if let Some(v) = v.downcast_ref::<u32>() {
            put_varint(*v as u64, out);
        } else if let Some(v) = v.downcast_ref::<i64>() {
            put_varint(((v << 1) ^ (v >> 63)) as u64, out);
        } else if let Some(v) = v.downcast_ref::<i32>() {
            put_varint(((v << 1) ^ (v >> 31)) as u32 as u64, out);
        } else if let Some(v) = v.downcast_ref::<f64>() {
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        } else {
            return false;
        }
        true
    }

    /// Reads a value of one of the fast types; None for other types and for bytes postcard would
    /// refuse (the caller then asks postcard, for its error).
    pub(super) fn decode<T: 'static>(bytes: &[u8]) -> Option<T> {
        let mut out: Option<T> = None;
        let o = &mut out as &mut dyn Any;
        if let Some(o) = o.downcast_mut::<Option<u64>>() {
            *o = get_varint(bytes, 64);
        } else if let Some(o) = o.downcast_mut::<Option<u32>>() {
            *o = get_varint(bytes, 32).map(|v| v as u32);
        } else if let Some(o) = o.downcast_mut::<Option<i64>>() {
            *o = get_varint(bytes, 64).map(|n| (n >> 1) as i64 ^ -((n & 1) as i64));
        } else if let Some(o) = o.downcast_mut::<Option<i32>>() {
            *o = get_varint(bytes, 32).map(|n| ((n >> 1) as i32) ^ -((n & 1) as i32));
        } else if let Some(o) = o.downcast_mut::<Option<f64>>() {
            *o = bytes
                .first_chunk::<8>()
                .map(|b| f64::from_bits(u64::from_le_bytes(*b)));
        }
        out
    }
}

/// Identity and version of a serializer, as recorded in state metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerializerId {
    pub id: String,
    pub version: u32,
}

impl SerializerId {
    pub fn of<T>(s: &dyn StateSerializer<T>) -> Self {
        SerializerId {
            id: s.id(),
            version: s.version(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The fast path writes postcard's bytes and reads what postcard reads, for every type it
    /// covers; on bytes postcard refuses it refuses too (so postcard's error is reported).
    fn agrees<T>(value: T, junk: &[u8])
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + 'static,
    {
        let s = Serde::<T>::default();
        let want = postcard::to_allocvec(&value).unwrap();
        assert_eq!(s.serialize(&value), want, "{value:?}");
        let mut out = vec![9u8];
        s.serialize_into(&value, &mut out);
        assert_eq!(&out[1..], &want[..]);
        assert_eq!(s.deserialize(&want).unwrap(), value);
        match postcard::from_bytes::<T>(junk) {
            // Compared as bytes: junk can read as a NaN.
            Ok(v) => assert_eq!(
                postcard::to_allocvec(&s.deserialize(junk).unwrap()).unwrap(),
                postcard::to_allocvec(&v).unwrap(),
                "{junk:?}"
            ),
            Err(e) => assert_eq!(s.deserialize(junk).unwrap_err(), e.to_string(), "{junk:?}"),
        }
    }

    #[test]
    fn edge_values_match_postcard() {
        let junk: &[&[u8]] = &[
            &[],
            &[0x80],
            &[0xff; 11],
            &[0x80, 0x00],
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
            &[0xff, 0xff, 0xff, 0xff, 0x10],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[1, 2, 3, 4, 5, 6, 7],
        ];
        for j in junk {
            for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
                agrees(v, j);
            }
            for v in [0u32, 127, 128, u32::MAX] {
                agrees(v, j);
            }
            for v in [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX] {
                agrees(v, j);
            }
            for v in [0i32, -1, 1, i32::MIN, i32::MAX] {
                agrees(v, j);
            }
            for v in [0.0f64, -0.0, 1.5, f64::MAX, f64::INFINITY] {
                agrees(v, j);
            }
        }
    }

    proptest! {
        #[test]
        fn random_values_and_bytes_match_postcard(
            a in any::<u64>(), b in any::<u32>(), c in any::<i64>(), d in any::<i32>(),
            e in any::<f64>().prop_filter("NaN != NaN", |x| !x.is_nan()),
            junk in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            agrees(a, &junk);
            agrees(b, &junk);
            agrees(c, &junk);
            agrees(d, &junk);
            agrees(e, &junk);
        }
    }
}
