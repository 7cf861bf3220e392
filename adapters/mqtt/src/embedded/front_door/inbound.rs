//! The device-to-broker half of one connection: frames the packets,
//! stores the publishes of each burst in one write before passing the
//! burst on, and acknowledges itself what no subscriber wants.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fogbank_adapter::untrusted::{self, Excerpt};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::super::interest::Interest;

use crate::packet;
use crate::receive::{Message, Receiver, Verdict};

use super::budget::{Budget, Lease};
use super::{PARTIAL_PACKET_TIMEOUT, READ_CHUNK, count, invalid};

/// The device-to-broker half of one connection.
pub(super) struct Inbound<'a> {
    pub(super) peer: SocketAddr,
    pub(super) session: &'a str,
    pub(super) v5: bool,
    pub(super) max_packet_bytes: usize,
    pub(super) budget: &'a Budget,
    pub(super) intake: watch::Receiver<Option<Arc<Mutex<Receiver>>>>,
    /// Packet ids of stored publishes whose acknowledgement has not passed.
    pub(super) held: &'a Mutex<HashSet<u16>>,
    /// MQTT 5 topic aliases the device set on this connection.
    pub(super) aliases: HashMap<u16, String>,
    pub(super) interest: &'a Interest,
    /// Whether the broker accepted the connection: until it has, every
    /// packet goes to it (the device must hear the CONNACK first).
    pub(super) accepted: &'a AtomicBool,
    /// Packet ids of stored QoS 1 publishes the front door acknowledges,
    /// a burst at a time.
    pub(super) own_acks: mpsc::Sender<Vec<u16>>,
}

impl Inbound<'_> {
    pub(super) async fn run(
        mut self,
        mut device: OwnedReadHalf,
        mut broker: OwnedWriteHalf,
        mut buffer: Vec<u8>,
    ) -> io::Result<()> {
        let budget = self.budget;
        // The packet whose start is in `buffer`: its deadline, and its
        // share of the budget if it is larger than one read.
        let mut arriving: Option<(Instant, Option<Lease<'_>>)> = None;
        loop {
            let packets = packet::complete(&buffer).map_err(invalid)?;
            let complete = packets.iter().map(|p| p.len()).sum();
            if complete > 0 {
                let (rewritten, acknowledge) = self.store(&packets).await?;
                // Queued before the rest goes to the broker, whose
                // acknowledgements of it must come after these.
                if !acknowledge.is_empty() {
                    self.own_acks
                        .send(acknowledge)
                        .await
                        .map_err(|_| io::Error::other("the connection is closing"))?;
                }
                let forward = rewritten.as_deref().unwrap_or(&buffer[..complete]);
                broker.write_all(forward).await?;
                buffer.drain(..complete);
                arriving = None;
            }
            if buffer.is_empty() {
                arriving = None;
            } else {
                let (_, lease) =
                    arriving.get_or_insert_with(|| (Instant::now() + PARTIAL_PACKET_TIMEOUT, None));
                if lease.is_none()
                    && let Some(length) = packet::frame_length(&buffer).map_err(invalid)?
                {
                    if length > self.max_packet_bytes {
                        return Err(self.refuse(
                            "mqtt_packet_oversized",
                            format!("a packet of {length} bytes, over the broker's limit"),
                        ));
                    }
                    if length > READ_CHUNK {
                        *lease = Some(budget.take(length).ok_or_else(|| {
                            self.refuse(
                                "mqtt_memory_budget",
                                format!("a packet of {length} bytes while every connection together holds the most allowed"),
                            )
                        })?);
                    }
                }
            }
            buffer.reserve(READ_CHUNK);
            let read = match &arriving {
                None => device.read_buf(&mut buffer).await?,
                Some((deadline, _)) => {
                    let read = tokio::time::timeout_at(*deadline, device.read_buf(&mut buffer));
                    read.await.map_err(|_| {
                        self.refuse(
                            "mqtt_packet_timeouts",
                            format!("a packet not whole after {PARTIAL_PACKET_TIMEOUT:?}"),
                        )
                    })??
                }
            };
            if read == 0 {
                return Ok(());
            }
        }
    }

    /// Counts and logs (rate-limited) why this connection is being closed,
    /// and returns the error that closes it.
    pub(super) fn refuse(&self, event: &'static str, why: String) -> io::Error {
        count(self.intake.borrow().clone(), event);
        if let Some(held_back) = untrusted::may_warn(&self.peer.ip().to_string()) {
            tracing::warn!(peer = %self.peer, held_back, session = %Excerpt(self.session), "closing an MQTT connection: {why}");
        }
        invalid(why)
    }

    /// Stores the readings of the publishes among `packets`; an error when
    /// they could not be stored and must not reach the broker. Returns the
    /// packets to pass on instead when some are not for the broker or
    /// topic aliases had to be resolved, and the packet ids of the QoS 1
    /// publishes the front door acknowledges itself.
    pub(super) async fn store(
        &mut self,
        packets: &[&[u8]],
    ) -> io::Result<(Option<Vec<u8>>, Vec<u16>)> {
        let mut publishes = Vec::new();
        let mut rewritten: Option<Vec<u8>> = None;
        // Once the broker owes this device an acknowledgement, later
        // publishes go to it too, so that the acknowledgements keep order.
        let mut broker_acknowledges =
            !self.accepted.load(Ordering::Acquire) || !self.held.lock().is_empty();
        for (index, &bytes) in packets.iter().enumerate() {
            let kind = packet::kind(bytes).unwrap_or(0);
            if !packet::client_may_send(kind, self.v5) {
                return Err(self.refuse(
                    "mqtt_protocol_violations",
                    format!("a packet of type {kind}, which a connected client may not send"),
                ));
            }
            let read = match packet::kind(bytes) {
                Some(packet::PUBLISH) => packet::publish(bytes, self.v5),
                kind => {
                    if kind == Some(packet::SUBSCRIBE) {
                        self.learn_filters(bytes);
                    }
                    if let Some(out) = &mut rewritten {
                        out.extend_from_slice(bytes);
                    }
                    continue;
                }
            };
            match read {
                Ok(publish) => {
                    let topic = match publish.alias {
                        Some(alias) if publish.topic.is_empty() => {
                            self.aliases.get(&alias).cloned().ok_or_else(|| {
                                invalid(format!("a PUBLISH naming unknown topic alias {alias}"))
                            })?
                        }
                        Some(alias) => {
                            self.aliases.insert(alias, publish.topic.to_owned());
                            publish.topic.to_owned()
                        }
                        None => publish.topic.to_owned(),
                    };
                    let to_broker = broker_acknowledges && publish.qos > 0
                        || publish.qos == 2
                        || publish.retain()
                        || self.interest.wants(&topic);
                    broker_acknowledges |= to_broker && publish.qos > 0;
                    if !to_broker {
                        rewritten.get_or_insert_with(|| packets[..index].concat());
                    } else if publish.alias.is_some() {
                        rewritten
                            .get_or_insert_with(|| packets[..index].concat())
                            .extend_from_slice(&publish.without_alias(&topic));
                    } else if let Some(out) = &mut rewritten {
                        out.extend_from_slice(bytes);
                    }
                    publishes.push((topic, publish, to_broker));
                }
                // A malformed PUBLISH or a protocol error closes the
                // connection (MQTT 5 §4.13), as the broker would, but also
                // for what rumqttd lets through (a wildcard or an empty
                // topic, which would make subscribers drop their
                // connections). Nothing of the burst is stored or passed
                // on: none of it was acknowledged, and the client sends
                // the good part again when it reconnects.
                Err(error) => {
                    return Err(self.refuse(
                        "mqtt_protocol_violations",
                        format!("a PUBLISH it may not send: {error}"),
                    ));
                }
            }
        }
        if publishes.is_empty() {
            return Ok((rewritten, Vec::new()));
        }
        let receiver = self.receiver().await?;
        let messages: Vec<Message<'_>> = publishes
            .iter()
            .map(|(topic, p, _)| Message {
                topic,
                payload: p.payload,
                qos: p.qos,
                pkid: p.pkid,
                dup: p.dup,
            })
            .collect();
        let verdicts = {
            let mut receiver = receiver.lock();
            let verdicts = receiver.receive(self.session, &messages);
            // Every topic passes the front door: nothing to subscribe to.
            receiver.take_discovered_topics();
            verdicts
        };
        let mut held = self.held.lock();
        let mut acknowledge = Vec::new();
        for ((message, verdict), (_, _, to_broker)) in messages.iter().zip(verdicts).zip(&publishes)
        {
            match verdict {
                Verdict::Acknowledge if message.qos == 0 => {}
                Verdict::Acknowledge if *to_broker => {
                    held.insert(message.pkid);
                }
                Verdict::Acknowledge => acknowledge.push(message.pkid),
                Verdict::Withhold => {
                    return Err(io::Error::other(
                        "a device's message could not be stored; it will send it again",
                    ));
                }
            }
        }
        Ok((rewritten, acknowledge))
    }

    /// Learns what a SUBSCRIBE asks for before the broker sees it; the
    /// broker answers a malformed one itself.
    pub(super) fn learn_filters(&self, subscribe: &[u8]) {
        match packet::subscription_filters(subscribe, self.v5) {
            Ok(filters) => filters.into_iter().for_each(|f| self.interest.learn(f)),
            Err(_) => self.interest.learn_everything(),
        }
    }

    /// The adapter's receiver, once the adapter has started.
    pub(super) async fn receiver(&mut self) -> io::Result<Arc<Mutex<Receiver>>> {
        let current = self
            .intake
            .wait_for(Option::is_some)
            .await
            .map_err(|_| io::Error::other("the MQTT adapter is gone"))?;
        current
            .clone()
            .ok_or_else(|| io::Error::other("the MQTT adapter is gone"))
    }
}
