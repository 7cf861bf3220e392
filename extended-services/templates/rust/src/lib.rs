//! {{name}}: the highest temperature seen so far, on output `max`. Built
//! by `fogbank service build` (Debian's Rust for wasm32-wasip2); sdk/ is
//! the SDK.

use std::cell::Cell;

use fogbank_service_sdk::{Guest, Reading, Response, Value, export, log, outputs};

thread_local! {
    static HIGHEST: Cell<Option<f64>> = const { Cell::new(None) };
}

struct Max;

impl Guest for Max {
    fn init(_config: String) -> Result<(), String> {
        log::info("watching temperatures");
        Ok(())
    }

    fn on_reading(thing_id: String, reading: Reading) {
        let Some(value) = reading.value.as_number() else {
            return;
        };
        if HIGHEST.get().is_none_or(|highest| value > highest) {
            HIGHEST.set(Some(value));
            if let Err(e) = outputs::publish("max", &Value::Number(value)) {
                log::warn(&format!("cannot publish: {e}"));
            }
            log::info(&format!("new highest {value} from {thing_id}"));
        }
    }

    fn on_timer() {}

    fn on_request(_method: String, _path: String, _body: Vec<u8>) -> Response {
        let highest = HIGHEST.get().map_or("null".to_owned(), |h| h.to_string());
        Response::json(200, format!("{{\"highest\":{highest}}}"))
    }
}

export!(Max);
