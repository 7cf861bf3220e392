//! The swarm thread: one loop that owns the libp2p swarm and turns its
//! events, the hub's catalog changes and the orders of the rest of the
//! gateway into each other. The readings themselves travel beside it, in
//! [`super::streams`]' tasks on the same thread; the loop only keeps who
//! follows what.
//!
//! [`transport`] builds the swarm (pnet, the key check, Noise, Yamux and
//! the behaviours); [`dialing`] keeps dialing the peers it should know;
//! [`incoming`] handles what the swarm reports. This module holds the
//! loop, what it keeps between events, and what it sends out.

mod dialing;
mod incoming;
mod transport;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_util::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::identity::Keypair;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::members::Members;
use super::streams;
use super::wire::{self, CatalogMessage, Request, Response};
use super::{
    BEACON_PERIOD, CloudConfig, CloudError, CloudStats, Order, PeerInfo, Reachable, SILENCE,
};
use fogbank_taas::remote::{CatalogChange, RemoteError};
use fogbank_taas::{Hub, ThingId};

use dialing::{DialTarget, bare};
use transport::{Behaviour, build_swarm, port_is_free};

/// Changes per catalog delta: keeps every gossip message well under the
/// transmit limit however large a burst of announcements is.
const DELTA_CHANGES: usize = 256;

/// What has been reported, so that each is reported once, in bounded
/// memory: a port open to more than the LAN meets strangers without end,
/// so past a thousand it forgets them all and starts again.
struct ReportedOnce<T>(HashSet<T>);

impl<T> Default for ReportedOnce<T> {
    fn default() -> Self {
        ReportedOnce(HashSet::new())
    }
}

impl<T: std::hash::Hash + Eq> ReportedOnce<T> {
    const REMEMBERED: usize = 1024;

    /// Whether `item` is new, that is, to be reported.
    fn first(&mut self, item: T) -> bool {
        if self.0.len() >= Self::REMEMBERED && !self.0.contains(&item) {
            self.0.clear();
        }
        self.0.insert(item)
    }
}

/// Everything the loop keeps between events.
struct Node {
    hub: Arc<Hub>,
    gateway: String,
    swarm: Swarm<Behaviour>,
    members: Members,
    catalog_topic: IdentTopic,
    targets: Vec<DialTarget>,
    /// Addresses we dialed that a connection is open through.
    connected_via: HashSet<Multiaddr>,
    /// Hosts whose connections were refused (no cluster key), to warn once.
    refused: ReportedOnce<Multiaddr>,
    /// Every refused connection, for `/metrics`.
    connections_refused: u64,
    /// Peers caught using a gateway id that is not theirs, to say so once.
    impostors: ReportedOnce<PeerId>,
    listen_addresses: Vec<Multiaddr>,
    /// Calls awaiting an answer from a peer.
    pending: HashMap<OutboundRequestId, (String, oneshot::Sender<Result<Response, RemoteError>>)>,
    /// Snapshot requests in flight, by request.
    fetching: HashMap<OutboundRequestId, PeerId>,
    /// Local consumers per remote thing (we are subscribed to its topic).
    wanted: HashMap<ThingId, usize>,
    /// Our own things some peer subscribed to, and who; shared with the
    /// task that sends them their readings.
    watchers: streams::Watchers,
    /// Tells that task to close its stream to a peer that follows nothing.
    forget_follower: mpsc::UnboundedSender<PeerId>,
    answers: mpsc::UnboundedSender<(ResponseChannel<Response>, Response)>,
    orders: mpsc::UnboundedSender<Order>,
    /// Counted by the streams' tasks, which send and take the readings.
    readings: streams::Counters,
    /// Gateways that are up, shared with the hub's handle.
    reachable: Reachable,
    /// Gateways whose replicated records are being pulled now.
    pulling: HashSet<String>,
}

#[allow(clippy::too_many_arguments)] // the thread's whole world, handed over once
pub(super) async fn run(
    hub: Arc<Hub>,
    config: CloudConfig,
    identity: Keypair,
    reachable: Reachable,
    mut orders_rx: mpsc::UnboundedReceiver<Order>,
    orders: mpsc::UnboundedSender<Order>,
    mut stop: oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<(), CloudError>>,
) {
    let mut swarm = match build_swarm(identity, &config) {
        Ok(swarm) => swarm,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    if let Err(error) = port_is_free(&config.listen).and_then(|()| {
        swarm
            .listen_on(config.listen.clone())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }) {
        let _ = ready.send(Err(CloudError::Listen {
            address: config.listen.clone(),
            reason: error,
        }));
        return;
    }
    let catalog_topic = IdentTopic::new(wire::CATALOG_TOPIC);
    if let Err(error) = swarm.behaviour_mut().gossipsub.subscribe(&catalog_topic) {
        let _ = ready.send(Err(CloudError::Start(error.to_string())));
        return;
    }
    let (answers, mut answers_rx) = mpsc::unbounded_channel();
    let mut control = swarm.behaviour().streams.new_control();
    let members = Members::default();
    let counters = streams::Counters::default();
    let inbound = streams::Inbound {
        hub: hub.clone(),
        speakers: members.speakers(),
        counters: counters.clone(),
    };
    if let Err(error) = streams::accept(&mut control, inbound) {
        let _ = ready.send(Err(CloudError::Start(error.to_string())));
        return;
    }
    let watchers = streams::Watchers::default();
    let (forget_follower, forgotten) = mpsc::unbounded_channel();
    tokio::spawn(streams::export(
        hub.clone(),
        watchers.clone(),
        streams::Outbound::new(control, counters.clone()),
        forgotten,
    ));
    let mut node = Node {
        gateway: hub.gateway().to_owned(),
        hub: hub.clone(),
        swarm,
        members,
        catalog_topic,
        targets: config
            .peers
            .iter()
            .cloned()
            .map(DialTarget::configured)
            .collect(),
        connected_via: HashSet::new(),
        refused: ReportedOnce::default(),
        connections_refused: 0,
        impostors: ReportedOnce::default(),
        listen_addresses: Vec::new(),
        pending: HashMap::new(),
        fetching: HashMap::new(),
        wanted: HashMap::new(),
        watchers,
        forget_follower,
        answers,
        orders,
        readings: counters,
        reachable,
        pulling: HashSet::new(),
    };
    let _ = ready.send(Ok(()));

    let mut changes = hub.catalog_changes();
    let mut beacon = tokio::time::interval(BEACON_PERIOD);
    beacon.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    node.dial_targets();

    loop {
        tokio::select! {
            _ = &mut stop => break,
            event = node.swarm.select_next_some() => node.on_swarm(event),
            Some(order) = orders_rx.recv() => node.on_order(order),
            Some((channel, response)) = answers_rx.recv() => {
                if node.swarm.behaviour_mut().calls.send_response(channel, response).is_err() {
                    tracing::debug!("a caller left before its answer was ready");
                }
            }
            change = changes.recv() => match change {
                Ok(first) => node.publish_changes(first, &mut changes),
                // Peers notice the gap from our next beacon and fetch a snapshot.
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "catalog changes outran the local cloud; peers will resynchronise");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = beacon.tick() => node.tick(),
        }
    }
    tracing::info!("left the local cloud");
}

impl Node {
    // ------------------------------------------------------------ outgoing

    fn publish(&mut self, topic: IdentTopic, bytes: Vec<u8>) {
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) | Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
            Err(error) => tracing::warn!(%error, "cannot publish to the local cloud"),
        }
    }

    fn tick(&mut self) {
        let (incarnation, version) = self.hub.catalog_position();
        let beacon = CatalogMessage::Beacon {
            gateway: self.gateway.clone(),
            incarnation,
            version,
            things: self.hub.own_thing_count(),
            addresses: self
                .listen_addresses
                .iter()
                .map(|a| a.to_string())
                .collect(),
            records: self.hub.records().fingerprint(),
            readings_ingested: self.hub.stats().readings_ingested,
        };
        self.publish(self.catalog_topic.clone(), wire::encode(&beacon));
        for transition in self.members.expire(Instant::now(), SILENCE) {
            self.on_transition(transition);
        }
        self.dial_targets();
        self.dial_members();
    }

    /// Sends `first` and whatever changes queued up behind it as deltas.
    fn publish_changes(
        &mut self,
        first: (u64, CatalogChange),
        queue: &mut broadcast::Receiver<(u64, CatalogChange)>,
    ) {
        let mut queued = vec![first];
        // A lag inside the queue stops the batch: deltas never skip a version.
        while queued.len() < 16 * DELTA_CHANGES
            && let Ok(next) = queue.try_recv()
        {
            queued.push(next);
        }
        let (incarnation, _) = self.hub.catalog_position();
        for chunk in queued.chunks(DELTA_CHANGES) {
            let delta = CatalogMessage::Delta {
                gateway: self.gateway.clone(),
                incarnation,
                from: chunk[0].0 - 1,
                to: chunk[chunk.len() - 1].0,
                changes: chunk.iter().map(|(_, change)| change.clone()).collect(),
            };
            self.publish(self.catalog_topic.clone(), wire::encode(&delta));
        }
    }

    fn fetch_snapshot(&mut self, peer: PeerId) {
        if !self.swarm.is_connected(&peer) {
            // Heard through another member: connect first (at the addresses
            // its beacon gave); the next beacon asks again.
            self.members.snapshot_failed(&peer);
            self.dial_members();
            return;
        }
        let id = self
            .swarm
            .behaviour_mut()
            .calls
            .send_request(&peer, Request::Snapshot);
        self.fetching.insert(id, peer);
    }

    // ------------------------------------------------------------ orders

    fn on_order(&mut self, order: Order) {
        match order {
            Order::Call {
                gateway,
                request,
                reply,
            } => match self.members.peer_of(&gateway) {
                Some(peer) => {
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .calls
                        .send_request(&peer, request);
                    self.pending.insert(id, (gateway, reply));
                }
                None => {
                    let _ = reply.send(Err(RemoteError::Unreachable { gateway }));
                }
            },
            Order::Interest { thing, wanted } => self.interest(thing, wanted),
            Order::Peers(reply) => {
                let _ = reply.send(self.peers());
            }
            Order::Forget { gateway, reply } => {
                let outcome = self.members.forget(&gateway);
                if outcome.is_ok() {
                    tracing::info!(%gateway, "gateway forgotten");
                    self.hub.replace_remote_catalog(&gateway, Vec::new());
                }
                let _ = reply.send(outcome);
            }
            Order::Stats(reply) => {
                let up = self.members.all().filter(|m| m.up).count();
                let _ = reply.send(CloudStats {
                    gateways_up: up,
                    gateways_down: self.members.all().count() - up,
                    following: self.wanted.len(),
                    followed: self.watchers.read().len(),
                    readings_sent: self.readings.sent.load(Ordering::Relaxed),
                    readings_received: self.readings.received.load(Ordering::Relaxed),
                    readings_dropped: self.readings.dropped.load(Ordering::Relaxed),
                    connections_refused: self.connections_refused,
                });
            }
            Order::Pulled(gateway) => {
                self.pulling.remove(&gateway);
            }
            Order::Dial { origin, resolved } => {
                if let Some(entry) = self.targets.iter_mut().find(|t| t.address == origin) {
                    entry.resolved = resolved.iter().map(bare).collect();
                }
                for address in resolved {
                    let _ = self.dial(address);
                }
            }
        }
    }

    /// Pulls `gateway`'s replicated records unless a pull runs already.
    fn pull_records(&mut self, gateway: &str) {
        if !self.pulling.insert(gateway.to_owned()) {
            return;
        }
        let handle = super::Handle {
            orders: self.orders.clone(),
            reachable: self.reachable.clone(),
        };
        let orders = self.orders.clone();
        let hub = self.hub.clone();
        let gateway = gateway.to_owned();
        tokio::spawn(async move {
            if let Err(error) = super::records::pull(hub, handle, gateway.clone()).await {
                tracing::debug!(%gateway, %error, "records not pulled; again at a later beacon");
            }
            let _ = orders.send(Order::Pulled(gateway));
        });
    }

    fn interest(&mut self, thing: ThingId, wanted: bool) {
        let topic = IdentTopic::new(wire::readings_topic(&thing));
        let count = self.wanted.entry(thing.clone()).or_default();
        if wanted {
            *count += 1;
            if *count == 1
                && let Err(error) = self.swarm.behaviour_mut().readings.subscribe(&topic)
            {
                tracing::warn!(%thing, %error, "cannot follow a remote thing's readings");
            }
        } else {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.wanted.remove(&thing);
                self.swarm.behaviour_mut().readings.unsubscribe(&topic);
            }
        }
    }

    fn peers(&self) -> Vec<PeerInfo> {
        let now = Instant::now();
        let mut peers = vec![PeerInfo {
            gateway: self.gateway.clone(),
            peer_id: self.swarm.local_peer_id().to_string(),
            state: "local",
            addresses: self
                .listen_addresses
                .iter()
                .map(|a| a.to_string())
                .collect(),
            things: self.hub.own_thing_count(),
            readings_ingested: self.hub.stats().readings_ingested,
            last_seen_ms: 0,
        }];
        let mut others: Vec<PeerInfo> = self
            .members
            .all()
            .map(|m| PeerInfo {
                gateway: m.gateway.clone(),
                peer_id: m.peer.to_string(),
                state: if m.up { "up" } else { "down" },
                addresses: m.addresses.iter().map(|a| a.to_string()).collect(),
                things: m.things,
                readings_ingested: m.readings_ingested,
                last_seen_ms: now.duration_since(m.last_heard).as_millis() as u64,
            })
            .collect();
        others.sort_by(|a, b| a.gateway.cmp(&b.gateway));
        peers.extend(others);
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_is_reported_once_in_bounded_memory() {
        let mut reported = ReportedOnce::default();
        assert!(reported.first(1));
        assert!(!reported.first(1));
        for n in 2..=5000 {
            assert!(reported.first(n), "{n} is new");
            assert!(reported.0.len() <= ReportedOnce::<u32>::REMEMBERED);
        }
        assert!(!reported.first(5000), "the newest is still remembered");
    }
}
