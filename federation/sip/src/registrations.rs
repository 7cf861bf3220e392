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
use sip_auth::{DigestAuthenticator, DigestCredentials, DigestUser};
use sip_core::Endpoint;
use sip_types::Method;
use sip_types::header::typed::Contact;
use sip_types::uri::{NameAddr, SipUri};
use sip_ua::{RegistrarConfig, Registration};
use tokio::sync::watch;
use tracing::Instrument;

/// Registrations started per second, at most.
const REGISTER_RATE: u32 = 100;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);
/// How long a stopping gateway waits for its un-REGISTERs to go out.
const UNREGISTER_WAIT: Duration = Duration::from_secs(2);

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
    next_try: Instant,
    backoff: Duration,
    registration: Option<Registration>,
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
        let thread = std::thread::Builder::new()
            .name("sip".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        tracing::error!(%error, "cannot start the SIP agent's runtime");
                        return;
                    }
                };
                runtime.block_on(run(hub, config, registrar, loop_shared, stopped));
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

async fn run(
    hub: Arc<Hub>,
    config: SipConfig,
    registrar: SipUri,
    shared: Arc<Mutex<Shared>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut builder = Endpoint::builder();
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
    tracing::info!(registrar = %config.registrar, domain = %config.domain, listen = %config.listen, "SIP agent started");

    let mut tick = tokio::time::interval(Duration::from_millis(1000 / u64::from(REGISTER_RATE)));
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
    let mut generation = None;
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = tick.tick() => {}
        }
        let now_generation = hub.catalog_generation();
        if generation != Some(now_generation) {
            generation = Some(now_generation);
            let wanted_users = wanted(&hub, config.register_things);
            let mut shared = shared.lock();
            // Things that are gone: dropping a registration removes its binding.
            shared
                .bindings
                .retain(|user, _| wanted_users.contains(user));
            for user in &wanted_users {
                shared
                    .bindings
                    .entry(user.clone())
                    .or_insert_with(|| Binding {
                        state: RegistrationState::Registering,
                        since: None,
                        attempts: 0,
                        next_try: Instant::now(),
                        backoff: FIRST_RETRY,
                        registration: None,
                    });
            }
        }
        // One registration per tick: the rate bound.
        let due = {
            let mut shared = shared.lock();
            let now = Instant::now();
            // A binding ezk reports lost is retried.
            for binding in shared.bindings.values_mut() {
                if let Some(registration) = binding.registration.as_mut()
                    && !registration.is_registered()
                {
                    binding.registration = None;
                    binding.state = RegistrationState::Failed {
                        reason: "the binding could not be refreshed".into(),
                    };
                    binding.next_try = now;
                }
            }
            shared
                .bindings
                .iter()
                .find(|(_, b)| b.registration.is_none() && b.next_try <= now)
                .map(|(user, _)| user.clone())
        };
        let Some(user) = due else { continue };
        let span = tracing::debug_span!("register", aor = %user);
        let result = register(
            &endpoint,
            &config,
            contact_addr,
            &registrar,
            &credentials,
            &user,
        )
        .instrument(span)
        .await;
        let mut shared = shared.lock();
        let Some(binding) = shared.bindings.get_mut(&user) else {
            continue;
        };
        binding.attempts += 1;
        match result {
            Ok(registration) => {
                binding.registration = Some(registration);
                binding.state = RegistrationState::Registered;
                binding.since = Some(Instant::now());
                binding.backoff = FIRST_RETRY;
            }
            Err(reason) => {
                if binding.backoff == FIRST_RETRY {
                    tracing::warn!(aor = %user, %reason, "SIP registration failed; retrying with backoff");
                }
                binding.state = RegistrationState::Failed { reason };
                binding.next_try = Instant::now() + binding.backoff;
                binding.backoff = (binding.backoff * 2).min(LAST_RETRY);
            }
        }
    }
    // Dropping the registrations sends their un-REGISTERs; give them time
    // to go out before the runtime ends.
    let count = {
        let mut shared = shared.lock();
        let count = shared
            .bindings
            .values()
            .filter(|b| b.registration.is_some())
            .count();
        for binding in shared.bindings.values_mut() {
            binding.registration = None;
        }
        count
    };
    if count > 0 {
        tokio::time::sleep(UNREGISTER_WAIT.min(Duration::from_millis(200 + 5 * count as u64)))
            .await;
    }
    tracing::info!(unregistered = count, "SIP agent stopped");
}

async fn register(
    endpoint: &Endpoint,
    config: &SipConfig,
    contact_addr: SocketAddr,
    registrar: &SipUri,
    credentials: &DigestCredentials,
    user: &str,
) -> Result<Registration, String> {
    let aor: SipUri = format!("sip:{user}@{}", config.domain)
        .parse()
        .map_err(|_| format!("sip:{user}@{} is not a SIP URI", config.domain))?;
    let contact: SipUri = format!("sip:{user}@{contact_addr}")
        .parse()
        .map_err(|_| format!("sip:{user}@{contact_addr} is not a SIP URI"))?;
    let registrar_config = RegistrarConfig::new(user.to_owned(), registrar.clone())
        .with_override_id(NameAddr::uri(aor))
        .with_override_contact(Contact::new(NameAddr::uri(contact)))
        .with_custom_expiry(config.expires);
    Registration::register(
        endpoint.clone(),
        registrar_config,
        DigestAuthenticator::new(credentials.clone()),
    )
    .await
    .map_err(|error| error.to_string())
}
