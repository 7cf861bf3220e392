//! Readings to followers over a direct stream per pair of gateways.
//!
//! The owner of a followed thing writes each batch of its readings straight
//! onto a long-lived libp2p stream ([`PROTOCOL`]) to every gateway that
//! follows it, in frames of a 4-byte big-endian length and the batch. Who
//! follows what is still learnt from the readings gossipsub's
//! subscriptions; only delivery is here, because gossipsub's per-message
//! bookkeeping (message ids, caches, a `futures-timer` delay per message
//! whose thread is woken twice) was most of the hop between gateways.
//!
//! The stream runs over the connection between the two gateways, so the
//! sender is the peer that connection authenticated: a frame's readings are
//! taken only for things that peer owns.
//!
//! Neither side goes through the swarm loop: on the owner, one task takes
//! the followed things' readings off the bus and writes them; on the
//! follower, each stream's task takes them to the hub. A reading does not
//! wait behind catalog work, and the loop, which polls every behaviour
//! whenever it wakes, does not wake for readings at all.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::Control;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::members::Speakers;
use super::wire;
use fogbank_taas::reading::ThingReading;
use fogbank_taas::{Event, Filter, Hub, Subscription, ThingId};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/fogbank/readings/1");

/// Frames waiting for one follower; more are dropped (and counted) rather
/// than let a slow follower hold up the swarm loop.
const QUEUE: usize = 1024;

/// Largest frame taken: a batch of readings is far smaller.
const MAX_FRAME: usize = 1 << 20;

/// Readings taken off the bus at once, then sent as one frame per thing.
const READINGS_BATCH: usize = 256;

/// Things some peer follows, and who: kept by the swarm loop from the
/// readings gossipsub's subscriptions, read by [`export`], which sends
/// those of them that are ours (a thing may become ours when its device
/// moves here, and its followers are then already known).
pub type Watchers = Arc<parking_lot::RwLock<HashMap<ThingId, HashSet<PeerId>>>>;

/// Readings counted by the streams' tasks, for the node's statistics.
#[derive(Clone, Default)]
pub struct Counters {
    pub sent: Arc<AtomicU64>,
    pub received: Arc<AtomicU64>,
    /// For a follower that did not keep up.
    pub dropped: Arc<AtomicU64>,
}

/// A batch of readings (its wire encoding) as a frame.
pub fn frame(batch: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(4 + batch.len());
    frame.extend_from_slice(&(batch.len() as u32).to_be_bytes());
    frame.extend_from_slice(batch);
    frame
}

/// The sending side: one writer task per follower, fed frames in order.
pub struct Outbound {
    control: Control,
    writers: HashMap<PeerId, mpsc::Sender<Arc<Vec<u8>>>>,
    /// Followers whose queue is full, so that it is said once, not per batch.
    overflowing: HashSet<PeerId>,
    counters: Counters,
}

impl Outbound {
    pub fn new(control: Control, counters: Counters) -> Self {
        Outbound {
            control,
            writers: HashMap::new(),
            overflowing: HashSet::new(),
            counters,
        }
    }

    /// Queues `frame` for `peer`; false when it had to be dropped.
    pub fn send(&mut self, peer: PeerId, frame: Arc<Vec<u8>>) -> bool {
        for _ in 0..2 {
            let control = &self.control;
            let writer = self.writers.entry(peer).or_insert_with(|| {
                let (sender, frames) = mpsc::channel(QUEUE);
                tokio::spawn(write(control.clone(), peer, frames));
                sender
            });
            match writer.try_send(frame.clone()) {
                Ok(()) => {
                    if self.overflowing.remove(&peer) {
                        tracing::info!(%peer, "a slow follower keeps up again");
                    }
                    return true;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if self.overflowing.insert(peer) {
                        tracing::warn!(%peer, "a follower does not keep up: its readings are dropped");
                    }
                    return false;
                }
                // The writer gave up (the stream broke): start another.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.writers.remove(&peer);
                }
            }
        }
        false
    }

    /// Stops writing to a peer that left or follows nothing any more (its
    /// writer ends, closing the stream, once the queued frames are out).
    pub fn forget(&mut self, peer: &PeerId) {
        self.writers.remove(peer);
        self.overflowing.remove(peer);
    }

    /// Sends `first` and the readings queued behind it to the peers that
    /// follow their things, a frame per thing.
    fn send_batch(
        &mut self,
        first: Arc<ThingReading>,
        queue: &mut Subscription,
        watchers: &Watchers,
        hub: &Hub,
    ) {
        let mut by_thing: HashMap<ThingId, Vec<ThingReading>> = HashMap::new();
        by_thing
            .entry(first.thing.clone())
            .or_default()
            .push((*first).clone());
        for _ in 0..READINGS_BATCH {
            match queue.try_recv() {
                Some(Event::Reading(reading)) => by_thing
                    .entry(reading.thing.clone())
                    .or_default()
                    .push((*reading).clone()),
                Some(Event::Lagged(missed)) => {
                    tracing::warn!(missed, "readings for other gateways were dropped");
                }
                None => break,
            }
        }
        for (thing, readings) in by_thing {
            // Only our own: another gateway's readings relayed here for a
            // local consumer are not ours to pass on.
            if hub.inspect_thing(&thing, |t| t.gateway == hub.gateway()) != Some(true) {
                continue;
            }
            let followers: Vec<PeerId> = match watchers.read().get(&thing) {
                Some(peers) => peers.iter().copied().collect(),
                None => continue,
            };
            let frame = Arc::new(frame(&wire::encode(&readings)));
            let count = readings.len() as u64;
            for peer in followers {
                let counter = if self.send(peer, frame.clone()) {
                    &self.counters.sent
                } else {
                    &self.counters.dropped
                };
                counter.fetch_add(count, Ordering::Relaxed);
            }
        }
    }
}

/// Sends the readings of our followed things to their followers until the
/// node goes (`forget` closes), closing the stream to each peer the node
/// names on `forget`.
pub async fn export(
    hub: Arc<Hub>,
    watchers: Watchers,
    mut outbound: Outbound,
    mut forget: mpsc::UnboundedReceiver<PeerId>,
) {
    let followed = || {
        let watchers = watchers.clone();
        Filter::matching(move |id| watchers.read().contains_key(id))
    };
    let mut readings = hub.subscribe("local cloud", followed());
    loop {
        tokio::select! {
            peer = forget.recv() => match peer {
                Some(peer) => outbound.forget(&peer),
                None => return,
            },
            event = readings.recv() => match event {
                Some(Event::Reading(first)) => outbound.send_batch(first, &mut readings, &watchers, &hub),
                Some(Event::Lagged(missed)) => {
                    tracing::warn!(missed, "readings for other gateways were dropped: the local cloud fell behind");
                }
                // The bus let go of a subscriber that took nothing for
                // too long: take up again.
                None => readings = hub.subscribe("local cloud", followed()),
            },
        }
    }
}

/// Writes frames to `peer` until the queue closes or the stream breaks.
async fn write(mut control: Control, peer: PeerId, mut frames: mpsc::Receiver<Arc<Vec<u8>>>) {
    let mut stream = match control.open_stream(peer, PROTOCOL).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(%peer, %error, "cannot open a readings stream");
            return;
        }
    };
    while let Some(frame) = frames.recv().await {
        let written = async {
            stream.write_all(&frame).await?;
            stream.flush().await
        };
        if let Err(error) = written.await {
            tracing::debug!(%peer, %error, "a readings stream broke");
            return;
        }
    }
}

/// Where the readings of other gateways' streams go.
#[derive(Clone)]
pub struct Inbound {
    pub hub: Arc<Hub>,
    pub speakers: Speakers,
    pub counters: Counters,
}

impl Inbound {
    /// Readings as `source`, the peer at the other end of the connection
    /// (proven by Noise), sent them. Only the owner speaks for its things.
    fn take(&self, source: PeerId, readings: Vec<ThingReading>) {
        let Some(owner) = self.speakers.read().get(&source).cloned() else {
            tracing::debug!(peer = %source, "dropped readings from a peer not yet known as a gateway");
            return;
        };
        // The owner as our catalog knows it: a thing whose device moved is
        // owned by a gateway other than the one its id names.
        let (genuine, forged): (Vec<_>, Vec<_>) = readings
            .into_iter()
            .partition(|r| self.hub.inspect_thing(&r.thing, |t| t.gateway == owner) == Some(true));
        if !forged.is_empty() {
            tracing::warn!(peer = %source, count = forged.len(), "dropped readings sent for another gateway's things");
        }
        self.counters
            .received
            .fetch_add(genuine.len() as u64, Ordering::Relaxed);
        self.hub.relay(genuine);
    }
}

/// Accepts followed gateways' streams for the life of the node and takes
/// each frame's readings.
pub fn accept(
    control: &mut Control,
    inbound: Inbound,
) -> Result<(), libp2p_stream::AlreadyRegistered> {
    let mut incoming = control.accept(PROTOCOL)?;
    tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            let span = tracing::debug_span!("readings stream", %peer);
            tokio::spawn(read(peer, stream, inbound.clone()).instrument(span));
        }
    });
    Ok(())
}

/// Reads frames off one stream until it ends, breaks or lies about a
/// length.
async fn read(peer: PeerId, mut stream: Stream, inbound: Inbound) {
    loop {
        let mut length = [0u8; 4];
        if stream.read_exact(&mut length).await.is_err() {
            return;
        }
        let length = u32::from_be_bytes(length) as usize;
        if length > MAX_FRAME {
            tracing::warn!(
                length,
                "a readings frame over the limit; the stream is dropped"
            );
            return;
        }
        let mut batch = vec![0u8; length];
        if stream.read_exact(&mut batch).await.is_err() {
            return;
        }
        match wire::decode_readings(&batch) {
            Ok(readings) => inbound.take(peer, readings),
            Err(error) => tracing::warn!(%error, "dropped undecodable readings"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogbank_taas::{HubOptions, Kind, Reading, Timestamp, Value};
    use proptest::prelude::*;

    fn reading(thing: &str, micros: u64) -> ThingReading {
        ThingReading {
            thing: ThingId::parse(thing).unwrap(),
            reading: Reading {
                time: Timestamp(micros),
                value: Value::Number(micros as f64),
            },
        }
    }

    #[tokio::test]
    async fn a_peer_speaks_only_for_its_own_gateways_things() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::open("gw-a", dir.path(), HubOptions::default()).unwrap();
        for (gateway, thing) in [("gw-b", "gw-b.x.d.level"), ("gw-c", "gw-c.x.d.level")] {
            let id = ThingId::parse(thing).unwrap();
            hub.replace_remote_catalog(
                gateway,
                vec![fogbank_taas::ThingService::new(
                    id,
                    Kind::Sensor,
                    "level",
                    None,
                )],
            );
        }
        let mut bus = hub.subscribe("test", Filter::all());
        let (b, stranger) = (PeerId::random(), PeerId::random());
        let inbound = Inbound {
            hub: hub.clone(),
            speakers: Speakers::default(),
            counters: Counters::default(),
        };
        inbound.speakers.write().insert(b, "gw-b".into());

        inbound.take(
            b,
            vec![reading("gw-b.x.d.level", 1), reading("gw-c.x.d.level", 2)],
        );
        inbound.take(stranger, vec![reading("gw-b.x.d.level", 3)]);
        assert_eq!(
            bus.recv().await,
            Some(Event::Reading(Arc::new(reading("gw-b.x.d.level", 1))))
        );
        assert!(
            bus.try_recv().is_none(),
            "nothing forged, nothing from a stranger"
        );
        assert_eq!(inbound.counters.received.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_frame_is_its_length_then_its_batch() {
        assert_eq!(frame(b"[]"), vec![0, 0, 0, 2, b'[', b']']);
        assert_eq!(frame(b"").len(), 4);
    }

    proptest! {
        #[test]
        fn frames_read_back(batches in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8)) {
            let wire: Vec<u8> = batches.iter().flat_map(|b| frame(b)).collect();
            let mut at = 0;
            let mut read = Vec::new();
            while at < wire.len() {
                let length = u32::from_be_bytes(wire[at..at + 4].try_into().unwrap()) as usize;
                read.push(wire[at + 4..at + 4 + length].to_vec());
                at += 4 + length;
            }
            prop_assert_eq!(read, batches);
        }
    }
}
