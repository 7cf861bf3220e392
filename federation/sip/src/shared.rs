//! The state the agent's parts share (one `Shared` behind an `Arc`), and
//! the entries of its two tables, so that every part depends on this
//! module and none on another's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use fogbank_taas::Hub;
use parking_lot::{Mutex, RwLock};
use sip_auth::DigestCredentials;
use sip_core::transport::TargetTransportInfo;
use sip_types::uri::SipUri;
use tokio::sync::watch;

use crate::config::{ForwardRule, SipConfig, Transport};
use crate::content::Format;

/// Counted events, by name, for the REST API and `/metrics`.
#[derive(Default)]
pub(crate) struct Counters {
    pub notifications: AtomicU64,
    pub notifications_failed: AtomicU64,
    /// Answered with a Retry-After: sent again once it is up.
    pub notifications_deferred: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_failed: AtomicU64,
    pub publications: AtomicU64,
    pub publications_failed: AtomicU64,
    pub forbidden: AtomicU64,
    pub rejected: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("notifications", read(&self.notifications)),
            ("notifications_failed", read(&self.notifications_failed)),
            ("notifications_deferred", read(&self.notifications_deferred)),
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
    /// `config.forward` at the start, replaced whole on a reload.
    pub forward: RwLock<Arc<Vec<ForwardRule>>>,
    pub registrar: SipUri,
    pub presence_server: Option<SipUri>,
    /// The address others reach this gateway's endpoint at.
    pub contact_addr: SocketAddr,
    pub credentials: DigestCredentials,
    /// Where the registrar answers from: requests from elsewhere get 403.
    pub registrar_addr: RwLock<Option<SocketAddr>>,
    pub registrar_reachable: AtomicBool,
    pub bindings: Mutex<BTreeMap<String, Binding>>,
    pub subscriptions: Mutex<BTreeMap<u64, Listed>>,
    pub counters: Counters,
    pub stopped: watch::Receiver<bool>,
}

impl Shared {
    /// `sip:{user}@{domain}`, as text (a PIDF entity).
    pub fn aor_text(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.config.domain)
    }

    /// The same, parsed.
    pub fn aor(&self, user: &str) -> Result<SipUri, String> {
        let text = self.aor_text(user);
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

/// Resolves once the agent is told to stop.
pub(crate) async fn stopping(stopped: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is not Send; drop it here.
    let _ = stopped.wait_for(|s| *s).await.map(|_| ());
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    Registering,
    Registered,
    /// Refused or unanswered; retried with backoff.
    Failed {
        reason: String,
    },
}

/// One address of record's binding.
pub(crate) struct Binding {
    pub state: RegistrationState,
    pub since: Option<Instant>,
    pub until: Option<Instant>,
    pub attempts: u32,
}

/// One subscription, as the notifier lists it.
pub(crate) struct Listed {
    pub watcher: String,
    pub thing: String,
    pub format: Format,
    pub notifications: u64,
    pub until: tokio::time::Instant,
}
