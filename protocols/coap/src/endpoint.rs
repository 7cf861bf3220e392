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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use fogbank_taas::untrusted;
use parking_lot::{Mutex, RwLock};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use crate::message::{self, Block, Request, Response};
use crate::uploads::{self, Refused, Uploads};

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

/// Answered requests by (peer, message id): a repeat gets the same bytes
/// again; `None` while the answer is being worked out.
#[derive(Default)]
struct Dedup {
    replies: HashMap<(SocketAddr, u16), Option<Vec<u8>>>,
    order: VecDeque<(Instant, (SocketAddr, u16))>,
    /// Bytes of the answers in `replies`.
    bytes: usize,
}

impl Dedup {
    fn get(&self, key: &(SocketAddr, u16)) -> Option<&Option<Vec<u8>>> {
        self.replies.get(key)
    }

    fn forget(&mut self, key: &(SocketAddr, u16)) {
        // Its place in `order` goes when it expires; a missing key is fine.
        self.remove(key);
    }

    fn remove(&mut self, key: &(SocketAddr, u16)) {
        if let Some(Some(reply)) = self.replies.remove(key) {
            self.bytes -= reply.len();
        }
    }

    fn insert(&mut self, key: (SocketAddr, u16), reply: Option<Vec<u8>>, now: Instant) {
        let adding = reply.as_ref().map_or(0, Vec::len);
        while let Some(&(at, old)) = self.order.front() {
            if now.duration_since(at) < EXCHANGE_LIFETIME
                && self.order.len() < DEDUP_CAPACITY
                && self.bytes + adding <= DEDUP_BYTES
            {
                break;
            }
            self.remove(&old);
            self.order.pop_front();
        }
        self.bytes += adding;
        match self.replies.insert(key, reply) {
            None => self.order.push_back((now, key)),
            Some(Some(earlier)) => self.bytes -= earlier.len(),
            Some(None) => {}
        }
    }
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

    // ---------------------------------------------------------- server side

    fn on_request(&self, packet: Packet, method: RequestType, peer: SocketAddr) {
        let kind = packet.header.get_type();
        if !matches!(kind, MessageType::Confirmable | MessageType::NonConfirmable) {
            return;
        }
        let key = (peer, packet.header.message_id);
        {
            let mut state = self.inner.state.lock();
            if let Some(reply) = state.answered.get(&key) {
                self.inner.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                if let Some(bytes) = reply.clone() {
                    drop(state);
                    self.send_bytes(peer, &bytes);
                }
                return;
            }
            state.answered.insert(key, None, Instant::now());
        }
        self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("coap", %peer, ?method, path = %message::uri_path(&packet).join("/"));
        let _entered = span.enter();

        if let Some(option) = packet
            .options()
            .map(|(number, _)| *number)
            .find(|n| n % 2 == 1 && !KNOWN_OPTIONS.contains(n))
        {
            let response = Response::error(
                ResponseType::BadOption,
                format!("unknown critical option {option}"),
            );
            self.answer(&packet, peer, response, None);
            return;
        }
        let request = Request {
            peer,
            method,
            path: message::uri_path(&packet),
            queries: message::string_options(&packet, CoapOption::UriQuery),
            content_format: message::uint_option(&packet, CoapOption::ContentFormat)
                .and_then(|f| u16::try_from(f).ok()),
            accept: message::uint_option(&packet, CoapOption::Accept)
                .and_then(|f| u16::try_from(f).ok()),
            payload: packet.payload.clone(),
        };
        let request = match self.reassemble(&packet, request) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(response) => {
                self.answer(&packet, peer, response, None);
                return;
            }
        };
        let handler = self.handler_for(&request.path);
        let Some(handler) = handler else {
            self.answer(&packet, peer, Response::new(ResponseType::NotFound), None);
            return;
        };
        match handler.handle(request.clone()) {
            Reply::Now(response) => self.answer(&packet, peer, response, Some(&request)),
            Reply::Later(future) => {
                let endpoint = self.clone();
                self.spawn(async move {
                    let mut future = future;
                    let response = match tokio::time::timeout(PIGGYBACK_WAIT, &mut future).await {
                        Ok(response) => response,
                        Err(_) => {
                            // Empty ACK now; the answer follows on its own.
                            if packet.header.get_type() == MessageType::Confirmable {
                                let ack =
                                    empty(MessageType::Acknowledgement, packet.header.message_id);
                                endpoint.send_packet(peer, &ack);
                                let mut separate = packet.clone();
                                separate.header.set_type(MessageType::NonConfirmable);
                                separate.header.message_id = endpoint.next_mid();
                                let response = future.await;
                                endpoint.answer_separately(separate, peer, response);
                                return;
                            }
                            future.await
                        }
                    };
                    endpoint.answer(&packet, peer, response, Some(&request));
                });
            }
        }
    }

    fn handler_for(&self, path: &[String]) -> Option<Arc<dyn Handler>> {
        let first = path.first().map(String::as_str).unwrap_or("");
        if let Some(handler) = self.inner.routes.read().get(first) {
            return Some(handler.clone());
        }
        self.inner.fallback.read().clone()
    }

    /// Block1: collects a request body sent in blocks; `Ok(None)` once a
    /// middle block is acknowledged with 2.31 Continue.
    fn reassemble(
        &self,
        packet: &Packet,
        mut request: Request,
    ) -> Result<Option<Request>, Response> {
        let Some(block) = Block::of(packet, CoapOption::Block1) else {
            return Ok(Some(request));
        };
        let block = block.map_err(|()| Response::error(ResponseType::BadOption, "bad Block1"))?;
        let received = self.inner.state.lock().uploads.block(
            request.peer,
            request.path_string(),
            block,
            &request.payload,
            Instant::now(),
        );
        match received {
            Ok(Some(body)) => {
                request.payload = body;
                Ok(Some(request))
            }
            Ok(None) => {
                let mut reply = reply_to(packet, self.next_mid());
                reply.header.code = MessageClass::Response(ResponseType::Continue);
                reply.add_option(CoapOption::Block1, block.encode());
                self.remember_and_send(packet, request.peer, &reply);
                Ok(None)
            }
            Err(refused) => {
                self.inner.stats.uploads_refused[refused.index()].fetch_add(1, Ordering::Relaxed);
                if let Some(held_back) = untrusted::may_warn(&request.peer.ip().to_string()) {
                    tracing::warn!(peer = %request.peer, held_back, %refused, "refused a CoAP block-wise upload");
                }
                let code = match refused {
                    Refused::OutOfOrder { .. } => ResponseType::RequestEntityIncomplete,
                    Refused::BlockSize { .. } => ResponseType::BadRequest,
                    Refused::TooLarge => ResponseType::RequestEntityTooLarge,
                    Refused::HostBusy | Refused::Full => ResponseType::TooManyRequests,
                };
                Err(Response::error(code, refused.to_string()))
            }
        }
    }

    /// Sends `response` to `packet`: piggybacked on the ACK of a
    /// confirmable request, as a non-confirmable message otherwise. Handles
    /// Observe registration and Block2.
    fn answer(
        &self,
        packet: &Packet,
        peer: SocketAddr,
        response: Response,
        request: Option<&Request>,
    ) {
        let mut reply = reply_to(packet, self.next_mid());
        if let Some(Ok(block1)) = Block::of(packet, CoapOption::Block1) {
            reply.add_option(CoapOption::Block1, block1.encode());
        }
        let observe = message::uint_option(packet, CoapOption::Observe);
        if let Some(request) = request
            && request.method == RequestType::Get
        {
            let path = request.path_string();
            let token = packet.get_token().to_vec();
            let registering = observe == Some(0) && response.observable && response.is_success();
            let mut state = self.inner.state.lock();
            if !registering && !state.observers.contains_key(&path) {
                drop(state);
                return self.answer_plain(packet, peer, reply, response);
            }
            // A new GET on the same token replaces (or ends) the old interest.
            state.remove_observer(&path, peer, &token);
            if registering {
                if state.may_observe(peer) {
                    state.observers.entry(path).or_default().push(Observer {
                        peer,
                        token,
                        request: request.clone(),
                        sequence: 1,
                    });
                    state.observer_total += 1;
                    reply.set_observe_value(0);
                } else {
                    self.inner
                        .stats
                        .observers_refused
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = untrusted::may_warn(&peer.ip().to_string()) {
                        tracing::warn!(%peer, held_back, "refused a CoAP observation: too many observers");
                    }
                }
            }
            self.inner
                .any_observers
                .store(!state.observers.is_empty(), Ordering::Relaxed);
        }
        self.answer_plain(packet, peer, reply, response);
    }

    fn answer_plain(
        &self,
        packet: &Packet,
        peer: SocketAddr,
        mut reply: Packet,
        response: Response,
    ) {
        let requested_block = match Block::of(packet, CoapOption::Block2) {
            Some(Ok(block)) => Some(block),
            Some(Err(())) => {
                let response = Response::error(ResponseType::BadOption, "bad Block2");
                fill(&mut reply, response, None);
                self.remember_and_send(packet, peer, &reply);
                return;
            }
            None => None,
        };
        fill(&mut reply, response, requested_block);
        self.remember_and_send(packet, peer, &reply);
    }

    fn answer_separately(&self, mut separate: Packet, peer: SocketAddr, response: Response) {
        fill(&mut separate, response, None);
        self.send_packet(peer, &separate);
    }

    fn remember_and_send(&self, request: &Packet, peer: SocketAddr, reply: &Packet) {
        let Some(bytes) = encode(reply) else { return };
        self.inner.state.lock().answered.insert(
            (peer, request.header.message_id),
            Some(bytes.clone()),
            Instant::now(),
        );
        self.send_bytes(peer, &bytes);
    }

    /// Whether anyone observes anything: one atomic load.
    pub fn has_observers(&self) -> bool {
        self.inner.any_observers.load(Ordering::Relaxed)
    }

    /// Whether anyone observes `path` (as `things/x`).
    pub fn is_observed(&self, path: &str) -> bool {
        self.inner.state.lock().observers.contains_key(path)
    }

    /// Every path someone observes (as `things/x`).
    pub fn observed_paths(&self) -> Vec<String> {
        self.inner.state.lock().observers.keys().cloned().collect()
    }

    /// Sends every observer of `path` the resource's current state, asking
    /// its handler again with the observer's request.
    pub fn notify(&self, path: &str) {
        let observers: Vec<Observer> = {
            let mut state = self.inner.state.lock();
            let Some(observers) = state.observers.get_mut(path) else {
                return;
            };
            for observer in observers.iter_mut() {
                observer.sequence = (observer.sequence + 1) & 0xff_ffff;
            }
            observers.clone()
        };
        let Some(handler) = self.handler_for(&observers[0].request.path) else {
            return;
        };
        for observer in observers {
            let Reply::Now(response) = handler.handle(observer.request.clone()) else {
                continue;
            };
            let ended = !response.is_success();
            let confirmable = observer.sequence % CONFIRMABLE_EVERY == 0 || ended;
            let mut packet = Packet::new();
            packet.header.set_type(if confirmable {
                MessageType::Confirmable
            } else {
                MessageType::NonConfirmable
            });
            packet.header.message_id = self.next_mid();
            packet.set_token(observer.token.clone());
            if !ended {
                packet.set_observe_value(observer.sequence);
            }
            fill(&mut packet, response, None);
            self.inner
                .stats
                .notifications_sent
                .fetch_add(1, Ordering::Relaxed);
            if ended {
                self.forget_observer(path, observer.peer, &observer.token);
            }
            if confirmable {
                let endpoint = self.clone();
                let path = path.to_owned();
                self.spawn(async move {
                    match endpoint.send_confirmable(observer.peer, &packet).await {
                        Ok(ack) if ack.header.get_type() == MessageType::Acknowledgement => {}
                        _ => endpoint.forget_observer(&path, observer.peer, &observer.token),
                    }
                });
            } else {
                let mut state = self.inner.state.lock();
                state.notified.insert(
                    packet.header.message_id,
                    (path.to_owned(), observer.peer, observer.token.clone()),
                );
                state.notified_order.push_back(packet.header.message_id);
                if state.notified_order.len() > 4096
                    && let Some(old) = state.notified_order.pop_front()
                {
                    state.notified.remove(&old);
                }
                drop(state);
                self.send_packet(observer.peer, &packet);
            }
        }
    }

    fn forget_observer(&self, path: &str, peer: SocketAddr, token: &[u8]) {
        let mut state = self.inner.state.lock();
        state.remove_observer(path, peer, token);
        self.inner
            .any_observers
            .store(!state.observers.is_empty(), Ordering::Relaxed);
        tracing::debug!(%peer, path, "observer removed");
    }

    /// Observers of all paths, for tests and `/metrics`.
    pub fn observer_count(&self) -> usize {
        self.inner.state.lock().observer_total
    }

    /// Unfinished Block1 uploads and their bytes, for `/metrics`.
    pub fn uploads_held(&self) -> (usize, usize) {
        let state = self.inner.state.lock();
        (state.uploads.len(), state.uploads.bytes())
    }

    // ---------------------------------------------------------- client side

    fn on_empty(&self, packet: Packet, peer: SocketAddr) {
        let mid = packet.header.message_id;
        match packet.header.get_type() {
            MessageType::Acknowledgement | MessageType::Reset => {
                let mut state = self.inner.state.lock();
                if let Some(waiter) = state.unacked.remove(&mid) {
                    drop(state);
                    let _ = waiter.send(packet);
                } else if packet.header.get_type() == MessageType::Reset
                    && let Some((path, observer, token)) = state.notified.remove(&mid)
                {
                    drop(state);
                    self.forget_observer(&path, observer, &token);
                }
            }
            // A CoAP ping (empty CON) is answered with RST (§4.3).
            MessageType::Confirmable => self.send_packet(peer, &empty(MessageType::Reset, mid)),
            MessageType::NonConfirmable => {}
        }
    }

    fn on_response(&self, packet: Packet, peer: SocketAddr) {
        let kind = packet.header.get_type();
        let token = packet.get_token().to_vec();
        if kind == MessageType::Acknowledgement {
            // Piggybacked: the request's sender waits for this ACK.
            if let Some(waiter) = self
                .inner
                .state
                .lock()
                .unacked
                .remove(&packet.header.message_id)
            {
                let _ = waiter.send(packet);
            }
            return;
        }
        let mid = packet.header.message_id;
        let (exchange, sink) = {
            let mut state = self.inner.state.lock();
            // A repeated notification (our ACK was lost) is acknowledged
            // again, not stored again.
            if state.answered.get(&(peer, mid)).is_some() {
                drop(state);
                self.inner.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                if kind == MessageType::Confirmable {
                    self.send_packet(peer, &empty(MessageType::Acknowledgement, mid));
                }
                return;
            }
            state.answered.insert((peer, mid), None, Instant::now());
            let exchange = state.exchanges.remove(&token);
            let sink = match exchange {
                Some(_) => None,
                None => state.observations.get(&token).cloned(),
            };
            (exchange, sink)
        };
        let taken = if let Some(exchange) = exchange {
            let _ = exchange.send(packet);
            Taken::Yes
        } else if let Some(sink) = sink {
            self.inner
                .stats
                .notifications_received
                .fetch_add(1, Ordering::Relaxed);
            sink(&packet)
        } else {
            Taken::Never
        };
        match (kind, taken) {
            (MessageType::Confirmable, Taken::Yes) => {
                self.send_packet(peer, &empty(MessageType::Acknowledgement, mid))
            }
            (_, Taken::Yes) => {}
            (_, Taken::NotNow) => {
                // Its repeat must be taken afresh, not as a duplicate.
                self.inner.state.lock().answered.forget(&(peer, mid));
            }
            // Nobody wants it: tell the sender to stop (RFC 7641 §3.6).
            (_, Taken::Never) => {
                self.inner.state.lock().observations.remove(&token);
                self.send_packet(peer, &empty(MessageType::Reset, mid));
            }
        }
    }

    /// Sends a confirmable request and waits for its response, fetching
    /// further blocks of a block-wise answer.
    pub async fn request(
        &self,
        peer: SocketAddr,
        mut packet: Packet,
    ) -> Result<Packet, RequestError> {
        let mut response = self.request_once(peer, packet.clone()).await?;
        let mut num = 0;
        while let Some(Ok(block)) = Block::of(&response, CoapOption::Block2) {
            if block.num != num {
                return Err(RequestError::Blocks {
                    peer,
                    expected: num,
                    got: block.num,
                });
            }
            if !block.more {
                break;
            }
            num += 1;
            packet.clear_option(CoapOption::Block2);
            packet.clear_option(CoapOption::Observe);
            packet.add_option(
                CoapOption::Block2,
                Block {
                    num,
                    more: false,
                    szx: block.szx,
                }
                .encode(),
            );
            packet.set_token(self.new_token());
            let next = self.request_once(peer, packet.clone()).await?;
            let mut payload = std::mem::take(&mut response.payload);
            payload.extend_from_slice(&next.payload);
            response = next;
            response.payload = payload;
        }
        Ok(response)
    }

    async fn request_once(
        &self,
        peer: SocketAddr,
        mut packet: Packet,
    ) -> Result<Packet, RequestError> {
        if packet.get_token().is_empty() {
            packet.set_token(self.new_token());
        }
        packet.header.set_type(MessageType::Confirmable);
        packet.header.message_id = self.next_mid();
        let token = packet.get_token().to_vec();
        let (separate_tx, separate_rx) = oneshot::channel();
        self.inner
            .state
            .lock()
            .exchanges
            .insert(token.clone(), separate_tx);
        let outcome = self.send_confirmable(peer, &packet).await;
        let result = match outcome {
            Ok(ack) if ack.header.get_type() == MessageType::Reset => {
                Err(RequestError::Reset(peer))
            }
            Ok(ack) if ack.header.code != MessageClass::Empty => Ok(ack),
            Ok(_) => match tokio::time::timeout(SEPARATE_RESPONSE_WAIT, separate_rx).await {
                Ok(Ok(response)) => Ok(response),
                _ => Err(RequestError::Timeout(peer)),
            },
            Err(error) => Err(error),
        };
        self.inner.state.lock().exchanges.remove(&token);
        result
    }

    /// Sends a confirmable message until it is acknowledged or reset, with
    /// RFC 7252's randomised exponential backoff; the ACK or RST.
    async fn send_confirmable(
        &self,
        peer: SocketAddr,
        packet: &Packet,
    ) -> Result<Packet, RequestError> {
        let bytes = encode(packet).ok_or_else(|| RequestError::Encode("too large".into()))?;
        let mid = packet.header.message_id;
        let (tx, mut rx) = oneshot::channel();
        self.inner.state.lock().unacked.insert(mid, tx);
        // ACK_TIMEOUT × a random factor in [1, 1.5).
        let mut timeout = ACK_TIMEOUT.mul_f64(1.0 + (random_u64() % 500) as f64 / 1000.0);
        let mut outcome = Err(RequestError::Timeout(peer));
        for attempt in 0..=MAX_RETRANSMIT {
            if attempt > 0 {
                self.inner
                    .stats
                    .retransmissions
                    .fetch_add(1, Ordering::Relaxed);
            }
            if let Err(source) = self.inner.socket.send_to(&bytes, peer).await {
                outcome = Err(RequestError::Send { peer, source });
                break;
            }
            match tokio::time::timeout(timeout, &mut rx).await {
                Ok(Ok(reply)) => {
                    outcome = Ok(reply);
                    break;
                }
                Ok(Err(_)) => break,
                Err(_) => timeout *= 2,
            }
        }
        self.inner.state.lock().unacked.remove(&mid);
        outcome
    }

    /// Starts observing `packet`'s resource (a GET; Observe 0 is added):
    /// returns the first response; notifications go to `sink` until
    /// [`cancel_observation`](Self::cancel_observation) or `sink` says no.
    /// A first response without Observe means the device does not offer
    /// it; the observation is then already cancelled.
    pub async fn observe(
        &self,
        peer: SocketAddr,
        mut packet: Packet,
        sink: NotificationSink,
    ) -> Result<(Vec<u8>, Packet), RequestError> {
        let token = self.new_token();
        packet.set_token(token.clone());
        packet.set_observe_value(0);
        self.inner
            .state
            .lock()
            .observations
            .insert(token.clone(), sink);
        let result = self.request_once(peer, packet).await;
        let observing = matches!(&result, Ok(r) if r.get_observe_value().is_some() && !is_error(r));
        if !observing {
            self.inner.state.lock().observations.remove(&token);
        }
        result.map(|response| (token, response))
    }

    /// Forgets an observation: its next notification is answered with RST,
    /// which ends it at the device.
    pub fn cancel_observation(&self, token: &[u8]) {
        self.inner.state.lock().observations.remove(token);
    }

    pub fn new_token(&self) -> Vec<u8> {
        // Unpredictable enough against off-path spoofing (RFC 7252 §5.3.1):
        // a random start, then a counter scrambled by a fixed odd multiplier.
        let n = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes().to_vec()
    }

    fn next_mid(&self) -> u16 {
        self.inner.next_mid.fetch_add(1, Ordering::Relaxed)
    }

    fn send_packet(&self, peer: SocketAddr, packet: &Packet) {
        if let Some(bytes) = encode(packet) {
            self.send_bytes(peer, &bytes);
        }
    }

    fn send_bytes(&self, peer: SocketAddr, bytes: &[u8]) {
        // Datagrams are fire and forget; retransmission covers losses.
        if let Err(error) = self.inner.socket.try_send_to(bytes, peer) {
            tracing::debug!(%peer, %error, "CoAP send failed");
        }
    }
}

fn is_error(packet: &Packet) -> bool {
    matches!(packet.header.code, MessageClass::Response(code) if code.is_error())
}

fn empty(kind: MessageType, mid: u16) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_type(kind);
    packet.header.code = MessageClass::Empty;
    packet.header.message_id = mid;
    packet
}

/// The frame of an answer to `request`: ACK with its id for a confirmable
/// request, NON with a new id otherwise; the same token.
fn reply_to(request: &Packet, mid: u16) -> Packet {
    let mut reply = Packet::new();
    if request.header.get_type() == MessageType::Confirmable {
        reply.header.set_type(MessageType::Acknowledgement);
        reply.header.message_id = request.header.message_id;
    } else {
        reply.header.set_type(MessageType::NonConfirmable);
        reply.header.message_id = mid;
    }
    reply.set_token(request.get_token().to_vec());
    reply
}

/// Puts a handler's response into `packet`, one block of it if the payload
/// does not fit a datagram or the client asked for a block.
fn fill(packet: &mut Packet, response: Response, requested: Option<Block>) {
    packet.header.code = MessageClass::Response(response.code);
    for segment in &response.location_path {
        packet.add_option(CoapOption::LocationPath, segment.as_bytes().to_vec());
    }
    if let Some(format) = response.content_format {
        packet.add_option(
            CoapOption::ContentFormat,
            message::encode_uint(u32::from(format)),
        );
    }
    let payload = response.payload;
    let szx = requested.map_or(MAX_SZX, |b| b.szx.min(MAX_SZX));
    let size = 1usize << (szx + 4);
    if requested.is_none() && payload.len() <= size {
        packet.payload = payload;
        return;
    }
    let num = requested.map_or(0, |b| b.num);
    let start = (num as usize).saturating_mul(size);
    if start > payload.len() || (start == payload.len() && start > 0) {
        packet.header.code = MessageClass::Response(ResponseType::BadOption);
        packet.clear_option(CoapOption::ContentFormat);
        packet.payload = b"no such block".to_vec();
        return;
    }
    let end = (start + size).min(payload.len());
    let block = Block {
        num,
        more: end < payload.len(),
        szx,
    };
    packet.add_option(CoapOption::Block2, block.encode());
    if num == 0 {
        packet.add_option(
            CoapOption::Size2,
            message::encode_uint(payload.len() as u32),
        );
    }
    packet.payload = payload[start..end].to_vec();
}

fn encode(packet: &Packet) -> Option<Vec<u8>> {
    match packet.to_bytes_unlimited() {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::warn!(%error, "cannot encode a CoAP message");
            None
        }
    }
}

fn random_u64() -> u64 {
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

/// A GET for `path` (with `queries`), ready for [`Endpoint::request`].
pub fn get(path: &str, accept: Option<u16>) -> Packet {
    request_packet(RequestType::Get, path, &[], None, Vec::new(), accept)
}

pub fn request_packet(
    method: RequestType,
    path: &str,
    queries: &[String],
    content_format: Option<u16>,
    payload: Vec<u8>,
    accept: Option<u16>,
) -> Packet {
    let mut packet = Packet::new();
    packet.header.code = MessageClass::Request(method);
    message::set_uri(&mut packet, path, queries);
    if let Some(format) = content_format {
        packet.add_option(
            CoapOption::ContentFormat,
            message::encode_uint(u32::from(format)),
        );
    }
    if let Some(format) = accept {
        packet.add_option(CoapOption::Accept, message::encode_uint(u32::from(format)));
    }
    packet.payload = payload;
    packet
}
