//! The simulator adapter (`sim`): the campus of the S-MANAGE paper.
//!
//! Two buildings of four floors. Each floor is one device with a
//! temperature, humidity and illuminance sensor, a motion sensor and a
//! switchable lamp. Values follow the time of day, drift and jitter; the
//! lamp takes effect (the floor gets brighter at once and slowly warmer),
//! so an application that switches it can see what it did.

mod model;

use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Recipient};
use fogbank_adapter::{Actuate, AdapterContext, Plugin};
use fogbank_taas::{
    ActuationError, ActuationResult, Kind, ThingReading, ThingService, Timestamp, Value,
};

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
    pub config: SimConfig,
}

impl Plugin for Simulator {
    fn name(&self) -> &str {
        "sim"
    }

    fn start(&self, context: AdapterContext) -> Recipient<Actuate> {
        SimActor::new(context, self.config.clone())
            .start()
            .recipient()
    }
}

struct SimActor {
    context: AdapterContext,
    config: SimConfig,
    floors: Vec<Floor>,
}

impl SimActor {
    fn new(context: AdapterContext, config: SimConfig) -> Self {
        let mut floors = Vec::new();
        for b in 0..config.buildings {
            for f in 1..=config.floors {
                let building = format!("building-{}", (b'a' + b % 26) as char);
                floors.push(Floor::new(&building, f, u64::from(b) * 100 + u64::from(f)));
            }
        }
        SimActor {
            context,
            config,
            floors,
        }
    }

    fn announce(&mut self) {
        for floor in &mut self.floors {
            // Carry the lamp's state across restarts of the adapter.
            if let Ok(lamp) = self.context.thing_id(&floor.device, "lamp")
                && let Some(Value::Bool(on)) = self.context.latest(&lamp).map(|r| r.value)
            {
                floor.lamp = on;
            }
            for (resource, kind, semantic_type, unit) in RESOURCES {
                let Ok(id) = self.context.thing_id(&floor.device, resource) else {
                    continue;
                };
                let thing = ThingService::new(id, kind, semantic_type, unit)
                    .at(&floor.location)
                    .with_device_address(&format!("sim://{}", floor.device));
                if let Err(error) = self.context.announce(thing) {
                    tracing::error!(%error, device = %floor.device, "simulator could not announce a thing service");
                }
            }
        }
    }

    fn tick(&mut self) {
        let now = Timestamp::now();
        let mut readings = Vec::with_capacity(self.floors.len() * RESOURCES.len());
        for floor in &mut self.floors {
            let sample = floor.step(now);
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
        }
        if let Err(error) = self.context.emit(readings) {
            tracing::warn!(%error, "simulator readings were not stored");
        }
    }
}

impl Actor for SimActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.announce();
        self.tick();
        let interval = Duration::from_millis(self.config.interval_ms.max(10));
        ctx.run_interval(interval, |this, _| this.tick());
    }
}

impl Handler<Actuate> for SimActor {
    type Result = ActuationResult;

    fn handle(&mut self, Actuate(command): Actuate, _: &mut Self::Context) -> ActuationResult {
        let floor = self
            .floors
            .iter_mut()
            .find(|f| command.thing.device() == f.device && command.thing.resource() == "lamp")
            .ok_or_else(|| ActuationError::NoDevice {
                thing: command.thing.clone(),
                why: "cannot be actuated",
            })?;
        let Value::Bool(on) = command.value else {
            return Err(ActuationError::BadValue {
                thing: command.thing,
                takes: "true or false",
            });
        };
        floor.lamp = on;
        // The new state is a reading like any other, stored before the
        // command is confirmed.
        self.context
            .emit_value(&command.thing, Value::Bool(on), Timestamp::now())
            .map_err(|e| ActuationError::Store(e.to_string()))?;
        tracing::info!(thing = %command.thing, on, "lamp switched");
        Ok(Some(Value::Bool(on)))
    }
}
