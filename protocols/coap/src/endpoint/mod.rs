//! The gateway's one CoAP endpoint (RFC 7252 over UDP), for both sides:
//! devices register with it and are observed through it; applications
//! read, observe and actuate thing services at it. One socket, so that a
//! device sees the gateway at the address it registered with.
//!
//! The endpoint is the message layer and nothing more: confirmable
//! retransmission with exponential backoff, deduplication of repeated
//! requests (the cached answer is sent again), tokens, piggybacked and
//! separate responses, Observe on both sides (RFC 7641) and block-wise
//! transfer (RFC 7959: Block2 for large answers, Block1 for large request
//! bodies, Block2 when reading from a device). What a request means is up
//! to the [`Handler`] routed by the first path segment.
//!
//! It runs on a thread of its own with its own runtime, so that a burst of
//! datagrams never waits behind the HTTP server or the adapters.
//!
//! This module holds the endpoint's state and its socket; [`server`]
//! answers requests (deduplicated by [`dedup`], Block1 bodies reassembled
//! by [`crate::uploads`]), [`observers`] notifies the applications that
//! observe a resource here, and [`client`] sends requests and observes
//! devices.

mod client;
mod dedup;
mod observers;
mod server;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use coap_lite::{MessageClass, MessageType, Packet};
use parking_lot::{Mutex, RwLock};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use crate::message::{Request, Response};
use crate::uploads::{self, Uploads};

pub use client::{Observation, get, request_packet};
use dedup::Dedup;

/// RFC 7252 §4.8 transmission parameters.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_RETRANSMIT: u32 = 4;
/// How long a repeated request is recognised (EXCHANGE_LIFETIME).
const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// How many answered requests are remembered for deduplication at most,
/// and how many bytes of answers: requests from forged addresses fill it
/// too, so the oldest go first past either bound.
const DEDUP_CAPACITY: usize = 65_536;
const DEDUP_BYTES: usize = 8 << 20;
/// Applications observing resources here at once, from one host (IP
/// address) and in all. A registration past either is answered without
/// Observe (RFC 7641 §4.1: the client is then not notified).
pub const MAX_OBSERVERS_PER_HOST: usize = 64;
pub const MAX_OBSERVERS: usize = 4096;
/// A separate response later than this after the empty ACK is given up.
const SEPARATE_RESPONSE_WAIT: Duration = Duration::from_secs(30);
/// Largest block this endpoint sends (szx 6: 1024 bytes).
const MAX_SZX: u8 = 6;
/// A handler taking longer than this gets an empty ACK first and its
/// answer as a separate response.
const PIGGYBACK_WAIT: Duration = Duration::from_millis(1500);
/// Every this many notifications to an observer one is confirmable, so
/// that an observer that went away is noticed (RFC 7641 §4.5).
const CONFIRMABLE_EVERY: u32 = 16;
/// Options this endpoint understands; an unknown critical (odd) option in
/// a request is answered 4.02 Bad Option.
const KNOWN_OPTIONS: &[u16] = &[
    1, 3, 4, 5, 6, 7, 8, 11, 12, 14, 15, 17, 20, 23, 27, 28, 35, 39, 60, 258,
];

/// What a handler answers: now, or later (a device round trip).
pub enum Reply {
    Now(Response),
    Later(Pin<Box<dyn Future<Output = Response> + Send>>),
}

/// Serves the requests whose first path segment it is routed by.
pub trait Handler: Send + Sync {
    fn handle(&self, request: Request) -> Reply;
}

/// Called for each notification of an observation this endpoint made, in
/// the receive loop; a confirmable one is acknowledged after it returns
/// (so after what it carries is stored).
pub type NotificationSink = Arc<dyn Fn(&Packet) -> Taken + Send + Sync>;

/// What became of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Stored, or dropped for good (bad input): acknowledge it.
    Yes,
    /// Not stored for now (storage failed): no ACK, so that the device
    /// sends it again.
    NotNow,
    /// Unwanted: the observation ends (RST).
    Never,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no answer from {0} after {MAX_RETRANSMIT} retransmissions")]
    Timeout(SocketAddr),
    #[error("{0} reset the request")]
    Reset(SocketAddr),
    #[error("cannot send to {peer}: {source}")]
    Send {
        peer: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot encode the request: {0}")]
    Encode(String),
    #[error("{peer} answered block {got} where {expected} was asked for")]
    Blocks {
        peer: SocketAddr,
        expected: u32,
        got: u32,
    },
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub datagrams: AtomicU64,
    pub malformed: AtomicU64,
    pub duplicates: AtomicU64,
    pub requests: AtomicU64,
    pub notifications_sent: AtomicU64,
    pub notifications_received: AtomicU64,
    pub retransmissions: AtomicU64,
    /// Block1 uploads refused to keep the endpoint's state bounded, by
    /// [`Refused::index`].
    uploads_refused: [AtomicU64; uploads::REASONS.len()],
    /// Observations not registered, past the observer bounds.
    observers_refused: AtomicU64,
}

impl Stats {
    /// What was refused and why, for `/metrics`.
    pub fn refusals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let load = |count: &AtomicU64| count.load(Ordering::Relaxed);
        let uploads = uploads::REASONS
            .into_iter()
            .zip(self.uploads_refused.iter().map(load));
        uploads.chain([("observers_full", load(&self.observers_refused))])
    }
}

#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

struct Inner {
    socket: UdpSocket,
    runtime: tokio::runtime::Handle,
    local: SocketAddr,
    routes: RwLock<HashMap<String, Arc<dyn Handler>>>,
    fallback: RwLock<Option<Arc<dyn Handler>>>,
    state: Mutex<State>,
    next_mid: AtomicU16,
    next_token: AtomicU64,
    /// Whether anyone observes anything here: checked on every reading.
    any_observers: std::sync::atomic::AtomicBool,
    stats: Stats,
}

#[derive(Default)]
struct State {
    answered: Dedup,
    /// Outgoing confirmable messages waiting for their ACK or RST, by id.
    unacked: HashMap<u16, oneshot::Sender<Packet>>,
    /// Requests waiting for a (separate) response, by token.
    exchanges: HashMap<Vec<u8>, oneshot::Sender<Packet>>,
    /// Observations of devices, by token.
    observations: HashMap<Vec<u8>, NotificationSink>,
    /// Applications observing resources here, by path.
    observers: HashMap<String, Vec<Observer>>,
    /// Message ids of recent non-confirmable notifications, so that an
    /// RST to one ends that observation.
    notified: HashMap<u16, (String, SocketAddr, Vec<u8>)>,
    notified_order: VecDeque<u16>,
    /// Block1 uploads being reassembled.
    uploads: Uploads,
    /// Observers of all paths together.
    observer_total: usize,
}

impl State {
    /// Ends `peer`'s observation of `path` with `token`, if there is one.
    fn remove_observer(&mut self, path: &str, peer: SocketAddr, token: &[u8]) {
        let Some(observers) = self.observers.get_mut(path) else {
            return;
        };
        let before = observers.len();
        observers.retain(|o| !(o.peer == peer && o.token == token));
        self.observer_total -= before - observers.len();
        if observers.is_empty() {
            self.observers.remove(path);
        }
    }

    /// Whether one more observation from `peer` stays within the bounds.
    fn may_observe(&self, peer: SocketAddr) -> bool {
        self.observer_total < MAX_OBSERVERS
            && self
                .observers
                .values()
                .flatten()
                .filter(|o| o.peer.ip() == peer.ip())
                .count()
                < MAX_OBSERVERS_PER_HOST
    }
}

#[derive(Debug, Clone)]
struct Observer {
    peer: SocketAddr,
    token: Vec<u8>,
    request: Request,
    sequence: u32,
}

impl Endpoint {
    /// Binds `address` and starts serving on a thread of its own.
    pub fn bind(address: SocketAddr) -> std::io::Result<Endpoint> {
        let std_socket = std::net::UdpSocket::bind(address)?;
        std_socket.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let socket = {
            let _guard = runtime.enter();
            UdpSocket::from_std(std_socket)?
        };
        let local = socket.local_addr()?;
        let seed = random_u64();
        let endpoint = Endpoint {
            inner: Arc::new(Inner {
                socket,
                runtime: runtime.handle().clone(),
                local,
                routes: RwLock::default(),
                fallback: RwLock::default(),
                state: Mutex::default(),
                next_mid: AtomicU16::new(seed as u16),
                next_token: AtomicU64::new(seed),
                any_observers: std::sync::atomic::AtomicBool::new(false),
                stats: Stats::default(),
            }),
        };
        let serving = endpoint.clone();
        std::thread::Builder::new()
            .name("coap".into())
            .spawn(move || runtime.block_on(serving.serve()))?;
        tracing::info!(listen = %local, "CoAP endpoint listening");
        Ok(endpoint)
    }

    /// Runs `task` on the endpoint's runtime, beside the receive loop.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.runtime.spawn(task)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Requests whose path starts with `segment` go to `handler`.
    pub fn route(&self, segment: &str, handler: Arc<dyn Handler>) {
        self.inner
            .routes
            .write()
            .insert(segment.to_owned(), handler);
    }

    /// Requests no route takes go to `handler`.
    pub fn fallback(&self, handler: Arc<dyn Handler>) {
        *self.inner.fallback.write() = Some(handler);
    }

    async fn serve(self) {
        let mut buffer = vec![0u8; 65_536];
        loop {
            match self.inner.socket.recv_from(&mut buffer).await {
                Ok((length, peer)) => {
                    self.inner.stats.datagrams.fetch_add(1, Ordering::Relaxed);
                    self.on_datagram(&buffer[..length], peer);
                }
                // ICMP port unreachable from an earlier send, typically.
                Err(error) => tracing::debug!(%error, "CoAP receive error"),
            }
        }
    }

    fn on_datagram(&self, bytes: &[u8], peer: SocketAddr) {
        let packet = match Packet::from_bytes(bytes) {
            Ok(packet) if packet.header.get_version() == 1 => packet,
            Ok(_) => return, // RFC 7252 §3: other versions are silently ignored
            Err(error) => {
                self.inner.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, %error, "dropped a malformed CoAP datagram");
                // §4.2: a confirmable message that cannot be parsed is rejected.
                if bytes.len() >= 4 && bytes[0] >> 6 == 1 && (bytes[0] >> 4) & 0x3 == 0 {
                    let mid = u16::from_be_bytes([bytes[2], bytes[3]]);
                    self.send_packet(peer, &empty(MessageType::Reset, mid));
                }
                return;
            }
        };
        match packet.header.code {
            MessageClass::Request(method) => self.on_request(packet, method, peer),
            MessageClass::Response(_) => self.on_response(packet, peer),
            MessageClass::Empty => self.on_empty(packet, peer),
            MessageClass::Reserved(_) => {
                if packet.header.get_type() == MessageType::Confirmable {
                    self.send_packet(peer, &empty(MessageType::Reset, packet.header.message_id));
                }
            }
        }
    }

    fn next_mid(&self) -> u16 {
        self.inner.next_mid.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn send_packet(&self, peer: SocketAddr, packet: &Packet) {
        if let Some(bytes) = encode(packet) {
            self.send_bytes(peer, &bytes);
        }
    }

    pub(super) fn send_bytes(&self, peer: SocketAddr, bytes: &[u8]) {
        // Datagrams are fire and forget; retransmission covers losses.
        if let Err(error) = self.inner.socket.try_send_to(bytes, peer) {
            tracing::debug!(%peer, %error, "CoAP send failed");
        }
    }
}

pub(super) fn is_error(packet: &Packet) -> bool {
    matches!(packet.header.code, MessageClass::Response(code) if code.is_error())
}

pub(super) fn empty(kind: MessageType, mid: u16) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_type(kind);
    packet.header.code = MessageClass::Empty;
    packet.header.message_id = mid;
    packet
}

pub(super) fn encode(packet: &Packet) -> Option<Vec<u8>> {
    match packet.to_bytes_unlimited() {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::warn!(%error, "cannot encode a CoAP message");
            None
        }
    }
}

pub(super) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No entropy source: time still differs between runs.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return nanos;
    }
    u64::from_be_bytes(bytes)
}
