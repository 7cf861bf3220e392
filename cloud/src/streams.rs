//! Readings to followers over a direct stream per pair of gateways.
//!
//! The owner of a followed thing writes each batch of its readings straight
//! onto a long-lived libp2p stream ([`PROTOCOL`]) to every gateway that
//! follows it, in frames of a 4-byte big-endian length and the batch (one
//! thing service's readings, [`wire::batch`]). A gateway that knows only
//! the stream's first version ([`PROTOCOL_V1`], JSON lists of readings) is
//! written to in that, so a cloud upgraded one gateway at a time keeps
//! delivering. Who
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use futures_util::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, OpenStreamError};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::members::Speakers;
use super::wire;
use fogbank_taas::reading::ThingReading;
use fogbank_taas::{Event, Filter, Hub, Subscription, ThingId};

/// The readings stream, in binary batches.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/fogbank/readings/2");
/// Its first version, in JSON lists of readings: still read, and written
/// to a gateway that speaks no other.
pub const PROTOCOL_V1: StreamProtocol = StreamProtocol::new("/fogbank/readings/1");

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

/// One thing service's readings on their way to its followers, framed at
/// most once for each version of the stream they speak.
pub struct Batch {
    thing: ThingId,
    readings: Vec<ThingReading>,
    binary: OnceLock<Vec<u8>>,
    json: OnceLock<Vec<u8>>,
}

impl Batch {
    pub fn new(thing: ThingId, readings: Vec<ThingReading>) -> Self {
        Batch {
            thing,
            readings,
            binary: OnceLock::new(),
            json: OnceLock::new(),
        }
    }

    /// The frame of this batch in `version` of the stream.
    fn frame(&self, version: &StreamProtocol) -> &[u8] {
        if *version == PROTOCOL_V1 {
            self.json
                .get_or_init(|| frame(&wire::encode(&self.readings)))
        } else {
            self.binary.get_or_init(|| {
                frame(&wire::batch::encode(
                    &self.thing,
                    self.readings.iter().map(|r| &r.reading),
                ))
            })
        }
    }
}

/// The sending side: one writer task per follower, fed batches in order.
pub struct Outbound {
    control: Control,
    writers: HashMap<PeerId, mpsc::Sender<Arc<Batch>>>,
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

    /// Queues `batch` for `peer`; false when it had to be dropped.
    pub fn send(&mut self, peer: PeerId, batch: Arc<Batch>) -> bool {
        for _ in 0..2 {
            let control = &self.control;
            let writer = self.writers.entry(peer).or_insert_with(|| {
                let (sender, batches) = mpsc::channel(QUEUE);
                tokio::spawn(write(control.clone(), peer, batches));
                sender
            });
            match writer.try_send(batch.clone()) {
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
            let count = readings.len() as u64;
            let batch = Arc::new(Batch::new(thing, readings));
            for peer in followers {
                let counter = if self.send(peer, batch.clone()) {
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

/// Writes batches to `peer` until the queue closes or the stream breaks.
async fn write(mut control: Control, peer: PeerId, mut batches: mpsc::Receiver<Arc<Batch>>) {
    let (mut stream, version) = match open(&mut control, peer).await {
        Ok(opened) => opened,
        Err(error) => {
            tracing::debug!(%peer, %error, "cannot open a readings stream");
            return;
        }
    };
    while let Some(batch) = batches.recv().await {
        let written = async {
            stream.write_all(batch.frame(&version)).await?;
            stream.flush().await
        };
        if let Err(error) = written.await {
            tracing::debug!(%peer, %error, "a readings stream broke");
            return;
        }
    }
}

/// A readings stream to `peer` in the newest version it speaks.
async fn open(
    control: &mut Control,
    peer: PeerId,
) -> Result<(Stream, StreamProtocol), OpenStreamError> {
    match control.open_stream(peer, PROTOCOL).await {
        Err(OpenStreamError::UnsupportedProtocol(_)) => {
            tracing::info!(%peer, "a gateway of an older version: its readings stream is JSON");
            let stream = control.open_stream(peer, PROTOCOL_V1).await?;
            Ok((stream, PROTOCOL_V1))
        }
        opened => Ok((opened?, PROTOCOL)),
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

/// How a version of the stream gives a frame's readings.
type Decode = fn(&[u8]) -> Result<Vec<ThingReading>, wire::WireError>;

/// The versions of the stream a gateway reads, and how.
const VERSIONS: [(StreamProtocol, Decode); 2] = [
    (PROTOCOL, |bytes| Ok(wire::batch::decode(bytes)?)),
    (PROTOCOL_V1, wire::decode_readings),
];

/// Accepts followed gateways' streams, in either version, for the life of
/// the node and takes each frame's readings.
pub fn accept(
    control: &mut Control,
    inbound: Inbound,
) -> Result<(), libp2p_stream::AlreadyRegistered> {
    for (protocol, decode) in VERSIONS {
        let mut incoming = control.accept(protocol)?;
        let inbound = inbound.clone();
        tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                let span = tracing::debug_span!("readings stream", %peer);
                tokio::spawn(read(peer, stream, inbound.clone(), decode).instrument(span));
            }
        });
    }
    Ok(())
}

/// Reads frames off one stream until it ends, breaks or lies about a
/// length.
async fn read(peer: PeerId, mut stream: Stream, inbound: Inbound, decode: Decode) {
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
        match decode(&batch) {
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

    /// A swarm that speaks only the readings streams, driven on a task of
    /// its own: its control, id and address, where to send addresses it
    /// should dial, and the peers it gets connected to.
    async fn streams_peer() -> (
        Control,
        PeerId,
        libp2p::Multiaddr,
        mpsc::UnboundedSender<libp2p::Multiaddr>,
        mpsc::UnboundedReceiver<PeerId>,
    ) {
        use libp2p::swarm::SwarmEvent;
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .build();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let address = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let (control, id) = (swarm.behaviour().new_control(), *swarm.local_peer_id());
        let (dial, mut dials) = mpsc::unbounded_channel();
        let (connected_tx, connected) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => {
                        if let SwarmEvent::ConnectionEstablished { peer_id, .. } = event {
                            let _ = connected_tx.send(peer_id);
                        }
                    }
                    Some(address) = dials.recv() => swarm.dial(address).unwrap(),
                }
            }
        });
        (control, id, address, dial, connected)
    }

    async fn within<F: std::future::Future>(future: F) -> F::Output {
        tokio::time::timeout(std::time::Duration::from_secs(10), future)
            .await
            .expect("done within 10 s")
    }

    /// A gateway writes the newest version of the stream its follower
    /// speaks: binary batches to one of this version, JSON lists to one
    /// that knows only the first (a cloud upgraded a gateway at a time).
    #[tokio::test]
    async fn a_follower_is_written_to_in_the_newest_version_it_speaks() {
        for (spoken, decode) in VERSIONS {
            let (a, _, _, dial, mut connected) = streams_peer().await;
            let (mut b, b_id, b_address, _, _) = streams_peer().await;
            let mut incoming = b.accept(spoken.clone()).unwrap();
            dial.send(b_address).unwrap();
            assert_eq!(within(connected.recv()).await, Some(b_id));

            let (batches, queue) = mpsc::channel(4);
            tokio::spawn(write(a, b_id, queue));
            let readings = vec![reading("gw-a.x.d.level", 1), reading("gw-a.x.d.level", 2)];
            let thing = readings[0].thing.clone();
            batches
                .send(Arc::new(Batch::new(thing, readings.clone())))
                .await
                .unwrap();
            let (_, mut stream) = within(incoming.next()).await.unwrap();
            let mut length = [0u8; 4];
            stream.read_exact(&mut length).await.unwrap();
            let mut bytes = vec![0u8; u32::from_be_bytes(length) as usize];
            stream.read_exact(&mut bytes).await.unwrap();
            assert_eq!(decode(&bytes).unwrap(), readings, "in {spoken}");
        }
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
