//! The receive side of the adapter, whoever reads the messages off the
//! wire: what a device's message means (conventions, mappings, Home
//! Assistant discovery), the per-device rate limit, and storing a burst of
//! messages in one write. Its caller acknowledges: the adapter's client
//! session for an external broker, the embedded broker's front door for
//! devices on the gateway's own port.

use fogbank_adapter::untrusted::{self, Excerpt};
use fogbank_adapter::{AdapterContext, AdapterError};
use fogbank_taas::senml;
use fogbank_taas::thing::guess_type;
use fogbank_taas::{
    DataType, Delivery, Ingested, Kind, Reading, Receipt, ThingId, ThingReading, ThingService,
    Timestamp,
};

use crate::convention::{self, Inbound, Sample};
use crate::discovery::{self, Component, Discovery, Entity};
use crate::{SharedEntities, limit, mapping};

/// One PUBLISH as a device sent it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    /// 0, 1 or 2.
    pub qos: u8,
    /// The packet id (0 at QoS 0).
    pub pkid: u16,
    /// The sender's DUP flag: a repeat of a message not acknowledged.
    pub dup: bool,
}

/// What the caller does with a message once its burst was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Stored, or dropped for good (bad input, over a limit): acknowledge
    /// it, so that the sender does not resend it forever.
    Acknowledge,
    /// Not stored (the store failed): do not acknowledge, so it comes again.
    Withhold,
}

/// Decodes and stores devices' messages for one adapter.
pub struct Receiver {
    context: AdapterContext,
    entities: SharedEntities,
    limiter: limit::RateLimiter,
    max_message_bytes: usize,
    mappings: Vec<mapping::Mapping>,
    /// State and availability topics of entities discovered since the
    /// caller last asked (a client session subscribes to them).
    discovered_topics: Vec<String>,
    /// Devices that follow a transport-management policy.
    movable: crate::transport::Movable,
    /// The slot names of the last release, kept for the next one.
    released: Released,
}

/// Slot names back to back, and where each ends.
#[derive(Default)]
struct Released {
    slots: Vec<u8>,
    ends: Vec<usize>,
}

/// Where the receipt of a device's publish is kept until the device has
/// its acknowledgement: per client session and packet id.
pub fn receipt_slot(client_id: &str, pkid: u16) -> Vec<u8> {
    let mut slot = Vec::with_capacity(client_id.len() + 11);
    push_receipt_slot(&mut slot, client_id, pkid);
    slot
}

/// Appends `mqtt/{client_id}/{pkid}` to `to`. Written out rather than
/// formatted: every stored QoS 1 message names its slot twice, when it is
/// stored and when its acknowledgement has gone.
fn push_receipt_slot(to: &mut Vec<u8>, client_id: &str, pkid: u16) {
    to.extend_from_slice(b"mqtt/");
    to.extend_from_slice(client_id.as_bytes());
    to.push(b'/');
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut rest = pkid;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    to.extend_from_slice(&digits[at..]);
}

/// Where a message of a burst stands before the store write.
enum Handled {
    /// Its readings are in the burst's write.
    Staged,
    /// Acted on; nothing to store.
    Done,
    Refused(Refusal),
}

/// Why a message was not taken: bad input is dropped (and acknowledged, or
/// its sender would send it again forever); a storage failure is not
/// acknowledged, so that it is sent again.
enum Refusal {
    BadInput(String),
    /// Bytes in the message, over `max_message_bytes`.
    Oversized(usize),
    RateLimited,
    NotStored(String),
}

impl From<AdapterError> for Refusal {
    fn from(error: AdapterError) -> Self {
        match error {
            AdapterError::Store(_) => Refusal::NotStored(error.to_string()),
            AdapterError::Ingest(ref ingest) if ingest.is_storage_failure() => {
                Refusal::NotStored(error.to_string())
            }
            other => Refusal::BadInput(other.to_string()),
        }
    }
}

impl Receiver {
    pub(crate) fn new(
        context: AdapterContext,
        entities: SharedEntities,
        max_rate_per_device: f64,
        max_message_bytes: usize,
        mappings: Vec<mapping::Mapping>,
        movable: crate::transport::Movable,
    ) -> Self {
        Receiver {
            context,
            entities,
            limiter: limit::RateLimiter::new(max_rate_per_device),
            max_message_bytes,
            mappings,
            discovered_topics: Vec::new(),
            movable,
            released: Released::default(),
        }
    }

    pub fn context(&self) -> &AdapterContext {
        &self.context
    }

    /// Topics learnt from discovery since the last call.
    pub fn take_discovered_topics(&mut self) -> Vec<String> {
        std::mem::take(&mut self.discovered_topics)
    }

    /// Handles a burst of messages of the session `client_id`: decodes
    /// each, stores what they carry in one write, and says for each whether
    /// it may be acknowledged. A stored QoS 1/2 message leaves a receipt
    /// at [`receipt_slot`], for the caller to release once acknowledged.
    pub fn receive(&mut self, client_id: &str, burst: &[Message<'_>]) -> Vec<Verdict> {
        let mut deliveries = Vec::new();
        let mut handled = Vec::with_capacity(burst.len());
        for publish in burst {
            let span =
                tracing::debug_span!("mqtt", topic = %Excerpt(publish.topic), pkid = publish.pkid);
            let _entered = span.enter();
            self.context.count("mqtt_messages");
            let outcome = if publish.payload.len() > self.max_message_bytes {
                Err(Refusal::Oversized(publish.payload.len()))
            } else if publish.topic.starts_with("homeassistant/")
                || self
                    .limiter
                    .allow(limit::device_key(publish.topic), std::time::Instant::now())
            {
                self.handle(publish)
            } else {
                Err(Refusal::RateLimited)
            };
            let outcome = match outcome {
                Ok(Some(readings)) => {
                    deliveries.push(Delivery {
                        receipt: (publish.qos > 0).then(|| Receipt {
                            slot: receipt_slot(client_id, publish.pkid),
                            fingerprint: fingerprint(publish),
                            redelivered: publish.dup,
                        }),
                        readings,
                    });
                    Handled::Staged
                }
                Ok(None) => Handled::Done,
                Err(refusal) => Handled::Refused(refusal),
            };
            handled.push(outcome);
        }
        let mut stored = self.context.emit_deliveries(deliveries).into_iter();
        burst
            .iter()
            .zip(handled)
            .map(|(publish, outcome)| {
                let outcome = match outcome {
                    Handled::Staged => match stored.next() {
                        Some(Ok(Ingested::AlreadyStored)) => {
                            tracing::info!(topic = %Excerpt(publish.topic), "redelivered message was already stored");
                            Ok(())
                        }
                        Some(Ok(Ingested::Stored)) => Ok(()),
                        Some(Err(error)) => Err(Refusal::from(error)),
                        None => Err(Refusal::NotStored("no outcome".into())),
                    },
                    Handled::Done => Ok(()),
                    Handled::Refused(refusal) => Err(refusal),
                };
                match self.acknowledgeable(client_id, publish.topic, outcome) {
                    true => Verdict::Acknowledge,
                    false => Verdict::Withhold,
                }
            })
            .collect()
    }

    /// Forgets the receipts of `client_id`'s messages `pkids`, whose
    /// sender has their acknowledgement.
    pub fn release(&mut self, client_id: &str, pkids: &[u16]) {
        let Released { slots, ends } = &mut self.released;
        slots.clear();
        ends.clear();
        for &pkid in pkids {
            push_receipt_slot(slots, client_id, pkid);
            ends.push(slots.len());
        }
        let mut start = 0;
        let each = ends.iter().map(|&end| {
            let slot = &slots[start..end];
            start = end;
            slot
        });
        if let Err(error) = self.context.release_all(each) {
            tracing::warn!(%error, "cannot release receipts");
        }
    }

    /// Whether a message may be acknowledged: stored, or dropped for good.
    /// A message that could not be stored is not, so its sender resends it.
    /// What a device sent reaches the log as an excerpt, and warnings about
    /// one session are rate-limited: a device decides neither how much the
    /// gateway logs nor what the lines say.
    fn acknowledgeable(&self, session: &str, topic: &str, outcome: Result<(), Refusal>) -> bool {
        let topic = Excerpt(topic);
        let warn = || untrusted::may_warn(session);
        match outcome {
            Ok(()) => true,
            Err(Refusal::RateLimited) => {
                self.context.count("mqtt_rate_limited");
                tracing::debug!(%topic, "dropped an MQTT message over the device's rate");
                true
            }
            Err(Refusal::Oversized(bytes)) => {
                self.context.count("mqtt_oversized");
                if let Some(held_back) = warn() {
                    tracing::warn!(%topic, bytes, limit = self.max_message_bytes, held_back, "dropped an oversized MQTT message");
                }
                true
            }
            Err(Refusal::BadInput(error)) => {
                self.context.count("mqtt_malformed");
                if let Some(held_back) = warn() {
                    tracing::warn!(%topic, error = %Excerpt(&error), held_back, "dropped an MQTT message");
                }
                true
            }
            Err(Refusal::NotStored(error)) => {
                self.context.count("mqtt_not_stored");
                tracing::error!(%topic, %error, "MQTT reading not stored; it will be sent again");
                false
            }
        }
    }

    /// What one message means: readings to store (`Some`), or nothing to
    /// store once it has been acted on (`None`).
    fn handle(&mut self, publish: &Message<'_>) -> Result<Option<Vec<ThingReading>>, Refusal> {
        let topic = publish.topic;
        if topic.starts_with("homeassistant/") {
            return self.discover(topic, publish.payload).map(|()| None);
        }
        let (stated, availability) = self.entities.lock().on_topic(topic);
        if !stated.is_empty() || !availability.is_empty() {
            let now = self.context.arrival_time();
            let readings: Vec<ThingReading> = stated
                .iter()
                .filter_map(|(id, entity)| {
                    let value = entity.reading(publish.payload)?;
                    Some(ThingReading {
                        thing: id.clone(),
                        reading: Reading { time: now, value },
                    })
                })
                .collect();
            for entity in &availability {
                let text = String::from_utf8_lossy(publish.payload);
                let online = text.trim() == entity.payload_available;
                if online || text.trim() == entity.payload_not_available {
                    self.context.set_device_available(&entity.device, online)?;
                }
            }
            return Ok(Some(readings));
        }
        let now = self.context.arrival_time();
        if let Some((mapping, matched)) = self
            .mappings
            .iter()
            .find_map(|m| m.matches(topic).map(|found| (m, found)))
        {
            let samples = mapped_samples(mapping, &matched.resource, publish.payload, now)?;
            return self.samples(&matched.device, samples, mapping.semantic_type.as_deref());
        }
        match convention::decode(topic, publish.payload, now) {
            Ok(Inbound::Samples { device, samples }) => self.samples(&device, samples, None),
            Ok(Inbound::Status { device, online }) => {
                self.context.set_device_available(&device, online)?;
                Ok(None)
            }
            Ok(Inbound::Policy { device, follows }) => {
                let mut movable = self.movable.lock();
                if follows {
                    movable.insert(device);
                } else {
                    movable.remove(&device);
                }
                Ok(None)
            }
            Ok(Inbound::Ignored) => Ok(None),
            Err(error) => Err(Refusal::BadInput(error.to_string())),
        }
    }

    /// The readings of samples of one device, creating thing services for
    /// resources first heard of (of `semantic_type` when a mapping says so).
    fn samples(
        &self,
        device: &str,
        samples: Vec<Sample>,
        semantic_type: Option<&str>,
    ) -> Result<Option<Vec<ThingReading>>, Refusal> {
        let mut readings = Vec::with_capacity(samples.len());
        for sample in samples {
            let thing = self
                .context
                .thing_id(device, &sample.resource)
                .map_err(|e| Refusal::BadInput(e.to_string()))?;
            let held = self.context.inspect_thing(&thing, |t| {
                (t.gateway != self.context.gateway()).then(|| t.clone())
            });
            match held {
                None => {
                    let mut service = new_thing(thing.clone(), device, &sample);
                    if let Some(semantic_type) = semantic_type {
                        service.semantic_type = semantic_type.to_owned();
                    }
                    self.context.announce(service)?;
                }
                // Another gateway's: a device that moved here announces its
                // things as they were (the hub takes them if the device was
                // handed over, and ignores them otherwise).
                Some(Some(elsewhere)) => self.context.announce(elsewhere)?,
                Some(None) => {}
            }
            readings.push(ThingReading {
                thing,
                reading: Reading {
                    time: sample.time,
                    value: sample.value,
                },
            });
        }
        Ok(Some(readings))
    }

    fn discover(&mut self, topic: &str, payload: &[u8]) -> Result<(), Refusal> {
        match discovery::decode(topic, payload).map_err(|e| Refusal::BadInput(e.to_string()))? {
            Discovery::Add(entity) => {
                let id = self
                    .context
                    .thing_id(&entity.device, &entity.resource)
                    .map_err(|e| Refusal::BadInput(e.to_string()))?;
                self.context.announce(entity_thing(id.clone(), &entity))?;
                self.discovered_topics.push(entity.state_topic.clone());
                self.discovered_topics
                    .extend(entity.availability_topic.clone());
                tracing::info!(thing = %id, state_topic = %entity.state_topic, "discovered a Home Assistant entity");
                self.entities
                    .lock()
                    .by_config_topic
                    .insert(topic.to_owned(), (id, *entity));
                Ok(())
            }
            Discovery::Remove { config_topic } => {
                let removed = self.entities.lock().by_config_topic.remove(&config_topic);
                if let Some((id, _)) = removed {
                    self.context.withdraw(&id)?;
                    tracing::info!(thing = %id, "a Home Assistant entity was removed");
                }
                Ok(())
            }
            Discovery::Ignored => Ok(()),
        }
    }
}

/// The samples a message on a mapped topic carries.
fn mapped_samples(
    mapping: &mapping::Mapping,
    resource: &str,
    payload: &[u8],
    now: Timestamp,
) -> Result<Vec<Sample>, Refusal> {
    if mapping.decoder == "senml" {
        let records = senml::parse_json(payload)
            .and_then(|records| senml::resolve(&records, now))
            .map_err(|e| Refusal::BadInput(e.to_string()))?;
        return Ok(records
            .into_iter()
            .map(|r| Sample {
                resource: if r.name.is_empty() {
                    resource.to_owned()
                } else {
                    fogbank_taas::id::sanitize_segment(&r.name)
                },
                unit: r.unit.or_else(|| mapping.unit.clone()),
                value: r.value,
                time: r.time,
            })
            .collect());
    }
    let value = mapping
        .value(payload)
        .ok_or_else(|| Refusal::BadInput(format!("no value for decoder {}", mapping.decoder)))?;
    Ok(vec![Sample {
        resource: resource.to_owned(),
        unit: mapping.unit.clone(),
        value,
        time: now,
    }])
}

/// The thing service of a discovered entity.
fn entity_thing(id: ThingId, entity: &Entity) -> ThingService {
    let commandable = entity.command_topic.is_some()
        && matches!(entity.component, Component::Switch | Component::Light);
    let kind = if commandable {
        Kind::Actuator
    } else {
        Kind::Sensor
    };
    let mut thing = ThingService::new(id, kind, &entity.semantic_type, entity.unit.as_deref());
    thing.data_type = match entity.component {
        Component::Sensor => DataType::Number,
        Component::BinarySensor | Component::Switch | Component::Light => DataType::Boolean,
    };
    thing.device_address = entity.state_topic.clone();
    thing
        .metadata
        .insert("ha_config_topic".into(), entity.config_topic.clone().into());
    thing
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
fn fingerprint(publish: &Message<'_>) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Slots written out are the slots stored before: receipts a gateway
        /// left on disk are released by the same names after an upgrade.
        #[test]
        fn a_slot_names_its_session_and_packet(client_id in "\\PC{0,30}", pkid in any::<u16>()) {
            prop_assert_eq!(receipt_slot(&client_id, pkid), format!("mqtt/{client_id}/{pkid}").into_bytes());
        }
    }
}
