//! Federation's state on the gateway: `GET /api/v1/federation/smanage`,
//! this gateway's SDVSs as the S-MANAGE agent runs them — addresses,
//! sensor services, both tables with their counters and TTLs, and the
//! agent's packet counters; `GET /api/v1/federation/sip`, its SIP
//! registrations.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use fogbank_sdvs::{AgentStatus, SdvsView};
use fogbank_smanage::PacketCounters;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::problem::ApiError;
use crate::auth::Scope;

#[derive(Serialize, ToSchema)]
pub struct SmanageStatus {
    /// False when `[smanage] controller` is `off`; the rest is then empty.
    enabled: bool,
    /// The controller as configured, `host:port`.
    controller: Option<String>,
    /// What it resolved to; null until it does.
    controller_endpoint: Option<String>,
    listen: Option<String>,
    addresses: Option<String>,
    sdvs: Vec<SdvsJson>,
    counters: CountersJson,
}

#[derive(Serialize, ToSchema)]
pub struct SdvsJson {
    /// `0x0100`.
    address: String,
    /// `{adapter}.{device}`.
    device: String,
    location: String,
    /// 0–100, or null for mains power.
    battery_percent: Option<u8>,
    /// Configuring instructions not yet executed.
    busy: u8,
    services: Vec<SensorServiceJson>,
    forwarding: Vec<ForwardingJson>,
    configuring: Vec<ConfiguringJson>,
}

#[derive(Serialize, ToSchema)]
pub struct SensorServiceJson {
    id: u8,
    thing: String,
    #[serde(rename = "type")]
    semantic_type: String,
    on: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ForwardingJson {
    index: u8,
    window: u8,
    field: &'static str,
    operator: &'static str,
    value: u16,
    /// unicast, multicast, broadcast, drop, modify or continue.
    action: &'static str,
    value1: u16,
    value2: u16,
    /// Seconds, as installed; 0 = permanent.
    ttl: u16,
    ttl_left: u16,
    counter: u32,
}

#[derive(Serialize, ToSchema)]
pub struct ConfiguringJson {
    request_id: u16,
    service: u8,
    /// read, on, off or set.
    action: &'static str,
    frequency_s: u16,
    period_s: u16,
    destination: String,
    value: i16,
    ttl: u16,
    ttl_left: u16,
    counter: u32,
    /// Unix seconds.
    start_time: u32,
    running_time_s: u32,
    executed: bool,
}

/// Packets by type, and what was dropped by reason.
#[derive(Serialize, ToSchema, Default)]
pub struct CountersJson {
    received: BTreeMap<&'static str, u64>,
    sent: BTreeMap<&'static str, u64>,
    malformed: BTreeMap<&'static str, u64>,
    dropped: BTreeMap<&'static str, u64>,
}

impl From<PacketCounters> for CountersJson {
    fn from(c: PacketCounters) -> Self {
        CountersJson {
            received: c.received,
            sent: c.sent,
            malformed: c.malformed,
            dropped: c.dropped,
        }
    }
}

fn sdvs_json(view: SdvsView) -> SdvsJson {
    SdvsJson {
        address: view.address.to_string(),
        device: view.device,
        location: view.location,
        battery_percent: (view.battery <= 100).then_some(view.battery),
        busy: view.busy,
        services: view
            .services
            .into_iter()
            .map(|(id, thing, semantic_type, on)| SensorServiceJson {
                id,
                thing: thing.to_string(),
                semantic_type,
                on,
            })
            .collect(),
        forwarding: view
            .forwarding
            .into_iter()
            .map(|(row, ttl_left)| ForwardingJson {
                index: row.index,
                window: row.entry.window,
                field: row.entry.field.name(),
                operator: row.entry.operator.symbol(),
                value: row.entry.value,
                action: row.entry.action.name(),
                value1: row.entry.value1,
                value2: row.entry.value2,
                ttl: row.entry.ttl,
                ttl_left,
                counter: row.counter,
            })
            .collect(),
        configuring: view
            .configuring
            .into_iter()
            .map(|(row, stat)| ConfiguringJson {
                request_id: row.entry.request_id,
                service: row.entry.service,
                action: row.entry.action.name(),
                frequency_s: row.entry.frequency,
                period_s: row.entry.period,
                destination: row.entry.destination.to_string(),
                value: row.entry.value,
                ttl: row.entry.ttl,
                ttl_left: stat.ttl_left,
                counter: stat.counter,
                start_time: stat.start_time,
                running_time_s: stat.running_time,
                executed: stat.executed,
            })
            .collect(),
    }
}

fn status_json(status: AgentStatus, counters: PacketCounters) -> SmanageStatus {
    SmanageStatus {
        enabled: true,
        controller: Some(status.controller),
        controller_endpoint: status.controller_endpoint.map(|e| e.to_string()),
        listen: Some(status.listen.to_string()),
        addresses: Some(status.addresses.to_string()),
        sdvs: status.sdvs.into_iter().map(sdvs_json).collect(),
        counters: counters.into(),
    }
}

#[utoipa::path(get, path = "/api/v1/federation/smanage", tag = "federation",
    responses((status = 200, description = "Every SDVS of this gateway with its sensor services and both tables; `enabled: false` when S-MANAGE is off", body = SmanageStatus)))]
pub async fn smanage(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    let body = match &state.smanage {
        Some(agent) => status_json(agent.status(), agent.counters()),
        None => SmanageStatus {
            enabled: false,
            controller: None,
            controller_endpoint: None,
            listen: None,
            addresses: None,
            sdvs: Vec::new(),
            counters: CountersJson::default(),
        },
    };
    Ok(HttpResponse::Ok().json(body))
}

/// One address of record.
#[derive(Serialize, ToSchema)]
pub struct SipRegistrationJson {
    /// The user part: the gateway id or a thing-service id.
    aor: String,
    /// registering, registered or failed.
    state: &'static str,
    /// Why the last attempt failed.
    reason: Option<String>,
    /// Seconds since the binding was made.
    registered_for_s: Option<u64>,
    /// Seconds until the binding runs out unless refreshed.
    expires_in_s: Option<u64>,
    attempts: u32,
}

/// One `fogbank-thing` subscription this gateway is the notifier of.
#[derive(Serialize, ToSchema)]
pub struct SipSubscriptionJson {
    /// The watcher's URI (its From).
    watcher: String,
    /// The thing-service id.
    thing: String,
    /// senml+json or pidf+xml.
    format: &'static str,
    notifications_sent: u64,
    expires_in_s: u64,
}

#[derive(Serialize, ToSchema)]
pub struct SipStatus {
    /// False when `[sip] registrar` is `off`.
    enabled: bool,
    /// Whether the registrar answers (OPTIONS every few seconds).
    registrar_reachable: bool,
    registrations: Vec<SipRegistrationJson>,
    subscriptions: Vec<SipSubscriptionJson>,
    /// notifications, notifications_failed, notifications_deferred
    /// (answered with a Retry-After, sent again), messages_received,
    /// messages_sent, messages_failed, publications, publications_failed,
    /// forbidden, rejected.
    #[schema(value_type = std::collections::BTreeMap<String, u64>)]
    counters: std::collections::BTreeMap<&'static str, u64>,
}

#[utoipa::path(get, path = "/api/v1/federation/sip", tag = "federation",
    responses((status = 200, description = "Every address of record this gateway registers, with its state, the subscriptions it serves and its counters; `enabled: false` when SIP is off", body = SipStatus)))]
pub async fn sip(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    let Some(view) = state.sip.as_ref().map(|sip| sip.view()) else {
        return Ok(HttpResponse::Ok().json(SipStatus {
            enabled: false,
            registrar_reachable: false,
            registrations: Vec::new(),
            subscriptions: Vec::new(),
            counters: Default::default(),
        }));
    };
    let registrations = view
        .registrations
        .into_iter()
        .map(|r| {
            let (state, reason) = match r.state {
                fogbank_sip::RegistrationState::Registering => ("registering", None),
                fogbank_sip::RegistrationState::Registered => ("registered", None),
                fogbank_sip::RegistrationState::Failed { reason } => ("failed", Some(reason)),
            };
            SipRegistrationJson {
                aor: r.aor,
                state,
                reason,
                registered_for_s: r.registered_for,
                expires_in_s: r.expires_in,
                attempts: r.attempts,
            }
        })
        .collect();
    let subscriptions = view
        .subscriptions
        .into_iter()
        .map(|s| SipSubscriptionJson {
            watcher: s.watcher,
            thing: s.thing,
            format: s.format,
            notifications_sent: s.notifications,
            expires_in_s: s.expires_in,
        })
        .collect();
    Ok(HttpResponse::Ok().json(SipStatus {
        enabled: true,
        registrar_reachable: view.registrar_reachable,
        registrations,
        subscriptions,
        counters: view.counters.into_iter().collect(),
    }))
}
