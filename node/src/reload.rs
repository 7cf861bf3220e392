//! SIGHUP: read the config again and take, without a restart, what can
//! change safely while requests are served — the tokens, the log filter
//! and the SIP forwarding rules. Everything else a config holds (addresses, adapters, the store)
//! is taken at the next start.
//!
//! A config that has problems changes nothing: the error is logged and
//! the running settings stay, so a typo cannot lock operators out.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::auth::Tokens;
use crate::config::{AuthConfig, LogConfig};

use crate::notify::Notifier;

/// Reloads of this process that took, and that were refused
/// (`fogbank_config_reloads_total{outcome}`).
static RELOADED: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// `(outcome, count)` for the metrics.
pub fn reload_counts() -> [(&'static str, u64); 2] {
    [
        ("reloaded", RELOADED.load(Ordering::Relaxed)),
        ("refused", REFUSED.load(Ordering::Relaxed)),
    ]
}

/// The parts of a config a reload takes.
pub struct Reloaded {
    pub auth: AuthConfig,
    pub log: LogConfig,
    /// The gateway's `[[sip.forward]]` rules; `None` for the controller or
    /// with SIP off.
    pub sip_forward: Option<Vec<fogbank_sip::ForwardRule>>,
    /// The gateway's `[services] trusted_keys`; `None` for the controller.
    pub trusted_keys: Option<fogbank_services::TrustedKeys>,
}

/// Reads the config again, as at the start (file, environment, flags),
/// checked.
pub type ReadConfig = Box<dyn Fn() -> anyhow::Result<Reloaded> + Send>;

/// What a reload needs besides the config: where tokens come from.
pub struct Reloader {
    pub read: ReadConfig,
    /// Told of each reload, so that `systemctl reload` waits for it.
    pub notifier: Arc<Notifier>,
    pub env_admin_token: Option<String>,
    pub data_dir: PathBuf,
    /// The SIP agent whose forwarding rules a reload replaces.
    pub sip: Option<Arc<fogbank_sip::Agent>>,
    /// The extended services whose trusted publishers a reload replaces.
    pub services: Option<Arc<fogbank_services::Services>>,
}

impl Reloader {
    /// Waits for SIGHUP and reloads, for as long as the process runs.
    pub async fn run(self, tokens: &Tokens) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::error!(%error, "cannot watch SIGHUP: the config is read at start only");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            let _span = tracing::info_span!("reload").entered();
            self.notifier.notify("RELOADING=1");
            let outcome = self.reload(tokens);
            self.notifier.notify("READY=1");
            match outcome {
                Ok(()) => RELOADED.fetch_add(1, Ordering::Relaxed),
                Err(error) => {
                    tracing::error!("config not reloaded, running settings kept: {error:#}");
                    REFUSED.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    }

    fn reload(&self, tokens: &Tokens) -> anyhow::Result<()> {
        let reloaded = (self.read)()?;
        let (table, _) =
            Tokens::load(&reloaded.auth, self.env_admin_token.clone(), &self.data_dir)?;
        let filter = crate::logging::set_filter(&reloaded.log.filter)?;
        tokens.replace(table);
        if let (Some(agent), Some(rules)) = (&self.sip, reloaded.sip_forward) {
            agent.set_forward_rules(rules);
        }
        if let (Some(services), Some(keys)) = (&self.services, reloaded.trusted_keys) {
            services.set_trusted_keys(keys);
        }
        tracing::info!(
            tokens = tokens.count(),
            log_filter = %filter,
            "config reloaded: tokens, log filter, SIP forwarding rules, trusted publisher keys; other settings take effect at the next start"
        );
        Ok(())
    }
}
