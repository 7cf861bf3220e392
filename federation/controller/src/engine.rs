//! The controller's engine: one UDP socket for every gateway, a loop on a
//! thread of its own (packets in, a tick four times a second: SDVSs that
//! went silent, pending assignments that became free, Hellos and stats
//! polls every interval), and the state the REST side reads and changes.
//!
//! Every change to a request or to what is known of an SDVS is written to
//! the store before it is acted on, so a restarted controller carries on
//! with the requests it had; the SDVSs keep running their instructions
//! meanwhile.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fogbank_smanage::{
    Address, Body, ConfiguringEntry, Datagram, FieldName, ForwardAction, ForwardingEntry, Operator,
    Packet, PacketCounters, Report,
};
use fogbank_taas::Store;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};

use crate::registry::{Registry, SdvsRecord};
use crate::requests::{
    Assignment, AssignmentState, Outcome, Request, RequestSpec, RequestState, Unable, availability,
    plan,
};

const SPACE: &str = "controller";
const TICK: Duration = Duration::from_millis(250);
/// Every packet the controller starts leaves with this TTL.
const INITIAL_TTL: u8 = 16;
/// A forwarding entry installed for a packet-in lives this long.
const ROUTE_TTL_S: u16 = 60;

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub listen: SocketAddr,
    /// How often the controller says Hello to each SDVS and polls its stats.
    pub hello_interval: Duration,
    /// An instruction is kept this long after its period, so its stats can
    /// still be read.
    pub instruction_margin_s: u16,
    /// The gateways whose datagrams are taken (an address, or an address
    /// and port); empty takes every one. S-MANAGE carries no credentials,
    /// so on a shared network this is what keeps strangers out.
    pub gateways: Vec<GatewayFilter>,
}

/// One allowed gateway: any port of an address, or one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayFilter {
    Host(std::net::IpAddr),
    Endpoint(SocketAddr),
}

impl GatewayFilter {
    pub fn admits(&self, from: SocketAddr) -> bool {
        match self {
            GatewayFilter::Host(ip) => from.ip() == *ip,
            GatewayFilter::Endpoint(endpoint) => from == *endpoint,
        }
    }
}

impl std::str::FromStr for GatewayFilter {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        raw.parse()
            .map(GatewayFilter::Endpoint)
            .or_else(|_| raw.parse().map(GatewayFilter::Host))
            .map_err(|_| {
                format!("{raw:?} is neither an address (10.0.0.5) nor an endpoint (10.0.0.5:7602)")
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot bind the S-MANAGE socket {listen}: {source}")]
    Bind {
        listen: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] fogbank_taas::StoreError),
    #[error("cannot start the controller: {0}")]
    Thread(std::io::Error),
}

/// Something an application may want to hear of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `sdvs_up`, `sdvs_down`, `low_battery`, `full_task`, `completion`,
    /// `removal`, `request`.
    pub kind: String,
    pub sdvs: Option<u16>,
    pub request: Option<u16>,
    pub detail: String,
    /// Unix milliseconds.
    pub time_ms: u64,
}

/// One sample a read request collected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataPoint {
    pub request: u16,
    pub sdvs: u16,
    pub service: u8,
    /// Unix seconds.
    pub time: u32,
    pub value: i32,
    pub exponent: i8,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct State {
    registry: Registry,
    requests: BTreeMap<u16, Request>,
    next_id: u16,
    message_id: u8,
    counters: PacketCounters,
    /// Packets relayed between gateways.
    relayed: u64,
}

struct Shared {
    state: Mutex<State>,
    store: Arc<Store>,
    /// Datagrams for the loop to send: any thread may queue, and a burst
    /// waits for the socket instead of failing.
    outbox: mpsc::UnboundedSender<(Vec<u8>, SocketAddr)>,
    config: ControllerConfig,
    events: broadcast::Sender<Event>,
    data: broadcast::Sender<DataPoint>,
}

/// The running controller.
pub struct Controller {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What `submit` tells the application.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub request: Request,
    pub waiting_s: Option<u64>,
}

impl Controller {
    /// Loads what the store remembers, binds the socket and starts the loop.
    pub fn start(
        store: Arc<Store>,
        config: ControllerConfig,
    ) -> Result<Controller, ControllerError> {
        let bind_error = |source| ControllerError::Bind {
            listen: config.listen,
            source,
        };
        let socket = StdUdpSocket::bind(config.listen).map_err(bind_error)?;
        let local_addr = socket.local_addr().map_err(bind_error)?;
        socket.set_nonblocking(true).map_err(bind_error)?;
        let (outbox, outgoing) = mpsc::unbounded_channel();
        let now = now_ms();
        let mut state = State {
            registry: Registry::default(),
            requests: BTreeMap::new(),
            next_id: 1,
            message_id: 0,
            counters: PacketCounters::default(),
            relayed: 0,
        };
        // The registry, the requests and the id counter; not the readings,
        // which are read per request when asked for.
        for (_, value) in store.state(SPACE, "sdvs/")? {
            if let Ok(mut record) = serde_json::from_slice::<SdvsRecord>(&value) {
                // Heard of again within three intervals, or down.
                record.last_hello_ms = now;
                state.registry.sdvs.insert(record.address, record);
            }
        }
        for (_, value) in store.state(SPACE, "request/")? {
            if let Ok(request) = serde_json::from_slice::<Request>(&value) {
                state.requests.insert(request.id, request);
            }
        }
        if let Some((_, value)) = store.state(SPACE, "next_id")?.into_iter().next()
            && let [hi, lo] = value[..]
        {
            state.next_id = u16::from_be_bytes([hi, lo]).max(1);
        }
        tracing::info!(
            sdvs = state.registry.sdvs.len(),
            requests = state.requests.len(),
            "controller state loaded"
        );
        let (events, _) = broadcast::channel(1024);
        let (data, _) = broadcast::channel(8192);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            store,
            outbox,
            config,
            events,
            data,
        });
        let (stop, stopped) = watch::channel(false);
        let loop_shared = shared.clone();
        let thread = fogbank_taas::thread::spawn_loop("controller", move || async move {
            match tokio::net::UdpSocket::from_std(socket) {
                Ok(socket) => run(loop_shared, socket, outgoing, stopped).await,
                Err(error) => tracing::error!(%error, "cannot use the S-MANAGE socket"),
            }
        })
        .map_err(ControllerError::Thread)?;
        tracing::info!(listen = %local_addr, "SD-IoT controller listening for S-MANAGE");
        Ok(Controller {
            shared,
            local_addr,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }

    pub fn counters(&self) -> PacketCounters {
        self.shared.state.lock().counters.clone()
    }

    /// Packets relayed between gateways.
    pub fn relayed(&self) -> u64 {
        self.shared.state.lock().relayed
    }

    pub fn sdvs(&self) -> Vec<SdvsRecord> {
        self.shared
            .state
            .lock()
            .registry
            .sdvs
            .values()
            .cloned()
            .collect()
    }

    pub fn sdvs_one(&self, address: u16) -> Option<SdvsRecord> {
        self.shared.state.lock().registry.get(address).cloned()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared
            .state
            .lock()
            .requests
            .values()
            .cloned()
            .collect()
    }

    pub fn request(&self, id: u16) -> Option<Request> {
        self.shared.state.lock().requests.get(&id).cloned()
    }

    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    pub fn data(&self) -> broadcast::Receiver<DataPoint> {
        self.shared.data.subscribe()
    }

    /// The data a request collected, oldest first.
    pub fn readings(&self, id: u16) -> Result<Vec<DataPoint>, fogbank_taas::StoreError> {
        Ok(self
            .shared
            .store
            .state(SPACE, &format!("reading/{id:05}/"))?
            .into_iter()
            .filter_map(|(_, value)| serde_json::from_slice(&value).ok())
            .collect())
    }

    /// Places and, as far as it can, programs a new request.
    pub fn submit(&self, spec: RequestSpec) -> Result<Submitted, Unable> {
        let now = now_ms() / 1000;
        let mut state = self.shared.state.lock();
        let plan = plan(&state.registry, &state.requests, &spec, now)?;
        let id = allocate_id(&mut state);
        let outcome = plan.outcome();
        let mut request = Request {
            id,
            spec,
            state: RequestState::Queued,
            outcome,
            created: now,
            finished: None,
            assignments: plan.assignments,
            missing: plan.missing,
            reason: None,
            readings: 0,
        };
        if outcome == Outcome::Partial && !request.spec.accept_partial {
            request.state = RequestState::Offered;
        } else {
            start_request(&self.shared, &mut state, &mut request, now);
        }
        let _ = self
            .shared
            .store
            .put_state(SPACE, "next_id", &state.next_id.to_be_bytes());
        persist(&self.shared, &request);
        state.requests.insert(id, request.clone());
        drop(state);
        self.shared.event(
            "request",
            None,
            Some(id),
            format!("{:?}", request.state).to_lowercase(),
        );
        Ok(Submitted {
            request,
            waiting_s: plan.waiting_s,
        })
    }

    /// Takes up an offered request.
    pub fn accept(&self, id: u16) -> Result<Request, RequestError> {
        let now = now_ms() / 1000;
        let mut state = self.shared.state.lock();
        let mut request = copy_of(&state, id)?;
        if request.state != RequestState::Offered {
            return Err(RequestError::NotOffered(id, request.state));
        }
        start_request(&self.shared, &mut state, &mut request, now);
        persist(&self.shared, &request);
        state.requests.insert(id, request.clone());
        Ok(request)
    }

    /// Cancels a request on its SDVSs.
    pub fn cancel(&self, id: u16) -> Result<Request, RequestError> {
        let now = now_ms() / 1000;
        let mut state = self.shared.state.lock();
        let mut request = copy_of(&state, id)?;
        if request.state.is_over() {
            return Err(RequestError::Over(id, request.state));
        }
        for assignment in &mut request.assignments {
            if assignment.state == AssignmentState::Programmed {
                let entry = configuring_entry(&request.spec, id, assignment.service, 0);
                send_to_sdvs(
                    &self.shared,
                    &mut state,
                    assignment.sdvs,
                    Body::ModifyConfiguration(entry),
                );
            }
            if matches!(
                assignment.state,
                AssignmentState::Programmed | AssignmentState::Pending
            ) {
                assignment.state = AssignmentState::Cancelled;
            }
        }
        request.state = RequestState::Cancelled;
        request.finished = Some(now);
        persist(&self.shared, &request);
        state.requests.insert(id, request.clone());
        drop(state);
        self.shared
            .event("request", None, Some(id), "cancelled".into());
        Ok(request)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no request {0}")]
    Unknown(u16),
    #[error("request {0} is {1:?}, not offered")]
    NotOffered(u16, RequestState),
    #[error("request {0} is already {1:?}")]
    Over(u16, RequestState),
}

impl Shared {
    fn event(&self, kind: &str, sdvs: Option<u16>, request: Option<u16>, detail: String) {
        let _ = self.events.send(Event {
            kind: kind.into(),
            sdvs,
            request,
            detail,
            time_ms: now_ms(),
        });
    }
}

fn copy_of(state: &State, id: u16) -> Result<Request, RequestError> {
    state
        .requests
        .get(&id)
        .cloned()
        .ok_or(RequestError::Unknown(id))
}

fn allocate_id(state: &mut State) -> u16 {
    loop {
        let id = state.next_id;
        state.next_id = state.next_id.checked_add(1).unwrap_or(1);
        let taken = state.requests.get(&id).is_some_and(|r| !r.state.is_over());
        if !taken {
            state.requests.remove(&id);
            return id;
        }
    }
}

fn persist(shared: &Shared, request: &Request) {
    match serde_json::to_vec(request) {
        Ok(bytes) => {
            if let Err(error) =
                shared
                    .store
                    .put_state(SPACE, &format!("request/{:05}", request.id), &bytes)
            {
                tracing::error!(%error, request = request.id, "cannot store a request");
            }
        }
        Err(error) => tracing::error!(%error, "cannot encode a request"),
    }
}

fn persist_sdvs(shared: &Shared, record: &SdvsRecord) {
    if let Ok(bytes) = serde_json::to_vec(record) {
        let key = format!("sdvs/{:04x}", record.address);
        if let Err(error) = shared.store.put_state(SPACE, &key, &bytes) {
            tracing::error!(%error, "cannot store an SDVS");
        }
    }
}

fn configuring_entry(spec: &RequestSpec, id: u16, service: u8, ttl: u16) -> ConfiguringEntry {
    ConfiguringEntry {
        request_id: id,
        service,
        frequency: spec.frequency_s,
        period: spec.period_s,
        destination: Address(spec.destination.unwrap_or(0)),
        action: spec.action.wire(),
        value: spec.value.unwrap_or(0),
        ttl,
    }
}

fn send_to_sdvs(shared: &Shared, state: &mut State, sdvs: u16, body: Body) {
    let Some(endpoint) = state.registry.get(sdvs).map(|s| s.endpoint) else {
        return;
    };
    let message_id = state.message_id;
    state.message_id = state.message_id.wrapping_add(1);
    let packet = Packet {
        source: Address::CONTROLLER,
        destination: Address(sdvs),
        next_hop: Address(sdvs),
        ttl: INITIAL_TTL,
        message_id,
        body,
    };
    send(shared, state, &packet, endpoint);
}

fn send(shared: &Shared, state: &mut State, packet: &Packet, endpoint: SocketAddr) {
    match packet.encode() {
        Ok(bytes) => {
            state.counters.count_sent(packet.body.packet_type());
            let _ = shared.outbox.send((bytes, endpoint));
        }
        Err(error) => tracing::warn!(%error, "an S-MANAGE packet could not be encoded"),
    }
}

/// Programs what is free of a request now; the rest waits.
fn start_request(shared: &Shared, state: &mut State, request: &mut Request, now: u64) {
    let decisions: Vec<Option<Result<(), &'static str>>> = request
        .assignments
        .iter()
        .map(|a| {
            (a.state == AssignmentState::Pending).then(|| {
                availability(
                    &state.registry,
                    &state.requests,
                    request.spec.action,
                    a.sdvs,
                    a.service,
                    request.id,
                )
                .map_err(|(why, _)| why)
            })
        })
        .collect();
    let ttl = request
        .spec
        .period_s
        .saturating_add(shared.config.instruction_margin_s);
    for (assignment, decision) in request.assignments.iter_mut().zip(decisions) {
        match decision {
            None => {}
            Some(Ok(())) => {
                let entry = configuring_entry(&request.spec, request.id, assignment.service, ttl);
                send_to_sdvs(shared, state, assignment.sdvs, Body::SetConfiguring(entry));
                assignment.state = AssignmentState::Programmed;
                assignment.programmed_at = Some(now);
                assignment.waiting_for = None;
            }
            Some(Err(why)) => assignment.waiting_for = Some(why.to_owned()),
        }
    }
    let programmed = request
        .assignments
        .iter()
        .any(|a| a.state != AssignmentState::Pending);
    request.state = if programmed {
        RequestState::Running
    } else {
        RequestState::Queued
    };
}

async fn run(
    shared: Arc<Shared>,
    socket: tokio::net::UdpSocket,
    mut outgoing: mpsc::UnboundedReceiver<(Vec<u8>, SocketAddr)>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ticks: u64 = 0;
    let mut buf = vec![0u8; 2048];
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = tick.tick() => {
                on_tick(&shared, ticks);
                ticks += 1;
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, from)) => on_datagram(&shared, &buf[..len], from),
                Err(error) => tracing::debug!(%error, "S-MANAGE socket"),
            },
            Some((bytes, endpoint)) = outgoing.recv() => {
                if let Err(error) = socket.send_to(&bytes, endpoint).await {
                    tracing::debug!(%error, %endpoint, "S-MANAGE send failed");
                    shared.state.lock().counters.count_dropped("send_failed");
                }
            }
        }
    }
    tracing::info!("controller stopped");
}

fn on_datagram(shared: &Shared, bytes: &[u8], from: SocketAddr) {
    let mut guard = shared.state.lock();
    let state = &mut *guard;
    let gateways = &shared.config.gateways;
    if !gateways.is_empty() && !gateways.iter().any(|g| g.admits(from)) {
        state.counters.count_dropped("stranger");
        return;
    }
    let datagram = match Datagram::decode(bytes) {
        Ok(datagram) => datagram,
        Err(error) => {
            tracing::debug!(%error, %from, "malformed S-MANAGE packet dropped");
            state.counters.count_malformed(&error);
            return;
        }
    };
    state.counters.count_received(datagram.header.packet_type);
    if datagram.header.destination != Address::CONTROLLER {
        relay(shared, state, datagram);
        return;
    }
    let packet = match Packet::from_datagram(datagram) {
        Ok(packet) => packet,
        Err(error) => {
            tracing::debug!(%error, %from, "malformed S-MANAGE packet dropped");
            state.counters.count_malformed(&error);
            return;
        }
    };
    let sdvs = packet.source.0;
    let _span = tracing::debug_span!("sdvs", address = %packet.source).entered();
    let now = now_ms();
    let interval_ms = shared.config.hello_interval.as_millis() as u64;
    let known = state.registry.sdvs.contains_key(&sdvs);
    if !packet.source.is_sdvs() {
        state.counters.count_dropped("bad_source");
        return;
    }
    // An SDVS is where it was first heard from. Only its own Hello moves
    // it (a packet forwarded by another gateway's SDVS keeps its source),
    // and only once it is down: a forged Hello cannot take a live SDVS.
    let record = state
        .registry
        .sdvs
        .entry(sdvs)
        .or_insert_with(|| SdvsRecord::new(sdvs, from, now, interval_ms));
    let is_hello = matches!(packet.body, Body::Hello(Some(_)));
    if is_hello && record.endpoint != from && record.up {
        state.counters.count_dropped("endpoint_pinned");
        return;
    }
    let moved = is_hello && record.endpoint != from;
    if moved {
        record.endpoint = from;
    }
    let came_back = !record.up && is_hello;
    record.up = true;
    if came_back || moved || !known {
        let record = record.clone();
        persist_sdvs(shared, &record);
    }
    if came_back || !known {
        drop(guard);
        shared.event("sdvs_up", Some(sdvs), None, format!("at {from}"));
        guard = shared.state.lock();
    }
    let state = &mut *guard;
    match packet.body {
        Body::Hello(Some(status)) => {
            if let Some(record) = state.registry.sdvs.get_mut(&sdvs) {
                record.hello(now, status.state, status.battery, interval_ms);
            }
            if !known
                || state
                    .registry
                    .get(sdvs)
                    .is_some_and(|r| r.services.is_empty())
            {
                send_to_sdvs(shared, state, sdvs, Body::RequestFeatures);
            }
        }
        Body::Report(Report::Features(features)) | Body::ResponseFeatures(features) => {
            if let Some(record) = state.registry.sdvs.get_mut(&sdvs) {
                record.set_features(&features);
                let record = record.clone();
                persist_sdvs(shared, &record);
            }
        }
        Body::Report(Report::LowBatt { battery }) => {
            if let Some(record) = state.registry.sdvs.get_mut(&sdvs) {
                record.low_battery = true;
                record.battery = battery;
            }
            drop(guard);
            shared.event("low_battery", Some(sdvs), None, format!("{battery}%"));
        }
        Body::Report(Report::FullTask { state: busy }) => {
            if let Some(record) = state.registry.sdvs.get_mut(&sdvs) {
                record.full = true;
                record.busy = busy;
            }
            drop(guard);
            shared.event("full_task", Some(sdvs), None, format!("busy {busy}"));
        }
        Body::Report(Report::Completion { request_id }) => {
            if let Some(request) = state.requests.get_mut(&request_id) {
                for a in request.assignments.iter_mut().filter(|a| a.sdvs == sdvs) {
                    if a.state == AssignmentState::Programmed {
                        a.state = AssignmentState::Completed;
                        a.executed = true;
                    }
                }
            }
            settle(shared, state, request_id, now / 1000);
            drop(guard);
            shared.event("completion", Some(sdvs), Some(request_id), String::new());
        }
        Body::Report(Report::ConfigurationRemove {
            request_id,
            service,
        }) => {
            if let Some(request) = state.requests.get_mut(&request_id) {
                for a in request
                    .assignments
                    .iter_mut()
                    .filter(|a| a.sdvs == sdvs && a.service == service)
                {
                    if a.state == AssignmentState::Programmed {
                        a.state = if a.executed {
                            AssignmentState::Completed
                        } else {
                            AssignmentState::Lost
                        };
                    }
                }
            }
            settle(shared, state, request_id, now / 1000);
            drop(guard);
            shared.event(
                "removal",
                Some(sdvs),
                Some(request_id),
                format!("service {service}"),
            );
        }
        Body::Response(response) => {
            let Some(request) = state.requests.get_mut(&response.request_id) else {
                state.counters.count_dropped("unknown_request");
                return;
            };
            let point = DataPoint {
                request: response.request_id,
                sdvs,
                service: response.service,
                time: response.time,
                value: response.value,
                exponent: response.exponent,
            };
            let key = format!("reading/{:05}/{:012}", request.id, request.readings);
            request.readings += 1;
            if let Ok(bytes) = serde_json::to_vec(&point) {
                let _ = shared.store.put_state(SPACE, &key, &bytes);
            }
            let _ = shared.data.send(point);
        }
        Body::ResponseConfigStats(stats) => {
            for stat in &stats {
                if let Some(request) = state.requests.get_mut(&stat.request_id) {
                    for a in request
                        .assignments
                        .iter_mut()
                        .filter(|a| a.sdvs == sdvs && a.service == stat.service)
                    {
                        a.counter = stat.counter;
                        a.executed = stat.executed;
                        a.ttl_left = stat.ttl_left;
                    }
                }
            }
            if let Some(record) = state.registry.sdvs.get_mut(&sdvs) {
                record.configuring = stats;
            }
        }
        Body::ResponseFwdStats(stats) => {
            if let Some(record) = state.registry.sdvs.get_mut(&sdvs) {
                record.forwarding = stats;
            }
        }
        Body::Request(inner) => packet_in(shared, state, sdvs, inner),
        _ => state.counters.count_dropped("unexpected"),
    }
}

/// A packet an SDVS could not place: a route to its destination if one is
/// known, installed at that SDVS, and the packet sent on.
fn packet_in(shared: &Shared, state: &mut State, sdvs: u16, inner: Datagram) {
    let destination = inner.header.destination.0;
    let known = state.registry.get(destination).is_some_and(|r| r.up);
    if !known || destination == sdvs {
        state.counters.count_dropped("no_route");
        return;
    }
    let entry = ForwardingEntry {
        window: 0,
        field: FieldName::Destination,
        operator: Operator::Equal,
        value: destination,
        action: ForwardAction::Unicast,
        value1: destination,
        value2: 0,
        ttl: ROUTE_TTL_S,
    };
    send_to_sdvs(shared, state, sdvs, Body::SetForwarding(entry));
    relay(shared, state, inner);
}

/// Sends a packet on towards its next hop or destination.
fn relay(shared: &Shared, state: &mut State, mut datagram: Datagram) {
    let header = datagram.header;
    if header.ttl <= 1 {
        state.counters.count_dropped("ttl");
        return;
    }
    datagram.header.ttl -= 1;
    let by_hop = state
        .registry
        .get(header.next_hop.0)
        .filter(|_| header.next_hop.is_sdvs());
    let target = by_hop
        .or_else(|| state.registry.get(header.destination.0))
        .map(|r| (r.address, r.endpoint));
    let endpoints = match target {
        Some((address, endpoint)) => {
            datagram.header.next_hop = Address(address);
            vec![endpoint]
        }
        None if header.destination == Address::BROADCAST
            || header.next_hop == Address::BROADCAST =>
        {
            state.registry.endpoints()
        }
        None => {
            state.counters.count_dropped("no_route");
            return;
        }
    };
    if let Ok(bytes) = datagram.encode() {
        for endpoint in endpoints {
            state.relayed += 1;
            let _ = shared.outbox.send((bytes.clone(), endpoint));
        }
    }
}

/// A request whose every assignment has ended is over.
fn settle(shared: &Shared, state: &mut State, id: u16, now: u64) {
    let Some(request) = state.requests.get_mut(&id) else {
        return;
    };
    if !request.state.is_active() {
        persist(shared, request);
        return;
    }
    let open = request.assignments.iter().any(|a| {
        matches!(
            a.state,
            AssignmentState::Pending | AssignmentState::Programmed
        )
    });
    if !open {
        let any_done = request
            .assignments
            .iter()
            .any(|a| a.state == AssignmentState::Completed);
        if any_done {
            request.state = RequestState::Completed;
        } else {
            request.state = RequestState::Failed;
            request
                .reason
                .get_or_insert_with(|| "every assignment was lost".into());
        }
        request.finished = Some(now);
        let detail = format!("{:?}", request.state).to_lowercase();
        persist(shared, request);
        shared.event("request", None, Some(id), detail);
        return;
    }
    persist(shared, request);
}

fn on_tick(shared: &Shared, ticks: u64) {
    let now = now_ms();
    let mut guard = shared.state.lock();
    let state = &mut *guard;
    // SDVSs gone silent.
    let silent: Vec<u16> = state
        .registry
        .sdvs
        .values()
        .filter(|s| s.up && s.silent_too_long(now))
        .map(|s| s.address)
        .collect();
    for address in &silent {
        if let Some(record) = state.registry.sdvs.get_mut(address) {
            record.up = false;
            let record = record.clone();
            persist_sdvs(shared, &record);
        }
        shared.event(
            "sdvs_down",
            Some(*address),
            None,
            "silent for three Hello intervals".into(),
        );
    }
    if !silent.is_empty() {
        replan(shared, state, &silent, now / 1000);
    }
    // Pending assignments whose service came free.
    let waiting: Vec<u16> = state
        .requests
        .values()
        .filter(|r| r.state.is_active())
        .filter(|r| {
            r.assignments
                .iter()
                .any(|a| a.state == AssignmentState::Pending)
        })
        .map(|r| r.id)
        .collect();
    for id in waiting {
        if let Some(mut request) = state.requests.get(&id).cloned() {
            let before = request.clone();
            start_request(shared, state, &mut request, now / 1000);
            if request != before {
                persist(shared, &request);
                state.requests.insert(id, request);
            }
        }
    }
    // Each SDVS has its tick of the interval: a thousand of them are not
    // all spoken to at once.
    let interval = (shared.config.hello_interval.as_millis() / TICK.as_millis()).max(1) as u64;
    let due: Vec<u16> = state
        .registry
        .sdvs
        .values()
        .filter(|s| s.up && (ticks + u64::from(s.address)).is_multiple_of(interval))
        .map(|s| s.address)
        .collect();
    let busy: std::collections::BTreeSet<u16> = state
        .requests
        .values()
        .filter(|r| r.state.is_active())
        .flat_map(|r| r.assignments.iter().map(|a| a.sdvs))
        .collect();
    for address in due {
        send_to_sdvs(shared, state, address, Body::Hello(None));
        if busy.contains(&address) {
            send_to_sdvs(
                shared,
                state,
                address,
                Body::RequestConfigStats { request_id: 0xFFFF },
            );
            send_to_sdvs(
                shared,
                state,
                address,
                Body::RequestFwdStats { index: 0xFF },
            );
        }
    }
}

/// The assignments on SDVSs that went down move to other matching
/// services where there are any; a request left with nothing fails.
fn replan(shared: &Shared, state: &mut State, down: &[u16], now: u64) {
    let ids: Vec<u16> = state
        .requests
        .values()
        .filter(|r| r.state.is_active())
        .filter(|r| r.assignments.iter().any(|a| down.contains(&a.sdvs)))
        .map(|r| r.id)
        .collect();
    for id in ids {
        let Some(mut request) = state.requests.get(&id).cloned() else {
            continue;
        };
        let mut lost = 0;
        for a in request.assignments.iter_mut() {
            if down.contains(&a.sdvs)
                && matches!(
                    a.state,
                    AssignmentState::Programmed | AssignmentState::Pending
                )
            {
                a.state = AssignmentState::Lost;
                lost += 1;
            }
        }
        // Replacements: matching services this request does not use yet.
        if let Ok(candidates) = plan(&state.registry, &state.requests, &request.spec, now) {
            for candidate in candidates.assignments {
                if lost == 0 {
                    break;
                }
                let used = request
                    .assignments
                    .iter()
                    .any(|a| a.sdvs == candidate.sdvs && a.service == candidate.service);
                if !used {
                    request.assignments.push(Assignment {
                        waiting_for: None,
                        ..candidate
                    });
                    lost -= 1;
                }
            }
        }
        start_request(shared, state, &mut request, now);
        let open = request.assignments.iter().any(|a| {
            matches!(
                a.state,
                AssignmentState::Pending | AssignmentState::Programmed
            )
        });
        if !open {
            request.reason = Some(format!(
                "SDVS {} went down and no other matching service is free",
                down.iter()
                    .map(|a| format!("0x{a:04x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        state.requests.insert(id, request);
        settle(shared, state, id, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_filters_take_an_address_or_an_endpoint() {
        let host: GatewayFilter = "10.0.0.5".parse().unwrap();
        let endpoint: GatewayFilter = "10.0.0.5:7602".parse().unwrap();
        assert!(host.admits("10.0.0.5:9999".parse().unwrap()));
        assert!(endpoint.admits("10.0.0.5:7602".parse().unwrap()));
        assert!(!endpoint.admits("10.0.0.5:7603".parse().unwrap()));
        assert!(!host.admits("10.0.0.6:7602".parse().unwrap()));
        assert!("gateway.local".parse::<GatewayFilter>().is_err());
    }
}
