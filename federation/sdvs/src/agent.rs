//! The agent: one UDP socket shared by every SDVS of the gateway, and one
//! loop on a thread of its own that reads it, ticks the tables four times
//! a second, says Hello every interval and keeps the SDVSs in step with
//! the hub's catalog.
//!
//! Only the controller's endpoint is listened to: S-MANAGE has no
//! authentication, so a datagram from anywhere else is dropped and
//! counted. Packets between two SDVSs of this gateway never touch the
//! socket.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fogbank_smanage::configuring::{ConfiguringTable, Due, Instruction};
use fogbank_smanage::forwarding::{DropReason, ForwardingRow, Verdict};
use fogbank_smanage::packet::{CONFIG_STATS_PER_PACKET, FWD_STATS_PER_PACKET};
use fogbank_smanage::value::to_decimal;
use fogbank_smanage::{
    Address, Body, ConfigAction, ConfigStat, ConfiguringEntry, Datagram, Features, Packet,
    PacketCounters, PacketType, Report, SensorResponse,
};
use fogbank_taas::{Hub, ThingId, ThingService, Value};
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::block::AddressBlock;
use crate::directory::{Directory, DirectoryError, device_key};
use crate::features::features;
use crate::sdvs::Sdvs;

/// How often the tables are ticked: a sample is sent within this of its
/// second.
const TICK: Duration = Duration::from_millis(250);
/// Packets delivered from one SDVS to another of this gateway in answer to
/// one event, at most; TTLs bound it too.
const MAX_LOCAL_HOPS: usize = 64;
/// Datagrams sent to the controller at once, at most, and per second after:
/// a thousand SDVSs starting together must not overflow the controller's
/// socket buffer (a few hundred small datagrams on Linux's defaults).
const BURST: f64 = 128.0;
const PER_SECOND: f64 = 4096.0;
/// While datagrams wait for the pacer, it is asked again this often.
const PACE_STEP: Duration = Duration::from_millis(5);

/// A token bucket for the datagrams to the controller.
struct Pacer {
    tokens: f64,
    last: std::time::Instant,
}

impl Pacer {
    fn new() -> Self {
        Pacer {
            tokens: BURST,
            last: std::time::Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * PER_SECOND;
        self.tokens = (self.tokens + refill).min(BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The controller, `host:port`.
    pub controller: String,
    pub listen: SocketAddr,
    pub addresses: AddressBlock,
    pub hello_interval: Duration,
    pub low_battery_percent: u8,
    pub max_instructions: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot bind the S-MANAGE socket {listen}: {source}")]
    Bind {
        listen: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the SDVS directory: {0}")]
    Store(#[from] fogbank_taas::StoreError),
    #[error("cannot start the S-MANAGE agent: {0}")]
    Thread(std::io::Error),
}

/// One SDVS as the REST API shows it.
#[derive(Debug, Clone)]
pub struct SdvsView {
    pub address: Address,
    pub device: String,
    pub location: String,
    pub battery: u8,
    pub busy: u8,
    pub services: Vec<(u8, ThingId, String, bool)>,
    pub forwarding: Vec<(ForwardingRow, u16)>,
    pub configuring: Vec<(Instruction, ConfigStat)>,
}

#[derive(Debug, Clone)]
pub struct AgentStatus {
    pub controller: String,
    pub controller_endpoint: Option<SocketAddr>,
    pub listen: SocketAddr,
    pub addresses: AddressBlock,
    pub sdvs: Vec<SdvsView>,
}

struct State {
    sdvs: BTreeMap<Address, Sdvs>,
    counters: PacketCounters,
    controller_endpoint: Option<SocketAddr>,
}

/// The running agent. Dropping it does not stop it; [`Agent::stop`] does.
pub struct Agent {
    state: Arc<Mutex<State>>,
    config: AgentConfig,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Agent {
    /// Binds the socket (so a taken port is an error here, not later) and
    /// starts the loop.
    pub fn start(hub: Arc<Hub>, config: AgentConfig) -> Result<Agent, AgentError> {
        let socket =
            std::net::UdpSocket::bind(config.listen).map_err(|source| AgentError::Bind {
                listen: config.listen,
                source,
            })?;
        let local_addr = socket.local_addr().map_err(|source| AgentError::Bind {
            listen: config.listen,
            source,
        })?;
        socket
            .set_nonblocking(true)
            .map_err(|source| AgentError::Bind {
                listen: config.listen,
                source,
            })?;
        let directory = Directory::load(hub.store())?;
        let state = Arc::new(Mutex::new(State {
            sdvs: BTreeMap::new(),
            counters: PacketCounters::default(),
            controller_endpoint: None,
        }));
        let (stop, stopped) = watch::channel(false);
        let worker = Worker {
            hub,
            config: config.clone(),
            state: state.clone(),
            directory,
            generation: None,
            full_block_logged: BTreeSet::new(),
            cut_features_logged: BTreeSet::new(),
            outbox: VecDeque::new(),
            pacer: Pacer::new(),
            ticks: 0,
        };
        let thread = fogbank_taas::thread::spawn_loop("smanage", move || async move {
            match UdpSocket::from_std(socket) {
                Ok(socket) => worker.run(socket, stopped).await,
                Err(error) => tracing::error!(%error, "cannot use the S-MANAGE socket"),
            }
        })
        .map_err(AgentError::Thread)?;
        tracing::info!(listen = %local_addr, controller = %config.controller, addresses = %config.addresses, "S-MANAGE agent started");
        Ok(Agent {
            state,
            config,
            local_addr,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn sdvs_count(&self) -> usize {
        self.state.lock().sdvs.len()
    }

    pub fn counters(&self) -> PacketCounters {
        self.state.lock().counters.clone()
    }

    pub fn status(&self) -> AgentStatus {
        let now = unix_now();
        let state = self.state.lock();
        AgentStatus {
            controller: self.config.controller.clone(),
            controller_endpoint: state.controller_endpoint,
            listen: self.local_addr,
            addresses: self.config.addresses,
            sdvs: state
                .sdvs
                .values()
                .map(|sdvs| SdvsView {
                    address: sdvs.address,
                    device: sdvs.device.clone(),
                    location: sdvs.features.location.clone(),
                    battery: sdvs.battery,
                    busy: sdvs.configuring.busy_level(),
                    services: sdvs
                        .features
                        .services
                        .iter()
                        .filter_map(|f| {
                            let thing = sdvs.services.get(&f.id)?;
                            Some((f.id, thing.clone(), f.kind.clone(), f.on))
                        })
                        .collect(),
                    forwarding: sdvs
                        .forwarding
                        .rows()
                        .iter()
                        .map(|row| (row.clone(), row.ttl_left(now)))
                        .collect(),
                    configuring: sdvs
                        .configuring
                        .rows()
                        .iter()
                        .map(|row| (row.clone(), row.stat(now)))
                        .collect(),
                })
                .collect(),
        }
    }

    /// Stops the loop and waits for it.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

/// The loop's own state; the shared part is behind `state`.
struct Worker {
    hub: Arc<Hub>,
    config: AgentConfig,
    state: Arc<Mutex<State>>,
    directory: Directory,
    /// The catalog generation the SDVSs were last built from.
    generation: Option<u64>,
    full_block_logged: BTreeSet<String>,
    cut_features_logged: BTreeSet<String>,
    /// Packets to put on the socket once the current event is handled, as
    /// fast as the pacer lets them go.
    outbox: VecDeque<Vec<u8>>,
    pacer: Pacer,
    /// Ticks since start: each SDVS says Hello at its own tick of the
    /// interval, so that a thousand of them do not all speak at once.
    ticks: u64,
}

impl Worker {
    async fn run(mut self, socket: UdpSocket, mut stopped: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut buf = vec![0u8; 2048];
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                _ = tick.tick() => {
                    if self.endpoint().is_none() {
                        self.resolve_controller().await;
                    }
                    self.on_tick(unix_now());
                    self.ticks += 1;
                }
                received = socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_datagram(&buf[..len], from),
                    Err(error) => tracing::debug!(%error, "S-MANAGE socket"),
                },
                _ = tokio::time::sleep(PACE_STEP), if !self.outbox.is_empty() => {}
            }
            self.flush(&socket).await;
        }
        tracing::info!("S-MANAGE agent stopped");
    }

    fn endpoint(&self) -> Option<SocketAddr> {
        self.state.lock().controller_endpoint
    }

    async fn resolve_controller(&mut self) {
        match tokio::net::lookup_host(&self.config.controller).await {
            Ok(mut addresses) => {
                if let Some(endpoint) = addresses.next() {
                    tracing::info!(controller = %self.config.controller, %endpoint, "S-MANAGE controller resolved");
                    self.state.lock().controller_endpoint = Some(endpoint);
                }
            }
            Err(error) => {
                tracing::debug!(controller = %self.config.controller, %error, "cannot resolve the S-MANAGE controller yet")
            }
        }
    }

    async fn flush(&mut self, socket: &UdpSocket) {
        let Some(endpoint) = self.endpoint() else {
            self.outbox.clear();
            return;
        };
        while !self.outbox.is_empty() && self.pacer.take() {
            let Some(bytes) = self.outbox.pop_front() else {
                break;
            };
            if let Err(error) = socket.send_to(&bytes, endpoint).await {
                tracing::debug!(%error, %endpoint, "cannot send to the S-MANAGE controller");
            }
        }
    }

    fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let mut state = self.state.lock();
        if state.controller_endpoint != Some(from) {
            state.counters.count_dropped("stranger");
            return;
        }
        match Datagram::decode(bytes) {
            Ok(datagram) => {
                state.counters.count_received(datagram.header.packet_type);
                drop(state);
                self.deliver(datagram, unix_now());
            }
            Err(error) => {
                tracing::debug!(%error, %from, "malformed S-MANAGE packet dropped");
                state.counters.count_malformed(&error);
            }
        }
    }

    /// A packet that arrived at this gateway, from the controller or from
    /// one of its own SDVSs, and what follows from it.
    fn deliver(&mut self, first: Datagram, now: u64) {
        let mut queue = VecDeque::from([first]);
        let mut hops = 0;
        while let Some(datagram) = queue.pop_front() {
            hops += 1;
            if hops > MAX_LOCAL_HOPS {
                self.count_drop("local_hops");
                continue;
            }
            let header = datagram.header;
            let targets: Vec<Address> = {
                let state = self.state.lock();
                let own = |a: Address| state.sdvs.contains_key(&a);
                if own(header.next_hop) {
                    vec![header.next_hop]
                } else if own(header.destination) {
                    vec![header.destination]
                } else if header.destination == Address::BROADCAST
                    || header.next_hop == Address::BROADCAST
                {
                    state.sdvs.keys().copied().collect()
                } else {
                    Vec::new()
                }
            };
            if targets.is_empty() {
                self.count_drop("not_mine");
            }
            for target in targets {
                let _span = tracing::debug_span!("sdvs", address = %target).entered();
                for packet in self.receive(target, datagram.clone(), now) {
                    self.route(packet, &mut queue);
                }
            }
        }
    }

    /// Sends a packet: to a local SDVS through `queue`, or to the
    /// controller.
    fn route(&mut self, datagram: Datagram, queue: &mut VecDeque<Datagram>) {
        let mut state = self.state.lock();
        let header = datagram.header;
        let local = [header.next_hop, header.destination]
            .into_iter()
            .find(|a| state.sdvs.contains_key(a));
        state.counters.count_sent(header.packet_type);
        match local {
            Some(_) => queue.push_back(datagram),
            None => match datagram.encode() {
                Ok(bytes) => self.outbox.push_back(bytes),
                Err(_) => state.counters.count_dropped("unwrappable"),
            },
        }
    }

    fn count_drop(&self, reason: &'static str) {
        self.state.lock().counters.count_dropped(reason);
    }

    /// A packet at one SDVS: a control packet for it is handled, anything
    /// else goes through its forwarding table.
    fn receive(&mut self, target: Address, mut datagram: Datagram, now: u64) -> Vec<Datagram> {
        let header = datagram.header;
        let for_me = header.destination == target || header.destination == Address::BROADCAST;
        if PacketType::is_control(header.packet_type) && for_me {
            return match Packet::from_datagram(datagram) {
                Ok(packet) => self.control(target, packet, now),
                Err(error) => {
                    tracing::debug!(%error, "malformed S-MANAGE control packet dropped");
                    self.state.lock().counters.count_malformed(&error);
                    Vec::new()
                }
            };
        }
        let mut state = self.state.lock();
        let Some(sdvs) = state.sdvs.get_mut(&target) else {
            return Vec::new();
        };
        if datagram.header.ttl <= 1 {
            state.counters.count_dropped("ttl");
            return Vec::new();
        }
        datagram.header.ttl -= 1;
        match sdvs.forwarding.decide(&mut datagram, now) {
            Verdict::Send(_) | Verdict::Broadcast => vec![datagram],
            Verdict::Drop(DropReason::Entry) => {
                state.counters.count_dropped("entry");
                Vec::new()
            }
            Verdict::Drop(DropReason::Loop) => {
                state.counters.count_dropped("loop");
                Vec::new()
            }
            Verdict::NoMatch => {
                let request = sdvs.packet(Address::CONTROLLER, Body::Request(datagram));
                match request.to_datagram() {
                    Ok(d) if d.len() <= fogbank_smanage::MAX_PACKET_LEN => vec![d],
                    _ => {
                        state.counters.count_dropped("unwrappable");
                        Vec::new()
                    }
                }
            }
        }
    }

    /// A control packet addressed to this SDVS.
    fn control(&mut self, target: Address, packet: Packet, now: u64) -> Vec<Datagram> {
        let mut out = Vec::new();
        let mut acted = false;
        {
            let mut guard = self.state.lock();
            let state = &mut *guard;
            let Some(sdvs) = state.sdvs.get_mut(&target) else {
                return Vec::new();
            };
            match &packet.body {
                Body::Hello(None) => {}
                Body::SetForwarding(entry) => {
                    if sdvs.forwarding.install(*entry, now).is_err() {
                        state.counters.count_dropped("table_full");
                    }
                }
                Body::SetConfiguring(entry) => {
                    match sdvs.configuring.install(*entry, now) {
                        Ok(()) => acted = true,
                        Err(_) => state.counters.count_dropped("table_full"),
                    }
                    if sdvs.configuring.is_full() {
                        let state = sdvs.configuring.busy_level();
                        out.push(sdvs.report(Report::FullTask { state }));
                    }
                }
                Body::ModifyConfiguration(entry) => match sdvs.configuring.modify(*entry, now) {
                    Ok(dues) => {
                        acted = true;
                        for due in dues {
                            if let Due::Removed {
                                request_id,
                                service,
                            } = due
                            {
                                out.push(sdvs.report(Report::ConfigurationRemove {
                                    request_id,
                                    service,
                                }));
                            }
                        }
                    }
                    Err(_) => {
                        state.counters.count_dropped("table_full");
                        let state = sdvs.configuring.busy_level();
                        out.push(sdvs.report(Report::FullTask { state }));
                    }
                },
                Body::RequestFwdStats { index } => {
                    let stats = sdvs.forwarding.stats(*index, now);
                    for part in chunks(&stats, FWD_STATS_PER_PACKET) {
                        out.push(sdvs.answer(&packet, Body::ResponseFwdStats(part.to_vec())));
                    }
                }
                Body::RequestConfigStats { request_id } => {
                    let stats = sdvs.configuring.stats(*request_id, now);
                    for part in chunks(&stats, CONFIG_STATS_PER_PACKET) {
                        out.push(sdvs.answer(&packet, Body::ResponseConfigStats(part.to_vec())));
                    }
                }
                Body::RequestFeatures => {
                    let features = sdvs.features.clone();
                    out.push(sdvs.answer(&packet, Body::ResponseFeatures(features)));
                }
                _ => state.counters.count_dropped("unexpected"),
            }
        }
        let mut datagrams = encode_all(out);
        if acted {
            // The first sample or actuation goes now, not at the next tick.
            datagrams.extend(self.run_instructions(target, now));
            self.save_table(target);
        }
        datagrams
    }

    fn on_tick(&mut self, now: u64) {
        self.refresh_devices(now);
        let targets: Vec<Address> = self.state.lock().sdvs.keys().copied().collect();
        let interval = (self.config.hello_interval.as_millis() / TICK.as_millis()).max(1) as u64;
        for target in targets {
            let hello = (self.ticks + u64::from(target.0)).is_multiple_of(interval);
            let mut out = self.run_instructions(target, now);
            out.extend(self.battery_and_hello(target, hello));
            if let Some(sdvs) = self.state.lock().sdvs.get_mut(&target) {
                sdvs.forwarding.expire(now);
            }
            self.send(out, now);
        }
    }

    /// Packets an SDVS starts: each to the controller, or delivered here.
    fn send(&mut self, datagrams: Vec<Datagram>, now: u64) {
        let mut local = VecDeque::new();
        for datagram in datagrams {
            self.route(datagram, &mut local);
        }
        for datagram in local {
            self.deliver(datagram, now);
        }
    }

    fn battery_and_hello(&mut self, target: Address, hello: bool) -> Vec<Datagram> {
        let mut out = Vec::new();
        let battery_thing = self
            .state
            .lock()
            .sdvs
            .get(&target)
            .and_then(|s| s.battery_thing.clone());
        let battery = battery_thing
            .and_then(|id| self.hub.latest(&id).flatten())
            .and_then(|reading| match reading.value {
                Value::Number(n) if n.is_finite() => Some(n.clamp(0.0, 100.0).round() as u8),
                _ => None,
            });
        let threshold = self.config.low_battery_percent;
        let mut state = self.state.lock();
        let Some(sdvs) = state.sdvs.get_mut(&target) else {
            return Vec::new();
        };
        if let Some(level) = battery {
            sdvs.battery = level;
            if level < threshold && !sdvs.low_battery_reported {
                sdvs.low_battery_reported = true;
                out.push(sdvs.report(Report::LowBatt { battery: level }));
            } else if level >= threshold {
                sdvs.low_battery_reported = false;
            }
        }
        if hello {
            out.push(sdvs.hello());
        }
        encode_all(out)
    }

    /// Ticks one SDVS's configuring table and does what is due.
    fn run_instructions(&mut self, target: Address, now: u64) -> Vec<Datagram> {
        let dues = match self.state.lock().sdvs.get_mut(&target) {
            Some(sdvs) => sdvs.configuring.tick(now),
            None => return Vec::new(),
        };
        let changed = !dues.is_empty();
        let mut out = Vec::new();
        for due in dues {
            let packet = match due {
                Due::Act(entry) => self.act(target, entry),
                Due::Completed { request_id } => self
                    .state
                    .lock()
                    .sdvs
                    .get_mut(&target)
                    .map(|s| s.report(Report::Completion { request_id })),
                Due::Removed {
                    request_id,
                    service,
                } => self.state.lock().sdvs.get_mut(&target).map(|s| {
                    s.report(Report::ConfigurationRemove {
                        request_id,
                        service,
                    })
                }),
            };
            out.extend(packet);
        }
        if changed {
            self.save_table(target);
        }
        encode_all(out)
    }

    /// Writes an SDVS's configuring table to the store.
    fn save_table(&self, target: Address) {
        let saved = self
            .state
            .lock()
            .sdvs
            .get(&target)
            .map(|s| (s.device.clone(), s.configuring.to_bytes()));
        if let Some((device, bytes)) = saved
            && let Err(error) = Directory::save_table(self.hub.store(), &device, &bytes)
        {
            tracing::error!(%error, %device, "cannot keep an SDVS's instructions");
        }
    }

    /// One sample or actuation; a Response for a sample.
    fn act(&mut self, target: Address, entry: ConfiguringEntry) -> Option<Packet> {
        let thing = self
            .state
            .lock()
            .sdvs
            .get(&target)
            .and_then(|s| s.thing(entry.service).cloned());
        let Some(thing) = thing else {
            self.count_drop("unknown_service");
            return None;
        };
        let value = match entry.action {
            ConfigAction::Read => {
                let reading = self.hub.latest(&thing).flatten()?;
                let (value, exponent) = match reading.value {
                    Value::Number(n) => to_decimal(n)?,
                    Value::Bool(b) => (i32::from(b), 0),
                    _ => return None,
                };
                let time = u32::try_from(reading.time.0 / 1_000_000).unwrap_or(u32::MAX);
                let mut state = self.state.lock();
                let sdvs = state.sdvs.get_mut(&target)?;
                sdvs.configuring.record(entry.request_id, entry.service);
                let response = SensorResponse {
                    request_id: entry.request_id,
                    service: entry.service,
                    time,
                    value,
                    exponent,
                };
                return Some(sdvs.packet(entry.destination, Body::Response(response)));
            }
            ConfigAction::SwitchOn => Value::Bool(true),
            ConfigAction::SwitchOff => Value::Bool(false),
            ConfigAction::Set => Value::Number(f64::from(entry.value)),
        };
        match self.hub.actuate(&thing, value) {
            Ok(_) => {
                if let Some(sdvs) = self.state.lock().sdvs.get_mut(&target) {
                    sdvs.configuring.record(entry.request_id, entry.service);
                }
            }
            Err(error) => {
                tracing::warn!(%thing, action = entry.action.name(), %error, "S-MANAGE actuation refused");
                self.count_drop("actuation_refused");
            }
        }
        None
    }

    /// Keeps one SDVS per device of this gateway, with its services and
    /// features, and reports features that changed.
    fn refresh_devices(&mut self, now: u64) {
        let generation = self.hub.catalog_generation();
        if self.generation == Some(generation) {
            return;
        }
        self.generation = Some(generation);
        let gateway = self.hub.gateway().to_owned();
        let mut devices: BTreeMap<String, Vec<ThingService>> = BTreeMap::new();
        for thing in self.hub.select_things(|t| t.gateway == gateway) {
            devices
                .entry(device_key(&thing.id))
                .or_default()
                .push(thing);
        }
        let mut reports = Vec::new();
        let mut present = BTreeSet::new();
        for (device, mut things) in devices {
            things.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
            let store = self.hub.store();
            let address = match self
                .directory
                .allocate(store, self.config.addresses, &device)
            {
                Ok(address) => address,
                Err(error) => {
                    if self.full_block_logged.insert(device.clone()) {
                        tracing::error!(%error, "device has no S-MANAGE address");
                    }
                    self.count_drop("address_block_full");
                    continue;
                }
            };
            let mut services = BTreeMap::new();
            for thing in &things {
                match self.directory.service_id(store, &device, &thing.id) {
                    Ok(id) => {
                        services.insert(id, thing);
                    }
                    Err(DirectoryError::ServicesFull { .. }) => {}
                    Err(error) => tracing::error!(%error, "cannot number a sensor service"),
                }
            }
            let location = things
                .first()
                .map(|t| t.location.as_str().to_owned())
                .unwrap_or_default();
            let (features, cut) = features(&location, services.iter().map(|(id, t)| (*id, *t)));
            if cut && self.cut_features_logged.insert(device.clone()) {
                tracing::warn!(%device, listed = features.services.len(), "not every sensor service fits ReportFeatures");
            }
            present.insert(address);
            // Instructions the SDVS held before a restart run on.
            let stored = self.directory.take_table(&device);
            let mut state = self.state.lock();
            let sdvs = state.sdvs.entry(address).or_insert_with(|| {
                let mut sdvs = Sdvs::new(address, device.clone(), self.config.max_instructions);
                if let Some(table) = stored.as_deref().and_then(|bytes| {
                    ConfiguringTable::from_bytes(self.config.max_instructions, bytes)
                }) {
                    sdvs.configuring = table;
                }
                sdvs
            });
            sdvs.services = services.iter().map(|(id, t)| (*id, t.id.clone())).collect();
            sdvs.battery_thing = things
                .iter()
                .find(|t| t.semantic_type == "battery")
                .map(|t| t.id.clone());
            if sdvs.features != features || sdvs.features == Features::default() {
                sdvs.features = features.clone();
                reports.push(sdvs.report(Report::Features(features)));
            }
        }
        self.state
            .lock()
            .sdvs
            .retain(|address, _| present.contains(address));
        self.send(encode_all(reports), now);
    }
}

fn chunks<T>(items: &[T], per_packet: usize) -> Vec<&[T]> {
    if items.is_empty() {
        vec![&[]]
    } else {
        items.chunks(per_packet).collect()
    }
}

fn encode_all(packets: Vec<Packet>) -> Vec<Datagram> {
    packets
        .into_iter()
        .filter_map(|packet| match packet.to_datagram() {
            Ok(datagram) => Some(datagram),
            Err(error) => {
                tracing::warn!(%error, "an S-MANAGE packet could not be encoded");
                None
            }
        })
        .collect()
}
