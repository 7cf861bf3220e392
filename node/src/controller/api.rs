//! The controller's REST northbound interface: requests (place, list,
//! accept, cancel, their data as SenML and live), SDVSs, events, all under
//! `/api/v1`, with `/openapi.json`, `/health` and `/metrics`; its dashboard
//! at `/` (`crate::dashboard`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use fogbank_controller::{
    Action, Assignment, AssignmentState, Controller, DataPoint, Request, RequestSpec, SdvsRecord,
    Unable,
};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::api::problem::{ApiError, Problem};
use crate::api::{authorize, get, method_not_allowed};
use crate::auth::{Scope, Tokens};
use crate::metrics::Exposition;

const KEEPALIVE: Duration = Duration::from_secs(15);
const MAX_BODY: usize = 16 * 1024;

pub struct ControllerState {
    pub controller: Arc<Controller>,
    pub tokens: Tokens,
}

/// `POST /api/v1/requests`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// The sensor services' type, as in ReportFeatures (`temperature`).
    #[serde(rename = "type")]
    semantic_type: String,
    /// A location prefix, by whole segments (`campus/building-a`).
    location: String,
    /// Seconds between two samples (0 = once).
    frequency_s: u16,
    /// Seconds the request runs.
    period_s: u16,
    #[schema(value_type = ActionSchema)]
    action: Action,
    /// For `set`.
    value: Option<i16>,
    /// How many sensor services; all that match by default.
    count: Option<usize>,
    /// An SDVS address (`0x0100`) for the data; the controller by default.
    destination: Option<String>,
    /// Take a partial offer at once (default); with false the request
    /// waits in state `offered` for `POST …/accept`.
    accept_partial: Option<bool>,
}

/// What the request does with each sensor service (the OpenAPI twin of
/// `fogbank_controller::Action`, which serialises the same names).
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(as = Action, rename_all = "lowercase")]
pub enum ActionSchema {
    Read,
    On,
    Off,
    Set,
}

#[derive(Serialize, ToSchema)]
pub struct AssignmentJson {
    /// `0x0100`.
    sdvs: String,
    service: u8,
    /// The gateway's S-MANAGE endpoint.
    gateway: String,
    /// pending, programmed, completed, lost or cancelled.
    state: &'static str,
    /// Why it waits: conflict, full, low_battery or down.
    waiting_for: Option<String>,
    programmed_at: Option<u64>,
    counter: u32,
    executed: bool,
    ttl_left: u16,
}

#[derive(Serialize, ToSchema)]
pub struct Placed {
    id: u16,
    /// `full` or `partial`.
    outcome: &'static str,
    /// offered, queued or running.
    state: &'static str,
    /// Seconds until the pending services are expected free; null when
    /// nothing waits or the end is unknown.
    waiting_s: Option<u64>,
    assigned: Vec<AssignmentJson>,
    pending: Vec<AssignmentJson>,
    /// Services asked for beyond what exists.
    missing: usize,
}

#[derive(Serialize, ToSchema)]
pub struct RequestJson {
    id: u16,
    #[serde(rename = "type")]
    semantic_type: String,
    location: String,
    frequency_s: u16,
    period_s: u16,
    action: &'static str,
    value: Option<i16>,
    count: Option<usize>,
    destination: String,
    accept_partial: bool,
    /// offered, queued, running, completed, cancelled or failed.
    state: &'static str,
    outcome: &'static str,
    /// Unix seconds.
    created: u64,
    finished: Option<u64>,
    reason: Option<String>,
    /// Samples collected.
    readings: u64,
    missing: usize,
    assignments: Vec<AssignmentJson>,
}

#[derive(Serialize, ToSchema)]
pub struct SensorServiceJson {
    id: u8,
    on: bool,
    #[serde(rename = "type")]
    semantic_type: String,
    driver: String,
}

#[derive(Serialize, ToSchema)]
pub struct FwdStatJson {
    index: u8,
    ttl_left: u16,
    counter: u32,
}

#[derive(Serialize, ToSchema)]
pub struct ConfigStatJson {
    request_id: u16,
    service: u8,
    ttl_left: u16,
    counter: u32,
    start_time: u32,
    running_time_s: u32,
    executed: bool,
}

#[derive(Serialize, ToSchema)]
pub struct SdvsJson {
    address: String,
    /// The gateway's S-MANAGE endpoint.
    gateway: String,
    location: String,
    /// 0–100, or null for mains power.
    battery_percent: Option<u8>,
    busy: u8,
    up: bool,
    low_battery: bool,
    full: bool,
    /// Unix milliseconds of the last Hello.
    last_hello_ms: u64,
    hello_interval_ms: u64,
    services: Vec<SensorServiceJson>,
    forwarding: Vec<FwdStatJson>,
    configuring: Vec<ConfigStatJson>,
}

fn assignment_json(a: &Assignment) -> AssignmentJson {
    AssignmentJson {
        sdvs: format!("0x{:04x}", a.sdvs),
        service: a.service,
        gateway: a.gateway.clone(),
        state: a.state.name(),
        waiting_for: a.waiting_for.clone(),
        programmed_at: a.programmed_at,
        counter: a.counter,
        executed: a.executed,
        ttl_left: a.ttl_left,
    }
}

fn request_json(r: &Request) -> RequestJson {
    RequestJson {
        id: r.id,
        semantic_type: r.spec.semantic_type.clone(),
        location: r.spec.location.clone(),
        frequency_s: r.spec.frequency_s,
        period_s: r.spec.period_s,
        action: r.spec.action.name(),
        value: r.spec.value,
        count: r.spec.count,
        destination: format!("0x{:04x}", r.spec.destination.unwrap_or(0)),
        accept_partial: r.spec.accept_partial,
        state: r.state.name(),
        outcome: r.outcome.name(),
        created: r.created,
        finished: r.finished,
        reason: r.reason.clone(),
        readings: r.readings,
        missing: r.missing,
        assignments: r.assignments.iter().map(assignment_json).collect(),
    }
}

fn sdvs_json(s: &SdvsRecord) -> SdvsJson {
    SdvsJson {
        address: format!("0x{:04x}", s.address),
        gateway: s.endpoint.to_string(),
        location: s.location.clone(),
        battery_percent: (s.battery <= 100).then_some(s.battery),
        busy: s.busy,
        up: s.up,
        low_battery: s.low_battery,
        full: s.full,
        last_hello_ms: s.last_hello_ms,
        hello_interval_ms: s.hello_interval_ms,
        services: s
            .services
            .iter()
            .map(|(id, on, kind, driver)| SensorServiceJson {
                id: *id,
                on: *on,
                semantic_type: kind.clone(),
                driver: driver.clone(),
            })
            .collect(),
        forwarding: s
            .forwarding
            .iter()
            .map(|f| FwdStatJson {
                index: f.index,
                ttl_left: f.ttl_left,
                counter: f.counter,
            })
            .collect(),
        configuring: s
            .configuring
            .iter()
            .map(|c| ConfigStatJson {
                request_id: c.request_id,
                service: c.service,
                ttl_left: c.ttl_left,
                counter: c.counter,
                start_time: c.start_time,
                running_time_s: c.running_time,
                executed: c.executed,
            })
            .collect(),
    }
}

fn parse_address(raw: &str) -> Result<u16, ApiError> {
    let parsed = match raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => raw.parse(),
    };
    parsed.map_err(|_| ApiError::BadRequest(format!("{raw:?} is not an address such as 0x0100")))
}

fn request_id(raw: &str) -> Result<u16, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("{raw:?} is not a request id")))
}

fn senml_record(point: &DataPoint, base: bool) -> serde_json::Value {
    let value = f64::from(point.value) * 10f64.powi(i32::from(point.exponent));
    let name = format!("0x{:04x}/{}", point.sdvs, point.service);
    if base {
        serde_json::json!({"bn": format!("urn:fogbank:request:{}:", point.request), "n": name, "t": point.time, "v": value})
    } else {
        serde_json::json!({"n": name, "t": point.time, "v": value})
    }
}

#[utoipa::path(post, path = "/api/v1/requests", tag = "requests", request_body = NewRequest,
    responses((status = 201, description = "Placed: `full`, or `partial` with the waiting time for the rest", body = Placed),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "`outcome: unable`: nothing can serve it", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create(
    request: HttpRequest,
    state: web::Data<ControllerState>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&state.tokens, &request, Scope::Write)?;
    let new: NewRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"type\", \"location\", \"frequency_s\", \"period_s\", \"action\"}}: {e}"
        ))
    })?;
    let destination = new.destination.as_deref().map(parse_address).transpose()?;
    let spec = RequestSpec {
        semantic_type: new.semantic_type,
        location: new.location,
        frequency_s: new.frequency_s,
        period_s: new.period_s,
        action: new.action,
        value: new.value,
        count: new.count,
        destination,
        accept_partial: new.accept_partial.unwrap_or(true),
    };
    let submitted = state.controller.submit(spec).map_err(|e| match e {
        Unable::Invalid(reason) => ApiError::BadRequest(reason),
        unable => ApiError::Unable(unable.to_string()),
    })?;
    let r = &submitted.request;
    let (pending, assigned): (Vec<&Assignment>, Vec<&Assignment>) = r
        .assignments
        .iter()
        .partition(|a| a.state == AssignmentState::Pending);
    let placed = Placed {
        id: r.id,
        outcome: r.outcome.name(),
        state: r.state.name(),
        waiting_s: submitted.waiting_s,
        assigned: assigned.into_iter().map(assignment_json).collect(),
        pending: pending.into_iter().map(assignment_json).collect(),
        missing: r.missing,
    };
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/requests/{}", r.id)))
        .json(placed))
}

#[derive(Deserialize)]
pub struct ListQuery {
    state: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/requests", tag = "requests",
    params(("state" = Option<String>, Query, description = "Only requests in this state (`queued` shows the queue)")),
    responses((status = 200, body = [RequestJson])))]
pub async fn list(
    request: HttpRequest,
    state: web::Data<ControllerState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state.tokens, &request, Scope::Read)?;
    let requests: Vec<RequestJson> = state
        .controller
        .requests()
        .iter()
        .map(request_json)
        .filter(|r| query.state.as_deref().is_none_or(|s| s == r.state))
        .collect();
    Ok(HttpResponse::Ok().json(requests))
}

#[utoipa::path(get, path = "/api/v1/requests/{id}", tag = "requests", params(("id" = u16, Path)),
    responses((status = 200, body = RequestJson), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn show(
    request: HttpRequest,
    state: web::Data<ControllerState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state.tokens, &request, Scope::Read)?;
    let id = request_id(&id)?;
    let found = state
        .controller
        .request(id)
        .ok_or_else(|| ApiError::NotFound(format!("no request {id}")))?;
    Ok(HttpResponse::Ok().json(request_json(&found)))
}

#[utoipa::path(delete, path = "/api/v1/requests/{id}", tag = "requests", params(("id" = u16, Path)),
    responses((status = 200, description = "Cancelled on its SDVSs", body = RequestJson),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Already over", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn cancel(
    request: HttpRequest,
    state: web::Data<ControllerState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state.tokens, &request, Scope::Write)?;
    let id = request_id(&id)?;
    change(state.controller.cancel(id))
}

#[utoipa::path(post, path = "/api/v1/requests/{id}/accept", tag = "requests", params(("id" = u16, Path)),
    responses((status = 200, description = "Taken up: programmed where it can be, queued for the rest", body = RequestJson),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Not offered", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn accept(
    request: HttpRequest,
    state: web::Data<ControllerState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state.tokens, &request, Scope::Write)?;
    let id = request_id(&id)?;
    change(state.controller.accept(id))
}

fn change(
    result: Result<Request, fogbank_controller::engine::RequestError>,
) -> Result<HttpResponse, ApiError> {
    use fogbank_controller::engine::RequestError;
    match result {
        Ok(r) => Ok(HttpResponse::Ok().json(request_json(&r))),
        Err(e @ RequestError::Unknown(_)) => Err(ApiError::NotFound(e.to_string())),
        Err(e) => Err(ApiError::Conflict(e.to_string())),
    }
}

#[utoipa::path(get, path = "/api/v1/requests/{id}/readings", tag = "requests", params(("id" = u16, Path)),
    responses((status = 200, description = "The data collected, as a SenML pack: `n` is `{sdvs}/{service}`", content_type = "application/senml+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn readings(
    request: HttpRequest,
    state: web::Data<ControllerState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state.tokens, &request, Scope::Read)?;
    let id = request_id(&id)?;
    if state.controller.request(id).is_none() {
        return Err(ApiError::NotFound(format!("no request {id}")));
    }
    let points = state
        .controller
        .readings(id)
        .map_err(|e| ApiError::Storage(e.to_string()))?;
    let pack: Vec<serde_json::Value> = points
        .iter()
        .enumerate()
        .map(|(i, p)| senml_record(p, i == 0))
        .collect();
    Ok(HttpResponse::Ok()
        .content_type("application/senml+json")
        .body(serde_json::to_vec(&pack).unwrap_or_default()))
}

/// An SSE body from a broadcast receiver, with keep-alives.
fn sse<T: Clone + Send + 'static>(
    receiver: tokio::sync::broadcast::Receiver<T>,
    render: impl Fn(T) -> Option<String> + 'static,
) -> HttpResponse {
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    let events = futures_util::stream::unfold(
        (receiver, keepalive, render),
        |(mut receiver, mut keepalive, render)| async move {
            loop {
                tokio::select! {
                    received = receiver.recv() => match received {
                        Ok(item) => {
                            if let Some(text) = render(item) {
                                return Some((Ok::<_, actix_web::Error>(Bytes::from(text)), (receiver, keepalive, render)));
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                            let text = format!("event: lagged\ndata: {{\"missed\":{missed}}}\n\n");
                            return Some((Ok(Bytes::from(text)), (receiver, keepalive, render)));
                        }
                        Err(_) => return None,
                    },
                    _ = keepalive.tick() => {
                        return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), (receiver, keepalive, render)));
                    }
                }
            }
        },
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events)
}

#[utoipa::path(get, path = "/api/v1/requests/{id}/stream", tag = "requests", params(("id" = u16, Path)),
    responses((status = 200, description = "Server-Sent Events: `reading` (data: a SenML pack of one record) as samples arrive", content_type = "text/event-stream"),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn stream(
    request: HttpRequest,
    state: web::Data<ControllerState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state.tokens, &request, Scope::Read)?;
    let id = request_id(&id)?;
    if state.controller.request(id).is_none() {
        return Err(ApiError::NotFound(format!("no request {id}")));
    }
    Ok(sse(state.controller.data(), move |point| {
        (point.request == id)
            .then(|| format!("event: reading\ndata: [{}]\n\n", senml_record(&point, true)))
    }))
}

#[utoipa::path(get, path = "/api/v1/events", tag = "sdvs",
    responses((status = 200, description = "Server-Sent Events named by kind: sdvs_up, sdvs_down, low_battery, full_task, completion, removal, request", content_type = "text/event-stream")))]
pub async fn events(
    request: HttpRequest,
    state: web::Data<ControllerState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state.tokens, &request, Scope::Read)?;
    Ok(sse(state.controller.events(), |event| {
        let data = serde_json::json!({
            "kind": event.kind,
            "sdvs": event.sdvs.map(|a| format!("0x{a:04x}")),
            "request": event.request,
            "detail": event.detail,
            "time_ms": event.time_ms,
        });
        Some(format!("event: {}\ndata: {data}\n\n", event.kind))
    }))
}

#[utoipa::path(get, path = "/api/v1/sdvs", tag = "sdvs", responses((status = 200, body = [SdvsJson])))]
pub async fn sdvs_list(
    request: HttpRequest,
    state: web::Data<ControllerState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state.tokens, &request, Scope::Read)?;
    let all: Vec<SdvsJson> = state.controller.sdvs().iter().map(sdvs_json).collect();
    Ok(HttpResponse::Ok().json(all))
}

#[utoipa::path(get, path = "/api/v1/sdvs/{address}", tag = "sdvs", params(("address" = String, Path, description = "`0x0100`")),
    responses((status = 200, body = SdvsJson), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn sdvs_one(
    request: HttpRequest,
    state: web::Data<ControllerState>,
    address: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state.tokens, &request, Scope::Read)?;
    let address = parse_address(&address)
        .map_err(|_| ApiError::NotFound(format!("{address:?} is not an SDVS address")))?;
    let found = state
        .controller
        .sdvs_one(address)
        .ok_or_else(|| ApiError::NotFound(format!("no SDVS 0x{address:04x}")))?;
    Ok(HttpResponse::Ok().json(sdvs_json(&found)))
}

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

pub async fn metrics(
    request: HttpRequest,
    state: web::Data<ControllerState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state.tokens, &request, Scope::Read)?;
    let controller = &state.controller;
    let sdvs = controller.sdvs();
    let up = sdvs.iter().filter(|s| s.up).count();
    let mut by_state: BTreeMap<&'static str, u64> = BTreeMap::new();
    for r in controller.requests() {
        *by_state.entry(r.state.name()).or_default() += 1;
    }
    let mut out = Exposition::default();
    out.metric(
        "fogbank_controller_sdvs",
        "gauge",
        "SDVSs known, up or down.",
        &[
            ("state=\"up\"", up as f64),
            ("state=\"down\"", (sdvs.len() - up) as f64),
        ],
    );
    let labels: Vec<(String, f64)> = by_state
        .iter()
        .map(|(s, n)| (format!("state=\"{s}\""), *n as f64))
        .collect();
    let samples: Vec<(&str, f64)> = labels.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    out.metric(
        "fogbank_controller_requests",
        "gauge",
        "Requests by state.",
        &samples,
    )
    .packet_counters("fogbank_controller", &controller.counters())
    .counter(
        "fogbank_controller_relayed_total",
        "Packets relayed between gateways.",
        controller.relayed(),
    );
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out.finish()))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "fogbank SD-IoT controller API",
        description = "Requests placed on the sensor services of every gateway's SDVSs over S-MANAGE, their data, and the SDVSs' status."
    ),
    paths(
        create, list, show, cancel, accept, readings, stream, events, sdvs_list, sdvs_one
    ),
    components(schemas(
        NewRequest,
        Placed,
        AssignmentJson,
        RequestJson,
        SdvsJson,
        SensorServiceJson,
        FwdStatJson,
        ConfigStatJson,
        Problem
    ))
)]
struct ControllerApi;

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ControllerApi::openapi())
}

fn configure(config: &mut web::ServiceConfig) {
    config
        .app_data(web::PayloadConfig::new(MAX_BODY))
        .service(
            web::scope("/api/v1")
                .service(
                    web::resource("/requests")
                        .route(web::get().to(list))
                        .route(web::post().to(create))
                        .default_service(method_not_allowed("GET, POST")),
                )
                .service(
                    web::resource("/requests/{id}")
                        .route(web::get().to(show))
                        .route(web::delete().to(cancel))
                        .default_service(method_not_allowed("GET, DELETE")),
                )
                .service(
                    web::resource("/requests/{id}/accept")
                        .route(web::post().to(accept))
                        .default_service(method_not_allowed("POST")),
                )
                .service(get("/requests/{id}/readings", readings))
                .service(get("/requests/{id}/stream", stream))
                .service(get("/sdvs", sdvs_list))
                .service(get("/sdvs/{address}", sdvs_one))
                .service(get("/events", events)),
        )
        .service(get("/health", health))
        .service(get("/metrics", metrics))
        .service(get("/openapi.json", openapi))
        .configure(crate::dashboard::configure_controller)
        .default_service(web::to(|request: HttpRequest| async move {
            Err::<HttpResponse, _>(ApiError::NoRoute(format!(
                "no resource at {}",
                request.path()
            )))
        }));
}

pub fn app(
    state: web::Data<ControllerState>,
) -> actix_web::App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new()
        .app_data(state)
        .configure(configure)
        .wrap(actix_web::middleware::from_fn(
            |request: ServiceRequest, next: actix_web::middleware::Next<_>| {
                let span = tracing::debug_span!("http", method = %request.method(), path = %request.path());
                async move {
                    use tracing::Instrument;
                    next.call(request).instrument(span).await
                }
            },
        ))
}
