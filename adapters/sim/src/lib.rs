//! The simulator adapter (`sim`): the campus of the S-MANAGE paper.
//!
//! Two buildings of four floors. Each floor is one device with a
//! temperature, humidity and illuminance sensor, a motion sensor and a
//! switchable lamp. Values follow the time of day, drift and jitter; the
//! lamp takes effect (the floor gets brighter at once and slowly warmer),
//! so an application that switches it can see what it did.

mod model;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Recipient};
use fogbank_adapter::{Actuate, AdapterContext, Plugin};
use fogbank_taas::{
    ActuationError, ActuationResult, Delivery, DeviceTransport, Kind, RepointError, RepointFuture,
    ThingReading, ThingService, Timestamp, TransportTarget, Value,
};
use parking_lot::Mutex;

pub use model::Floor;

/// Settings of the simulator.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Time between two readings of each sensor, in milliseconds.
    pub interval_ms: u64,
    pub buildings: u8,
    pub floors: u8,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            interval_ms: 1000,
            buildings: 2,
            floors: 4,
        }
    }
}

/// The resources of each floor device: (resource, kind, semantic type, unit).
const RESOURCES: [(&str, Kind, &str, Option<&str>); 5] = [
    ("temperature", Kind::Sensor, "temperature", Some("Cel")),
    ("humidity", Kind::Sensor, "humidity", Some("%RH")),
    ("light", Kind::Sensor, "light", Some("lx")),
    ("motion", Kind::Sensor, "motion", None),
    ("lamp", Kind::Actuator, "switch", None),
];

pub struct Simulator {
    config: SimConfig,
    roster: Arc<Roster>,
}

impl Simulator {
    pub fn new(config: SimConfig) -> Self {
        Simulator {
            config,
            roster: Arc::default(),
        }
    }
}

impl Plugin for Simulator {
    fn name(&self) -> &str {
        "sim"
    }

    fn start(&self, context: AdapterContext) -> Recipient<Actuate> {
        self.roster.enlist(&context, &self.config);
        SimActor {
            context,
            interval: Duration::from_millis(self.config.interval_ms.max(10)),
            roster: self.roster.clone(),
        }
        .start()
        .recipient()
    }

    fn transport(&self) -> Option<Arc<dyn DeviceTransport>> {
        Some(Arc::new(Transport(self.roster.clone())))
    }
}

/// A floor this gateway runs, and whether its thing services were
/// announced since the adapter (re)started.
struct Simulated {
    floor: Floor,
    announced: bool,
}

/// The floors this gateway simulates now. The actor runs them; the
/// transport adds a floor another gateway hands over and takes away one
/// that moves on, so it outlives adapter restarts.
#[derive(Default)]
struct Roster {
    floors: Mutex<Vec<Simulated>>,
    enlisted: AtomicBool,
    /// The running adapter's context, for a floor handed over between
    /// two ticks: it is announced at once, so that the move does not wait
    /// for the next tick.
    context: Mutex<Option<AdapterContext>>,
}

impl Roster {
    /// The first start: the configured campus, less the floors that moved
    /// to other gateways, plus those that moved here. Every later start
    /// announces the floors again.
    fn enlist(&self, context: &AdapterContext, config: &SimConfig) {
        *self.context.lock() = Some(context.clone());
        let mut floors = self.floors.lock();
        if self.enlisted.swap(true, Ordering::Relaxed) {
            for simulated in floors.iter_mut() {
                simulated.announced = false;
            }
            return;
        }
        for b in 0..config.buildings {
            for f in 1..=config.floors {
                let building = format!("building-{}", (b'a' + b % 26) as char);
                let floor = Floor::new(&building, f, u64::from(b) * 100 + u64::from(f));
                if !context.has_departed(&floor.device) {
                    floors.push(Simulated {
                        floor,
                        announced: false,
                    });
                }
            }
        }
        for device in context.adopted_devices() {
            if let Some(floor) = Floor::from_device(&device)
                && !floors.iter().any(|s| s.floor.device == device)
            {
                floors.push(Simulated {
                    floor,
                    announced: false,
                });
            }
        }
    }
}

/// Moving a simulated floor: the target starts running it, then the owner
/// stops.
struct Transport(Arc<Roster>);

impl DeviceTransport for Transport {
    fn listening(&self) -> Option<TransportTarget> {
        Some(TransportTarget {
            service: String::new(),
            protocol: "sim".into(),
            host: String::new(),
            port: 0,
        })
    }

    fn repoint(&self, device: &str, _: &TransportTarget) -> RepointFuture {
        let mut floors = self.0.floors.lock();
        let before = floors.len();
        floors.retain(|s| s.floor.device != device);
        let outcome = if floors.len() < before {
            Ok(())
        } else {
            Err(RepointError::NoDevice(format!(
                "no simulated device {device} runs here"
            )))
        };
        Box::pin(async move { outcome })
    }

    fn expect(&self, device: &str) -> Result<(), RepointError> {
        let floor = Floor::from_device(device).ok_or_else(|| {
            RepointError::Unsupported(format!("{device} is not a simulated floor"))
        })?;
        let mut floors = self.0.floors.lock();
        if !floors.iter().any(|s| s.floor.device == device) {
            let mut simulated = Simulated {
                floor,
                announced: false,
            };
            if let Some(context) = &*self.0.context.lock() {
                announce(context, &mut simulated.floor);
                simulated.announced = true;
            }
            floors.push(simulated);
        }
        Ok(())
    }
}

struct SimActor {
    context: AdapterContext,
    interval: Duration,
    roster: Arc<Roster>,
}

/// Announces a floor's thing services.
fn announce(context: &AdapterContext, floor: &mut Floor) {
    // Carry the lamp's state across restarts of the adapter.
    if let Ok(lamp) = context.thing_id(&floor.device, "lamp")
        && let Some(Value::Bool(on)) = context.latest(&lamp).map(|r| r.value)
    {
        floor.lamp = on;
    }
    for (resource, kind, semantic_type, unit) in RESOURCES {
        let Ok(id) = context.thing_id(&floor.device, resource) else {
            continue;
        };
        let thing = ThingService::new(id, kind, semantic_type, unit)
            .at(&floor.location)
            .with_device_address(&format!("sim://{}", floor.device));
        if let Err(error) = context.announce(thing) {
            tracing::error!(%error, device = %floor.device, "simulator could not announce a thing service");
        }
    }
}

impl SimActor {
    /// One reading of every resource of every floor, a delivery per floor:
    /// a floor that just moved away is refused on its own.
    fn tick(&mut self) {
        let now = Timestamp::now();
        let mut deliveries = Vec::new();
        {
            let mut floors = self.roster.floors.lock();
            for simulated in floors.iter_mut() {
                if !simulated.announced {
                    announce(&self.context, &mut simulated.floor);
                    simulated.announced = true;
                }
                let floor = &mut simulated.floor;
                let sample = floor.step(now);
                let mut readings = Vec::with_capacity(RESOURCES.len());
                for (resource, value) in [
                    ("temperature", Value::Number(sample.temperature)),
                    ("humidity", Value::Number(sample.humidity)),
                    ("light", Value::Number(sample.light)),
                    ("motion", Value::Bool(sample.motion)),
                    ("lamp", Value::Bool(floor.lamp)),
                ] {
                    if let Ok(thing) = self.context.thing_id(&floor.device, resource) {
                        readings.push(ThingReading {
                            thing,
                            reading: fogbank_taas::Reading { time: now, value },
                        });
                    }
                }
                deliveries.push(Delivery {
                    receipt: None,
                    readings,
                });
            }
        }
        for outcome in self.context.emit_deliveries(deliveries) {
            if let Err(error) = outcome {
                tracing::debug!(%error, "simulator readings were not stored");
            }
        }
    }
}

impl Actor for SimActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.tick();
        ctx.run_interval(self.interval, |this, _| this.tick());
    }
}

impl Handler<Actuate> for SimActor {
    type Result = ActuationResult;

    fn handle(&mut self, Actuate(command): Actuate, _: &mut Self::Context) -> ActuationResult {
        let Value::Bool(on) = command.value else {
            return Err(ActuationError::BadValue {
                thing: command.thing,
                takes: "true or false",
            });
        };
        {
            let mut floors = self.roster.floors.lock();
            let simulated = floors
                .iter_mut()
                .find(|s| {
                    command.thing.device() == s.floor.device && command.thing.resource() == "lamp"
                })
                .ok_or_else(|| ActuationError::NoDevice {
                    thing: command.thing.clone(),
                    why: "cannot be actuated",
                })?;
            simulated.floor.lamp = on;
        }
        // The new state is a reading like any other, stored before the
        // command is confirmed.
        self.context
            .emit_value(&command.thing, Value::Bool(on), Timestamp::now())
            .map_err(|e| ActuationError::Store(e.to_string()))?;
        tracing::info!(thing = %command.thing, on, "lamp switched");
        Ok(Some(Value::Bool(on)))
    }
}
