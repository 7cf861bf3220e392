//! The swarm thread: one loop that owns the libp2p swarm and turns its
//! events, the hub's catalog changes and the orders of the rest of the
//! gateway into each other. The readings themselves travel beside it, in
//! [`super::streams`]' tasks on the same thread; the loop only keeps who
//! follows what.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use libp2p::core::upgrade::Version;
use libp2p::core::{ConnectedPoint, Transport};
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::PnetConfig;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, connection_limits, identify, mdns, noise, ping, tcp,
    yamux,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::key_check::KeyCheck;
use super::members::{Members, Transition, Verdict};
use super::streams;
use super::wire::{self, CatalogMessage, Request, Response};
use super::{
    BEACON_PERIOD, CloudConfig, CloudError, CloudStats, Order, PeerInfo, Reachable, SILENCE,
};
use fogbank_taas::remote::{CatalogChange, RemoteError};
use fogbank_taas::{Hub, ThingId};

/// Changes per catalog delta: keeps every gossip message well under the
/// transmit limit however large a burst of announcements is.
const DELTA_CHANGES: usize = 256;
/// Largest gossip message (a delta of `DELTA_CHANGES` rich thing services).
const MAX_GOSSIP: usize = 1 << 20;
/// The transport's own limit on a call: past every caller's deadline
/// (reads and commands time out first, in the handle), it only frees
/// what a caller gave up on.
const CALL_TIMEOUT: Duration = Duration::from_secs(40);
const _: () = assert!(CALL_TIMEOUT.as_secs() > super::ACTUATE_TIMEOUT.as_secs());
/// Largest snapshot answer: 64 MiB holds well over 100 000 thing services.
const MAX_RESPONSE: u64 = 64 << 20;
/// Incoming connections still in their handshake (pnet, the key check,
/// Noise, Yamux; each at most the upgrade's 10 s), at most. Before the
/// key check a connection is anyone's; past this bound more are refused
/// at once.
pub const MAX_PENDING_INCOMING: u32 = 64;

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// Catalog deltas and beacons: signed, because they are relayed and
    /// liveness is judged on them.
    gossipsub: gossipsub::Behaviour,
    /// Who follows which thing: a topic per thing, subscribed to while a
    /// gateway has consumers. Nothing is published on it; the readings go
    /// over [`streams`].
    readings: gossipsub::Behaviour,
    streams: libp2p_stream::Behaviour,
    calls: request_response::json::Behaviour<Request, Response>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    limits: connection_limits::Behaviour,
}

fn build_swarm(identity: Keypair, config: &CloudConfig) -> Result<Swarm<Behaviour>, CloudError> {
    let start = |e: &dyn std::fmt::Display| CloudError::Start(e.to_string());
    let psk = config.cluster_key;
    let mdns_on = config.mdns;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let noise = noise::Config::new(key)?;
                Ok(tcp::tokio::Transport::new(tcp::Config::new().nodelay(true))
                    .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                    .map(|socket, _| KeyCheck::new(socket))
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex(yamux::Config::default())
                    .timeout(Duration::from_secs(10)))
            },
        )
        .map_err(|e| start(&e))?
        .with_behaviour(
            |key| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let gossip = gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_millis(500))
                    // Meshes form at the first heartbeat: members that know each
                    // other only through a third must hear each other's beacons
                    // (and so dial each other) within a second, not after 5 s.
                    .heartbeat_initial_delay(Duration::from_millis(100))
                    .validation_mode(ValidationMode::Strict)
                    .max_transmit_size(MAX_GOSSIP)
                    .build()?;
                // Subscriptions only: it never publishes, so it signs
                // nothing, and a message on it is refused, never passed on.
                let readings = gossipsub::ConfigBuilder::default()
                    .protocol_id_prefix(wire::READINGS_PROTOCOL)
                    .heartbeat_interval(Duration::from_millis(500))
                    .heartbeat_initial_delay(Duration::from_millis(100))
                    .validation_mode(ValidationMode::None)
                    .validate_messages()
                    .build()?;
                let codec = request_response::json::codec::Codec::default()
                    .set_response_size_maximum(MAX_RESPONSE);
                let peer = key.public().to_peer_id();
                Ok(Behaviour {
                    gossipsub: gossipsub::Behaviour::new(
                        MessageAuthenticity::Signed(key.clone()),
                        gossip,
                    )?,
                    readings: gossipsub::Behaviour::new(
                        MessageAuthenticity::Author(peer),
                        readings,
                    )?,
                    streams: libp2p_stream::Behaviour::new(),
                    calls: request_response::Behaviour::with_codec(
                        codec,
                        [(
                            StreamProtocol::new(wire::CALL_PROTOCOL),
                            ProtocolSupport::Full,
                        )],
                        request_response::Config::default().with_request_timeout(CALL_TIMEOUT),
                    ),
                    identify: identify::Behaviour::new(
                        identify::Config::new(wire::IDENTIFY_PROTOCOL.into(), key.public())
                            .with_agent_version(format!("fogbank/{}", env!("CARGO_PKG_VERSION"))),
                    ),
                    ping: ping::Behaviour::new(
                        ping::Config::new().with_interval(Duration::from_secs(5)),
                    ),
                    mdns: Toggle::from(if mdns_on {
                        Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer)?)
                    } else {
                        None
                    }),
                    limits: connection_limits::Behaviour::new(
                        connection_limits::ConnectionLimits::default()
                            .with_max_pending_incoming(Some(MAX_PENDING_INCOMING)),
                    ),
                })
            },
        )
        .map_err(|e| start(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

/// Whether an address names a host to resolve rather than an IP.
fn needs_resolving(address: &Multiaddr) -> bool {
    address
        .iter()
        .any(|p| matches!(p, Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_)))
}

/// Resolves the `/dns*` part of an address with the system resolver (so
/// `/etc/hosts` and mDNS host names work as everywhere else on the host).
async fn resolve(address: Multiaddr) -> Vec<Multiaddr> {
    let mut host = None;
    let mut port = 0u16;
    for protocol in address.iter() {
        match protocol {
            Protocol::Dns(ref h) | Protocol::Dns4(ref h) | Protocol::Dns6(ref h) => {
                host = Some((h.to_string(), protocol.tag()))
            }
            Protocol::Tcp(p) => port = p,
            _ => {}
        }
    }
    let Some((host, tag)) = host else {
        return vec![address];
    };
    let found = match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(%address, %error, "cannot resolve a bootstrap peer");
            return Vec::new();
        }
    };
    found
        .filter(|ip| match tag {
            "dns4" => ip.is_ipv4(),
            "dns6" => ip.is_ipv6(),
            _ => true,
        })
        .map(|socket| {
            address
                .iter()
                .map(|p| match p {
                    Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) => match socket.ip() {
                        std::net::IpAddr::V4(ip) => Protocol::Ip4(ip),
                        std::net::IpAddr::V6(ip) => Protocol::Ip6(ip),
                    },
                    other => other,
                })
                .collect()
        })
        .collect()
}

/// libp2p listens with SO_REUSEPORT (so that dials could leave from the
/// listening port), which would let a second gateway on the same port
/// share its connections without a word. A plain bind first makes a taken
/// port the clear error it is everywhere else.
fn port_is_free(address: &Multiaddr) -> Result<(), String> {
    let mut ip = None;
    let mut port = 0;
    for protocol in address.iter() {
        match protocol {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) => port = p,
            _ => {}
        }
    }
    match ip {
        Some(ip) if port != 0 => std::net::TcpListener::bind((ip, port))
            .map(drop)
            .map_err(|e| e.to_string()),
        _ => Ok(()),
    }
}

fn peer_of_address(address: &Multiaddr) -> Option<PeerId> {
    address.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// An address to keep dialing until a connection through it is open, with
/// a growing pause between failed attempts: a configured peer, or one mDNS
/// found. mDNS announces a peer once and then only every few minutes, so a
/// first dial that fails (the peer still starting, a busy host) must not
/// leave the two gateways strangers until then.
struct DialTarget {
    address: Multiaddr,
    /// What a `/dns*` address resolved to at the last attempt.
    resolved: Vec<Multiaddr>,
    /// Found by mDNS, and so dropped when mDNS says the peer has gone.
    discovered: bool,
    next_attempt: Instant,
    pause: Duration,
}

impl DialTarget {
    fn configured(address: Multiaddr) -> Self {
        DialTarget {
            resolved: vec![bare(&address)],
            address,
            discovered: false,
            next_attempt: Instant::now(),
            pause: BEACON_PERIOD,
        }
    }

    fn discovered(address: Multiaddr) -> Self {
        DialTarget {
            discovered: true,
            ..Self::configured(address)
        }
    }

    /// A peer mDNS found may be a gateway of another cloud on the same LAN,
    /// which refuses every attempt: it is tried less often than a peer the
    /// operator named.
    fn longest_pause(&self) -> Duration {
        Duration::from_secs(if self.discovered { 60 } else { 8 })
    }

    fn is_connected(&self, connected_via: &HashSet<Multiaddr>) -> bool {
        self.resolved.iter().any(|a| connected_via.contains(a))
    }

    fn due(&self, now: Instant) -> bool {
        now >= self.next_attempt
    }

    /// A dial left: the next one waits longer.
    fn attempted(&mut self, now: Instant) {
        self.next_attempt = now + self.pause;
        self.pause = (self.pause * 2).min(self.longest_pause());
    }

    fn connected(&mut self) {
        self.pause = BEACON_PERIOD;
    }
}

/// How a known peer is dialed: unless connected or being dialed already,
/// and from a fresh port.
///
/// libp2p would dial from the listening port. Two gateways that find each
/// other at the same moment (both hear the same mDNS exchange) then dial
/// the same pair of ports from both ends, and TCP makes the two attempts
/// one connection with two dialers, whose handshake fails on both sides.
fn dial_peer(peer: PeerId, addresses: Vec<Multiaddr>) -> DialOpts {
    DialOpts::peer_id(peer)
        .addresses(addresses)
        .condition(PeerCondition::DisconnectedAndNotDialing)
        .allocate_new_port()
        .build()
}

/// An address with its peer's `/p2p/` part, as mDNS targets are kept (an
/// address that already names another peer stays as it is).
fn with_peer(address: Multiaddr, peer: PeerId) -> Multiaddr {
    address.with_p2p(peer).unwrap_or_else(|a| a)
}

/// An address without its `/p2p/` part, as connections report it.
fn bare(address: &Multiaddr) -> Multiaddr {
    address
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

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

    fn dial_targets(&mut self) {
        let now = Instant::now();
        for index in 0..self.targets.len() {
            let target = &self.targets[index];
            if target.is_connected(&self.connected_via)
                || peer_of_address(&target.address).is_some_and(|p| self.swarm.is_connected(&p))
                || !target.due(now)
            {
                continue;
            }
            let address = target.address.clone();
            let attempted = if needs_resolving(&address) {
                let orders = self.orders.clone();
                tokio::spawn(async move {
                    let resolved = resolve(address.clone()).await;
                    let _ = orders.send(Order::Dial {
                        origin: address,
                        resolved,
                    });
                });
                true
            } else {
                self.dial(address)
            };
            if attempted {
                self.targets[index].attempted(now);
            }
        }
    }

    /// Dials `address`; false if a dial to its peer is still under way (a
    /// host that accepts and then stalls holds it for the whole handshake
    /// timeout), which is no new attempt.
    fn dial(&mut self, address: Multiaddr) -> bool {
        let opts = match peer_of_address(&address) {
            Some(peer) => dial_peer(peer, vec![address.clone()]),
            None => DialOpts::unknown_peer_id()
                .address(address.clone())
                .allocate_new_port()
                .build(),
        };
        match self.swarm.dial(opts) {
            Ok(()) => true,
            Err(DialError::DialPeerConditionFalse(_)) => false,
            Err(error) => {
                tracing::debug!(%address, %error, "cannot dial");
                true
            }
        }
    }

    /// Members we know of but have no connection to (heard through others,
    /// or down) are dialed at the addresses they announced.
    fn dial_members(&mut self) {
        let unconnected: Vec<(PeerId, Vec<Multiaddr>)> = self
            .members
            .all()
            .filter(|m| !m.addresses.is_empty() && !self.swarm.is_connected(&m.peer))
            .map(|m| (m.peer, m.addresses.clone()))
            .collect();
        for (peer, addresses) in unconnected {
            let _ = self.swarm.dial(dial_peer(peer, addresses));
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
                last_seen_ms: now.duration_since(m.last_heard).as_millis() as u64,
            })
            .collect();
        others.sort_by(|a, b| a.gateway.cmp(&b.gateway));
        peers.extend(others);
        peers
    }

    // ------------------------------------------------------------ incoming

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossip(event),
            SwarmEvent::Behaviour(BehaviourEvent::Readings(event)) => {
                self.on_readings_gossip(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Calls(event)) => self.on_call(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocol_version != wire::IDENTIFY_PROTOCOL => {
                tracing::warn!(peer = %peer_id, version = %info.protocol_version, "a peer speaks another local-cloud protocol");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, address) in found {
                    let address = with_peer(address, peer);
                    if !self.targets.iter().any(|t| t.address == address) {
                        self.targets.push(DialTarget::discovered(address));
                    }
                }
                self.dial_targets();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                for (peer, address) in gone {
                    let address = with_peer(address, peer);
                    self.targets
                        .retain(|t| !(t.discovered && t.address == address));
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "local cloud listening");
                self.listen_addresses.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addresses.retain(|a| *a != address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                tracing::debug!(peer = %peer_id, "connected");
                if let Verdict::Fetch(peer) = self.members.connected(&peer_id) {
                    self.fetch_snapshot(peer);
                }
                if let ConnectedPoint::Dialer { address, .. } = endpoint {
                    let address = bare(&address);
                    for entry in &mut self.targets {
                        if entry.resolved.iter().any(|a| bare(a) == address) {
                            entry.connected();
                        }
                    }
                    self.connected_via.insert(address);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                endpoint,
                num_established,
                cause,
                ..
            } => {
                if let ConnectedPoint::Dialer { address, .. } = endpoint {
                    self.connected_via.remove(&bare(&address));
                }
                if num_established == 0 {
                    tracing::info!(peer = %peer_id, ?cause, "disconnected");
                    for transition in self.members.disconnected(&peer_id) {
                        self.on_transition(transition);
                    }
                    // Its stream goes with the last thing it followed.
                    self.forget_watcher(&peer_id);
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                // Most often a gateway without the cluster key, which keeps
                // trying: say so once per host, count every one.
                self.connections_refused += 1;
                let host: Multiaddr = send_back_addr
                    .iter()
                    .filter(|p| matches!(p, Protocol::Ip4(_) | Protocol::Ip6(_)))
                    .collect();
                if self.refused.first(host) {
                    tracing::warn!(peer = %send_back_addr, %error, "refused a connection (a gateway without the cluster key?); further refusals from this host are logged at debug");
                } else {
                    tracing::debug!(peer = %send_back_addr, %error, "refused a connection");
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        if let gossipsub::Event::Message { message, .. } = event
            && let Some(source) = message.source
            && message.topic == self.catalog_topic.hash()
        {
            match wire::decode_catalog(&message.data) {
                Ok(catalog) => self.on_catalog(source, catalog),
                Err(error) => {
                    tracing::warn!(peer = %source, %error, "dropped a catalog message")
                }
            }
        }
    }

    fn on_readings_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                ..
            } => {
                self.swarm
                    .behaviour_mut()
                    .readings
                    .report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        gossipsub::MessageAcceptance::Reject,
                    );
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                if let Some(thing) = wire::thing_of_topic(topic.as_str())
                    && thing.gateway() == self.gateway
                {
                    self.watchers
                        .write()
                        .entry(thing)
                        .or_default()
                        .insert(peer_id);
                }
            }
            gossipsub::Event::Unsubscribed { peer_id, topic } => {
                if let Some(thing) = wire::thing_of_topic(topic.as_str()) {
                    self.unwatch(&thing, &peer_id);
                }
            }
            _ => {}
        }
    }

    fn unwatch(&mut self, thing: &ThingId, peer: &PeerId) {
        let mut watchers = self.watchers.write();
        if let Some(peers) = watchers.get_mut(thing) {
            peers.remove(peer);
            if peers.is_empty() {
                watchers.remove(thing);
            }
        }
        // A gateway that follows nothing of ours any more needs no stream.
        if !watchers.values().any(|peers| peers.contains(peer)) {
            let _ = self.forget_follower.send(*peer);
        }
    }

    fn forget_watcher(&mut self, peer: &PeerId) {
        let things: Vec<ThingId> = self
            .watchers
            .read()
            .iter()
            .filter(|(_, peers)| peers.contains(peer))
            .map(|(thing, _)| thing.clone())
            .collect();
        for thing in things {
            self.unwatch(&thing, peer);
        }
    }

    fn on_catalog(&mut self, source: PeerId, message: CatalogMessage) {
        let now = Instant::now();
        let gateway = message.gateway().to_owned();
        if gateway == self.gateway {
            if source != *self.swarm.local_peer_id() && self.impostors.first(source) {
                tracing::error!(peer = %source, %gateway, "another gateway uses this gateway's id; its messages are ignored");
            }
            return;
        }
        let (verdict, transition, changes) = match message {
            CatalogMessage::Beacon {
                incarnation,
                version,
                things,
                addresses,
                ..
            } => {
                let (verdict, transition) =
                    self.members
                        .on_beacon(&gateway, source, incarnation, version, things, now);
                if verdict != Verdict::Impostor {
                    let parsed = addresses.iter().filter_map(|a| a.parse().ok()).collect();
                    self.members.set_addresses(&source, parsed);
                }
                (verdict, transition, Vec::new())
            }
            CatalogMessage::Delta {
                incarnation,
                from,
                to,
                changes,
                ..
            } => {
                let (verdict, transition) =
                    self.members
                        .on_delta(&gateway, source, incarnation, from, to, now);
                (verdict, transition, changes)
            }
        };
        if let Some(transition) = transition {
            self.on_transition(transition);
        }
        match verdict {
            Verdict::Apply => self.hub.apply_remote_changes(&gateway, changes),
            Verdict::Fetch(peer) => self.fetch_snapshot(peer),
            Verdict::Impostor if self.impostors.first(source) => {
                tracing::error!(peer = %source, %gateway, "two peers claim the same gateway id; the newcomer is ignored");
            }
            Verdict::Impostor => {}
            Verdict::Nothing => {}
        }
    }

    fn on_transition(&mut self, transition: Transition) {
        match transition {
            Transition::Up(gateway) => {
                tracing::info!(%gateway, "gateway up");
                self.reachable.write().insert(gateway);
            }
            Transition::Down(gateway) => {
                tracing::warn!(%gateway, "gateway down: its thing services are unavailable");
                self.reachable.write().remove(&gateway);
                self.hub.mark_gateway_down(&gateway);
            }
        }
    }

    fn on_call(&mut self, event: request_response::Event<Request, Response>) {
        use request_response::{Event as E, Message};
        match event {
            E::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.serve(peer, request, channel),
            E::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(fetched_from) = self.fetching.remove(&request_id) {
                    self.on_snapshot(fetched_from, response);
                } else if let Some((_, reply)) = self.pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                } else {
                    tracing::debug!(%peer, "an answer nobody waits for");
                }
            }
            E::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if self.fetching.remove(&request_id).is_some() {
                    tracing::warn!(%peer, %error, "snapshot fetch failed; retrying at the next beacon");
                    self.members.snapshot_failed(&peer);
                } else if let Some((gateway, reply)) = self.pending.remove(&request_id) {
                    let error = match error {
                        request_response::OutboundFailure::Timeout => RemoteError::Timeout {
                            gateway,
                            seconds: CALL_TIMEOUT.as_secs(),
                        },
                        _ => RemoteError::Unreachable { gateway },
                    };
                    let _ = reply.send(Err(error));
                }
            }
            E::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "an incoming call failed");
            }
            E::ResponseSent { .. } => {}
        }
    }

    fn on_snapshot(&mut self, peer: PeerId, response: Response) {
        let Response::Snapshot { gateway, snapshot } = response else {
            self.members.snapshot_failed(&peer);
            return;
        };
        if gateway == self.gateway {
            return;
        }
        let transition = self.members.on_snapshot(
            &gateway,
            peer,
            snapshot.incarnation,
            snapshot.version,
            snapshot.things.len(),
            Instant::now(),
        );
        if let Some(transition) = transition {
            self.on_transition(transition);
        }
        if self.members.peer_of(&gateway) == Some(peer) {
            tracing::debug!(%gateway, things = snapshot.things.len(), version = snapshot.version, "catalog snapshot");
            self.hub.replace_remote_catalog(&gateway, snapshot.things);
        }
    }

    /// Answers a call from a peer. Quick answers go out at once; history
    /// and commands run as tasks and come back through `answers`.
    fn serve(&mut self, peer: PeerId, request: Request, channel: ResponseChannel<Response>) {
        let local = |thing: &ThingId| -> Result<(), Response> {
            if thing.gateway() == self.gateway && self.hub.thing(thing).is_some() {
                Ok(())
            } else {
                Err(Response::Refused(format!(
                    "{thing} is not a thing service of gateway {}",
                    self.gateway
                )))
            }
        };
        let now = match request {
            Request::Snapshot => Some(Response::Snapshot {
                gateway: self.gateway.clone(),
                snapshot: self.hub.catalog_snapshot(),
            }),
            Request::Latest(thing) => Some(match local(&thing) {
                Ok(()) => Response::Latest(self.hub.latest(&thing).flatten()),
                Err(refused) => refused,
            }),
            Request::History { thing, window } => match local(&thing) {
                Err(refused) => Some(refused),
                Ok(()) => {
                    let hub = self.hub.clone();
                    let answers = self.answers.clone();
                    tokio::spawn(async move {
                        let response = match hub.read_history(&thing, window).await {
                            Ok(readings) => Response::History(readings),
                            Err(error) => Response::Refused(error.to_string()),
                        };
                        let _ = answers.send((channel, response));
                    });
                    return;
                }
            },
            Request::Actuate { thing, value } => match local(&thing) {
                Err(refused) => Some(refused),
                Ok(()) => {
                    tracing::info!(%peer, %thing, "command from the local cloud");
                    let response = match self.hub.actuate(&thing, value) {
                        Err(refused) => Response::Refused(refused.to_string()),
                        Ok(ticket) => {
                            let answers = self.answers.clone();
                            tokio::spawn(async move {
                                let state = ticket.outcome.await.unwrap_or_else(|_| {
                                    fogbank_taas::CommandState::Failed {
                                        reason: "the command was dropped".into(),
                                    }
                                });
                                let _ = answers.send((channel, Response::Actuated(state)));
                            });
                            return;
                        }
                    };
                    Some(response)
                }
            },
        };
        if let Some(response) = now
            && self
                .swarm
                .behaviour_mut()
                .calls
                .send_response(channel, response)
                .is_err()
        {
            tracing::debug!(%peer, "a caller left before its answer");
        }
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
