//! The OpenAPI schemas of the JSON the API returns for types that other
//! crates own (the thing model, commands, SenML records, the local cloud's
//! members, extended services).
//!
//! Those crates know nothing of REST: they derive `Serialize` and stop
//! there. The node is the only crate that documents HTTP, so the schemas
//! live here, each a doc-only twin named as its model type (`as = …`).
//! Nothing is ever built from these types. A twin that drifts from what
//! the model serialises is caught by `scripts/api-check`, which holds
//! every answer of a running gateway to this document.
#![allow(dead_code)]

use std::collections::BTreeMap;

use utoipa::ToSchema;

/// Whether applications read it or command it.
#[derive(ToSchema)]
#[schema(as = Kind, rename_all = "lowercase")]
pub enum KindSchema {
    Sensor,
    Actuator,
}

/// The type of a thing service's values; readings and commands are checked
/// against it so that a store never holds a value of the wrong kind.
#[derive(ToSchema)]
#[schema(as = DataType, rename_all = "lowercase")]
pub enum DataTypeSchema {
    Number,
    Boolean,
    String,
    Data,
}

/// One capability of one device, as applications see it.
#[derive(ToSchema)]
#[schema(as = ThingService)]
pub struct ThingServiceSchema {
    #[schema(example = "gw-a.sim.building-a-floor-1.temperature")]
    id: String,
    kind: KindSchema,
    /// A short semantic word: `temperature`, `humidity`, `light`, `switch`, …
    #[schema(rename = "type")]
    semantic_type: String,
    /// SenML unit name (`Cel`, `%RH`, `lx`, `W`), if the values have one.
    unit: Option<String>,
    data_type: DataTypeSchema,
    #[serde(default)]
    #[schema(example = "campus/building-a/floor-1")]
    location: String,
    /// The gateway that owns the device (the single writer of this entry).
    gateway: String,
    adapter: String,
    /// The device's address in its adapter's terms (topic, URI, EUI-64…).
    device_address: String,
    available: bool,
    #[serde(default)]
    #[schema(value_type = Object)]
    metadata: BTreeMap<String, serde_json::Value>,
    /// How many times the device moved to another gateway (absent: never).
    /// The id keeps the gateway that first saw the device; `gateway` is
    /// its owner now.
    #[serde(default)]
    moves: u32,
}

/// Where a command stands.
#[derive(ToSchema)]
#[schema(as = CommandState)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum CommandStateSchema {
    Pending,
    Succeeded {
        #[serde(skip_serializing_if = "Option::is_none")]
        confirmed: Option<serde_json::Value>,
    },
    Failed {
        reason: String,
    },
}

/// A command's record, as polling clients see it.
#[derive(ToSchema)]
#[schema(as = CommandStatus)]
pub struct CommandStatusSchema {
    id: u64,
    thing: String,
    value: serde_json::Value,
    issued: f64,
    #[serde(flatten)]
    state: CommandStateSchema,
}

/// Where a device's move stands.
#[derive(ToSchema)]
#[schema(as = MoveState)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum MoveStateSchema {
    Pending,
    /// The device registered at the target gateway, which owns its thing
    /// services now and holds their history (`readings_handed` came from
    /// this gateway).
    Arrived {
        readings_handed: u64,
        /// How long the device took to take its new endpoint (CoAP: the
        /// policy write's round trip, 4.15 fallback included).
        repoint_ms: f64,
    },
    /// The device took the new endpoint (one outside the local cloud).
    Repointed,
    Failed {
        reason: String,
    },
}

/// A device's move, as polling clients see it.
#[derive(ToSchema)]
#[schema(as = MoveStatus)]
pub struct MoveStatusSchema {
    id: u64,
    /// `{gateway}.{adapter}.{device}`, as in its thing-service ids.
    #[schema(example = "gw-a.coap.meter-7")]
    device: String,
    /// The target gateway, or `host:port`.
    to: String,
    /// Its thing services, whose ids stay the same.
    things: Vec<String>,
    /// The gateway that runs the move, the device's owner when it began:
    /// follow it at `/api/v1/moves/{id}?at={at}` from any gateway.
    at: String,
    issued: f64,
    #[serde(flatten)]
    state: MoveStateSchema,
}

/// What a drain (or undrain) is doing, or did.
#[derive(ToSchema)]
#[schema(as = DrainStatus)]
pub struct DrainStatusSchema {
    /// `drain` or `undrain`.
    kind: String,
    /// `running`, then `done`, or `incomplete` (see `failed`).
    state: String,
    issued: f64,
    /// Devices that moved: device → the gateway it went to.
    #[schema(value_type = Object)]
    moved: BTreeMap<String, String>,
    /// Devices that were to move and did not: device → why.
    #[schema(value_type = Object)]
    failed: BTreeMap<String, String>,
    /// Devices that cannot move at all (a radio on the serial line, a
    /// third-party MQTT device): device → why.
    #[schema(value_type = Object)]
    unmovable: BTreeMap<String, String>,
}

/// One SenML record as it appears on the wire, before resolution.
#[derive(ToSchema)]
#[schema(as = Record)]
pub struct RecordSchema {
    bn: Option<String>,
    bt: Option<f64>,
    bu: Option<String>,
    bv: Option<f64>,
    bs: Option<f64>,
    bver: Option<i64>,
    n: Option<String>,
    u: Option<String>,
    v: Option<f64>,
    vs: Option<String>,
    vb: Option<bool>,
    vd: Option<String>,
    s: Option<f64>,
    t: Option<f64>,
    ut: Option<f64>,
}

/// A gateway of the local cloud, as `GET /api/v1/peers` shows it.
#[derive(ToSchema)]
#[schema(as = PeerInfo)]
pub struct PeerInfoSchema {
    gateway: String,
    peer_id: String,
    /// `up` or `down`; this gateway itself is `local`.
    state: String,
    addresses: Vec<String>,
    /// Thing services it owns.
    things: usize,
    /// Readings it has stored since it started, as of its last beacon
    /// (twice a second): two reads make its ingest rate.
    readings_ingested: u64,
    /// Milliseconds since it was last heard from (0 for this gateway).
    last_seen_ms: u64,
}

#[derive(ToSchema)]
#[schema(as = State, rename_all = "lowercase")]
pub enum ServiceStateSchema {
    Starting,
    Running,
    /// Failed, waiting to be started again.
    Restarting,
    Stopped,
    /// Failed more often than it may; an operator starts it again.
    Failed,
    /// Placed on another gateway of the local cloud, which runs it.
    Elsewhere,
    /// Placed nowhere for now, or waiting for the gateway that ran it to
    /// let it go (`placement` says which).
    Waiting,
}

#[derive(ToSchema)]
#[schema(as = LogLevel, rename_all = "lowercase")]
pub enum LogLevelSchema {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(ToSchema)]
#[schema(as = LogLine)]
pub struct LogLineSchema {
    /// Microseconds since the epoch.
    time: u64,
    level: LogLevelSchema,
    message: String,
}

/// Selects thing services; every field given must match, none given
/// selects all.
#[derive(ToSchema)]
#[schema(as = Selector)]
#[serde(deny_unknown_fields)]
pub struct SelectorSchema {
    #[schema(rename = "type")]
    semantic_type: Option<String>,
    /// A location prefix, whole segments only.
    location: Option<String>,
    id: Option<String>,
}

/// What the service may touch beyond its own outputs and store.
#[derive(ToSchema)]
#[schema(as = Grants)]
#[serde(deny_unknown_fields)]
pub struct GrantsSchema {
    /// Thing services it may read (latest and history).
    #[serde(default)]
    read: Vec<SelectorSchema>,
    /// Actuators it may command.
    #[serde(default)]
    actuate: Vec<SelectorSchema>,
}

/// The sandbox of one service.
#[derive(ToSchema)]
#[schema(as = Limits)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LimitsSchema {
    /// Linear memory, tables and instances together.
    memory_mib: u64,
    /// How long one call (init, on-reading, on-timer, on-request) may run
    /// in the guest; time spent waiting on the host does not count.
    cpu_ms: u64,
    /// Readings per second over all outputs; more is flooding, and the
    /// service is stopped.
    publish_per_second: u32,
    /// Commands per second; more are refused (`failure::limit`), so a
    /// runaway loop cannot hammer a device.
    actuate_per_second: u32,
    /// Total size of the key-value store.
    store_kib: u64,
}

/// A service as operators see it.
#[derive(ToSchema)]
#[schema(as = ServiceInfo)]
pub struct ServiceInfoSchema {
    name: String,
    version: String,
    description: String,
    state: ServiceStateSchema,
    /// Why it is restarting or failed.
    reason: Option<String>,
    /// Whether it should run (on whichever gateway it is placed).
    enabled: bool,
    digest: String,
    /// Microseconds since the epoch.
    installed_at: u64,
    /// The gateway it was first published at: its outputs' ids start with it.
    home: String,
    /// The publisher key that signed it (`ed25519:<hex>`), if it is signed.
    signed_by: Option<String>,
    /// The gateway of the local cloud that runs it (or is to), if any.
    gateway: Option<String>,
    /// Why it runs there, or why nowhere.
    placement: String,
    /// When its key-value store was last checkpointed to the local cloud
    /// (µs since the epoch): a gateway that takes it over after its runner
    /// died starts from there.
    checkpointed_at: Option<u64>,
    outputs: Vec<String>,
    subscriptions: Vec<SelectorSchema>,
    grants: GrantsSchema,
    timer_ms: Option<u64>,
    limits: LimitsSchema,
    restarts: u32,
    /// Guest calls made (init, readings, ticks, requests).
    calls: u64,
    /// Calls that failed, and failed starts.
    errors: u64,
    last_error: Option<String>,
    /// Time spent running guest code, its host calls not counted (a call
    /// that lasts is clocked on its thread's CPU time, see the CPU deadline).
    cpu_time_ms: f64,
    /// Linear memory of the running instance.
    memory_bytes: u64,
    published: u64,
    /// Readings not handed to the service because its queue was full.
    dropped: u64,
}

/// The defaults shown are the model's own.
impl Default for LimitsSchema {
    fn default() -> Self {
        let limits = fogbank_services::Limits::default();
        LimitsSchema {
            memory_mib: limits.memory_mib,
            cpu_ms: limits.cpu_ms,
            publish_per_second: limits.publish_per_second,
            actuate_per_second: limits.actuate_per_second,
            store_kib: limits.store_kib,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each twin names exactly the members its model serialises, so the
    //! document cannot silently fall behind a model that grows a field.

    use std::collections::BTreeSet;

    use fogbank_taas::{CommandState, CommandStatus, Kind, ThingId, ThingService};
    use serde::Serialize;
    use utoipa::PartialSchema;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;

    use super::*;

    fn members_of(value: &impl Serialize) -> BTreeSet<String> {
        match serde_json::to_value(value) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            other => panic!("not a JSON object: {other:?}"),
        }
    }

    fn properties(schema: RefOr<Schema>) -> BTreeSet<String> {
        match schema {
            RefOr::T(Schema::Object(object)) => object.properties.keys().cloned().collect(),
            // A flattened enum: the object's own members; its cases are
            // checked by the caller.
            RefOr::T(Schema::AllOf(all)) => all
                .items
                .into_iter()
                .filter_map(|item| match item {
                    RefOr::T(Schema::Object(object)) => Some(object.properties.into_keys()),
                    _ => None,
                })
                .flatten()
                .collect(),
            _ => panic!("not an object schema"),
        }
    }

    fn thing() -> ThingService {
        let id = ThingId::parse("gw-a.sim.dev.lamp").expect("a valid id");
        let mut thing = ThingService::new(id, Kind::Actuator, "switch", Some("unit"));
        thing
            .metadata
            .insert("model".into(), serde_json::json!("x"));
        // Absent until the device first moves.
        thing.moves = 1;
        thing
    }

    #[test]
    fn every_twin_names_what_its_model_serialises() {
        assert_eq!(
            members_of(&thing()),
            properties(ThingServiceSchema::schema())
        );

        let status = CommandStatus {
            id: fogbank_taas::CommandId(1),
            thing: thing().id,
            value: serde_json::json!(true),
            issued: 1.0,
            state: CommandState::Pending,
        };
        let mut expected = properties(CommandStatusSchema::schema());
        // The flattened state: `state`, plus `confirmed` or `reason` by case.
        expected.insert("state".into());
        assert_eq!(members_of(&status), expected);

        let moved = fogbank_taas::MoveStatus {
            id: 1,
            device: "gw-a.coap.meter".into(),
            to: "gw-b".into(),
            things: vec![thing().id],
            at: "gw-a".into(),
            issued: 1.0,
            state: fogbank_taas::MoveState::Pending,
        };
        let mut expected = properties(MoveStatusSchema::schema());
        expected.insert("state".into());
        assert_eq!(members_of(&moved), expected);

        let drain: fogbank_taas::DrainStatus = serde_json::from_value(serde_json::json!({
            "kind": "drain", "state": "done", "issued": 1.0,
            "moved": {}, "failed": {}, "unmovable": {}
        }))
        .expect("a drain status");
        assert_eq!(members_of(&drain), properties(DrainStatusSchema::schema()));

        let peer = fogbank_cloud::PeerInfo {
            gateway: "gw-a".into(),
            peer_id: "p".into(),
            state: "up",
            addresses: vec![],
            things: 0,
            readings_ingested: 0,
            last_seen_ms: 0,
        };
        assert_eq!(members_of(&peer), properties(PeerInfoSchema::schema()));

        let limits = fogbank_services::Limits::default();
        assert_eq!(members_of(&limits), properties(LimitsSchema::schema()));
        let selector = fogbank_services::Selector {
            semantic_type: Some("t".into()),
            location: Some("l".into()),
            id: Some("i".into()),
        };
        assert_eq!(members_of(&selector), properties(SelectorSchema::schema()));
        let grants = fogbank_services::Grants {
            read: vec![selector.clone()],
            actuate: vec![],
        };
        assert_eq!(members_of(&grants), properties(GrantsSchema::schema()));

        let line = fogbank_services::LogLine {
            time: 1,
            level: fogbank_services::LogLevel::Info,
            message: "m".into(),
        };
        assert_eq!(members_of(&line), properties(LogLineSchema::schema()));
    }

    #[test]
    fn a_full_record_names_every_member_of_its_twin() {
        let record = fogbank_taas::senml::Record {
            bn: Some("b".into()),
            bt: Some(1.0),
            bu: Some("u".into()),
            bv: Some(1.0),
            bs: Some(1.0),
            bver: Some(10),
            n: Some("n".into()),
            u: Some("u".into()),
            v: Some(1.0),
            vs: Some("s".into()),
            vb: Some(true),
            vd: Some(vec![1]),
            s: Some(1.0),
            t: Some(1.0),
            ut: Some(1.0),
            must_understand: None,
        };
        assert_eq!(members_of(&record), properties(RecordSchema::schema()));
    }
}
