//! Whom to dial and how: configured peers and peers mDNS found, kept
//! dialing with a growing pause until connected, `/dns*` addresses
//! resolved by the system resolver at each attempt.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::DialError;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};

use crate::{BEACON_PERIOD, Order};

use super::Node;

/// Whether an address names a host to resolve rather than an IP.
pub(super) fn needs_resolving(address: &Multiaddr) -> bool {
    address
        .iter()
        .any(|p| matches!(p, Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_)))
}

/// Resolves the `/dns*` part of an address with the system resolver (so
/// `/etc/hosts` and mDNS host names work as everywhere else on the host).
pub(super) async fn resolve(address: Multiaddr) -> Vec<Multiaddr> {
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

pub(super) fn peer_of_address(address: &Multiaddr) -> Option<PeerId> {
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
pub(super) struct DialTarget {
    pub(super) address: Multiaddr,
    /// What a `/dns*` address resolved to at the last attempt.
    pub(super) resolved: Vec<Multiaddr>,
    /// Found by mDNS, and so dropped when mDNS says the peer has gone.
    pub(super) discovered: bool,
    pub(super) next_attempt: Instant,
    pub(super) pause: Duration,
}

impl DialTarget {
    pub(super) fn configured(address: Multiaddr) -> Self {
        DialTarget {
            resolved: vec![bare(&address)],
            address,
            discovered: false,
            next_attempt: Instant::now(),
            pause: BEACON_PERIOD,
        }
    }

    pub(super) fn discovered(address: Multiaddr) -> Self {
        DialTarget {
            discovered: true,
            ..Self::configured(address)
        }
    }

    /// A peer mDNS found may be a gateway of another cloud on the same LAN,
    /// which refuses every attempt: it is tried less often than a peer the
    /// operator named.
    pub(super) fn longest_pause(&self) -> Duration {
        Duration::from_secs(if self.discovered { 60 } else { 8 })
    }

    pub(super) fn is_connected(&self, connected_via: &HashSet<Multiaddr>) -> bool {
        self.resolved.iter().any(|a| connected_via.contains(a))
    }

    pub(super) fn due(&self, now: Instant) -> bool {
        now >= self.next_attempt
    }

    /// A dial left: the next one waits longer.
    pub(super) fn attempted(&mut self, now: Instant) {
        self.next_attempt = now + self.pause;
        self.pause = (self.pause * 2).min(self.longest_pause());
    }

    pub(super) fn connected(&mut self) {
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
pub(super) fn dial_peer(peer: PeerId, addresses: Vec<Multiaddr>) -> DialOpts {
    DialOpts::peer_id(peer)
        .addresses(addresses)
        .condition(PeerCondition::DisconnectedAndNotDialing)
        .allocate_new_port()
        .build()
}

/// An address with its peer's `/p2p/` part, as mDNS targets are kept (an
/// address that already names another peer stays as it is).
pub(super) fn with_peer(address: Multiaddr, peer: PeerId) -> Multiaddr {
    address.with_p2p(peer).unwrap_or_else(|a| a)
}

/// An address without its `/p2p/` part, as connections report it.
pub(super) fn bare(address: &Multiaddr) -> Multiaddr {
    address
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

impl Node {
    pub(super) fn dial_targets(&mut self) {
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
    pub(super) fn dial(&mut self, address: Multiaddr) -> bool {
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
    pub(super) fn dial_members(&mut self) {
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
}
