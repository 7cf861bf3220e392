//! Write Fogbank extended services in Rust.
//!
//! A service is a type that implements [`Guest`], exported with
//! [`export!`]:
//!
//! ```ignore
//! use fogbank_service_sdk::{Guest, Reading, Response, export, log};
//!
//! struct Hello;
//!
//! impl Guest for Hello {
//!     fn init(_config: String) -> Result<(), String> { Ok(()) }
//!     fn on_reading(thing_id: String, reading: Reading) {
//!         log::info(&format!("{thing_id}: {:?}", reading.value));
//!     }
//!     fn on_timer() {}
//!     fn on_request(_method: String, _path: String, _body: Vec<u8>) -> Response {
//!         Response::text(200, "hello")
//!     }
//! }
//!
//! export!(Hello);
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2`; the result is a component of
//! the `fogbank:service@0.1.0` world (`extended-services/wit/`), ready for
//! `fogbank service publish`.

/// The bindings of `extended-services/wit/service.wit`. In a module of
/// their own: at the crate root the exported-functions macro would be
/// defined twice (wit-bindgen issue 1051).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "service",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "fogbank_service_sdk::bindings",
    });
}

pub use bindings::fogbank::service::types::{Failure, Kind, Selector, Thing, Value};
pub use bindings::fogbank::service::{clock, outputs, store, things};
pub use bindings::{Guest, Reading, Response, export};

impl Value {
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }
}

impl Selector {
    /// Selects everything.
    pub fn any() -> Self {
        Selector {
            type_: None,
            location: None,
            id: None,
        }
    }
    pub fn of_type(semantic_type: &str) -> Self {
        Selector {
            type_: Some(semantic_type.into()),
            ..Selector::any()
        }
    }
    pub fn within(mut self, location: &str) -> Self {
        self.location = Some(location.into());
        self
    }
}

impl Response {
    pub fn text(status: u16, body: &str) -> Self {
        Response {
            status,
            content_type: "text/plain".into(),
            body: body.as_bytes().to_vec(),
        }
    }
    pub fn json(status: u16, body: String) -> Self {
        Response {
            status,
            content_type: "application/json".into(),
            body: body.into_bytes(),
        }
    }
    pub fn not_found() -> Self {
        Response::text(404, "not found")
    }
}

/// Logging, shown by `fogbank service logs`.
pub mod log {
    use super::bindings::fogbank::service::log::{Level, log};

    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// The manifest's `[config]` table, as `init` receives it.
pub struct Config(serde_json::Map<String, serde_json::Value>);

impl Config {
    pub fn parse(json: &str) -> Result<Self, String> {
        serde_json::from_str(json)
            .map(Config)
            .map_err(|e| format!("config is not a JSON object: {e}"))
    }
    pub fn number(&self, key: &str) -> Option<f64> {
        self.0.get(key)?.as_f64()
    }
    pub fn text(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.as_str()
    }
    /// A number the service cannot start without.
    pub fn require_number(&self, key: &str) -> Result<f64, String> {
        self.number(key)
            .ok_or_else(|| format!("config.{key} must be a number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_are_found() {
        let config = Config::parse(r#"{"lamp":"gw.sim.x.lamp","threshold":25.5,"window":3}"#).unwrap();
        assert_eq!(config.number("threshold"), Some(25.5));
        assert_eq!(config.number("window"), Some(3.0));
        assert_eq!(config.text("lamp"), Some("gw.sim.x.lamp"));
        assert!(config.require_number("missing").is_err());
        assert!(Config::parse("[1]").is_err());
    }
}
