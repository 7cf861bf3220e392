//! One running service: an instance on a thread of its own, fed readings,
//! timer ticks and requests through one queue, restarted with backoff when
//! it fails.
//!
//! A thread per service keeps a guest that spins until its deadline from
//! delaying anyone else, and lets host calls wait synchronously. An idle
//! service is a parked thread and a pool slot.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fogbank_taas::{Event, Filter, FollowSet, Hub, Subscription, ThingId, ThingReading};
use tokio::sync::oneshot;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::host::{self, HostState, Response, Service, ServicePre};
use crate::shared::{LogLevel, Shared, State};

/// Jobs waiting for a busy service; readings beyond this are dropped (and
/// counted) rather than held up in the bus.
pub const QUEUE: usize = 1024;
/// Restarts after a failure before the service is left `failed`.
pub const MAX_RESTARTS: u32 = 5;
/// The first restart waits this long, each next one twice as long.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Running this long without failing forgives earlier failures.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// How often matching remote thing services are looked for.
const REMOTE_REFRESH: Duration = Duration::from_secs(2);

/// Why a request to a service got no answer from it.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("service {0} is not running")]
    NotRunning(String),
    #[error("service {0} is busy: its queue is full")]
    Busy(String),
    #[error("service {name} failed while answering: {reason}")]
    Failed { name: String, reason: String },
}

pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    pub reply: oneshot::Sender<Result<Response, CallError>>,
}

enum Job {
    Reading(Arc<ThingReading>),
    Request(Request),
    Stop,
}

/// A started service: its thread and the task that feeds it readings.
pub(crate) struct Worker {
    shared: Arc<Shared>,
    jobs: SyncSender<Job>,
    thread: Option<JoinHandle<()>>,
    feeder: tokio::task::JoinHandle<()>,
}

impl Worker {
    pub fn start(
        shared: Arc<Shared>,
        pre: ServicePre<HostState>,
        hub: Arc<Hub>,
        tokio: tokio::runtime::Handle,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::sync_channel(QUEUE);
        shared.stopping.store(false, Ordering::SeqCst);
        shared.set_state(State::Starting, None);
        // Subscribed here, not in the feeder task: a reading that comes
        // once the service is said to run must reach it, however late the
        // runtime first polls the task.
        let bus = subscribe(&shared, &hub);
        let feeder = tokio.spawn(feed(shared.clone(), hub.clone(), jobs.clone(), bus));
        let runner = Runner::new(shared.clone(), pre, hub, tokio);
        let thread = std::thread::Builder::new()
            .name(format!("svc-{}", shared.manifest.name))
            .spawn(move || runner.run(queue));
        match thread {
            Ok(thread) => Ok(Worker {
                shared,
                jobs,
                thread: Some(thread),
                feeder,
            }),
            Err(e) => {
                feeder.abort();
                Err(e)
            }
        }
    }

    pub fn request(&self, request: Request) {
        match self.jobs.try_send(Job::Request(request)) {
            Ok(()) => {}
            Err(TrySendError::Full(Job::Request(r))) => {
                let _ = r
                    .reply
                    .send(Err(CallError::Busy(self.shared.manifest.name.clone())));
            }
            Err(TrySendError::Disconnected(Job::Request(r))) => {
                let _ = r.reply.send(Err(CallError::NotRunning(
                    self.shared.manifest.name.clone(),
                )));
            }
            Err(_) => {}
        }
    }

    /// Stops the service and waits for its thread: at most one call's CPU
    /// deadline plus a host call's timeout.
    pub fn stop(mut self) {
        self.feeder.abort();
        // The queue may be full: the flag makes the thread skip what is
        // queued, and the thread also stops when every sender is gone,
        // which dropping `jobs` below completes.
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.jobs.try_send(Job::Stop);
        let Worker { jobs, thread, .. } = &mut self;
        let (replacement, _) = std::sync::mpsc::sync_channel(1);
        drop(std::mem::replace(jobs, replacement));
        if let Some(thread) = thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.feeder.abort();
    }
}

/// The bus subscription to the readings the manifest subscribes to; none
/// when it subscribes to nothing.
fn subscribe(shared: &Shared, hub: &Arc<Hub>) -> Option<Subscription> {
    if shared.manifest.subscriptions.is_empty() {
        return None;
    }
    let weak: Weak<Hub> = Arc::downgrade(hub);
    let filter = {
        let subscriptions = shared.manifest.subscriptions.clone();
        Filter::matching(move |id: &ThingId| {
            // Runs on every reading of the gateway: an id comparison when
            // that decides, a look at the thing without copying it when not.
            subscriptions.iter().any(|s| match s.exact_id() {
                Some(exact) => exact == id.as_str(),
                None => weak
                    .upgrade()
                    .and_then(|hub| hub.inspect_thing(id, |t| s.matches(t)))
                    .unwrap_or(false),
            })
        })
    };
    Some(hub.subscribe(format!("service {}", shared.manifest.name), filter))
}

/// Hands the readings of `bus` to the service's queue, and keeps other
/// gateways' matching thing services followed.
async fn feed(
    shared: Arc<Shared>,
    hub: Arc<Hub>,
    jobs: SyncSender<Job>,
    bus: Option<Subscription>,
) {
    let Some(mut bus) = bus else {
        return;
    };
    let subscriptions = shared.manifest.subscriptions.clone();
    let mut followed = FollowSet::default();
    let mut refresh = tokio::time::interval(REMOTE_REFRESH);
    let mut seen_generation = None;
    loop {
        tokio::select! {
            event = bus.recv() => match event {
                Some(Event::Reading(reading)) => match jobs.try_send(Job::Reading(reading)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Disconnected(_)) => return,
                },
                Some(Event::Lagged(missed)) => {
                    shared.dropped.fetch_add(missed, Ordering::Relaxed);
                }
                None => return,
            },
            _ = refresh.tick() => {
                // Only when the catalog moved: with many services and a
                // large catalog, looking costs more than the tick.
                let generation = hub.catalog_generation();
                if seen_generation == Some(generation) {
                    continue;
                }
                seen_generation = Some(generation);
                let gateway = hub.gateway();
                let wanted = hub.select_things(|t| {
                    t.gateway != gateway && subscriptions.iter().any(|s| s.matches(t))
                });
                followed.follow_only(&hub, wanted.into_iter().map(|t| t.id));
            }
        }
    }
}

/// The service's thread.
pub(crate) struct Runner {
    shared: Arc<Shared>,
    pre: ServicePre<HostState>,
    hub: Arc<Hub>,
    tokio: tokio::runtime::Handle,
}

/// A live instance and its store.
pub(crate) struct Instance {
    store: Store<HostState>,
    bindings: Service,
}

enum Exit {
    Stopped,
    Failed(String),
}

impl Runner {
    pub(crate) fn new(
        shared: Arc<Shared>,
        pre: ServicePre<HostState>,
        hub: Arc<Hub>,
        tokio: tokio::runtime::Handle,
    ) -> Self {
        Runner {
            shared,
            pre,
            hub,
            tokio,
        }
    }

    /// Hands one reading to the guest, as the service's thread does.
    pub(crate) fn deliver(
        &self,
        instance: &mut Instance,
        reading: &ThingReading,
    ) -> Result<(), String> {
        let wit = host::to_wit_reading(&reading.reading);
        self.call(instance, |store, b| {
            b.call_on_reading(store, reading.thing.as_str(), &wit)
        })
    }

    /// One timer tick, as the service's thread gives it.
    pub(crate) fn tick(&self, instance: &mut Instance) -> Result<(), String> {
        self.call(instance, |store, b| b.call_on_timer(store))
    }

    fn run(self, queue: Receiver<Job>) {
        let name = self.shared.manifest.name.clone();
        let span = tracing::info_span!("service", %name);
        let _entered = span.enter();
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let exit = match self.instantiate() {
                Ok(instance) => self.serve(instance, &queue),
                Err(reason) => Exit::Failed(reason),
            };
            let reason = match exit {
                Exit::Stopped => break,
                Exit::Failed(reason) => reason,
            };
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            self.shared
                .log(LogLevel::Error, format!("failed: {reason}"));
            if started.elapsed() >= HEALTHY_AFTER {
                failures = 0;
            }
            failures += 1;
            if failures > MAX_RESTARTS {
                self.shared.set_state(
                    State::Failed,
                    Some(format!("{reason} (gave up after {MAX_RESTARTS} restarts)")),
                );
                crate::set_outputs_available(&self.hub, &self.shared, false);
                drain_until_stopped(&queue, &name);
                break;
            }
            self.shared.set_state(State::Restarting, Some(reason));
            self.shared.status.lock().restarts += 1;
            let backoff = FIRST_BACKOFF * 2u32.pow(failures - 1);
            if !wait_out(&queue, backoff, &name, &self.shared) {
                break;
            }
        }
        let mut status = self.shared.status.lock();
        if status.state != State::Failed {
            status.state = State::Stopped;
        }
        self.shared.memory_bytes.store(0, Ordering::Relaxed);
    }

    pub(crate) fn instantiate(&self) -> Result<Instance, String> {
        self.shared.memory_bytes.store(0, Ordering::Relaxed);
        let state = HostState::new(self.shared.clone(), self.hub.clone(), self.tokio.clone());
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.call_hook(|mut context, hook| {
            context.data_mut().clock.crossing(hook);
            Ok(())
        });
        let deadline = self.shared.manifest.limits.cpu_deadline();
        store.epoch_deadline_callback(move |mut context| {
            if context.data_mut().clock.tick() > deadline {
                Err(wasmtime::format_err!(
                    "CPU deadline of {} ms exceeded",
                    deadline.as_millis()
                ))
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        store.data_mut().clock.start();
        store.set_epoch_deadline(1);
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| format!("cannot instantiate: {}", reason(&e)))?;
        let mut instance = Instance { store, bindings };
        let config = self.shared.manifest.config_json();
        match self.call(&mut instance, |store, b| b.call_init(store, &config))? {
            Ok(()) => Ok(instance),
            Err(refusal) => Err(format!("init refused to start: {refusal}")),
        }
    }

    /// Serves jobs until told to stop or the instance fails.
    fn serve(&self, mut instance: Instance, queue: &Receiver<Job>) -> Exit {
        self.shared.set_state(State::Running, None);
        self.shared.log(
            LogLevel::Info,
            format!("running version {}", self.shared.manifest.version),
        );
        let period = self.shared.manifest.timer;
        let mut next_tick = period.map(|p| Instant::now() + p);
        loop {
            let job = match next_tick {
                Some(at) => {
                    match queue.recv_timeout(at.saturating_duration_since(Instant::now())) {
                        Ok(job) => Some(job),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return Exit::Stopped,
                    }
                }
                None => match queue.recv() {
                    Ok(job) => Some(job),
                    Err(_) => return Exit::Stopped,
                },
            };
            if self.shared.stopping.load(Ordering::SeqCst) {
                return Exit::Stopped;
            }
            let outcome = match job {
                None => {
                    // Ticks missed while busy are skipped, not queued.
                    let now = Instant::now();
                    if let (Some(at), Some(p)) = (next_tick.as_mut(), period) {
                        while *at <= now {
                            *at += p;
                        }
                    }
                    self.call(&mut instance, |store, b| b.call_on_timer(store))
                }
                Some(Job::Reading(reading)) => self.deliver(&mut instance, &reading),
                Some(Job::Request(request)) => {
                    let Request {
                        method,
                        path,
                        body,
                        reply,
                    } = request;
                    let answer = self.call(&mut instance, |store, b| {
                        b.call_on_request(store, &method, &path, &body)
                    });
                    let failed = answer.as_ref().err().cloned();
                    let _ = reply.send(answer.map_err(|reason| CallError::Failed {
                        name: self.shared.manifest.name.clone(),
                        reason,
                    }));
                    failed.map_or(Ok(()), Err)
                }
                Some(Job::Stop) => return Exit::Stopped,
            };
            if let Err(reason) = outcome {
                return Exit::Failed(reason);
            }
        }
    }

    /// One guest call under the CPU deadline, counted.
    pub(crate) fn call<R>(
        &self,
        instance: &mut Instance,
        f: impl FnOnce(&mut Store<HostState>, &Service) -> wasmtime::Result<R>,
    ) -> Result<R, String> {
        let Instance { store, bindings } = instance;
        store.data_mut().clock.start();
        store.set_epoch_deadline(1);
        let result = f(store, bindings);
        let used = store.data().clock.guest_time();
        self.shared
            .cpu_nanos
            .fetch_add(used.as_nanos() as u64, Ordering::Relaxed);
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        result.map_err(|e| reason(&e))
    }
}

/// What went wrong in a guest call, in one line.
fn reason(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<Trap>() {
        Some(trap) => format!("trapped: {trap}"),
        None => error.root_cause().to_string(),
    }
}

/// Waits out a backoff; false if told to stop meanwhile. Readings that
/// arrive are dropped, requests refused.
fn wait_out(queue: &Receiver<Job>, backoff: Duration, name: &str, shared: &Shared) -> bool {
    let until = Instant::now() + backoff;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return false;
        }
        match queue.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
            Ok(Job::Reading(_)) => {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Job::Request(r)) => {
                let _ = r.reply.send(Err(CallError::NotRunning(name.to_owned())));
            }
            Err(RecvTimeoutError::Timeout) => return true,
        }
    }
}

fn drain_until_stopped(queue: &Receiver<Job>, name: &str) {
    while let Ok(job) = queue.recv() {
        match job {
            Job::Stop => return,
            Job::Request(r) => {
                let _ = r.reply.send(Err(CallError::NotRunning(name.to_owned())));
            }
            Job::Reading(_) => {}
        }
    }
}
