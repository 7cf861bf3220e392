//! `GET /api/v1/things/{id}/stream`: live readings as Server-Sent Events.
//!
//! The stream opens with the latest reading (so a client sees the state at
//! once), then sends one `reading` event per new reading, a `lagged` event
//! when the client fell behind and readings were skipped, and a comment
//! every 15 s so proxies keep the connection open. Readings already queued
//! behind the one that woke the stream go out in the same chunk, so that a
//! burst costs one write, not one per reading.

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

struct StreamState {
    id: ThingId,
    unit: Option<String>,
    first: Option<Bytes>,
    subscription: Subscription,
    keepalive: tokio::time::Interval,
}

impl StreamState {
    fn push_event(&self, out: &mut Vec<u8>, event: Event) {
        match event {
            Event::Reading(r) => {
                push_reading_event(out, &self.id, self.unit.as_deref(), &r.reading)
            }
            Event::Lagged(missed) => out.extend_from_slice(
                format!("event: lagged\ndata: {{\"missed\":{missed}}}\n\n").as_bytes(),
            ),
        }
    }
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
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events))
}
