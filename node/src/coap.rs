//! The application side of the gateway's CoAP endpoint: thing services at
//! `/things/{id}` (GET in text, SenML JSON or SenML CBOR; Observe; PUT to
//! actuate), listed in `/.well-known/core` and `/things` in CoRE link
//! format with RFC 6690 query filtering. The device side (`/rd`) belongs
//! to the CoAP adapter; both share the endpoint.

use std::sync::Arc;
use std::time::Duration;

use coap_lite::{RequestType, ResponseType};
use fogbank_coap_protocol::endpoint::{Endpoint, Handler, Reply};
use fogbank_coap_protocol::message::{Request, Response, format};
use fogbank_coap_protocol::payload;
use fogbank_taas::{
    ActuateError, CommandState, Event, Filter, FollowSet, Hub, Kind, Query, ReadError, Reading,
    RemoteError, ThingId, ThingService, senml,
};

/// Serves `/.well-known/core`, `/things` and `/things/{id}`.
pub struct ThingsResource {
    hub: Arc<Hub>,
    actuation_wait: Duration,
    /// The device side's directory, advertised in `/.well-known/core`.
    with_directory: bool,
}

impl ThingsResource {
    pub fn new(hub: Arc<Hub>, actuation_wait: Duration, with_directory: bool) -> Self {
        ThingsResource {
            hub,
            actuation_wait,
            with_directory,
        }
    }

    fn links(&self, request: &Request, include_directory: bool) -> Response {
        let mut things = self.hub.query(&Query::default());
        things.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        let filters: Vec<(&str, &str)> = request
            .queries
            .iter()
            .filter_map(|q| q.split_once('='))
            .collect();
        let mut links: Vec<String> = things
            .iter()
            .filter(|thing| {
                filters
                    .iter()
                    .all(|(key, pattern)| matches(thing, key, pattern))
            })
            .map(link)
            .collect();
        if include_directory
            && self.with_directory
            && filters
                .iter()
                .all(|(k, p)| *k == "rt" && glob(p, "core.rd"))
        {
            links.insert(0, fogbank_coap::RD_LINK.to_owned());
        }
        Response::content(format::LINK_FORMAT, links.join(",").into_bytes())
    }

    /// A local thing's reading is answered at once; another gateway's is
    /// asked of its owner (5.02 if it is unreachable, 5.04 if it is slow).
    fn read(&self, request: &Request, id: &ThingId) -> Reply {
        let Some(thing) = self.hub.thing(id) else {
            return now(ResponseType::NotFound, "no such thing service");
        };
        let accept = request.accept;
        // Our own things, and others' that we follow (observed here: their
        // readings are relayed and kept current), are answered from memory.
        if thing.gateway == self.hub.gateway() || self.hub.is_following(id) {
            return Reply::Now(reading_response(
                accept,
                &thing,
                self.hub.latest(id).flatten(),
            ));
        }
        let hub = self.hub.clone();
        Reply::Later(Box::pin(async move {
            match hub.read_latest(&thing.id).await {
                Ok(latest) => reading_response(accept, &thing, latest),
                Err(ReadError::Remote(error @ RemoteError::Timeout { .. })) => {
                    Response::error(ResponseType::GatewayTimeout, error.to_string())
                }
                Err(error) => Response::error(ResponseType::BadGateway, error.to_string()),
            }
        }))
    }
}

fn reading_response(
    accept: Option<u16>,
    thing: &ThingService,
    latest: Option<Reading>,
) -> Response {
    let id = &thing.id;
    {
        let readings = latest.map(|r| (r.time, r.value));
        let response = match accept.unwrap_or(format::SENML_JSON) {
            format::SENML_JSON => Response::content(
                format::SENML_JSON,
                senml::to_json(&senml::pack_for(
                    id.as_str(),
                    thing.unit.as_deref(),
                    readings,
                )),
            ),
            format::SENML_CBOR => Response::content(
                format::SENML_CBOR,
                senml::to_cbor(&senml::pack_for(
                    id.as_str(),
                    thing.unit.as_deref(),
                    readings,
                )),
            ),
            format::TEXT => Response::content(
                format::TEXT,
                readings
                    .map(|(_, value)| payload::plain_text(&value))
                    .unwrap_or_default(),
            ),
            other => {
                return Response::error(
                    ResponseType::NotAcceptable,
                    format!("content format {other} is not served; 0, 110 and 112 are"),
                );
            }
        };
        Response {
            observable: true,
            ..response
        }
    }
}

impl ThingsResource {
    fn actuate(&self, request: &Request, id: ThingId) -> Reply {
        let value = match request.content_format.unwrap_or(format::TEXT) {
            format::TEXT => match std::str::from_utf8(&request.payload) {
                Ok(text) if !text.trim().is_empty() => fogbank_taas::Value::from_plain(text.trim()),
                _ => {
                    return now(
                        ResponseType::BadRequest,
                        "the body is a value such as on, off or 21.5",
                    );
                }
            },
            format::SENML_JSON | format::SENML_CBOR | format::CBOR => {
                match payload::decode(
                    request.content_format,
                    &request.payload,
                    None,
                    fogbank_taas::Timestamp::now(),
                ) {
                    Ok(sample) => sample.value,
                    Err(error) => return now(ResponseType::BadRequest, error.to_string()),
                }
            }
            other => {
                return now(
                    ResponseType::UnsupportedContentFormat,
                    format!("content format {other} is not understood; 0, 60, 110 and 112 are"),
                );
            }
        };
        let ticket = match self.hub.actuate(&id, value) {
            Ok(ticket) => ticket,
            Err(error) => {
                let code = match &error {
                    ActuateError::UnknownThing(_) => ResponseType::NotFound,
                    ActuateError::NotActuator(_) => ResponseType::MethodNotAllowed,
                    ActuateError::WrongType { .. } => ResponseType::BadRequest,
                    ActuateError::Remote(_) => ResponseType::BadGateway,
                    _ => ResponseType::ServiceUnavailable,
                };
                return now(code, error.to_string());
            }
        };
        let wait = self.actuation_wait;
        let command = ticket.id.0;
        Reply::Later(Box::pin(async move {
            match tokio::time::timeout(wait, ticket.outcome).await {
                Ok(Ok(CommandState::Succeeded { .. })) => Response::new(ResponseType::Changed),
                Ok(Ok(CommandState::Failed { reason })) => {
                    Response::error(ResponseType::BadGateway, reason)
                }
                _ => Response::error(
                    ResponseType::GatewayTimeout,
                    format!("command {command} is still pending"),
                ),
            }
        }))
    }
}

impl Handler for ThingsResource {
    fn handle(&self, request: Request) -> Reply {
        let path: Vec<&str> = request.path.iter().map(String::as_str).collect();
        match (request.method, path.as_slice()) {
            (RequestType::Get, [".well-known", "core"]) => Reply::Now(self.links(&request, true)),
            (RequestType::Get, ["things"]) => Reply::Now(self.links(&request, false)),
            (method, ["things", id]) => {
                let Ok(id) = ThingId::parse(id) else {
                    return now(ResponseType::NotFound, "not a thing service id");
                };
                match method {
                    RequestType::Get => self.read(&request, &id),
                    RequestType::Put => self.actuate(&request, id),
                    _ => now(ResponseType::MethodNotAllowed, "GET or PUT"),
                }
            }
            (_, [".well-known", "core"] | ["things"]) => now(ResponseType::MethodNotAllowed, "GET"),
            _ => now(ResponseType::NotFound, "no such resource"),
        }
    }
}

fn now(code: ResponseType, diagnostic: impl Into<String>) -> Reply {
    Reply::Now(Response::error(code, diagnostic))
}

/// A thing service's link: `</things/{id}>;rt=…;if=…;obs;ct="110 112 0"`.
fn link(thing: &ThingService) -> String {
    let interface = match thing.kind {
        Kind::Actuator => "core.a",
        Kind::Sensor => "core.s",
    };
    let mut link = format!(
        "</things/{}>;rt=\"{}\";if=\"{interface}\";obs;ct=\"110 112 0\"",
        thing.id.as_str(),
        thing.semantic_type
    );
    if let Some(unit) = &thing.unit {
        link.push_str(&format!(";u=\"{unit}\""));
    }
    if !thing.location.as_str().is_empty() {
        link.push_str(&format!(";loc=\"{}\"", thing.location.as_str()));
    }
    link
}

/// RFC 6690 §4.1 query filtering: `attribute=value`, `*` at the end for
/// a prefix; `href` matches the link target.
fn matches(thing: &ThingService, key: &str, pattern: &str) -> bool {
    match key {
        "rt" => glob(pattern, &thing.semantic_type),
        "if" => glob(
            pattern,
            match thing.kind {
                Kind::Actuator => "core.a",
                Kind::Sensor => "core.s",
            },
        ),
        "loc" => glob(pattern, thing.location.as_str()),
        "href" => glob(pattern, &format!("/things/{}", thing.id.as_str())),
        "u" => thing.unit.as_deref().is_some_and(|u| glob(pattern, u)),
        "ct" => ["110", "112", "0"].contains(&pattern),
        "obs" => true,
        _ => false,
    }
}

fn glob(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// Sends observers of `/things/{id}` each new reading, for the life of
/// the process. Only readings of observed things pass the bus filter.
/// Observed things of other gateways are followed while observed, so that
/// their readings reach this bus.
pub fn notify_observers(hub: Arc<Hub>, endpoint: Endpoint) {
    follow_observed(hub.clone(), endpoint.clone());
    let runner = endpoint.clone();
    runner.spawn(async move {
        loop {
            let watched = endpoint.clone();
            let filter = Filter::matching(move |id: &ThingId| {
                watched.has_observers() && watched.is_observed(&format!("things/{}", id.as_str()))
            });
            let mut subscription = hub.subscribe("coap-observe", filter);
            while let Some(event) = subscription.recv().await {
                if let Event::Reading(reading) = event {
                    endpoint.notify(&format!("things/{}", reading.thing.as_str()));
                }
            }
            // Dropped for lagging (or closed at shutdown): take up again.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// How often the set of followed remote things catches up with the set of
/// observed ones.
const FOLLOW_CHECK: Duration = Duration::from_millis(500);

fn follow_observed(hub: Arc<Hub>, endpoint: Endpoint) {
    let runner = endpoint.clone();
    runner.spawn(async move {
        let mut followed = FollowSet::default();
        let mut tick = tokio::time::interval(FOLLOW_CHECK);
        loop {
            tick.tick().await;
            let observed = endpoint
                .observed_paths()
                .iter()
                .filter_map(|p| ThingId::parse(p.strip_prefix("things/")?).ok())
                .collect::<Vec<_>>();
            followed.follow_only(&hub, observed);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_filters_of_rfc_6690() {
        assert!(glob("temp*", "temperature"));
        assert!(glob("temperature", "temperature"));
        assert!(!glob("temp", "temperature"));
        assert!(glob("*", ""));
    }
}
