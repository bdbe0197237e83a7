//! Cold reads: aligned blocks of files that have no local copy, in a bounded in-memory LRU.
//!
//! A read is served from blocks of `block_size` bytes fetched with ranged GETs; contiguous missing
//! blocks are fetched with one GET. A reader that keeps reading where it stopped (compaction, scans)
//! gets a read-ahead window that doubles up to `max_readahead`; a point lookup fetches only the blocks
//! it touches, never the whole file. Concurrent misses on one block make one remote request: the
//! first reader fetches, the others wait for it.
//!
//! Keys are object keys, which name one immutable version of a file: a block can never be stale.

use std::collections::HashMap;
use std::sync::{Arc, Condvar};

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;

use crate::store::{RemoteStore, StoreError};

/// Block store settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockConfig {
    /// `statefs.cache.block.size` (default 64 KiB): alignment and unit of cold reads.
    pub block_size: u64,
    /// `statefs.cache.block.memory` (default 64 MiB): memory for cold blocks.
    pub memory: u64,
    /// `statefs.cache.block.max-readahead` (default 4 MiB): largest read-ahead of a sequential reader.
    pub max_readahead: u64,
    /// `statefs.cache.block.in-flight` (default 64): cold reads waiting on the store at once, each
    /// on a read thread of its own (apart from the upload threads).
    pub in_flight: usize,
}

impl Default for BlockConfig {
    fn default() -> Self {
        BlockConfig {
            block_size: 64 << 10,
            memory: 64 << 20,
            max_readahead: 4 << 20,
            in_flight: 64,
        }
    }
}

type BlockId = (Arc<str>, u64);

#[derive(Debug, Default)]
struct Flight {
    result: std::sync::Mutex<Option<Result<Bytes, String>>>,
    done: Condvar,
}

impl Flight {
    fn finish(&self, r: Result<Bytes, String>) {
        *self.result.lock().unwrap() = Some(r);
        self.done.notify_all();
    }
    fn wait(&self) -> Result<Bytes, String> {
        let mut g = self.result.lock().unwrap();
        while g.is_none() {
            g = self.done.wait(g).unwrap();
        }
        g.clone().unwrap()
    }
}

#[derive(Debug)]
struct Inner {
    blocks: LruCache<BlockId, Bytes>,
    flights: HashMap<BlockId, Arc<Flight>>,
}

/// Per-handle sequential-read detector.
#[derive(Debug, Default)]
pub struct ReadPattern {
    next: u64,
    window: u64,
}

impl ReadPattern {
    /// Read-ahead bytes for a read at `offset..end`, updating the pattern.
    fn advance(&mut self, offset: u64, end: u64, cfg: &BlockConfig) -> u64 {
        if offset == self.next && offset != 0 {
            self.window = (self.window * 2).clamp(cfg.block_size, cfg.max_readahead);
        } else {
            self.window = 0;
        }
        self.next = end;
        self.window
    }
}

#[derive(Debug)]
pub struct BlockCache {
    cfg: BlockConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockStats {
    pub hits: u64,
    pub misses: u64,
    pub gets: u64,
}

/// An object of the store and its size, as a read names it.
#[derive(Clone, Copy)]
pub struct ObjectRef<'a> {
    pub remote: &'a dyn RemoteStore,
    pub key: &'a str,
    pub size: u64,
}

impl BlockCache {
    pub fn new(cfg: BlockConfig) -> BlockCache {
        let capacity = (cfg.memory / cfg.block_size.max(1)).max(1) as usize;
        BlockCache {
            cfg,
            inner: Mutex::new(Inner {
                blocks: LruCache::new(std::num::NonZeroUsize::new(capacity).expect("at least one")),
                flights: HashMap::new(),
            }),
        }
    }

    pub fn config(&self) -> &BlockConfig {
        &self.cfg
    }

    /// Bytes of blocks held in memory now: at most `memory` (rounded down to whole blocks, and
    /// at least one block); fetches in flight are held by their readers, not here.
    pub fn resident_bytes(&self) -> u64 {
        self.inner
            .lock()
            .blocks
            .iter()
            .map(|(_, b)| b.len() as u64)
            .sum()
    }

    /// Reads `offset..offset+len` of the object (clipped to its size).
    /// The read-ahead of a read of `len` bytes at `offset` of an object of `size` bytes, from the
    /// reader's `pattern` (updated). Kept apart from [`BlockCache::read`] so that a handle's
    /// pattern is locked only for this, never during a fetch: reads of one handle from many
    /// threads fetch at the same time.
    pub fn readahead(&self, pattern: &mut ReadPattern, offset: u64, len: u64, size: u64) -> u64 {
        let end = (offset + len).min(size);
        if offset >= end {
            return 0;
        }
        pattern.advance(offset, end, &self.cfg)
    }

    pub fn read(
        &self,
        obj: ObjectRef<'_>,
        offset: u64,
        len: u64,
        readahead: u64,
        stats: &mut BlockStats,
    ) -> Result<Vec<u8>, StoreError> {
        let ObjectRef { remote, key, size } = obj;
        let end = (offset + len).min(size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let bs = self.cfg.block_size;
        let first = offset / bs;
        let last = (end - 1) / bs;
        let last_ahead = ((end + readahead).min(size) - 1) / bs;
        let key: Arc<str> = Arc::from(key);

        // Under the lock: take what is cached, join flights of others, and claim the rest.
        let mut have: HashMap<u64, Bytes> = HashMap::new();
        let mut waiting: Vec<(u64, Arc<Flight>)> = Vec::new();
        let mut claimed: Vec<u64> = Vec::new();
        {
            let mut inner = self.inner.lock();
            for b in first..=last {
                let id = (key.clone(), b);
                if let Some(data) = inner.blocks.get(&id) {
                    have.insert(b, data.clone());
                    stats.hits += 1;
                } else if let Some(f) = inner.flights.get(&id) {
                    waiting.push((b, f.clone()));
                } else {
                    inner.flights.insert(id, Arc::new(Flight::default()));
                    claimed.push(b);
                    stats.misses += 1;
                }
            }
            // Read-ahead: the window after the read, fetched when the reader reaches its edge (the
            // next block is not cached) — not one block per read — and only up to the first block
            // that is cached or already being fetched, so it stays one contiguous GET.
            let at_edge = last < last_ahead && !inner.blocks.contains(&(key.clone(), last + 1));
            if at_edge {
                for b in last + 1..=last_ahead {
                    let id = (key.clone(), b);
                    if inner.blocks.contains(&id) || inner.flights.contains_key(&id) {
                        break;
                    }
                    inner.flights.insert(id, Arc::new(Flight::default()));
                    claimed.push(b);
                }
            }
        }

        // Fetch claimed blocks, one GET per contiguous run.
        let mut failure = None;
        for run in runs(&claimed) {
            let (a, b) = (run[0], *run.last().unwrap());
            let range = a * bs..((b + 1) * bs).min(size);
            stats.gets += 1;
            let fetched = remote.get_range(&key, range.clone());
            let mut inner = self.inner.lock();
            for blk in a..=b {
                let id = (key.clone(), blk);
                let flight = inner.flights.remove(&id);
                match &fetched {
                    Ok(data) => {
                        let lo = ((blk - a) * bs) as usize;
                        let hi = (lo + bs as usize).min(data.len());
                        let piece = data.slice(lo.min(hi)..hi);
                        inner.blocks.put(id, piece.clone());
                        if blk <= last {
                            have.insert(blk, piece.clone());
                        }
                        if let Some(f) = flight {
                            f.finish(Ok(piece));
                        }
                    }
                    Err(e) => {
                        if let Some(f) = flight {
                            f.finish(Err(e.to_string()));
                        }
                    }
                }
            }
            if let Err(e) = fetched {
                failure.get_or_insert(e);
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        for (b, f) in waiting {
            match f.wait() {
                Ok(data) => {
                    have.insert(b, data);
                    stats.hits += 1;
                }
                Err(message) => {
                    return Err(StoreError::Unavailable {
                        op: "get_range",
                        key: key.to_string(),
                        message,
                    });
                }
            }
        }

        let mut out = Vec::with_capacity((end - offset) as usize);
        for b in first..=last {
            let data = &have[&b];
            let block_start = b * bs;
            let lo = offset.max(block_start) - block_start;
            let hi = (end.min(block_start + bs) - block_start).min(data.len() as u64);
            out.extend_from_slice(&data[lo as usize..hi as usize]);
        }
        Ok(out)
    }

    /// Whether every block of `offset..offset+len` of object `key` (of `size` bytes) is in memory.
    /// Leaves the LRU order alone.
    pub fn holds(&self, key: &str, size: u64, offset: u64, len: u64) -> bool {
        let end = (offset + len).min(size);
        if offset >= end {
            return true;
        }
        let bs = self.cfg.block_size;
        let key: Arc<str> = Arc::from(key);
        let inner = self.inner.lock();
        (offset / bs..=(end - 1) / bs).all(|b| inner.blocks.contains(&(key.clone(), b)))
    }

    /// Drops every block of `key` (its file was deleted).
    pub fn forget(&self, key: &str) {
        let mut inner = self.inner.lock();
        let ids: Vec<BlockId> = inner
            .blocks
            .iter()
            .filter(|((k, _), _)| &**k == key)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            inner.blocks.pop(&id);
        }
    }
}

/// Splits sorted block numbers into contiguous runs.
fn runs(blocks: &[u64]) -> Vec<Vec<u64>> {
    let mut out: Vec<Vec<u64>> = Vec::new();
    for &b in blocks {
        match out.last_mut() {
            Some(run) if *run.last().unwrap() + 1 == b => run.push(b),
            _ => out.push(vec![b]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MetricsRemote, ObjectStoreRemote, RemoteMetrics};
    use std::sync::atomic::Ordering;

    fn setup(
        size: usize,
    ) -> (
        Arc<RemoteMetrics>,
        MetricsRemote<ObjectStoreRemote>,
        Vec<u8>,
    ) {
        let rt = crate::mount::runtime().unwrap();
        let metrics = Arc::new(RemoteMetrics::default());
        let remote = MetricsRemote::new(ObjectStoreRemote::in_memory(rt), metrics.clone());
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        remote.put("data/f", Bytes::from(data.clone())).unwrap();
        metrics.puts.store(0, Ordering::Relaxed);
        (metrics, remote, data)
    }

    fn cfg() -> BlockConfig {
        BlockConfig {
            block_size: 4096,
            memory: 1 << 20,
            max_readahead: 64 << 10,
            in_flight: 4,
        }
    }

    #[test]
    fn holds_names_exactly_the_ranges_in_memory() {
        // The FUSE adapter reads inline what `holds` says is in memory, and sends the rest to
        // the store threads: a wrong `true` would make a worker wait on the store.
        let (_, remote, data) = setup(100_000);
        let size = data.len() as u64;
        let cache = BlockCache::new(cfg());
        assert!(!cache.holds("data/f", size, 0, 1));
        let obj = ObjectRef {
            remote: &remote,
            key: "data/f",
            size,
        };
        let mut st = BlockStats::default();
        // Blocks 1 and 2 (4096..12288).
        cache.read(obj, 5000, 5000, 0, &mut st).unwrap();
        assert!(cache.holds("data/f", size, 4096, 8192));
        assert!(cache.holds("data/f", size, 6000, 100));
        assert!(
            !cache.holds("data/f", size, 4000, 200),
            "block 0 is not there"
        );
        assert!(
            !cache.holds("data/f", size, 12000, 500),
            "block 3 is not there"
        );
        assert!(!cache.holds("data/g", size, 6000, 100), "another object");
        // Nothing to fetch at or past the end.
        assert!(cache.holds("data/f", size, size, 4096));
        cache.forget("data/f");
        assert!(!cache.holds("data/f", size, 6000, 100));
    }

    /// However many cold blocks are read, by however many readers, the memory they stay in is
    /// the configured bound.
    #[test]
    fn resident_blocks_stay_within_the_memory_bound() {
        let (_, remote, data) = setup(4 << 20);
        let size = data.len() as u64;
        let cache = BlockCache::new(cfg());
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (cache, remote) = (&cache, &remote);
                s.spawn(move || {
                    let obj = ObjectRef {
                        remote,
                        key: "data/f",
                        size,
                    };
                    let mut st = BlockStats::default();
                    let mut pattern = ReadPattern::default();
                    // Sequential (readahead grows to its maximum), from a different start each.
                    let mut off = t * (1 << 20);
                    for _ in 0..400 {
                        let ahead = cache.readahead(&mut pattern, off % size, 8192, size);
                        cache.read(obj, off % size, 8192, ahead, &mut st).unwrap();
                        assert!(cache.resident_bytes() <= cfg().memory);
                        off += 8192;
                    }
                });
            }
        });
        assert!(cache.resident_bytes() <= cfg().memory);
        assert!(
            cache.resident_bytes() >= cfg().memory / 2,
            "the cache holds blocks"
        );
    }

    #[test]
    fn point_reads_fetch_only_their_blocks() {
        let (m, remote, data) = setup(1 << 20);
        let cache = BlockCache::new(cfg());
        let mut st = BlockStats::default();
        let got = cache
            .read(
                ObjectRef {
                    remote: &remote,
                    key: "data/f",
                    size: data.len() as u64,
                },
                500_000,
                100,
                0,
                &mut st,
            )
            .unwrap();
        assert_eq!(got, &data[500_000..500_100]);
        assert_eq!(
            m.get_bytes.load(Ordering::Relaxed),
            4096,
            "one block, not the file"
        );
        // Spanning two blocks: one GET of both.
        let got = cache
            .read(
                ObjectRef {
                    remote: &remote,
                    key: "data/f",
                    size: data.len() as u64,
                },
                8190,
                10,
                0,
                &mut st,
            )
            .unwrap();
        assert_eq!(got, &data[8190..8200]);
        assert_eq!(m.gets.load(Ordering::Relaxed), 2);
        // Cached now.
        cache
            .read(
                ObjectRef {
                    remote: &remote,
                    key: "data/f",
                    size: data.len() as u64,
                },
                500_010,
                50,
                0,
                &mut st,
            )
            .unwrap();
        assert_eq!(m.gets.load(Ordering::Relaxed), 2);
        assert_eq!(st.hits, 1);
    }

    #[test]
    fn sequential_readers_get_growing_readahead() {
        let (m, remote, data) = setup(1 << 20);
        let cache = BlockCache::new(cfg());
        let mut st = BlockStats::default();
        let mut p = ReadPattern::default();
        let mut out = Vec::new();
        let mut off = 0;
        while off < data.len() as u64 {
            let ahead = cache.readahead(&mut p, off, 4096, data.len() as u64);
            out.extend(
                cache
                    .read(
                        ObjectRef {
                            remote: &remote,
                            key: "data/f",
                            size: data.len() as u64,
                        },
                        off,
                        4096,
                        ahead,
                        &mut st,
                    )
                    .unwrap(),
            );
            off += 4096;
        }
        assert_eq!(out, data);
        let gets = m.gets.load(Ordering::Relaxed);
        assert!(gets < 40, "{gets} GETs for 256 sequential block reads");
        assert_eq!(
            m.get_bytes.load(Ordering::Relaxed),
            data.len() as u64,
            "nothing fetched twice"
        );
    }

    #[test]
    fn concurrent_misses_on_one_block_make_one_request() {
        let (m, remote, data) = setup(1 << 16);
        let remote = Arc::new(remote);
        let cache = Arc::new(BlockCache::new(cfg()));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, remote) = (cache.clone(), remote.clone());
                std::thread::spawn(move || {
                    let mut st = BlockStats::default();
                    cache
                        .read(
                            ObjectRef {
                                remote: remote.as_ref(),
                                key: "data/f",
                                size: 1 << 16,
                            },
                            100,
                            200,
                            0,
                            &mut st,
                        )
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), &data[100..300]);
        }
        assert_eq!(m.gets.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn reads_past_the_end_are_clipped() {
        let (_, remote, data) = setup(10_000);
        let cache = BlockCache::new(cfg());
        let mut st = BlockStats::default();
        let got = cache
            .read(
                ObjectRef {
                    remote: &remote,
                    key: "data/f",
                    size: 10_000,
                },
                9_000,
                5_000,
                0,
                &mut st,
            )
            .unwrap();
        assert_eq!(got, &data[9_000..]);
        assert!(
            cache
                .read(
                    ObjectRef {
                        remote: &remote,
                        key: "data/f",
                        size: 10_000,
                    },
                    10_000,
                    10,
                    0,
                    &mut st
                )
                .unwrap()
                .is_empty()
        );
    }
}
