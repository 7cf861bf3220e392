//! Floor average: the mean temperature of each floor of building A over a
//! sliding window, published every timer tick on outputs `floor-1` to
//! `floor-4`.
//!
//! Which floor a sensor is on comes from its location in the catalog
//! (`campus/building-a/floor-N/...`), looked up once per sensor; the
//! service's own outputs are in building A too but are never subscribed
//! to: only readings of `temperature` things arrive, and the outputs are
//! answered from the same map, so a reading of an output is ignored.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};

use fogbank_service_sdk::{
    Config, Failure, Guest, Reading, Response, Selector, Value, clock, export, log, outputs, things,
};

#[derive(Default)]
struct State {
    window_us: u64,
    /// Sensor id → its floor's output name, or None for things that are
    /// not on a floor (or are our own outputs).
    floors: HashMap<String, Option<String>>,
    /// Output name → (time, value) within the window, oldest first.
    samples: BTreeMap<String, VecDeque<(u64, f64)>>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn floor_of(thing_id: &str) -> Option<String> {
    if thing_id.contains(".service.") {
        return None;
    }
    let mut selector = Selector::any();
    selector.id = Some(thing_id.to_owned());
    let thing = things::find(&selector).into_iter().next()?;
    let floor = thing
        .location
        .split('/')
        .find(|segment| segment.starts_with("floor-"))?;
    Some(floor.to_owned())
}

struct FloorAverage;

impl Guest for FloorAverage {
    fn init(config: String) -> Result<(), String> {
        let config = Config::parse(&config)?;
        let window = config.number("window-seconds").unwrap_or(60.0);
        if window <= 0.0 {
            return Err("config.window-seconds must be positive".into());
        }
        STATE.with_borrow_mut(|s| s.window_us = (window * 1e6) as u64);
        log::info(&format!("averaging over {window} s"));
        Ok(())
    }

    fn on_reading(thing_id: String, reading: Reading) {
        let Some(value) = reading.value.as_number() else {
            return;
        };
        STATE.with_borrow_mut(|s| {
            let floor = s
                .floors
                .entry(thing_id.clone())
                .or_insert_with(|| floor_of(&thing_id))
                .clone();
            if let Some(floor) = floor {
                s.samples
                    .entry(floor)
                    .or_default()
                    .push_back((reading.time, value));
            }
        });
    }

    fn on_timer() {
        let now = clock::now();
        STATE.with_borrow_mut(|s| {
            let oldest = now.saturating_sub(s.window_us);
            let mut unpublishable = Vec::new();
            for (floor, samples) in &mut s.samples {
                while samples.front().is_some_and(|(t, _)| *t < oldest) {
                    samples.pop_front();
                }
                if samples.is_empty() {
                    continue;
                }
                let mean = samples.iter().map(|(_, v)| v).sum::<f64>() / samples.len() as f64;
                match outputs::publish(floor, &Value::Number(mean)) {
                    Ok(()) => {}
                    Err(Failure::NotFound(e)) => {
                        log::warn(&format!(
                            "no output for {floor} ({e}): its sensors are left out from now on"
                        ));
                        unpublishable.push(floor.clone());
                    }
                    Err(e) => log::warn(&format!("cannot publish {floor}: {e}")),
                }
            }
            // A floor the manifest declares no output for (a building
            // with more floors than outputs) is said once, not every tick.
            for floor in unpublishable {
                s.samples.remove(&floor);
                for of_sensor in s.floors.values_mut() {
                    if of_sensor.as_deref() == Some(floor.as_str()) {
                        *of_sensor = None;
                    }
                }
            }
        });
    }

    fn on_request(method: String, path: String, _body: Vec<u8>) -> Response {
        if method != "GET" || path != "/" {
            return Response::not_found();
        }
        let body = STATE.with_borrow(|s| {
            let floors: Vec<String> = s
                .samples
                .iter()
                .map(|(floor, samples)| format!(r#""{floor}":{}"#, samples.len()))
                .collect();
            format!(r#"{{"samples":{{{}}}}}"#, floors.join(","))
        });
        Response::json(200, body)
    }
}

export!(FloorAverage);
