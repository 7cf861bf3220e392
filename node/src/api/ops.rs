//! Operations endpoints: health, metrics, the OpenAPI document.

use actix_web::{HttpRequest, HttpResponse, web};
use fogbank_adapter::GetStatus;
use serde::Serialize;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::AppState;
use super::problem::{ApiError, Problem};
use super::schema::*;
use super::things::{ActuationRequest, CommandValue};
use crate::auth::Scope;
use crate::heap::heap;
use crate::metrics::{Exposition, resident_bytes};

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
    gateway: String,
    version: &'static str,
    things: usize,
    uptime_seconds: u64,
    /// Readings older than this many seconds are deleted; null when age
    /// alone deletes nothing.
    retention_max_age_seconds: Option<u64>,
    /// The history is kept under this many bytes; null for no limit.
    retention_max_bytes: Option<u64>,
}

#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Health)))]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok",
        gateway: state.hub.gateway().to_owned(),
        version: env!("CARGO_PKG_VERSION"),
        things: state.hub.stats().things,
        uptime_seconds: state.started.elapsed().as_secs(),
        retention_max_age_seconds: state.retention.max_age.map(|a| a.as_secs()),
        retention_max_bytes: state.retention.max_bytes,
    })
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    let stats = state.hub.stats();
    let available = state
        .hub
        .query(&fogbank_taas::Query {
            available: Some(true),
            ..Default::default()
        })
        .len();
    let store_bytes = state.hub.store().readings_bytes().unwrap_or(0);
    let store_memory = state.hub.store().memory().unwrap_or_default();
    let mut adapters = Vec::new();
    for supervisor in &state.adapters {
        if let Ok(status) = supervisor.send(GetStatus).await {
            adapters.push(status);
        }
    }
    let restart_labels: Vec<String> = adapters
        .iter()
        .map(|a| format!("adapter=\"{}\"", a.adapter))
        .collect();
    let restarts: Vec<(&str, f64)> = restart_labels
        .iter()
        .zip(&adapters)
        .map(|(l, a)| (l.as_str(), a.restarts as f64))
        .collect();
    let running: Vec<(&str, f64)> = restart_labels
        .iter()
        .zip(&adapters)
        .map(|(l, a)| (l.as_str(), f64::from(u8::from(a.running))))
        .collect();

    let event_labels: Vec<(String, f64)> = state
        .hub
        .adapter_events()
        .into_iter()
        .map(|((adapter, event), n)| (format!("adapter=\"{adapter}\",event=\"{event}\""), n as f64))
        .collect();
    let events: Vec<(&str, f64)> = event_labels.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    let mut out = Exposition::default();
    let unavailable = stats.things.saturating_sub(available);
    out.metric(
        "fogbank_things",
        "gauge",
        "Thing services in the catalog.",
        &[
            ("available=\"true\"", available as f64),
            ("available=\"false\"", unavailable as f64),
        ],
    )
    .counter(
        "fogbank_readings_ingested_total",
        "Readings stored.",
        stats.readings_ingested,
    )
    .counter(
        "fogbank_ingest_rejected_total",
        "Reading batches refused as invalid.",
        stats.readings_rejected,
    )
    .counter(
        "fogbank_commands_total",
        "Actuation commands issued.",
        stats.commands,
    )
    .gauge(
        "fogbank_bus_subscribers",
        "Live subscribers (SSE streams and others).",
        stats.bus.subscribers as f64,
    )
    .counter(
        "fogbank_bus_delivered_total",
        "Readings handed to subscribers.",
        stats.bus.delivered,
    )
    .counter(
        "fogbank_bus_missed_total",
        "Readings not delivered to lagging subscribers.",
        stats.bus.missed,
    )
    .counter(
        "fogbank_bus_disconnected_total",
        "Subscribers disconnected for lagging.",
        stats.bus.disconnected,
    )
    .gauge(
        "fogbank_store_readings_bytes",
        "Approximate size of the reading history.",
        store_bytes as f64,
    )
    .metric(
        "fogbank_store_memory_bytes",
        "gauge",
        "Memory the store holds, by part: write buffers, index and filter blocks outside the cache, the block cache.",
        &[
            ("part=\"memtables\"", store_memory.memtables as f64),
            ("part=\"table_readers\"", store_memory.table_readers as f64),
            ("part=\"block_cache\"", store_memory.block_cache as f64),
        ],
    )
    .metric(
        "fogbank_adapter_running",
        "gauge",
        "1 while an adapter runs.",
        &running,
    )
    .metric(
        "fogbank_adapter_events_total",
        "counter",
        "Adapter events: messages dropped as malformed, rate-limited, oversized, …",
        &events,
    )
    .metric(
        "fogbank_adapter_restarts_total",
        "counter",
        "Adapter restarts after a crash.",
        &restarts,
    )
    .gauge(
        "fogbank_uptime_seconds",
        "Seconds since start.",
        state.started.elapsed().as_secs_f64(),
    )
    .gauge(
        "fogbank_resident_memory_bytes",
        "Resident set size.",
        resident_bytes().unwrap_or(0) as f64,
    )
    .metric(
        "fogbank_heap_bytes",
        "gauge",
        "Both heaps (Rust's in jemalloc, RocksDB's in glibc malloc): bytes in use, and bytes the allocators keep beyond them.",
        &{
            let heap = heap().unwrap_or_default();
            [
                ("state=\"in_use\"", heap.in_use as f64),
                ("state=\"free\"", heap.free as f64),
            ]
        },
    )
    .counter(
        "fogbank_service_compilations_total",
        "Service components compiled or loaded from the compile cache (services of one component share one).",
        state.services.compilations(),
    )
    .counter_by(
        "fogbank_config_reloads_total",
        "Config reloads on SIGHUP, by outcome (refused: the config had problems; nothing changed).",
        "outcome",
        crate::reload::reload_counts(),
    )
    .http(&state.http);
    if let Some(endpoint) = &state.coap {
        out.coap(endpoint);
    }
    if let Some(cloud) = &state.cloud {
        out.cloud(&cloud.stats().await);
    }
    if let Some(agent) = &state.smanage {
        out.smanage(agent);
    }
    if let Some(sip) = &state.sip {
        out.sip(&sip.view());
    }
    out.services(&state.services.list());
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out.finish()))
}

pub(crate) struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "fogbank gateway API", description = "Thing services of a fogbank local cloud: catalog, readings (SenML), live streams and actuation."),
    paths(
        super::things::list, super::things::get, super::things::description, super::things::latest,
        super::things::history, super::things::ingest, super::things::actuate, super::things::command,
        super::stream::sse, super::stream::sse_many, super::backup::backup, super::peers::list, super::peers::forget,
        super::devices::transport, super::devices::status, super::devices::drain,
        super::devices::undrain, super::devices::drain_status,
        super::services::publish, super::services::list, super::services::get, super::services::publications,
        super::services::remove, super::services::start, super::services::stop,
        super::services::logs, super::federation::smanage, super::federation::sip, health, metrics, openapi
    ),
    components(schemas(ThingServiceSchema, KindSchema, DataTypeSchema, RecordSchema, CommandStatusSchema, CommandStateSchema, Problem, ActuationRequest, CommandValue, Health, PeerInfoSchema,
        MoveStatusSchema, MoveStateSchema, super::devices::TransportRequest,
        DrainStatusSchema, super::devices::DrainRequest, super::backup::BackupRequest, super::backup::BackupDone,
        ServiceInfoSchema, ServiceStateSchema, LogLineSchema, LogLevelSchema,
        SelectorSchema, GrantsSchema, LimitsSchema, super::services::PublishRequest,
        super::services::SignatureSchema, super::services::PublicationSchema,
        super::federation::SmanageStatus, super::federation::SdvsJson, super::federation::SensorServiceJson,
        super::federation::ForwardingJson, super::federation::ConfiguringJson, super::federation::CountersJson,
        super::federation::SipStatus, super::federation::SipRegistrationJson, super::federation::SipSubscriptionJson)),
    modifiers(&BearerScheme),
)]
pub struct ApiDoc;

#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "This document", body = Object)))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(ApiDoc::openapi().to_json().unwrap_or_default())
}
