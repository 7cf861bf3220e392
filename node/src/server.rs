//! `fogbank run`: opens the store, starts the adapters and the REST API,
//! keeps the history within its retention, and shuts all of it down in
//! order on SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use actix_web::{HttpServer, web};
use anyhow::Context;
use fogbank_adapter::{AdapterSupervisor, Backoff, Plugin, Shutdown};
use fogbank_cloud::{Cloud, CloudConfig, ClusterKey, Multiaddr};
use fogbank_sim::{SimConfig, Simulator};
use fogbank_taas::{Hub, HubOptions, StoreOptions, Timestamp};

use crate::api::{self, AppState};
use crate::auth::{AdminTokenSource, Tokens};
use crate::config::Config;
use crate::metrics::HttpMetrics;
use crate::notify::Notifier;
use crate::reload::{ReadConfig, Reloader};

/// RocksDB lives in this subdirectory of the data dir.
pub const DB_DIR: &str = "db";
/// Compiled extended services, by the digest of their component; safe to
/// delete (they are compiled again).
pub const SERVICES_CACHE_DIR: &str = "services-cache";
/// Without `sync_writes`, the WAL is fsynced this often, bounding what a
/// power cut can take to this window (a crash takes nothing).
const WAL_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Open HTTP connections per worker thread, at most; past it the server
/// stops accepting until one closes (each holds at most a 32 KiB head and
/// `http.max_body_bytes` of body while a request is read).
pub const HTTP_CONNECTIONS_PER_WORKER: usize = 1024;
/// A client must have sent its request's head by then, or gets 408.
pub const HTTP_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the gateway until SIGINT or SIGTERM; `read_config` reads the
/// config again on SIGHUP.
pub fn run(
    config: Config,
    env_admin_token: Option<String>,
    cluster_key: Option<ClusterKey>,
    read_config: ReadConfig,
) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(serve(config, env_admin_token, cluster_key, read_config))
}

/// Joins the local cloud when a cluster key is configured and it is not off.
fn join_cloud(
    config: &Config,
    hub: &Arc<Hub>,
    cluster_key: Option<ClusterKey>,
) -> anyhow::Result<Option<Arc<Cloud>>> {
    let section = &config.cloud;
    if section.listen == "off" {
        return Ok(None);
    }
    let Some(cluster_key) = cluster_key else {
        tracing::info!(
            "no cluster key: this gateway stands alone (make one with `fogbank cluster-key`)"
        );
        return Ok(None);
    };
    let parse = |raw: &str| -> anyhow::Result<Multiaddr> {
        raw.parse()
            .with_context(|| format!("{raw:?} is not a libp2p multiaddr"))
    };
    let cloud = Cloud::start(
        hub.clone(),
        CloudConfig {
            listen: parse(&section.listen)?,
            peers: section
                .peers
                .iter()
                .map(|p| parse(p))
                .collect::<anyhow::Result<_>>()?,
            mdns: section.mdns,
            cluster_key,
            data_dir: config.data_dir.clone(),
        },
    )?;
    Ok(Some(Arc::new(cloud)))
}

fn plugins(
    config: &Config,
    coap: Option<&fogbank_coap_protocol::endpoint::Endpoint>,
) -> anyhow::Result<Vec<Box<dyn Plugin>>> {
    let mut plugins: Vec<Box<dyn Plugin>> = Vec::new();
    // Always there: with the simulator off it runs no floor of its own,
    // only those another gateway's drain moved here.
    let sim = &config.sim;
    let (buildings, floors) = match sim.enabled {
        true => (sim.buildings, sim.floors),
        false => (0, 0),
    };
    plugins.push(Box::new(Simulator::new(SimConfig {
        interval_ms: sim.interval_ms,
        buildings,
        floors,
    })));
    if let Some(mqtt) = fogbank_mqtt::Mqtt::new(config.mqtt.clone())? {
        plugins.push(Box::new(mqtt));
    }
    if let Some(endpoint) = coap {
        plugins.push(Box::new(fogbank_coap::Coap::new(
            endpoint.clone(),
            &config.coap,
        )));
    }
    if !config.serial154.radios.is_empty() {
        plugins.push(Box::new(fogbank_serial154::Serial154 {
            radios: config.serial154.radios.clone(),
        }));
    }
    Ok(plugins)
}

async fn serve(
    config: Config,
    env_admin_token: Option<String>,
    cluster_key: Option<ClusterKey>,
    read_config: ReadConfig,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let options = HubOptions {
        store: StoreOptions {
            sync_writes: config.store.sync_writes,
            cache_bytes: config.store.cache_mb << 20,
        },
        ..HubOptions::default()
    };
    let hub = Hub::open(&config.gateway_id, &config.data_dir.join(DB_DIR), options)?;

    let notifier = Arc::new(Notifier::from_env());
    let mut reloader = Reloader {
        sip: None,
        services: None,
        read: read_config,
        notifier: notifier.clone(),
        env_admin_token: env_admin_token.clone(),
        data_dir: config.data_dir.clone(),
    };
    let (tokens, source) = Tokens::load(&config.auth, env_admin_token, &config.data_dir)?;
    match source {
        AdminTokenSource::Created(path) => {
            tracing::warn!(path = %path.display(), "no token configured: created an admin token for writes; read it from this file")
        }
        AdminTokenSource::Existing(path) => {
            tracing::info!(path = %path.display(), "admin token read from the data directory")
        }
        AdminTokenSource::Configured => tracing::info!("tokens from the configuration"),
    }

    // One CoAP endpoint for devices (`/rd`, the adapter) and applications
    // (`/things`, here).
    let coap = match config.coap.enabled {
        true => Some(fogbank_coap::bind(&config.coap)?),
        false => None,
    };
    if let Some(endpoint) = &coap {
        let things = Arc::new(crate::coap::ThingsResource::new(
            hub.clone(),
            Duration::from_millis(config.http.actuation_wait_ms),
            true,
        ));
        endpoint.route("things", things.clone());
        endpoint.route(".well-known", things);
        crate::coap::notify_observers(hub.clone(), endpoint.clone());
    }
    // Bound before any actor starts: a start-up that fails after would
    // leave actors for the runtime's teardown to start, outside it (a panic
    // instead of the error).
    let listen = config.http.listen;
    let http_listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen for HTTP on {listen}"))?;
    let cloud = join_cloud(&config, &hub, cluster_key)?;
    let services = fogbank_services::Services::open(
        hub.clone(),
        Some(&config.data_dir.join(SERVICES_CACHE_DIR)),
    )
    .context("cannot start the extended services")?;
    services.set_trusted_keys(config.services.trusted_keys()?);
    let smanage = match config.smanage.agent()? {
        Some(agent) => Some(Arc::new(
            fogbank_sdvs::Agent::start(hub.clone(), agent)
                .context("cannot start the S-MANAGE agent")?,
        )),
        None => None,
    };
    let sip = match config.sip.agent(&config.gateway_id)? {
        Some(agent) => Some(Arc::new(
            fogbank_sip::Agent::start(hub.clone(), agent).context("cannot start the SIP agent")?,
        )),
        None => None,
    };
    let adapters: Vec<Addr<AdapterSupervisor>> = plugins(&config, coap.as_ref())?
        .into_iter()
        .map(|plugin| AdapterSupervisor::new(plugin, hub.clone(), Backoff::default()).start())
        .collect();

    let upkeep = actix_rt::spawn(upkeep(hub.clone(), config.clone()));

    let state = web::Data::new(AppState {
        hub: hub.clone(),
        tokens,
        http: HttpMetrics::default(),
        started: Instant::now(),
        max_body_bytes: config.http.max_body_bytes,
        actuation_wait: Duration::from_millis(config.http.actuation_wait_ms),
        adapters: adapters.clone(),
        coap: coap.clone(),
        cloud: cloud.clone(),
        services: services.clone(),
        smanage: smanage.clone(),
        sip: sip.clone(),
        retention: config.retention(),
    });
    reloader.sip = sip.clone();
    reloader.services = Some(services.clone());
    let reloading = {
        let state = state.clone();
        actix_rt::spawn(async move { reloader.run(&state.tokens).await })
    };
    let server = HttpServer::new(move || api::app(state.clone()))
        .workers(config.http_workers())
        .max_connections(HTTP_CONNECTIONS_PER_WORKER)
        .client_request_timeout(HTTP_HEAD_TIMEOUT)
        .disable_signals()
        .shutdown_timeout(5)
        .listen(http_listener)
        .with_context(|| format!("cannot listen for HTTP on {listen}"))?
        .run();
    let server_handle = server.handle();
    let server_task = actix_rt::spawn(server);
    tracing::info!(gateway = %hub.gateway(), http = %listen, data_dir = %config.data_dir.display(), "fogbank is running");
    notifier.notify("READY=1");
    let watchdog = {
        let notifier = notifier.clone();
        actix_rt::spawn(async move { notifier.keep_watchdog_fed().await })
    };

    let signal = shutdown_signal().await;
    tracing::info!(signal, "shutting down");
    notifier.notify("STOPPING=1");
    watchdog.abort();
    hub.close_subscriptions();
    server_handle.stop(true).await;
    let _ = server_task.await;
    for adapter in &adapters {
        let _ = adapter.send(Shutdown).await;
    }
    upkeep.abort();
    reloading.abort();
    if let Some(agent) = &smanage {
        agent.stop();
    }
    if let Some(sip) = &sip {
        // Final NOTIFYs, publications withdrawn, bindings removed.
        sip.stop();
    }
    // Services write through the hub: they stop before the store closes.
    services.shutdown();
    if let Some(cloud) = &cloud {
        // The others see the connections close and mark us down at once.
        cloud.stop();
    }
    // Acknowledged receipts still waiting for a write, then the WAL.
    hub.flush_releases()?;
    hub.store().sync_wal()?;
    tracing::info!("stopped cleanly");
    Ok(())
}

pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "cannot watch SIGTERM; only SIGINT stops the gateway");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

/// Periodic WAL sync, retention and heap trimming, off the request path.
async fn upkeep(hub: Arc<Hub>, config: Config) {
    let retention = config.retention();
    let retention_every = Duration::from_secs(config.store.retention_interval_secs.max(1));
    let mut last_retention: Option<Instant> = None;
    let mut last_trim = Instant::now();
    let mut tick = actix_rt::time::interval(WAL_SYNC_INTERVAL);
    loop {
        tick.tick().await;
        // A halted store takes no upkeep: each would fail as its writes do.
        if let Some(halt) = hub.store().halted() {
            if crate::halt::can_resume(&halt, hub.store().path()) {
                let error = crate::halt::restart_in_place();
                tracing::error!(%error, "cannot restart in place: restart the gateway to take writes again");
            }
            continue;
        }
        let hub = hub.clone();
        let run_retention = (retention.max_age.is_some() || retention.max_bytes.is_some())
            && last_retention.is_none_or(|t| t.elapsed() >= retention_every);
        if run_retention {
            last_retention = Some(Instant::now());
        }
        let trim = last_trim.elapsed() >= crate::heap::TRIM_INTERVAL;
        if trim {
            last_trim = Instant::now();
        }
        let retention = retention.clone();
        let sync = !config.store.sync_writes;
        let outcome = web::block(move || -> Result<(), fogbank_taas::StoreError> {
            if sync {
                hub.store().sync_wal()?;
            }
            if trim {
                crate::heap::give_back();
            }
            if run_retention {
                let report = hub
                    .store()
                    .enforce_retention(&retention, Timestamp::now())?;
                if report.cutoff.is_some() {
                    tracing::info!(?report, "retention removed old readings");
                }
            }
            Ok(())
        })
        .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "store upkeep failed"),
            Err(error) => tracing::error!(%error, "store upkeep could not run"),
        }
    }
}
