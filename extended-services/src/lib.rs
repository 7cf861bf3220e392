//! The Service layer: third-party *extended services*, WebAssembly
//! components run next to the things by wasmtime.
//!
//! A service is a component of the `fogbank:service` world (`wit/`) and a
//! manifest ([`manifest`]). [`Services`] installs, persists, starts, stops,
//! upgrades and removes them; each runs on a thread of its own
//! ([`service`]) with its own memory limit and CPU deadline, and the host
//! ([`host`]) grants it exactly what its manifest names. Its outputs are
//! virtual thing services, `{gateway}.service.{name}.{output}`, so the rest
//! of the platform (REST, CoAP, the local cloud, other services) sees them
//! like any other thing service.
//!
//! This crate sees only thing services, through the TaaS [`Hub`]: never an
//! adapter, a device or a protocol.

mod engine;
#[cfg(test)]
mod fixtures;
mod host;
pub mod manifest;
mod service;
mod shared;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fogbank_taas::{Hub, Kind, StoreError, ThingId, ThingService, Timestamp};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use engine::{EPOCH_TICK, INSTANCE_SLOTS, digest};
pub use host::{HOST_CALL_TIMEOUT, Response};
pub use manifest::{Grants, Limits, Manifest, ManifestError, Output, Selector};
pub use service::{CallError, MAX_RESTARTS};
pub use shared::{LogLevel, LogLine, State};

use engine::Runtime;
use host::{HostState, ServicePre};
use service::{Request, Worker};
use shared::Shared;

/// The adapter segment of every output's id.
pub const OUTPUT_ADAPTER: &str = "service";
/// The largest component accepted.
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The manifest or component is refused; nothing was installed.
    #[error("{0}")]
    Invalid(String),
    #[error("invalid manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("no service {0}")]
    Unknown(String),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("the WebAssembly engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start a thread for service {name}: {source}")]
    Thread {
        name: String,
        source: std::io::Error,
    },
}

impl ServiceError {
    fn engine(error: wasmtime::Error) -> Self {
        ServiceError::Engine(format!("{error:#}"))
    }
}

/// What is stored per service beside its component.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    manifest: String,
    digest: String,
    /// Whether it should run; `stop` clears it, `start` sets it.
    enabled: bool,
    /// Microseconds since the epoch.
    installed_at: u64,
}

/// A service as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub state: State,
    /// Why it is restarting or failed.
    pub reason: Option<String>,
    /// Whether it runs when the gateway starts.
    pub enabled: bool,
    pub digest: String,
    /// Microseconds since the epoch.
    pub installed_at: u64,
    pub outputs: Vec<String>,
    pub subscriptions: Vec<Selector>,
    pub grants: Grants,
    pub timer_ms: Option<u64>,
    pub limits: Limits,
    pub restarts: u32,
    /// Guest calls made (init, readings, ticks, requests).
    pub calls: u64,
    /// Calls that failed, and failed starts.
    pub errors: u64,
    pub last_error: Option<String>,
    /// Time spent running guest code.
    pub cpu_time_ms: f64,
    /// Linear memory of the running instance.
    pub memory_bytes: u64,
    pub published: u64,
    /// Readings not handed to the service because its queue was full.
    pub dropped: u64,
}

/// What [`Services::probe`] measured, each per operation.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// A fresh instance from the pool, `init` included.
    pub instantiate: Duration,
    /// One `on-reading` call, the reading lowered into the guest.
    pub dispatch: Duration,
}

/// The outcome of [`Services::publish`].
#[derive(Debug, Clone)]
pub struct Published {
    /// Newly installed, rather than an upgrade.
    pub created: bool,
    pub info: ServiceInfo,
}

struct Entry {
    shared: Arc<Shared>,
    pre: ServicePre<HostState>,
    worker: Option<Worker>,
    enabled: bool,
    installed_at: u64,
}

/// Every extended service of a gateway.
pub struct Services {
    hub: Arc<Hub>,
    /// Made when the first service needs it: a gateway without services
    /// pays for no engine, pool or epoch thread.
    engine: std::sync::OnceLock<Runtime>,
    cache_dir: Option<std::path::PathBuf>,
    entries: Mutex<HashMap<String, Entry>>,
    /// Serialises changes (publish, start, stop, remove), which may wait for
    /// a service's thread; calls and reads do not wait for them.
    changes: Mutex<()>,
    tokio: Option<tokio::runtime::Runtime>,
}

impl Services {
    /// Opens the services stored in the hub's store and starts those that
    /// were running. `cache_dir` keeps compiled components between runs.
    pub fn open(hub: Arc<Hub>, cache_dir: Option<&Path>) -> Result<Self, ServiceError> {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fogbank-services")
            .enable_time()
            .build()
            .map_err(|e| ServiceError::Engine(format!("cannot start a runtime: {e}")))?;
        let services = Services {
            engine: std::sync::OnceLock::new(),
            cache_dir: cache_dir.map(Path::to_owned),
            hub,
            entries: Mutex::new(HashMap::new()),
            changes: Mutex::new(()),
            tokio: Some(tokio),
        };
        for stored in services.hub.store().load_services()? {
            if let Err(e) = services.restore(&stored.record, &stored.component) {
                tracing::error!(service = %stored.name, "cannot restore the service: {e}");
            }
        }
        Ok(services)
    }

    /// Compiles (or loads from the cache) and links a component.
    fn prepare(&self, component: &[u8]) -> Result<ServicePre<HostState>, ServiceError> {
        let engine = match self.engine.get() {
            Some(engine) => engine,
            None => {
                // Two first callers at once make two; one is kept.
                let _ = self.engine.set(Runtime::new(self.cache_dir.as_deref())?);
                self.engine
                    .get()
                    .ok_or_else(|| ServiceError::Engine("the engine was not kept".into()))?
            }
        };
        engine.prepare(&engine.compile(component)?)
    }

    fn tokio(&self) -> tokio::runtime::Handle {
        match &self.tokio {
            Some(runtime) => runtime.handle().clone(),
            None => unreachable!("the runtime lives until drop"),
        }
    }

    fn restore(&self, record: &[u8], component: &[u8]) -> Result<(), ServiceError> {
        let record: Record = serde_json::from_slice(record)
            .map_err(|e| ServiceError::Invalid(format!("corrupt service record: {e}")))?;
        let manifest = Manifest::parse(&record.manifest)?;
        let pre = self.prepare(component)?;
        let name = manifest.name.clone();
        let shared = Arc::new(Shared::new(manifest, record.digest));
        let mut entry = Entry {
            shared,
            pre,
            worker: None,
            enabled: record.enabled,
            installed_at: record.installed_at,
        };
        self.announce_outputs(&entry.shared.manifest, None, entry.enabled)?;
        if entry.enabled {
            entry.worker = Some(self.start_worker(&entry)?);
        }
        self.entries.lock().insert(name, entry);
        Ok(())
    }

    /// Installs a service, or upgrades the one of the same name in place:
    /// the new version is compiled and checked against the world first, and
    /// replaces the old only if it fits; its key-value state is kept.
    pub fn publish(&self, manifest: &str, component: &[u8]) -> Result<Published, ServiceError> {
        let manifest = Manifest::parse(manifest)?;
        if component.len() > MAX_COMPONENT_BYTES {
            return Err(ServiceError::Invalid(format!(
                "the component is larger than {} MiB",
                MAX_COMPONENT_BYTES >> 20
            )));
        }
        let pre = self.prepare(component)?;
        let _change = self.changes.lock();
        let name = manifest.name.clone();
        let mut previous = self.entries.lock().remove(&name);
        if let Some(worker) = previous.as_mut().and_then(|old| old.worker.take()) {
            worker.stop();
        }
        match self.install(manifest, pre, component, previous.as_ref()) {
            Ok(entry) => {
                let info = self.info_of(&name, &entry);
                self.entries.lock().insert(name, entry);
                Ok(Published {
                    created: previous.is_none(),
                    info,
                })
            }
            Err(e) => {
                // The version that ran goes on running.
                if let Some(mut old) = previous {
                    if old.enabled {
                        old.worker = self.start_worker(&old).ok();
                    }
                    self.entries.lock().insert(name, old);
                }
                Err(e)
            }
        }
    }

    /// Stores a new or upgraded service, announces its outputs and starts
    /// it (if the version it replaces was not stopped).
    fn install(
        &self,
        manifest: Manifest,
        pre: ServicePre<HostState>,
        component: &[u8],
        previous: Option<&Entry>,
    ) -> Result<Entry, ServiceError> {
        let enabled = previous.is_none_or(|old| old.enabled);
        let installed_at = Timestamp::now().0;
        let digest = engine::digest(component);
        let record = Record {
            manifest: manifest.to_toml(),
            digest: digest.clone(),
            enabled,
            installed_at,
        };
        self.hub.store().put_service(
            &manifest.name,
            &serde_json::to_vec(&record).unwrap_or_default(),
            Some(component),
        )?;
        self.announce_outputs(&manifest, previous.map(|old| &old.shared.manifest), enabled)?;
        let shared = Arc::new(Shared::new(manifest, digest));
        if let Some(old) = previous {
            shared.inherit_logs(&old.shared);
        }
        shared.log(
            LogLevel::Info,
            format!(
                "{} version {}",
                if previous.is_none() {
                    "installed"
                } else {
                    "upgraded to"
                },
                shared.manifest.version
            ),
        );
        let mut entry = Entry {
            shared,
            pre,
            worker: None,
            enabled,
            installed_at,
        };
        if enabled {
            entry.worker = Some(self.start_worker(&entry)?);
        }
        Ok(entry)
    }

    fn start_worker(&self, entry: &Entry) -> Result<Worker, ServiceError> {
        Worker::start(
            entry.shared.clone(),
            entry.pre.clone(),
            self.hub.clone(),
            self.tokio(),
        )
        .map_err(|source| ServiceError::Thread {
            name: entry.shared.manifest.name.clone(),
            source,
        })
    }

    /// Announces the outputs of `manifest` and withdraws those only the
    /// version it replaces had.
    fn announce_outputs(
        &self,
        manifest: &Manifest,
        replaced: Option<&Manifest>,
        available: bool,
    ) -> Result<(), ServiceError> {
        for output in &manifest.outputs {
            let id = output_id(&self.hub, &manifest.name, &output.name)?;
            let mut thing = ThingService::new(
                id,
                Kind::Sensor,
                &output.semantic_type,
                output.unit.as_deref(),
            )
            .at(&output.location)
            .with_device_address(&format!("service:{}", manifest.name));
            thing.data_type = output.data_type();
            thing.available = available;
            thing.metadata.insert(
                "service-version".into(),
                serde_json::Value::String(manifest.version.clone()),
            );
            self.hub.announce(thing)?;
        }
        for old in replaced.iter().flat_map(|m| &m.outputs) {
            if manifest.output(&old.name).is_none() {
                self.hub
                    .withdraw(&output_id(&self.hub, &manifest.name, &old.name)?)?;
            }
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<ServiceInfo> {
        let entries = self.entries.lock();
        let mut all: Vec<ServiceInfo> = entries
            .iter()
            .map(|(name, entry)| self.info_of(name, entry))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn info(&self, name: &str) -> Result<ServiceInfo, ServiceError> {
        let entries = self.entries.lock();
        let entry = entries
            .get(name)
            .ok_or_else(|| ServiceError::Unknown(name.to_owned()))?;
        Ok(self.info_of(name, entry))
    }

    pub fn logs(&self, name: &str) -> Result<Vec<LogLine>, ServiceError> {
        let entries = self.entries.lock();
        let entry = entries
            .get(name)
            .ok_or_else(|| ServiceError::Unknown(name.to_owned()))?;
        Ok(entry.shared.logs())
    }

    fn info_of(&self, name: &str, entry: &Entry) -> ServiceInfo {
        let shared = &entry.shared;
        let manifest = &shared.manifest;
        let status = shared.status();
        let last_error = shared.last_error();
        ServiceInfo {
            name: name.to_owned(),
            version: manifest.version.clone(),
            description: manifest.description.clone(),
            state: status.state,
            reason: status.reason,
            enabled: entry.enabled,
            digest: shared.digest.clone(),
            installed_at: entry.installed_at,
            outputs: manifest
                .outputs
                .iter()
                .filter_map(|o| output_id(&self.hub, name, &o.name).ok())
                .map(|id| id.as_str().to_owned())
                .collect(),
            subscriptions: manifest.subscriptions.clone(),
            grants: manifest.grants.clone(),
            timer_ms: manifest.timer.map(|t| t.as_millis() as u64),
            limits: manifest.limits,
            restarts: status.restarts,
            calls: shared.calls.load(Ordering::Relaxed),
            errors: shared.errors.load(Ordering::Relaxed),
            last_error,
            cpu_time_ms: shared.cpu_nanos.load(Ordering::Relaxed) as f64 / 1e6,
            memory_bytes: shared.memory_bytes.load(Ordering::Relaxed),
            published: shared.published.load(Ordering::Relaxed),
            dropped: shared.dropped.load(Ordering::Relaxed),
        }
    }

    /// Starts a stopped or failed service (and runs it at the next gateway
    /// start too).
    pub fn start(&self, name: &str) -> Result<ServiceInfo, ServiceError> {
        let _change = self.changes.lock();
        {
            // Starting what runs (or is restarting) changes nothing.
            let entries = self.entries.lock();
            let entry = entries
                .get(name)
                .ok_or_else(|| ServiceError::Unknown(name.to_owned()))?;
            let state = entry.shared.status().state;
            if entry.worker.is_some() && !matches!(state, State::Failed | State::Stopped) {
                return Ok(self.info_of(name, entry));
            }
        }
        let old_worker = self.set_enabled(name, true)?;
        if let Some(worker) = old_worker {
            worker.stop();
        }
        let mut entries = self.entries.lock();
        let entry = entries
            .get_mut(name)
            .ok_or_else(|| ServiceError::Unknown(name.to_owned()))?;
        entry.shared.status.lock().restarts = 0;
        entry.worker = Some(self.start_worker(entry)?);
        set_outputs_available(&self.hub, &entry.shared.manifest, true);
        Ok(self.info_of(name, entry))
    }

    /// Stops a service until it is started again.
    pub fn stop(&self, name: &str) -> Result<ServiceInfo, ServiceError> {
        let _change = self.changes.lock();
        if let Some(worker) = self.set_enabled(name, false)? {
            worker.stop();
        }
        let entries = self.entries.lock();
        let entry = entries
            .get(name)
            .ok_or_else(|| ServiceError::Unknown(name.to_owned()))?;
        set_outputs_available(&self.hub, &entry.shared.manifest, false);
        entry.shared.log(LogLevel::Info, "stopped".into());
        Ok(self.info_of(name, entry))
    }

    /// Records whether the service should run; hands back its worker.
    fn set_enabled(&self, name: &str, enabled: bool) -> Result<Option<Worker>, ServiceError> {
        let mut entries = self.entries.lock();
        let entry = entries
            .get_mut(name)
            .ok_or_else(|| ServiceError::Unknown(name.to_owned()))?;
        if entry.enabled != enabled {
            let record = Record {
                manifest: entry.shared.manifest.to_toml(),
                digest: entry.shared.digest.clone(),
                enabled,
                installed_at: entry.installed_at,
            };
            self.hub.store().put_service(
                name,
                &serde_json::to_vec(&record).unwrap_or_default(),
                None,
            )?;
            entry.enabled = enabled;
        }
        Ok(entry.worker.take())
    }

    /// Stops a service and removes it, its outputs and its state.
    pub fn remove(&self, name: &str) -> Result<(), ServiceError> {
        let _change = self.changes.lock();
        let mut entry = self
            .entries
            .lock()
            .remove(name)
            .ok_or_else(|| ServiceError::Unknown(name.to_owned()))?;
        if let Some(worker) = entry.worker.take() {
            worker.stop();
        }
        for output in &entry.shared.manifest.outputs {
            self.hub
                .withdraw(&output_id(&self.hub, name, &output.name)?)?;
        }
        self.hub.store().delete_service(name)?;
        tracing::info!(service = %name, "removed");
        Ok(())
    }

    /// Hands a request to the service's `on-request`; answers within its
    /// CPU deadline plus what its host calls may wait.
    pub async fn call(
        &self,
        name: &str,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Response, ServiceError> {
        let (reply, answer) = oneshot::channel();
        let deadline = {
            let entries = self.entries.lock();
            let entry = entries
                .get(name)
                .ok_or_else(|| ServiceError::Unknown(name.to_owned()))?;
            let Some(worker) = &entry.worker else {
                return Err(CallError::NotRunning(name.to_owned()).into());
            };
            worker.request(Request {
                method: method.to_owned(),
                path: path.to_owned(),
                body,
                reply,
            });
            entry.shared.manifest.limits.cpu_deadline()
        };
        // The request's own call may take its deadline and a host call's
        // timeout; readings queued before it get a fixed margin, and a
        // service further behind than that answers "busy".
        let wait = deadline + HOST_CALL_TIMEOUT + Duration::from_secs(5);
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(outcome)) => Ok(outcome?),
            Ok(Err(_)) => Err(CallError::NotRunning(name.to_owned()).into()),
            Err(_) => Err(CallError::Busy(name.to_owned()).into()),
        }
    }

    /// Measures the host's own costs on `component` with `manifest`,
    /// outside any service's thread: `instantiations` fresh instances from
    /// the pool, then `readings` calls of `on-reading` on one instance.
    /// For the benchmarks; installs nothing.
    #[doc(hidden)]
    pub fn probe(
        &self,
        manifest: &str,
        component: &[u8],
        instantiations: u32,
        readings: &[fogbank_taas::ThingReading],
    ) -> Result<Probe, ServiceError> {
        let manifest = Manifest::parse(manifest)?;
        let pre = self.prepare(component)?;
        let shared = Arc::new(Shared::new(manifest, engine::digest(component)));
        let runner = service::Runner::new(shared, pre, self.hub.clone(), self.tokio());
        let started = std::time::Instant::now();
        for _ in 0..instantiations {
            runner.instantiate().map_err(ServiceError::Invalid)?;
        }
        let instantiate = started.elapsed() / instantiations.max(1);
        let mut instance = runner.instantiate().map_err(ServiceError::Invalid)?;
        let started = std::time::Instant::now();
        for reading in readings {
            runner
                .deliver(&mut instance, reading)
                .map_err(ServiceError::Invalid)?;
        }
        let dispatch = started.elapsed() / u32::try_from(readings.len().max(1)).unwrap_or(u32::MAX);
        Ok(Probe {
            instantiate,
            dispatch,
        })
    }

    /// Stops every service's thread (they start again with the gateway).
    pub fn shutdown(&self) {
        let _change = self.changes.lock();
        let workers: Vec<Worker> = self
            .entries
            .lock()
            .values_mut()
            .filter_map(|e| e.worker.take())
            .collect();
        for worker in workers {
            worker.stop();
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(runtime) = self.tokio.take() {
            runtime.shutdown_background();
        }
    }
}

fn output_id(hub: &Hub, service: &str, output: &str) -> Result<ThingId, ServiceError> {
    ThingId::new(hub.gateway(), OUTPUT_ADAPTER, service, output)
        .map_err(|e| ServiceError::Invalid(format!("output {output:?}: {e}")))
}

/// Marks a service's outputs available or not (a stopped service's last
/// readings stay readable).
pub(crate) fn set_outputs_available(hub: &Hub, manifest: &Manifest, available: bool) {
    for output in &manifest.outputs {
        if let Ok(id) = output_id(hub, &manifest.name, &output.name)
            && let Err(e) = hub.set_available(&id, available)
        {
            tracing::warn!(%id, "cannot record the output's availability: {e}");
        }
    }
}
