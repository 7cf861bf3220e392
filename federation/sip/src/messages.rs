//! MESSAGE (RFC 3428) both ways.
//!
//! In: a MESSAGE to a thing's address of record is a command — `GET` in
//! `text/plain` is answered 200 and then by a MESSAGE carrying the latest
//! reading as SenML JSON; a SenML JSON pack with one value actuates the
//! thing through the hub (the REST API's path) and is answered 202, then
//! by a MESSAGE reporting the outcome. Only identities listed in
//! `actuate` may actuate.
//!
//! Out: `[[sip.forward]]` rules send each matching reading as a SenML
//! JSON MESSAGE to IMS identities, at most one per thing and rule per
//! minimum interval (the latest one waits).
//!
//! Every MESSAGE the gateway sends goes through the registrar (the
//! outbound proxy), from the thing's address of record, and stays under
//! 1300 bytes over UDP (RFC 3428 §4).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fogbank_taas::{ActuateError, CommandState, Event as BusEvent, Filter, ThingId, ThingReading};
use sip_auth::DigestAuthenticator;
use sip_core::{Endpoint, IncomingRequest};
use sip_types::uri::SipUri;
use sip_types::{Method, Name, StatusCode};
use tokio::time::Instant;

use crate::config::{ForwardRule, Transport};
use crate::content::{self, Command, CommandError, SENML_JSON, TEXT_PLAIN};
use crate::outbound::{self, Outgoing};
use crate::request::user_of;
use crate::request::{header, respond, sender};
use crate::shared::{Counters, Shared};

/// The largest MESSAGE sent over UDP (RFC 3428 §4: 1300 bytes when the
/// path MTU is unknown).
const UDP_LIMIT: usize = 1300;
/// How long an actuation's outcome is waited for before it is reported
/// as still running.
const OUTCOME_WAIT: Duration = Duration::from_secs(30);

/// Serves a MESSAGE outside any dialog.
pub(crate) async fn receive(endpoint: &Endpoint, shared: &Arc<Shared>, request: IncomingRequest) {
    Counters::add(&shared.counters.messages_received);
    let Some(thing) = user_of(&request.line.uri)
        .and_then(|user| ThingId::parse(user).ok())
        .and_then(|id| shared.hub.thing(&id))
    else {
        Counters::add(&shared.counters.rejected);
        respond(endpoint, request, StatusCode::NOT_FOUND, |_| {}).await;
        return;
    };
    let content_type = header(&request, &Name::CONTENT_TYPE).unwrap_or_default();
    let command = match content::parse_command(content_type, &request.body) {
        Ok(command) => command,
        Err(error) => {
            Counters::add(&shared.counters.rejected);
            tracing::info!(%error, "MESSAGE refused");
            let code = match error {
                CommandError::Type(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                _ => StatusCode::BAD_REQUEST,
            };
            respond(endpoint, request, code, |headers| {
                headers.insert(Name::ACCEPT, format!("{TEXT_PLAIN}, {SENML_JSON}"))
            })
            .await;
            return;
        }
    };
    let sender = request.base_headers.from.uri.uri.clone();
    match command {
        Command::Get => {
            respond(endpoint, request, StatusCode::OK, |_| {}).await;
            let body = match shared.hub.latest(&thing.id).flatten() {
                Some(reading) => {
                    content::senml_json(thing.id.as_str(), thing.unit.as_deref(), &reading)
                }
                None => b"[]".to_vec(),
            };
            send(
                endpoint,
                shared,
                thing.id.as_str(),
                sender,
                SENML_JSON,
                body,
            )
            .await;
        }
        Command::Actuate(value) => {
            let identity = identity(&request);
            if !shared
                .config
                .actuate
                .iter()
                .any(|allowed| same_identity(allowed, &identity))
            {
                Counters::add(&shared.counters.forbidden);
                tracing::info!(%identity, thing = %thing.id, "MESSAGE actuation refused: identity not allowed to actuate");
                respond(endpoint, request, StatusCode::FORBIDDEN, |_| {}).await;
                return;
            }
            let ticket = match shared.hub.actuate(&thing.id, value) {
                Ok(ticket) => ticket,
                Err(error) => {
                    Counters::add(&shared.counters.rejected);
                    let code = match error {
                        ActuateError::UnknownThing(_) => StatusCode::NOT_FOUND,
                        ActuateError::NotActuator(_) | ActuateError::WrongType { .. } => {
                            StatusCode::NOT_ACCEPTABLE_HERE
                        }
                        _ => StatusCode::TEMPORARILY_UNAVAILABLE,
                    };
                    tracing::info!(%error, %identity, "MESSAGE actuation refused");
                    respond(endpoint, request, code, |_| {}).await;
                    return;
                }
            };
            tracing::info!(%identity, thing = %thing.id, command = ticket.id.0, "actuation by MESSAGE");
            respond(endpoint, request, StatusCode::from(202), |_| {}).await;
            let state = tokio::time::timeout(OUTCOME_WAIT, ticket.outcome)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(CommandState::Pending);
            let mut report =
                serde_json::json!({"thing": thing.id.as_str(), "command": ticket.id.0});
            if let (Some(report), serde_json::Value::Object(state)) = (
                report.as_object_mut(),
                serde_json::to_value(&state).unwrap_or_default(),
            ) {
                report.extend(state);
            }
            let body = report.to_string().into_bytes();
            send(
                endpoint,
                shared,
                thing.id.as_str(),
                sender,
                "application/json",
                body,
            )
            .await;
        }
    }
}

/// Who sent a request, as `user@host`: its From, which the core checked
/// against the credentials it authenticated (`deploy/kamailio/kamailio.cfg`
/// refuses a From that is not the authenticated user's).
fn identity(request: &IncomingRequest) -> String {
    bare_identity(&sender(request))
}

/// `sip:alice@iot.local;transport=udp` → `alice@iot.local`.
fn bare_identity(uri: &str) -> String {
    // A name-addr (`"Alice" <sip:…>`) names its URI between brackets.
    let uri = match uri.find('<') {
        Some(open) => &uri[open + 1..],
        None => uri.trim(),
    };
    let uri = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))
        .unwrap_or(uri);
    uri.split([';', '?', '>'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn same_identity(allowed: &str, identity: &str) -> bool {
    bare_identity(allowed) == identity
}

/// One MESSAGE from a thing's address of record to `to`, through the
/// registrar.
async fn send(
    endpoint: &Endpoint,
    shared: &Shared,
    from_thing: &str,
    to: SipUri,
    content_type: &str,
    body: Vec<u8>,
) {
    let result = async {
        let mut outgoing = Outgoing::from(endpoint, shared, from_thing, Method::MESSAGE, to)?;
        let mut target = shared.target();
        target.transport = Some(
                endpoint
                    .select_transport(&shared.registrar)
                    .await
                    .map_err(|e| format!("cannot reach the registrar: {e}"))?,
            );
        let probe = outgoing.next();
        // Room for a Via, credentials and the Content-* lines.
        let size = probe.headers.printed_len() + body.len() + 400;
        if shared.config.transport == Transport::Udp && size > UDP_LIMIT {
            return Err(format!(
                "{size} bytes is over the {UDP_LIMIT} a MESSAGE may have over UDP; use transport = \"tcp\""
            ));
        }
        let mut authenticator = DigestAuthenticator::new(shared.credentials.clone());
        let response = outbound::send(endpoint, &mut authenticator, &mut target, || {
            let mut request = outgoing.next();
            request.headers.insert(Name::CONTENT_TYPE, content_type.to_owned());
            request.body = body.clone().into();
            request
        })
        .await?;
        match response.line.code.into_u16() {
            200..=299 => Ok(()),
            code => Err(format!("answered {code}")),
        }
    }
    .await;
    match result {
        Ok(()) => Counters::add(&shared.counters.messages_sent),
        Err(reason) => {
            Counters::add(&shared.counters.messages_failed);
            tracing::warn!(from = from_thing, %reason, "MESSAGE not delivered");
        }
    }
}

/// Sends the readings `[[sip.forward]]` rules select until the agent
/// stops. The rules are read at each reading: a reload replaces them
/// (and forgets what the old ones held back).
pub(crate) async fn forward(endpoint: Endpoint, shared: Arc<Shared>) {
    let mut stopped = shared.stopped.clone();
    let mut rules = shared.forward.read().clone();
    let mut targets = forward_targets(&rules);
    let mut readings = shared.hub.subscribe("sip forward", Filter::all());
    // Per rule and thing: when the last MESSAGE went, and the reading
    // waiting for the interval to pass.
    let mut last: HashMap<(usize, ThingId), Instant> = HashMap::new();
    let mut waiting: HashMap<(usize, ThingId), Arc<ThingReading>> = HashMap::new();
    let mut flush = tokio::time::interval(Duration::from_millis(100));
    loop {
        let mut due = Vec::new();
        tokio::select! {
            _ = crate::shared::stopping(&mut stopped) => return,
            event = readings.recv() => match event {
                Some(BusEvent::Reading(reading)) => {
                    let current = shared.forward.read().clone();
                    if !Arc::ptr_eq(&current, &rules) {
                        targets = forward_targets(&current);
                        rules = current;
                        last.clear();
                        waiting.clear();
                    }
                    if rules.is_empty() {
                        continue;
                    }
                    let Some(thing) = shared.hub.thing(&reading.thing) else { continue };
                    for (index, rule) in rules.iter().enumerate() {
                        if rule.matches(&thing) {
                            waiting.insert((index, thing.id.clone()), reading.clone());
                        }
                    }
                }
                Some(BusEvent::Lagged(missed)) => tracing::warn!(missed, "SIP forwarding lagged behind the readings"),
                None => return,
            },
            _ = flush.tick() => {}
        }
        let now = Instant::now();
        waiting.retain(|key, reading| {
            let ready = last
                .get(key)
                .is_none_or(|sent| now >= *sent + shared.config.min_interval);
            if ready {
                last.insert(key.clone(), now);
                due.push((key.0, reading.clone()));
            }
            !ready
        });
        for (rule, reading) in due {
            let Some(thing) = shared.hub.thing(&reading.thing) else {
                continue;
            };
            let body =
                content::senml_json(thing.id.as_str(), thing.unit.as_deref(), &reading.reading);
            for to in &targets[rule] {
                let (endpoint, shared, to, body) =
                    (endpoint.clone(), shared.clone(), to.clone(), body.clone());
                let from = thing.id.as_str().to_owned();
                tokio::spawn(
                    async move { send(&endpoint, &shared, &from, to, SENML_JSON, body).await },
                );
            }
        }
    }
}

/// Each rule's targets, parsed; a target that is not a SIP URI is skipped.
fn forward_targets(rules: &[ForwardRule]) -> Vec<Vec<SipUri>> {
    rules
        .iter()
        .map(|rule| {
            rule.to
                .iter()
                .filter_map(|to| match to.parse() {
                    Ok(uri) => Some(uri),
                    Err(_) => {
                        tracing::warn!(%to, "a forward target is not a SIP URI; skipped");
                        None
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_compare_without_scheme_parameters_or_case() {
        assert_eq!(
            bare_identity("sip:Alice@IoT.local;transport=udp"),
            "alice@iot.local"
        );
        assert_eq!(bare_identity("<sips:bob@x>"), "bob@x");
        assert_eq!(
            bare_identity("\"Alice\" <sip:alice@iot.local>;tag=1"),
            "alice@iot.local"
        );
        assert!(same_identity(
            "alice@iot.local",
            &bare_identity("sip:alice@iot.local")
        ));
        assert!(same_identity("sip:alice@iot.local", "alice@iot.local"));
        assert!(!same_identity("alice@iot.local", "mallory@iot.local"));
    }
}
