//! The async State API (Flink's State V2): value, list, map, reducing and aggregating state whose
//! calls return [`StateFuture`]s, run by an execution controller ([`AsyncKeyed`]) that keeps
//! records of one key in order and many records in flight, and batches their requests so that a
//! backend on a distant store reads many entries at once.
//!
//! ```
//! use statefs_backend::asyncstate::{AsyncKeyed, AsyncOptions};
//! use statefs_backend::{HeapBackend, KeyGroupRange, Keyed};
//!
//! # fn main() -> statefs_backend::StateResult<()> {
//! let kb: Keyed<String, HeapBackend> = Keyed::new(HeapBackend::new(KeyGroupRange::all(128), 128));
//! let mut ctl = AsyncKeyed::new(kb, AsyncOptions::default());
//! let count = ctl.value_state::<u64>("count", None)?;
//! for user in ["alice", "bob", "alice"] {
//!     let count = count.clone();
//!     ctl.process(&user.to_string(), move |ctx| async move {
//!         let n = count.value(&ctx).await?.unwrap_or(0);
//!         count.update(&ctx, n + 1).await
//!     })?;
//! }
//! let kb = ctl.keyed_mut()?; // drains: every record has run
//! let sync = kb.value_state::<u64>("count", None)?;
//! kb.set_current_key(&"alice".to_string())?;
//! assert_eq!(sync.value(kb)?, Some(2));
//! # Ok(())
//! # }
//! ```
//!
//! The handles are the sync API's states (same descriptors, serializers, namespaces and TTL),
//! shared: a call clones nothing but a reference. Each request runs through the sync API, so the
//! two APIs read and write the same state and can be used on one backend.

mod controller;

use std::rc::Rc;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use controller::{AsyncKeyed, AsyncOptions, RecordContext, StateFuture};

use crate::backend::{StateBackend, StateId, composite_key};
use crate::error::StateResult;
use crate::states::{
    Aggregate, AggregatingState, Inner, ListState, MapState, ReducingState, ValueState,
};
use crate::ttl::TtlConfig;

/// The entry a point read of `inner` for `ctx`'s key and `user_key` reads.
fn point<K: 'static, B: StateBackend + 'static>(
    inner: &Inner,
    ctx: &RecordContext<K, B>,
    user_key: &[u8],
) -> Option<(StateId, Vec<u8>)> {
    Some((
        inner.id,
        composite_key(ctx.key_bytes(), &inner.namespace, user_key),
    ))
}

macro_rules! async_handle {
    ($name:ident<$($p:ident),*>, $sync:ident) => {
        /// The async twin of the sync state of the same name (see the module doc).
        pub struct $name<$($p),*> {
            sync: Rc<$sync<$($p),*>>,
        }

        impl<$($p),*> Clone for $name<$($p),*> {
            fn clone(&self) -> Self {
                $name { sync: self.sync.clone() }
            }
        }

        impl<$($p: 'static),*> $name<$($p),*> {
            /// Issues `op` on the sync handle for `ctx`'s record; `read` is the entry it reads.
            fn call<K: 'static, B: StateBackend + 'static, T: 'static>(
                &self,
                ctx: &RecordContext<K, B>,
                read: Option<(StateId, Vec<u8>)>,
                op: impl FnOnce(&$sync<$($p),*>, &mut crate::states::Keyed<K, B>) -> StateResult<T>
                    + 'static,
            ) -> StateFuture<T> {
                let s = self.sync.clone();
                ctx.request(read, move |kb| op(&s, kb))
            }

            /// The same state in `namespace` (e.g. a window).
            pub fn in_namespace<N: Serialize>(&self, namespace: &N) -> Self {
                let mut sync = (*self.sync).clone();
                sync.set_namespace(namespace);
                $name { sync: Rc::new(sync) }
            }

            /// Removes this state's entries for the record's key and this namespace.
            pub fn clear<K: 'static, B: StateBackend + 'static>(
                &self,
                ctx: &RecordContext<K, B>,
            ) -> StateFuture<()> {
                self.call(ctx, None, |s, kb| s.clear(kb))
            }
        }
    };
}

async_handle!(AsyncValueState<V>, ValueState);
async_handle!(AsyncListState<V>, ListState);
async_handle!(AsyncMapState<UK, V>, MapState);
async_handle!(AsyncReducingState<V>, ReducingState);
async_handle!(AsyncAggregatingState<IN, ACC, OUT>, AggregatingState);

impl<V: 'static> AsyncValueState<V> {
    pub fn value<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
    ) -> StateFuture<Option<V>> {
        self.call(ctx, point(&self.sync.inner, ctx, &[]), move |s, kb| {
            s.value(kb)
        })
    }

    pub fn update<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
        value: V,
    ) -> StateFuture<()> {
        self.call(ctx, None, move |s, kb| s.update(kb, &value))
    }
}

impl<V: 'static> AsyncListState<V> {
    pub fn get<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
    ) -> StateFuture<Vec<V>> {
        self.call(ctx, point(&self.sync.inner, ctx, &[]), move |s, kb| {
            s.get(kb)
        })
    }

    pub fn add<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
        value: V,
    ) -> StateFuture<()> {
        self.call(ctx, None, move |s, kb| s.add(kb, &value))
    }

    pub fn add_all<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
        values: Vec<V>,
    ) -> StateFuture<()> {
        self.call(ctx, None, move |s, kb| s.add_all(kb, &values))
    }

    pub fn update<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
        values: Vec<V>,
    ) -> StateFuture<()> {
        self.call(ctx, None, move |s, kb| s.update(kb, &values))
    }
}

impl<UK: 'static, V: 'static> AsyncMapState<UK, V> {
    fn user_key(&self, uk: &UK) -> Vec<u8> {
        let mut out = Vec::new();
        self.sync.uk.serialize_into(uk, &mut out);
        out
    }

    pub fn get<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
        user_key: UK,
    ) -> StateFuture<Option<V>> {
        let read = point(&self.sync.inner, ctx, &self.user_key(&user_key));
        self.call(ctx, read, move |s, kb| s.get(kb, &user_key))
    }

    pub fn contains<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
        user_key: UK,
    ) -> StateFuture<bool> {
        let read = point(&self.sync.inner, ctx, &self.user_key(&user_key));
        self.call(ctx, read, move |s, kb| s.contains(kb, &user_key))
    }

    pub fn put<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
        user_key: UK,
        value: V,
    ) -> StateFuture<()> {
        self.call(ctx, None, move |s, kb| s.put(kb, &user_key, &value))
    }

    pub fn put_all<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
        entries: Vec<(UK, V)>,
    ) -> StateFuture<()> {
        self.call(ctx, None, move |s, kb| s.put_all(kb, &entries))
    }

    pub fn remove<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
        user_key: UK,
    ) -> StateFuture<()> {
        self.call(ctx, None, move |s, kb| s.remove(kb, &user_key))
    }

    /// Live entries of the record's key and this namespace, in user-key byte order.
    pub fn entries<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
    ) -> StateFuture<Vec<(UK, V)>> {
        self.call(ctx, None, move |s, kb| s.entries(kb))
    }

    pub fn keys<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
    ) -> StateFuture<Vec<UK>> {
        self.call(ctx, None, move |s, kb| s.keys(kb))
    }

    pub fn values<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
    ) -> StateFuture<Vec<V>> {
        self.call(ctx, None, move |s, kb| s.values(kb))
    }

    pub fn is_empty<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
    ) -> StateFuture<bool> {
        self.call(ctx, None, move |s, kb| s.is_empty(kb))
    }
}

impl<V: 'static> AsyncReducingState<V> {
    pub fn get<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
    ) -> StateFuture<Option<V>> {
        self.call(ctx, point(&self.sync.inner, ctx, &[]), move |s, kb| {
            s.get(kb)
        })
    }

    /// Merges `value` into the state (a read, then a write).
    pub fn add<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
        value: V,
    ) -> StateFuture<()> {
        self.call(ctx, point(&self.sync.inner, ctx, &[]), move |s, kb| {
            s.add(kb, value)
        })
    }
}

impl<IN: 'static, ACC: 'static, OUT: 'static> AsyncAggregatingState<IN, ACC, OUT> {
    pub fn get<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
    ) -> StateFuture<Option<OUT>> {
        self.call(ctx, point(&self.sync.inner, ctx, &[]), move |s, kb| {
            s.get(kb)
        })
    }

    /// Adds `value` to the accumulator (a read, then a write).
    pub fn add<K: 'static, B: StateBackend + 'static>(
        &self,
        ctx: &RecordContext<K, B>,
        value: IN,
    ) -> StateFuture<()> {
        self.call(ctx, point(&self.sync.inner, ctx, &[]), move |s, kb| {
            s.add(kb, value)
        })
    }
}

/// Registration: the same descriptors as [`crate::Keyed`]'s, registered on the backend (drained
/// first).
impl<K: Serialize + DeserializeOwned + 'static, B: StateBackend + 'static> AsyncKeyed<K, B> {
    pub fn value_state<V: Serialize + DeserializeOwned + 'static>(
        &mut self,
        name: &str,
        ttl: Option<TtlConfig>,
    ) -> StateResult<AsyncValueState<V>> {
        let sync = self.keyed_mut()?.value_state(name, ttl)?;
        Ok(AsyncValueState {
            sync: Rc::new(sync),
        })
    }

    pub fn list_state<V: Serialize + DeserializeOwned + 'static>(
        &mut self,
        name: &str,
        ttl: Option<TtlConfig>,
    ) -> StateResult<AsyncListState<V>> {
        let sync = self.keyed_mut()?.list_state(name, ttl)?;
        Ok(AsyncListState {
            sync: Rc::new(sync),
        })
    }

    pub fn map_state<
        UK: Serialize + DeserializeOwned + 'static,
        V: Serialize + DeserializeOwned + 'static,
    >(
        &mut self,
        name: &str,
        ttl: Option<TtlConfig>,
    ) -> StateResult<AsyncMapState<UK, V>> {
        let sync = self.keyed_mut()?.map_state(name, ttl)?;
        Ok(AsyncMapState {
            sync: Rc::new(sync),
        })
    }

    pub fn reducing_state<V: Serialize + DeserializeOwned + 'static>(
        &mut self,
        name: &str,
        reduce: impl Fn(V, V) -> V + Send + Sync + 'static,
        ttl: Option<TtlConfig>,
    ) -> StateResult<AsyncReducingState<V>> {
        let sync = self.keyed_mut()?.reducing_state(name, reduce, ttl)?;
        Ok(AsyncReducingState {
            sync: Rc::new(sync),
        })
    }

    pub fn aggregating_state<IN: 'static, ACC, OUT: 'static>(
        &mut self,
        name: &str,
        agg: impl Aggregate<IN, ACC, OUT> + 'static,
        ttl: Option<TtlConfig>,
    ) -> StateResult<AsyncAggregatingState<IN, ACC, OUT>>
    where
        ACC: Serialize + DeserializeOwned + 'static,
    {
        let sync = self.keyed_mut()?.aggregating_state(name, agg, ttl)?;
        Ok(AsyncAggregatingState {
            sync: Rc::new(sync),
        })
    }
}

// The sync handles are cheap to clone (an id, a name, a namespace and shared serializers); a
// namespace change clones one.
impl<V> Clone for ValueState<V> {
    fn clone(&self) -> Self {
        ValueState {
            inner: self.inner.clone(),
            ser: self.ser.clone(),
        }
    }
}

impl<V> Clone for ListState<V> {
    fn clone(&self) -> Self {
        ListState {
            inner: self.inner.clone(),
            ser: self.ser.clone(),
        }
    }
}

impl<UK, V> Clone for MapState<UK, V> {
    fn clone(&self) -> Self {
        MapState {
            inner: self.inner.clone(),
            ser: self.ser.clone(),
            uk: self.uk.clone(),
        }
    }
}

impl<V> Clone for ReducingState<V> {
    fn clone(&self) -> Self {
        ReducingState {
            inner: self.inner.clone(),
            ser: self.ser.clone(),
            reduce: self.reduce.clone(),
        }
    }
}

impl<IN, ACC, OUT> Clone for AggregatingState<IN, ACC, OUT> {
    fn clone(&self) -> Self {
        AggregatingState {
            inner: self.inner.clone(),
            ser: self.ser.clone(),
            agg: self.agg.clone(),
            _p: std::marker::PhantomData,
        }
    }
}

#[cfg(test)]
mod tests;
