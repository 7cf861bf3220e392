//! W3C WoT Thing Descriptions (TD 1.1) of thing services.
//!
//! The TD's forms name concrete protocol endpoints, which this crate does
//! not know: the caller (the node's REST or CoAP front end) supplies them as
//! [`Form`]s, and this module assembles the document around them.

use serde_json::{Map, Value as Json, json};

use crate::thing::{DataType, Kind, ThingService};

/// One way to perform an operation on the thing service.
#[derive(Debug, Clone)]
pub struct Form {
    /// WoT operation type: `readproperty`, `observeproperty`, `invokeaction`, …
    pub op: &'static str,
    pub href: String,
    pub content_type: &'static str,
    /// Extra form terms, e.g. `htv:methodName` or `subprotocol`.
    pub extra: Vec<(&'static str, &'static str)>,
}

/// Where the operations of a thing service are served.
#[derive(Debug, Clone, Default)]
pub struct Bindings {
    /// Forms for the `value` property (read, observe).
    pub property: Vec<Form>,
    /// Forms for the `actuate` action, used only for actuators.
    pub action: Vec<Form>,
    /// Whether writes need a bearer token.
    pub bearer_for_writes: bool,
}

fn forms_json(forms: &[Form]) -> Json {
    Json::Array(
        forms
            .iter()
            .map(|f| {
                let mut m = Map::new();
                m.insert("op".into(), json!(f.op));
                m.insert("href".into(), json!(f.href));
                m.insert("contentType".into(), json!(f.content_type));
                for (k, v) in &f.extra {
                    m.insert((*k).into(), json!(v));
                }
                Json::Object(m)
            })
            .collect(),
    )
}

/// The vocabulary of fogbank's own terms: the `fogbank` member and the
/// semantic types in `@type` (`fb:temperature`), defined in every TD's
/// `@context` so that a JSON-LD processor can expand them.
pub const VOCABULARY: &str = "urn:fogbank:vocabulary#";

/// SAREF, the ETSI smart-appliance ontology: the published classes a
/// thing service is an instance of (`saref:Sensor`, `saref:Actuator`).
const SAREF: &str = "https://saref.etsi.org/core/";

/// The Thing Description of one thing service.
///
/// Its `value` property describes what the read and observe forms return
/// — a SenML pack of one record (RFC 8428), the value in the member its
/// data type names (`v`, `vb`, `vs`, `vd`) — so that a consumer checking
/// payloads against the schema is not misled. There is no `base`: the
/// forms' hrefs are relative, resolved against the address the TD was
/// fetched from, which a client cannot inject.
pub fn thing_description(thing: &ThingService, bindings: &Bindings) -> Json {
    let mut value = json!({ "type": thing.data_type.schema_type() });
    if let Some(unit) = &thing.unit {
        value["unit"] = json!(unit);
    }
    let member = senml_value_member(thing.data_type);
    let value_schema = json!({
        "title": "latest reading",
        "description": "A SenML pack (RFC 8428) of one record: the thing service's id, its unit, the time and the value",
        "type": "array",
        "minItems": 1,
        "maxItems": 1,
        "items": {
            "type": "object",
            "properties": {
                "bn": { "type": "string", "const": thing.id.as_str() },
                "bu": { "type": "string" },
                "t": { "type": "number" },
                member: value,
            },
            "required": ["bn", "t", member],
        },
        "readOnly": true,
        "observable": true,
        "forms": forms_json(&bindings.property),
    });

    let mut td = json!({
        "@context": [
            "https://www.w3.org/2022/wot/td/v1.1",
            {
                "htv": "http://www.w3.org/2011/http#",
                "saref": SAREF,
                "fb": VOCABULARY,
                // The TD 1.1 schema allows only term → IRI entries here.
                "fogbank": "fb:thingService",
                "kind": "fb:kind",
                "location": "fb:location",
                "gateway": "fb:gateway",
                "adapter": "fb:adapter",
                "deviceAddress": "fb:deviceAddress",
                "available": "fb:available",
            },
        ],
        "id": format!("urn:fogbank:{}", thing.id),
        "title": thing.id.as_str(),
        "description": format!("{} {} on gateway {} ({} adapter)", thing.semantic_type, kind_word(thing.kind), thing.gateway, thing.adapter),
        "@type": [saref_class(thing.kind), format!("fb:{}", thing.semantic_type)],
        "properties": { "value": value_schema },
        "securityDefinitions": { "nosec_sc": { "scheme": "nosec" } },
        "security": ["nosec_sc"],
        "fogbank": {
            "kind": thing.kind,
            "location": thing.location,
            "gateway": thing.gateway,
            "adapter": thing.adapter,
            "deviceAddress": thing.device_address,
            "available": thing.available,
        },
    });

    if thing.kind == Kind::Actuator {
        let mut action_forms = forms_json(&bindings.action);
        if bindings.bearer_for_writes {
            td["securityDefinitions"]["bearer_sc"] =
                json!({ "scheme": "bearer", "in": "header", "name": "Authorization" });
            if let Json::Array(forms) = &mut action_forms {
                for form in forms {
                    form["security"] = json!(["bearer_sc"]);
                }
            }
        }
        td["actions"] = json!({
            "actuate": {
                "input": {
                    "type": "object",
                    "properties": { "value": { "type": thing.data_type.schema_type() } },
                    "required": ["value"],
                },
                "forms": action_forms,
            }
        });
    }
    td
}

/// The SenML record member that carries a value of this type (RFC 8428 §4.2).
fn senml_value_member(data_type: DataType) -> &'static str {
    match data_type {
        DataType::Number => "v",
        DataType::Boolean => "vb",
        DataType::String => "vs",
        DataType::Data => "vd",
    }
}

fn saref_class(kind: Kind) -> &'static str {
    match kind {
        Kind::Sensor => "saref:Sensor",
        Kind::Actuator => "saref:Actuator",
    }
}

fn kind_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Sensor => "sensor",
        Kind::Actuator => "actuator",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ThingId;

    #[test]
    fn actuator_td_has_value_property_and_actuate_action() {
        let thing = ThingService::new(
            ThingId::parse("gw.sim.f1.lamp").unwrap(),
            Kind::Actuator,
            "switch",
            None,
        )
        .at("campus/building-a/floor-1");
        let bindings = Bindings {
            property: vec![Form {
                op: "readproperty",
                href: "/r".into(),
                content_type: "application/senml+json",
                extra: vec![],
            }],
            action: vec![Form {
                op: "invokeaction",
                href: "/a".into(),
                content_type: "application/json",
                extra: vec![("htv:methodName", "PUT")],
            }],
            bearer_for_writes: true,
        };
        let td = thing_description(&thing, &bindings);
        assert_eq!(td["id"], "urn:fogbank:gw.sim.f1.lamp");
        let record = &td["properties"]["value"]["items"];
        assert_eq!(record["properties"]["vb"]["type"], "boolean");
        assert_eq!(record["required"], json!(["bn", "t", "vb"]));
        assert_eq!(td["@type"], json!(["saref:Actuator", "fb:switch"]));
        assert_eq!(td["properties"]["value"]["forms"][0]["href"], "/r");
        assert_eq!(
            td["actions"]["actuate"]["forms"][0]["htv:methodName"],
            "PUT"
        );
        assert_eq!(
            td["actions"]["actuate"]["forms"][0]["security"][0],
            "bearer_sc"
        );
        assert_eq!(td["fogbank"]["location"], "campus/building-a/floor-1");
    }

    #[test]
    fn sensor_td_has_unit_and_no_actions() {
        let thing = ThingService::new(
            ThingId::parse("gw.sim.f1.temperature").unwrap(),
            Kind::Sensor,
            "temperature",
            Some("Cel"),
        );
        let td = thing_description(&thing, &Bindings::default());
        let record = &td["properties"]["value"]["items"];
        assert_eq!(record["properties"]["v"]["unit"], "Cel");
        assert_eq!(record["properties"]["bn"]["const"], "gw.sim.f1.temperature");
        assert!(td.get("actions").is_none());
    }
}
