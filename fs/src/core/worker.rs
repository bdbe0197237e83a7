//! [`Worker`]: a named background thread of the core fed by a channel (the copy loader, the
//! mount-record registrar, deferred retention).

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use parking_lot::Mutex;

/// A thread running `body` over the requests sent to it. Shutting down closes the channel, so the
/// body sees the queued requests and then the end, and waits for the thread; a worker shut down
/// from its own thread (the core's last reference dropped there) does not wait for itself.
#[derive(Debug)]
pub(crate) struct Worker<T> {
    tx: Mutex<Option<Sender<T>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<T: Send + 'static> Worker<T> {
    pub(crate) fn spawn(name: &str, body: impl FnOnce(Receiver<T>) + Send + 'static) -> Self {
        let (tx, rx) = channel::<T>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(rx))
            .unwrap_or_else(|e| panic!("spawn {name} thread: {e}"));
        Worker {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Queues `request`; false once the worker is shut down.
    pub(crate) fn send(&self, request: T) -> bool {
        self.tx
            .lock()
            .as_ref()
            .is_some_and(|tx| tx.send(request).is_ok())
    }

    /// Closes the channel and waits until the body has returned.
    pub(crate) fn shutdown(&self) {
        self.tx.lock().take();
        if let Some(t) = self.thread.lock().take()
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}
