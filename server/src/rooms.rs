//! The registry of rooms in memory. The first channel to open a document loads it from storage;
//! after the last one leaves, the room waits an idle delay and is unloaded once everything it
//! received is durable. Reopening an unloaded document loads it afresh.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use quire_protocol::DocId;

use crate::metrics::Metrics;
use crate::room::Room;
use crate::store::{Store, StoreError};

#[derive(Debug)]
pub struct Rooms<S> {
    map: Mutex<HashMap<DocId, Arc<Room>>>,
    store: Arc<S>,
    idle_unload: Duration,
    metrics: Arc<Metrics>,
}

impl<S: Store> Rooms<S> {
    pub fn new(store: Arc<S>, idle_unload: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            store,
            idle_unload,
            metrics,
        }
    }

    /// Takes a reference on the document's room, loading it on first use.
    pub async fn acquire(self: &Arc<Self>, doc: &DocId) -> Result<Arc<Room>, StoreError> {
        let room = {
            let mut map = self.map.lock();
            let room = map.entry(doc.clone()).or_insert_with(|| {
                self.metrics
                    .documents_loaded
                    .fetch_add(1, Ordering::Relaxed);
                Arc::new(Room::new(doc.clone()))
            });
            room.refs.fetch_add(1, Ordering::AcqRel);
            room.clone()
        };
        let loaded = room
            .loaded
            .get_or_try_init(|| async {
                let stored = self.store.load(doc.as_str()).await?;
                room.load_stored(stored)
                    .map_err(|detail| StoreError::Corrupt {
                        doc: doc.to_string(),
                        detail,
                    })
            })
            .await;
        match loaded {
            Ok(()) => Ok(room),
            Err(err) => {
                self.release(&room);
                Err(err)
            }
        }
    }

    /// Drops a reference taken by [`Rooms::acquire`].
    pub fn release(self: &Arc<Self>, room: &Arc<Room>) {
        if room.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            let rooms = self.clone();
            let room = room.clone();
            tokio::spawn(async move { rooms.unload_when_idle(room).await });
        }
    }

    async fn unload_when_idle(&self, room: Arc<Room>) {
        loop {
            tokio::time::sleep(self.idle_unload).await;
            let mut map = self.map.lock();
            if room.refs.load(Ordering::Acquire) > 0 {
                return;
            }
            if room.pending_writes.load(Ordering::Acquire) > 0
                || room.needs_snapshot.load(Ordering::Acquire)
            {
                continue; // not durable yet: keep it, look again later
            }
            if map.get(&room.id).is_some_and(|r| Arc::ptr_eq(r, &room)) {
                map.remove(&room.id);
                self.metrics
                    .documents_loaded
                    .fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(doc = %room.id, "unloaded idle document");
            }
            return;
        }
    }
}
