//! Keeps a plugin running.
//!
//! actix's own `Supervisor` restarts an actor that stops, but not one that
//! panics: the panic unwinds through the actor's task and takes the
//! supervisor with it. This supervisor instead watches the plugin's
//! mailbox from the outside. When it closes, for whatever reason, the
//! plugin is started again after a backoff that doubles with each quick
//! failure and resets once the plugin has stayed up for a while.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message, Recipient, SpawnHandle};
use fogbank_taas::{ActuationError, ActuationFuture, Actuator, Command, Hub};
use parking_lot::Mutex;

use crate::{Actuate, AdapterContext, Plugin};

/// Restart delays.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A plugin that ran at least this long starts over from `initial`.
    pub reset_after: Duration,
    /// How often the plugin's liveness is checked.
    pub check_every: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
            check_every: Duration::from_millis(100),
        }
    }
}

/// The slot through which commands reach the current plugin instance.
type CurrentPlugin = Arc<Mutex<Option<Recipient<Actuate>>>>;

/// Forwards commands to whichever instance of the plugin is running.
struct Forwarder(CurrentPlugin);

impl Actuator for Forwarder {
    fn actuate(&self, command: Command) -> ActuationFuture {
        let target = self.0.lock().clone();
        Box::pin(async move {
            let Some(target) = target else {
                return Err(ActuationError::Restarting);
            };
            match target.send(Actuate(command)).await {
                Ok(result) => result,
                Err(error) => Err(ActuationError::Send(format!(
                    "the adapter did not take it: {error}"
                ))),
            }
        })
    }
}

/// How a supervised plugin is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorStatus {
    pub adapter: String,
    pub running: bool,
    pub restarts: u64,
}

/// Asks the supervisor how its plugin is doing.
#[derive(Message)]
#[rtype(result = "SupervisorStatus")]
pub struct GetStatus;

/// Stops the plugin for good (at shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

pub struct AdapterSupervisor {
    plugin: Box<dyn Plugin>,
    hub: Arc<Hub>,
    backoff: Backoff,
    current: CurrentPlugin,
    started_at: Instant,
    next_delay: Duration,
    restarts: u64,
    restart_pending: Option<SpawnHandle>,
}

impl AdapterSupervisor {
    pub fn new(plugin: Box<dyn Plugin>, hub: Arc<Hub>, backoff: Backoff) -> Self {
        AdapterSupervisor {
            plugin,
            hub,
            next_delay: backoff.initial,
            backoff,
            current: Arc::new(Mutex::new(None)),
            started_at: Instant::now(),
            restarts: 0,
            restart_pending: None,
        }
    }

    fn launch(&mut self) {
        let name = self.plugin.name().to_owned();
        let recipient = self
            .plugin
            .start(AdapterContext::new(self.hub.clone(), &name));
        *self.current.lock() = Some(recipient);
        self.started_at = Instant::now();
        tracing::info!(adapter = %name, restarts = self.restarts, "adapter started");
    }

    fn check(&mut self, ctx: &mut Context<Self>) {
        if self.restart_pending.is_some() {
            return;
        }
        let alive = self.current.lock().as_ref().is_some_and(|r| r.connected());
        if alive {
            return;
        }
        *self.current.lock() = None;
        if self.started_at.elapsed() >= self.backoff.reset_after {
            self.next_delay = self.backoff.initial;
        }
        let delay = self.next_delay;
        self.next_delay = (self.next_delay * 2).min(self.backoff.max);
        tracing::error!(adapter = %self.plugin.name(), ?delay, "adapter stopped; restarting after backoff");
        self.restart_pending = Some(ctx.run_later(delay, |this, _| {
            this.restart_pending = None;
            this.restarts += 1;
            this.launch();
        }));
    }
}

impl Actor for AdapterSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.hub.register_actuator(
            self.plugin.name(),
            Arc::new(Forwarder(self.current.clone())),
        );
        if let Some(transport) = self.plugin.transport() {
            self.hub.attach_transport(self.plugin.name(), transport);
        }
        self.launch();
        ctx.run_interval(self.backoff.check_every, |this, ctx| this.check(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.hub.unregister_actuator(self.plugin.name());
        // Dropping the last recipient lets the plugin's actor stop.
        *self.current.lock() = None;
    }
}

impl Handler<GetStatus> for AdapterSupervisor {
    type Result = actix::MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        let running = self.current.lock().as_ref().is_some_and(|r| r.connected());
        actix::MessageResult(SupervisorStatus {
            adapter: self.plugin.name().to_owned(),
            running,
            restarts: self.restarts,
        })
    }
}

impl Handler<Shutdown> for AdapterSupervisor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
