//! The swarm's transport and behaviours. Order matters on the wire: a
//! connection first proves the cluster key (pnet), then passes the key
//! check, and only then speaks Noise and Yamux; a gateway without the key
//! never reaches a behaviour.

use std::time::Duration;

use libp2p::core::Transport;
use libp2p::core::upgrade::Version;
use libp2p::gossipsub::{self, MessageAuthenticity, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::PnetConfig;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, connection_limits, identify, mdns, noise, ping, tcp, yamux,
};

use crate::key_check::KeyCheck;
use crate::wire::{self, Request, Response};
use crate::{CloudConfig, CloudError};

/// Largest gossip message (a delta of `DELTA_CHANGES` rich thing services).
pub(super) const MAX_GOSSIP: usize = 1 << 20;
/// The transport's own limit on a call: past every caller's deadline
/// (reads and commands time out first, in the handle), it only frees
/// what a caller gave up on.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(40);
const _: () = assert!(CALL_TIMEOUT.as_secs() > crate::ACTUATE_TIMEOUT.as_secs());
/// Largest snapshot answer: 64 MiB holds well over 100 000 thing services.
pub(super) const MAX_RESPONSE: u64 = 64 << 20;
/// Largest call: a chunk of history handed over after a move (2 000
/// readings) with room for long string values.
pub(super) const MAX_REQUEST: u64 = 16 << 20;
/// Incoming connections still in their handshake (pnet, the key check,
/// Noise, Yamux; each at most the upgrade's 10 s), at most. Before the
/// key check a connection is anyone's; past this bound more are refused
/// at once.
pub(super) const MAX_PENDING_INCOMING: u32 = 64;

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    /// Catalog deltas and beacons: signed, because they are relayed and
    /// liveness is judged on them.
    pub(super) gossipsub: gossipsub::Behaviour,
    /// Who follows which thing: a topic per thing, subscribed to while a
    /// gateway has consumers. Nothing is published on it; the readings go
    /// over [`streams`].
    pub(super) readings: gossipsub::Behaviour,
    pub(super) streams: libp2p_stream::Behaviour,
    pub(super) calls: request_response::json::Behaviour<Request, Response>,
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(super) limits: connection_limits::Behaviour,
}

pub(super) fn build_swarm(
    identity: Keypair,
    config: &CloudConfig,
) -> Result<Swarm<Behaviour>, CloudError> {
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
                    .set_response_size_maximum(MAX_RESPONSE)
                    .set_request_size_maximum(MAX_REQUEST);
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

/// libp2p listens with SO_REUSEPORT (so that dials could leave from the
/// listening port), which would let a second gateway on the same port
/// share its connections without a word. A plain bind first makes a taken
/// port the clear error it is everywhere else.
pub(super) fn port_is_free(address: &Multiaddr) -> Result<(), String> {
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
