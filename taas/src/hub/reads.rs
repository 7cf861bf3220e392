//! Readings out: the latest reading and history of any thing service of
//! the local cloud (from memory and the store for this gateway's own, from
//! the owner through [`Remote`](crate::Remote) for the others), and
//! subscriptions on the bus, which follow another gateway's thing service
//! while they live.

use std::sync::Arc;

use super::Hub;
use crate::bus::{Filter, Subscription};
use crate::remote::{Follow, RemoteError};
use crate::store::{StoreError, Window};
use crate::{Reading, ThingId, ThingReading};

/// Why a reading or a history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("unknown thing service {0}")]
    UnknownThing(ThingId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The blocking task scanning the history did not finish.
    #[error("the history scan stopped: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
}

impl Hub {
    /// Hands readings of other gateways' thing services, relayed by the
    /// local cloud, to local subscribers. They are not stored here: the
    /// owner keeps the history.
    pub fn relay(&self, readings: Vec<ThingReading>) {
        let shared: Vec<Arc<ThingReading>> = readings
            .into_iter()
            .filter(|r| {
                self.registry
                    .inspect(&r.thing, |t| {
                        !self.is_local(t) && t.data_type == r.reading.value.data_type()
                    })
                    .unwrap_or(false)
            })
            .map(|r| {
                self.registry.offer_latest(&r.thing, &r.reading);
                Arc::new(r)
            })
            .collect();
        self.bus.publish(&shared);
    }

    /// The newest reading of any thing service of the local cloud: from
    /// memory for this gateway's own, from the owner for the others.
    pub async fn read_latest(&self, id: &ThingId) -> Result<Option<Reading>, ReadError> {
        // Local, the common case: no copy of the thing service.
        let local = self
            .registry
            .inspect(id, |thing| self.is_local(thing))
            .ok_or_else(|| ReadError::UnknownThing(id.clone()))?;
        if local {
            return Ok(self.registry.latest(id).flatten());
        }
        let thing = self
            .registry
            .get(id)
            .ok_or_else(|| ReadError::UnknownThing(id.clone()))?;
        Ok(self.remote_for(&thing)?.latest(&thing).await?)
    }

    /// History of any thing service of the local cloud (see
    /// [`read_latest`](Self::read_latest)). Local scans run off the
    /// async threads.
    pub async fn read_history(
        self: &Arc<Self>,
        id: &ThingId,
        window: Window,
    ) -> Result<Vec<Reading>, ReadError> {
        let thing = self
            .registry
            .get(id)
            .ok_or_else(|| ReadError::UnknownThing(id.clone()))?;
        if !self.is_local(&thing) {
            return Ok(self.remote_for(&thing)?.history(&thing, window).await?);
        }
        let hub = self.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || hub.history(&id, window))
            .await?
            .map_err(ReadError::Store)
    }

    /// The newest reading, from memory; `None` if the thing is unknown.
    pub fn latest(&self, id: &ThingId) -> Option<Option<Reading>> {
        self.registry.latest(id)
    }

    pub fn history(&self, id: &ThingId, window: Window) -> Result<Vec<Reading>, StoreError> {
        self.store.history(id, window)
    }

    pub fn subscribe(&self, label: impl Into<String>, filter: Filter) -> Subscription {
        self.bus.subscribe(label, filter)
    }

    /// Subscribes to one thing service of the local cloud. For another
    /// gateway's, the local cloud is asked for its readings while the
    /// subscription lives.
    pub fn subscribe_thing(&self, label: impl Into<String>, id: &ThingId) -> Subscription {
        let subscription = self.bus.subscribe(label, Filter::thing(id.clone()));
        match self.follow(id) {
            Some(follow) => subscription.holding(Box::new(follow)),
            None => subscription,
        }
    }

    /// Subscribes to several thing services of the local cloud at once
    /// (a dashboard's chart of a floor): other gateways' are followed
    /// while the subscription lives, as [`subscribe_thing`](Self::subscribe_thing)
    /// does for one.
    pub fn subscribe_things(&self, label: impl Into<String>, ids: Vec<ThingId>) -> Subscription {
        let follows: Vec<Follow> = ids.iter().filter_map(|id| self.follow(id)).collect();
        let wanted: std::collections::HashSet<ThingId> = ids.into_iter().collect();
        let subscription = self.bus.subscribe(
            label,
            Filter::matching(move |candidate| wanted.contains(candidate)),
        );
        match follows.is_empty() {
            true => subscription,
            false => subscription.holding(Box::new(follows)),
        }
    }

    /// Has another gateway's thing service's readings relayed here (and
    /// published on the bus, and kept as its latest) while the returned
    /// guard lives. `None` for this gateway's own things, unknown ones, or
    /// without a local cloud.
    pub fn follow(&self, id: &ThingId) -> Option<Follow> {
        let thing = self.registry.get(id)?;
        if self.is_local(&thing) {
            return None;
        }
        let remote = self.remote.read().clone()?;
        Some(Follow::start(remote, id.clone(), self.followers.clone()))
    }

    /// Whether readings of another gateway's thing service are being
    /// relayed here, so that its latest reading in memory is current.
    pub fn is_following(&self, id: &ThingId) -> bool {
        self.followers.lock().contains_key(id)
    }

    /// Ends every subscription (at shutdown, so streams close promptly).
    pub fn close_subscriptions(&self) {
        self.bus.close_all();
    }
}
