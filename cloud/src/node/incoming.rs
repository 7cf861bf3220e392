//! What the swarm reports: connections opened and refused, gossip
//! (catalog deltas, beacons, who follows what), calls from peers and
//! answers to ours. Each event updates the members and the catalog and
//! never blocks the loop: serving a call runs in its own task.

use std::time::Instant;

use libp2p::core::ConnectedPoint;
use libp2p::gossipsub;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, identify, mdns};

use crate::members::{Transition, Verdict};
use crate::wire::{self, CatalogMessage, Request, Response};
use fogbank_taas::ThingId;
use fogbank_taas::remote::RemoteError;

use super::Node;
use super::dialing::{DialTarget, bare, with_peer};
use super::transport::{BehaviourEvent, CALL_TIMEOUT};

impl Node {
    pub(super) fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
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

    pub(super) fn on_gossip(&mut self, event: gossipsub::Event) {
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

    pub(super) fn on_readings_gossip(&mut self, event: gossipsub::Event) {
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
                // Kept for things owned elsewhere too: a thing's device
                // may move here, and its followers stay subscribed.
                if let Some(thing) = wire::thing_of_topic(topic.as_str()) {
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

    pub(super) fn unwatch(&mut self, thing: &ThingId, peer: &PeerId) {
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

    pub(super) fn forget_watcher(&mut self, peer: &PeerId) {
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

    pub(super) fn on_catalog(&mut self, source: PeerId, message: CatalogMessage) {
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
                records,
                readings_ingested,
                ..
            } => {
                let (verdict, transition) =
                    self.members
                        .on_beacon(&gateway, source, incarnation, version, things, now);
                if verdict != Verdict::Impostor {
                    let parsed = addresses.iter().filter_map(|a| a.parse().ok()).collect();
                    self.members.set_addresses(&source, parsed);
                    self.members.set_ingested(&gateway, readings_ingested);
                    if records != self.hub.records().fingerprint()
                        && self.members.peer_of(&gateway) == Some(source)
                    {
                        self.pull_records(&gateway);
                    }
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

    pub(super) fn on_transition(&mut self, transition: Transition) {
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

    pub(super) fn on_call(&mut self, event: request_response::Event<Request, Response>) {
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
                } else if let Some((gateway, reply)) = self.pending.remove(&request_id) {
                    let _ = reply.send(Ok(self.reachable_at(&gateway, response)));
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

    pub(super) fn on_snapshot(&mut self, peer: PeerId, response: Response) {
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

    /// The gateway `peer` speaks for, once it was heard as one.
    fn speaker(&self, peer: &PeerId) -> Option<String> {
        self.members.speakers().read().get(peer).cloned()
    }

    /// A device endpoint a gateway answered with, its unspecified address
    /// (it listens on all) replaced by the one we reach that gateway at.
    fn reachable_at(&self, gateway: &str, response: Response) -> Response {
        let Response::Welcome(mut target) = response else {
            return response;
        };
        let unspecified = target
            .host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        let known = self.members.get(gateway).and_then(|member| {
            member.addresses.iter().find_map(|address| {
                address.iter().find_map(|part| match part {
                    libp2p::multiaddr::Protocol::Ip4(ip) if !ip.is_unspecified() => {
                        Some(ip.to_string())
                    }
                    libp2p::multiaddr::Protocol::Ip6(ip) if !ip.is_unspecified() => {
                        Some(ip.to_string())
                    }
                    libp2p::multiaddr::Protocol::Dns(name)
                    | libp2p::multiaddr::Protocol::Dns4(name)
                    | libp2p::multiaddr::Protocol::Dns6(name) => Some(name.to_string()),
                    _ => None,
                })
            })
        });
        if unspecified && let Some(host) = known {
            target.host = host;
        }
        Response::Welcome(target)
    }

    /// Answers a call from a peer. Quick answers go out at once; history
    /// and commands run as tasks and come back through `answers`.
    pub(super) fn serve(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) {
        let local = |thing: &ThingId| -> Result<(), Response> {
            if self.hub.inspect_thing(thing, |t| t.gateway == self.gateway) == Some(true) {
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
            Request::OfferDevice(offer) => Some(match self.speaker(&peer) {
                Some(from) => match self.hub.accept_device(&from, offer) {
                    Ok(target) => Response::Welcome(target),
                    Err(refused) => Response::Refused(refused.to_string()),
                },
                None => Response::Refused("not yet known as a gateway here".into()),
            }),
            Request::RecallDevice(device) => Some(match self.speaker(&peer) {
                Some(from) => {
                    let target = fogbank_taas::MoveTarget::Gateway(from);
                    match self.hub.move_device(
                        &device.to_string(),
                        target,
                        fogbank_taas::MOVE_DEADLINE,
                    ) {
                        Ok(status) => Response::Recalled(status.id),
                        Err(refused) => Response::Refused(refused.to_string()),
                    }
                }
                None => Response::Refused("not yet known as a gateway here".into()),
            }),
            request @ (Request::RecordIndex | Request::Records(_) | Request::Blob { .. }) => {
                Some(crate::records::serve(&self.hub, request))
            }
            Request::MoveStatus(id) => {
                Some(Response::Moving(self.hub.move_status(id).map(Box::new)))
            }
            Request::StartMove {
                device,
                target,
                deadline_secs,
            } => {
                let deadline = std::time::Duration::from_secs(deadline_secs.clamp(1, 600));
                tracing::info!(%peer, %device, "a move asked through another gateway");
                Some(
                    match self.hub.move_device(&device.to_string(), target, deadline) {
                        Ok(status) => Response::Moving(Some(Box::new(status))),
                        Err(refused) => Response::Refused(refused.to_string()),
                    },
                )
            }
            Request::HandHistory { thing, readings } => Some(match self.speaker(&peer) {
                Some(from) => match self.hub.import_history(&from, &thing, readings) {
                    Ok(count) => Response::HistoryTaken(count),
                    Err(refused) => Response::Refused(refused.to_string()),
                },
                None => Response::Refused("not yet known as a gateway here".into()),
            }),
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
