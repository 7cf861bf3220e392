//! Devices that move to another gateway: `POST
//! /api/v1/devices/{device}/transport` starts a move, `GET
//! /api/v1/moves/{id}` follows it; `POST /api/v1/drain` moves them all
//! away and `POST /api/v1/undrain` brings them back, `GET /api/v1/drain`
//! follows either. The moves themselves are the hub's (`Hub::move_device`,
//! `Hub::drain`); this module only speaks HTTP for them.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use fogbank_taas::{DrainStatus, MOVE_DEADLINE, MoveError, MoveStatus, MoveTarget};
use serde::Deserialize;

use super::AppState;
use super::body::{content_type, read_body, read_json};
use super::problem::{ApiError, Problem};
use super::schema::*;
use crate::auth::Scope;

/// Where the device is to register from now on: a gateway of the local
/// cloud (`gateway`), or any endpoint (`address` and `port`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransportRequest {
    /// The id of a gateway of this local cloud: the device keeps the ids
    /// of its thing services and its history goes with it.
    #[schema(example = "gw-b")]
    pub gateway: Option<String>,
    /// Host name or IP address of any endpoint (with `port`): the device
    /// leaves the local cloud's sight.
    pub address: Option<String>,
    pub port: Option<u16>,
    /// How long the device may take to register at the gateway [30].
    pub deadline_secs: Option<u64>,
}

/// The longest deadline a move may be given.
const MAX_DEADLINE: Duration = Duration::from_secs(600);

#[utoipa::path(post, path = "/api/v1/devices/{device}/transport", tag = "devices",
    params(("device" = String, Path, description = "`{gateway}.{adapter}.{device}` as in the device's thing-service ids, or any one of those ids")),
    request_body(content = TransportRequest, content_type = "application/json"),
    responses((status = 202, description = "The move started: poll the Location until its state is `arrived`, `repointed` or `failed`", body = MoveStatusSchema),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such device", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Owned by another gateway, moving already, not movable, or the target is not up", body = Problem, content_type = "application/problem+json"),
              (status = 415, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn transport(
    request: HttpRequest,
    state: web::Data<AppState>,
    device: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Write)?;
    let asked: TransportRequest = read_json(
        &request,
        payload,
        state.max_body_bytes,
        r#"{"gateway": "gw-b"} or {"address": "…", "port": 5683}"#,
    )
    .await?;
    let target = match asked {
        TransportRequest {
            gateway: Some(gateway),
            address: None,
            port: None,
            ..
        } => MoveTarget::Gateway(gateway),
        TransportRequest {
            gateway: None,
            address: Some(host),
            port: Some(port),
            ..
        } if !host.is_empty() => MoveTarget::Endpoint { host, port },
        _ => {
            return Err(ApiError::BadRequest(
                "give either \"gateway\", or \"address\" and \"port\"".into(),
            ));
        }
    };
    let deadline = deadline(asked.deadline_secs)?;
    let status = state
        .hub
        .move_device_anywhere(&device, target, deadline)
        .await?;
    Ok(move_response(status))
}

/// Which gateway runs the move (its `at`), when not this one.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MoveQuery {
    /// The gateway that runs the move [this one].
    pub at: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/moves/{id}", tag = "devices", params(("id" = u64, Path, description = "Move id"), MoveQuery),
    responses((status = 200, description = "Finished", body = MoveStatusSchema), (status = 202, description = "Still running", body = MoveStatusSchema),
              (status = 404, description = "No such move, or `at` is no gateway of the local cloud that is up", body = Problem, content_type = "application/problem+json"),
              (status = 502, description = "The gateway running the move failed to answer", body = Problem, content_type = "application/problem+json"),
              (status = 504, description = "The gateway running the move did not answer in time", body = Problem, content_type = "application/problem+json")))]
pub async fn status(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<MoveQuery>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    let at = query.at.as_deref().unwrap_or(state.hub.gateway());
    let unknown = || ApiError::NotFound(format!("no move {id} started at gateway {at}"));
    let number: u64 = id.parse().map_err(|_| unknown())?;
    let status = state
        .hub
        .move_status_at(at, number)
        .await?
        .ok_or_else(unknown)?;
    Ok(move_response(status))
}

/// How long each device may take to register at its target.
fn deadline(asked: Option<u64>) -> Result<Duration, ApiError> {
    match asked.map(Duration::from_secs) {
        Some(d) if d.is_zero() || d > MAX_DEADLINE => Err(ApiError::BadRequest(format!(
            "deadline_secs is 1 to {}",
            MAX_DEADLINE.as_secs()
        ))),
        Some(d) => Ok(d),
        None => Ok(MOVE_DEADLINE),
    }
}

/// Where a drain sends the devices: the other gateways, spread by load, or
/// the one named.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// One gateway of the local cloud to take every device.
    #[schema(example = "gw-b")]
    pub to: Option<String>,
    /// How long each device may take to register at its target [30].
    pub deadline_secs: Option<u64>,
}

/// An optional JSON body: empty is the default.
async fn optional_json<T: serde::de::DeserializeOwned + Default>(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<T, ApiError> {
    let body = read_body(request, payload, state.max_body_bytes).await?;
    if body.is_empty() {
        return Ok(T::default());
    }
    let found = content_type(request);
    if found != "application/json" {
        return Err(ApiError::UnsupportedType {
            found,
            expected: "application/json",
        });
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(e.to_string()))
}

#[utoipa::path(post, path = "/api/v1/drain", tag = "devices",
    request_body(content = DrainRequest, content_type = "application/json", description = "Optional"),
    responses((status = 202, description = "Draining: follow GET /api/v1/drain", body = DrainStatusSchema),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "No other gateway is up, the one named is not, or a drain runs", body = Problem, content_type = "application/problem+json"),
              (status = 415, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn drain(
    request: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Admin)?;
    let asked: DrainRequest = optional_json(&request, payload, &state).await?;
    let status = state.hub.drain(asked.to, deadline(asked.deadline_secs)?)?;
    Ok(drain_response(status))
}

#[utoipa::path(post, path = "/api/v1/undrain", tag = "devices",
    responses((status = 202, description = "Bringing back the devices whose home this gateway is: follow GET /api/v1/drain", body = DrainStatusSchema),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "No local cloud, or a drain runs", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn undrain(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Admin)?;
    let status = state.hub.undrain(MOVE_DEADLINE)?;
    Ok(drain_response(status))
}

#[utoipa::path(get, path = "/api/v1/drain", tag = "devices",
    responses((status = 200, description = "The last drain or undrain, finished", body = DrainStatusSchema),
              (status = 202, description = "Still running", body = DrainStatusSchema),
              (status = 404, description = "None since the gateway started", body = Problem, content_type = "application/problem+json")))]
pub async fn drain_status(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    let status = state
        .hub
        .drain_status()
        .ok_or_else(|| ApiError::NotFound("no drain since this gateway started".into()))?;
    Ok(drain_response(status))
}

fn drain_response(status: DrainStatus) -> HttpResponse {
    if status.state == "running" {
        HttpResponse::Accepted()
            .insert_header((header::LOCATION, "/api/v1/drain"))
            .json(status)
    } else {
        HttpResponse::Ok().json(status)
    }
}

fn move_response(status: MoveStatus) -> HttpResponse {
    if status.state == fogbank_taas::MoveState::Pending {
        HttpResponse::Accepted()
            .insert_header((
                header::LOCATION,
                format!("/api/v1/moves/{}?at={}", status.id, status.at),
            ))
            .json(status)
    } else {
        HttpResponse::Ok().json(status)
    }
}

impl From<MoveError> for ApiError {
    fn from(error: MoveError) -> Self {
        match error {
            MoveError::BadDevice(_) => ApiError::BadRequest(error.to_string()),
            MoveError::UnknownDevice(_) => ApiError::NotFound(error.to_string()),
            MoveError::Store(e) => e.into(),
            MoveError::NotOwner { .. }
            | MoveError::NoTransport(_)
            | MoveError::AlreadyHere(_)
            | MoveError::UnknownGateway(_)
            | MoveError::Conflict(_)
            | MoveError::Busy(_)
            | MoveError::Refused(_) => ApiError::Conflict(error.to_string()),
        }
    }
}
