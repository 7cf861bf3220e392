//! The SIP agent: one ezk endpoint on a thread of its own, and the state
//! its parts share. The endpoint's layers see each incoming request in
//! order: [`inbound`](crate::inbound) first (who may ask, and requests
//! outside a dialog), then ezk's dialog layer (a subscription's refreshes).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fogbank_taas::{Hub, Query, ThingId, ThingService};
use parking_lot::{Mutex, RwLock};
use sip_auth::{DigestCredentials, DigestUser};
use sip_core::Endpoint;
use sip_core::transport::TargetTransportInfo;
use sip_types::Method;
use sip_types::uri::SipUri;
use sip_ua::dialog::DialogLayer;
use tokio::sync::watch;

use crate::inbound::Inbound;
use crate::notifier::SubscriptionView;
use crate::registrations::{Binding, RegistrationView};
use crate::{messages, notifier, presence, registrations};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Readings of the matching thing services go, as MESSAGEs, to `to`.
#[derive(Debug, Clone, Default)]
pub struct ForwardRule {
    /// Type and location prefix (the other fields are not used).
    pub select: Query,
    /// Empty: any id.
    pub ids: Vec<ThingId>,
    /// IMS identities, `sip:user@domain`.
    pub to: Vec<String>,
}

impl ForwardRule {
    pub fn matches(&self, thing: &ThingService) -> bool {
        self.select.matches(thing) && (self.ids.is_empty() || self.ids.contains(&thing.id))
    }
}

#[derive(Debug, Clone)]
pub struct SipConfig {
    /// The registrar and outbound proxy, `sip:host[:port]`.
    pub registrar: String,
    pub domain: String,
    pub username: String,
    pub password: String,
    pub transport: Transport,
    /// The socket the gateway's SIP endpoint binds.
    pub listen: SocketAddr,
    pub expires: Duration,
    /// Register every thing service this gateway owns, besides itself.
    pub register_things: bool,
    /// Notifications, publications and forwarded MESSAGEs of one thing
    /// are at least this far apart.
    pub min_interval: Duration,
    /// Where thing state is PUBLISHed (`sip:host[:port]`), if anywhere.
    pub presence_server: Option<String>,
    pub forward: Vec<ForwardRule>,
    /// Identities (`user@domain`) whose MESSAGEs may actuate.
    pub actuate: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error("{0:?} is not a SIP URI such as sip:127.0.0.1:5060")]
    Uri(String),
    #[error("cannot bind the SIP endpoint {listen}: {source}")]
    Bind {
        listen: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the SIP agent: {0}")]
    Thread(std::io::Error),
}

/// Counted events, by name, for the REST API and `/metrics`.
#[derive(Default)]
pub(crate) struct Counters {
    pub notifications: AtomicU64,
    pub notifications_failed: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_failed: AtomicU64,
    pub publications: AtomicU64,
    pub publications_failed: AtomicU64,
    pub forbidden: AtomicU64,
    pub rejected: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("notifications", read(&self.notifications)),
            ("notifications_failed", read(&self.notifications_failed)),
            ("messages_received", read(&self.messages_received)),
            ("messages_sent", read(&self.messages_sent)),
            ("messages_failed", read(&self.messages_failed)),
            ("publications", read(&self.publications)),
            ("publications_failed", read(&self.publications_failed)),
            ("forbidden", read(&self.forbidden)),
            ("rejected", read(&self.rejected)),
        ]
    }

    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the endpoint's tasks share.
pub(crate) struct Shared {
    pub hub: Arc<Hub>,
    pub config: SipConfig,
    pub registrar: SipUri,
    pub presence_server: Option<SipUri>,
    /// The address others reach this gateway's endpoint at.
    pub contact_addr: SocketAddr,
    pub credentials: DigestCredentials,
    /// Where the registrar answers from: requests from elsewhere get 403.
    pub registrar_addr: RwLock<Option<SocketAddr>>,
    pub registrar_reachable: AtomicBool,
    pub bindings: Mutex<BTreeMap<String, Binding>>,
    pub subscriptions: Mutex<notifier::Table>,
    pub counters: Counters,
    pub stopped: watch::Receiver<bool>,
}

impl Shared {
    /// `sip:{user}@{domain}`.
    pub fn aor(&self, user: &str) -> Result<SipUri, String> {
        let text = format!("sip:{user}@{}", self.config.domain);
        text.parse().map_err(|_| format!("{text} is not a SIP URI"))
    }

    /// Where a request the gateway starts goes, unset yet, but with the
    /// Via naming the endpoint's own address: over TCP ezk would name the
    /// connection's ephemeral port, where no answer can come back once the
    /// core opens a connection of its own.
    pub fn target(&self) -> TargetTransportInfo {
        TargetTransportInfo {
            via_host_port: Some(self.contact_addr.into()),
            ..Default::default()
        }
    }

    /// `sip:{user}@{contact address}`, with the transport when not UDP.
    pub fn contact(&self, user: &str) -> Result<SipUri, String> {
        let transport = match self.config.transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
        };
        let text = format!("sip:{user}@{}{transport}", self.contact_addr);
        text.parse().map_err(|_| format!("{text} is not a SIP URI"))
    }
}

/// Everything the REST API shows.
#[derive(Debug, Clone)]
pub struct AgentView {
    pub registrar_reachable: bool,
    pub registrations: Vec<RegistrationView>,
    pub subscriptions: Vec<SubscriptionView>,
    pub counters: Vec<(&'static str, u64)>,
}

/// The running agent.
pub struct Agent {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn parse_uri(text: &str, transport: Transport) -> Result<SipUri, SipError> {
    let with_transport = match transport {
        Transport::Tcp if !text.contains("transport=") => format!("{text};transport=tcp"),
        _ => text.to_owned(),
    };
    with_transport
        .parse()
        .map_err(|_| SipError::Uri(text.to_owned()))
}

/// The local address that reaches `remote` (for a Contact when the
/// endpoint listens on every interface).
fn contact_addr(listen: SocketAddr, registrar: &SipUri) -> SocketAddr {
    if !listen.ip().is_unspecified() {
        return listen;
    }
    let host = registrar.host_port.host.to_string();
    let port = registrar.host_port.port.unwrap_or(5060);
    let local = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .ok()
        .and_then(|mut all| all.next())
        .and_then(|remote| {
            let socket = std::net::UdpSocket::bind((listen.ip(), 0)).ok()?;
            socket.connect(remote).ok()?;
            socket.local_addr().ok()
        });
    match local {
        Some(local) => SocketAddr::new(local.ip(), listen.port()),
        None => {
            tracing::warn!(registrar = %host, "cannot find the local address that reaches the registrar; the Contact names the listen address");
            listen
        }
    }
}

impl Agent {
    /// Binds the SIP endpoint and starts registering and serving.
    pub fn start(hub: Arc<Hub>, config: SipConfig) -> Result<Agent, SipError> {
        let registrar = parse_uri(&config.registrar, config.transport)?;
        let presence_server = config
            .presence_server
            .as_deref()
            .map(|uri| parse_uri(uri, config.transport))
            .transpose()?;
        // Bound here, so that a taken port fails the start-up.
        let bind = |result: std::io::Result<()>| {
            result.map_err(|source| SipError::Bind {
                listen: config.listen,
                source,
            })
        };
        bind(std::net::UdpSocket::bind(config.listen).map(drop))?;
        if config.transport == Transport::Tcp {
            bind(std::net::TcpListener::bind(config.listen).map(drop))?;
        }
        let mut credentials = DigestCredentials::new();
        credentials.set_default(DigestUser::new(
            config.username.clone(),
            config.password.clone(),
        ));
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            contact_addr: contact_addr(config.listen, &registrar),
            hub,
            registrar,
            presence_server,
            credentials,
            registrar_addr: RwLock::new(None),
            registrar_reachable: AtomicBool::new(false),
            bindings: Mutex::default(),
            subscriptions: Mutex::default(),
            counters: Counters::default(),
            stopped,
            config,
        });
        let loop_shared = shared.clone();
        let thread = fogbank_taas::thread::spawn_loop("sip", move || run(loop_shared))
            .map_err(SipError::Thread)?;
        Ok(Agent {
            shared,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn view(&self) -> AgentView {
        AgentView {
            registrar_reachable: self.shared.registrar_reachable.load(Ordering::Relaxed),
            registrations: registrations::view(&self.shared),
            subscriptions: notifier::view(&self.shared),
            counters: self.shared.counters.snapshot(),
        }
    }

    /// Ends subscriptions and publications, removes every binding, stops.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

/// Resolves once the agent is told to stop.
pub(crate) async fn stopping(stopped: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is not Send; drop it here.
    let _ = stopped.wait_for(|s| *s).await.map(|_| ());
}

async fn run(shared: Arc<Shared>) {
    let mut builder = Endpoint::builder();
    // ezk prints the Allow header from this list and cannot print it empty.
    for method in [Method::OPTIONS, Method::SUBSCRIBE, Method::MESSAGE] {
        builder.add_allow(method);
    }
    builder.user_agent(format!("fogbank/{}", env!("CARGO_PKG_VERSION")));
    builder.add_layer(Inbound::new(shared.clone()));
    builder.add_layer(DialogLayer::default());
    let listen = shared.config.listen;
    if let Err(error) = builder.bind_udp(listen).await {
        tracing::error!(%error, %listen, "cannot bind the SIP endpoint");
        return;
    }
    if shared.config.transport == Transport::Tcp
        && let Err(error) = builder.listen_tcp(listen).await
    {
        tracing::error!(%error, %listen, "cannot listen for SIP over TCP");
        return;
    }
    let endpoint = builder.build();
    tracing::info!(registrar = %shared.config.registrar, domain = %shared.config.domain, contact = %shared.contact_addr, "SIP agent started");
    // Each part runs until the agent stops, then ends its own way
    // (final NOTIFYs, publications withdrawn, bindings removed).
    let parts = [
        tokio::spawn(registrations::run(endpoint.clone(), shared.clone())),
        tokio::spawn(presence::run(endpoint.clone(), shared.clone())),
        tokio::spawn(messages::forward(endpoint.clone(), shared.clone())),
    ];
    let mut stopped = shared.stopped.clone();
    crate::agent::stopping(&mut stopped).await;
    notifier::ended(&shared).await;
    for part in parts {
        let _ = part.await;
    }
    tracing::info!("SIP agent stopped");
}
