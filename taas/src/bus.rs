//! The in-process bus: fans readings out to local subscribers (SSE streams,
//! CoAP observers, services, federation) without ever slowing ingest.
//!
//! Each subscriber has its own bounded queue. Publishing never waits: a
//! full queue means the subscriber lags, the reading is not queued for it
//! and it is told how many it missed on its next receive. A subscriber that
//! misses more than [`Bus::DROP_AFTER_FACTOR`] times its queue length
//! without receiving anything is disconnected, and the reason is logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::id::ThingId;
use crate::reading::ThingReading;

type Predicate = Box<dyn Fn(&ThingId) -> bool + Send + Sync>;

/// Which readings a subscriber wants.
pub struct Filter(Predicate);

impl Filter {
    pub fn all() -> Self {
        Filter(Box::new(|_| true))
    }
    pub fn thing(id: ThingId) -> Self {
        Filter(Box::new(move |candidate| *candidate == id))
    }
    pub fn matching(predicate: impl Fn(&ThingId) -> bool + Send + Sync + 'static) -> Self {
        Filter(Box::new(predicate))
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Reading(Arc<ThingReading>),
    /// This many readings were not delivered because the queue was full.
    Lagged(u64),
}

struct Slot {
    id: u64,
    label: String,
    filter: Filter,
    tx: mpsc::Sender<Arc<ThingReading>>,
    lag: Arc<Lag>,
}

/// Shared by the bus and the subscriber. Kept apart from the sender so that
/// removing a slot drops the sender and ends the subscriber's stream.
#[derive(Default)]
struct Lag {
    /// Not delivered since the subscriber last heard of it.
    missed: AtomicU64,
    /// Not delivered since the subscriber last received anything.
    missed_since_receive: AtomicU64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    missed: AtomicU64,
    disconnected: AtomicU64,
}

struct Inner {
    slots: RwLock<Vec<Arc<Slot>>>,
    next_id: AtomicU64,
    capacity: usize,
    counters: Counters,
}

/// Bus statistics for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    pub subscribers: usize,
    pub delivered: u64,
    pub missed: u64,
    pub disconnected: u64,
}

#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl Bus {
    /// A subscriber that misses this many queue-lengths of readings
    /// in a row is disconnected: with the hub's queues of 8192, one that
    /// took nothing while 16 384 readings went by.
    pub const DROP_AFTER_FACTOR: u64 = 2;

    pub fn new(queue_capacity: usize) -> Self {
        Bus {
            inner: Arc::new(Inner {
                slots: RwLock::new(Vec::new()),
                next_id: AtomicU64::new(1),
                capacity: queue_capacity.max(1),
                counters: Counters::default(),
            }),
        }
    }

    /// Registers a subscriber. `label` names it in logs ("sse 127.0.0.1:5123").
    pub fn subscribe(&self, label: impl Into<String>, filter: Filter) -> Subscription {
        let (tx, rx) = mpsc::channel(self.inner.capacity);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let lag = Arc::new(Lag::default());
        let slot = Arc::new(Slot {
            id,
            label: label.into(),
            filter,
            tx,
            lag: lag.clone(),
        });
        self.inner.slots.write().push(slot);
        Subscription {
            rx,
            id,
            lag,
            bus: Arc::downgrade(&self.inner),
            _guard: None,
        }
    }

    /// Offers readings to every interested subscriber. Never blocks.
    pub fn publish(&self, readings: &[Arc<ThingReading>]) {
        let mut to_remove: Vec<(u64, &'static str)> = Vec::new();
        {
            let slots = self.inner.slots.read();
            if slots.is_empty() {
                return;
            }
            let limit = self.inner.capacity as u64 * Self::DROP_AFTER_FACTOR;
            for slot in slots.iter() {
                for reading in readings {
                    if !(slot.filter.0)(&reading.thing) {
                        continue;
                    }
                    match slot.tx.try_send(reading.clone()) {
                        Ok(()) => {
                            self.inner
                                .counters
                                .delivered
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            self.inner.counters.missed.fetch_add(1, Ordering::Relaxed);
                            slot.lag.missed.fetch_add(1, Ordering::Relaxed);
                            let in_a_row = slot
                                .lag
                                .missed_since_receive
                                .fetch_add(1, Ordering::Relaxed)
                                + 1;
                            if in_a_row > limit {
                                to_remove.push((
                                    slot.id,
                                    "it stopped receiving and its queue stayed full",
                                ));
                                break;
                            }
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            to_remove.push((slot.id, "it went away"));
                            break;
                        }
                    }
                }
            }
        }
        if !to_remove.is_empty() {
            self.inner.remove(&to_remove);
        }
    }

    pub fn stats(&self) -> BusStats {
        let c = &self.inner.counters;
        BusStats {
            subscribers: self.inner.slots.read().len(),
            delivered: c.delivered.load(Ordering::Relaxed),
            missed: c.missed.load(Ordering::Relaxed),
            disconnected: c.disconnected.load(Ordering::Relaxed),
        }
    }

    /// Disconnects every subscriber: their streams end after draining.
    pub fn close_all(&self) {
        self.inner.slots.write().clear();
    }
}

impl Inner {
    fn remove(&self, which: &[(u64, &'static str)]) {
        let mut slots = self.slots.write();
        slots.retain(|slot| match which.iter().find(|(id, _)| *id == slot.id) {
            Some((_, reason)) => {
                if !slot.tx.is_closed() {
                    self.counters.disconnected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(subscriber = %slot.label, missed = slot.lag.missed.load(Ordering::Relaxed), "bus subscriber disconnected: {reason}");
                } else {
                    tracing::debug!(subscriber = %slot.label, "bus subscriber left");
                }
                false
            }
            None => true,
        });
    }
}

/// The receiving end of a subscription. Dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::Receiver<Arc<ThingReading>>,
    id: u64,
    lag: Arc<Lag>,
    bus: Weak<Inner>,
    /// Lives as long as the subscription (a remote stream's interest).
    _guard: Option<Box<dyn Send + Sync>>,
}

impl Subscription {
    /// Keeps `guard` alive until the subscription is dropped.
    pub(crate) fn holding(mut self, guard: Box<dyn Send + Sync>) -> Self {
        self._guard = Some(guard);
        self
    }

    /// The next event, or `None` once the bus disconnected this subscriber
    /// (or closed) and the queue is drained.
    pub async fn recv(&mut self) -> Option<Event> {
        let missed = self.lag.missed.swap(0, Ordering::Relaxed);
        if missed > 0 {
            return Some(Event::Lagged(missed));
        }
        let reading = self.rx.recv().await?;
        self.lag.missed_since_receive.store(0, Ordering::Relaxed);
        Some(Event::Reading(reading))
    }

    /// Like [`recv`](Self::recv) but without waiting; `None` if nothing is queued.
    pub fn try_recv(&mut self) -> Option<Event> {
        let missed = self.lag.missed.swap(0, Ordering::Relaxed);
        if missed > 0 {
            return Some(Event::Lagged(missed));
        }
        let reading = self.rx.try_recv().ok()?;
        self.lag.missed_since_receive.store(0, Ordering::Relaxed);
        Some(Event::Reading(reading))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            self.rx.close();
            bus.remove(&[(self.id, "it went away")]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Reading, Timestamp, Value};

    fn reading(id: &str, n: u64) -> Arc<ThingReading> {
        Arc::new(ThingReading {
            thing: ThingId::parse(id).unwrap(),
            reading: Reading {
                time: Timestamp(n),
                value: Value::Number(n as f64),
            },
        })
    }

    #[tokio::test]
    async fn filters_select_readings() {
        let bus = Bus::new(16);
        let mut all = bus.subscribe("all", Filter::all());
        let mut one = bus.subscribe("one", Filter::thing(ThingId::parse("g.a.d.x").unwrap()));
        bus.publish(&[reading("g.a.d.x", 1), reading("g.a.d.y", 2)]);
        assert_eq!(
            all.recv().await,
            Some(Event::Reading(reading("g.a.d.x", 1)))
        );
        assert_eq!(
            all.recv().await,
            Some(Event::Reading(reading("g.a.d.y", 2)))
        );
        assert_eq!(
            one.recv().await,
            Some(Event::Reading(reading("g.a.d.x", 1)))
        );
        assert_eq!(one.try_recv(), None);
    }

    #[tokio::test]
    async fn slow_subscriber_lags_without_blocking_and_is_told() {
        let bus = Bus::new(4);
        let mut slow = bus.subscribe("slow", Filter::all());
        let batch: Vec<_> = (0..10).map(|n| reading("g.a.d.x", n)).collect();
        bus.publish(&batch); // returns at once although only 4 fit
        assert_eq!(slow.recv().await, Some(Event::Lagged(6)));
        for n in 0..4 {
            assert_eq!(
                slow.recv().await,
                Some(Event::Reading(reading("g.a.d.x", n)))
            );
        }
        assert_eq!(bus.stats().missed, 6);
        assert_eq!(bus.stats().subscribers, 1);
    }

    #[tokio::test]
    async fn stalled_subscriber_is_disconnected() {
        let bus = Bus::new(2);
        let mut stalled = bus.subscribe("stalled", Filter::all());
        let mut healthy = bus.subscribe("healthy", Filter::all());
        for n in 0..(2 * Bus::DROP_AFTER_FACTOR + 4) {
            bus.publish(&[reading("g.a.d.x", n)]);
            assert!(matches!(healthy.recv().await, Some(Event::Reading(_))));
        }
        assert_eq!(bus.stats().subscribers, 1);
        assert_eq!(bus.stats().disconnected, 1);
        // The stalled one drains what it had, learns of the loss, then ends.
        let mut events = Vec::new();
        while let Some(event) = stalled.recv().await {
            events.push(event);
        }
        assert!(matches!(events[0], Event::Lagged(_)));
        assert_eq!(events.len(), 3);
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes() {
        let bus = Bus::new(2);
        let sub = bus.subscribe("gone", Filter::all());
        assert_eq!(bus.stats().subscribers, 1);
        drop(sub);
        assert_eq!(bus.stats().subscribers, 0);
        assert_eq!(bus.stats().disconnected, 0);
    }
}
