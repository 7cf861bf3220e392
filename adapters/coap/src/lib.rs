//! The CoAP adapter (`coap`): devices that register at the gateway's
//! resource directory (RFC 9176, LWM2M-style registrations included) or
//! are configured by URI, observed (RFC 7641) where they allow it and
//! polled otherwise.
//!
//! The gateway has one CoAP endpoint ([`endpoint`]), shared with the
//! application side (`/things`, served by the node): this crate routes
//! `/rd` to its [`devices::ResourceDirectory`] and leaves every other path
//! to whoever the node routes there.

pub mod devices;
pub mod rd;
mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler, Recipient, ResponseFuture};
use fogbank_adapter::{Actuate, AdapterContext, Plugin};
use fogbank_taas::{ActuationError, ActuationResult, Value};
use serde::{Deserialize, Serialize};

use devices::Directory;
use fogbank_coap_protocol::endpoint::Endpoint;

/// The resource directory's link, for the gateway's `/.well-known/core`.
pub const RD_LINK: &str = "</rd>;rt=\"core.rd\";ct=40";

/// Settings of the CoAP endpoint and adapter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoapConfig {
    /// `false` turns CoAP off, both sides.
    pub enabled: bool,
    /// The UDP address of the gateway's endpoint.
    pub listen: SocketAddr,
    /// How often a resource that cannot be observed is read.
    pub poll_interval_secs: u64,
    /// Where a device moved here from another gateway is told to register:
    /// `host` or `host:port` (the port defaults to `listen`'s). Unset: the
    /// listen address, or, when that is every interface, the address the
    /// moving gateway reaches this one at.
    pub advertise: Option<String>,
    /// Devices to follow without registration: `coap://host[:port]` (its
    /// `/.well-known/core` says what to follow) or `coap://host/path`.
    pub devices: Vec<String>,
}

impl Default for CoapConfig {
    fn default() -> Self {
        CoapConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 5683)),
            poll_interval_secs: 30,
            advertise: None,
            devices: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("coap.devices: {0}")]
    Device(String),
    #[error("coap.poll_interval_secs must be at least 1")]
    PollInterval,
    #[error("coap.advertise: {0:?} is not host or host:port")]
    Advertise(String),
}

impl CoapConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.poll_interval_secs == 0 {
            return Err(ConfigError::PollInterval);
        }
        if let Some(advertised) = &self.advertise
            && transport::advertised(advertised, self.listen.port()).is_none()
        {
            return Err(ConfigError::Advertise(advertised.clone()));
        }
        for uri in &self.devices {
            if !uri.starts_with("coap://") {
                return Err(ConfigError::Device(format!("{uri:?} is not a coap:// URI")));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen for CoAP on {address}: {source} (set another address with --coap ADDR, or --coap off)"
)]
pub struct BindError {
    pub address: SocketAddr,
    pub source: std::io::Error,
}

/// Binds the gateway's endpoint.
pub fn bind(config: &CoapConfig) -> Result<Endpoint, BindError> {
    Endpoint::bind(config.listen).map_err(|source| BindError {
        address: config.listen,
        source,
    })
}

/// The adapter plugin.
pub struct Coap {
    directory: Arc<Directory>,
    advertise: Option<String>,
    static_devices: Vec<String>,
    followed_static: AtomicBool,
}

impl Coap {
    /// The device side on `endpoint`: takes over its `/rd` path.
    pub fn new(endpoint: Endpoint, config: &CoapConfig) -> Self {
        let directory = Directory::new(
            endpoint.clone(),
            Duration::from_secs(config.poll_interval_secs.max(1)),
        );
        endpoint.route(
            "rd",
            Arc::new(devices::ResourceDirectory(directory.clone())),
        );
        Coap {
            directory,
            advertise: config.advertise.clone(),
            static_devices: config.devices.clone(),
            followed_static: AtomicBool::new(false),
        }
    }
}

impl Plugin for Coap {
    fn name(&self) -> &str {
        "coap"
    }

    fn start(&self, context: AdapterContext) -> Recipient<Actuate> {
        self.directory.attach(context);
        if !self.followed_static.swap(true, Ordering::Relaxed) {
            self.directory.follow_static(&self.static_devices);
        }
        CoapActor {
            directory: self.directory.clone(),
        }
        .start()
        .recipient()
    }

    fn transport(&self) -> Option<Arc<dyn fogbank_taas::DeviceTransport>> {
        Some(Arc::new(transport::Transport {
            directory: self.directory.clone(),
            advertise: self.advertise.clone(),
        }))
    }
}

struct CoapActor {
    directory: Arc<Directory>,
}

impl Actor for CoapActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_secs(1), |actor, _| {
            actor.directory.expire(Instant::now());
        });
    }
}

impl Handler<Actuate> for CoapActor {
    type Result = ResponseFuture<ActuationResult>;

    fn handle(&mut self, Actuate(command): Actuate, _: &mut Self::Context) -> Self::Result {
        let target = self.directory.command_target(&command.thing);
        let endpoint = self.directory.endpoint().clone();
        Box::pin(async move {
            let (address, resource) = target.ok_or_else(|| ActuationError::NoDevice {
                thing: command.thing.clone(),
                why: "is not a registered CoAP resource",
            })?;
            let value = command.value;
            // The exchange runs on the endpoint's runtime, beside its socket.
            let writer = endpoint.clone();
            let written = endpoint
                .spawn(async move { devices::write(&writer, address, &resource, &value).await })
                .await
                .map_err(|e| ActuationError::Send(e.to_string()))?;
            written.map(|()| None::<Value>)
        })
    }
}
