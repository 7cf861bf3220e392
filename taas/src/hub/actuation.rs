//! Commands out: validated against the catalog, then handed to the
//! adapter that owns the thing service, or to its owner gateway through
//! the local cloud. Each runs as its own task and is recorded in the
//! command log, so it completes even if the caller stops waiting.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::Hub;
use crate::commands::{Actuator, Command, CommandId, CommandLog, CommandState, CommandStatus};
use crate::remote::{Remote, RemoteError};
use crate::{DataType, Kind, ThingId, Value};

/// Why an actuation was refused before reaching the device.
#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    #[error("unknown thing service {0}")]
    UnknownThing(ThingId),
    #[error("{0} is a sensor; only actuators take commands")]
    NotActuator(ThingId),
    #[error("{thing} takes {expected:?} values, not {found:?}")]
    WrongType {
        thing: ThingId,
        expected: DataType,
        found: DataType,
    },
    #[error("{0} is not available")]
    Unavailable(ThingId),
    #[error("no adapter {adapter:?} is running to carry out commands for {thing}")]
    NoAdapter { thing: ThingId, adapter: String },
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// A command on its way: poll by id, or await `outcome`.
pub struct CommandTicket {
    pub id: CommandId,
    pub outcome: oneshot::Receiver<CommandState>,
}

impl Hub {
    /// Routes commands for things of `adapter` to `actuator`.
    pub fn register_actuator(&self, adapter: &str, actuator: Arc<dyn Actuator>) {
        self.actuators.write().insert(adapter.to_owned(), actuator);
    }

    pub fn unregister_actuator(&self, adapter: &str) {
        self.actuators.write().remove(adapter);
    }

    /// Validates a command and hands it to the owning adapter. Must be
    /// called within a Tokio runtime: the command runs as its own task so
    /// it completes (and is recorded) even if the caller stops waiting.
    pub fn actuate(&self, id: &ThingId, value: Value) -> Result<CommandTicket, ActuateError> {
        let thing = self
            .registry
            .get(id)
            .ok_or_else(|| ActuateError::UnknownThing(id.clone()))?;
        if thing.kind != Kind::Actuator {
            return Err(ActuateError::NotActuator(id.clone()));
        }
        if value.data_type() != thing.data_type {
            return Err(ActuateError::WrongType {
                thing: id.clone(),
                expected: thing.data_type,
                found: value.data_type(),
            });
        }
        // An owner that is down is the reason, not the thing itself.
        if !self.is_local(&thing) && !self.remote_for(&thing)?.is_reachable(&thing.gateway) {
            return Err(RemoteError::Unreachable {
                gateway: thing.gateway.clone(),
            }
            .into());
        }
        if !thing.available {
            return Err(ActuateError::Unavailable(id.clone()));
        }
        enum Route {
            Adapter(Arc<dyn Actuator>),
            Owner(Arc<dyn Remote>),
        }
        let route = if self.is_local(&thing) {
            Route::Adapter(
                self.actuators
                    .read()
                    .get(&thing.adapter)
                    .cloned()
                    .ok_or_else(|| ActuateError::NoAdapter {
                        thing: id.clone(),
                        adapter: thing.adapter.clone(),
                    })?,
            )
        } else {
            Route::Owner(self.remote_for(&thing)?)
        };

        let command_id = self.commands.start(id.clone(), &value);
        self.commands_issued.fetch_add(1, Ordering::Relaxed);
        let command = Command {
            id: command_id,
            thing: id.clone(),
            value,
        };
        let future = match route {
            Route::Adapter(actuator) => actuator.actuate(command),
            Route::Owner(remote) => remote.actuate(&thing.gateway, command),
        };
        let (tx, rx) = oneshot::channel();
        let log = self.commands.clone();
        let thing = id.clone();
        tokio::spawn(async move {
            let state = match tokio::time::timeout(CommandLog::DEADLINE, future).await {
                Ok(Ok(confirmed)) => CommandState::Succeeded {
                    confirmed: confirmed.map(|v| v.to_json()),
                },
                Ok(Err(error)) => CommandState::Failed {
                    reason: error.to_string(),
                },
                Err(_) => CommandState::Failed {
                    reason: format!("no answer within {:?}", CommandLog::DEADLINE),
                },
            };
            tracing::info!(%thing, command = command_id.0, ?state, "command finished");
            log.finish(command_id, state.clone());
            let _ = tx.send(state);
        });
        Ok(CommandTicket {
            id: command_id,
            outcome: rx,
        })
    }

    pub fn command(&self, id: CommandId) -> Option<CommandStatus> {
        self.commands.get(id)
    }
}
