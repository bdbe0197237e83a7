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

use super::namespace::Namespace;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doomed {
    Object(String),
    LocalFile(PathBuf),
}

#[derive(Debug)]
enum Msg {
    Remove(Doomed),
    /// Answered once everything queued before it is done.
    Barrier(mpsc::SyncSender<()>),
}

#[derive(Debug)]
pub struct Deleter {
    tx: Mutex<Option<Sender<Msg>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Deleter {
    pub fn start(ns: Arc<Namespace>, remote: Arc<dyn RemoteStore>) -> Deleter {
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("statefs-deleter".into())
            .spawn(move || run(rx, ns, remote))
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
                Some(tx) if tx.send(Msg::Remove(item.clone())).is_ok() => {}
                _ => tracing::error!(?item, "deleter stopped; leaving data for gc"),
            }
        }
    }

    /// Waits until every removal queued so far has been carried out (or has failed and been logged).
    pub fn barrier(&self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let sent = self
            .tx
            .lock()
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Barrier(ack_tx)).is_ok());
        if sent {
            let _ = ack_rx.recv();
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

fn run(rx: Receiver<Msg>, ns: Arc<Namespace>, remote: Arc<dyn RemoteStore>) {
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut barriers = Vec::new();
        for msg in std::iter::once(first).chain(rx.try_iter()) {
            match msg {
                Msg::Remove(d) => batch.push(d),
                Msg::Barrier(ack) => barriers.push(ack),
            }
        }
        let syncer = ns.syncer();
        if let Err(e) = syncer.sync() {
            tracing::error!(error = %e, items = batch.len(), "journal sync failed; keeping data that would have been removed");
            batch.clear();
        }
        remove(batch, remote.as_ref());
        for ack in barriers {
            let _ = ack.send(());
        }
    }
}

fn remove(batch: Vec<Doomed>, remote: &dyn RemoteStore) {
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
