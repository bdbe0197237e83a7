//! The snapshot format, also the canonical savepoint format (docs/SAVEPOINT_FORMAT.md): one file of
//! per-state metadata and key-group blocks of (composite key, value) records, with an index of block
//! offsets at the end, so a restore reads only the key groups it owns (rescaling is a seek, not a
//! scan). Every backend writes and reads it, so state moves between heap, rocksdb and forst.
//!
//! ```text
//! "SFSNAP01" | u32 header_len | header (postcard: max parallelism, range, state metadata)
//! block(kg) ... : records [u16 state][u32 count][(u32 klen, key, u32 vlen, value) x count]
//! index (postcard: [(kg, offset, len, crc32c)]) | u64 index_offset | u32 index_len | u32 index_crc | "SFSNAP01"
//! ```

use serde::{Deserialize, Serialize};

use crate::backend::{SnapshotView, StateBackend, StateKind, StateMeta};
use crate::error::{StateError, StateResult};
use crate::keygroup::KeyGroupRange;
use crate::ttl;

const MAGIC: &[u8; 8] = b"SFSNAP01";
const TRAILER: usize = 8 + 4 + 4 + 8;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    pub max_parallelism: u32,
    pub range: KeyGroupRange,
    pub states: Vec<StateMeta>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct IndexEntry {
    kg: u32,
    offset: u64,
    len: u64,
    crc: u32,
}

/// Writes a full snapshot of `view`. With `now_ms`, entries of states whose TTL asks for full-snapshot
/// cleanup are left out when expired.
pub fn write(view: &dyn SnapshotView, now_ms: u64) -> StateResult<Vec<u8>> {
    let states = view.states();
    let header = Header {
        max_parallelism: view.max_parallelism(),
        range: view.key_group_range(),
        states: states.clone(),
    };
    let hbytes = postcard::to_allocvec(&header).expect("header serializes");
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(hbytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&hbytes);
    let mut index = Vec::new();
    for kg in header.range.iter() {
        let start = out.len();
        for (s, meta) in states.iter().enumerate() {
            let mut entries = view.key_group_entries(s, kg)?;
            if let Some(t) = meta.ttl.filter(|t| t.cleanup_full_snapshot) {
                entries = entries
                    .into_iter()
                    .filter_map(|(k, v)| drop_expired(meta, &t, now_ms, k, v))
                    .collect();
            }
            if entries.is_empty() {
                continue;
            }
            out.extend_from_slice(&(s as u16).to_le_bytes());
            out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for (k, v) in entries {
                out.extend_from_slice(&(k.len() as u32).to_le_bytes());
                out.extend_from_slice(&k);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(&v);
            }
        }
        if out.len() > start {
            let crc = crc32c::crc32c(&out[start..]);
            index.push(IndexEntry {
                kg,
                offset: start as u64,
                len: (out.len() - start) as u64,
                crc,
            });
        }
    }
    finish(&mut out, &index);
    Ok(out)
}

/// Appends the index and the trailer that ends a snapshot.
fn finish(out: &mut Vec<u8>, index: &[IndexEntry]) {
    let ibytes = postcard::to_allocvec(index).expect("index serializes");
    let index_offset = out.len() as u64;
    out.extend_from_slice(&ibytes);
    out.extend_from_slice(&index_offset.to_le_bytes());
    out.extend_from_slice(&(ibytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&ibytes).to_le_bytes());
    out.extend_from_slice(MAGIC);
}

/// A snapshot file from a header's bytes and (key group, block bytes) pairs, with the index,
/// checksums and trailer a reader checks made right: for fuzzing what lies behind the checksums.
#[doc(hidden)]
pub fn assemble(header: &[u8], blocks: &[(u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header);
    let mut index = Vec::new();
    for (kg, block) in blocks {
        index.push(IndexEntry {
            kg: *kg,
            offset: out.len() as u64,
            len: block.len() as u64,
            crc: crc32c::crc32c(block),
        });
        out.extend_from_slice(block);
    }
    finish(&mut out, &index);
    out
}

/// A snapshot's header bytes and its (key group, block bytes).
pub type Parts = (Vec<u8>, Vec<(u32, Vec<u8>)>);

/// The header bytes and (key group, block bytes) of a snapshot: what [`assemble`] takes.
#[doc(hidden)]
pub fn disassemble(bytes: &[u8]) -> StateResult<Parts> {
    let src = bytes.to_vec();
    let r = SnapshotReader::open(&src, "snapshot")?;
    let hlen = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let blocks = r
        .index
        .iter()
        .map(|e| {
            (
                e.kg,
                bytes[e.offset as usize..(e.offset + e.len) as usize].to_vec(),
            )
        })
        .collect();
    Ok((bytes[12..12 + hlen].to_vec(), blocks))
}

/// Drops an expired value, or the expired elements of a list.
fn drop_expired(
    meta: &StateMeta,
    t: &ttl::TtlConfig,
    now: u64,
    k: Vec<u8>,
    v: Vec<u8>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    if meta.kind == StateKind::List {
        let kept: Vec<Vec<u8>> = crate::states::decode_list(&v)
            .ok()?
            .into_iter()
            .filter(|e| ttl::unwrap(e).is_some_and(|(stamp, _)| !ttl::expired(t, stamp, now)))
            .collect();
        return (!kept.is_empty()).then(|| (k, crate::states::encode_list(&kept)));
    }
    match ttl::unwrap(&v) {
        Some((stamp, _)) if !ttl::expired(t, stamp, now) => Some((k, v)),
        _ => None,
    }
}

/// One record of a key group: (state index in the header, composite key, value).
pub type Record = (usize, Vec<u8>, Vec<u8>);

/// Where snapshot bytes come from: memory, or ranged reads of an object.
pub trait ByteSource {
    fn len(&self) -> StateResult<u64>;
    fn read(&self, offset: u64, len: u64) -> StateResult<Vec<u8>>;
    fn is_empty(&self) -> StateResult<bool> {
        Ok(self.len()? == 0)
    }
}

impl ByteSource for Vec<u8> {
    fn len(&self) -> StateResult<u64> {
        Ok(Vec::len(self) as u64)
    }
    fn read(&self, offset: u64, len: u64) -> StateResult<Vec<u8>> {
        match offset
            .checked_add(len)
            .filter(|e| *e <= Vec::len(self) as u64)
        {
            Some(e) => Ok(self[offset as usize..e as usize].to_vec()),
            None => Err(StateError::corrupt("snapshot", "truncated")),
        }
    }
}

/// An object in checkpoint storage, read with ranged GETs.
pub struct RemoteObject<'a> {
    pub store: &'a dyn statefs_store::RemoteStore,
    pub key: String,
}

impl ByteSource for RemoteObject<'_> {
    fn len(&self) -> StateResult<u64> {
        self.store
            .head(&self.key)
            .map_err(StateError::reading_checkpoint)
    }
    fn read(&self, offset: u64, len: u64) -> StateResult<Vec<u8>> {
        let b = self.store.get_range(&self.key, offset..offset + len)?;
        if b.len() as u64 != len {
            return Err(StateError::corrupt(
                "checkpoint",
                format!("file {} is shorter than its index", self.key),
            ));
        }
        Ok(b.to_vec())
    }
}

/// A parsed snapshot: header and index; key groups are read on demand.
pub struct SnapshotReader<'a> {
    src: &'a dyn ByteSource,
    pub header: Header,
    index: Vec<IndexEntry>,
    what: String,
}

impl<'a> SnapshotReader<'a> {
    pub fn open(src: &'a dyn ByteSource, what: &str) -> StateResult<Self> {
        let bad = |why: &str| StateError::corrupt(what.to_string(), why.to_string());
        let len = src.len()?;
        if len < (8 + 4 + TRAILER) as u64 {
            return Err(bad("too short to be a snapshot"));
        }
        let head = src.read(0, 12)?;
        if &head[..8] != MAGIC {
            return Err(bad("not a statefs snapshot (bad magic)"));
        }
        let trailer = src.read(len - TRAILER as u64, TRAILER as u64)?;
        if &trailer[16..24] != MAGIC {
            return Err(bad("truncated: no trailer"));
        }
        let index_offset = u64::from_le_bytes(trailer[..8].try_into().unwrap());
        let index_len = u32::from_le_bytes(trailer[8..12].try_into().unwrap()) as u64;
        let index_crc = u32::from_le_bytes(trailer[12..16].try_into().unwrap());
        if index_offset.checked_add(index_len) != Some(len - TRAILER as u64) {
            return Err(bad("index out of place"));
        }
        let ibytes = src.read(index_offset, index_len)?;
        if crc32c::crc32c(&ibytes) != index_crc {
            return Err(bad("index checksum mismatch"));
        }
        let index: Vec<IndexEntry> =
            postcard::from_bytes(&ibytes).map_err(|e| bad(&format!("index: {e}")))?;
        let hlen = u32::from_le_bytes(head[8..12].try_into().unwrap()) as u64;
        if 12 + hlen > index_offset {
            return Err(bad("header runs past the data"));
        }
        let header: Header =
            postcard::from_bytes(&src.read(12, hlen)?).map_err(|e| bad(&format!("header: {e}")))?;
        let maxp = header.max_parallelism;
        if !(1..=crate::keygroup::MAX_MAX_PARALLELISM).contains(&maxp)
            || header.range.start > header.range.end
            || header.range.end >= maxp
        {
            return Err(bad(&format!(
                "key groups {}..={} of max parallelism {maxp}",
                header.range.start, header.range.end
            )));
        }
        if header.states.len() > u16::MAX as usize + 1 {
            return Err(bad("more states than records can name"));
        }
        let mut seen = std::collections::HashSet::new();
        for e in &index {
            if !header.range.contains(e.kg)
                || e.offset < 12 + hlen
                || e.offset
                    .checked_add(e.len)
                    .is_none_or(|end| end > index_offset)
            {
                return Err(bad("index entry outside the file or the range"));
            }
            if !seen.insert(e.kg) {
                return Err(bad("key group indexed twice"));
            }
        }
        Ok(SnapshotReader {
            src,
            header,
            index,
            what: what.to_string(),
        })
    }

    /// Records of key group `kg`: (state index in the header, composite key, value).
    pub fn key_group(&self, kg: u32) -> StateResult<Vec<Record>> {
        let Some(e) = self.index.iter().find(|e| e.kg == kg) else {
            return Ok(Vec::new());
        };
        let block = self.src.read(e.offset, e.len)?;
        let bad =
            |why: &str| StateError::corrupt(self.what.clone(), format!("key group {kg}: {why}"));
        if crc32c::crc32c(&block) != e.crc {
            return Err(bad("checksum mismatch"));
        }
        let mut out = Vec::new();
        let mut p = 0usize;
        let take = |p: &mut usize, n: usize| -> StateResult<&[u8]> {
            let s = block
                .get(*p..*p + n)
                .ok_or_else(|| bad("record runs past its block"))?;
            *p += n;
            Ok(s)
        };
        while p < block.len() {
            let s = u16::from_le_bytes(take(&mut p, 2)?.try_into().unwrap()) as usize;
            if s >= self.header.states.len() {
                return Err(bad("record of an unknown state"));
            }
            let n = u32::from_le_bytes(take(&mut p, 4)?.try_into().unwrap());
            for _ in 0..n {
                let kl = u32::from_le_bytes(take(&mut p, 4)?.try_into().unwrap()) as usize;
                let k = take(&mut p, kl)?.to_vec();
                let vl = u32::from_le_bytes(take(&mut p, 4)?.try_into().unwrap()) as usize;
                let v = take(&mut p, vl)?.to_vec();
                out.push((s, k, v));
            }
        }
        Ok(out)
    }
}

/// Loads the key groups of `backend`'s range from snapshots `sources` (e.g. the handles of all old
/// subtasks when rescaling). States are adopted from the headers; a registering descriptor later
/// checks compatibility.
pub fn restore(
    backend: &mut dyn StateBackend,
    sources: &[(&dyn ByteSource, String)],
) -> StateResult<()> {
    for (src, what) in sources {
        let r = SnapshotReader::open(*src, what)?;
        if r.header.max_parallelism != backend.max_parallelism() {
            return Err(StateError::Invalid(format!(
                "{what} was written with max parallelism {}, this backend has {}",
                r.header.max_parallelism,
                backend.max_parallelism()
            )));
        }
        let ids: Vec<_> = r
            .header
            .states
            .iter()
            .map(|m| backend.adopt(m.clone()))
            .collect::<StateResult<_>>()?;
        let Some(range) = r.header.range.intersect(&backend.key_group_range()) else {
            continue;
        };
        for kg in range.iter() {
            let mut per_state: Vec<Vec<_>> = vec![Vec::new(); ids.len()];
            for (s, k, v) in r.key_group(kg)? {
                per_state[s].push((kg, k, v));
            }
            for (s, entries) in per_state.into_iter().enumerate() {
                if !entries.is_empty() {
                    backend.load(ids[s], entries)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header whose key-group range is empty, reversed or outside its max parallelism is
    /// refused as corrupt: before, `len()` and restore's loops underflowed or ran past the range.
    #[test]
    fn headers_with_impossible_ranges_are_refused() {
        for (maxp, start, end) in [
            (128, 5, 2),
            (128, 0, 128),
            (0, 0, 0),
            (40000, 0, 10),
            (1, 0, u32::MAX),
        ] {
            let header = Header {
                max_parallelism: maxp,
                range: KeyGroupRange { start, end },
                states: Vec::new(),
            };
            let bytes = assemble(&postcard::to_allocvec(&header).unwrap(), &[]);
            let err = SnapshotReader::open(&bytes, "test").err().expect("refused");
            assert!(err.to_string().contains("key groups"), "{err}");
        }
        let ok = Header {
            max_parallelism: 128,
            range: KeyGroupRange::new(0, 127),
            states: Vec::new(),
        };
        let bytes = assemble(&postcard::to_allocvec(&ok).unwrap(), &[]);
        SnapshotReader::open(&bytes, "test").unwrap();
        // A key group indexed twice is refused too.
        let bytes = assemble(
            &postcard::to_allocvec(&ok).unwrap(),
            &[(3, b"x"), (3, b"y")],
        );
        let err = SnapshotReader::open(&bytes, "test").err().expect("refused");
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
