//! Warming a cold start: when a sealed file with no local copy is opened for reading (RocksDB
//! opens every SST of a database when it opens it), its object is fetched in the background, with
//! many GETs in flight, and its bytes handed to the kernel's page cache of the inode
//! ([`PageCache`]: FUSE's notify-store). Reads then find their pages in memory, as on a local disk
//! whose page cache is warm, instead of paying a round trip to the store per block.
//!
//! Order: the tail of every file first (RocksDB reads each SST's footer, index and filter blocks
//! at open, and needs them for every lookup), then the bodies, in pieces, files in the order they
//! were opened.
//!
//! Invariants:
//! - **Never wrong bytes.** An object key names one immutable version of a file (a rewrite of the
//!   file gets a new key), and a piece is stored for the inode only if the inode still maps to that
//!   key when the piece arrives: a file rewritten or removed meanwhile gets nothing.
//! - **Bounded.** At most `memory` bytes are handed over per mount (each file's bytes are counted
//!   when it is scheduled; a file that does not fit is not warmed), with at most `in_flight` GETs
//!   at once. Pages handed over are clean: the kernel reclaims them under memory pressure like any
//!   other page cache, and a reclaimed page is read through the mount again.
//! - **Best effort.** A failed GET or a refused store only means that those pages are read through
//!   the mount when asked for; nothing waits for the warmer, and stopping the mount drops what is
//!   queued.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;

use crate::table::Ino;

/// The kernel's page cache of the mount's inodes (the FUSE adapter's notify-store).
pub trait PageCache: Send + Sync {
    /// Hands `data` at `offset` of inode `ino` to the page cache.
    fn store(&self, ino: Ino, offset: u64, data: &[u8]) -> std::io::Result<()>;
}

/// `statefs.cache.warm.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmConfig {
    /// `statefs.cache.warm.memory` (default 1 GiB): bytes handed to the page cache per mount; 0
    /// turns warming off.
    pub memory: u64,
    /// `statefs.cache.warm.in-flight` (default 32): GETs of the warmer at once.
    pub in_flight: usize,
}

impl Default for WarmConfig {
    fn default() -> Self {
        WarmConfig {
            memory: 1 << 30,
            in_flight: 32,
        }
    }
}

/// Bytes of a file's tail fetched first.
const TAIL: u64 = 1 << 20;
/// Bytes per GET of a body.
const PIECE: u64 = 4 << 20;
/// Bytes per notify-store (the kernel copies them page by page), a multiple of the page size.
const STORE_CHUNK: usize = 1 << 20;
/// The page size the pieces align to (the kernel's on every platform statefs runs on; a larger
/// page only makes some pages read on demand).
const PAGE: u64 = 4096;

/// Counters of the warmer (`statefs_warm_*`).
#[derive(Debug, Default)]
pub struct WarmMetrics {
    /// Files scheduled.
    pub files: AtomicU64,
    /// Bytes handed to the page cache.
    pub bytes: AtomicU64,
    /// GETs of the warmer now in flight.
    pub in_flight: AtomicU64,
    /// GETs or stores that failed (those pages are read through the mount).
    pub failures: AtomicU64,
    /// Milliseconds from the first file scheduled to the last piece stored (0 until then).
    pub warm_ms: AtomicU64,
}

/// A piece to fetch: inode, object key, byte range.
#[derive(Debug, Clone)]
struct Piece {
    ino: Ino,
    key: Arc<str>,
    range: std::ops::Range<u64>,
}

#[derive(Default)]
struct Queue {
    tails: VecDeque<Piece>,
    bodies: VecDeque<Piece>,
    /// Pieces queued or being fetched.
    open: usize,
    stop: bool,
    started: Option<std::time::Instant>,
}

/// Where a warmer reads from and hands over to.
pub(crate) trait WarmSource: Send + Sync {
    /// The object key inode `ino` maps to now, if it is a sealed remote file.
    fn key_of(&self, ino: Ino) -> Option<Arc<str>>;
    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<bytes::Bytes, String>;
}

pub(crate) struct Warmer {
    cfg: WarmConfig,
    /// The core, held weakly (it owns the warmer).
    source: Weak<dyn WarmSource>,
    /// Set by the adapter once the kernel session exists; nothing is warmed before.
    page_cache: Arc<OnceLock<Arc<dyn PageCache>>>,
    shared: Arc<(Mutex<Queue>, Condvar)>,
    /// Object keys scheduled in this mount.
    seen: Mutex<HashSet<Arc<str>>>,
    budget: AtomicU64,
    pub(crate) metrics: Arc<WarmMetrics>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Warmer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warmer")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Warmer {
    pub(crate) fn new(cfg: WarmConfig, source: Weak<dyn WarmSource>) -> Warmer {
        Warmer {
            cfg,
            source,
            page_cache: Arc::new(OnceLock::new()),
            shared: Arc::new((Mutex::new(Queue::default()), Condvar::new())),
            seen: Mutex::new(HashSet::new()),
            budget: AtomicU64::new(cfg.memory),
            metrics: Arc::default(),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Whether warming is on (`statefs.cache.warm.memory` above 0).
    pub(crate) fn enabled(&self) -> bool {
        self.cfg.memory > 0
    }

    /// The page cache to warm (once; later calls are ignored).
    pub(crate) fn set_page_cache(&self, pc: Arc<dyn PageCache>) {
        let _ = self.page_cache.set(pc);
    }

    /// Schedules object `key` (`size` bytes) of inode `ino`, once per mount, if it fits the budget.
    /// Returns whether this call scheduled it (the first open of a cold file, warming on).
    pub(crate) fn file(&self, ino: Ino, key: &str, size: u64) -> bool {
        if !self.enabled() || size == 0 || self.page_cache.get().is_none() {
            return false;
        }
        let key: Arc<str> = Arc::from(key);
        if !lock(&self.seen).insert(key.clone()) {
            return false;
        }
        let fits = self
            .budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(size)
            })
            .is_ok();
        if !fits {
            return false;
        }
        self.metrics.files.fetch_add(1, Ordering::Relaxed);
        // Pieces start on page boundaries: the kernel marks a stored page up to date only when the
        // store covers it whole (or up to the end of the file); a page stored in two halves stays
        // stale, and its reads go to the mount.
        let tail_start = size.saturating_sub(TAIL) / PAGE * PAGE;
        let (lock_q, cv) = &*self.shared;
        let mut q = lock(lock_q);
        q.started.get_or_insert_with(std::time::Instant::now);
        q.tails.push_back(Piece {
            ino,
            key: key.clone(),
            range: tail_start..size,
        });
        q.open += 1;
        let mut at = 0;
        while at < tail_start {
            let end = (at + PIECE).min(tail_start);
            q.bodies.push_back(Piece {
                ino,
                key: key.clone(),
                range: at..end,
            });
            q.open += 1;
            at = end;
        }
        drop(q);
        cv.notify_all();
        self.start_threads();
        true
    }

    fn start_threads(&self) {
        let mut threads = lock(&self.threads);
        while threads.len() < self.cfg.in_flight.max(1) {
            let (shared, pc, metrics, source) = (
                self.shared.clone(),
                self.page_cache.clone(),
                self.metrics.clone(),
                self.source.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("statefs-warm-{}", threads.len()))
                .spawn(move || run(&shared, &pc, &metrics, &source));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    tracing::warn!(error = %e, "starting a warm-up thread failed");
                    break;
                }
            }
        }
    }

    /// Drops what is queued and waits for the pieces being fetched.
    pub(crate) fn shutdown(&self) {
        let (q, cv) = &*self.shared;
        {
            let mut q = lock(q);
            q.stop = true;
            q.tails.clear();
            q.bodies.clear();
        }
        cv.notify_all();
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
    }

    /// Waits until every piece scheduled so far is fetched and handed over (tests, benches).
    pub(crate) fn wait_idle(&self) {
        let (q, cv) = &*self.shared;
        let mut q = lock(q);
        while q.open > 0 && !q.stop {
            q = cv.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Warmer {
    /// The threads end on their own (this may run on one of them, which must not join itself).
    fn drop(&mut self) {
        let (q, cv) = &*self.shared;
        lock(q).stop = true;
        cv.notify_all();
    }
}

impl WarmSource for super::FsCore {
    /// `None` once the file has no name left (its object is about to go): nothing is warmed for
    /// it, even while a handle still reads it.
    fn key_of(&self, ino: Ino) -> Option<Arc<str>> {
        let table = self.ns.read();
        let node = table.get(ino)?;
        match &node.meta.kind {
            crate::table::NodeKind::File(f)
                if node.nlink > 0 && f.placement == crate::placement::Placement::Remote =>
            {
                f.sealed.as_ref().map(|s| Arc::from(s.key.as_str()))
            }
            _ => None,
        }
    }

    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<bytes::Bytes, String> {
        self.remote.get_range(key, range).map_err(|e| e.to_string())
    }
}

/// The remount's hot list: `<local-dir>/hot-files`, the object keys of the files with a local
/// copy when the mount stopped, most recently used first. A hint: a missing or damaged list only
/// means a colder start.
const HOT_FILES: &str = "hot-files";

impl super::FsCore {
    /// Loads local copies of `files` (inode, local id), in this order, while they fit in the
    /// cache's free room (a warm start: the hot list of a remount or of a restored checkpoint).
    /// Nothing when the warm-up is off.
    pub(crate) fn load_hot(&self, files: impl IntoIterator<Item = (Ino, uuid::Uuid)>) {
        if !self.warmer.enabled() {
            return;
        }
        for (ino, id) in files {
            self.cache.fill(&self.opens, ino, id);
        }
    }

    /// The hot list as ranks: each local copy's, 0 the most recently used (what a checkpoint's
    /// manifest records as `heat`, and the order of `hot-files`).
    pub(crate) fn hot_ranks(&self) -> std::collections::HashMap<uuid::Uuid, u32> {
        self.cache.index().hot_ids().into_iter().zip(0..).collect()
    }

    /// Writes the hot list into the local dir (at unmount).
    pub(crate) fn save_hot_list(&self) {
        let rank = self.hot_ranks();
        let mut keys: Vec<(u32, String)> = {
            let table = self.ns.read();
            table
                .nodes()
                .filter_map(|n| match &n.meta.kind {
                    crate::table::NodeKind::File(f) => {
                        Some((*rank.get(&f.local_id)?, f.sealed.as_ref()?.key.clone()))
                    }
                    _ => None,
                })
                .collect()
        };
        keys.sort_unstable();
        keys.dedup_by(|a, b| a.1 == b.1);
        let text: String = keys.into_iter().map(|(_, k)| k + "\n").collect();
        let path = self.statfs_dir.join(HOT_FILES);
        let tmp = path.with_extension("tmp");
        let written = crate::private::create(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "writing the hot list failed; the next start is colder");
        }
    }

    /// Loads the copies the hot list names (at mount; the ones still in the cache dir are hot
    /// already and stay as they are).
    pub(crate) fn load_hot_list(&self) {
        let Ok(text) = std::fs::read_to_string(self.statfs_dir.join(HOT_FILES)) else {
            return;
        };
        let by_key: std::collections::HashMap<String, (Ino, uuid::Uuid)> = {
            let table = self.ns.read();
            table
                .nodes()
                .filter_map(|n| match &n.meta.kind {
                    crate::table::NodeKind::File(f)
                        if f.placement == crate::placement::Placement::Remote =>
                    {
                        Some((f.sealed.as_ref()?.key.clone(), (n.meta.ino, f.local_id)))
                    }
                    _ => None,
                })
                .collect()
        };
        self.load_hot(text.lines().filter_map(|k| by_key.get(k).copied()));
    }

    /// The kernel's page cache, for warming cold files (set once by the FUSE adapter).
    pub fn set_page_cache(&self, pc: Arc<dyn PageCache>) {
        self.warmer.set_page_cache(pc);
    }

    /// Counters of the warmer.
    pub fn warm_metrics(&self) -> &WarmMetrics {
        &self.warmer.metrics
    }

    /// Waits until every file scheduled for warming so far is warm (tests, benches).
    pub fn wait_warm(&self) {
        self.warmer.wait_idle();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(
    shared: &(Mutex<Queue>, Condvar),
    pc: &OnceLock<Arc<dyn PageCache>>,
    metrics: &WarmMetrics,
    source: &Weak<dyn WarmSource>,
) {
    let (lock_q, cv) = shared;
    loop {
        let piece = {
            let mut q = lock(lock_q);
            loop {
                if q.stop {
                    return;
                }
                if let Some(p) = q.tails.pop_front().or_else(|| q.bodies.pop_front()) {
                    break p;
                }
                q = cv.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        // The core is gone: nothing more to warm.
        let Some(src) = source.upgrade() else {
            return;
        };
        metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        let fetched = src.get_range(&piece.key, piece.range.clone());
        metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        let stored = match (fetched, pc.get()) {
            // Handed over only if the inode still maps to this version (see the invariant).
            (Ok(data), Some(pc)) if src.key_of(piece.ino).as_deref() == Some(&*piece.key) => data
                .chunks(STORE_CHUNK)
                .enumerate()
                .try_for_each(|(i, chunk)| {
                    pc.store(
                        piece.ino,
                        piece.range.start + (i * STORE_CHUNK) as u64,
                        chunk,
                    )?;
                    metrics
                        .bytes
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    Ok::<_, std::io::Error>(())
                })
                .map_err(|e| e.to_string()),
            (Ok(_), _) => Ok(()),
            (Err(e), _) => Err(e),
        };
        drop(src);
        if let Err(e) = stored {
            metrics.failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(ino = piece.ino, key = %piece.key, error = %e, "warm-up piece skipped");
        }
        let mut q = lock(lock_q);
        q.open -= 1;
        if q.open == 0
            && let Some(t) = q.started.take()
        {
            metrics
                .warm_ms
                .store(t.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        drop(q);
        cv.notify_all();
    }
}
