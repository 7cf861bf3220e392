//! SIGHUP: read the config again and take, without a restart, what can
//! change safely while requests are served — the tokens and the log
//! filter. Everything else a config holds (addresses, adapters, the store)
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

/// Reads the config again, as at the start (file, environment, flags),
/// checked; the parts a reload takes.
pub type ReadConfig = Box<dyn Fn() -> anyhow::Result<(AuthConfig, LogConfig)> + Send>;

/// What a reload needs besides the config: where tokens come from.
pub struct Reloader {
    pub read: ReadConfig,
    /// Told of each reload, so that `systemctl reload` waits for it.
    pub notifier: Arc<Notifier>,
    pub env_admin_token: Option<String>,
    pub data_dir: PathBuf,
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
        let (auth, log) = (self.read)()?;
        let (table, _) = Tokens::load(&auth, self.env_admin_token.clone(), &self.data_dir)?;
        let filter = crate::logging::set_filter(&log.filter)?;
        tokens.replace(table);
        tracing::info!(
            tokens = tokens.count(),
            log_filter = %filter,
            "config reloaded: tokens and log filter; other settings take effect at the next start"
        );
        Ok(())
    }
}
