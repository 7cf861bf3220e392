//! The SIP agent: one ezk endpoint on a thread of its own, wiring the
//! parts (each sharing [`Shared`](crate::shared::Shared)). The endpoint's layers see each incoming request in
//! order: [`inbound`](crate::inbound) first (who may ask, and requests
//! outside a dialog), then ezk's dialog layer (a subscription's refreshes).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fogbank_taas::Hub;
use parking_lot::{Mutex, RwLock};
use sip_auth::{DigestCredentials, DigestUser};
use sip_core::Endpoint;
use sip_types::Method;
use sip_types::uri::SipUri;
use sip_ua::dialog::DialogLayer;
use tokio::sync::watch;

use crate::config::{ForwardRule, SipConfig, Transport};
use crate::inbound::Inbound;
use crate::notifier::SubscriptionView;
use crate::registrations::RegistrationView;
use crate::shared::{Counters, Shared};
use crate::{messages, notifier, presence, registrations};

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
            forward: RwLock::new(Arc::new(config.forward.clone())),
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

    /// Replaces the `[[sip.forward]]` rules (a config reload): readings
    /// from now on are forwarded by these.
    pub fn set_forward_rules(&self, rules: Vec<ForwardRule>) {
        let count = rules.len();
        *self.shared.forward.write() = Arc::new(rules);
        tracing::info!(rules = count, "SIP forwarding rules replaced");
    }

    /// Ends subscriptions and publications, removes every binding, stops.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
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
    crate::shared::stopping(&mut stopped).await;
    notifier::ended(&shared).await;
    for part in parts {
        let _ = part.await;
    }
    tracing::info!("SIP agent stopped");
}
