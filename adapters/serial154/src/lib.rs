//! The IEEE 802.15.4 adapter (`serial154`): radios on a serial line
//! (Contiki's or Zephyr's slip-radio firmware on a USB dongle), their
//! devices' frames in our compact format or as CoAP over 6LoWPAN, and
//! commands back over the air.
//!
//! Layers, each a pure module: [`slip`] (framing) → [`mac`] (IEEE 802.15.4)
//! → [`uplink`] (compact SenML, or [`sixlowpan`] → CoAP). [`radio`] owns the
//! serial line; the actor here ties one or more radios to the hub.

pub mod mac;
pub mod radio;
pub mod sixlowpan;
pub mod slip;
pub mod uplink;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, AsyncContext, Context, Handler, Message, Recipient, ResponseFuture,
};
use fogbank_adapter::{Actuate, AdapterContext, Plugin};
use fogbank_taas::thing::guess_type;
use fogbank_taas::{
    ActuationError, ActuationResult, Kind, Reading, ThingReading, ThingService, Timestamp,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use mac::Address;
use radio::{LineEvent, Writer};
use sixlowpan::Reassembly;
use uplink::Dialect;

/// How often a radio that has not told its address is asked again.
const ASK_ADDRESS_EVERY: Duration = Duration::from_secs(2);

/// How long a command waits for the radio's transmit status.
const TRANSMIT_WAIT: Duration = Duration::from_secs(5);

/// One radio on a serial line.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RadioConfig {
    /// Names the radio in logs; default: the port's file name.
    #[serde(default)]
    pub name: String,
    pub path: PathBuf,
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Our PAN id and short address, for frames we send.
    #[serde(default = "default_pan")]
    pub pan_id: u16,
    #[serde(default)]
    pub short_address: u16,
    /// The radio passes each frame's FCS on (check and strip it).
    #[serde(default)]
    pub fcs: bool,
}

fn default_baud() -> u32 {
    115_200
}

fn default_pan() -> u16 {
    0xabcd
}

impl RadioConfig {
    /// A radio at `PATH[@BAUD]` with the defaults.
    pub fn parse(spec: &str) -> Result<RadioConfig, String> {
        let (path, baud) = match spec.rsplit_once('@') {
            Some((path, baud)) => (
                path,
                baud.parse()
                    .map_err(|_| format!("{baud:?} is not a baud rate"))?,
            ),
            None => (spec, default_baud()),
        };
        if path.is_empty() {
            return Err("the serial port path is empty".into());
        }
        Ok(RadioConfig {
            name: String::new(),
            path: path.into(),
            baud,
            pan_id: default_pan(),
            short_address: 0,
            fcs: false,
        })
    }

    fn label(&self) -> String {
        match self.name.as_str() {
            "" => self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "radio".into()),
            name => name.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Serial154Config {
    pub radios: Vec<RadioConfig>,
}

/// The adapter plugin: all configured radios.
pub struct Serial154 {
    pub radios: Vec<RadioConfig>,
}

impl Plugin for Serial154 {
    fn name(&self) -> &str {
        "serial154"
    }

    fn start(&self, context: AdapterContext) -> Recipient<Actuate> {
        let radios = self.radios.iter().cloned().map(RadioState::new).collect();
        Serial154Actor { context, radios }.start().recipient()
    }
}

struct RadioState {
    config: RadioConfig,
    writer: Option<Writer>,
    /// The radio's own address: its EUI-64 once it answered `?M`.
    own: Address,
    address_known: bool,
    reassembly: Reassembly,
    /// Devices heard, and how each resource takes commands.
    devices: HashMap<String, (Address, HashMap<String, Dialect>)>,
    next_session: u8,
    next_sequence: u8,
    next_message_id: u16,
    /// Commands waiting for `!R`, by session id.
    pending: HashMap<u8, oneshot::Sender<(u8, u8)>>,
}

impl RadioState {
    fn new(config: RadioConfig) -> Self {
        let own = Address::Short(config.short_address);
        RadioState {
            config,
            writer: None,
            own,
            address_known: false,
            reassembly: Reassembly::default(),
            devices: HashMap::new(),
            next_session: 0,
            next_sequence: 0,
            next_message_id: 1,
            pending: HashMap::new(),
        }
    }

    /// Sends `payload` to `device` in a data frame through `!S`; returns
    /// the session id and MAC sequence number.
    fn transmit(
        &mut self,
        device: Address,
        payload: &[u8],
    ) -> Result<Transmission, ActuationError> {
        let writer = self.writer.clone().ok_or(ActuationError::Disconnected(
            "the radio's serial port is not open",
        ))?;
        self.next_session = self.next_session.wrapping_add(1);
        self.next_sequence = self.next_sequence.wrapping_add(1);
        let (session, sequence) = (self.next_session, self.next_sequence);
        let frame = mac::data_frame(sequence, self.config.pan_id, device, self.own, payload);
        let mut message = vec![b'!', b'S', session];
        message.extend_from_slice(&frame);
        let (tx, rx) = oneshot::channel();
        self.pending.insert(session, tx);
        writer
            .send(&message)
            .map_err(|e| ActuationError::Send(format!("cannot write to the radio: {e}")))?;
        Ok(Transmission {
            session,
            sequence,
            status: rx,
        })
    }
}

/// A frame handed to the radio: slip-radio's session id, the MAC sequence
/// number, and where its transmit status (status, attempts) will come.
struct Transmission {
    session: u8,
    sequence: u8,
    status: oneshot::Receiver<(u8, u8)>,
}

struct Serial154Actor {
    context: AdapterContext,
    radios: Vec<RadioState>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct RadioEvent(usize, LineEvent);

impl Actor for Serial154Actor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        for (index, radio) in self.radios.iter().enumerate() {
            let address = ctx.address();
            let label = radio.config.label();
            let spawned = radio::spawn(
                label.clone(),
                radio.config.path.clone(),
                radio.config.baud,
                move |event| {
                    if !address.connected() {
                        return false;
                    }
                    address.do_send(RadioEvent(index, event));
                    true
                },
            );
            if let Err(error) = spawned {
                tracing::error!(radio = %label, %error, "cannot start the radio's thread");
                ctx.stop();
            }
        }
        // A radio that booted after the port opened missed the first `?M`.
        ctx.run_interval(ASK_ADDRESS_EVERY, |actor, _| {
            for radio in actor.radios.iter().filter(|r| !r.address_known) {
                if let Some(writer) = &radio.writer {
                    let _ = writer.send(b"?M");
                }
            }
        });
    }
}

impl Handler<RadioEvent> for Serial154Actor {
    type Result = ();

    fn handle(&mut self, RadioEvent(index, event): RadioEvent, _: &mut Self::Context) {
        let Some(radio) = self.radios.get_mut(index) else {
            return;
        };
        let label = radio.config.label();
        match event {
            LineEvent::Opened(writer) => {
                tracing::info!(radio = %label, path = %radio.config.path.display(), "radio connected");
                // Ask for the radio's MAC address (slip-radio's `?M`).
                if let Err(error) = writer.send(b"?M") {
                    tracing::warn!(radio = %label, %error, "cannot ask the radio for its address");
                }
                radio.writer = Some(writer);
            }
            LineEvent::Closed(reason) => {
                tracing::warn!(radio = %label, %reason, "radio disconnected; reopening");
                radio.writer = None;
                radio.address_known = false;
                for (_, tx) in radio.pending.drain() {
                    drop(tx);
                }
                for device in radio.devices.keys() {
                    if let Err(error) = self.context.set_device_available(device, false) {
                        tracing::warn!(%error, device, "cannot mark the device unavailable");
                    }
                }
            }
            LineEvent::Frame(Err(error)) => {
                self.context.count("serial154_bad_framing");
                tracing::debug!(radio = %label, %error, "dropped a serial frame");
            }
            LineEvent::Frame(Ok(frame)) => self.frame(index, &frame),
        }
    }
}

impl Serial154Actor {
    fn frame(&mut self, index: usize, frame: &[u8]) {
        let label = self.radios[index].config.label();
        match frame.first() {
            Some(b'!') => self.control(index, frame),
            Some(b'?') => {
                tracing::debug!(radio = %label, request = ?String::from_utf8_lossy(frame), "radio request ignored")
            }
            // slip-radio's debug output: text in frames that start with CR.
            Some(b'\r') => {
                tracing::info!(radio = %label, text = %String::from_utf8_lossy(&frame[1..]).trim_end(), "radio says")
            }
            _ => self.data(index, frame),
        }
    }

    fn control(&mut self, index: usize, frame: &[u8]) {
        let radio = &mut self.radios[index];
        match frame.get(1) {
            Some(b'M') if frame.len() >= 10 => {
                let mut eui = [0u8; 8];
                eui.copy_from_slice(&frame[2..10]);
                radio.own = Address::Extended(u64::from_be_bytes(eui));
                radio.address_known = true;
                tracing::info!(radio = %radio.config.label(), address = %radio.own, "radio address");
            }
            Some(b'R') if frame.len() >= 5 => {
                if let Some(tx) = radio.pending.remove(&frame[2]) {
                    let _ = tx.send((frame[3], frame[4]));
                }
            }
            _ => {
                self.context.count("serial154_unknown_control");
                tracing::debug!(message = ?String::from_utf8_lossy(frame), "unknown radio message");
            }
        }
    }

    fn data(&mut self, index: usize, bytes: &[u8]) {
        let radio = &mut self.radios[index];
        let frame = match mac::parse(bytes, radio.config.fcs) {
            Ok(frame) => frame,
            Err(error) => {
                self.context.count(match error {
                    mac::MacError::Fcs { .. } => "serial154_bad_fcs",
                    _ => "serial154_malformed",
                });
                tracing::debug!(%error, "dropped a MAC frame");
                return;
            }
        };
        let now = self.context.arrival_time();
        let uplink = match uplink::decode(
            &frame,
            radio.own,
            &mut radio.reassembly,
            now,
            Instant::now(),
        ) {
            Ok(Some(uplink)) => uplink,
            Ok(None) => return,
            Err(error) => {
                self.context.count("serial154_malformed");
                tracing::debug!(%error, source = %frame.source, "dropped a frame's payload");
                return;
            }
        };
        let mut readings = Vec::with_capacity(uplink.samples.len());
        let entry = radio
            .devices
            .entry(uplink.device.clone())
            .or_insert_with(|| (uplink.address, HashMap::new()));
        entry.0 = uplink.address;
        for (sample, dialect) in uplink.samples {
            let thing = match self.context.thing_id(&uplink.device, &sample.resource) {
                Ok(thing) => thing,
                Err(error) => {
                    self.context.count("serial154_malformed");
                    tracing::debug!(%error, "a resource name that is no thing id");
                    continue;
                }
            };
            let current = self.context.inspect_thing(&thing, |t| {
                t.available && t.data_type == sample.value.data_type()
            });
            if current != Some(true) {
                let service = self
                    .context
                    .thing(&thing)
                    .unwrap_or_else(|| new_thing(thing.clone(), &uplink.device, &sample));
                let service = ThingService {
                    available: true,
                    data_type: sample.value.data_type(),
                    ..service
                };
                if let Err(error) = self.context.announce(service) {
                    tracing::warn!(%error, %thing, "cannot announce a thing service");
                    continue;
                }
            }
            entry.1.insert(sample.resource.clone(), dialect);
            readings.push(ThingReading {
                thing,
                reading: Reading {
                    time: sample.time,
                    value: sample.value,
                },
            });
        }
        match self.context.emit(readings) {
            Ok(()) => {
                self.context.count("serial154_frames");
                // Only now may a confirmable CoAP message be acknowledged.
                if let Some(reply) = uplink.reply
                    && let Err(error) = radio.transmit(uplink.address, &reply)
                {
                    tracing::warn!(%error, "cannot acknowledge a CoAP message");
                }
            }
            Err(error) => {
                self.context.count("serial154_not_stored");
                tracing::error!(%error, device = %uplink.device, "802.15.4 readings not stored");
            }
        }
    }
}

fn new_thing(id: fogbank_taas::ThingId, device: &str, sample: &uplink::Sample) -> ThingService {
    let (semantic_type, unit) = guess_type(&sample.resource);
    let kind = if semantic_type == "switch" {
        Kind::Actuator
    } else {
        Kind::Sensor
    };
    ThingService::new(id, kind, semantic_type, sample.unit.as_deref().or(unit))
        .with_device_address(&format!("802.15.4/{device}"))
}

impl Handler<Actuate> for Serial154Actor {
    type Result = ResponseFuture<ActuationResult>;

    fn handle(&mut self, Actuate(command): Actuate, _: &mut Self::Context) -> Self::Result {
        let device = command.thing.device().to_owned();
        let resource = command.thing.resource().to_owned();
        let target = self.radios.iter_mut().find_map(|radio| {
            let (address, dialects) = radio.devices.get(&device)?;
            let (address, dialect) = (*address, dialects.get(&resource).cloned());
            Some((radio, address, dialect))
        });
        let sent = match target {
            None => Err(ActuationError::NoDevice {
                thing: command.thing.clone(),
                why: "has not been heard on any radio",
            }),
            Some((radio, address, dialect)) => {
                let payload = match dialect {
                    Some(Dialect::Coap { path }) => {
                        radio.next_message_id = radio.next_message_id.wrapping_add(1);
                        let put = uplink::coap_put(&path, &command.value, radio.next_message_id);
                        let link = sixlowpan::Link {
                            source: radio.own,
                            destination: address,
                            pan: radio.config.pan_id,
                        };
                        sixlowpan::compress(link, uplink::COAP_PORT, uplink::COAP_PORT, &put)
                    }
                    _ => uplink::compact_command(&resource, &command.value, Timestamp::now()),
                };
                radio.transmit(address, &payload)
            }
        };
        Box::pin(async move {
            let Transmission {
                session,
                sequence,
                status,
            } = sent?;
            match tokio::time::timeout(TRANSMIT_WAIT, status).await {
                Ok(Ok((0, attempts))) => {
                    tracing::info!(session, sequence, attempts, "command sent over the air");
                    Ok(None)
                }
                Ok(Ok((status, attempts))) => Err(ActuationError::Refused(format!(
                    "the radio reported transmit status {status} after {attempts} attempts (MAC sequence {sequence})"
                ))),
                Ok(Err(_)) => Err(ActuationError::Disconnected(
                    "the radio went away before reporting",
                )),
                Err(_) => Err(ActuationError::NoAnswer(format!(
                    "no transmit status from the radio (MAC sequence {sequence})"
                ))),
            }
        })
    }
}
