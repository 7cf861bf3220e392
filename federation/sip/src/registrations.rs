//! One SIP registration per address of record: the gateway's, and with
//! `register_things = own` each thing service the gateway owns. A loop
//! follows the hub's catalog, registers new things at a bounded rate (a
//! gateway of 10,000 things must not flood the registrar), drops the
//! bindings of things that are gone, and retries failed ones with
//! doubling backoff. A probe notices a registrar that went away and came
//! back (a restart forgets its bindings) and binds everything again at
//! once. Stopping removes every binding.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sip_auth::DigestAuthenticator;
use sip_core::Endpoint;
use sip_core::transport::TargetTransportInfo;
use sip_types::Method;
use sip_types::header::typed::{Contact, Expires};
use sip_types::uri::NameAddr;
use sip_ua::register::Registration as RegistrationProto;
use tokio::sync::watch;

use crate::shared::{Binding, RegistrationState, Shared};
use crate::{fleet, outbound};

const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);
/// How often the registrar is asked whether it is there (OPTIONS), and
/// how long an answer is waited for.
const PROBE_EVERY: Duration = Duration::from_secs(5);
const PROBE_WAIT: Duration = Duration::from_secs(3);

/// One address of record as the REST API shows it.
#[derive(Debug, Clone)]
pub struct RegistrationView {
    pub aor: String,
    pub state: RegistrationState,
    /// Seconds since the binding was last made.
    pub registered_for: Option<u64>,
    /// Seconds until the binding runs out, unless refreshed.
    pub expires_in: Option<u64>,
    pub attempts: u32,
}

pub(crate) fn view(shared: &Shared) -> Vec<RegistrationView> {
    let now = Instant::now();
    shared
        .bindings
        .lock()
        .iter()
        .map(|(aor, b)| RegistrationView {
            aor: aor.clone(),
            state: b.state.clone(),
            registered_for: b.since.map(|s| s.elapsed().as_secs()),
            expires_in: b.until.map(|u| u.saturating_duration_since(now).as_secs()),
            attempts: b.attempts,
        })
        .collect()
}

/// Keeps the bindings the catalog asks for until the agent stops, then
/// removes them all.
pub(crate) async fn run(endpoint: Endpoint, shared: Arc<Shared>) {
    // Bumped when the registrar comes back: every binding is made again.
    let (rebind, rebinding) = watch::channel(0u64);
    let probe = tokio::spawn(probe(endpoint.clone(), shared.clone(), rebind));
    let things = shared.config.register_things;
    let task_shared = shared.clone();
    let gone_shared = shared.clone();
    fleet::follow(
        shared,
        "register",
        |shared| fleet::own_users(shared, true, things),
        |user, stop| {
            task_shared.bindings.lock().insert(
                user.clone(),
                Binding {
                    state: RegistrationState::Registering,
                    since: None,
                    until: None,
                    attempts: 0,
                },
            );
            keep_bound(
                endpoint.clone(),
                task_shared.clone(),
                user,
                stop,
                rebinding.clone(),
            )
        },
        |user| {
            gone_shared.bindings.lock().remove(user);
        },
    )
    .await;
    probe.abort();
}

/// Asks the registrar (OPTIONS) every few seconds whether it is there;
/// records where it answers from; when it comes back after going quiet,
/// has every binding made again, since a restarted registrar may have
/// forgotten them.
async fn probe(endpoint: Endpoint, shared: Arc<Shared>, rebind: watch::Sender<u64>) {
    let mut was_reachable = None;
    loop {
        let mut target = shared.target();
        let request = outbound::Outgoing::new(
            &endpoint,
            &shared,
            Method::OPTIONS,
            shared.registrar.clone(),
        )
        .map(|mut o| o.next());
        let answer = tokio::time::timeout(PROBE_WAIT, async {
            let mut transaction = endpoint
                .send_request(request.ok()?, &mut target)
                .await
                .ok()?;
            transaction.receive_final().await.ok()
        })
        .await
        .ok()
        .flatten();
        let reachable = match answer {
            Some(response) => {
                *shared.registrar_addr.write() = Some(response.tp_info.source);
                true
            }
            None => false,
        };
        shared
            .registrar_reachable
            .store(reachable, Ordering::Relaxed);
        if was_reachable == Some(false) && reachable {
            tracing::info!("the SIP registrar is back; binding again");
            rebind.send_modify(|generation| *generation += 1);
        } else if was_reachable != Some(false) && !reachable {
            tracing::warn!(registrar = %shared.config.registrar, "the SIP registrar does not answer");
        }
        was_reachable = Some(reachable);
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

fn set_state(shared: &Shared, user: &str, state: RegistrationState, until: Option<Instant>) {
    if let Some(binding) = shared.bindings.lock().get_mut(user) {
        binding.attempts += 1;
        if state == RegistrationState::Registered && binding.state != RegistrationState::Registered
        {
            binding.since = Some(Instant::now());
        }
        if state != RegistrationState::Registered {
            binding.since = None;
        }
        binding.until = until;
        binding.state = state;
    }
}

/// Keeps one address of record bound: registers, refreshes at 75 % of the
/// granted expiry (or at once when the registrar comes back), retries
/// failures with doubling backoff, and removes the binding when told to
/// stop.
async fn keep_bound(
    endpoint: Endpoint,
    shared: Arc<Shared>,
    user: String,
    mut stop: watch::Receiver<bool>,
    mut rebind: watch::Receiver<u64>,
) {
    let (aor, contact) = match (shared.aor(&user), shared.contact(&user)) {
        (Ok(aor), Ok(contact)) => (aor, contact),
        (Err(reason), _) | (_, Err(reason)) => {
            set_state(&shared, &user, RegistrationState::Failed { reason }, None);
            return;
        }
    };
    let mut binding = RegistrationProto::new(
        NameAddr::uri(aor),
        Contact::new(NameAddr::uri(contact)),
        shared.registrar.clone(),
        shared.config.expires,
    );
    let mut target = shared.target();
    let mut authenticator = DigestAuthenticator::new(shared.credentials.clone());
    let mut backoff = FIRST_RETRY;
    let mut bound;
    loop {
        let wait = match exchange(
            &endpoint,
            &mut binding,
            &mut authenticator,
            &mut target,
            false,
        )
        .await
        {
            Ok(granted) => {
                let until = Instant::now() + granted;
                set_state(&shared, &user, RegistrationState::Registered, Some(until));
                bound = true;
                backoff = FIRST_RETRY;
                granted.mul_f64(0.75)
            }
            Err(reason) => {
                if backoff == FIRST_RETRY {
                    tracing::warn!(aor = %user, %reason, "SIP registration failed; retrying with backoff");
                }
                set_state(&shared, &user, RegistrationState::Failed { reason }, None);
                bound = false;
                let wait = backoff;
                backoff = (backoff * 2).min(LAST_RETRY);
                wait
            }
        };
        tokio::select! {
            _ = stop.changed() => break,
            _ = rebind.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if bound
        && let Err(reason) = exchange(
            &endpoint,
            &mut binding,
            &mut authenticator,
            &mut target,
            true,
        )
        .await
    {
        tracing::warn!(aor = %user, %reason, "could not remove the SIP binding");
    }
}

/// One REGISTER, answered through its digest challenges and a 423 with
/// `Min-Expires`. The expiry the registrar granted, on success.
async fn exchange(
    endpoint: &Endpoint,
    binding: &mut RegistrationProto,
    authenticator: &mut DigestAuthenticator,
    target: &mut TargetTransportInfo,
    remove: bool,
) -> Result<Duration, String> {
    // One more round than a 423 needs.
    for _ in 0..3 {
        let mut asked = Duration::from_secs(60);
        let response = outbound::send(endpoint, authenticator, target, || {
            let mut request = binding.create_register(remove);
            request.headers.insert_named(endpoint.allowed());
            if let Ok(expires) = request.headers.get_named::<Expires>() {
                asked = Duration::from_secs(u64::from(expires.0));
            }
            request
        })
        .await?;
        let code = response.line.code.into_u16();
        match code {
            200..=299 => {
                let granted = response
                    .headers
                    .get_named::<Expires>()
                    .map(|e| Duration::from_secs(u64::from(e.0)))
                    .unwrap_or(asked);
                if !remove {
                    binding.receive_success_response(response);
                }
                return Ok(granted);
            }
            // 423: take its Min-Expires and ask again.
            423 if !remove => {
                if !binding.receive_error_response(response) {
                    return Err(format!("the registrar answered {code}"));
                }
            }
            _ => return Err(format!("the registrar answered {code}")),
        }
    }
    Err("the registrar kept asking for a longer expiry".into())
}
