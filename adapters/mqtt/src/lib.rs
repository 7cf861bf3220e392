//! The MQTT adapter (`mqtt`): devices that publish to a broker by the
//! conventions of [`convention`].
//!
//! Two modes. **Embedded** (the default): a broker inside the gateway
//! ([`embedded`]), so devices need nothing else. **External**: a broker
//! such as Mosquitto. Either way the adapter is a client of the broker with
//! a persistent session (clean session off, a stable client id) and manual
//! acknowledgements: a QoS 1 reading is acknowledged to the broker only
//! after it is in the store's WAL, so what an external broker queued while
//! the gateway was down or restarting arrives when it returns. A
//! redelivered message that was already stored is recognised by its
//! receipt (packet id and content) and not stored twice.

pub mod convention;
pub mod discovery;
pub mod embedded;
mod limit;
pub mod mapping;
pub mod packet;
pub mod receive;
pub mod tls;
pub mod transport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Recipient, ResponseFuture, WrapFuture};
use fogbank_adapter::{Actuate, AdapterContext, Plugin};
use fogbank_taas::{ActuationError, ActuationResult, ThingId, Value};
use parking_lot::Mutex;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use serde::{Deserialize, Serialize};

use discovery::Entity;
use receive::{Message, Receiver, Verdict};

/// Settings of the MQTT adapter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// `embedded` (a broker on `listen`), `external` (a client of
    /// `broker`) or `off`.
    pub mode: String,
    /// Where the embedded broker listens.
    pub listen: SocketAddr,
    /// The external broker: `host:port`, `mqtt://host[:port]`, or
    /// `mqtts://host[:port]` for TLS.
    pub broker: String,
    /// CAs trusted for the broker's certificate (PEM). Setting it turns
    /// TLS on; `mqtts://` without it trusts the system's CAs.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for brokers that ask.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Stable across restarts, so that the broker keeps the session.
    /// Empty: `fogbank-{gateway id}`.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive_secs: u64,
    /// Larger messages are dropped, logged and counted (and acknowledged,
    /// so that the broker does not resend them).
    pub max_message_bytes: usize,
    /// The embedded broker's largest CONNECT (client id, will, user name
    /// and password): a larger one is refused, and its connection closed,
    /// as soon as its first bytes say how large it is.
    pub max_connect_bytes: usize,
    /// Messages per second one device may send (bursts of twice that);
    /// more are dropped and counted. 0 (the default) means no limit: a
    /// limit also drops a legitimate backlog that a broker delivers at once
    /// after an outage.
    pub max_rate_per_device: f64,
    /// Topic layouts beyond the built-in conventions.
    pub mappings: Vec<mapping::Mapping>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            mode: "embedded".into(),
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            broker: "127.0.0.1:1883".into(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            client_id: String::new(),
            username: None,
            password: None,
            keep_alive_secs: 30,
            max_message_bytes: 256 * 1024,
            max_connect_bytes: 16 * 1024,
            max_rate_per_device: 0.0,
            mappings: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("mqtt.broker {0:?} is not host:port, mqtt://host[:port] or mqtts://host[:port]")]
    Broker(String),
    #[error(transparent)]
    Mapping(#[from] mapping::MappingError),
    #[error("mqtt.mode is embedded, external or off, not {0:?}")]
    Mode(String),
}

impl MqttConfig {
    /// Where the external broker is and whether it speaks TLS.
    pub fn broker_address(&self) -> Result<BrokerAddress, ConfigError> {
        let bad = || ConfigError::Broker(self.broker.clone());
        let (rest, scheme_tls) = match self.broker.split_once("://") {
            Some(("mqtt", rest)) => (rest, false),
            Some(("mqtts", rest)) => (rest, true),
            Some(_) => return Err(bad()),
            None => (self.broker.as_str(), false),
        };
        let tls = scheme_tls || self.ca_file.is_some();
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            // A bare IPv6 literal has colons but no port.
            Some((host, port)) if !port.ends_with(']') => (host, port.parse().map_err(|_| bad())?),
            _ if scheme_tls || self.broker.starts_with("mqtt://") => {
                (rest, if tls { 8883 } else { 1883 })
            }
            _ => return Err(bad()),
        };
        let host = host.trim_matches(['[', ']']);
        if host.is_empty() {
            return Err(bad());
        }
        Ok(BrokerAddress {
            host: host.to_owned(),
            port,
            tls,
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for mapping in &self.mappings {
            mapping.validate()?;
        }
        match self.mode.as_str() {
            "off" | "embedded" => Ok(()),
            "external" => self.broker_address().map(|_| ()),
            other => Err(ConfigError::Mode(other.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl std::fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        match self.host.contains(':') {
            true => write!(f, "{scheme}://[{}]:{}", self.host, self.port),
            false => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

pub struct Mqtt {
    pub config: MqttConfig,
    /// The broker to connect to: the embedded one's local address, or the
    /// external one.
    pub broker: BrokerAddress,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// With the embedded broker: where its front door finds the receiver.
    intake: Option<Arc<embedded::front_door::Intake>>,
    movable: transport::Movable,
    client: transport::SharedClient,
}

impl Mqtt {
    /// Starts the embedded broker if the mode asks for one; `None` for `off`.
    pub fn new(config: MqttConfig) -> Result<Option<Self>, StartError> {
        let mut intake = None;
        let broker = match config.mode.as_str() {
            "off" => return Ok(None),
            "embedded" => {
                let front_door = Arc::new(embedded::front_door::Intake::new(None));
                intake = Some(front_door.clone());
                let local = embedded::start(
                    config.listen,
                    config.max_message_bytes,
                    config.max_connect_bytes,
                    front_door,
                )?;
                BrokerAddress {
                    host: local.ip().to_string(),
                    port: local.port(),
                    tls: false,
                }
            }
            _ => config.broker_address()?,
        };
        let tls = match broker.tls {
            false => None,
            true => {
                let ca_file = config
                    .ca_file
                    .clone()
                    .unwrap_or_else(|| tls::SYSTEM_CA_FILE.into());
                let identity = match (&config.client_cert_file, &config.client_key_file) {
                    (None, None) => None,
                    (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
                    _ => return Err(tls::TlsError::HalfClientIdentity.into()),
                };
                Some(tls::client_config(&ca_file, identity)?)
            }
        };
        Ok(Some(Mqtt {
            config,
            broker,
            tls,
            intake,
            movable: transport::Movable::default(),
            client: transport::SharedClient::default(),
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Embedded(#[from] embedded::EmbeddedError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

impl Plugin for Mqtt {
    fn name(&self) -> &str {
        "mqtt"
    }

    fn start(&self, context: AdapterContext) -> Recipient<Actuate> {
        MqttActor {
            config: self.config.clone(),
            broker: self.broker.clone(),
            tls: self.tls.clone(),
            intake: self.intake.clone(),
            context,
            client: None,
            shared_client: self.client.clone(),
            movable: self.movable.clone(),
            entities: SharedEntities::default(),
        }
        .start()
        .recipient()
    }

    /// With the embedded broker, devices that publish a policy can move.
    fn transport(&self) -> Option<Arc<dyn fogbank_taas::DeviceTransport>> {
        self.intake.as_ref()?;
        Some(Arc::new(transport::Transport {
            movable: self.movable.clone(),
            client: self.client.clone(),
            listen: self.config.listen,
        }))
    }
}

struct MqttActor {
    config: MqttConfig,
    broker: BrokerAddress,
    tls: Option<Arc<rustls::ClientConfig>>,
    intake: Option<Arc<embedded::front_door::Intake>>,
    context: AdapterContext,
    client: Option<AsyncClient>,
    /// The same client, for the transport (moves).
    shared_client: transport::SharedClient,
    movable: transport::Movable,
    entities: SharedEntities,
}

impl Actor for MqttActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let client_id = match self.config.client_id.as_str() {
            "" => format!("fogbank-{}", self.context.gateway()),
            id => id.to_owned(),
        };
        let mut options = MqttOptions::new(
            client_id.clone(),
            self.broker.host.clone(),
            self.broker.port,
        );
        if let Some(tls) = &self.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        options
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_secs(self.config.keep_alive_secs.max(5)))
            // The client takes up to the hard cap so that the adapter can drop
            // and acknowledge a merely oversized message: a client-side refusal
            // would drop the connection, and the broker would resend the same
            // message to the resumed session forever.
            .set_max_packet_size(
                self.config.max_message_bytes.max(INCOMING_HARD_CAP),
                self.config.max_message_bytes,
            );
        if let (Some(user), Some(password)) = (&self.config.username, &self.config.password) {
            options.set_credentials(user.clone(), password.clone());
        }
        let (client, eventloop) = AsyncClient::new(options, 256);
        self.client = Some(client.clone());
        *self.shared_client.lock() = Some(client.clone());
        tracing::info!(broker = %self.broker, %client_id, "MQTT adapter connecting");
        let receiver = Arc::new(Mutex::new(Receiver::new(
            self.context.clone(),
            self.entities.clone(),
            self.config.max_rate_per_device,
            self.config.max_message_bytes,
            self.config.mappings.clone(),
            self.movable.clone(),
        )));
        if let Some(intake) = &self.intake {
            intake.send_replace(Some(receiver.clone()));
        }
        let session = Session {
            client,
            client_id,
            receiver,
            receives: self.intake.is_none(),
            entities: self.entities.clone(),
            mappings: self.config.mappings.clone(),
            pending_acks: std::collections::VecDeque::new(),
        };
        ctx.spawn(session.run(eventloop).into_actor(self));
    }
}

/// Entities learnt from Home Assistant discovery, shared by the receive
/// side (their state and availability topics) and the command side.
#[derive(Default)]
pub(crate) struct Entities {
    pub(crate) by_config_topic: HashMap<String, (ThingId, Entity)>,
}

impl Entities {
    /// The entities whose state, and those whose availability, `topic`
    /// carries: one pass under one lock, on every message.
    pub(crate) fn on_topic(&self, topic: &str) -> (Vec<(ThingId, Entity)>, Vec<Entity>) {
        let mut stated = Vec::new();
        let mut availability = Vec::new();
        for (id, entity) in self.by_config_topic.values() {
            if entity.state_topic == topic {
                stated.push((id.clone(), entity.clone()));
            }
            if entity.availability_topic.as_deref() == Some(topic) {
                availability.push(entity.clone());
            }
        }
        (stated, availability)
    }

    fn for_thing(&self, thing: &ThingId) -> Option<&Entity> {
        self.by_config_topic
            .values()
            .find(|(id, _)| id == thing)
            .map(|(_, e)| e)
    }
}

pub(crate) type SharedEntities = Arc<Mutex<Entities>>;

/// The adapter's client session with the broker: sends commands and, with
/// an external broker, receives devices' messages (with the embedded one
/// the front door hands them to the receiver before the broker has them).
struct Session {
    client: AsyncClient,
    client_id: String,
    receiver: Arc<Mutex<Receiver>>,
    /// Whether devices' messages come through this session.
    receives: bool,
    entities: SharedEntities,
    mappings: Vec<mapping::Mapping>,
    /// Stored (or dropped) messages whose acknowledgement is not sent yet,
    /// and whether they left a receipt to release once it is.
    pending_acks: std::collections::VecDeque<(Publish, bool)>,
}

/// The largest packet the client reads at all (see `max_message_bytes`
/// for the limit on what is taken); a broker that sends more breaks the
/// session — set its own limit (Mosquitto: `message_size_limit`) below it.
const INCOMING_HARD_CAP: usize = 16 << 20;

/// Publishes handled together at most: one store write each burst.
const MAX_BURST: usize = 256;

impl Session {
    async fn run(mut self, mut eventloop: EventLoop) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_millis(100);
                    tracing::info!(
                        session_present = ack.session_present,
                        "MQTT broker connected"
                    );
                    self.connected(ack.session_present);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    // Publishes the client already read off the socket come
                    // along, so that a burst costs one store write.
                    let mut burst = vec![publish];
                    while burst.len() < MAX_BURST
                        && let Some(Event::Incoming(Packet::Publish(_))) =
                            eventloop.state.events.front()
                    {
                        if let Some(Event::Incoming(Packet::Publish(next))) =
                            eventloop.state.events.pop_front()
                        {
                            burst.push(next);
                        }
                    }
                    self.receive(burst);
                }
                Ok(_) => self.flush_acks(),
                Err(error) => {
                    self.receiver
                        .lock()
                        .context()
                        .count("mqtt_connection_errors");
                    tracing::warn!(%error, retry_in = ?backoff, "MQTT connection lost");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn connected(&self, session_present: bool) {
        // A session the broker kept still has its subscriptions.
        if self.receives && !session_present {
            let mut topics = vec![
                convention::SUBSCRIPTION.to_owned(),
                discovery::SUBSCRIPTION.to_owned(),
            ];
            topics.extend(self.mappings.iter().map(mapping::Mapping::filter));
            for (_, entity) in self.entities.lock().by_config_topic.values() {
                topics.push(entity.state_topic.clone());
                topics.extend(entity.availability_topic.clone());
            }
            self.subscribe(topics);
        }
        // Home Assistant's birth message: devices announce themselves again.
        if let Err(error) =
            self.client
                .try_publish(discovery::BIRTH_TOPIC, QoS::AtLeastOnce, false, "online")
        {
            tracing::warn!(%error, "cannot ask devices to announce themselves");
        }
    }

    fn subscribe(&self, topics: Vec<String>) {
        for topic in topics {
            if let Err(error) = self.client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                tracing::error!(%error, %topic, "cannot subscribe");
            }
        }
    }

    /// Has a burst stored, then acknowledges each message that was stored
    /// or dropped for good.
    fn receive(&mut self, burst: Vec<Publish>) {
        if !self.receives {
            // Not subscribed to anything: a stray message is only acknowledged.
            self.pending_acks
                .extend(burst.into_iter().map(|p| (p, false)));
            self.flush_acks();
            return;
        }
        let messages: Vec<Message<'_>> = burst
            .iter()
            .map(|p| Message {
                topic: &p.topic,
                payload: &p.payload,
                qos: p.qos as u8,
                pkid: p.pkid,
                dup: p.dup,
            })
            .collect();
        let (verdicts, discovered) = {
            let mut receiver = self.receiver.lock();
            let verdicts = receiver.receive(&self.client_id, &messages);
            (verdicts, receiver.take_discovered_topics())
        };
        self.subscribe(discovered);
        for (publish, verdict) in burst.into_iter().zip(verdicts) {
            if verdict == Verdict::Acknowledge && publish.qos != QoS::AtMostOnce {
                self.pending_acks.push_back((publish, true));
            }
        }
        self.flush_acks();
    }

    /// Sends the acknowledgements that fit into the client's request queue,
    /// in order. The queue drains only while the event loop is polled, so
    /// under a burst some wait here for the next poll — the broker sends no
    /// more than its in-flight window meanwhile, which bounds this queue.
    fn flush_acks(&mut self) {
        let mut released = Vec::new();
        while let Some((publish, _)) = self.pending_acks.front() {
            if self.client.try_ack(publish).is_err() {
                break;
            }
            if let Some((publish, true)) = self.pending_acks.pop_front() {
                released.push(publish.pkid);
            }
        }
        if !released.is_empty() {
            self.receiver.lock().release(&self.client_id, &released);
        }
    }
}

impl Handler<Actuate> for MqttActor {
    type Result = ResponseFuture<ActuationResult>;

    fn handle(&mut self, Actuate(command): Actuate, _: &mut Self::Context) -> Self::Result {
        let client = self.client.clone();
        let discovered = self
            .entities
            .lock()
            .for_thing(&command.thing)
            .map(|e| e.command(&command.value));
        let target = match discovered {
            Some(command_for_entity) => {
                command_for_entity.ok_or_else(|| ActuationError::BadValue {
                    thing: command.thing.clone(),
                    takes: "on/off commands",
                })
            }
            None => Ok(convention::command(
                command.thing.device(),
                command.thing.resource(),
                &command.value,
            )),
        };
        Box::pin(async move {
            let client = client.ok_or(ActuationError::Disconnected(
                "the MQTT adapter is not connected",
            ))?;
            let (topic, payload) = target?;
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|e| ActuationError::Send(e.to_string()))?;
            // Published; the device reports its new state on its own topic.
            Ok(None::<Value>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses() {
        let at = |broker: &str| {
            MqttConfig {
                broker: broker.into(),
                ..MqttConfig::default()
            }
            .broker_address()
        };
        let address = |host: &str, port, tls| {
            Ok(BrokerAddress {
                host: host.into(),
                port,
                tls,
            })
        };
        assert_eq!(at("127.0.0.1:1883"), address("127.0.0.1", 1883, false));
        assert_eq!(
            at("mqtt://broker.local:1884/"),
            address("broker.local", 1884, false)
        );
        assert_eq!(at("mqtt://[::1]:1883"), address("::1", 1883, false));
        assert_eq!(at("mqtt://[::1]"), address("::1", 1883, false));
        assert_eq!(at("mqtt://broker"), address("broker", 1883, false));
        assert_eq!(at("mqtts://broker"), address("broker", 8883, true));
        assert_eq!(at("mqtts://broker:8884"), address("broker", 8884, true));
        assert_eq!(
            at("mqtts://broker:8884").unwrap().to_string(),
            "mqtts://broker:8884"
        );
        assert!(at("http://broker:80").is_err());
        assert!(at("mqtt://broker:x").is_err());
        assert!(at("broker").is_err());
        assert!(at(":1883").is_err());
        let with_ca = MqttConfig {
            broker: "broker:8883".into(),
            ca_file: Some("/etc/site-ca.pem".into()),
            ..MqttConfig::default()
        };
        assert_eq!(with_ca.broker_address(), address("broker", 8883, true));
        assert!(
            MqttConfig {
                mode: "embedded-ish".into(),
                ..MqttConfig::default()
            }
            .validate()
            .is_err()
        );
    }
}
