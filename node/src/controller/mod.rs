//! `fogbank controller`: the SD-IoT controller, served by the same binary
//! as the gateway so one package installs both. Its own data dir (RocksDB:
//! the SDVS registry, requests and their data), S-MANAGE on UDP, and a
//! REST northbound interface with the gateway's token rules.

mod api;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpServer, web};
use anyhow::Context;
use fogbank_controller::{Controller, ControllerConfig, GatewayFilter};
use fogbank_taas::{Store, StoreOptions};
use serde::Deserialize;

use crate::auth::{AdminTokenSource, Tokens};
use crate::config::{AuthConfig, ConfigError, LogConfig, Validate};
use crate::notify::Notifier;
use crate::reload::{ReadConfig, Reloader};

/// The controller's configuration file (`deploy/controller.example.toml`
/// documents every key).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerFile {
    pub data_dir: PathBuf,
    /// S-MANAGE (UDP).
    pub listen: SocketAddr,
    /// The REST northbound interface.
    pub http: SocketAddr,
    /// Seconds between the controller's Hellos and stats polls to each SDVS.
    pub hello_interval_secs: u64,
    /// Seconds an instruction is kept after its period.
    pub instruction_margin_secs: u16,
    /// Gateways whose datagrams are taken: addresses or endpoints; empty
    /// takes all.
    pub gateways: Vec<String>,
    pub auth: AuthConfig,
    pub log: LogConfig,
}

impl Default for ControllerFile {
    fn default() -> Self {
        ControllerFile {
            data_dir: PathBuf::from("./fogbank-controller-data"),
            listen: SocketAddr::from(([0, 0, 0, 0], 7601)),
            http: SocketAddr::from(([127, 0, 0, 1], 8090)),
            hello_interval_secs: 10,
            instruction_margin_secs: 60,
            gateways: Vec::new(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl ControllerFile {
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        crate::config::load_toml(path)
    }

    /// Checks what serde cannot, naming every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::config::problems_to_result(self.problems())
    }
}

impl Validate for ControllerFile {
    fn problems(&self) -> Vec<(String, String)> {
        let mut problems = self.auth.problems();
        for (index, gateway) in self.gateways.iter().enumerate() {
            if let Err(reason) = gateway.parse::<GatewayFilter>() {
                problems.push((format!("gateways.{index}"), reason));
            }
        }
        if self.hello_interval_secs == 0 {
            problems.push(("hello_interval_secs".into(), "must be at least 1".into()));
        }
        if let Some(reason) = crate::config::log_format_problem(&self.log.format) {
            problems.push(("log.format".into(), reason));
        }
        problems
    }
}

impl ControllerFile {
    fn gateway_filters(&self) -> Result<Vec<GatewayFilter>, ConfigError> {
        self.gateways
            .iter()
            .map(|g| {
                g.parse().map_err(|reason| ConfigError::Invalid {
                    key: "gateways",
                    reason,
                })
            })
            .collect()
    }
}

/// Runs the controller until SIGINT or SIGTERM; `read_config` reads the
/// config again on SIGHUP.
pub fn run(
    config: ControllerFile,
    env_admin_token: Option<String>,
    read_config: ReadConfig,
) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(serve(config, env_admin_token, read_config))
}

async fn serve(
    config: ControllerFile,
    env_admin_token: Option<String>,
    read_config: ReadConfig,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let store = Arc::new(Store::open(
        &config.data_dir.join(crate::server::DB_DIR),
        &StoreOptions::default(),
    )?);
    let notifier = Arc::new(Notifier::from_env());
    let reloader = Reloader {
        sip: None,
        services: None,
        read: read_config,
        notifier: notifier.clone(),
        env_admin_token: env_admin_token.clone(),
        data_dir: config.data_dir.clone(),
    };
    let (tokens, source) = Tokens::load(&config.auth, env_admin_token, &config.data_dir)?;
    if let AdminTokenSource::Created(path) = source {
        tracing::warn!(path = %path.display(), "no token configured: created an admin token for writes; read it from this file");
    }
    let http_listener = std::net::TcpListener::bind(config.http)
        .with_context(|| format!("cannot listen for HTTP on {}", config.http))?;
    let controller = Arc::new(
        Controller::start(
            store.clone(),
            ControllerConfig {
                listen: config.listen,
                hello_interval: Duration::from_secs(config.hello_interval_secs),
                instruction_margin_s: config.instruction_margin_secs,
                gateways: config.gateway_filters()?,
            },
        )
        .context("cannot start the controller")?,
    );
    let state = web::Data::new(api::ControllerState {
        controller: controller.clone(),
        tokens,
    });
    let reloading = {
        let state = state.clone();
        actix_rt::spawn(async move { reloader.run(&state.tokens).await })
    };
    let server = HttpServer::new(move || api::app(state.clone()))
        .workers(2)
        .disable_signals()
        .shutdown_timeout(5)
        .listen(http_listener)
        .with_context(|| format!("cannot listen for HTTP on {}", config.http))?
        .run();
    let handle = server.handle();
    let task = actix_rt::spawn(server);
    tracing::info!(http = %config.http, smanage = %controller.local_addr(), data_dir = %config.data_dir.display(), "fogbank controller is running");
    notifier.notify("READY=1");
    let watchdog = {
        let notifier = notifier.clone();
        actix_rt::spawn(async move { notifier.keep_watchdog_fed().await })
    };
    let signal = crate::server::shutdown_signal().await;
    tracing::info!(signal, "shutting down");
    notifier.notify("STOPPING=1");
    watchdog.abort();
    handle.stop(true).await;
    let _ = task.await;
    reloading.abort();
    controller.stop();
    store.sync_wal()?;
    tracing::info!("stopped cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_documents_the_defaults() {
        let example = include_str!("../../../deploy/controller.example.toml");
        let parsed: ControllerFile = toml::from_str(example).expect("the example parses");
        assert_eq!(
            parsed,
            ControllerFile::default(),
            "deploy/controller.example.toml must show every default"
        );
    }
}
