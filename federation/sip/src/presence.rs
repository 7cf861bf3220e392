//! PUBLISH (RFC 3903) of each thing service this gateway owns to the
//! core's presence server, so that any presence watcher can follow a
//! thing: a PIDF document whose tuple carries the latest reading as SenML
//! XML, sent again for new readings (no more often than the minimum
//! interval), refreshed with `SIP-If-Match` before it expires, and
//! withdrawn (`Expires: 0`) when the gateway stops or the thing goes.

use std::sync::Arc;
use std::time::Duration;

use fogbank_taas::{Event as BusEvent, Reading, ThingId};
use sip_auth::DigestAuthenticator;
use sip_core::Endpoint;
use sip_core::transport::TargetTransportInfo;
use sip_types::header::typed::{Event, Expires};
use sip_types::uri::SipUri;
use sip_types::{Method, Name};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::content::{self, PIDF_XML};
use crate::fleet;
use crate::outbound::{self, Outgoing};
use crate::shared::{Counters, Shared};

/// How long a publication is asked to last.
const PUBLISH_EXPIRES: u32 = 600;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);

/// Publishes every own thing until the agent stops; nothing without a
/// presence server.
pub(crate) async fn run(endpoint: Endpoint, shared: Arc<Shared>) {
    let Some(server) = shared.presence_server.clone() else {
        let mut stopped = shared.stopped.clone();
        crate::shared::stopping(&mut stopped).await;
        return;
    };
    let task_shared = shared.clone();
    fleet::follow(
        shared,
        "publish",
        |shared| fleet::own_users(shared, false, true),
        |user, stop| {
            keep_published(
                endpoint.clone(),
                task_shared.clone(),
                server.clone(),
                user,
                stop,
            )
        },
        |_| {},
    )
    .await;
}

/// What one thing's publication holds between PUBLISHes.
struct Publication {
    endpoint: Endpoint,
    shared: Arc<Shared>,
    thing: ThingId,
    entity: String,
    outgoing: Outgoing,
    target: TargetTransportInfo,
    authenticator: DigestAuthenticator,
    etag: Option<String>,
}

enum Publish<'a> {
    /// A new state (the body).
    State(Option<&'a Reading>),
    /// The same state for longer.
    Refresh,
    /// Gone.
    Remove,
}

async fn keep_published(
    endpoint: Endpoint,
    shared: Arc<Shared>,
    server: SipUri,
    user: String,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(thing) = ThingId::parse(&user) else {
        return;
    };
    let aor = match shared.aor(&user) {
        Ok(aor) => aor,
        Err(reason) => {
            tracing::warn!(%reason, "cannot publish a thing");
            return;
        }
    };
    let outgoing = match Outgoing::from(&endpoint, &shared, &user, Method::PUBLISH, aor) {
        Ok(outgoing) => outgoing,
        Err(reason) => {
            tracing::warn!(%reason, "cannot publish a thing");
            return;
        }
    };
    let mut readings = shared
        .hub
        .subscribe_thing(format!("sip publish {user}"), &thing);
    let mut publication = Publication {
        entity: shared.aor_text(&user),
        endpoint: endpoint.clone(),
        authenticator: DigestAuthenticator::new(shared.credentials.clone()),
        shared: shared.clone(),
        thing,
        outgoing,
        target: shared.target(),
        etag: None,
    };
    match endpoint.select_transport(&server).await {
        Ok(transport) => publication.target.transport = Some(transport),
        Err(error) => tracing::warn!(%error, "cannot reach the presence server yet"),
    }
    let interval = shared.config.min_interval;
    let mut backoff = FIRST_RETRY;
    // Whether the current state still has to go out, and when it may.
    let mut dirty = true;
    let mut next_allowed = Instant::now();
    let mut refresh_at = Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            event = readings.recv() => match event {
                Some(BusEvent::Reading(_)) => dirty = true,
                Some(BusEvent::Lagged(_)) => dirty = true,
                None => break,
            },
            _ = tokio::time::sleep_until(next_allowed), if dirty => {
                let latest = shared.hub.latest(&publication.thing).flatten();
                match publication.publish(Publish::State(latest.as_ref())).await {
                    Ok(granted) => {
                        dirty = false;
                        backoff = FIRST_RETRY;
                        next_allowed = Instant::now() + interval;
                        refresh_at = Instant::now() + granted.mul_f64(0.75);
                    }
                    Err(reason) => {
                        tracing::debug!(%reason, "PUBLISH failed; retrying");
                        next_allowed = Instant::now() + backoff;
                        backoff = (backoff * 2).min(LAST_RETRY);
                    }
                }
            }
            _ = tokio::time::sleep_until(refresh_at), if !dirty => {
                match publication.publish(Publish::Refresh).await {
                    Ok(granted) => refresh_at = Instant::now() + granted.mul_f64(0.75),
                    // Published afresh when the refresh is refused.
                    Err(_) => dirty = true,
                }
            }
        }
    }
    if publication.etag.is_some()
        && let Err(reason) = publication.publish(Publish::Remove).await
    {
        tracing::debug!(%reason, "could not withdraw a publication");
    }
}

impl Publication {
    /// One PUBLISH through its challenges; the expiry granted. A 412 (the
    /// server forgot the entity tag) sends the full state instead.
    async fn publish(&mut self, what: Publish<'_>) -> Result<Duration, String> {
        let body = match what {
            Publish::State(reading) => {
                let (available, unit) = self
                    .shared
                    .hub
                    .inspect_thing(&self.thing, |t| (t.available, t.unit.clone()))
                    .unwrap_or((false, None));
                Some(content::pidf(
                    &self.entity,
                    self.thing.as_str(),
                    unit.as_deref(),
                    available,
                    reading,
                ))
            }
            Publish::Refresh | Publish::Remove => None,
        };
        let expires = match what {
            Publish::Remove => 0,
            _ => PUBLISH_EXPIRES,
        };
        let etag = self.etag.clone();
        let outgoing = &mut self.outgoing;
        let response = outbound::send(
            &self.endpoint,
            &mut self.authenticator,
            &mut self.target,
            || {
                let mut request = outgoing.next();
                request.headers.insert_named(&Event::new("presence"));
                request.headers.insert_named(&Expires(expires));
                if let Some(etag) = &etag {
                    request.headers.insert("SIP-If-Match", etag.clone());
                }
                if let Some(body) = &body {
                    request.headers.insert(Name::CONTENT_TYPE, PIDF_XML);
                    request.body = body.clone().into();
                }
                request
            },
        )
        .await;
        let counters = &self.shared.counters;
        let response = match response {
            Ok(response) => response,
            Err(reason) => {
                Counters::add(&counters.publications_failed);
                return Err(reason);
            }
        };
        match response.line.code.into_u16() {
            200..=299 => {
                Counters::add(&counters.publications);
                self.etag = response
                    .headers
                    .get_raw(&Name::from("SIP-ETag"))
                    .next()
                    .map(|v| v.as_str().trim().to_owned());
                let granted = response
                    .headers
                    .get_named::<Expires>()
                    .map(|e| e.0)
                    .unwrap_or(expires);
                Ok(Duration::from_secs(granted.into()))
            }
            code => {
                Counters::add(&counters.publications_failed);
                if code == 412 {
                    self.etag = None;
                }
                Err(format!("the presence server answered {code}"))
            }
        }
    }
}
