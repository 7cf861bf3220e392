//! The embedded broker's public port: one listener for MQTT 3.1.1 and 5,
//! and where devices' messages are stored.
//!
//! Every connection starts with a CONNECT packet whose variable header
//! names the protocol level (4 for 3.1.1, 5 for MQTT 5). The front door
//! reads the CONNECT, connects to the broker listener for that level on
//! loopback, and then stands between the two sockets until either closes:
//! - device to broker, it frames the packets; the PUBLISHes of each burst
//!   read off the socket go to the adapter's [`Receiver`] and are stored
//!   in one write *before* the burst is passed on. So an acknowledgement
//!   to the device means the reading is in the WAL, and a reading reaches
//!   the gateway's consumers without a round through the broker. A burst
//!   that cannot be stored is not passed on: the connection is closed,
//!   and the device sends it again when it is back.
//!   The same for a burst with a PUBLISH the client may not send: the
//!   broker would close the connection for most, and a wildcard or empty
//!   topic it would pass on to subscribers, whose clients choke on it.
//!   MQTT 5 topic aliases are resolved here and taken out of the packet
//!   (they belong to this connection).
//! - only what some MQTT client may want goes on to the broker (see
//!   `interest.rs`): a publish whose topic no subscription matches, not
//!   retained and not QoS 2, is acknowledged by the front door itself once
//!   stored — unless an acknowledgement the broker owes this device is
//!   still on its way, so that acknowledgements keep the publishes' order
//!   (MQTT 3.1.1 §4.6).
//! - broker to device, whole packets pass as they come, with the front
//!   door's own acknowledgements between them; an acknowledgement of a
//!   stored publish releases its receipt (kept until then so that a repeat
//!   after a lost acknowledgement is not stored twice).
//!
//! Authentication, keep-alive, subscriptions and wills stay the broker's
//! business (a device that vanishes closes its connection, so its will
//! fires).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fogbank_adapter::untrusted::{self, Excerpt};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::interest::Interest;

use crate::packet;
use crate::receive::{self, Message, Receiver, Verdict};

/// A client that has not sent its CONNECT by then is dropped, so idle
/// sockets cannot pile up in front of the broker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections that have not finished their CONNECT yet, at most: each
/// holds up to `max_connect_bytes`. More are closed as they come.
pub const MAX_HANDSHAKES: usize = 256;

/// A packet that has begun must have arrived whole by then: a client that
/// trickles one holds its buffer, and the broker's keep-alive, which a
/// client chooses, does not see it.
pub const PARTIAL_PACKET_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes all connections together may hold of packets still arriving
/// beyond one read's worth each ([`READ_CHUNK`]). A connection whose
/// packet finds the budget spent is closed; the device sends again.
pub const LARGE_PACKET_BUDGET: usize = 64 << 20;

/// The broker's listeners, by protocol, and what they take.
#[derive(Debug, Clone, Copy)]
pub struct Backends {
    pub v4: SocketAddr,
    pub v5: SocketAddr,
    /// The largest packet passed on (the broker would refuse a larger one
    /// too): a device cannot make the front door hold more than this.
    pub max_packet_bytes: usize,
    /// The largest CONNECT read: client id, will and credentials. A larger
    /// one is refused as soon as its fixed header says so.
    pub max_connect_bytes: usize,
}

/// Where the front door finds the adapter's receiver: empty until the
/// adapter has started (connections wait for it), replaced when it is
/// restarted.
pub type Intake = watch::Sender<Option<Arc<Mutex<Receiver>>>>;

/// Bytes read off a device's socket at once at most.
const READ_CHUNK: usize = 64 << 10;

/// The front door's own acknowledgements waiting to be written to one
/// device; a device that reads none holds its own publishes back.
const OWN_ACKS: usize = 1024;

/// Why a connection's first bytes are not an MQTT CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SniffError {
    #[error("the first packet is not CONNECT (header byte {0:#04x})")]
    NotConnect(u8),
    #[error("the CONNECT packet's remaining length is malformed")]
    Length,
    #[error("the CONNECT packet names no MQTT protocol")]
    ProtocolName,
    #[error("a CONNECT of {length} bytes, over the {limit} allowed")]
    TooLarge { length: usize, limit: usize },
}

/// The protocol level of the CONNECT packet that `prefix` begins with, or
/// `None` while more bytes are needed to tell.
pub fn protocol_level(prefix: &[u8]) -> Result<Option<u8>, SniffError> {
    let Some(&header) = prefix.first() else {
        return Ok(None);
    };
    // CONNECT is packet type 1 with all flag bits zero (MQTT 3.1.1 §3.1.1).
    if header != 0x10 {
        return Err(SniffError::NotConnect(header));
    }
    // Remaining length: one to four bytes, seven bits each.
    let mut at = 1;
    loop {
        let Some(&byte) = prefix.get(at) else {
            return Ok(None);
        };
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at == 5 {
            return Err(SniffError::Length);
        }
    }
    let Some(name_length) = prefix.get(at..at + 2) else {
        return Ok(None);
    };
    let name_length = usize::from(u16::from_be_bytes([name_length[0], name_length[1]]));
    at += 2;
    let expected: &[u8] = match name_length {
        4 => b"MQTT",
        6 => b"MQIsdp",
        _ => return Err(SniffError::ProtocolName),
    };
    let seen = &prefix[at.min(prefix.len())..(at + name_length).min(prefix.len())];
    if !expected.starts_with(seen) {
        return Err(SniffError::ProtocolName);
    }
    Ok(prefix.get(at + name_length).copied())
}

/// Serves `listener` on a thread of its own for the life of the process.
pub fn open(
    listener: std::net::TcpListener,
    backends: Backends,
    intake: Arc<Intake>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("mqtt-front-door".into())
        .spawn(move || runtime.block_on(serve(listener, backends, intake)))?;
    Ok(())
}

/// What every connection of the front door shares.
struct Shared {
    backends: Backends,
    intake: Arc<Intake>,
    interest: Interest,
    /// Permits for connections still reading their CONNECT.
    handshakes: Arc<Semaphore>,
    budget: Budget,
}

async fn serve(listener: std::net::TcpListener, backends: Backends, intake: Arc<Intake>) {
    let shared = Arc::new(Shared {
        backends,
        intake,
        interest: Interest::default(),
        handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
        budget: Budget::new(LARGE_PACKET_BUDGET),
    });
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "the MQTT port cannot be served");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((device, peer)) => {
                let Ok(handshake) = shared.handshakes.clone().try_acquire_owned() else {
                    // Dropping the socket closes it: the peer learns at once.
                    count(shared.intake.borrow().clone(), "mqtt_handshakes_refused");
                    if let Some(held_back) = untrusted::may_warn("mqtt-handshakes") {
                        tracing::warn!(%peer, held_back, limit = MAX_HANDSHAKES, "too many MQTT connections without a CONNECT yet: closing a new one");
                    }
                    continue;
                };
                let span = tracing::debug_span!("mqtt_connection", %peer);
                let shared = shared.clone();
                tokio::spawn(
                    async move {
                        if let Err(error) = splice(device, peer, &shared, handshake).await {
                            tracing::debug!(%error, "MQTT connection ended");
                        }
                    }
                    .instrument(span),
                );
            }
            Err(error) => {
                // Out of file descriptors, typically: wait instead of spinning.
                tracing::warn!(%error, "cannot accept an MQTT connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads the CONNECT while `handshake` is held, then stands between the
/// device and the broker.
async fn splice(
    mut device: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    handshake: OwnedSemaphorePermit,
) -> io::Result<()> {
    let intake = shared.intake.subscribe();
    device.set_nodelay(true)?;
    let mut prefix = Vec::with_capacity(256);
    let limit = shared.backends.max_connect_bytes;
    let read = tokio::time::timeout(
        CONNECT_TIMEOUT,
        read_connect(&mut device, &mut prefix, limit),
    )
    .await;
    drop(handshake);
    let (connect, connect_length) = match read {
        Ok(Ok(connect)) => connect,
        Ok(Err(error)) => {
            if let Some(SniffError::TooLarge { .. }) = sniff_error(&error) {
                count(intake.borrow().clone(), "mqtt_connect_oversized");
                if let Some(held_back) = untrusted::may_warn(&peer.ip().to_string()) {
                    tracing::warn!(%peer, held_back, %error, "refused an MQTT CONNECT");
                }
            }
            return Err(error);
        }
        Err(_) => {
            count(intake.borrow().clone(), "mqtt_connect_timeouts");
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no CONNECT in time",
            ));
        }
    };
    let backend = match connect.level {
        5 => shared.backends.v5,
        _ => shared.backends.v4,
    };
    let mut broker = TcpStream::connect(backend).await?;
    broker.set_nodelay(true)?;
    broker.write_all(&prefix[..connect_length]).await?;
    prefix.drain(..connect_length);
    // Receipts are per session; a client that lets the broker name it has
    // one per connection.
    let session = match connect.client_id.as_str() {
        "" => format!("@{peer}"),
        id => id.to_owned(),
    };
    let held = Mutex::new(HashSet::new());
    let accepted = AtomicBool::new(false);
    let (own_acks, own_acks_rx) = mpsc::channel(OWN_ACKS);
    let (device_rx, device_tx) = device.into_split();
    let (broker_rx, broker_tx) = broker.into_split();
    let inbound = Inbound {
        peer,
        session: &session,
        v5: connect.level == 5,
        max_packet_bytes: shared.backends.max_packet_bytes,
        budget: &shared.budget,
        intake: intake.clone(),
        held: &held,
        aliases: HashMap::new(),
        interest: &shared.interest,
        accepted: &accepted,
        own_acks,
    };
    let outbound = Outbound {
        session: &session,
        intake,
        held: &held,
        accepted: &accepted,
    };
    tokio::select! {
        result = inbound.run(device_rx, broker_tx, prefix) => result,
        result = outbound.run(broker_rx, device_tx, own_acks_rx) => result,
    }
}

/// The sniffing error that `error` carries, if it is one.
fn sniff_error(error: &io::Error) -> Option<&SniffError> {
    error.get_ref()?.downcast_ref::<SniffError>()
}

/// Counts an event for `/metrics` through the adapter's current receiver
/// (none before the adapter has started).
fn count(receiver: Option<Arc<Mutex<Receiver>>>, event: &'static str) {
    if let Some(receiver) = receiver {
        receiver.lock().context().count(event);
    }
}

/// A byte budget shared by all connections, for packets larger than one
/// read: what a crowd of devices sending large packets slowly can hold.
pub struct Budget {
    left: Mutex<usize>,
}

/// Bytes taken from a [`Budget`], given back when dropped.
pub struct Lease<'a> {
    budget: &'a Budget,
    bytes: usize,
}

impl Budget {
    pub fn new(bytes: usize) -> Self {
        Budget {
            left: Mutex::new(bytes),
        }
    }

    /// `bytes` of the budget, if that much is left.
    pub fn take(&self, bytes: usize) -> Option<Lease<'_>> {
        let mut left = self.left.lock();
        *left = left.checked_sub(bytes)?;
        Some(Lease {
            budget: self,
            bytes,
        })
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        *self.budget.left.lock() += self.bytes;
    }
}

/// Reads the whole CONNECT packet (and whatever came after it into
/// `prefix`); returns it and its length. One over `limit` bytes is refused
/// as soon as its fixed header tells, before its body is read.
async fn read_connect(
    device: &mut TcpStream,
    prefix: &mut Vec<u8>,
    limit: usize,
) -> io::Result<(packet::Connect, usize)> {
    loop {
        // Refuse what is not MQTT as soon as the first bytes tell.
        protocol_level(prefix).map_err(invalid)?;
        if let Some(length) = packet::frame_length(prefix).map_err(invalid)?
            && length > limit
        {
            return Err(invalid(SniffError::TooLarge { length, limit }));
        }
        if let Some(connect) = packet::complete(prefix).map_err(invalid)?.first() {
            return Ok((packet::connect(connect).map_err(invalid)?, connect.len()));
        }
        if device.read_buf(prefix).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// The device-to-broker half of one connection.
struct Inbound<'a> {
    peer: SocketAddr,
    session: &'a str,
    v5: bool,
    max_packet_bytes: usize,
    budget: &'a Budget,
    intake: watch::Receiver<Option<Arc<Mutex<Receiver>>>>,
    /// Packet ids of stored publishes whose acknowledgement has not passed.
    held: &'a Mutex<HashSet<u16>>,
    /// MQTT 5 topic aliases the device set on this connection.
    aliases: HashMap<u16, String>,
    interest: &'a Interest,
    /// Whether the broker accepted the connection: until it has, every
    /// packet goes to it (the device must hear the CONNACK first).
    accepted: &'a AtomicBool,
    /// Packet ids of stored QoS 1 publishes the front door acknowledges.
    own_acks: mpsc::Sender<u16>,
}

impl Inbound<'_> {
    async fn run(
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
                for pkid in acknowledge {
                    self.own_acks
                        .send(pkid)
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
    fn refuse(&self, event: &'static str, why: String) -> io::Error {
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
    async fn store(&mut self, packets: &[&[u8]]) -> io::Result<(Option<Vec<u8>>, Vec<u16>)> {
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
    fn learn_filters(&self, subscribe: &[u8]) {
        match packet::subscription_filters(subscribe, self.v5) {
            Ok(filters) => filters.into_iter().for_each(|f| self.interest.learn(f)),
            Err(_) => self.interest.learn_everything(),
        }
    }

    /// The adapter's receiver, once the adapter has started.
    async fn receiver(&mut self) -> io::Result<Arc<Mutex<Receiver>>> {
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

/// The broker-to-device half of one connection: passes whole packets on
/// as they come and the front door's own acknowledgements between them,
/// and releases the receipt of each stored publish once its
/// acknowledgement has passed.
///
/// Order: the front door acknowledges a publish only when every
/// acknowledgement the broker owed before it has been written, so its own
/// waiting ones always go before whatever the broker sends next.
struct Outbound<'a> {
    session: &'a str,
    intake: watch::Receiver<Option<Arc<Mutex<Receiver>>>>,
    held: &'a Mutex<HashSet<u16>>,
    accepted: &'a AtomicBool,
}

impl Outbound<'_> {
    async fn run(
        self,
        mut broker: OwnedReadHalf,
        mut device: OwnedWriteHalf,
        mut own_acks: mpsc::Receiver<u16>,
    ) -> io::Result<()> {
        let mut pending = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            tokio::select! {
                read = broker.read(&mut chunk) => {
                    let read = read?;
                    if read == 0 {
                        return Ok(());
                    }
                    pending.extend_from_slice(&chunk[..read]);
                    let packets = packet::complete(&pending).map_err(invalid)?;
                    let complete: usize = packets.iter().map(|p| p.len()).sum();
                    if packets.first().is_some_and(|p| packet::connack_accepts(p)) {
                        self.accepted.store(true, Ordering::Release);
                    }
                    let acknowledged: Vec<u16> =
                        packets.into_iter().filter_map(packet::acknowledged).collect();
                    self.write_own_acks(&mut device, Vec::new(), &mut own_acks).await?;
                    // Only whole packets: the device's stream is always
                    // between two, where the front door's own may go.
                    device.write_all(&pending[..complete]).await?;
                    pending.drain(..complete);
                    // Out of `held` only now that they are written: until
                    // then the front door acknowledges nothing itself.
                    let ours: Vec<u16> = acknowledged
                        .into_iter()
                        .filter(|pkid| self.held.lock().remove(pkid))
                        .collect();
                    self.release(&ours);
                }
                Some(first) = own_acks.recv() => {
                    self.write_own_acks(&mut device, vec![first], &mut own_acks).await?;
                }
            }
        }
    }

    /// Writes `pkids` and every acknowledgement of the front door's
    /// waiting behind them.
    async fn write_own_acks(
        &self,
        device: &mut OwnedWriteHalf,
        mut pkids: Vec<u16>,
        own_acks: &mut mpsc::Receiver<u16>,
    ) -> io::Result<()> {
        while let Ok(pkid) = own_acks.try_recv() {
            pkids.push(pkid);
        }
        if pkids.is_empty() {
            return Ok(());
        }
        let acks: Vec<u8> = pkids.iter().flat_map(|&p| packet::puback(p)).collect();
        device.write_all(&acks).await?;
        self.release(&pkids);
        Ok(())
    }

    /// The device has the acknowledgements of `pkids`: their receipts go.
    fn release(&self, pkids: &[u16]) {
        if pkids.is_empty() {
            return;
        }
        let receiver = self.intake.borrow().clone();
        if let Some(receiver) = receiver {
            let slots: Vec<Vec<u8>> = pkids
                .iter()
                .map(|&pkid| receive::receipt_slot(self.session, pkid))
                .collect();
            receiver.lock().release(&slots);
        }
    }
}

/// Bytes that are not the MQTT they claim to be end the connection.
fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A CONNECT as a client sends it, from the fixed header on.
    fn connect(name: &[u8], level: u8, remaining_length: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x10];
        packet.extend_from_slice(remaining_length);
        packet.extend_from_slice(&(name.len() as u16).to_be_bytes());
        packet.extend_from_slice(name);
        packet.push(level);
        packet.extend_from_slice(&[0x02, 0x00, 0x3c, 0x00, 0x01, b'c']);
        packet
    }

    #[test]
    fn levels_of_real_connect_packets() {
        assert_eq!(protocol_level(&connect(b"MQTT", 4, &[18])), Ok(Some(4)));
        assert_eq!(protocol_level(&connect(b"MQTT", 5, &[19])), Ok(Some(5)));
        assert_eq!(protocol_level(&connect(b"MQIsdp", 3, &[20])), Ok(Some(3)));
        // A long CONNECT (a big will) has a multi-byte remaining length.
        assert_eq!(
            protocol_level(&connect(b"MQTT", 5, &[0x80, 0x80, 0x01])),
            Ok(Some(5))
        );
    }

    #[test]
    fn every_strict_prefix_asks_for_more() {
        let packet = connect(b"MQTT", 5, &[0xc1, 0x02]);
        let level_at = 1 + 2 + 2 + 4;
        for end in 0..=level_at {
            assert_eq!(protocol_level(&packet[..end]), Ok(None), "{end}");
        }
    }

    #[test]
    fn what_is_not_a_connect_is_refused_early() {
        assert_eq!(
            protocol_level(b"GET / HTTP/1.1\r\n"),
            Err(SniffError::NotConnect(b'G'))
        );
        assert_eq!(
            protocol_level(&[0x10, 0xff, 0xff, 0xff, 0xff]),
            Err(SniffError::Length)
        );
        assert_eq!(
            protocol_level(&connect(b"HTTP", 4, &[18])),
            Err(SniffError::ProtocolName)
        );
        assert_eq!(
            protocol_level(&[0x10, 12, 0x00, 0x04, b'M', b'X']),
            Err(SniffError::ProtocolName)
        );
    }

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let budget = Budget::new(1000);
        let first = budget.take(600).unwrap();
        assert!(budget.take(500).is_none(), "over what is left");
        let second = budget.take(400).unwrap();
        assert!(budget.take(1).is_none());
        drop(first);
        assert!(budget.take(600).is_some());
        drop(second);
        assert!(budget.take(1000).is_some());
    }

    /// A CONNECT declaring 256 MiB is refused from its first five bytes,
    /// without waiting for its body.
    #[tokio::test]
    async fn a_connect_over_the_limit_is_refused_at_its_fixed_header() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream
                .write_all(&[0x10, 0xff, 0xff, 0xff, 0x7f, 0, 4])
                .await
                .unwrap();
            stream
        });
        let (mut device, _) = listener.accept().await.unwrap();
        let _client = client.await.unwrap();
        let mut prefix = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            read_connect(&mut device, &mut prefix, 16 << 10),
        )
        .await
        .expect("refused without waiting for the body");
        let error = read.unwrap_err();
        assert_eq!(
            sniff_error(&error),
            Some(&SniffError::TooLarge {
                length: 1 + 4 + 268_435_455,
                limit: 16 << 10
            })
        );
    }

    proptest! {
        #[test]
        fn any_bytes_are_answered_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = protocol_level(&bytes);
        }

        #[test]
        fn a_level_once_known_stays_known(level in any::<u8>(), tail in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut packet = connect(b"MQTT", level, &[30]);
            let known = protocol_level(&packet);
            packet.extend(tail);
            prop_assert_eq!(known, Ok(Some(level)));
            prop_assert_eq!(protocol_level(&packet), Ok(Some(level)));
        }
    }
}
