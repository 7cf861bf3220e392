//! Home Assistant MQTT discovery, so that Tasmota, ESPHome and Zigbee2MQTT
//! devices appear without configuration.
//!
//! A config message on `homeassistant/{component}/[{node_id}/]{object_id}/config`
//! describes one entity: where its state is published (`state_topic`), how
//! to pick the value out of it (`value_template`), its unit and class, how
//! to command it (`command_topic`, `payload_on`/`payload_off`) and where its
//! availability is announced. Both the long keys and HA's abbreviations
//! (`stat_t`, `unit_of_meas`, `~` as a topic prefix, …) are understood. An
//! empty config payload removes the entity. Everything here is pure.

use serde_json::Value as Json;

use fogbank_taas::Value;
use fogbank_taas::id::sanitize_segment;

/// The subscription that covers discovery configs.
pub const SUBSCRIPTION: &str = "homeassistant/#";
/// Publishing `online` here makes devices announce themselves again.
pub const BIRTH_TOPIC: &str = "homeassistant/status";

/// Entity kinds understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Sensor,
    BinarySensor,
    Switch,
    Light,
}

/// One discovered entity: what becomes one thing service.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub component: Component,
    /// The config topic, which identifies the entity for later removal.
    pub config_topic: String,
    pub device: String,
    pub resource: String,
    pub semantic_type: String,
    pub unit: Option<String>,
    pub state_topic: String,
    pub template: Template,
    pub command_topic: Option<String>,
    /// Commands as a JSON object (`{"state": "ON"}`), for lights with `schema: json`.
    pub json_commands: bool,
    pub payload_on: String,
    pub payload_off: String,
    pub availability_topic: Option<String>,
    pub payload_available: String,
    pub payload_not_available: String,
}

/// What a config message asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    Add(Box<Entity>),
    Remove {
        config_topic: String,
    },
    /// A config of a component not understood, or not a config topic.
    Ignored,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the config is not a JSON object: {0}")]
    NotJson(String),
    #[error("the config has no state topic")]
    NoStateTopic,
    #[error("unsupported value template {0:?}")]
    Template(String),
}

fn text<'a>(config: &'a Json, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| config.get(*k))
        .and_then(Json::as_str)
}

/// Expands HA's `~` abbreviation for a topic prefix.
fn topic(config: &Json, keys: &[&str]) -> Option<String> {
    let raw = text(config, keys)?;
    let base = text(config, &["~"]).unwrap_or("");
    Some(if let Some(rest) = raw.strip_prefix('~') {
        format!("{base}{rest}")
    } else if let Some(head) = raw.strip_suffix('~') {
        format!("{head}{base}")
    } else {
        raw.to_owned()
    })
}

/// Decodes a message on a `homeassistant/…` topic.
pub fn decode(config_topic: &str, payload: &[u8]) -> Result<Discovery, DiscoveryError> {
    let levels: Vec<&str> = config_topic.split('/').collect();
    let (component, node_id, object_id) = match levels.as_slice() {
        ["homeassistant", component, object_id, "config"] => (*component, None, *object_id),
        ["homeassistant", component, node_id, object_id, "config"] => {
            (*component, Some(*node_id), *object_id)
        }
        _ => return Ok(Discovery::Ignored),
    };
    let component = match component {
        "sensor" => Component::Sensor,
        "binary_sensor" => Component::BinarySensor,
        "switch" => Component::Switch,
        "light" => Component::Light,
        _ => return Ok(Discovery::Ignored),
    };
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(Discovery::Remove {
            config_topic: config_topic.to_owned(),
        });
    }
    let config: Json =
        serde_json::from_slice(payload).map_err(|e| DiscoveryError::NotJson(e.to_string()))?;
    if !config.is_object() {
        return Err(DiscoveryError::NotJson("not an object".into()));
    }

    let device_ids = config
        .get("device")
        .or_else(|| config.get("dev"))
        .and_then(|d| d.get("identifiers").or_else(|| d.get("ids")));
    let device_id = match device_ids {
        Some(Json::Array(ids)) => ids.first().and_then(Json::as_str),
        Some(Json::String(id)) => Some(id.as_str()),
        _ => None,
    };
    let device = sanitize_segment(node_id.or(device_id).unwrap_or(object_id));
    let mut resource = sanitize_segment(object_id);
    // Tasmota and ESPHome prefix object ids with the device id.
    if let Some(stripped) = resource
        .strip_prefix(&device)
        .map(|r| r.trim_start_matches(['_', '-']))
        .filter(|r| !r.is_empty())
    {
        resource = stripped.to_owned();
    }

    let class = text(&config, &["device_class", "dev_cla"]);
    let semantic_type = match (component, class) {
        (Component::Switch | Component::Light, _) => "switch".to_owned(),
        (_, Some(class)) => match class {
            "illuminance" => "light".to_owned(),
            "occupancy" => "presence".to_owned(),
            other => sanitize_segment(other),
        },
        (Component::BinarySensor, None) => "contact".to_owned(),
        (Component::Sensor, None) => fogbank_taas::thing::guess_type(&resource).0.to_owned(),
    };
    let template_text = text(
        &config,
        &[
            "value_template",
            "val_tpl",
            "state_value_template",
            "stat_val_tpl",
        ],
    );
    let json_commands = text(&config, &["schema"]) == Some("json");
    let template = match template_text {
        Some(t) => Template::parse(t)?,
        // JSON-schema lights report `{"state": "ON", …}`.
        None if json_commands => Template::Json(vec!["state".into()]),
        None => Template::Value,
    };
    let availability = topic(&config, &["availability_topic", "avty_t"]).or_else(|| {
        config
            .get("availability")
            .or_else(|| config.get("avty"))
            .and_then(Json::as_array)
            .and_then(|list| list.first())
            .and_then(|first| topic(first, &["topic", "t"]))
    });
    let state_topic = topic(&config, &["state_topic", "stat_t"])
        .or_else(|| {
            if json_commands {
                topic(&config, &["command_topic", "cmd_t"])
            } else {
                None
            }
        })
        .ok_or(DiscoveryError::NoStateTopic)?;
    Ok(Discovery::Add(Box::new(Entity {
        component,
        config_topic: config_topic.to_owned(),
        device,
        resource,
        semantic_type,
        unit: text(&config, &["unit_of_measurement", "unit_of_meas"]).map(ha_unit_to_senml),
        state_topic,
        template,
        command_topic: topic(&config, &["command_topic", "cmd_t"]),
        json_commands,
        payload_on: text(&config, &["payload_on", "pl_on", "state_on", "stat_on"])
            .unwrap_or("ON")
            .to_owned(),
        payload_off: text(&config, &["payload_off", "pl_off", "state_off", "stat_off"])
            .unwrap_or("OFF")
            .to_owned(),
        availability_topic: availability,
        payload_available: text(&config, &["payload_available", "pl_avail"])
            .unwrap_or("online")
            .to_owned(),
        payload_not_available: text(&config, &["payload_not_available", "pl_not_avail"])
            .unwrap_or("offline")
            .to_owned(),
    })))
}

/// HA units are display strings; SenML has names for the common ones.
fn ha_unit_to_senml(unit: &str) -> String {
    match unit {
        "°C" | "C" => "Cel",
        "°F" => "degF",
        "%" => "%",
        "lx" => "lx",
        "W" => "W",
        "kWh" => "kWh",
        "V" => "V",
        "A" => "A",
        "hPa" => "hPa",
        "ppm" => "ppm",
        other => other,
    }
    .to_owned()
}

/// The subset of HA value templates that devices actually send:
/// `{{ value }}` and `{{ value_json.a.b }}` / `{{ value_json['a'].b }}`,
/// with filters such as `| float` or `| round(1)` ignored.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    Value,
    Json(Vec<String>),
}

impl Template {
    pub fn parse(raw: &str) -> Result<Self, DiscoveryError> {
        let bad = || DiscoveryError::Template(raw.chars().take(80).collect());
        let inner = raw
            .trim()
            .strip_prefix("{{")
            .and_then(|r| r.strip_suffix("}}"))
            .ok_or_else(bad)?;
        let expression = inner.split('|').next().unwrap_or("").trim();
        if expression == "value" {
            return Ok(Template::Value);
        }
        let mut rest = expression.strip_prefix("value_json").ok_or_else(bad)?;
        let mut path = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                path.push(after[..end].to_owned());
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']').ok_or_else(bad)?;
                path.push(after[..end].trim_matches(['\'', '"']).to_owned());
                rest = &after[end + 1..];
            } else {
                return Err(bad());
            }
        }
        if path.is_empty() || path.iter().any(String::is_empty) {
            Err(bad())
        } else {
            Ok(Template::Json(path))
        }
    }

    /// Picks the raw value out of a state payload.
    pub fn extract(&self, payload: &[u8]) -> Option<Json> {
        match self {
            Template::Value => Some(Json::String(
                std::str::from_utf8(payload).ok()?.trim().to_owned(),
            )),
            Template::Json(path) => {
                let mut value: Json = serde_json::from_slice(payload).ok()?;
                for key in path {
                    value = value.get_mut(key.as_str())?.take();
                }
                Some(value)
            }
        }
    }
}

impl Entity {
    /// The reading a state payload carries, if it carries one for this entity.
    pub fn reading(&self, payload: &[u8]) -> Option<Value> {
        let raw = self.template.extract(payload)?;
        match self.component {
            Component::Sensor => match raw {
                Json::Number(n) => n.as_f64().map(Value::Number),
                Json::String(s) => Some(
                    s.trim()
                        .parse::<f64>()
                        .map(Value::Number)
                        .unwrap_or(Value::String(s)),
                ),
                Json::Bool(b) => Some(Value::Bool(b)),
                _ => None,
            },
            _ => {
                let text = match raw {
                    Json::String(s) => s,
                    Json::Bool(b) => return Some(Value::Bool(b)),
                    other => other.to_string(),
                };
                if text == self.payload_on {
                    Some(Value::Bool(true))
                } else if text == self.payload_off {
                    Some(Value::Bool(false))
                } else {
                    None
                }
            }
        }
    }

    /// What to publish on the command topic for a value.
    pub fn command(&self, value: &Value) -> Option<(String, Vec<u8>)> {
        let topic = self.command_topic.clone()?;
        let Value::Bool(on) = value else { return None };
        let state = if *on {
            &self.payload_on
        } else {
            &self.payload_off
        };
        let payload = if self.json_commands {
            serde_json::json!({ "state": state })
                .to_string()
                .into_bytes()
        } else {
            state.clone().into_bytes()
        };
        Some((topic, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn add(topic: &str, payload: &str) -> Entity {
        match decode(topic, payload.as_bytes()).unwrap() {
            Discovery::Add(entity) => *entity,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn zigbee2mqtt_sensor_and_light() {
        let temperature = add(
            "homeassistant/sensor/0x00158d0001a2b3c4/temperature/config",
            r#"{"availability":[{"topic":"zigbee2mqtt/bridge/state"}],"device":{"identifiers":["zigbee2mqtt_0x00158d0001a2b3c4"],"name":"living_room"},"device_class":"temperature","state_class":"measurement","name":"living_room temperature","state_topic":"zigbee2mqtt/living_room","unique_id":"0x00158d0001a2b3c4_temperature_zigbee2mqtt","unit_of_measurement":"°C","value_template":"{{ value_json.temperature }}"}"#,
        );
        assert_eq!(
            (temperature.device.as_str(), temperature.resource.as_str()),
            ("0x00158d0001a2b3c4", "temperature")
        );
        assert_eq!(temperature.semantic_type, "temperature");
        assert_eq!(temperature.unit.as_deref(), Some("Cel"));
        assert_eq!(
            temperature.availability_topic.as_deref(),
            Some("zigbee2mqtt/bridge/state")
        );
        assert_eq!(
            temperature.reading(br#"{"temperature":21.37,"humidity":48,"linkquality":90}"#),
            Some(Value::Number(21.37))
        );
        assert_eq!(temperature.reading(br#"{"humidity":48}"#), None);

        let light = add(
            "homeassistant/light/0x0017880104e45517/light/config",
            r#"{"brightness":true,"command_topic":"zigbee2mqtt/hue_bulb/set","device":{"identifiers":["zigbee2mqtt_0x0017880104e45517"]},"name":"hue_bulb","schema":"json","state_topic":"zigbee2mqtt/hue_bulb","unique_id":"0x0017880104e45517_light_zigbee2mqtt"}"#,
        );
        assert_eq!(light.semantic_type, "switch");
        assert_eq!(
            light.reading(br#"{"state":"ON","brightness":200}"#),
            Some(Value::Bool(true))
        );
        assert_eq!(
            light.command(&Value::Bool(true)),
            Some((
                "zigbee2mqtt/hue_bulb/set".into(),
                br#"{"state":"ON"}"#.to_vec()
            ))
        );
    }

    #[test]
    fn tasmota_abbreviations_and_tilde() {
        let relay = add(
            "homeassistant/switch/ABC123_RL_1/config",
            r#"{"name":"Tasmota","stat_t":"tele/tasmota_ABC123/STATE","avty_t":"tele/tasmota_ABC123/LWT","pl_avail":"Online","pl_not_avail":"Offline","cmd_t":"cmnd/tasmota_ABC123/POWER","val_tpl":"{{value_json.POWER}}","pl_off":"OFF","pl_on":"ON","uniq_id":"ABC123_RL_1","dev":{"ids":["ABC123"]}}"#,
        );
        assert_eq!(
            (relay.device.as_str(), relay.resource.as_str()),
            ("abc123", "rl_1")
        );
        assert_eq!(
            relay.reading(br#"{"Time":"2026-11-23T10:00:00","POWER":"ON"}"#),
            Some(Value::Bool(true))
        );
        assert_eq!(
            relay.command(&Value::Bool(false)),
            Some(("cmnd/tasmota_ABC123/POWER".into(), b"OFF".to_vec()))
        );
        assert_eq!(relay.payload_available, "Online");

        let sensor = add(
            "homeassistant/sensor/ABC123_AM2301_Temperature/config",
            r#"{"~":"tele/tasmota_ABC123/","stat_t":"~SENSOR","val_tpl":"{{value_json['AM2301'].Temperature}}","unit_of_meas":"°C","dev_cla":"temperature","dev":{"ids":["ABC123"]}}"#,
        );
        assert_eq!(sensor.state_topic, "tele/tasmota_ABC123/SENSOR");
        assert_eq!(sensor.resource, "am2301_temperature");
        assert_eq!(
            sensor.reading(br#"{"AM2301":{"Temperature":22.1,"Humidity":40}}"#),
            Some(Value::Number(22.1))
        );
    }

    #[test]
    fn esphome_binary_sensor_removal_and_strangers() {
        let motion = add(
            "homeassistant/binary_sensor/hallway/motion/config",
            r#"{"dev_cla":"motion","name":"Motion","stat_t":"hallway/binary_sensor/motion/state","avty_t":"hallway/status","uniq_id":"ESPbinary_sensormotion","dev":{"ids":"8c4b14a1b2c3"}}"#,
        );
        assert_eq!(
            (
                motion.device.as_str(),
                motion.resource.as_str(),
                motion.semantic_type.as_str()
            ),
            ("hallway", "motion", "motion")
        );
        assert_eq!(motion.reading(b"ON"), Some(Value::Bool(true)));
        assert_eq!(motion.reading(b"OFF"), Some(Value::Bool(false)));
        assert_eq!(motion.reading(b"maybe"), None);
        assert_eq!(
            decode("homeassistant/binary_sensor/hallway/motion/config", b""),
            Ok(Discovery::Remove {
                config_topic: "homeassistant/binary_sensor/hallway/motion/config".into()
            })
        );
        assert_eq!(
            decode("homeassistant/climate/x/config", b"{}"),
            Ok(Discovery::Ignored)
        );
        assert_eq!(
            decode("homeassistant/status", b"online"),
            Ok(Discovery::Ignored)
        );
        assert!(
            decode("homeassistant/sensor/x/config", b"{\"name\":1}").is_err(),
            "no state topic"
        );
        assert!(decode("homeassistant/sensor/x/config", b"[1,2]").is_err());
        assert!(matches!(
            decode(
                "homeassistant/sensor/x/config",
                br#"{"stat_t":"a","val_tpl":"{% if %}"}"#
            ),
            Err(DiscoveryError::Template(_))
        ));
    }

    #[test]
    fn templates() {
        assert_eq!(Template::parse("{{ value }}"), Ok(Template::Value));
        assert_eq!(
            Template::parse("{{ value_json.a.b | float }}"),
            Ok(Template::Json(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            Template::parse("{{value_json[\"x y\"]}}"),
            Ok(Template::Json(vec!["x y".into()]))
        );
        assert!(Template::parse("{{ value_json. }}").is_err());
        assert!(Template::parse("value").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(topic in "homeassistant(/[a-z_]{0,8}){0,5}", payload in ".{0,120}") {
            if let Ok(Discovery::Add(entity)) = decode(&topic, payload.as_bytes()) {
                let _ = entity.reading(payload.as_bytes());
            }
            let _ = Template::parse(&payload);
        }
    }
}
