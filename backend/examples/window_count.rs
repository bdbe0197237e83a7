//! An event-time tumbling-window count over a keyed stream, as a Flink job would run it: a count
//! per user and 100 ms window in keyed state (the window is the namespace), an event-time timer
//! at each window's end, watermarks 50 ms behind the largest timestamp seen, and the source's
//! offset in operator state.
//!
//! The job runs twice over the same events: once without interruption on one subtask, and once
//! with a checkpoint in the middle, 200 more events processed and then lost in a crash (their
//! output discarded, as a transactional sink would), and a restore on two subtasks that replays
//! from the checkpointed offset. The two outputs must be identical (the program checks it).
//!
//! ```sh
//! cargo run -p statefs-backend --example window_count
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;

use statefs_backend::checkpoint::CheckpointStorage;
use statefs_backend::{
    Checkpointed, HeapBackend, KeyGroupRange, Keyed, OperatorState, StateResult, TimeDomain,
    TimerService,
};

const MAX_PARALLELISM: u32 = 128;
const WINDOW: i64 = 100;
const LATENESS: i64 = 50;

/// (user, timestamp): ten users, timestamps rising with some disorder.
fn events() -> Vec<(String, i64)> {
    (0..3_000u64)
        .map(|i| {
            let jitter = (i.wrapping_mul(0x9e37_79b9) >> 7) % 40;
            (format!("user{}", (i * 7) % 10), (i * 3 + jitter) as i64)
        })
        .collect()
}

/// One subtask of the window operator.
struct Subtask {
    kb: Keyed<String, HeapBackend>,
    timers: TimerService<i64>,
}

impl Subtask {
    fn new(backend: HeapBackend) -> StateResult<Self> {
        let mut kb = Keyed::new(backend);
        let timers = TimerService::new(&mut kb, "windows")?;
        Ok(Subtask { kb, timers })
    }

    /// Whether `user` belongs to this subtask's key groups (it becomes the current key).
    fn owns(&mut self, user: &String) -> bool {
        self.kb.set_current_key(user).is_ok()
    }

    fn process(&mut self, user: &String, ts: i64) -> StateResult<()> {
        let window = ts - ts.rem_euclid(WINDOW);
        self.kb.set_current_key(user)?;
        let mut count = self.kb.value_state::<u64>("count", None)?;
        count.set_namespace(&window);
        let n = count.value(&mut self.kb)?.unwrap_or(0);
        count.update(&mut self.kb, &(n + 1))?;
        self.timers.register(
            &mut self.kb,
            TimeDomain::EventTime,
            &window,
            window + WINDOW - 1,
        )
    }

    /// Advances the watermark; fired windows go to `out` as (user, window start, count).
    fn watermark(&mut self, wm: i64, out: &mut Vec<(String, i64, u64)>) -> StateResult<()> {
        self.timers
            .advance_watermark(&mut self.kb, wm, |kb, _, timer| {
                let mut count = kb.value_state::<u64>("count", None)?;
                count.set_namespace(&timer.namespace);
                let n = count.value(kb)?.unwrap_or(0);
                count.clear(kb)?;
                out.push((timer.key, timer.namespace, n));
                Ok(())
            })?;
        Ok(())
    }
}

/// Runs `events[from..to]` through `subtasks` (each event to the subtask owning its key, every
/// watermark to all), collecting fired windows.
fn run(
    subtasks: &mut [Subtask],
    events: &[(String, i64)],
    from: usize,
    to: usize,
    max_ts: &mut i64,
    out: &mut Vec<(String, i64, u64)>,
) -> StateResult<()> {
    for (i, (user, ts)) in events.iter().enumerate().take(to).skip(from) {
        let owner = (0..subtasks.len())
            .find(|&i| subtasks[i].owns(user))
            .expect("an owner");
        subtasks[owner].process(user, *ts)?;
        *max_ts = (*max_ts).max(*ts);
        if i % 10 == 9 {
            for s in subtasks.iter_mut() {
                s.watermark(*max_ts - LATENESS, out)?;
            }
        }
    }
    Ok(())
}

fn main() -> StateResult<()> {
    let events = events();
    let all = KeyGroupRange::all(MAX_PARALLELISM);

    // Uninterrupted, one subtask.
    let mut expected = Vec::new();
    let mut one = [Subtask::new(HeapBackend::new(all, MAX_PARALLELISM))?];
    let mut max_ts = i64::MIN;
    run(
        &mut one,
        &events,
        0,
        events.len(),
        &mut max_ts,
        &mut expected,
    )?;
    one[0].watermark(i64::MAX, &mut expected)?;

    // With a checkpoint after 1,500 events, a crash 200 events later, and a restore on two.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rt = statefs_store::runtime().expect("a tokio runtime");
    let store = statefs_store::RemoteSpec::parse(&format!("file://{}", dir.path().display()))?
        .open(&Default::default(), rt)?;
    let mut storage = CheckpointStorage::open(Arc::new(store), "window-count", 2)?;
    let mut output = Vec::new();
    let mut first = [Subtask::new(HeapBackend::new(all, MAX_PARALLELISM))?];
    let mut max_ts = i64::MIN;
    run(&mut first, &events, 0, 1_500, &mut max_ts, &mut output)?;
    // The checkpoint: keyed state and timers through the backend, the source's offset and the
    // watermark's input in the source's operator state, in one job checkpoint.
    let mut source = OperatorState::new();
    let offset = source.list_state::<(u64, i64)>("offset")?;
    offset.update(&mut source, &[(1_500, max_ts)]);
    let mut pending = storage.begin(1, MAX_PARALLELISM);
    first[0].kb.backend_mut().checkpoint(&mut pending)?;
    pending.add_operator_state("source", 0, 1, &source)?;
    pending.complete()?;
    let committed = output.len();
    let mut lost = Vec::new();
    run(&mut first, &events, 1_500, 1_700, &mut max_ts, &mut lost)?;
    drop(first); // the crash: what came after the checkpoint is gone
    output.truncate(committed);

    let latest = storage.latest()?.expect("checkpoint 1");
    let mut two = Vec::new();
    for i in 0..2 {
        let range = KeyGroupRange::for_operator(MAX_PARALLELISM, 2, i);
        two.push(Subtask::new(HeapBackend::restore(
            &storage,
            &latest,
            range,
            (),
        )?)?);
    }
    // The source stays at parallelism 1.
    let mut source = storage.restore_operator_state(&latest, "source", 0, 1)?;
    let offset = source.list_state::<(u64, i64)>("offset")?;
    let (from, mut max_ts) = offset.get(&mut source)?[0];
    run(
        &mut two,
        &events,
        from as usize,
        events.len(),
        &mut max_ts,
        &mut output,
    )?;
    for s in two.iter_mut() {
        s.watermark(i64::MAX, &mut output)?;
    }

    let (a, b): (BTreeSet<_>, BTreeSet<_>) = (expected.iter().collect(), output.iter().collect());
    println!(
        "{} windows fired without interruption, {} with a crash and a restore on two subtasks ({} lost in the crash and fired again)",
        expected.len(),
        output.len(),
        lost.len()
    );
    assert_eq!(expected.len(), output.len(), "each window fires once");
    assert_eq!(a, b, "the same counts");
    Ok(())
}
