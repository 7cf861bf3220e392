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

pub mod checkpoint;
mod engine;
#[cfg(test)]
mod fixtures;
mod host;
mod hosting;
pub mod manifest;
pub mod placement;
mod rate;
pub mod rehearsal;
mod replica;
mod service;
mod shared;
pub mod signing;
mod stdio;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fogbank_taas::replicated::{Blob, Stamp};
use fogbank_taas::{Hub, StoreError, ThingId, Timestamp};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use engine::{EPOCH_TICK, INSTANCE_SLOTS, digest};
pub use host::{HOST_CALL_TIMEOUT, Response};
pub use manifest::{Grants, Limits, Manifest, ManifestError, Output, Pin, Selector};
pub use placement::Decision;
pub use replica::CHECKPOINT_EVERY;

/// Signs a service for [`Services::publish_signed`]: its manifest as the
/// gateway keeps it (parsed and written again, so that layout and comments
/// do not matter) and its component.
pub fn sign(
    key: &PublisherKey,
    manifest: &str,
    component: &[u8],
) -> Result<Signature, ServiceError> {
    Ok(key.sign(&Manifest::parse(manifest)?.to_toml(), component))
}

pub use service::{CallError, MAX_RESTARTS};
pub use shared::{LogLevel, LogLine, State};
pub use signing::{PublisherKey, Signature, SignatureError, TrustedKeys};

use engine::Runtime;
use host::{HostState, ServicePre};
use replica::{RunRecord, ServiceRecord};
use service::{Request, Worker};
use shared::Shared;

/// The adapter segment of every output's id.
pub const OUTPUT_ADAPTER: &str = fogbank_taas::SERVICES_ADAPTER;
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
    /// Refused by the gateway's trusted publisher keys.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("the WebAssembly engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start a thread for service {name}: {source}")]
    Thread {
        name: String,
        source: std::io::Error,
    },
    /// It runs on another gateway of the local cloud (or nowhere yet).
    #[error("service {name} runs {}: {reason}", .gateway.as_ref().map_or_else(|| "nowhere for now".to_owned(), |g| format!("at gateway {g}")))]
    Elsewhere {
        name: String,
        gateway: Option<String>,
        reason: String,
    },
}

impl ServiceError {
    fn engine(error: wasmtime::Error) -> Self {
        ServiceError::Engine(format!("{error:#}"))
    }
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
    /// Whether it should run (on whichever gateway it is placed).
    pub enabled: bool,
    pub digest: String,
    /// Microseconds since the epoch.
    pub installed_at: u64,
    /// The gateway it was first published at: its outputs' ids start with it.
    pub home: String,
    /// The publisher key that signed it (`ed25519:<hex>`), if it is signed.
    pub signed_by: Option<String>,
    /// The gateway of the local cloud that runs it (or is to), if any.
    pub gateway: Option<String>,
    /// Why it runs there, or why nowhere.
    pub placement: String,
    /// When its key-value store was last checkpointed to the local cloud
    /// (µs since the epoch): a gateway that takes it over after its runner
    /// died starts from there.
    pub checkpointed_at: Option<u64>,
    pub outputs: Vec<String>,
    pub subscriptions: Vec<Selector>,
    pub grants: Grants,
    pub timer_ms: Option<u64>,
    pub limits: Limits,
    /// The counters below are those of the gateway that runs it, and zero
    /// as seen from the others.
    pub restarts: u32,
    /// Guest calls made (init, readings, ticks, requests).
    pub calls: u64,
    /// Calls that failed, and failed starts.
    pub errors: u64,
    pub last_error: Option<String>,
    /// Time spent running guest code, its host calls not counted (a call
    /// that lasts is clocked on its thread's CPU time, see the CPU deadline).
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

/// A publish under way, as [`Services::publications`] shows it: a
/// CPython-sized component compiles for seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Publication {
    pub name: String,
    /// `checking` (manifest, size, signature, memory), `compiling`
    /// (compiled to native code and linked against the world), `starting`
    /// (recorded in the local cloud and placed).
    pub phase: &'static str,
    pub elapsed_ms: u64,
    pub component_bytes: usize,
}

/// Removes a publish from those under way however it ends.
struct InFlight<'a> {
    services: &'a Services,
    name: String,
}

impl InFlight<'_> {
    fn phase(&self, phase: &'static str) {
        if let Some(entry) = self.services.in_flight.lock().get_mut(&self.name) {
            entry.1 = phase;
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.services.in_flight.lock().remove(&self.name);
    }
}

/// The outcome of [`Services::publish`].
#[derive(Debug, Clone)]
pub struct Published {
    /// Newly installed, rather than an upgrade.
    pub created: bool,
    pub info: ServiceInfo,
}

/// A service this gateway runs (or holds stopped).
struct Entry {
    shared: Arc<Shared>,
    pre: ServicePre<HostState>,
    worker: Option<Worker>,
    enabled: bool,
    installed_at: u64,
    /// The version of its `service/` record this entry follows.
    stamp: Stamp,
    /// `store_writes` at the last checkpoint, and when that was.
    checkpointed: u64,
    checkpoint_at: Instant,
}

/// Every extended service of the local cloud, as one gateway runs them.
pub struct Services {
    hub: Arc<Hub>,
    /// Made when the first service needs it: a gateway without services
    /// pays for no engine, pool or epoch thread.
    engine: std::sync::OnceLock<Runtime>,
    cache_dir: Option<std::path::PathBuf>,
    /// The services placed here.
    entries: Mutex<HashMap<String, Entry>>,
    /// Every known component, compiled and linked, by digest: a service
    /// placed here after its gateway died starts without compiling.
    prepared: Mutex<HashMap<String, ServicePre<HostState>>>,
    /// The last placement of every service.
    decisions: Mutex<HashMap<String, Decision>>,
    /// Serialises changes (publish, start, stop, remove, placement), which
    /// may wait for a service's thread; calls and reads do not wait.
    changes: Mutex<()>,
    /// In a local cloud, nothing is placed before this: a gateway that
    /// restarts first learns where its services run now.
    settle_until: Option<Instant>,
    /// What the last placement looked at.
    seen: Mutex<Option<hosting::Seen>>,
    /// Removed services whose store was deleted in this run.
    retired: Mutex<std::collections::HashSet<String>>,
    /// Publishes under way, by service name: when each began, its phase
    /// and its component's size.
    in_flight: Mutex<HashMap<String, (Instant, &'static str, usize)>>,
    /// The publishers whose services this gateway takes (none: all).
    trusted: parking_lot::RwLock<TrustedKeys>,
    /// Records whose signature passed `trusted`, so the placement's ticks
    /// do not verify them again.
    verified: Mutex<std::collections::HashSet<String>>,
    tokio: Option<tokio::runtime::Runtime>,
}

/// How long a gateway of a local cloud waits after it starts before it
/// places services: long enough to hear every member's beacon and pull the
/// records (beacons come every 500 ms).
pub const SETTLE: Duration = Duration::from_secs(3);
/// How often the placement is looked at again.
pub const TEND_EVERY: Duration = Duration::from_millis(200);

impl Services {
    /// Opens the services the local cloud knows and runs those placed here
    /// that should run; a thread keeps the placement current from then on.
    /// `cache_dir` keeps compiled components between runs.
    pub fn open(hub: Arc<Hub>, cache_dir: Option<&Path>) -> Result<Arc<Self>, ServiceError> {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fogbank-services")
            .enable_time()
            .build()
            .map_err(|e| ServiceError::Engine(format!("cannot start a runtime: {e}")))?;
        let settle_until = hub.has_remote().then(|| Instant::now() + SETTLE);
        let services = Arc::new(Services {
            engine: std::sync::OnceLock::new(),
            cache_dir: cache_dir.map(Path::to_owned),
            hub,
            entries: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
            decisions: Mutex::new(HashMap::new()),
            changes: Mutex::new(()),
            settle_until,
            seen: Mutex::new(None),
            retired: Mutex::new(std::collections::HashSet::new()),
            in_flight: Mutex::new(HashMap::new()),
            trusted: parking_lot::RwLock::new(TrustedKeys::default()),
            verified: Mutex::new(std::collections::HashSet::new()),
            tokio: Some(tokio),
        });
        services.adopt_stored()?;
        services.place();
        let weak = Arc::downgrade(&services);
        std::thread::Builder::new()
            .name("service-placement".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TEND_EVERY);
                    let Some(services) = weak.upgrade() else {
                        break;
                    };
                    services.tend();
                }
            })
            .map_err(|source| ServiceError::Thread {
                name: "service-placement".into(),
                source,
            })?;
        Ok(services)
    }

    /// Services installed before the local cloud knew services (kept in the
    /// store's `services` column family) become replicated records, published
    /// here; the old copy goes, so that later starts read nothing twice.
    fn adopt_stored(&self) -> Result<(), ServiceError> {
        #[derive(Deserialize)]
        struct Stored {
            manifest: String,
            digest: String,
            enabled: bool,
            installed_at: u64,
        }
        for stored in self.hub.store().load_services()? {
            let key = format!("{}{}", replica::SERVICE, stored.name);
            if self.hub.records().get(&key).is_none() {
                let Ok(old) = serde_json::from_slice::<Stored>(&stored.record) else {
                    tracing::error!(service = %stored.name, "skipping a corrupt stored service");
                    continue;
                };
                let record = ServiceRecord {
                    manifest: old.manifest,
                    digest: old.digest,
                    enabled: old.enabled,
                    installed_at: old.installed_at,
                    home: self.hub.gateway().to_owned(),
                    signature: None,
                };
                self.write_record(&stored.name, &record, Blob::New(&stored.component))?;
            }
            self.hub.store().forget_service_record(&stored.name)?;
        }
        Ok(())
    }

    /// The component compiled and linked: the one already prepared for
    /// the same bytes (by digest) if there is one, so that services of one
    /// component share its code in memory; else compiled (or loaded from
    /// the cache) now. `digest` is the component's, which the caller has
    /// (hashing a CPython-sized component takes tens of milliseconds).
    fn prepare(
        &self,
        digest: &str,
        component: &[u8],
    ) -> Result<ServicePre<HostState>, ServiceError> {
        if let Some(pre) = self.prepared.lock().get(digest) {
            return Ok(pre.clone());
        }
        let pre = self.compile_and_link(component)?;
        self.prepared.lock().insert(digest.to_owned(), pre.clone());
        Ok(pre)
    }

    fn compile_and_link(&self, component: &[u8]) -> Result<ServicePre<HostState>, ServiceError> {
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

    /// Takes services only from these publishers from now on (none: from
    /// anyone). Services placed here that no longer pass stop being run.
    pub fn set_trusted_keys(&self, keys: TrustedKeys) {
        // Cleared under the write lock: a check of the old keys cannot
        // leave a verdict behind.
        let mut trusted = self.trusted.write();
        *trusted = keys;
        self.verified.lock().clear();
        // The placement looks again only when what it saw changes: the keys
        // are part of it now. (A reload that came after the last catalog
        // change left an untrusted service running.)
        *self.seen.lock() = None;
    }

    /// Installs an unsigned service: [`Services::publish_signed`] without a
    /// signature.
    pub fn publish(&self, manifest: &str, component: &[u8]) -> Result<Published, ServiceError> {
        self.publish_signed(manifest, component, None)
    }

    /// Installs a service, or upgrades the one of the same name in place:
    /// the new version is compiled and checked against the world first, and
    /// replaces the old only if it fits; its key-value state is kept. The
    /// whole local cloud learns of it; the gateway it is placed on runs it.
    /// With trusted keys, only a component and manifest signed by one of
    /// them (see [`sign`]) is taken; the signature travels in its record.
    pub fn publish_signed(
        &self,
        manifest: &str,
        component: &[u8],
        signature: Option<&Signature>,
    ) -> Result<Published, ServiceError> {
        let manifest = Manifest::parse(manifest)?;
        self.in_flight.lock().insert(
            manifest.name.clone(),
            (Instant::now(), "checking", component.len()),
        );
        let in_flight = InFlight {
            services: self,
            name: manifest.name.clone(),
        };
        if component.len() > MAX_COMPONENT_BYTES {
            return Err(ServiceError::Invalid(format!(
                "the component is larger than {} MiB",
                MAX_COMPONENT_BYTES >> 20
            )));
        }
        if let Some(initial) = engine::initial_memory_bytes(component) {
            let limit = manifest.limits.memory_bytes() as u64;
            if initial > limit {
                return Err(ServiceError::Invalid(format!(
                    "the component's memory starts at {} MiB, more than limits.memory-mib = {} \
                     allows: set memory-mib to at least {}",
                    initial.div_ceil(1 << 20),
                    manifest.limits.memory_mib,
                    initial.div_ceil(1 << 20)
                )));
            }
        }
        let digest = engine::digest(component);
        // Before compiling: an untrusted component costs nothing.
        self.trusted
            .read()
            .check(&digest, &manifest.to_toml(), signature)?;
        in_flight.phase("compiling");
        self.prepare(&digest, component)?;
        in_flight.phase("starting");
        let name = manifest.name.clone();
        let previous = {
            let _change = self.changes.lock();
            let previous = self.record(&name).map(|(record, _)| record);
            let record = ServiceRecord {
                manifest: manifest.to_toml(),
                digest,
                enabled: previous.as_ref().is_none_or(|old| old.enabled),
                installed_at: Timestamp::now().0,
                home: previous
                    .as_ref()
                    .map_or_else(|| self.hub.gateway().to_owned(), |old| old.home.clone()),
                signature: signature.cloned(),
            };
            self.write_record(&name, &record, Blob::New(component))?;
            previous
        };
        self.place();
        Ok(Published {
            created: previous.is_none(),
            info: self.info(&name)?,
        })
    }

    /// The service's record, if it is installed (not removed).
    fn record(&self, name: &str) -> Option<(ServiceRecord, Stamp)> {
        let record = self
            .hub
            .records()
            .get(&format!("{}{name}", replica::SERVICE))?;
        let parsed = serde_json::from_str(record.value.as_deref()?).ok()?;
        Some((parsed, record.stamp))
    }

    fn write_record(
        &self,
        name: &str,
        record: &ServiceRecord,
        component: Blob<'_>,
    ) -> Result<(), ServiceError> {
        // Strings, a bool and a number: it serialises.
        let value = serde_json::to_string(record).unwrap_or_default();
        self.hub.put_record(
            &format!("{}{name}", replica::SERVICE),
            Some(value),
            component,
        )?;
        Ok(())
    }

    /// Every service of the local cloud.
    pub fn list(&self) -> Vec<ServiceInfo> {
        let mut all: Vec<ServiceInfo> = self
            .hub
            .records()
            .with_prefix(replica::SERVICE)
            .into_iter()
            .filter_map(|r| {
                let name = r.key.strip_prefix(replica::SERVICE)?;
                self.info(name).ok()
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn info(&self, name: &str) -> Result<ServiceInfo, ServiceError> {
        let decision = self.decisions.lock().get(name).cloned();
        let placement = decision
            .as_ref()
            .map_or_else(|| "not placed yet".to_owned(), |d| d.reason.clone());
        if let Some(entry) = self.entries.lock().get(name) {
            let mut info = self.info_of(name, entry);
            info.placement = placement;
            return Ok(info);
        }
        let (record, _) = self
            .record(name)
            .ok_or_else(|| ServiceError::Unknown(name.to_owned()))?;
        let manifest = Manifest::parse(&record.manifest)?;
        let runner = self.runner(name);
        let gateway = runner.or_else(|| decision.and_then(|d| d.gateway));
        let shared = Shared::new(manifest, record.digest, record.home);
        let mut info = self.describe(name, &shared, record.enabled, record.installed_at);
        info.state = if gateway.is_some() {
            State::Elsewhere
        } else {
            State::Waiting
        };
        info.gateway = gateway;
        info.placement = placement;
        Ok(info)
    }

    /// The gateway that holds the service now, by its run record.
    fn runner(&self, name: &str) -> Option<String> {
        self.run_record(name)
            .and_then(|(run, _)| run.runner().map(str::to_owned))
    }

    fn run_record(&self, name: &str) -> Option<(RunRecord, fogbank_taas::replicated::Record)> {
        let record = self.hub.records().get(&format!("{}{name}", replica::RUN))?;
        let run = serde_json::from_str(record.value.as_deref()?).ok()?;
        Some((run, record))
    }

    /// Where a service that does not run here runs, as an error.
    fn elsewhere(&self, name: &str) -> ServiceError {
        match self.info(name) {
            Ok(info) => ServiceError::Elsewhere {
                name: name.to_owned(),
                gateway: info.gateway,
                reason: info.placement,
            },
            Err(error) => error,
        }
    }

    pub fn logs(&self, name: &str) -> Result<Vec<LogLine>, ServiceError> {
        if let Some(entry) = self.entries.lock().get(name) {
            return Ok(entry.shared.logs());
        }
        Err(self.elsewhere(name))
    }

    fn info_of(&self, name: &str, entry: &Entry) -> ServiceInfo {
        let mut info = self.describe(name, &entry.shared, entry.enabled, entry.installed_at);
        info.gateway = Some(self.hub.gateway().to_owned());
        info
    }

    fn describe(
        &self,
        name: &str,
        shared: &Shared,
        enabled: bool,
        installed_at: u64,
    ) -> ServiceInfo {
        let manifest = &shared.manifest;
        let status = shared.status();
        let last_error = shared.last_error();
        ServiceInfo {
            name: name.to_owned(),
            version: manifest.version.clone(),
            description: manifest.description.clone(),
            state: status.state,
            reason: status.reason,
            enabled,
            digest: shared.digest.clone(),
            installed_at,
            home: shared.home.clone(),
            signed_by: self
                .record(name)
                .and_then(|(record, _)| record.signature.map(|s| s.key)),
            gateway: None,
            placement: String::new(),
            checkpointed_at: self.run_record(name).map(|(_, record)| record.stamp.micros),
            outputs: manifest
                .outputs
                .iter()
                .filter_map(|o| output_id(&shared.home, name, &o.name).ok())
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

    /// Starts a stopped or failed service, wherever it is placed (and runs
    /// it after restarts too).
    pub fn start(&self, name: &str) -> Result<ServiceInfo, ServiceError> {
        {
            let _change = self.changes.lock();
            if let Some(entry) = self.entries.lock().get(name) {
                // Starting what runs (or is restarting) changes nothing.
                let state = entry.shared.status().state;
                if entry.worker.is_some() && !matches!(state, State::Failed | State::Stopped) {
                    return Ok(self.info_of(name, entry));
                }
            }
            self.set_enabled(name, true)?;
        }
        self.place();
        self.info(name)
    }

    /// Stops a service until it is started again.
    pub fn stop(&self, name: &str) -> Result<ServiceInfo, ServiceError> {
        {
            let _change = self.changes.lock();
            self.set_enabled(name, false)?;
        }
        self.place();
        self.info(name)
    }

    /// Writes a new version of the record with `enabled`; a failed service
    /// started again gets a new version too, so that it is restarted.
    fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), ServiceError> {
        let (mut record, _) = self
            .record(name)
            .ok_or_else(|| ServiceError::Unknown(name.to_owned()))?;
        record.enabled = enabled;
        self.write_record(name, &record, Blob::Keep)
    }

    /// Stops a service and removes it, its outputs and its state, from the
    /// whole local cloud.
    pub fn remove(&self, name: &str) -> Result<(), ServiceError> {
        {
            let _change = self.changes.lock();
            self.record(name)
                .ok_or_else(|| ServiceError::Unknown(name.to_owned()))?;
            self.hub
                .put_record(&format!("{}{name}", replica::SERVICE), None, Blob::None)?;
            self.hub
                .put_record(&format!("{}{name}", replica::RUN), None, Blob::None)?;
        }
        self.place();
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
            let Some(entry) = entries.get(name) else {
                drop(entries);
                return Err(self.elsewhere(name));
            };
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
        let digest = engine::digest(component);
        let pre = self.prepare(&digest, component)?;
        let shared = Arc::new(Shared::new(manifest, digest, self.hub.gateway().to_owned()));
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

    /// The publishes under way on this gateway.
    pub fn publications(&self) -> Vec<Publication> {
        let mut all: Vec<Publication> = self
            .in_flight
            .lock()
            .iter()
            .map(|(name, (started, phase, bytes))| Publication {
                name: name.clone(),
                phase,
                elapsed_ms: started.elapsed().as_millis() as u64,
                component_bytes: *bytes,
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Components compiled (or loaded from the compile cache) so far:
    /// services of one component share one compilation.
    pub fn compilations(&self) -> u64 {
        self.engine
            .get()
            .map_or(0, |engine| engine.compilations.load(Ordering::Relaxed))
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
        // A last checkpoint, so that whoever takes over has every write.
        let changed: Vec<String> = self
            .entries
            .lock()
            .iter()
            .filter(|(_, e)| e.shared.store_writes.load(Ordering::Relaxed) != e.checkpointed)
            .map(|(name, _)| name.clone())
            .collect();
        for name in changed {
            if let Err(error) = self.write_run(&name, true) {
                tracing::warn!(service = %name, %error, "no last checkpoint");
            }
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

/// `{home}.service.{service}.{output}`.
fn output_id(home: &str, service: &str, output: &str) -> Result<ThingId, ServiceError> {
    ThingId::new(home, OUTPUT_ADAPTER, service, output)
        .map_err(|e| ServiceError::Invalid(format!("output {output:?}: {e}")))
}

/// Marks a service's outputs available or not (a stopped service's last
/// readings stay readable); only those this gateway owns change.
pub(crate) fn set_outputs_available(hub: &Hub, shared: &Shared, available: bool) {
    let manifest = &shared.manifest;
    for output in &manifest.outputs {
        if let Ok(id) = output_id(&shared.home, &manifest.name, &output.name)
            && let Err(e) = hub.set_available(&id, available)
        {
            tracing::warn!(%id, "cannot record the output's availability: {e}");
        }
    }
}
