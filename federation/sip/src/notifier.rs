//! The gateway as the notifier of the `fogbank-thing` event package
//! (RFC 6665) for thing addresses of record: a SUBSCRIBE is answered 200,
//! then a NOTIFY carries the latest reading at once and one per new
//! reading, no more often than the subscription's minimum interval
//! (RFC 6446 `min-interval`, or the configured one if longer). Each
//! subscription is a dialog (ezk's) and a task of its own; a refresh or
//! an `Expires: 0` arrives through the dialog. A NOTIFY that is refused
//! (481 and the like) or never answered ends the subscription; one answered
//! with a `Retry-After` (a busy proxy's 503, a watcher's 500) has not
//! failed (RFC 6665 §4.2.2): the state goes again once that time is up,
//! and the subscription carries on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fogbank_taas::{Event as BusEvent, Reading, ThingId, ThingService};
use sip_core::{Endpoint, IncomingRequest, MayTake};
use sip_types::header::typed::{Contact, Event, Expires, RetryAfter};
use sip_types::uri::NameAddr;
use sip_types::{Method, Name, StatusCode};
use sip_ua::dialog::{Dialog, Usage, UsageGuard};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::content::{self, Format, PIDF_XML, SENML_JSON};
use crate::event::{self, PACKAGE};
use crate::request::{header, respond, sender, user_of};
use crate::shared::Listed;
use crate::shared::{Counters, Shared};

/// A subscription as the REST API shows it.
#[derive(Debug, Clone)]
pub struct SubscriptionView {
    pub watcher: String,
    pub thing: String,
    pub format: &'static str,
    pub notifications: u64,
    pub expires_in: u64,
}

pub(crate) fn view(shared: &Shared) -> Vec<SubscriptionView> {
    let now = Instant::now();
    shared
        .subscriptions
        .lock()
        .values()
        .map(|s| SubscriptionView {
            watcher: s.watcher.clone(),
            thing: s.thing.clone(),
            format: s.format.name(),
            notifications: s.notifications,
            expires_in: s.until.saturating_duration_since(now).as_secs(),
        })
        .collect()
}

/// Waits (a little) for every subscription to send its final NOTIFY.
pub(crate) async fn ended(shared: &Shared) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !shared.subscriptions.lock().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a SUBSCRIBE asks for, once it passed every check.
struct Plan {
    thing: ThingService,
    format: Format,
    expires: u32,
    event: String,
    interval: Duration,
}

enum Refusal {
    BadRequest(String),
    BadEvent,
    NotFound,
    NotAcceptable,
}

fn plan(shared: &Shared, request: &IncomingRequest) -> Result<Plan, Refusal> {
    let raw_event = header(request, &Name::EVENT)
        .ok_or_else(|| Refusal::BadRequest("no Event header".into()))?;
    let parsed = event::parse_event(raw_event).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    if parsed.package != PACKAGE {
        return Err(Refusal::BadEvent);
    }
    let thing = user_of(&request.line.uri)
        .and_then(|user| ThingId::parse(user).ok())
        .and_then(|id| shared.hub.thing(&id))
        .ok_or(Refusal::NotFound)?;
    let format = content::negotiate(request.headers.get_raw(&Name::ACCEPT).map(|v| v.as_str()))
        .ok_or(Refusal::NotAcceptable)?;
    let expires = expires_of(request).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let interval = parsed
        .min_interval
        .unwrap_or_default()
        .max(shared.config.min_interval);
    let event = match &parsed.id {
        Some(id) => format!("{PACKAGE};id={id}"),
        None => PACKAGE.to_owned(),
    };
    Ok(Plan {
        thing,
        format,
        expires,
        event,
        interval,
    })
}

/// Serves a SUBSCRIBE outside any dialog.
pub(crate) async fn subscribe(endpoint: &Endpoint, shared: &Arc<Shared>, request: IncomingRequest) {
    let plan = match plan(shared, &request) {
        Ok(plan) => plan,
        Err(refusal) => {
            Counters::add(&shared.counters.rejected);
            let (code, reason) = match refusal {
                Refusal::BadRequest(reason) => (StatusCode::BAD_REQUEST, reason),
                Refusal::BadEvent => (StatusCode::BAD_EVENT, "unknown event package".into()),
                Refusal::NotFound => (StatusCode::NOT_FOUND, "no such thing".into()),
                Refusal::NotAcceptable => (StatusCode::NOT_ACCEPTABLE, "no acceptable body".into()),
            };
            tracing::info!(code = code.into_u16(), %reason, "SUBSCRIBE refused");
            respond(endpoint, request, code, |headers| {
                headers.insert(Name::ALLOW_EVENTS, PACKAGE);
                headers.insert(Name::ACCEPT, format!("{SENML_JSON}, {PIDF_XML}"));
            })
            .await;
            return;
        }
    };
    let local_contact = match shared.contact(plan.thing.id.as_str()) {
        Ok(uri) => Contact::new(NameAddr::uri(uri)),
        Err(reason) => {
            tracing::warn!(%reason, "no Contact for a subscription");
            respond(endpoint, request, StatusCode::SERVER_INTERNAL_ERROR, |_| {}).await;
            return;
        }
    };
    let mut request = request;
    let dialog = match Dialog::new_server(endpoint.clone(), &request, local_contact) {
        Ok(dialog) => dialog,
        Err(error) => {
            Counters::add(&shared.counters.rejected);
            tracing::info!(%error, "SUBSCRIBE refused: no dialog");
            respond(endpoint, request, StatusCode::BAD_REQUEST, |_| {}).await;
            return;
        }
    };
    let mut response = dialog_response(endpoint, &dialog, &request, StatusCode::OK);
    response.msg.headers.insert_named(&Expires(plan.expires));
    let (refresh_tx, refreshes) = mpsc::channel(4);
    let guard = dialog.register_usage(Refreshes { tx: refresh_tx });
    let watcher = sender(&request);
    if let Err(error) = endpoint
        .create_server_tsx(&mut request)
        .respond(response)
        .await
    {
        tracing::warn!(%error, "cannot answer a SUBSCRIBE");
        return;
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    tracing::info!(%watcher, thing = %plan.thing.id, format = plan.format.name(), expires = plan.expires, "subscription started");
    let subscription = Subscription {
        id,
        endpoint: endpoint.clone(),
        shared: shared.clone(),
        dialog,
        _guard: guard,
        entity: shared.aor_text(plan.thing.id.as_str()),
        plan,
    };
    shared.subscriptions.lock().insert(
        id,
        Listed {
            watcher,
            thing: subscription.plan.thing.id.as_str().to_owned(),
            format: subscription.plan.format,
            notifications: 0,
            until: Instant::now() + Duration::from_secs(subscription.plan.expires.into()),
        },
    );
    tokio::spawn(subscription.serve(refreshes));
}

/// A response inside the subscription's dialog: our To tag, our Contact,
/// the route set echoed. (ezk's own would print an empty Supported
/// header, which it cannot.)
fn dialog_response(
    endpoint: &Endpoint,
    dialog: &Dialog,
    request: &IncomingRequest,
    code: StatusCode,
) -> sip_core::transport::OutgoingResponse {
    let mut response = endpoint.create_response(request, code, None);
    let headers = &mut response.msg.headers;
    let _ = request.headers.clone_into(headers, Name::RECORD_ROUTE);
    headers.insert_named(&dialog.local_contact);
    headers.insert_named(endpoint.allowed());
    if request.base_headers.to.tag.is_none() {
        let _ = headers.edit(Name::TO, |to: &mut sip_types::header::typed::FromTo| {
            to.tag.clone_from(&dialog.local_fromto.tag);
        });
    }
    response
}

/// The expiry a SUBSCRIBE asks for (its `Expires`, or the default).
fn expires_of(request: &IncomingRequest) -> Result<u32, event::HeaderError> {
    event::parse_expires(header(request, &Name::EXPIRES))
}

/// Hands the dialog's requests (refreshes) to the subscription's task.
struct Refreshes {
    tx: mpsc::Sender<IncomingRequest>,
}

#[async_trait::async_trait]
impl Usage for Refreshes {
    fn name(&self) -> &'static str {
        "fogbank-thing subscription"
    }

    async fn receive(&self, _: &Endpoint, request: MayTake<'_, IncomingRequest>) {
        if request.line.method == Method::SUBSCRIBE {
            let _ = self.tx.send(request.take()).await;
        }
    }
}

struct Subscription {
    id: u64,
    endpoint: Endpoint,
    shared: Arc<Shared>,
    dialog: Dialog,
    _guard: UsageGuard,
    plan: Plan,
    entity: String,
}

/// Why a NOTIFY did not get through.
#[derive(Debug, thiserror::Error)]
enum NotifyError {
    #[error("{0}")]
    Send(#[from] sip_core::Error),
    /// The status and (an excerpt of) its reason phrase: which element
    /// refused, the watcher or a proxy on its behalf, often shows only in
    /// the phrase.
    #[error("the watcher answered {code} {reason}")]
    Refused { code: u16, reason: String },
    /// Answered with a `Retry-After`: not a failure; the state is to go
    /// again after `after`.
    #[error("the watcher answered {code}, retry after {after:?}")]
    Deferred { code: u16, after: Duration },
}

/// A deferred final NOTIFY waits at most this long for its `Retry-After`
/// (a shutdown waits for none).
const LONGEST_FINAL_WAIT: Duration = Duration::from_secs(32);

/// A deferred NOTIFY goes again no sooner than this, whatever the answer
/// said: a `Retry-After: 0` to every NOTIFY must not make a flood of them.
const SHORTEST_RETRY: Duration = Duration::from_secs(1);

impl Subscription {
    fn latest(&self) -> Option<Reading> {
        self.shared.hub.latest(&self.plan.thing.id).flatten()
    }

    async fn serve(mut self, mut refreshes: mpsc::Receiver<IncomingRequest>) {
        let mut readings = self
            .shared
            .hub
            .subscribe_thing(format!("sip subscription {}", self.id), &self.plan.thing.id);
        let mut stopped = self.shared.stopped.clone();
        let mut until = Instant::now() + Duration::from_secs(self.plan.expires.into());
        // A fetch (Expires: 0) gets the state once, as the final NOTIFY.
        let fetch = self.plan.expires == 0;
        let mut ending = fetch.then_some("terminated;reason=timeout");
        let first = self.latest();
        // Set while a NOTIFY answered with a Retry-After waits to go again;
        // meanwhile new readings only update what it will carry.
        let mut retry_at: Option<Instant> = None;
        let mut outcome = self
            .notify_or_defer(&until, ending, first.as_ref(), &mut retry_at)
            .await;
        let mut last = Instant::now();
        let mut pending: Option<Reading> = None;
        while outcome.is_ok() && ending.is_none() {
            let next_allowed = last + self.plan.interval;
            tokio::select! {
                _ = crate::shared::stopping(&mut stopped) => ending = Some("terminated;reason=noresource"),
                _ = tokio::time::sleep_until(until) => ending = Some("terminated;reason=timeout"),
                Some(refresh) = refreshes.recv() => {
                    match self.refresh(refresh).await {
                        Some(0) => ending = Some("terminated;reason=timeout"),
                        Some(expires) => {
                            until = Instant::now() + Duration::from_secs(expires.into());
                            // A deferred NOTIFY will carry the new expiry.
                            if retry_at.is_none() {
                                let latest = self.latest();
                                outcome = self.notify_or_defer(&until, None, latest.as_ref(), &mut retry_at).await;
                                last = Instant::now();
                            }
                        }
                        None => {}
                    }
                }
                event = readings.recv() => match event {
                    Some(BusEvent::Reading(reading)) => {
                        if retry_at.is_none() && Instant::now() >= next_allowed {
                            outcome = self.notify_or_defer(&until, None, Some(&reading.reading), &mut retry_at).await;
                            last = Instant::now();
                            pending = None;
                        } else {
                            pending = Some(reading.reading.clone());
                        }
                    }
                    Some(BusEvent::Lagged(_)) => {}
                    None => ending = Some("terminated;reason=noresource"),
                },
                _ = tokio::time::sleep_until(next_allowed), if pending.is_some() && retry_at.is_none() => {
                    let reading = pending.take();
                    outcome = self.notify_or_defer(&until, None, reading.as_ref(), &mut retry_at).await;
                    last = Instant::now();
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or(until)), if retry_at.is_some() => {
                    retry_at = None;
                    pending = None;
                    let latest = self.latest();
                    outcome = self.notify_or_defer(&until, None, latest.as_ref(), &mut retry_at).await;
                    last = Instant::now();
                }
            }
        }
        // A NOTIFY still deferred: its Retry-After is waited out (within
        // reason, and not at a shutdown) before the final NOTIFY, which for
        // a fetch is that deferred one again.
        let deferred = retry_at.take();
        if let Some(at) = deferred {
            tokio::select! {
                _ = crate::shared::stopping(&mut stopped) => {}
                _ = tokio::time::sleep_until(at.min(Instant::now() + LONGEST_FINAL_WAIT)) => {}
            }
        }
        match outcome {
            Ok(()) if !fetch || deferred.is_some() => {
                let latest = self.latest();
                if let Err(error) = self.notify(&until, ending, latest.as_ref()).await {
                    tracing::debug!(%error, "the final NOTIFY did not get through");
                }
            }
            Ok(()) => {}
            Err(error) => {
                tracing::info!(%error, thing = %self.plan.thing.id, "subscription removed: a NOTIFY did not get through")
            }
        }
        tracing::info!(thing = %self.plan.thing.id, reason = ending.unwrap_or("failed"), "subscription ended");
        self.shared.subscriptions.lock().remove(&self.id);
    }

    /// Answers a refresh; the expiry it asks for, if it is valid.
    async fn refresh(&self, mut request: IncomingRequest) -> Option<u32> {
        let expires = expires_of(&request);
        let (code, expires) = match expires {
            Ok(expires) => (StatusCode::OK, Some(expires)),
            Err(_) => (StatusCode::BAD_REQUEST, None),
        };
        let mut response = dialog_response(&self.endpoint, &self.dialog, &request, code);
        if let Some(expires) = expires {
            response.msg.headers.insert_named(&Expires(expires));
            if let Some(listed) = self.shared.subscriptions.lock().get_mut(&self.id) {
                listed.until = Instant::now() + Duration::from_secs(expires.into());
            }
        }
        let transaction = self.endpoint.create_server_tsx(&mut request);
        if let Err(error) = transaction.respond(response).await {
            tracing::warn!(%error, "cannot answer a subscription refresh");
        }
        expires
    }

    /// [`notify`](Self::notify) as the subscription's loop takes it: a
    /// deferral is no failure, and sets `retry_at`, when the state goes
    /// again.
    async fn notify_or_defer(
        &mut self,
        until: &Instant,
        ending: Option<&str>,
        reading: Option<&Reading>,
        retry_at: &mut Option<Instant>,
    ) -> Result<(), NotifyError> {
        match self.notify(until, ending, reading).await {
            Err(NotifyError::Deferred { code, after }) => {
                tracing::info!(
                    code,
                    after_s = after.as_secs(),
                    "NOTIFY deferred: the state goes again after its Retry-After"
                );
                *retry_at = Some(Instant::now() + after.max(SHORTEST_RETRY));
                Ok(())
            }
            other => other,
        }
    }

    /// One NOTIFY: `ending` (a terminated state) or active until `until`.
    async fn notify(
        &mut self,
        until: &Instant,
        ending: Option<&str>,
        reading: Option<&Reading>,
    ) -> Result<(), NotifyError> {
        let state = match ending {
            Some(ending) => ending.to_owned(),
            None => format!(
                "active;expires={}",
                until.saturating_duration_since(Instant::now()).as_secs()
            ),
        };
        let thing = &self.plan.thing;
        let available = self
            .shared
            .hub
            .inspect_thing(&thing.id, |t| t.available)
            .unwrap_or(false);
        let body = content::body(
            self.plan.format,
            &self.entity,
            thing.id.as_str(),
            thing.unit.as_deref(),
            available,
            reading,
        );
        let mut request = self.dialog.create_request(Method::NOTIFY, None);
        request
            .headers
            .insert_named(&Event::new(self.plan.event.clone()));
        request.headers.insert(Name::SUBSCRIPTION_STATE, state);
        request.headers.insert_named(&self.dialog.local_contact);
        request
            .headers
            .insert(Name::CONTENT_TYPE, self.plan.format.content_type());
        request.body = body.into();
        let result = self.send(request).await;
        let counters = &self.shared.counters;
        match &result {
            Ok(()) => {
                Counters::add(&counters.notifications);
                if let Some(listed) = self.shared.subscriptions.lock().get_mut(&self.id) {
                    listed.notifications += 1;
                }
            }
            Err(NotifyError::Deferred { .. }) => Counters::add(&counters.notifications_deferred),
            Err(_) => Counters::add(&counters.notifications_failed),
        }
        result
    }

    /// Sends an in-dialog request along the route set: to its first hop
    /// (the proxy that record-routed the SUBSCRIBE), else to the watcher.
    async fn send(&self, request: sip_core::Request) -> Result<(), NotifyError> {
        let mut target = self.dialog.target_tp_info.lock().await;
        if target.via_host_port.is_none() {
            target.via_host_port = self.shared.target().via_host_port;
        }
        if target.transport.is_none()
            && let Some(first) = self.dialog.route_set.first()
        {
            target.transport = Some(self.endpoint.select_transport(&first.uri.uri).await?);
        }
        let mut transaction = self.endpoint.send_request(request, &mut target).await?;
        let response = transaction.receive_final().await?;
        let code = response.line.code.into_u16();
        if (200..=299).contains(&code) {
            return Ok(());
        }
        // A 481 ends the subscription whatever else it says.
        if code != 481
            && let Ok(retry) = response.headers.get_named::<RetryAfter>()
        {
            return Err(NotifyError::Deferred {
                code,
                after: Duration::from_secs(retry.value.into()),
            });
        }
        Err(NotifyError::Refused {
            code,
            reason: response
                .line
                .reason
                .as_ref()
                .map(|r| fogbank_taas::untrusted::Excerpt(r).to_string())
                .unwrap_or_default(),
        })
    }
}
