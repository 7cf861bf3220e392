//! `GET /api/v1/things/{id}/stream` and `GET /api/v1/stream`: live
//! readings as Server-Sent Events, of one thing service or of every one a
//! catalog filter matches (a dashboard's charts of a floor).
//!
//! The stream opens with the latest reading (so a client sees the state at
//! once), then sends one `reading` event per new reading, a `lagged` event
//! when the client fell behind and readings were skipped, and a comment
//! every 15 s so proxies keep the connection open. Readings already queued
//! behind the one that woke the stream go out in the same chunk, so that a
//! burst costs one write, not one per reading.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use fogbank_taas::senml;
use fogbank_taas::{Event, Reading, Subscription, ThingId};

use super::problem::ApiError;
use super::things::ThingsQuery;
use super::{AppState, thing_id};
use crate::auth::Scope;

const KEEPALIVE: Duration = Duration::from_secs(15);
const FIRST_READING_WAIT: Duration = Duration::from_secs(1);
/// Most events in one chunk: bounds the chunk, and lets the keep-alive and
/// other streams on the worker have their turn in a long burst.
const EVENTS_PER_CHUNK: usize = 256;

fn reading_event(id: &ThingId, unit: Option<&str>, reading: &Reading) -> Bytes {
    let mut event = Vec::new();
    push_reading_event(&mut event, id, unit, reading);
    Bytes::from(event)
}

fn push_reading_event(out: &mut Vec<u8>, id: &ThingId, unit: Option<&str>, reading: &Reading) {
    let records = senml::pack_for(id.as_str(), unit, [(reading.time, reading.value.clone())]);
    out.extend_from_slice(b"event: reading\nid: ");
    out.extend_from_slice(reading.time.0.to_string().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&senml::to_json(&records));
    out.extend_from_slice(b"\n\n");
}

/// Most thing services of other gateways one multi-thing stream follows:
/// each is a relay from its owner while the stream lives.
pub const MAX_FOLLOWED: usize = 500;

struct StreamState {
    /// The unit of each thing service streamed, for its SenML records.
    units: HashMap<ThingId, Option<String>>,
    first: Option<Bytes>,
    subscription: Subscription,
    keepalive: tokio::time::Interval,
}

impl StreamState {
    fn new(
        units: HashMap<ThingId, Option<String>>,
        first: Option<Bytes>,
        subscription: Subscription,
    ) -> Self {
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.reset(); // the first tick would fire at once
        StreamState {
            units,
            first,
            subscription,
            keepalive,
        }
    }

    fn push_event(&self, out: &mut Vec<u8>, event: Event) {
        match event {
            Event::Reading(r) => {
                let unit = self.units.get(&r.thing).and_then(Option::as_deref);
                push_reading_event(out, &r.thing, unit, &r.reading)
            }
            Event::Lagged(missed) => out.extend_from_slice(
                format!("event: lagged\ndata: {{\"missed\":{missed}}}\n\n").as_bytes(),
            ),
        }
    }

    /// The response: the first events, then whatever the subscription
    /// brings, in chunks, with keep-alives in the silences.
    fn respond(self) -> HttpResponse {
        let events = futures_util::stream::unfold(self, |mut s| async move {
            if let Some(first) = s.first.take() {
                return Some((Ok::<_, actix_web::Error>(first), s));
            }
            let mut chunk = Vec::new();
            tokio::select! {
                event = s.subscription.recv() => s.push_event(&mut chunk, event?),
                _ = s.keepalive.tick() => return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), s)),
            }
            for _ in 1..EVENTS_PER_CHUNK {
                let Some(event) = s.subscription.try_recv() else {
                    break;
                };
                s.push_event(&mut chunk, event);
            }
            Some((Ok(Bytes::from(chunk)), s))
        });
        HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("Cache-Control", "no-cache"))
            .insert_header(("X-Accel-Buffering", "no"))
            .streaming(events)
    }
}

fn peer(request: &HttpRequest) -> String {
    request
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}

#[utoipa::path(get, path = "/api/v1/things/{id}/stream", tag = "readings", params(("id" = String, Path, description = "Thing-service id")),
    responses((status = 200, description = "Server-Sent Events: `reading` (data: a SenML JSON pack) and `lagged` (data: {\"missed\": N})", content_type = "text/event-stream"),
              (status = 404, body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn sse(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    let id = thing_id(&id)?;
    let thing = state
        .hub
        .thing(&id)
        .ok_or_else(|| ApiError::UnknownThing(format!("unknown thing service {id}")))?;
    let subscription = state
        .hub
        .subscribe_thing(format!("sse {} {id}", peer(&request)), &id);
    // The state at once: from memory here, from the owner for another
    // gateway's thing (briefly: a slow owner must not hold the stream up).
    let first = tokio::time::timeout(FIRST_READING_WAIT, state.hub.read_latest(&id))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        .map(|r| reading_event(&id, thing.unit.as_deref(), &r));
    let units = HashMap::from([(id, thing.unit)]);
    Ok(StreamState::new(units, first, subscription).respond())
}

#[utoipa::path(get, path = "/api/v1/stream", tag = "readings", params(ThingsQuery),
    responses((status = 200, description = "Server-Sent Events for every thing service that matches the filters when the stream opens: first the latest reading of each that this gateway holds in memory, then `reading` (data: a SenML JSON pack naming its thing service) and `lagged` (data: {\"missed\": N}), as the per-thing stream", content_type = "text/event-stream"),
              (status = 400, description = "A filter names nothing, or more than 500 thing services of other gateways match: narrow by type, location or gateway", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn sse_many(
    request: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ThingsQuery>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&request, Scope::Read)?;
    let things = state.hub.query(&query.into_inner().query()?);
    let followed = things
        .iter()
        .filter(|t| t.gateway != state.hub.gateway())
        .count();
    if followed > MAX_FOLLOWED {
        return Err(ApiError::BadRequest(format!(
            "{followed} thing services of other gateways match; one stream follows at most {MAX_FOLLOWED}: narrow it by type, location or gateway"
        )));
    }
    let mut first = Vec::new();
    for thing in &things {
        if let Some(Some(reading)) = state.hub.latest(&thing.id) {
            push_reading_event(&mut first, &thing.id, thing.unit.as_deref(), &reading);
        }
    }
    let ids: Vec<ThingId> = things.iter().map(|t| t.id.clone()).collect();
    let subscription = state
        .hub
        .subscribe_things(format!("sse {} {} things", peer(&request), ids.len()), ids);
    let units = things.into_iter().map(|t| (t.id, t.unit)).collect();
    let first = (!first.is_empty()).then(|| Bytes::from(first));
    Ok(StreamState::new(units, first, subscription).respond())
}
