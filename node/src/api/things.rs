//! Thing services: catalog, descriptions, readings, ingest, actuation.

use std::time::Duration;

use actix_web::http::header;
use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use fogbank_taas::senml::{self, Record};
use fogbank_taas::td::{self, Bindings, Form};
use fogbank_taas::{
    CommandId, CommandState, CommandStatus, DataType, Kind, Location, Query, ThingId, ThingService,
    Timestamp, Value, Window,
};
use serde::Deserialize;
use utoipa::IntoParams;

use super::body::{content_type, read_body, read_json};
use super::problem::{ApiError, Problem};
use super::schema::*;
use super::{AppState, thing_id, time};
use crate::auth::Scope;

pub const SENML_JSON: &str = "application/senml+json";
pub const SENML_CBOR: &str = "application/senml+cbor";

/// Filters of `GET /things`; every one given must match.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ThingsQuery {
    /// Semantic type, e.g. `temperature`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    #[serde(default, deserialize_with = "empty_as_none")]
    kind_of: Option<String>,
    /// Location prefix, by whole segments: `campus/building-a`.
    #[serde(default, deserialize_with = "empty_as_none")]
    location: Option<String>,
    /// Owning gateway id.
    #[serde(default, deserialize_with = "empty_as_none")]
    gateway: Option<String>,
    /// `sensor` or `actuator`.
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(value_type = Option<KindSchema>)]
    kind: Option<String>,
    /// `true` or `false`.
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(value_type = Option<bool>)]
    available: Option<String>,
}

/// An empty query value (`?kind=`) means the filter is not set.
fn empty_as_none<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.filter(|s| !s.is_empty()))
}

fn parse_bool(name: &str, raw: &str) -> Result<bool, ApiError> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(ApiError::BadRequest(format!(
            "{name} is true or false, not {other:?}"
        ))),
    }
}

#[utoipa::path(get, path = "/api/v1/things", tag = "things", params(ThingsQuery),
    responses((status = 200, description = "Matching thing services, ordered by id", body = [ThingServiceSchema]),
               (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    request: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ThingsQuery>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    let query = query.into_inner().query()?;
    Ok(HttpResponse::Ok().json(state.hub.query(&query)))
}

impl ThingsQuery {
    /// The hub's query, or 400 for a value that names nothing.
    pub(super) fn query(self) -> Result<Query, ApiError> {
        Ok(Query {
            semantic_type: self.kind_of,
            location: self.location.as_deref().map(Location::new),
            gateway: self.gateway,
            kind: self
                .kind
                .as_deref()
                .map(str::parse::<Kind>)
                .transpose()
                .map_err(ApiError::BadRequest)?,
            available: self
                .available
                .as_deref()
                .map(|a| parse_bool("available", a))
                .transpose()?,
        })
    }
}

fn known(state: &AppState, raw: &str) -> Result<ThingService, ApiError> {
    let id = thing_id(raw)?;
    state
        .hub
        .thing(&id)
        .ok_or_else(|| ApiError::UnknownThing(format!("unknown thing service {id}")))
}

#[utoipa::path(get, path = "/api/v1/things/{id}", tag = "things", params(("id" = String, Path, description = "Thing-service id")),
    responses((status = 200, body = ThingServiceSchema), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    Ok(HttpResponse::Ok().json(known(&state, &id)?))
}

#[utoipa::path(get, path = "/api/v1/things/{id}/td", tag = "things", params(("id" = String, Path, description = "Thing-service id")),
    responses((status = 200, description = "W3C WoT Thing Description", body = Object, content_type = "application/td+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn description(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    let thing = known(&state, &id)?;
    let base = format!("/api/v1/things/{}", thing.id);
    let bindings = Bindings {
        property: vec![
            Form {
                op: "readproperty",
                href: format!("{base}/reading"),
                content_type: SENML_JSON,
                extra: vec![("htv:methodName", "GET")],
            },
            Form {
                op: "observeproperty",
                href: format!("{base}/stream"),
                content_type: "text/event-stream",
                extra: vec![("subprotocol", "sse")],
            },
        ],
        action: vec![Form {
            op: "invokeaction",
            href: format!("{base}/actuation"),
            content_type: "application/json",
            extra: vec![("htv:methodName", "PUT")],
        }],
        bearer_for_writes: true,
    };
    // No `base`: the hrefs are relative to where the TD was fetched from,
    // not to a Host header a client chose.
    Ok(HttpResponse::Ok()
        .content_type("application/td+json")
        .json(td::thing_description(&thing, &bindings)))
}

/// Which SenML encoding the client accepts (JSON unless it prefers CBOR).
fn negotiate(request: &HttpRequest) -> Result<&'static str, ApiError> {
    let Some(accept) = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(SENML_JSON);
    };
    for item in accept.split(',') {
        let media = item.split(';').next().unwrap_or("").trim();
        match media {
            SENML_JSON | "application/json" | "application/*" | "*/*" | "" => {
                return Ok(SENML_JSON);
            }
            SENML_CBOR | "application/cbor" => return Ok(SENML_CBOR),
            _ => {}
        }
    }
    Err(ApiError::NotAcceptable {
        available: "application/senml+json, application/senml+cbor",
    })
}

fn senml_response(format: &'static str, records: &[Record]) -> HttpResponse {
    let body = if format == SENML_CBOR {
        senml::to_cbor(records)
    } else {
        senml::to_json(records)
    };
    HttpResponse::Ok().content_type(format).body(body)
}

#[utoipa::path(get, path = "/api/v1/things/{id}/reading", tag = "readings", params(("id" = String, Path, description = "Thing-service id")),
    responses((status = 200, description = "The latest reading as a one-record SenML pack", content(([RecordSchema] = "application/senml+json"), ([RecordSchema] = "application/senml+cbor"))),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 406, body = Problem, content_type = "application/problem+json"),
              (status = 502, description = "The owning gateway is unreachable", body = Problem, content_type = "application/problem+json"),
              (status = 504, description = "The owning gateway did not answer in time", body = Problem, content_type = "application/problem+json")))]
pub async fn latest(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    let format = negotiate(&request)?;
    // The hottest read of all: only the unit is taken from the catalog,
    // not a copy of the whole thing service.
    let id = thing_id(&id)?;
    let unit = state
        .hub
        .inspect_thing(&id, |thing| thing.unit.clone())
        .ok_or_else(|| ApiError::UnknownThing(format!("unknown thing service {id}")))?;
    let reading = state
        .hub
        .read_latest(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{id} has no reading yet")))?;
    let records = senml::pack_for(
        id.as_str(),
        unit.as_deref(),
        [(reading.time, reading.value)],
    );
    Ok(senml_response(format, &records))
}

/// History window. Without `from`, the newest `limit` readings up to `to`;
/// with `from`, the oldest `limit` readings from `from`. Always in time order.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Start, inclusive: Unix seconds or RFC 3339.
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(
        pattern = r"^([0-9]+(\.[0-9]+)?|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2}))$"
    )]
    from: Option<String>,
    /// End, inclusive: Unix seconds or RFC 3339.
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(
        pattern = r"^([0-9]+(\.[0-9]+)?|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2}))$"
    )]
    to: Option<String>,
    /// At most this many readings (default 1000).
    #[param(minimum = 1, maximum = 100000)]
    limit: Option<usize>,
}

const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 100_000;

#[utoipa::path(get, path = "/api/v1/things/{id}/readings", tag = "readings",
    params(("id" = String, Path, description = "Thing-service id"), HistoryQuery),
    responses((status = 200, description = "Readings as a SenML pack, oldest first", content(([RecordSchema] = "application/senml+json"), ([RecordSchema] = "application/senml+cbor"))),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 502, description = "The owning gateway is unreachable", body = Problem, content_type = "application/problem+json"),
              (status = 504, description = "The owning gateway did not answer in time", body = Problem, content_type = "application/problem+json")))]
pub async fn history(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    let format = negotiate(&request)?;
    let thing = known(&state, &id)?;
    let from = query
        .from
        .as_deref()
        .map(time::parse)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let to = query
        .to
        .as_deref()
        .map(time::parse)
        .transpose()
        .map_err(ApiError::BadRequest)?
        .unwrap_or(Timestamp::MAX);
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit is between 1 and {MAX_LIMIT}"
        )));
    }
    if from.is_some_and(|from| from > to) {
        return Err(ApiError::BadRequest("from is after to".into()));
    }
    let window = Window {
        from: from.unwrap_or(Timestamp::MIN),
        to,
        limit,
        newest_first: from.is_none(),
    };
    let readings = state.hub.read_history(&thing.id, window).await?;
    let records = senml::pack_for(
        thing.id.as_str(),
        thing.unit.as_deref(),
        readings.into_iter().map(|r| (r.time, r.value)),
    );
    Ok(senml_response(format, &records))
}

/// Adapter name under which HTTP devices create thing services by posting.
pub const HTTP_ADAPTER: &str = "http";

#[utoipa::path(post, path = "/api/v1/things/{id}/readings", tag = "readings",
    params(("id" = String, Path, description = "Thing-service id. Posting to an unknown `{this-gateway}.http.{device}.{resource}` creates that thing service.")),
    request_body(content = [RecordSchema], content_type = "application/senml+json", description = "A SenML pack (JSON or CBOR) of readings for this thing; records may omit the name"),
    responses((status = 200, description = "Stored durably", body = Object),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 413, body = Problem, content_type = "application/problem+json"),
              (status = 415, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn ingest(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Write)?;
    let id = thing_id(&id)?;
    let records = match content_type(&request).as_str() {
        SENML_JSON | "application/json" => {
            senml::parse_json(&read_body(&request, payload, state.max_body_bytes).await?)
        }
        SENML_CBOR | "application/cbor" => {
            senml::parse_cbor(&read_body(&request, payload, state.max_body_bytes).await?)
        }
        other => {
            return Err(ApiError::UnsupportedType {
                found: other.to_owned(),
                expected: "application/senml+json or application/senml+cbor",
            });
        }
    }
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let resolved = senml::resolve(&records, state.hub.arrival_time())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;

    if state.hub.thing(&id).is_none() {
        let thing = http_device_thing(&state, &id, &resolved, &request)?;
        state.hub.announce(thing)?;
        tracing::info!(thing = %id, "HTTP device created a thing service");
    }

    let readings = state.hub.readings_from_senml(Some(&id), resolved)?;
    let stored = readings.len();
    let hub = state.hub.clone();
    web::block(move || hub.ingest(readings))
        .await
        .map_err(|e| ApiError::Storage(e.to_string()))??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "stored": stored })))
}

/// The thing service an HTTP device creates with its first post, described
/// by that pack. The pack must be about this one thing, with one data type
/// and at most one unit, or nothing is created.
fn http_device_thing(
    state: &AppState,
    id: &ThingId,
    pack: &[senml::Resolved],
    request: &HttpRequest,
) -> Result<ThingService, ApiError> {
    if id.gateway() != state.hub.gateway() || id.adapter() != HTTP_ADAPTER {
        return Err(ApiError::UnknownThing(format!(
            "unknown thing service {id}; HTTP devices create theirs by posting to {}.{HTTP_ADAPTER}.DEVICE.RESOURCE",
            state.hub.gateway()
        )));
    }
    let bad = |why: String| ApiError::BadRequest(format!("cannot create {id}: {why}"));
    if let Some(other) = pack
        .iter()
        .find(|r| !r.name.is_empty() && r.name != id.as_str())
    {
        return Err(bad(format!("the pack also names {:?}", other.name)));
    }
    let data_type = pack
        .first()
        .map(|r| r.value.data_type())
        .unwrap_or(DataType::Number);
    if pack.iter().any(|r| r.value.data_type() != data_type) {
        return Err(bad("its readings mix value types".into()));
    }
    let mut units = pack.iter().filter_map(|r| r.unit.as_deref());
    let unit = units.next();
    if units.any(|u| Some(u) != unit) {
        return Err(bad("its readings mix units".into()));
    }
    let (semantic_type, guessed_unit) = fogbank_taas::thing::guess_type(id.resource());
    let mut thing = ThingService::new(
        id.clone(),
        Kind::Sensor,
        semantic_type,
        unit.or(guessed_unit),
    );
    thing.data_type = data_type;
    thing.device_address = request
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    Ok(thing)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActuationRequest {
    /// The value to set: a boolean for switches, a number for levels.
    value: CommandValue,
}

/// What an actuator can be set to.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum CommandValue {
    Boolean(bool),
    Number(f64),
    String(String),
}

impl From<CommandValue> for Value {
    fn from(value: CommandValue) -> Value {
        match value {
            CommandValue::Boolean(b) => Value::Bool(b),
            CommandValue::Number(n) => Value::Number(n),
            CommandValue::String(s) => Value::String(s),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActuationQuery {
    /// Milliseconds to wait for the outcome before answering 202 (0 to 30000).
    #[param(maximum = 30000)]
    wait: Option<u64>,
}

/// 200 when done, 202 while pending. A failed command is a 502 to the
/// client that issued it, and a plain record (200) to one that polls.
fn command_response(status: CommandStatus, issued_now: bool) -> Result<HttpResponse, ApiError> {
    match &status.state {
        CommandState::Failed { reason } if issued_now => {
            Err(ApiError::CommandFailed(reason.clone()))
        }
        CommandState::Succeeded { .. } | CommandState::Failed { .. } => {
            Ok(HttpResponse::Ok().json(status))
        }
        CommandState::Pending => Ok(HttpResponse::Accepted()
            .insert_header((
                header::LOCATION,
                format!("/api/v1/commands/{}", status.id.0),
            ))
            .json(status)),
    }
}

#[utoipa::path(put, path = "/api/v1/things/{id}/actuation", tag = "actuation",
    params(("id" = String, Path, description = "Thing-service id of an actuator"), ActuationQuery),
    request_body(content = ActuationRequest, content_type = "application/json"),
    responses((status = 200, description = "The device carried out the command", body = CommandStatusSchema),
              (status = 202, description = "Still running: poll the Location", body = CommandStatusSchema),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Not an actuator, or unavailable", body = Problem, content_type = "application/problem+json"),
              (status = 413, body = Problem, content_type = "application/problem+json"),
              (status = 415, body = Problem, content_type = "application/problem+json"),
              (status = 502, description = "The device refused or failed, or its gateway is unreachable", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn actuate(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<ActuationQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Write)?;
    let id: ThingId = thing_id(&id)?;
    let command: ActuationRequest =
        read_json(&request, payload, state.max_body_bytes, r#"{"value": ...}"#).await?;
    let wait = match query.wait {
        Some(ms) if ms > 30_000 => {
            return Err(ApiError::BadRequest("wait is at most 30000 ms".into()));
        }
        Some(ms) => Duration::from_millis(ms),
        None => state.actuation_wait,
    };
    let ticket = state.hub.actuate(&id, command.value.into())?;
    let _ = tokio::time::timeout(wait, ticket.outcome).await;
    let status = state
        .hub
        .command(ticket.id)
        .ok_or_else(|| ApiError::NotFound("the command was forgotten".into()))?;
    command_response(status, true)
}

#[utoipa::path(get, path = "/api/v1/commands/{id}", tag = "actuation", params(("id" = u64, Path, description = "Command id")),
    responses((status = 200, body = CommandStatusSchema), (status = 202, body = CommandStatusSchema),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 502, body = Problem, content_type = "application/problem+json")))]
pub async fn command(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    let unknown = || ApiError::NotFound(format!("no command {id}"));
    let number: u64 = id.parse().map_err(|_| unknown())?;
    command_response(
        state.hub.command(CommandId(number)).ok_or_else(unknown)?,
        false,
    )
}
