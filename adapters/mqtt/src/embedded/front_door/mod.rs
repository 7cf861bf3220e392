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
//!
//! Here: the listener and the splice of one connection; [`sniff`] reads
//! the CONNECT, [`inbound`] and [`outbound`] are the connection's two
//! halves, [`budget`] the bytes all connections may hold.

mod budget;
mod inbound;
mod outbound;
mod sniff;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use fogbank_adapter::untrusted::{self};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::Instrument;

use super::interest::Interest;

use crate::receive::Receiver;

use budget::Budget;
use inbound::Inbound;
use outbound::Outbound;
pub use sniff::{SniffError, protocol_level};
use sniff::{read_connect, sniff_error};

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
/// device, in bursts (one per read of at most [`READ_CHUNK`] bytes): a
/// device that reads none holds its own publishes back.
const OWN_ACKS: usize = 16;

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

/// Counts an event for `/metrics` through the adapter's current receiver
/// (none before the adapter has started).
fn count(receiver: Option<Arc<Mutex<Receiver>>>, event: &'static str) {
    if let Some(receiver) = receiver {
        receiver.lock().context().count(event);
    }
}

/// Bytes that are not the MQTT they claim to be end the connection.
fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}
