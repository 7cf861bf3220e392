//! `GET /api/v1/things/{id}/stream`: live readings as Server-Sent Events.
//!
//! The stream opens with the latest reading (so a client sees the state at
//! once), then sends one `reading` event per new reading, a `lagged` event
//! when the client fell behind and readings were skipped, and a comment
//! every 15 s so proxies keep the connection open.

use std::time::Duration;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use fogbank_taas::senml;
use fogbank_taas::{Event, Reading, Subscription, ThingId};

use super::problem::ApiError;
use super::{AppState, thing_id};
use crate::auth::Scope;

const KEEPALIVE: Duration = Duration::from_secs(15);
const FIRST_READING_WAIT: Duration = Duration::from_secs(1);

fn reading_event(id: &ThingId, unit: Option<&str>, reading: &Reading) -> Bytes {
    let records = senml::pack_for(id.as_str(), unit, [(reading.time, reading.value.clone())]);
    let json = senml::to_json(&records);
    let mut event = Vec::with_capacity(json.len() + 48);
    event.extend_from_slice(b"event: reading\nid: ");
    event.extend_from_slice(reading.time.0.to_string().as_bytes());
    event.extend_from_slice(b"\ndata: ");
    event.extend_from_slice(&json);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

struct StreamState {
    id: ThingId,
    unit: Option<String>,
    first: Option<Bytes>,
    subscription: Subscription,
    keepalive: tokio::time::Interval,
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
    let peer = request
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let subscription = state.hub.subscribe_thing(format!("sse {peer} {id}"), &id);
    // The state at once: from memory here, from the owner for another
    // gateway's thing (briefly: a slow owner must not hold the stream up).
    let first = tokio::time::timeout(FIRST_READING_WAIT, state.hub.read_latest(&id))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        .map(|r| reading_event(&id, thing.unit.as_deref(), &r));
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset(); // the first tick would fire at once
    let stream_state = StreamState {
        id,
        unit: thing.unit,
        first,
        subscription,
        keepalive,
    };

    let events = futures_util::stream::unfold(stream_state, |mut s| async move {
        if let Some(first) = s.first.take() {
            return Some((Ok::<_, actix_web::Error>(first), s));
        }
        let bytes = tokio::select! {
            event = s.subscription.recv() => match event? {
                Event::Reading(r) => reading_event(&s.id, s.unit.as_deref(), &r.reading),
                Event::Lagged(missed) => Bytes::from(format!("event: lagged\ndata: {{\"missed\":{missed}}}\n\n")),
            },
            _ = s.keepalive.tick() => Bytes::from_static(b": keep-alive\n\n"),
        };
        Some((Ok(bytes), s))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events))
}
