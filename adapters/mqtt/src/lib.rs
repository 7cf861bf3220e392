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
pub mod embedded;

use std::net::SocketAddr;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Recipient, ResponseFuture, WrapFuture};
use fogbank_adapter::{Actuate, AdapterContext, Plugin};
use fogbank_taas::thing::guess_type;
use fogbank_taas::{
    ActuationResult, Ingested, Kind, Reading, Receipt, ThingReading, ThingService, Timestamp, Value,
};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use serde::Deserialize;

use convention::{Inbound, Sample};

/// Settings of the MQTT adapter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// `embedded` (a broker on `listen`), `external` (a client of
    /// `broker`) or `off`.
    pub mode: String,
    /// Where the embedded broker listens.
    pub listen: SocketAddr,
    /// The external broker: `host:port` or `mqtt://host:port`.
    pub broker: String,
    /// Stable across restarts, so that the broker keeps the session.
    /// Empty: `fogbank-{gateway id}`.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive_secs: u64,
    /// Larger messages are refused by the client and logged.
    pub max_message_bytes: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            mode: "embedded".into(),
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            broker: "127.0.0.1:1883".into(),
            client_id: String::new(),
            username: None,
            password: None,
            keep_alive_secs: 30,
            max_message_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("mqtt.broker {0:?} is not host:port or mqtt://host:port")]
    Broker(String),
    #[error("mqtt.mode is embedded, external or off, not {0:?}")]
    Mode(String),
}

impl MqttConfig {
    /// Host and port of the external broker.
    pub fn broker_address(&self) -> Result<(String, u16), ConfigError> {
        let bad = || ConfigError::Broker(self.broker.clone());
        let rest = self
            .broker
            .strip_prefix("mqtt://")
            .unwrap_or(&self.broker)
            .trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok((host.trim_matches(['[', ']']).to_owned(), port))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.mode.as_str() {
            "off" | "embedded" => Ok(()),
            "external" => self.broker_address().map(|_| ()),
            other => Err(ConfigError::Mode(other.to_owned())),
        }
    }
}

pub struct Mqtt {
    pub config: MqttConfig,
    /// The broker to connect to: the embedded one's local address, or the
    /// external one's host and port.
    pub broker: (String, u16),
}

impl Mqtt {
    /// Starts the embedded broker if the mode asks for one; `None` for `off`.
    pub fn new(config: MqttConfig) -> Result<Option<Self>, StartError> {
        let broker = match config.mode.as_str() {
            "off" => return Ok(None),
            "embedded" => {
                let local = embedded::start(config.listen, config.max_message_bytes)?;
                (local.ip().to_string(), local.port())
            }
            _ => config.broker_address()?,
        };
        Ok(Some(Mqtt { config, broker }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Embedded(#[from] embedded::EmbeddedError),
}

impl Plugin for Mqtt {
    fn name(&self) -> &str {
        "mqtt"
    }

    fn start(&self, context: AdapterContext) -> Recipient<Actuate> {
        MqttActor {
            config: self.config.clone(),
            broker: self.broker.clone(),
            context,
            client: None,
        }
        .start()
        .recipient()
    }
}

struct MqttActor {
    config: MqttConfig,
    broker: (String, u16),
    context: AdapterContext,
    client: Option<AsyncClient>,
}

impl Actor for MqttActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (host, port) = self.broker.clone();
        let client_id = match self.config.client_id.as_str() {
            "" => format!("fogbank-{}", self.context.gateway()),
            id => id.to_owned(),
        };
        let mut options = MqttOptions::new(client_id.clone(), host.clone(), port);
        options
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_secs(self.config.keep_alive_secs.max(5)))
            .set_max_packet_size(self.config.max_message_bytes, self.config.max_message_bytes);
        if let (Some(user), Some(password)) = (&self.config.username, &self.config.password) {
            options.set_credentials(user.clone(), password.clone());
        }
        let (client, eventloop) = AsyncClient::new(options, 256);
        self.client = Some(client.clone());
        tracing::info!(broker = %format!("{host}:{port}"), %client_id, "MQTT adapter connecting");
        let session = Session {
            context: self.context.clone(),
            client,
            client_id,
        };
        ctx.spawn(session.run(eventloop).into_actor(self));
    }
}

/// The receive side: polls the connection, stores, then acknowledges.
struct Session {
    context: AdapterContext,
    client: AsyncClient,
    client_id: String,
}

impl Session {
    async fn run(self, mut eventloop: EventLoop) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_millis(100);
                    tracing::info!(
                        session_present = ack.session_present,
                        "MQTT broker connected"
                    );
                    // A session the broker kept still has the subscription.
                    if !ack.session_present
                        && let Err(error) = self
                            .client
                            .try_subscribe(convention::SUBSCRIPTION, QoS::AtLeastOnce)
                    {
                        tracing::error!(%error, "cannot subscribe");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => self.receive(publish),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "MQTT connection lost");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn receive(&self, publish: Publish) {
        let span = tracing::debug_span!("mqtt", topic = %publish.topic, pkid = publish.pkid);
        let _entered = span.enter();
        let receipt = Receipt {
            slot: format!("mqtt/{}/{}", self.client_id, publish.pkid).into_bytes(),
            fingerprint: fingerprint(&publish),
            redelivered: publish.dup,
        };
        let stored = match convention::decode(&publish.topic, &publish.payload, Timestamp::now()) {
            Ok(Inbound::Samples { device, samples }) => {
                self.store(&receipt, &device, samples, publish.qos)
            }
            Ok(Inbound::Status { device, online }) => self
                .context
                .set_device_available(&device, online)
                .map_err(|e| e.to_string()),
            Ok(Inbound::Ignored) => Ok(()),
            Err(error) => {
                // Bad input is dropped, acknowledged so the broker does not
                // resend it forever, and logged with its topic.
                tracing::warn!(topic = %publish.topic, %error, "dropped an MQTT message");
                Ok(())
            }
        };
        match stored {
            Ok(()) => {
                if let Err(error) = self.client.try_ack(&publish) {
                    tracing::warn!(%error, "cannot acknowledge; the broker will resend");
                } else if publish.qos != QoS::AtMostOnce
                    && let Err(error) = self.context.release(&receipt.slot)
                {
                    tracing::warn!(%error, "cannot release a receipt");
                }
            }
            // Not acknowledged: the broker keeps it and resends it.
            Err(error) => {
                tracing::error!(topic = %publish.topic, %error, "MQTT reading not stored")
            }
        }
    }

    fn store(
        &self,
        receipt: &Receipt,
        device: &str,
        samples: Vec<Sample>,
        qos: QoS,
    ) -> Result<(), String> {
        let mut readings = Vec::with_capacity(samples.len());
        for sample in samples {
            let thing = self
                .context
                .thing_id(device, &sample.resource)
                .map_err(|e| e.to_string())?;
            if self.context.thing(&thing).is_none() {
                self.context
                    .announce(new_thing(thing.clone(), device, &sample))
                    .map_err(|e| e.to_string())?;
            }
            readings.push(ThingReading {
                thing,
                reading: Reading {
                    time: sample.time,
                    value: sample.value,
                },
            });
        }
        let outcome = if qos == QoS::AtMostOnce {
            self.context.emit(readings).map(|()| Ingested::Stored)
        } else {
            self.context.emit_once(receipt, readings)
        };
        match outcome.map_err(|e| e.to_string())? {
            Ingested::Stored => Ok(()),
            Ingested::AlreadyStored => {
                tracing::info!("redelivered message was already stored");
                Ok(())
            }
        }
    }
}

/// A thing service for a resource first heard of: type and unit guessed
/// from its name unless the message says, switches are actuators.
fn new_thing(id: fogbank_taas::ThingId, device: &str, sample: &Sample) -> ThingService {
    let (semantic_type, guessed_unit) = guess_type(&sample.resource);
    let kind = if semantic_type == "switch" {
        Kind::Actuator
    } else {
        Kind::Sensor
    };
    let mut thing = ThingService::new(
        id,
        kind,
        semantic_type,
        sample.unit.as_deref().or(guessed_unit),
    );
    thing.data_type = sample.value.data_type();
    thing.device_address = format!("things/{device}");
    thing
}

/// FNV-1a over topic and payload: stable across builds, unlike std's hasher.
fn fingerprint(publish: &Publish) -> Vec<u8> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in publish
        .topic
        .as_bytes()
        .iter()
        .chain([0u8].iter())
        .chain(publish.payload.iter())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.to_be_bytes().to_vec()
}

impl Handler<Actuate> for MqttActor {
    type Result = ResponseFuture<ActuationResult>;

    fn handle(&mut self, Actuate(command): Actuate, _: &mut Self::Context) -> Self::Result {
        let client = self.client.clone();
        let device = command.thing.device().to_owned();
        let resource = command.thing.resource().to_owned();
        Box::pin(async move {
            let client = client.ok_or("the MQTT adapter is not connected")?;
            let (topic, payload) = convention::command(&device, &resource, &command.value);
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|e| format!("cannot publish the command: {e}"))?;
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
        assert_eq!(at("127.0.0.1:1883"), Ok(("127.0.0.1".into(), 1883)));
        assert_eq!(
            at("mqtt://broker.local:1884/"),
            Ok(("broker.local".into(), 1884))
        );
        assert_eq!(at("mqtt://[::1]:1883"), Ok(("::1".into(), 1883)));
        assert!(at("broker").is_err());
        assert!(at(":1883").is_err());
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
