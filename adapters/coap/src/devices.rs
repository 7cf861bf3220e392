//! The device side: the resource directory at `/rd` and the watchers that
//! observe (or poll) every resource of every registered or configured
//! device, storing what they hear.
//!
//! A registration lives here, not in the adapter actor, because the
//! endpoint outlives adapter restarts; the actor hands in its current
//! [`AdapterContext`] when it starts. Each followed resource is one task on
//! the endpoint's runtime; a registration's tasks end with it (update with
//! new links, removal, expiry).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use fogbank_adapter::AdapterContext;
use fogbank_taas::id::sanitize_segment;
use fogbank_taas::untrusted::Excerpt;
use fogbank_taas::{ActuationError, ThingId, ThingReading, ThingService, Timestamp, Value};
use parking_lot::{Mutex, RwLock};
use tokio::task::JoinHandle;

use crate::rd::{self, DeviceResource};
use fogbank_coap_protocol::device_info;
use fogbank_coap_protocol::endpoint::{self, Endpoint, Handler, Reply, RequestError, Taken};
use fogbank_coap_protocol::message::{self, Request, Response, format};
use fogbank_coap_protocol::payload;

/// A notification later than Max-Age plus this means the observation is
/// gone (the device restarted, a NAT forgot us): observe again.
const OBSERVATION_SLACK: Duration = Duration::from_secs(2);
/// Wait before retrying a device that did not answer.
const RETRY: Duration = Duration::from_secs(5);
/// Live registrations at the resource directory, at most. Anyone who can
/// reach the port may register (CoAP has no credentials here), and each
/// registration is thing services in the catalog and observations to
/// keep: past this, a new endpoint gets 5.03 until one lapses.
pub const MAX_REGISTRATIONS: usize = 1024;
/// Links one registration may name; more get 4.13.
pub const MAX_RESOURCES: usize = 128;

/// One device the gateway follows.
struct Device {
    /// Its thing id segment.
    name: String,
    address: SocketAddr,
    resources: Vec<DeviceResource>,
    /// It listed the Transport Management Policy object: it can be moved.
    movable: bool,
    /// For registrations: when it lapses unless updated.
    expires: Option<Instant>,
    lifetime: Duration,
    watchers: Vec<JoinHandle<()>>,
}

impl Drop for Device {
    fn drop(&mut self) {
        for watcher in &self.watchers {
            watcher.abort();
        }
    }
}

/// Registered and configured devices, shared by the `/rd` handler, the
/// watchers and the adapter actor.
pub struct Directory {
    endpoint: Endpoint,
    context: RwLock<Option<AdapterContext>>,
    /// By registration id (`rd/{id}`), or `static-{n}` for configured ones.
    devices: Mutex<HashMap<String, Device>>,
    next_id: AtomicU64,
    poll_interval: Duration,
    /// Held across each read-modify-announce of a thing service here, so
    /// a reading that settles a data type and a device-info read that
    /// adds metadata cannot overwrite each other's change.
    announcing: Mutex<()>,
}

impl Directory {
    pub fn new(endpoint: Endpoint, poll_interval: Duration) -> Arc<Directory> {
        Arc::new(Directory {
            endpoint,
            context: RwLock::default(),
            devices: Mutex::default(),
            next_id: AtomicU64::new(1),
            poll_interval,
            announcing: Mutex::default(),
        })
    }

    /// The adapter (re)started: readings go through this context from now.
    pub fn attach(&self, context: AdapterContext) {
        *self.context.write() = Some(context);
    }

    fn context(&self) -> Option<AdapterContext> {
        self.context.read().clone()
    }

    /// Starts following a device: announces its thing services and starts
    /// a watcher per resource. Replaces whatever `key` named before.
    fn follow(
        self: &Arc<Self>,
        key: String,
        name: String,
        address: SocketAddr,
        (resources, movable): (Vec<DeviceResource>, bool),
        lifetime: Option<Duration>,
    ) -> Result<(), String> {
        let context = self.context().ok_or("the CoAP adapter is not running")?;
        let mut watchers = Vec::new();
        for resource in &resources {
            let thing = context
                .thing_id(&name, &resource.name)
                .map_err(|e| e.to_string())?;
            let mut service = ThingService::new(
                thing.clone(),
                resource.kind,
                &resource.semantic_type,
                resource.unit.as_deref(),
            )
            .with_device_address(&format!("coap://{address}{}", resource.read_path));
            let _announcing = self.announcing.lock();
            if let Some(existing) = context.thing(&thing) {
                // Keep what readings taught us (the data type), where it
                // is and what the device said of itself.
                service.data_type = existing.data_type;
                service.location = existing.location;
                service.metadata = existing.metadata;
            }
            context.announce(service).map_err(|e| e.to_string())?;
            let watcher = Watcher {
                directory: self.clone(),
                address,
                resource: resource.clone(),
                thing,
            };
            watchers.push(self.endpoint.spawn(watcher.run()));
        }
        let device = Device {
            name,
            address,
            resources,
            movable,
            expires: lifetime.map(|l| Instant::now() + l),
            lifetime: lifetime.unwrap_or(rd::DEFAULT_LIFETIME),
            watchers,
        };
        self.devices.lock().insert(key, device);
        Ok(())
    }

    /// Follows statically configured devices: a URI with a path is one
    /// resource; without, the device's `/.well-known/core` says which.
    pub fn follow_static(self: &Arc<Self>, uris: &[String]) {
        for (n, uri) in uris.iter().enumerate() {
            let directory = self.clone();
            let uri = uri.clone();
            self.endpoint.spawn(async move {
                loop {
                    match directory.discover_static(n, &uri).await {
                        Ok(()) => return,
                        Err(error) => {
                            tracing::warn!(%uri, %error, "cannot follow a configured CoAP device yet");
                            tokio::time::sleep(RETRY).await;
                        }
                    }
                }
            });
        }
    }

    async fn discover_static(self: &Arc<Self>, n: usize, uri: &str) -> Result<(), String> {
        let (address, path) = parse_uri(uri)?;
        let links = match path.as_str() {
            "" | "/" => {
                let response = self
                    .endpoint
                    .request(address, endpoint::get("/.well-known/core", None))
                    .await
                    .map_err(|e| e.to_string())?;
                rd::links(&response.payload).map_err(|e| e.to_string())?
            }
            path => vec![rd::Link {
                path: path.to_owned(),
                obs: true,
                ..rd::Link::default()
            }],
        };
        let resources = rd::device_resources(&links, false);
        let name = sanitize_segment(&format!("{}-{}", address.ip(), address.port()));
        tracing::info!(%uri, resources = resources.len(), "following a configured CoAP device");
        self.follow(
            format!("static-{n}"),
            name,
            address,
            (resources, false),
            None,
        )
    }

    /// Reads a registered device's Device object (`/3/0`) and keeps what
    /// it says — and how long the read took, TRESCIMO's "read device
    /// info" — as the `device` metadata of its thing services. A device
    /// that does not answer keeps its thing services as they are: the
    /// read is a description, not a condition of registering.
    fn read_device_info(self: &Arc<Self>, name: String, address: SocketAddr) {
        let directory = self.clone();
        let span = tracing::info_span!("device_info", device = %name, %address);
        let read = async move {
            let started = Instant::now();
            let request = endpoint::get(&device_info::instance_path(), None);
            let info = match directory.endpoint.request(address, request).await {
                Ok(response) => match response.header.code {
                    MessageClass::Response(code) if !code.is_error() => device_info::decode(
                        message::uint_option(&response, CoapOption::ContentFormat)
                            .and_then(|f| u16::try_from(f).ok()),
                        &response.payload,
                    )
                    .map_err(|e| e.to_string()),
                    code => Err(format!("the device answered {code:?}")),
                },
                Err(error) => Err(error.to_string()),
            };
            let read_ms = started.elapsed().as_secs_f64() * 1e3;
            match info {
                Ok(info) => {
                    directory.count("coap_device_info_read");
                    let mut described = info.to_json();
                    described.insert("read_ms".into(), read_ms.into());
                    // Seconds since the epoch, as readings' `t`.
                    described.insert("read_at".into(), Timestamp::now().as_secs_f64().into());
                    directory.describe(&name, described.into());
                }
                Err(error) => {
                    directory.count("coap_device_info_failed");
                    tracing::warn!(%error, "cannot read the device's /3/0");
                }
            }
        };
        self.endpoint
            .spawn(tracing::Instrument::instrument(read, span));
    }

    /// Sets the `device` metadata of every thing service of `name`.
    fn describe(&self, name: &str, description: serde_json::Value) {
        let Some(context) = self.context() else {
            return;
        };
        let things: Vec<ThingId> = {
            let devices = self.devices.lock();
            devices
                .values()
                .filter(|d| d.name == name)
                .flat_map(|d| &d.resources)
                .filter_map(|r| context.thing_id(name, &r.name).ok())
                .collect()
        };
        let _announcing = self.announcing.lock();
        for thing in things {
            let Some(mut service) = context.thing(&thing) else {
                continue;
            };
            service
                .metadata
                .insert("device".into(), description.clone());
            if let Err(error) = context.announce(service) {
                tracing::warn!(%thing, %error, "cannot describe the thing service");
            }
        }
    }

    /// Lapsed registrations: their thing services become unavailable.
    pub fn expire(&self, now: Instant) {
        let lapsed: Vec<Device> = {
            let mut devices = self.devices.lock();
            let keys: Vec<String> = devices
                .iter()
                .filter(|(_, d)| d.expires.is_some_and(|e| e <= now))
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| devices.remove(k)).collect()
        };
        for device in lapsed {
            tracing::info!(device = %device.name, "CoAP registration lapsed");
            self.set_available(&device.name, false);
        }
    }

    /// Counts an event for `/metrics`, once the adapter has started.
    fn count(&self, event: &'static str) {
        if let Some(context) = self.context() {
            context.count(event);
        }
    }

    fn set_available(&self, device: &str, available: bool) {
        if let Some(context) = self.context()
            && let Err(error) = context.set_device_available(device, available)
        {
            tracing::warn!(%error, device, "cannot mark the device's availability");
        }
    }

    /// Where to write a command for `thing`, and how.
    pub fn command_target(&self, thing: &ThingId) -> Option<(SocketAddr, DeviceResource)> {
        let devices = self.devices.lock();
        devices.values().find_map(|d| {
            if d.name != thing.device() {
                return None;
            }
            d.resources
                .iter()
                .find(|r| r.name == thing.resource())
                .map(|r| (d.address, r.clone()))
        })
    }

    /// A registered device that can be told to go elsewhere: its
    /// registration id and address.
    pub fn movable_device(
        &self,
        name: &str,
    ) -> Result<(String, SocketAddr), fogbank_taas::RepointError> {
        use fogbank_taas::RepointError;
        let devices = self.devices.lock();
        let (key, device) = devices
            .iter()
            .find(|(key, d)| d.name == name && !key.starts_with("static-"))
            .ok_or_else(|| {
                RepointError::NoDevice(format!("no CoAP device {name} is registered here"))
            })?;
        if !device.movable {
            return Err(RepointError::Unsupported(format!(
                "CoAP device {name} did not list the transport policy object </{}/0> when it registered",
                fogbank_coap_protocol::transport_policy::OBJECT
            )));
        }
        Ok((key.clone(), device.address))
    }

    /// Stops following a device that was told to go elsewhere; its thing
    /// services keep their state (the new owner takes them over).
    pub fn let_go(&self, key: &str) {
        self.devices.lock().remove(key);
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// What a reading teaches its thing service: types announced from a
    /// registration are guesses, the device's values settle them, its
    /// SenML unit wins, and a reading means it is available. Most readings
    /// teach nothing; only one that does takes the `announcing` lock, and
    /// reads the service again under it.
    fn settle(&self, context: &AdapterContext, thing: &ThingId, sample: &payload::Sample) {
        let settled = |service: ThingService| {
            let data_type = sample.value.data_type();
            let unit_news = sample.unit.is_some() && sample.unit != service.unit;
            (service.data_type != data_type || !service.available || unit_news).then(|| {
                ThingService {
                    data_type,
                    available: true,
                    unit: if unit_news {
                        sample.unit.clone()
                    } else {
                        service.unit
                    },
                    ..service
                }
            })
        };
        if context.thing(thing).and_then(settled).is_none() {
            return;
        }
        let _announcing = self.announcing.lock();
        if let Some(service) = context.thing(thing).and_then(settled)
            && let Err(error) = context.announce(service)
        {
            tracing::warn!(%thing, %error, "cannot update the thing service");
        }
    }

    /// Stores a value a device sent for `thing`.
    fn store(&self, thing: &ThingId, resource: &DeviceResource, packet: &Packet) -> Taken {
        let Some(context) = self.context() else {
            return Taken::NotNow;
        };
        if matches!(packet.header.code, MessageClass::Response(code) if code.is_error()) {
            tracing::debug!(%thing, code = ?packet.header.code, "the device answered with an error");
            return Taken::Yes;
        }
        let format = message::uint_option(packet, CoapOption::ContentFormat)
            .and_then(|f| u16::try_from(f).ok())
            .or(resource.content_format);
        let sample = match payload::decode(
            format,
            &packet.payload,
            resource.lwm2m_resource,
            context.arrival_time(),
        ) {
            Ok(sample) => sample,
            Err(error) => {
                context.count("coap_malformed");
                tracing::warn!(%thing, %error, "dropped a CoAP reading");
                return Taken::Yes;
            }
        };
        self.settle(&context, thing, &sample);
        let reading = ThingReading {
            thing: thing.clone(),
            reading: fogbank_taas::Reading {
                time: sample.time,
                value: sample.value,
            },
        };
        match context.emit(vec![reading]) {
            Ok(()) => Taken::Yes,
            Err(fogbank_adapter::AdapterError::Ingest(error)) if error.is_storage_failure() => {
                context.count("coap_not_stored");
                tracing::error!(%thing, %error, "CoAP reading not stored; not acknowledged");
                Taken::NotNow
            }
            Err(error) => {
                context.count("coap_malformed");
                tracing::warn!(%thing, %error, "dropped a CoAP reading");
                Taken::Yes
            }
        }
    }
}

/// Follows one resource of one device: observes it if it is observable,
/// polls it otherwise (or when observing fails).
struct Watcher {
    directory: Arc<Directory>,
    address: SocketAddr,
    resource: DeviceResource,
    thing: ThingId,
}

impl Watcher {
    async fn run(self) {
        let endpoint = self.directory.endpoint.clone();
        let mut observable = self.resource.observable;
        loop {
            if observable {
                if self.observe(&endpoint).await {
                    continue;
                }
                // Answered without Observe (that value is stored): poll
                // from now on, starting one interval later.
                observable = false;
                tokio::time::sleep(self.directory.poll_interval).await;
            }
            let request = endpoint::get(&self.resource.read_path, self.resource.content_format);
            match endpoint.request(self.address, request).await {
                Ok(response) => {
                    self.directory.store(&self.thing, &self.resource, &response);
                }
                Err(error) => {
                    tracing::debug!(thing = %self.thing, %error, "CoAP device did not answer");
                    self.unavailable();
                }
            }
            tokio::time::sleep(self.directory.poll_interval).await;
        }
    }

    /// Observes until notifications stop; `false` if the device does not
    /// offer Observe for this resource (poll instead).
    async fn observe(&self, endpoint: &Endpoint) -> bool {
        let heard = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let sink = {
            let directory = self.directory.clone();
            let thing = self.thing.clone();
            let resource = self.resource.clone();
            let heard = heard.clone();
            Arc::new(move |packet: &Packet| {
                heard.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                directory.store(&thing, &resource, packet)
            })
        };
        let request = endpoint::get(&self.resource.read_path, self.resource.content_format);
        // Dropped on every way out, aborted included: the observation ends.
        let (_observation, first) = match endpoint.observe(self.address, request, sink).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(thing = %self.thing, %error, "cannot observe");
                self.unavailable();
                tokio::time::sleep(RETRY).await;
                return true;
            }
        };
        self.directory.store(&self.thing, &self.resource, &first);
        if first.get_observe_value().is_none() {
            return false;
        }
        let max_age = Duration::from_secs(u64::from(
            message::uint_option(&first, CoapOption::MaxAge).unwrap_or(60),
        ));
        heard.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let last = Duration::from_millis(heard.load(Ordering::Relaxed));
            if started.elapsed().saturating_sub(last) > max_age + OBSERVATION_SLACK {
                tracing::debug!(thing = %self.thing, "notifications stopped; observing again");
                return true;
            }
        }
    }

    fn unavailable(&self) {
        if let Some(context) = self.directory.context()
            && context.thing(&self.thing).is_some_and(|t| t.available)
        {
            self.directory.set_available(self.thing.device(), false);
        }
    }
}

/// `coap://host:port/path` → (address, path).
pub fn parse_uri(uri: &str) -> Result<(SocketAddr, String), String> {
    let rest = uri
        .strip_prefix("coap://")
        .ok_or_else(|| format!("{uri:?} is not a coap:// URI"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], rest[at..].to_owned()),
        None => (rest, String::new()),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_owned()
    } else {
        format!("{authority}:5683")
    };
    use std::net::ToSocketAddrs;
    let address = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{uri:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{uri:?} resolves to nothing"))?;
    Ok((address, path))
}

/// The `/rd` handler (RFC 9176 registration interface).
pub struct ResourceDirectory(pub Arc<Directory>);

impl Handler for ResourceDirectory {
    fn handle(&self, request: Request) -> Reply {
        Reply::Now(self.answer(request))
    }
}

impl ResourceDirectory {
    /// Follows a registered device (anew); a failure is the answer.
    fn follow(
        &self,
        id: &str,
        name: &str,
        peer: SocketAddr,
        resources: (Vec<DeviceResource>, bool),
        lifetime: Duration,
    ) -> Result<(), Response> {
        self.0
            .follow(
                id.to_owned(),
                name.to_owned(),
                peer,
                resources,
                Some(lifetime),
            )
            .map_err(|error| Response::error(ResponseType::ServiceUnavailable, error))
    }

    fn answer(&self, request: Request) -> Response {
        let directory = &self.0;
        let bad = |e: rd::RdError| Response::error(ResponseType::BadRequest, e.to_string());
        match (request.method, request.path.as_slice()) {
            (RequestType::Post, [_rd]) => {
                if request
                    .content_format
                    .is_some_and(|f| f != format::LINK_FORMAT)
                {
                    return Response::error(
                        ResponseType::UnsupportedContentFormat,
                        "registrations are in link format (40)",
                    );
                }
                let parameters = match rd::parameters(&request.queries) {
                    Ok(p) => p,
                    Err(e) => return bad(e),
                };
                let Some(endpoint_name) = parameters.endpoint.clone() else {
                    return bad(rd::RdError::NoEndpoint);
                };
                let links = match rd::links(&request.payload) {
                    Ok(links) => links,
                    Err(e) => return bad(e),
                };
                let name = sanitize_segment(&endpoint_name);
                let resources = rd::device_resources(&links, parameters.lwm2m.is_some());
                let movable = rd::movable(&links);
                if resources.len() > MAX_RESOURCES {
                    directory.count("coap_registration_too_large");
                    return Response::error(
                        ResponseType::RequestEntityTooLarge,
                        format!("a registration names at most {MAX_RESOURCES} resources"),
                    );
                }
                // The same endpoint (and sector) registering again replaces
                // its registration, at the same location.
                let (known, registered) = {
                    let devices = directory.devices.lock();
                    let mut registrations =
                        devices.iter().filter(|(k, _)| !k.starts_with("static-"));
                    let count = registrations.clone().count();
                    let known = registrations
                        .find(|(_, d)| d.name == name)
                        .map(|(k, _)| k.clone());
                    (known, count)
                };
                if known.is_none() && registered >= MAX_REGISTRATIONS {
                    directory.count("coap_directory_full");
                    return Response::error(
                        ResponseType::ServiceUnavailable,
                        format!(
                            "the directory holds {MAX_REGISTRATIONS} registrations; try again when one lapses"
                        ),
                    );
                }
                let id = known.unwrap_or_else(|| {
                    directory
                        .next_id
                        .fetch_add(1, Ordering::Relaxed)
                        .to_string()
                });
                let lifetime = parameters.lifetime.unwrap_or(rd::DEFAULT_LIFETIME);
                let count = resources.len();
                if let Err(response) =
                    self.follow(&id, &name, request.peer, (resources, movable), lifetime)
                {
                    return response;
                }
                directory.set_available(&name, true);
                if links.iter().any(|l| device_info::is_device_link(&l.path)) {
                    directory.read_device_info(name.clone(), request.peer);
                }
                tracing::info!(device = %name, peer = %request.peer, id, resources = count, lifetime = ?lifetime, "CoAP device registered");
                Response {
                    location_path: vec!["rd".into(), id],
                    ..Response::new(ResponseType::Created)
                }
            }
            (RequestType::Post, [_rd, id]) => {
                let parameters = match rd::parameters(&request.queries) {
                    Ok(p) => p,
                    Err(e) => return bad(e),
                };
                let mut devices = directory.devices.lock();
                let Some(device) = devices
                    .get_mut(id.as_str())
                    .filter(|_| !id.starts_with("static-"))
                else {
                    return Response::error(ResponseType::NotFound, "no such registration");
                };
                if let Some(lifetime) = parameters.lifetime {
                    device.lifetime = lifetime;
                }
                device.expires = Some(Instant::now() + device.lifetime);
                let name = device.name.clone();
                let lifetime = device.lifetime;
                // A new address or new links: follow it afresh.
                let refollow = match request.payload.is_empty() {
                    false => match rd::links(&request.payload) {
                        Ok(links) => Some((
                            rd::device_resources(&links, parameters.lwm2m.is_some()),
                            rd::movable(&links),
                        )),
                        Err(e) => return bad(e),
                    },
                    true => (device.address != request.peer)
                        .then(|| (device.resources.clone(), device.movable)),
                };
                drop(devices);
                if let Some(resources) = refollow
                    && let Err(response) = self.follow(id, &name, request.peer, resources, lifetime)
                {
                    return response;
                }
                directory.set_available(&name, true);
                Response::new(ResponseType::Changed)
            }
            (RequestType::Delete, [_rd, id]) => {
                let removed = if id.starts_with("static-") {
                    None
                } else {
                    directory.devices.lock().remove(id.as_str())
                };
                match removed {
                    Some(device) => {
                        directory.set_available(&device.name, false);
                        tracing::info!(device = %device.name, "CoAP device deregistered");
                        Response::new(ResponseType::Deleted)
                    }
                    None => Response::error(ResponseType::NotFound, "no such registration"),
                }
            }
            (RequestType::Get, [_rd]) => {
                // The directory's own listing (RFC 9176 lookup, simplified):
                // one link per registration.
                let devices = directory.devices.lock();
                let mut ids: Vec<&String> = devices
                    .keys()
                    .filter(|k| !k.starts_with("static-"))
                    .collect();
                ids.sort();
                let body = ids
                    .iter()
                    .map(|k| format!("</rd/{k}>;ep=\"{}\"", devices[k.as_str()].name))
                    .collect::<Vec<_>>()
                    .join(",");
                Response::content(format::LINK_FORMAT, body.into_bytes())
            }
            _ => Response::new(ResponseType::MethodNotAllowed),
        }
    }
}

/// Writes a command to a device: text/plain (LWM2M's plain text for a
/// single resource: booleans as `1`/`0`).
pub async fn write(
    endpoint: &Endpoint,
    address: SocketAddr,
    resource: &DeviceResource,
    value: &Value,
) -> Result<(), ActuationError> {
    let body = match (value, resource.lwm2m_resource.is_some()) {
        (Value::Bool(b), true) => {
            if *b {
                b"1".to_vec()
            } else {
                b"0".to_vec()
            }
        }
        (value, _) => payload::plain_text(value),
    };
    let request = endpoint::request_packet(
        RequestType::Put,
        &resource.write_path,
        &[],
        Some(format::TEXT),
        body,
        None,
    );
    let response = endpoint
        .request(address, request)
        .await
        .map_err(|error| match error {
            RequestError::Timeout(_) => ActuationError::NoAnswer(error.to_string()),
            RequestError::Reset(_) => ActuationError::Refused(error.to_string()),
            _ => ActuationError::Send(error.to_string()),
        })?;
    match response.header.code {
        MessageClass::Response(code) if !code.is_error() => Ok(()),
        code => Err(ActuationError::Refused(format!(
            "the device answered {code:?}: {}",
            Excerpt(&String::from_utf8_lossy(&response.payload))
        ))),
    }
}
