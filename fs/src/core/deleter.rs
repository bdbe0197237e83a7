//! Background removal of data whose last name is gone.
//!
//! Invariant: data is removed only after the journal record that dropped its inode is durable, so a
//! crash can never bring back a name whose bytes are gone. Removal runs off the FUSE threads; a remote
//! delete that still fails after retries leaves an orphan object (logged) for `statefs gc`, never a
//! dangling mapping.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::store::RemoteStore;

use super::State;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doomed {
    Object(String),
    LocalFile(PathBuf),
}

#[derive(Debug)]
pub struct Deleter {
    tx: Mutex<Option<Sender<Doomed>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Deleter {
    pub fn start(state: Arc<Mutex<State>>, remote: Arc<dyn RemoteStore>) -> Deleter {
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("statefs-deleter".into())
            .spawn(move || run(rx, state, remote))
            .expect("spawn deleter thread");
        Deleter {
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
        }
    }

    pub fn queue(&self, items: impl IntoIterator<Item = Doomed>) {
        let tx = self.tx.lock();
        for item in items {
            match tx.as_ref() {
                Some(tx) if tx.send(item.clone()).is_ok() => {}
                _ => tracing::error!(?item, "deleter stopped; leaving data for gc"),
            }
        }
    }

    /// Finishes every queued removal, then stops the worker.
    pub fn shutdown(&self) {
        self.tx.lock().take();
        if let Some(w) = self.worker.lock().take() {
            let _ = w.join();
        }
    }
}

fn run(rx: Receiver<Doomed>, state: Arc<Mutex<State>>, remote: Arc<dyn RemoteStore>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let syncer = state.lock().journal.syncer();
        if let Err(e) = syncer.sync() {
            tracing::error!(error = %e, items = batch.len(), "journal sync failed; keeping data that would have been removed");
            continue;
        }
        for item in batch {
            match &item {
                Doomed::Object(key) => {
                    if let Err(e) = remote.delete(key) {
                        tracing::error!(key, error = %e, "remote delete failed; object left for gc");
                    }
                }
                Doomed::LocalFile(path) => match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "removing local file failed")
                    }
                },
            }
        }
    }
}
