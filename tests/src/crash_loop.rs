//! The crash loop: rounds of a real workload on a `statefs mount`, each ended by `kill -9` at a
//! random point, then checked: `statefs fsck` finds no damage, `statefs gc` (no grace period)
//! runs, and after a remount RocksDB reads back every key it ever acknowledged.
//!
//! A round's workload is drawn from:
//! - synced RocksDB writes (tiny memtables: flushes and compactions all the time), with the
//!   mount's journal compacting every few hundred records;
//! - the same, publishing checkpoints (RocksDB Checkpoint + `statefs checkpoint`) as it goes;
//! - the same, with `statefs gc --min-age 0s` running beside it;
//! - a restore of the newest checkpoint into a fresh mount, killed at a random point or
//!   verified (every key the checkpoint holds), while the source keeps writing and
//!   checkpointing (its retention drops old checkpoints).
//!
//! Run by `scripts/crash-loop.sh [ROUNDS]` (the `crash_loop` binary) and, shortly, by the test
//! suite (`tests/tests/crash.rs`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{CliMount, Dirs, crash_key, crash_progress, crash_value, is_mounted, statefs_bin};

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub rounds: u64,
    /// Keys acknowledged by the end (each checked after every later round).
    pub acked: u64,
    /// Key reads that found the acknowledged value, over all checks.
    pub keys_checked: u64,
    pub checkpoints: u64,
    pub restores_verified: u64,
    pub restores_killed: u64,
    pub restores_refused: u64,
    pub gc_runs: u64,
    pub fsck_runs: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rounds, {} keys acknowledged, {} key reads checked, {} checkpoints, restores: {} verified / {} killed / {} refused (checkpoint dropped meanwhile), {} gc runs, {} fsck runs, 0 keys lost",
            self.rounds,
            self.acked,
            self.keys_checked,
            self.checkpoints,
            self.restores_verified,
            self.restores_killed,
            self.restores_refused,
            self.gc_runs,
            self.fsck_runs
        )
    }
}

/// A small deterministic generator (splitmix64): a failing round is replayed from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Runs `rounds` rounds from `seed`; `writer` is the `crash_writer` binary. Panics, with the
/// round and seed, at the first check that fails.
pub fn run(rounds: u64, seed: u64, writer: &Path, verbose: bool) -> Summary {
    let dirs = Dirs::new();
    let mut rng = Rng::new(seed);
    let mut s = Summary::default();
    let progress = dirs.root.path().join("progress");
    let ckpt_log = dirs.root.path().join("checkpoints.log");
    let db = dirs.mnt.join("db");
    let mut args = dirs.cli_args();
    args.extend(["--num-retained".into(), "3".into()]);
    for round in 0..rounds {
        let ctx = format!("round {round} of seed {seed}");
        let workload = rng.below(4);
        let mut mount = start(&args, &dirs.mnt);
        let mut writer = Command::new(writer);
        writer
            .arg(&db)
            .arg(&progress)
            .arg(s.acked.to_string())
            // About 1,500 keys a second: several flushes a round, and a key count that the
            // check after every round can read back in seconds after hundreds of rounds.
            .env("STATEFS_CRASH_WRITE_PAUSE_US", "500")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if workload >= 1 {
            writer.env(
                "STATEFS_CRASH_CHECKPOINT",
                format!(
                    "{}|{}|{}|{}",
                    statefs_bin().display(),
                    dirs.mnt.display(),
                    ckpt_log.display(),
                    100 + rng.below(300)
                ),
            );
        }
        let mut writer = writer.spawn().expect("crash_writer");
        let gc = (workload == 2).then(|| Gc::start(&dirs.remote_url()));
        let restore = (workload == 3)
            .then(|| last_checkpoint(&ckpt_log))
            .flatten()
            // Half the restores are killed within 12 ms (from a local store a restore is up in
            // a few tens), half get time to come up and be verified.
            .map(|c| {
                (
                    c,
                    if rng.below(2) == 0 {
                        rng.below(12)
                    } else {
                        5000
                    },
                )
            });
        let restored = restore.map(|((id, keys), kill_after_ms)| {
            restore_round(&dirs, &id, keys, kill_after_ms, &ctx)
        });
        std::thread::sleep(Duration::from_millis(200 + rng.below(2300)));
        mount.kill9();
        let _ = writer.kill();
        let _ = writer.wait();
        if let Some(gc) = gc {
            s.gc_runs += gc.stop();
        }
        match restored {
            Some(Restored::Verified(keys)) => {
                s.restores_verified += 1;
                s.keys_checked += keys;
            }
            Some(Restored::Killed) => s.restores_killed += 1,
            Some(Restored::Refused) => s.restores_refused += 1,
            None => {}
        }
        drop(mount);
        if is_mounted(&dirs.mnt) {
            crate::unmount_dead(&dirs.mnt);
        }
        s.acked = s.acked.max(crash_progress(&progress));
        // The stopped mount's journal against the store: no damage.
        fsck(&dirs, &ctx);
        s.fsck_runs += 1;
        // gc with no grace period right after the crash, then every acknowledged key reads back.
        gc_once(&dirs.remote_url(), &ctx);
        s.gc_runs += 1;
        let mount = start(&args, &dirs.mnt);
        s.keys_checked += verify(&db, 0, s.acked, &ctx);
        drop(mount);
        s.rounds += 1;
        if verbose {
            eprintln!(
                "round {round}: workload {workload}, {} keys acknowledged",
                s.acked
            );
        }
    }
    s.checkpoints = std::fs::read_to_string(&ckpt_log)
        .map(|l| l.lines().count() as u64)
        .unwrap_or(0);
    fsck(&dirs, "the end");
    s.fsck_runs += 1;
    s
}

fn start(args: &[String], mnt: &Path) -> CliMount {
    CliMount::start_with(args, mnt, |c| {
        c.env("STATEFS_JOURNAL_COMPACT_RECORDS", "400");
    })
}

/// Opens the database and checks keys `from..to`; returns how many it read.
fn verify(db: &Path, from: u64, to: u64, ctx: &str) -> u64 {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(false);
    let db = rocksdb::DB::open(&opts, db).unwrap_or_else(|e| panic!("{ctx}: RocksDB reopen: {e}"));
    for i in from..to {
        let got = db
            .get(crash_key(i))
            .unwrap_or_else(|e| panic!("{ctx}: key {i}: {e}"));
        assert!(
            got.as_deref() == Some(&crash_value(i)[..]),
            "{ctx}: key {i} of {to} acknowledged keys is {}",
            if got.is_some() { "wrong" } else { "missing" }
        );
    }
    to - from
}

fn cli(args: &[&str], remote: &str) -> std::process::Output {
    Command::new(statefs_bin())
        .args(args)
        .args(["--remote", remote])
        .output()
        .expect("statefs")
}

fn fsck(dirs: &Dirs, ctx: &str) {
    let out = Command::new(statefs_bin())
        .args(["fsck", "--remote", &dirs.remote_url(), "--local-dir"])
        .arg(&dirs.local)
        .output()
        .expect("statefs fsck");
    assert!(
        out.status.success(),
        "{ctx}: fsck found damage:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn gc_once(remote: &str, ctx: &str) {
    let out = cli(&["gc", "--min-age", "0s"], remote);
    assert!(
        out.status.success(),
        "{ctx}: gc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `statefs gc --min-age 0s` in a loop beside the workload.
struct Gc {
    stop: Arc<AtomicBool>,
    runs: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Gc {
    fn start(remote: &str) -> Gc {
        let (stop, runs) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, r, remote) = (stop.clone(), runs.clone(), remote.to_string());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                // A gc may fail while a record or manifest is being replaced under it (it
                // refuses rather than guess); what matters is that none deletes anything live.
                let _ = cli(&["gc", "--min-age", "0s"], &remote);
                r.fetch_add(1, Ordering::Relaxed);
            }
        });
        Gc { stop, runs, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.runs.load(Ordering::Relaxed)
    }
}

/// The newest checkpoint in the writer's log: its id and the keys it holds.
fn last_checkpoint(log: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let (id, keys) = line.split_once(' ')?;
    Some((id.to_string(), keys.trim().parse().ok()?))
}

enum Restored {
    Verified(u64),
    Killed,
    Refused,
}

/// Restores checkpoint `id` into fresh dirs while the source runs: killed `kill_after_ms` after
/// it started if it has not come up before, else verified; its dirs are removed and its record
/// forgotten afterwards, so gc may take what only it named.
fn restore_round(dirs: &Dirs, id: &str, keys: u64, kill_after_ms: u64, ctx: &str) -> Restored {
    let base = dirs.root.path().join(format!("restore-{id}"));
    let (local, cache, mnt) = (base.join("local"), base.join("cache"), base.join("mnt"));
    std::fs::create_dir_all(&mnt).unwrap();
    let mut child = Command::new(statefs_bin())
        .arg("mount")
        .args([
            "--remote",
            &dirs.remote_url(),
            "--restore",
            id,
            "--local-dir",
        ])
        .arg(&local)
        .arg("--cache-dir")
        .arg(&cache)
        .arg(&mnt)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("statefs mount --restore");
    let deadline = Instant::now() + Duration::from_millis(kill_after_ms);
    // The kill comes at its time whether or not the restore is up by then.
    let outcome = loop {
        if Instant::now() > deadline {
            break Some(false);
        }
        if is_mounted(&mnt) {
            break Some(true);
        }
        if let Some(_status) = child.try_wait().unwrap() {
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let result = match outcome {
        Some(true) => {
            let n = verify(&mnt, 0, keys, &format!("{ctx}, restored {id}"));
            stop_child(&mut child, &mnt);
            Restored::Verified(n)
        }
        Some(false) => {
            kill_child(&mut child, &mnt);
            Restored::Killed
        }
        None => {
            // It exited by itself: refused. Only a checkpoint dropped meanwhile is a reason.
            let mut err = String::new();
            use std::io::Read;
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            assert!(
                err.contains("dropped while it was being restored")
                    || err.contains("no checkpoint"),
                "{ctx}: restore of {id} failed: {err}"
            );
            Restored::Refused
        }
    };
    forget(dirs, &local);
    let _ = std::fs::remove_dir_all(&base);
    result
}

/// Removes a restore's local dir and forgets its mount, as an operator retiring it would.
fn forget(dirs: &Dirs, local: &PathBuf) {
    let id = std::fs::read_to_string(local.join("MOUNT_ID")).ok();
    let _ = std::fs::remove_dir_all(local);
    if let Some(id) = id {
        let _ = cli(
            &["mounts", "forget", id.trim(), "--min-age", "0s"],
            &dirs.remote_url(),
        );
    }
}

fn stop_child(child: &mut Child, mnt: &Path) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    if is_mounted(mnt) {
        crate::unmount_dead(mnt);
    }
}

fn kill_child(child: &mut Child, mnt: &Path) {
    let _ = child.kill();
    let _ = child.wait();
    if is_mounted(mnt) {
        crate::unmount_dead(mnt);
    }
}
