//! [`AsyncKeyed`]: the execution controller of the async State API (Flink's
//! `AsyncExecutionController`), on the task thread.
//!
//! A record enters with its key and an `async` body. Bodies run on this thread only; a state call
//! inside one issues a request at once and returns a [`StateFuture`] that completes when the
//! controller has run the request.
//!
//! Invariants:
//! - **Per-key order.** A record holds its key from its first poll until its body returns; a record
//!   of a held key waits, in arrival order, and starts when the holder finishes. So records of one
//!   key run strictly in arrival order, and their requests too.
//! - **A record's requests run in issue order** on the task thread, with the record's key
//!   current, through the sync State API: the semantics (TTL, lists, maps, merges) are the sync
//!   API's. Requests of records of different keys touch different entries and may run in any
//!   order (Flink promises per-key order only). A request that can run without waiting (it reads
//!   nothing, or its entry is in memory: [`crate::StateBackend::read_now`]) runs as soon as its
//!   record issues it. The others are buffered and sealed into batches; the backend is told which
//!   entries a batch will read ([`crate::StateBackend::preload`]), and each request runs once its
//!   own entry is loaded (not when the batch's slowest read is), after every earlier request of
//!   its record. On the heap every request runs at once.
//! - **Bounded.** At most `in_flight_records_limit` records are in the controller (running or
//!   waiting for their key); [`AsyncKeyed::process`] runs batches until there is room
//!   (back-pressure).
//! - **Drain.** [`AsyncKeyed::drain`] returns when no record is in flight and every write is
//!   applied (the backend's write-behind, [`crate::StateBackend::write_behind`], is on from the
//!   first record after a drain to the next drain): a checkpoint taken then (through
//!   [`AsyncKeyed::keyed_mut`], which drains) never holds half of a record, nor misses a write.
//!
//! A body may await only state futures of its own record (as Flink's `StateFuture`s are only
//! completed by the controller); a body that waits on anything else fails with an error.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{Preload, ReadKey, StateBackend, StateId};
use crate::error::{StateError, StateResult};
use crate::states::Keyed;

/// Flink's `execution.async-state.*` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncOptions {
    /// `execution.async-state.in-flight-records-limit`: records in the controller at most.
    /// Default 6000.
    pub in_flight_records_limit: usize,
    /// `execution.async-state.buffer-size`: requests buffered before a batch runs. Default 1000.
    pub buffer_size: usize,
    /// `execution.async-state.buffer-timeout`: the oldest buffered request's age at which a batch
    /// runs anyway (checked as records arrive). Default 1 s.
    pub buffer_timeout: Duration,
}

impl Default for AsyncOptions {
    fn default() -> Self {
        AsyncOptions {
            in_flight_records_limit: 6000,
            buffer_size: 1000,
            buffer_timeout: Duration::from_secs(1),
        }
    }
}

impl AsyncOptions {
    /// Reads Flink's keys from `(key, value)` pairs; other keys are ignored, a bad value is an
    /// error naming the key. Counts are at least 1; the timeout is a duration (`ms`, `s`, ...; a
    /// bare number is milliseconds).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> StateResult<AsyncOptions> {
        use statefs_store::options::{Kind, Value, parse_value};
        let mut o = AsyncOptions::default();
        for (key, v) in pairs {
            let bad = |why: String| StateError::Invalid(format!("`{key}` = {v:?}: {why}"));
            let count = || match parse_value(Kind::Count, v).map_err(bad)? {
                Value::Count(n) if n >= 1 => {
                    usize::try_from(n).map_err(|_| bad("too large".into()))
                }
                _ => Err(bad("at least 1".into())),
            };
            match *key {
                "execution.async-state.in-flight-records-limit" => {
                    o.in_flight_records_limit = count()?
                }
                "execution.async-state.buffer-size" => o.buffer_size = count()?,
                "execution.async-state.buffer-timeout" => {
                    o.buffer_timeout = match parse_value(Kind::Duration, v).map_err(bad)? {
                        Value::Duration(d) => d,
                        _ => unreachable!("a duration"),
                    }
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

/// What a request does on the task thread (its result goes to its future).
type Op<K, B> = Box<dyn FnOnce(&mut Keyed<K, B>)>;

/// A request of a record: runs with the record's key current.
pub(crate) struct Request<K, B: StateBackend> {
    record: usize,
    read: Option<ReadKey>,
    op: Op<K, B>,
}

/// What record contexts share with the controller.
pub(crate) struct Shared<K, B: StateBackend> {
    buffer: RefCell<Vec<Request<K, B>>>,
    /// When the oldest buffered request was issued.
    oldest: Cell<Option<Instant>>,
    /// Requests issued and not run, by record.
    outstanding: RefCell<HashMap<usize, usize>>,
}

impl<K, B: StateBackend> Shared<K, B> {
    /// One request of `record` ran: returns whether none of its requests is outstanding now.
    fn ran(&self, record: usize) -> bool {
        let mut outstanding = self.outstanding.borrow_mut();
        let n = outstanding.get_mut(&record).expect("counted when issued");
        *n -= 1;
        let none_left = *n == 0;
        if none_left {
            outstanding.remove(&record);
        }
        none_left
    }
}

/// The context of one record: its key, and the way its state calls reach the controller.
pub struct RecordContext<K, B: StateBackend> {
    record: usize,
    key: Rc<[u8]>,
    kg: u32,
    shared: Rc<Shared<K, B>>,
}

impl<K, B: StateBackend> Clone for RecordContext<K, B> {
    fn clone(&self) -> Self {
        RecordContext {
            record: self.record,
            key: self.key.clone(),
            kg: self.kg,
            shared: self.shared.clone(),
        }
    }
}

impl<K: 'static, B: StateBackend + 'static> RecordContext<K, B> {
    /// The record's key, serialized.
    pub fn key_bytes(&self) -> &[u8] {
        &self.key
    }

    /// Issues a request: `op` runs on the keyed backend with this record's key current, after the
    /// record's earlier requests; `read` names the entry it reads, if one, for the backend to load
    /// ahead.
    pub(crate) fn request<T: 'static>(
        &self,
        read: Option<(StateId, Vec<u8>)>,
        op: impl FnOnce(&mut Keyed<K, B>) -> StateResult<T> + 'static,
    ) -> StateFuture<T> {
        let slot: Rc<RefCell<Option<StateResult<T>>>> = Rc::new(RefCell::new(None));
        let out = slot.clone();
        let (key, kg) = (self.key.clone(), self.kg);
        let request = Request {
            record: self.record,
            read: read.map(|(s, ck)| (s, kg, ck)),
            op: Box::new(move |kb: &mut Keyed<K, B>| {
                kb.set_current_key_bytes(&key, kg);
                *out.borrow_mut() = Some(op(kb));
            }),
        };
        let mut buffer = self.shared.buffer.borrow_mut();
        if buffer.is_empty() {
            self.shared.oldest.set(Some(Instant::now()));
        }
        buffer.push(request);
        *self
            .shared
            .outstanding
            .borrow_mut()
            .entry(self.record)
            .or_default() += 1;
        StateFuture { slot }
    }

    /// Runs `f` on the keyed backend with this record's key current, in order with the record's
    /// other requests: the sync State API (or a timer service) from inside an async record.
    pub fn sync<T: 'static>(
        &self,
        f: impl FnOnce(&mut Keyed<K, B>) -> StateResult<T> + 'static,
    ) -> StateFuture<T> {
        self.request(None, f)
    }
}

/// The result of a state call, once the controller has run its request.
#[must_use = "a state future does nothing unless awaited (its request is issued already)"]
pub struct StateFuture<T> {
    slot: Rc<RefCell<Option<StateResult<T>>>>,
}

impl<T> Future for StateFuture<T> {
    type Output = StateResult<T>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.slot.borrow_mut().take() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

type Body = Pin<Box<dyn Future<Output = StateResult<()>>>>;

/// Requests sealed together, with the load of the entries they read.
struct Batch<K, B: StateBackend> {
    /// `None` once run.
    requests: Vec<Option<Request<K, B>>>,
    /// Whether each request may run (its entry is loaded, or it reads none).
    ready: Vec<bool>,
    /// The request of each preloaded entry.
    read_of: Vec<usize>,
    preload: Preload,
    /// Requests not run yet.
    left: usize,
}

struct Record {
    body: Body,
    key: Rc<[u8]>,
}

/// A keyed backend driven through the async State API (see the module doc).
pub struct AsyncKeyed<K, B: StateBackend> {
    kb: Keyed<K, B>,
    shared: Rc<Shared<K, B>>,
    records: Vec<Option<Record>>,
    free: Vec<usize>,
    in_flight: usize,
    /// Keys held by a record, each with the records waiting for it, in arrival order.
    keys: HashMap<Rc<[u8]>, VecDeque<usize>>,
    /// Sealed batches, oldest first; `first_batch` numbers the front one.
    batches: VecDeque<Batch<K, B>>,
    first_batch: u64,
    /// Each record's requests not run yet, in issue order: (batch number, index).
    queues: HashMap<usize, VecDeque<(u64, usize)>>,
    /// Requests that became runnable and were not looked at yet.
    runnable: Vec<(u64, usize)>,
    opts: AsyncOptions,
    /// Whether the backend loads ahead (else requests run at once).
    batching: bool,
    /// Whether the backend's write-behind is on ([`StateBackend::write_behind`]): from the first
    /// record after a drain to the next drain.
    behind: bool,
    /// The first failure of a record body, reported by the next call; later calls fail too.
    failed: Option<StateError>,
    stopped: bool,
}

impl<K, B: StateBackend> std::fmt::Debug for AsyncKeyed<K, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncKeyed")
            .field("in_flight", &self.in_flight)
            .field("batches", &self.batches.len())
            .field("options", &self.opts)
            .finish_non_exhaustive()
    }
}

impl<K: Serialize + DeserializeOwned + 'static, B: StateBackend + 'static> AsyncKeyed<K, B> {
    pub fn new(kb: Keyed<K, B>, opts: AsyncOptions) -> Self {
        let batching = kb.backend().reads_ahead();
        AsyncKeyed {
            kb,
            shared: Rc::new(Shared {
                buffer: RefCell::new(Vec::new()),
                oldest: Cell::new(None),
                outstanding: RefCell::new(HashMap::new()),
            }),
            records: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            keys: HashMap::new(),
            batches: VecDeque::new(),
            first_batch: 0,
            queues: HashMap::new(),
            runnable: Vec::new(),
            opts,
            batching,
            behind: false,
            failed: None,
            stopped: false,
        }
    }

    /// Records in the controller (running or waiting for their key).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The keyed backend, for registering states and for sync access, once every record in
    /// flight has finished ([`AsyncKeyed::drain`]).
    pub fn keyed_mut(&mut self) -> StateResult<&mut Keyed<K, B>> {
        self.drain()?;
        Ok(&mut self.kb)
    }

    /// Drains and gives the keyed backend back.
    pub fn into_keyed(mut self) -> StateResult<Keyed<K, B>> {
        self.drain()?;
        let AsyncKeyed { kb, .. } = self;
        Ok(kb)
    }

    fn check(&mut self) -> StateResult<()> {
        if let Some(e) = self.failed.take() {
            self.stopped = true;
            return Err(e);
        }
        if self.stopped {
            return Err(StateError::Invalid(
                "the async State API stopped after a record failed".into(),
            ));
        }
        Ok(())
    }

    /// Takes in a record of `key`: `body` gets the record's context and returns the record's
    /// processing. It starts now if no record of `key` is in flight, else after those. Waits
    /// (running batches) while `in_flight_records_limit` records are in flight. An error of an
    /// earlier record is returned here (or by the next call), and the controller stops.
    pub fn process<F, Fut>(&mut self, key: &K, body: F) -> StateResult<()>
    where
        F: FnOnce(RecordContext<K, B>) -> Fut,
        Fut: Future<Output = StateResult<()>> + 'static,
    {
        self.check()?;
        if self.batching && !self.behind {
            self.kb.backend_mut().write_behind(true)?;
            self.behind = true;
        }
        while self.in_flight >= self.opts.in_flight_records_limit.max(1) {
            self.progress(true)?;
            self.check()?;
        }
        let (bytes, kg) = self.kb.key_bytes_of(key)?;
        let key: Rc<[u8]> = bytes.into();
        let record = match self.free.pop() {
            Some(i) => i,
            None => {
                self.records.push(None);
                self.records.len() - 1
            }
        };
        let ctx = RecordContext {
            record,
            key: key.clone(),
            kg,
            shared: self.shared.clone(),
        };
        self.records[record] = Some(Record {
            body: Box::pin(body(ctx)),
            key: key.clone(),
        });
        self.in_flight += 1;
        match self.keys.get_mut(&key) {
            Some(waiting) => waiting.push_back(record),
            None => {
                self.keys.insert(key, VecDeque::new());
                self.run_records(vec![record]);
            }
        }
        let buffered = self.shared.buffer.borrow().len();
        let timed_out = self
            .shared
            .oldest
            .get()
            .is_some_and(|t| t.elapsed() >= self.opts.buffer_timeout);
        if !self.batching || buffered >= self.opts.buffer_size.max(1) || timed_out {
            self.flush();
        }
        self.progress(false)?;
        self.check()
    }

    /// Runs every record in flight to its end.
    pub fn drain(&mut self) -> StateResult<()> {
        self.check()?;
        while self.in_flight > 0 || !self.batches.is_empty() {
            self.progress(true)?;
            self.check()?;
        }
        if self.behind {
            // Every write is in the database before anything outside a record sees it.
            self.behind = false;
            if let Err(e) = self.kb.backend_mut().write_behind(false) {
                self.stopped = true;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Seals the buffered requests into a batch and has the backend load what it will read.
    fn flush(&mut self) {
        let requests = std::mem::take(&mut *self.shared.buffer.borrow_mut());
        self.shared.oldest.set(None);
        if requests.is_empty() {
            return;
        }
        let number = self.first_batch + self.batches.len() as u64;
        let mut reads = Vec::new();
        let mut read_of = Vec::new();
        let mut ready = Vec::with_capacity(requests.len());
        for (i, r) in requests.iter().enumerate() {
            self.queues
                .entry(r.record)
                .or_default()
                .push_back((number, i));
            match (&r.read, self.batching) {
                (Some(read), true) => {
                    read_of.push(i);
                    reads.push(read.clone());
                    ready.push(false);
                }
                _ => {
                    ready.push(true);
                    self.runnable.push((number, i));
                }
            }
        }
        let preload = if reads.is_empty() {
            Preload::ready()
        } else {
            self.kb.backend().preload(reads)
        };
        self.batches.push_back(Batch {
            requests: requests.into_iter().map(Some).collect(),
            ready,
            read_of,
            preload,
            left: 0,
        });
        let b = self.batches.back_mut().expect("just pushed");
        b.left = b.requests.len();
    }

    /// Takes what the batches' preloads loaded, runs every request that can run, and resumes the
    /// records it completed. Waits for a load when `block` and nothing could run. With no batch,
    /// seals the buffer into one.
    fn progress(&mut self, block: bool) -> StateResult<()> {
        loop {
            if self.batches.is_empty() {
                if self.shared.buffer.borrow().is_empty() {
                    if block && self.in_flight > 0 {
                        // Every record in flight waits on its key or on a request; requests are
                        // buffered or batched; so this is unreachable while the bodies only await
                        // state futures (run_records fails the others).
                        return Err(StateError::Invalid(format!(
                            "{} records in flight and no request to run",
                            self.in_flight
                        )));
                    }
                    return Ok(());
                }
                self.flush();
                continue;
            }
            for (n, b) in self.batches.iter_mut().enumerate() {
                let number = self.first_batch + n as u64;
                let (loaded, all) = b.preload.take_loaded();
                for item in loaded {
                    let i = b.read_of[item];
                    if !std::mem::replace(&mut b.ready[i], true) {
                        self.runnable.push((number, i));
                    }
                }
                if all {
                    for &i in &b.read_of {
                        if !std::mem::replace(&mut b.ready[i], true) {
                            self.runnable.push((number, i));
                        }
                    }
                }
            }
            if !self.runnable.is_empty() {
                self.run_runnable();
                // What the resumed records asked for goes out once it makes a batch.
                if self.shared.buffer.borrow().len() >= self.opts.buffer_size.max(1) {
                    self.flush();
                }
                return Ok(());
            }
            if !block {
                return Ok(());
            }
            // Nothing can run: rather than wait for a load while requests sit in the buffer
            // (writes of records whose reads came back, which need no load), seal them now.
            if !self.shared.buffer.borrow().is_empty() {
                self.flush();
                continue;
            }
            // Nothing can run: wait for the oldest batch that still loads.
            match self.batches.iter().find(|b| b.ready.iter().any(|r| !r)) {
                Some(b) => b.preload.wait_news(),
                // Every unrun request is ready, so the first of each record ran when it became
                // ready, and the ones after it with it: unreachable.
                None => {
                    return Err(StateError::Invalid(
                        "async State API: requests ready and not run".into(),
                    ));
                }
            }
        }
    }

    /// Runs the runnable requests that are first of their record, and each record's next ones as
    /// they become first and are ready; then resumes the records left with nothing outstanding.
    fn run_runnable(&mut self) {
        let mut completed = Vec::new();
        for (number, i) in std::mem::take(&mut self.runnable) {
            let record = match self.request(number, i) {
                Some(r) => r.record,
                None => continue,
            };
            let Some(queue) = self.queues.get_mut(&record) else {
                continue;
            };
            if queue.front() != Some(&(number, i)) {
                // An earlier request of the record runs first; it runs this one after it.
                continue;
            }
            while let Some(&(number, i)) = self.queues.get(&record).and_then(|q| q.front()) {
                let b = &mut self.batches[(number - self.first_batch) as usize];
                if !b.ready[i] {
                    break;
                }
                let r = b.requests[i].take().expect("run once");
                b.left -= 1;
                self.queues.get_mut(&record).expect("checked").pop_front();
                (r.op)(&mut self.kb);
                if self.shared.ran(record) {
                    completed.push(record);
                }
            }
            if self.queues.get(&record).is_some_and(|q| q.is_empty()) {
                self.queues.remove(&record);
            }
        }
        while self.batches.front().is_some_and(|b| b.left == 0) {
            self.batches.pop_front();
            self.first_batch += 1;
        }
        self.run_records(completed);
    }

    /// Runs the requests `record` just issued (`buffer[issued..]`, in issue order) while each can
    /// run without waiting: it reads nothing, or an entry the backend holds in memory
    /// ([`StateBackend::read_now`]). The first that cannot, and those after it, stay buffered.
    /// Returns whether all ran (the record is then polled again at once). So a record whose
    /// entries are in memory never waits for a batch: a hot key's records run one after another
    /// as soon as the first one's entry is in.
    fn run_at_once(&mut self, record: usize, issued: usize) -> bool {
        if self.queues.contains_key(&record) {
            return false; // earlier requests of it are batched (not reached: see the caller)
        }
        let mine = {
            let mut buffer = self.shared.buffer.borrow_mut();
            if buffer.len() <= issued {
                return false;
            }
            buffer.split_off(issued)
        };
        let mut mine = mine.into_iter();
        let mut all = true;
        while let Some(r) = mine.next() {
            debug_assert_eq!(r.record, record);
            let now = !self.batching
                || r.read
                    .as_ref()
                    .is_none_or(|k| self.kb.backend().read_now(k));
            if !now {
                let mut buffer = self.shared.buffer.borrow_mut();
                buffer.push(r);
                buffer.extend(mine);
                all = false;
                break;
            }
            (r.op)(&mut self.kb);
            self.shared.ran(record);
        }
        if self.shared.buffer.borrow().is_empty() {
            self.shared.oldest.set(None);
        }
        all
    }

    fn request(&self, number: u64, i: usize) -> Option<&Request<K, B>> {
        let b = self
            .batches
            .get(number.checked_sub(self.first_batch)? as usize)?;
        b.requests[i].as_ref()
    }

    /// Polls `ready` records, and the records of their keys that a finished one lets in.
    fn run_records(&mut self, ready: Vec<usize>) {
        let mut ready: VecDeque<usize> = ready.into();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        while let Some(i) = ready.pop_front() {
            let Some(record) = self.records[i].as_mut() else {
                continue;
            };
            // A record is polled with nothing outstanding: what it issues in this poll is
            // `buffer[issued..]`.
            let issued = self.shared.buffer.borrow().len();
            let outcome = match record.body.as_mut().poll(&mut cx) {
                Poll::Ready(r) => r,
                Poll::Pending => {
                    if self.shared.outstanding.borrow().contains_key(&i) {
                        if self.run_at_once(i, issued) {
                            ready.push_front(i);
                        }
                        continue;
                    }
                    Err(StateError::Invalid(
                        "a record's body awaited something other than its state futures".into(),
                    ))
                }
            };
            if let Err(e) = outcome
                && self.failed.is_none()
                && !self.stopped
            {
                self.failed = Some(e);
            }
            // The record is done: its key goes to the next record of the key, if any.
            let record = self.records[i].take().expect("polled above");
            self.free.push(i);
            self.in_flight -= 1;
            let waiting = self
                .keys
                .get_mut(&record.key)
                .expect("a running record holds its key");
            match waiting.pop_front() {
                Some(next) => ready.push_back(next),
                None => {
                    self.keys.remove(&record.key);
                }
            }
        }
    }
}

impl<K: Serialize + DeserializeOwned + 'static, B: StateBackend + 'static> AsyncKeyed<K, B> {
    /// Advances event time to `watermark` on `timers` in order with the records: every record
    /// taken in before this call finishes first, then each due timer fires (earliest first, its
    /// key current, `on_timer` through the sync API, as [`crate::TimerService::advance_watermark`]),
    /// and records taken in after see what the timers did. Timer bodies do not run as async
    /// records: a timer's state accesses are not batched.
    pub fn advance_watermark<N: Serialize + DeserializeOwned + 'static>(
        &mut self,
        timers: &mut crate::timers::TimerService<N>,
        watermark: i64,
        on_timer: impl FnMut(
            &mut Keyed<K, B>,
            &mut crate::timers::TimerService<N>,
            crate::timers::Timer<K, N>,
        ) -> StateResult<()>,
    ) -> StateResult<usize> {
        timers.advance_watermark(self.keyed_mut()?, watermark, on_timer)
    }

    /// Advances processing time to `now` on `timers`, in order with the records, as
    /// [`AsyncKeyed::advance_watermark`].
    pub fn advance_processing_time<N: Serialize + DeserializeOwned + 'static>(
        &mut self,
        timers: &mut crate::timers::TimerService<N>,
        now: i64,
        on_timer: impl FnMut(
            &mut Keyed<K, B>,
            &mut crate::timers::TimerService<N>,
            crate::timers::Timer<K, N>,
        ) -> StateResult<()>,
    ) -> StateResult<usize> {
        timers.advance_processing_time(self.keyed_mut()?, now, on_timer)
    }
}

impl<K, B> AsyncKeyed<K, B>
where
    K: Serialize + DeserializeOwned + Clone + 'static,
    B: StateBackend + 'static,
{
    /// Advances event time to `watermark`, firing each due timer as a record of its key through
    /// the controller: `on_timer` gets the record's context and the timer and returns its body,
    /// whose state calls are batched like any record's. Records taken in before this call finish
    /// first; timers of one key fire in timestamp order, in order with that key's records; timers
    /// of different keys interleave. A body may register timers through `ctx.sync` on the shared
    /// service; those due at `watermark` fire in this call. Returns how many fired.
    pub fn advance_watermark_async<N, F, Fut>(
        &mut self,
        timers: &Rc<RefCell<crate::timers::TimerService<N>>>,
        watermark: i64,
        on_timer: F,
    ) -> StateResult<usize>
    where
        N: Serialize + DeserializeOwned + 'static,
        F: FnMut(RecordContext<K, B>, crate::timers::Timer<K, N>) -> Fut,
        Fut: Future<Output = StateResult<()>> + 'static,
    {
        timers.borrow_mut().note_watermark(watermark);
        self.fire_async(
            timers,
            crate::timers::TimeDomain::EventTime,
            watermark,
            on_timer,
        )
    }

    /// Advances processing time to `now` (the caller's clock), firing due processing-time timers
    /// as records, as [`AsyncKeyed::advance_watermark_async`].
    pub fn advance_processing_time_async<N, F, Fut>(
        &mut self,
        timers: &Rc<RefCell<crate::timers::TimerService<N>>>,
        now: i64,
        on_timer: F,
    ) -> StateResult<usize>
    where
        N: Serialize + DeserializeOwned + 'static,
        F: FnMut(RecordContext<K, B>, crate::timers::Timer<K, N>) -> Fut,
        Fut: Future<Output = StateResult<()>> + 'static,
    {
        self.fire_async(
            timers,
            crate::timers::TimeDomain::ProcessingTime,
            now,
            on_timer,
        )
    }

    fn fire_async<N, F, Fut>(
        &mut self,
        timers: &Rc<RefCell<crate::timers::TimerService<N>>>,
        domain: crate::timers::TimeDomain,
        upto: i64,
        mut on_timer: F,
    ) -> StateResult<usize>
    where
        N: Serialize + DeserializeOwned + 'static,
        F: FnMut(RecordContext<K, B>, crate::timers::Timer<K, N>) -> Fut,
        Fut: Future<Output = StateResult<()>> + 'static,
    {
        let mut fired = 0;
        loop {
            // Whatever ran before (records, or the bodies of the last round, which may have
            // registered due timers) finishes first.
            self.drain()?;
            let mut due = Vec::new();
            {
                let mut t = timers.borrow_mut();
                while let Some(timer) = t.pop_due(&mut self.kb, domain, upto)? {
                    due.push(timer);
                }
            }
            if due.is_empty() {
                return Ok(fired);
            }
            fired += due.len();
            // In timestamp order: a key's timers enter (and so run) in that order.
            for timer in due {
                let key = timer.key.clone();
                self.process(&key, |ctx| on_timer(ctx, timer))?;
            }
        }
    }
}
