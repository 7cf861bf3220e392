//! What a guest can call: the imports of `fogbank:service`, each checked
//! against the manifest before it touches anything.
//!
//! A refused or failed call comes back to the guest as a `failure` it can
//! handle; only flooding the outputs and exhausting memory end the call
//! with a trap, because those are the service misbehaving, not asking.
//! Time spent in here never counts against the guest's CPU deadline (see
//! [`CallClock`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fogbank_taas::{Hub, Reading, ThingId, ThingReading, ThingService, Timestamp, Value, Window};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::manifest::Selector;
use crate::rate::{LogGate, TokenBucket};
use crate::shared::{LogLevel, Shared};
use crate::stdio::GuestOutput;

/// The typed bindings of `wit/service.wit`.
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "service",
        imports: {
            "fogbank:service/outputs.publish": trappable,
            default: tracing,
        },
    });
}

pub use bindings::fogbank::service::types::{
    Failure, Kind as WitKind, Reading as WitReading, Response,
};
use bindings::fogbank::service::types::{
    Selector as WitSelector, Thing as WitThing, Value as WitValue,
};
use bindings::fogbank::service::{clock, log, outputs, store, things, types};
pub use bindings::{Service, ServicePre};

/// How long a host call may wait on the local cloud or the store.
pub const HOST_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The key-value store's per-entry limits.
pub const MAX_KEY_BYTES: usize = 256;
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Readings a history call returns at most.
pub const MAX_HISTORY: u32 = 10_000;
/// Log lines per second a guest may write; more are counted, not kept, so
/// a chatty service cannot flood the gateway's log.
pub const LOG_LINES_PER_SECOND: u32 = 20;

/// The data of one instance's store.
pub struct HostState {
    pub(crate) shared: Arc<Shared>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) tokio: tokio::runtime::Handle,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) clock: CallClock,
    bucket: TokenBucket,
    commands: TokenBucket,
    log_gate: LogGate,
    /// Bytes the key-value store holds, keys included.
    store_bytes: u64,
}

impl HostState {
    pub(crate) fn new(shared: Arc<Shared>, hub: Arc<Hub>, tokio: tokio::runtime::Handle) -> Self {
        let limits = shared.manifest.limits;
        let store_bytes = hub
            .store()
            .service_entries(&shared.manifest.name, "")
            .map(|entries| entries.iter().map(|(k, v)| (k.len() + v) as u64).sum())
            .unwrap_or(0);
        HostState {
            // Nothing of the host: no environment, arguments, files or
            // sockets. Standard output and error go to the service log.
            wasi: WasiCtx::builder()
                .stdout(GuestOutput::new(shared.clone(), LogLevel::Info))
                .stderr(GuestOutput::new(shared.clone(), LogLevel::Error))
                .build(),
            table: ResourceTable::new(),
            limiter: Limiter::new(limits.memory_bytes(), shared.clone()),
            clock: CallClock::default(),
            bucket: TokenBucket::new(limits.publish_per_second),
            commands: TokenBucket::new(limits.actuate_per_second),
            log_gate: LogGate::new(LOG_LINES_PER_SECOND),
            store_bytes,
            shared,
            hub,
            tokio,
        }
    }

    fn name(&self) -> &str {
        &self.shared.manifest.name
    }

    /// Runs a future from a guest call on the host's runtime, bounded by
    /// [`HOST_CALL_TIMEOUT`].
    fn wait<F: Future>(&self, future: F) -> Option<F::Output> {
        self.tokio
            .block_on(async { tokio::time::timeout(HOST_CALL_TIMEOUT, future).await.ok() })
    }

    /// The thing a guest names, if it exists.
    fn thing(&self, id: &str) -> Result<ThingService, Failure> {
        let parsed = ThingId::parse(id)
            .map_err(|e| Failure::NotFound(format!("{id:?} is not a thing-service id: {e}")))?;
        self.hub
            .thing(&parsed)
            .ok_or_else(|| Failure::NotFound(format!("no thing service {id}")))
    }

    fn is_own_output(&self, thing: &ThingService) -> bool {
        thing.id.gateway() == self.shared.home
            && thing.adapter == crate::OUTPUT_ADAPTER
            && thing.id.device() == self.name()
    }

    fn readable(&self, id: &str) -> Result<ThingService, Failure> {
        let thing = self.thing(id)?;
        if self.is_own_output(&thing) {
            return Ok(thing);
        }
        let allowed = self.shared.manifest.grants.may_read(&thing);
        self.shared.attempted("read", id, allowed);
        if allowed {
            Ok(thing)
        } else {
            Err(Failure::Denied(format!(
                "the manifest grants no read of {id}"
            )))
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Splits a call's time into the guest's own and its host calls', so the
/// CPU deadline counts only the first. The store's call hook marks every
/// crossing into and out of the host; the epoch callback calls [`tick`].
///
/// A gateway busy with other work (compiling a service, a burst of
/// readings) takes the CPU from a guest now and then, and the guest must
/// not be stopped for time it did not get. So from its first epoch tick on,
/// a call is timed on its thread's CPU clock: each service runs on a thread
/// of its own, so that clock is the guest's. Before that tick it is timed
/// on the wall clock, which costs a vDSO read where the thread's clock
/// costs a system call: most calls end well within a tick and are never
/// read otherwise. A guest that runs cannot reach its first tick with more
/// than a tick of CPU used, whatever the wall clock says of a thread kept
/// waiting for a core, so at most two ticks of that part are charged.
///
/// [`tick`]: CallClock::tick
#[derive(Debug, Default)]
pub(crate) struct CallClock {
    /// Wall clock at the call's start.
    started: Option<Instant>,
    /// Since when (wall clock) the guest has been in a host call.
    in_host: Option<Instant>,
    /// Wall time in host calls before the first tick.
    host: Duration,
    /// From the first tick on, the thread's CPU clock.
    cpu: Option<CpuSpan>,
}

/// A call timed on its thread's CPU clock, since its first tick.
#[derive(Debug)]
struct CpuSpan {
    /// The thread's CPU clock at the first tick.
    from: Duration,
    /// What the guest was charged until then.
    charged: Duration,
    /// Since when (CPU clock) the guest has been in a host call.
    in_host: Option<Duration>,
    /// CPU time in host calls since the first tick.
    host: Duration,
}

impl CallClock {
    pub fn start(&mut self) {
        *self = CallClock {
            started: Some(Instant::now()),
            ..CallClock::default()
        };
    }

    /// A host call never spans a tick: ticks are seen in guest code only.
    pub fn crossing(&mut self, hook: wasmtime::CallHook) {
        match (hook, &mut self.cpu) {
            (wasmtime::CallHook::CallingHost, None) => self.in_host = Some(Instant::now()),
            (wasmtime::CallHook::CallingHost, Some(span)) => {
                span.in_host = Some(thread_cpu_time());
            }
            (wasmtime::CallHook::ReturningFromHost, None) => {
                if let Some(since) = self.in_host.take() {
                    self.host += since.elapsed();
                }
            }
            (wasmtime::CallHook::ReturningFromHost, Some(span)) => {
                if let Some(since) = span.in_host.take() {
                    span.host += thread_cpu_time().saturating_sub(since);
                }
            }
            _ => {}
        }
    }

    /// At an epoch tick, in guest code: the guest's time so far, from the
    /// first tick on by the thread's CPU clock.
    pub fn tick(&mut self) -> Duration {
        if self.cpu.is_none() {
            self.cpu = Some(CpuSpan {
                from: thread_cpu_time(),
                charged: self.wall_guest_time().min(2 * crate::engine::EPOCH_TICK),
                in_host: None,
                host: Duration::ZERO,
            });
        }
        self.guest_time()
    }

    /// Asked on the service's thread, in guest code or after the call,
    /// never during a host call.
    pub fn guest_time(&self) -> Duration {
        match &self.cpu {
            None => self.wall_guest_time(),
            Some(span) => {
                span.charged
                    + thread_cpu_time()
                        .saturating_sub(span.from)
                        .saturating_sub(span.host)
            }
        }
    }

    fn wall_guest_time(&self) -> Duration {
        self.started
            .map(|s| s.elapsed().saturating_sub(self.host))
            .unwrap_or_default()
    }
}

/// The CPU time the calling thread has used (user and system).
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to, and nothing else holds it.
    let failed = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0;
    if failed {
        // Every Linux since 2.6.12 has the clock; were it missing, the wall
        // clock still stops a runaway guest.
        static SINCE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        return SINCE.get_or_init(Instant::now).elapsed();
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Memory accounting and the per-service memory limit.
pub(crate) struct Limiter {
    memory_limit: usize,
    shared: Arc<Shared>,
}

impl Limiter {
    fn new(memory_limit: usize, shared: Arc<Shared>) -> Self {
        Limiter {
            memory_limit,
            shared,
        }
    }
}

/// Tables may not grow past this many elements.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.shared.memory_bytes.load(Ordering::Relaxed) as usize;
        let after = total.saturating_sub(current) + desired;
        if after > self.memory_limit {
            return Err(wasmtime::format_err!(
                "memory limit of {} MiB reached",
                self.memory_limit >> 20
            ));
        }
        self.shared
            .memory_bytes
            .store(after as u64, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

// ------------------------------------------------------------- conversions

pub(crate) fn to_wit_value(value: &Value) -> WitValue {
    match value {
        Value::Number(n) => WitValue::Number(*n),
        Value::Bool(b) => WitValue::Boolean(*b),
        Value::String(s) => WitValue::Text(s.clone()),
        // Opaque data has no WIT shape of its own: guests get it as text,
        // the way SenML's `vd` carries it (URL-safe base64, no padding).
        data @ Value::Data(_) => WitValue::Text(data.to_json().as_str().unwrap_or("").to_owned()),
    }
}

fn from_wit_value(value: WitValue) -> Value {
    match value {
        WitValue::Number(n) => Value::Number(n),
        WitValue::Boolean(b) => Value::Bool(b),
        WitValue::Text(s) => Value::String(s),
    }
}

pub(crate) fn to_wit_reading(reading: &Reading) -> WitReading {
    WitReading {
        value: to_wit_value(&reading.value),
        time: reading.time.0,
    }
}

fn to_wit_thing(thing: &ThingService) -> WitThing {
    WitThing {
        id: thing.id.as_str().to_owned(),
        kind: match thing.kind {
            fogbank_taas::Kind::Sensor => WitKind::Sensor,
            fogbank_taas::Kind::Actuator => WitKind::Actuator,
        },
        type_: thing.semantic_type.clone(),
        unit: thing.unit.clone(),
        location: thing.location.as_str().to_owned(),
        gateway: thing.gateway.clone(),
        available: thing.available,
    }
}

// ------------------------------------------------------------- interfaces

impl types::Host for HostState {}

impl things::Host for HostState {
    fn find(&mut self, selector: WitSelector) -> Vec<WitThing> {
        let selector = Selector {
            semantic_type: selector.type_,
            location: selector.location,
            id: selector.id,
        };
        self.hub
            .select_things(|t| selector.matches(t))
            .iter()
            .map(to_wit_thing)
            .collect()
    }

    fn read_latest(&mut self, id: String) -> Result<Option<WitReading>, Failure> {
        let thing = self.readable(&id)?;
        let hub = self.hub.clone();
        match self.wait(async move { hub.read_latest(&thing.id).await }) {
            Some(Ok(reading)) => Ok(reading.as_ref().map(to_wit_reading)),
            Some(Err(e)) => Err(Failure::Unavailable(e.to_string())),
            None => Err(Failure::Unavailable(format!(
                "no answer within {HOST_CALL_TIMEOUT:?}"
            ))),
        }
    }

    fn read_history(
        &mut self,
        id: String,
        since: Option<u64>,
        until: Option<u64>,
        limit: u32,
    ) -> Result<Vec<WitReading>, Failure> {
        let thing = self.readable(&id)?;
        if limit > MAX_HISTORY {
            return Err(Failure::Invalid(format!(
                "at most {MAX_HISTORY} readings per call"
            )));
        }
        let window = Window {
            from: Timestamp(since.unwrap_or(0)),
            to: Timestamp(until.unwrap_or(u64::MAX)),
            limit: limit as usize,
            newest_first: false,
        };
        let hub = self.hub.clone();
        match self.wait(async move { hub.read_history(&thing.id, window).await }) {
            Some(Ok(readings)) => Ok(readings.iter().map(to_wit_reading).collect()),
            Some(Err(e)) => Err(Failure::Unavailable(e.to_string())),
            None => Err(Failure::Unavailable(format!(
                "no answer within {HOST_CALL_TIMEOUT:?}"
            ))),
        }
    }

    fn actuate(&mut self, id: String, value: WitValue) -> Result<String, Failure> {
        let thing = self.thing(&id)?;
        let allowed = self.shared.manifest.grants.may_actuate(&thing);
        self.shared.attempted("actuate", &id, allowed);
        if !allowed {
            return Err(Failure::Denied(format!(
                "the manifest grants no actuation of {id}"
            )));
        }
        if !self.commands.take(self.shared.steady_micros()) {
            return Err(Failure::Limit(format!(
                "more than {} commands per second",
                self.shared.manifest.limits.actuate_per_second
            )));
        }
        let value = from_wit_value(value);
        // In the harness, commands are recorded and go nowhere.
        if let Some(rehearsal) = &self.shared.rehearsal {
            let mut commands = rehearsal.commands.lock();
            commands.push(crate::shared::Command {
                time: self.shared.wall_micros(),
                thing: id,
                value,
            });
            return Ok(format!("rehearsal-{}", commands.len()));
        }
        let hub = self.hub.clone();
        // Commands run as tasks of the host's runtime and finish on their
        // own; the guest gets the id at once.
        let ticket = self
            .tokio
            .block_on(async move { hub.actuate(&thing.id, value) });
        match ticket {
            Ok(ticket) => {
                self.shared.log(
                    LogLevel::Debug,
                    format!("command {} sent to {id}", ticket.id.0),
                );
                Ok(ticket.id.0.to_string())
            }
            Err(e) => Err(Failure::Invalid(e.to_string())),
        }
    }
}

impl outputs::Host for HostState {
    fn publish(
        &mut self,
        output: String,
        value: WitValue,
    ) -> wasmtime::Result<Result<(), Failure>> {
        let manifest = &self.shared.manifest;
        let Some(declared) = manifest.output(&output) else {
            return Ok(Err(Failure::NotFound(format!(
                "the manifest declares no output {output:?}"
            ))));
        };
        let value = from_wit_value(value);
        if value.data_type() != declared.data_type() {
            return Ok(Err(Failure::Invalid(format!(
                "output {output} takes {:?} values, not {:?}",
                declared.data_type(),
                value.data_type()
            ))));
        }
        if !self.bucket.take(self.shared.steady_micros()) {
            let reason = format!(
                "flooded its outputs: more than {} readings per second",
                manifest.limits.publish_per_second
            );
            return Err(wasmtime::format_err!(reason));
        }
        let Ok(thing) = ThingId::new(
            &self.shared.home,
            crate::OUTPUT_ADAPTER,
            &manifest.name,
            &output,
        ) else {
            return Ok(Err(Failure::Invalid(format!("bad output name {output:?}"))));
        };
        let reading = ThingReading {
            thing,
            reading: Reading {
                time: match self.shared.rehearsal {
                    Some(_) => Timestamp(self.shared.wall_micros()),
                    None => self.hub.arrival_time(),
                },
                value,
            },
        };
        Ok(self
            .hub
            .ingest(vec![reading])
            .map(|()| {
                self.shared.published.fetch_add(1, Ordering::Relaxed);
            })
            .map_err(|e| Failure::Invalid(e.to_string())))
    }
}

impl store::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.hub
            .store()
            .service_value(self.name(), &key)
            .unwrap_or_else(|e| {
                self.shared
                    .log(LogLevel::Error, format!("store read failed: {e}"));
                None
            })
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), Failure> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(Failure::Invalid(format!(
                "keys are 1 to {MAX_KEY_BYTES} bytes"
            )));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(Failure::Limit(format!(
                "values are at most {MAX_VALUE_BYTES} bytes"
            )));
        }
        let store = self.hub.store();
        let old = store
            .service_value(self.name(), &key)
            .map_err(|e| Failure::Unavailable(e.to_string()))?
            .map_or(0, |v| (key.len() + v.len()) as u64);
        let after = self.store_bytes - old.min(self.store_bytes) + (key.len() + value.len()) as u64;
        let limit = self.shared.manifest.limits.store_kib << 10;
        if after > limit {
            return Err(Failure::Limit(format!(
                "the store would exceed its {} KiB",
                self.shared.manifest.limits.store_kib
            )));
        }
        let outcome = store
            .put_service_value(self.name(), &key, &value)
            .map_err(|e| Failure::Unavailable(e.to_string()));
        if outcome.is_ok() {
            self.store_bytes = after;
            self.shared.store_writes.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    fn delete(&mut self, key: String) {
        let store = self.hub.store();
        if let Ok(Some(old)) = store.service_value(self.name(), &key)
            && store.delete_service_value(self.name(), &key).is_ok()
        {
            self.shared.store_writes.fetch_add(1, Ordering::Relaxed);
            self.store_bytes = self
                .store_bytes
                .saturating_sub((key.len() + old.len()) as u64);
        }
    }

    fn keys(&mut self, prefix: String) -> Vec<String> {
        self.hub
            .store()
            .service_entries(self.name(), &prefix)
            .map(|entries| entries.into_iter().map(|(k, _)| k).collect())
            .unwrap_or_default()
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let Some(message) = self.log_gate.admit(message, self.shared.steady_micros()) else {
            return;
        };
        let level = match level {
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.shared.log(level, message);
    }
}

impl clock::Host for HostState {
    fn now(&mut self) -> u64 {
        self.shared.wall_micros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cross_into_the_guest_unchanged_and_data_as_base64() {
        assert!(matches!(to_wit_value(&Value::Number(1.5)), WitValue::Number(n) if n == 1.5));
        assert!(matches!(
            to_wit_value(&Value::Bool(true)),
            WitValue::Boolean(true)
        ));
        assert!(matches!(to_wit_value(&Value::String("a".into())), WitValue::Text(t) if t == "a"));
        assert!(
            matches!(to_wit_value(&Value::Data(vec![0xfb, 0xff])), WitValue::Text(t) if t == "-_8"),
            "URL-safe base64, no quotes, no padding"
        );
        assert_eq!(
            from_wit_value(WitValue::Text("x".into())),
            Value::String("x".into())
        );
    }

    #[test]
    fn a_guest_is_charged_for_the_cpu_it_used_not_for_time_it_was_not_running() {
        let tick = crate::engine::EPOCH_TICK;
        let spin = |d: Duration| {
            let from = thread_cpu_time();
            while thread_cpu_time() - from < d {}
        };
        let mut clock = CallClock::default();
        clock.start();
        // Kept waiting for a core (here: asleep) for 50 ms before its first
        // tick: at most two ticks of it are charged.
        std::thread::sleep(Duration::from_millis(50));
        let charged = clock.tick();
        assert!(
            charged <= 2 * tick + Duration::from_millis(1),
            "{charged:?}"
        );
        // From then on the thread's CPU clock counts: waiting costs nothing,
        std::thread::sleep(Duration::from_millis(50));
        let waited = clock.tick();
        assert!(waited < charged + Duration::from_millis(5), "{waited:?}");
        // spinning is charged, and a host call's share is not.
        spin(Duration::from_millis(30));
        clock.crossing(wasmtime::CallHook::CallingHost);
        spin(Duration::from_millis(30));
        clock.crossing(wasmtime::CallHook::ReturningFromHost);
        let used = clock.tick() - waited;
        assert!(
            used >= Duration::from_millis(30) && used < Duration::from_millis(50),
            "{used:?}"
        );
    }

    #[test]
    fn a_call_within_its_first_tick_is_timed_on_the_wall_clock_less_its_host_calls() {
        let mut clock = CallClock::default();
        clock.start();
        std::thread::sleep(Duration::from_millis(4));
        clock.crossing(wasmtime::CallHook::CallingHost);
        std::thread::sleep(Duration::from_millis(20));
        clock.crossing(wasmtime::CallHook::ReturningFromHost);
        let used = clock.guest_time();
        assert!(
            used >= Duration::from_millis(4) && used < Duration::from_millis(15),
            "{used:?}"
        );
    }
}
