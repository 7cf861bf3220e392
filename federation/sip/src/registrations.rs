//! One SIP registration per address of record, on a thread of its own:
//! the gateway's, and with `register_things = own` each thing service the
//! gateway owns. A loop follows the hub's catalog, registers new things at
//! a bounded rate (a gateway of 10,000 things must not flood the
//! registrar), drops the bindings of things that are gone, and retries
//! failed ones with doubling backoff. Stopping removes every binding.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogbank_taas::Hub;
use parking_lot::Mutex;
use sip_auth::{
    ClientAuthenticator, DigestAuthenticator, DigestCredentials, DigestUser, RequestParts,
    ResponseParts,
};
use sip_core::Endpoint;
use sip_core::transport::TargetTransportInfo;
use sip_types::Method;
use sip_types::header::typed::{Contact, Expires};
use sip_types::uri::{NameAddr, SipUri};
use sip_ua::register::Registration as RegistrationProto;
use tokio::sync::watch;
use tracing::Instrument;

/// Registrations started per second, at most.
const REGISTER_RATE: u32 = 100;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);
/// How long a stopping gateway waits for its un-REGISTERs to be answered.
const UNREGISTER_WAIT: Duration = Duration::from_secs(3);
/// Digest challenges answered for one REGISTER, at most.
const MAX_CHALLENGES: usize = 4;

#[derive(Debug, Clone)]
pub struct SipConfig {
    /// The registrar, `sip:host[:port]`.
    pub registrar: String,
    pub domain: String,
    pub username: String,
    pub password: String,
    /// The UDP socket the gateway's SIP endpoint binds.
    pub listen: SocketAddr,
    pub expires: Duration,
    /// Register every thing service this gateway owns, besides itself.
    pub register_things: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error("{0:?} is not a SIP URI such as sip:127.0.0.1:5060")]
    Registrar(String),
    #[error("cannot bind the SIP endpoint {listen}: {source}")]
    Bind {
        listen: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the SIP agent: {0}")]
    Thread(std::io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    Registering,
    Registered,
    /// Refused or unanswered; retried at `retry_in`.
    Failed {
        reason: String,
    },
}

/// One address of record as the REST API shows it.
#[derive(Debug, Clone)]
pub struct RegistrationView {
    pub aor: String,
    pub state: RegistrationState,
    /// Seconds since the binding was last made.
    pub registered_for: Option<u64>,
    pub attempts: u32,
}

struct Binding {
    state: RegistrationState,
    since: Option<Instant>,
    attempts: u32,
}

#[derive(Default)]
struct Shared {
    bindings: BTreeMap<String, Binding>,
}

/// The running registrations.
pub struct Registrations {
    shared: Arc<Mutex<Shared>>,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Registrations {
    /// Binds the SIP endpoint and starts registering.
    pub fn start(hub: Arc<Hub>, config: SipConfig) -> Result<Registrations, SipError> {
        let registrar: SipUri = config
            .registrar
            .parse()
            .map_err(|_| SipError::Registrar(config.registrar.clone()))?;
        // Bound here, so that a taken port fails the start-up.
        let socket = std::net::UdpSocket::bind(config.listen).map_err(|source| SipError::Bind {
            listen: config.listen,
            source,
        })?;
        drop(socket);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (stop, stopped) = watch::channel(false);
        let loop_shared = shared.clone();
        let thread = fogbank_taas::thread::spawn_loop("sip", move || {
            run(hub, config, registrar, loop_shared, stopped)
        })
        .map_err(SipError::Thread)?;
        Ok(Registrations {
            shared,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn view(&self) -> Vec<RegistrationView> {
        let shared = self.shared.lock();
        shared
            .bindings
            .iter()
            .map(|(aor, b)| RegistrationView {
                aor: aor.clone(),
                state: b.state.clone(),
                registered_for: b.since.map(|s| s.elapsed().as_secs()),
                attempts: b.attempts,
            })
            .collect()
    }

    /// Removes every binding (un-REGISTER) and stops.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

/// The user parts this gateway registers: itself, then its things.
fn wanted(hub: &Hub, register_things: bool) -> Vec<String> {
    let gateway = hub.gateway().to_owned();
    let mut users = vec![gateway.clone()];
    if register_things {
        let mut things: Vec<String> = hub
            .select_things(|t| t.gateway == gateway)
            .into_iter()
            .map(|t| t.id.as_str().to_owned())
            .collect();
        things.sort();
        users.extend(things);
    }
    users
}

/// What every binding's task shares.
struct Context {
    endpoint: Endpoint,
    config: SipConfig,
    contact_addr: SocketAddr,
    registrar: SipUri,
    credentials: DigestCredentials,
    shared: Arc<Mutex<Shared>>,
}

async fn run(
    hub: Arc<Hub>,
    config: SipConfig,
    registrar: SipUri,
    shared: Arc<Mutex<Shared>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut builder = Endpoint::builder();
    // ezk prints the Allow header from this list and cannot print it empty.
    for method in [
        Method::OPTIONS,
        Method::SUBSCRIBE,
        Method::NOTIFY,
        Method::MESSAGE,
    ] {
        builder.add_allow(method);
    }
    builder.user_agent(format!("fogbank/{}", env!("CARGO_PKG_VERSION")));
    if let Err(error) = builder.bind_udp(config.listen).await {
        tracing::error!(%error, listen = %config.listen, "cannot bind the SIP endpoint");
        return;
    }
    let endpoint = builder.build();
    let mut credentials = DigestCredentials::new();
    credentials.set_default(DigestUser::new(
        config.username.clone(),
        config.password.clone(),
    ));
    // The Contact: the listen address, or with an unspecified one, the
    // local address that reaches the registrar.
    let contact_addr = match config.listen.ip().is_unspecified() {
        false => config.listen,
        true => match endpoint.select_transport(&registrar).await {
            Ok((_, remote)) => std::net::UdpSocket::bind((config.listen.ip(), 0))
                .and_then(|s| s.connect(remote).and_then(|()| s.local_addr()))
                .map(|local| SocketAddr::new(local.ip(), config.listen.port()))
                .unwrap_or(config.listen),
            Err(error) => {
                tracing::warn!(%error, "cannot reach the SIP registrar yet");
                config.listen
            }
        },
    };
    tracing::info!(registrar = %config.registrar, domain = %config.domain, contact = %contact_addr, "SIP agent started");
    let register_things = config.register_things;
    let context = Arc::new(Context {
        endpoint,
        config,
        contact_addr,
        registrar,
        credentials,
        shared: shared.clone(),
    });

    // One task per binding; started at most REGISTER_RATE a second.
    let mut tasks: BTreeMap<String, (watch::Sender<bool>, tokio::task::JoinHandle<()>)> =
        BTreeMap::new();
    let mut waiting: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / u64::from(REGISTER_RATE)));
    let mut generation = None;
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = tick.tick() => {}
        }
        let now_generation = hub.catalog_generation();
        if generation != Some(now_generation) {
            generation = Some(now_generation);
            let users = wanted(&hub, register_things);
            // Bindings of things that are gone are removed.
            let gone: Vec<String> = tasks
                .keys()
                .filter(|user| !users.contains(user))
                .cloned()
                .collect();
            for user in gone {
                if let Some((stop, _)) = tasks.remove(&user) {
                    let _ = stop.send(true);
                }
                shared.lock().bindings.remove(&user);
            }
            waiting = users
                .into_iter()
                .filter(|user| !tasks.contains_key(user))
                .collect();
            waiting.reverse();
        }
        if let Some(user) = waiting.pop() {
            shared.lock().bindings.insert(
                user.clone(),
                Binding {
                    state: RegistrationState::Registering,
                    since: None,
                    attempts: 0,
                },
            );
            let (stop, stopping) = watch::channel(false);
            let span = tracing::debug_span!("register", aor = %user);
            let task =
                tokio::spawn(keep_bound(context.clone(), user.clone(), stopping).instrument(span));
            tasks.insert(user, (stop, task));
        }
    }
    // Every binding removed before the runtime ends.
    let count = tasks.len();
    let mut handles = Vec::new();
    for (_, (stop, task)) in tasks {
        let _ = stop.send(true);
        handles.push(task);
    }
    let _ = tokio::time::timeout(UNREGISTER_WAIT, async {
        for handle in handles {
            let _ = handle.await;
        }
    })
    .await;
    tracing::info!(bindings = count, "SIP agent stopped");
}

fn set_state(context: &Context, user: &str, state: RegistrationState) {
    if let Some(binding) = context.shared.lock().bindings.get_mut(user) {
        binding.attempts += 1;
        if state == RegistrationState::Registered && binding.state != RegistrationState::Registered
        {
            binding.since = Some(Instant::now());
        }
        if state != RegistrationState::Registered {
            binding.since = None;
        }
        binding.state = state;
    }
}

/// Keeps one address of record bound: registers, refreshes at 75 % of the
/// granted expiry, retries failures with doubling backoff, and removes
/// the binding when told to stop.
async fn keep_bound(context: Arc<Context>, user: String, mut stop: watch::Receiver<bool>) {
    let (aor, contact) = match (
        format!("sip:{user}@{}", context.config.domain).parse::<SipUri>(),
        format!("sip:{user}@{}", context.contact_addr).parse::<SipUri>(),
    ) {
        (Ok(aor), Ok(contact)) => (aor, contact),
        _ => {
            set_state(
                &context,
                &user,
                RegistrationState::Failed {
                    reason: format!("sip:{user}@{} is not a SIP URI", context.config.domain),
                },
            );
            return;
        }
    };
    let mut binding = RegistrationProto::new(
        NameAddr::uri(aor),
        Contact::new(NameAddr::uri(contact)),
        context.registrar.clone(),
        context.config.expires,
    );
    let mut target = TargetTransportInfo::default();
    let mut authenticator = DigestAuthenticator::new(context.credentials.clone());
    let mut backoff = FIRST_RETRY;
    let mut bound;
    loop {
        let wait = match exchange(
            &context.endpoint,
            &mut binding,
            &mut authenticator,
            &mut target,
            false,
        )
        .await
        {
            Ok(granted) => {
                set_state(&context, &user, RegistrationState::Registered);
                bound = true;
                backoff = FIRST_RETRY;
                granted.mul_f64(0.75)
            }
            Err(reason) => {
                if backoff == FIRST_RETRY {
                    tracing::warn!(aor = %user, %reason, "SIP registration failed; retrying with backoff");
                }
                set_state(&context, &user, RegistrationState::Failed { reason });
                bound = false;
                let wait = backoff;
                backoff = (backoff * 2).min(LAST_RETRY);
                wait
            }
        };
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if bound
        && let Err(reason) = exchange(
            &context.endpoint,
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

/// One REGISTER, answered through its digest challenges (401 and 407; a
/// stale nonce is answered again) and a 423 with `Min-Expires`. The
/// expiry the registrar granted, on success.
async fn exchange(
    endpoint: &Endpoint,
    binding: &mut RegistrationProto,
    authenticator: &mut DigestAuthenticator,
    target: &mut TargetTransportInfo,
    remove: bool,
) -> Result<Duration, String> {
    for _ in 0..MAX_CHALLENGES {
        let mut request = binding.create_register(remove);
        request.headers.insert_named(endpoint.allowed());
        authenticator.authorize_request(&mut request.headers);
        let asked = request
            .headers
            .get_named::<Expires>()
            .map(|e| Duration::from_secs(u64::from(e.0)))
            .unwrap_or(Duration::from_secs(60));
        let mut transaction = endpoint
            .send_request(request, target)
            .await
            .map_err(|e| format!("cannot send REGISTER: {e}"))?;
        let response = transaction
            .receive_final()
            .await
            .map_err(|e| format!("no answer to REGISTER: {e}"))?;
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
            401 | 407 => {
                let request = transaction.request();
                authenticator
                    .handle_rejection(
                        RequestParts {
                            line: &request.msg.line,
                            headers: &request.msg.headers,
                            body: &request.msg.body,
                        },
                        ResponseParts {
                            line: &response.line,
                            headers: &response.headers,
                            body: &response.body,
                        },
                    )
                    .map_err(|e| format!("{code}: {e}"))?;
            }
            400..=499 if !remove => {
                // 423: take its Min-Expires and ask again.
                if !binding.receive_error_response(response) {
                    return Err(format!("the registrar answered {code}"));
                }
            }
            _ => return Err(format!("the registrar answered {code}")),
        }
    }
    Err("the registrar kept challenging".into())
}
