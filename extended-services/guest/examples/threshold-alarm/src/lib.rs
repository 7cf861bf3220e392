//! Threshold alarm: when the temperature of a floor rises above
//! `config.threshold` the floor's lamp goes on and the `alarm` output reads
//! true; when it falls below `threshold - margin` both go off again.
//!
//! The alarm's state is kept in the service's store, so a restart or an
//! upgrade does not switch the lamp needlessly.

use std::cell::RefCell;

use fogbank_service_sdk::{
    Config, Guest, Reading, Response, Selector, Value, export, log, outputs, store, things,
};

struct Settings {
    threshold: f64,
    margin: f64,
    lamp: String,
}

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

const STATE_KEY: &str = "alarm";

fn alarm_on() -> bool {
    store::get(STATE_KEY).is_some_and(|v| v == b"on")
}

struct ThresholdAlarm;

impl Guest for ThresholdAlarm {
    fn init(config: String) -> Result<(), String> {
        let config = Config::parse(&config)?;
        let floor = config.text("floor").ok_or("config.floor is missing")?;
        let lamps = things::find(&Selector::of_type("switch").within(floor));
        let lamp = lamps
            .first()
            .ok_or_else(|| format!("no lamp (type switch) in {floor}"))?;
        log::info(&format!("watching {floor}, lamp {}", lamp.id));
        SETTINGS.set(Some(Settings {
            threshold: config.require_number("threshold")?,
            margin: config.number("margin").unwrap_or(0.5),
            lamp: lamp.id.clone(),
        }));
        Ok(())
    }

    fn on_reading(thing_id: String, reading: Reading) {
        let Some(temperature) = reading.value.as_number() else {
            return;
        };
        SETTINGS.with_borrow(|settings| {
            let Some(s) = settings else { return };
            let on = alarm_on();
            let switch_to = if !on && temperature > s.threshold {
                true
            } else if on && temperature < s.threshold - s.margin {
                false
            } else {
                return;
            };
            log::info(&format!(
                "{thing_id} reads {temperature:.2}: alarm {}",
                if switch_to { "on" } else { "off" }
            ));
            if let Err(e) = things::actuate(&s.lamp, &Value::Boolean(switch_to)) {
                log::error(&format!("cannot switch {}: {e}", s.lamp));
                return;
            }
            if let Err(e) = store::set(STATE_KEY, if switch_to { b"on" } else { b"off" }) {
                log::error(&format!("cannot keep the state: {e}"));
            }
            if let Err(e) = outputs::publish("alarm", &Value::Boolean(switch_to)) {
                log::error(&format!("cannot publish: {e}"));
            }
        });
    }

    fn on_timer() {}

    fn on_request(method: String, path: String, _body: Vec<u8>) -> Response {
        match (method.as_str(), path.as_str()) {
            ("GET", "/state") => SETTINGS.with_borrow(|s| match s {
                Some(s) => Response::json(
                    200,
                    format!(
                        r#"{{"alarm":{},"threshold":{},"lamp":"{}"}}"#,
                        alarm_on(),
                        s.threshold,
                        s.lamp
                    ),
                ),
                None => Response::text(503, "not initialised"),
            }),
            _ => Response::not_found(),
        }
    }
}

export!(ThresholdAlarm);
