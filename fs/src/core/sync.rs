//! The locks of the core's owners: parking_lot's, or, with feature `shuttle` (tests only), the
//! shuttle model checker's, so that a test can explore the interleavings of an owner's threads.
//! Both have parking_lot's API (no poisoning).

#[cfg(not(feature = "shuttle"))]
pub(crate) use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

#[cfg(feature = "shuttle")]
pub(crate) use model::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

#[cfg(feature = "shuttle")]
mod model {
    pub(crate) type MutexGuard<'a, T> = shuttle::sync::MutexGuard<'a, T>;
    pub(crate) type RwLockReadGuard<'a, T> = shuttle::sync::RwLockReadGuard<'a, T>;
    pub(crate) type RwLockWriteGuard<'a, T> = shuttle::sync::RwLockWriteGuard<'a, T>;

    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(shuttle::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(t: T) -> Self {
            Mutex(shuttle::sync::Mutex::new(t))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().expect("no test thread panics holding a lock")
        }
    }

    #[derive(Debug, Default)]
    pub(crate) struct RwLock<T>(shuttle::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(t: T) -> Self {
            RwLock(shuttle::sync::RwLock::new(t))
        }
        pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().expect("no test thread panics holding a lock")
        }
        pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0
                .write()
                .expect("no test thread panics holding a lock")
        }
    }
}
