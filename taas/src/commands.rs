//! Actuation commands: validated here, carried out by the owning adapter,
//! and remembered so that a client that did not wait can poll the outcome.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::id::ThingId;
use crate::reading::{Timestamp, Value};

/// Identifies a command for polling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CommandId(pub u64);

/// What the adapter is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: CommandId,
    pub thing: ThingId,
    pub value: Value,
}

/// The result of an actuation as the adapter reports it: the value the
/// device confirmed (if it reports one), or why it failed.
pub type ActuationResult = Result<Option<Value>, ActuationError>;

/// Why a command did not reach its device, or the device refused it. The
/// text of a variant is for people (it becomes the command's `reason`);
/// the variant is what a caller matches on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActuationError {
    /// The adapter has no device behind this thing service to send a
    /// command to (never heard of, registration lapsed, not an actuator).
    #[error("{thing} {why}")]
    NoDevice { thing: ThingId, why: &'static str },
    /// The value is not one the device takes.
    #[error("{thing} takes {takes}")]
    BadValue { thing: ThingId, takes: &'static str },
    /// The adapter's own link (broker connection, radio) is not there.
    #[error("{0}")]
    Disconnected(&'static str),
    /// The command could not be sent on its way.
    #[error("cannot send the command: {0}")]
    Send(String),
    /// The device, or the radio in front of it, answered with a failure.
    #[error("{0}")]
    Refused(String),
    /// Nothing came back within the time the adapter waits.
    #[error("{0}")]
    NoAnswer(String),
    /// The command's outcome is a reading that could not be stored.
    #[error("the new state could not be stored: {0}")]
    Store(String),
    /// The thing belongs to another gateway, which reported this.
    #[error("gateway {gateway}: {reason}")]
    Owner { gateway: String, reason: String },
    /// The adapter is stopping or restarting.
    #[error("the adapter is restarting; try again shortly")]
    Restarting,
}

pub type ActuationFuture = Pin<Box<dyn Future<Output = ActuationResult> + Send>>;

/// Implemented by whoever can reach the devices of one adapter.
pub trait Actuator: Send + Sync {
    fn actuate(&self, command: Command) -> ActuationFuture;
}

/// Where a command stands.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum CommandState {
    Pending,
    Succeeded {
        #[serde(skip_serializing_if = "Option::is_none")]
        confirmed: Option<serde_json::Value>,
    },
    Failed {
        reason: String,
    },
}

/// A command's record, as polling clients see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandStatus {
    pub id: CommandId,
    pub thing: ThingId,
    pub value: serde_json::Value,
    pub issued: f64,
    #[serde(flatten)]
    pub state: CommandState,
}

/// Remembers recent commands, oldest forgotten first.
pub(crate) struct CommandLog {
    next_id: AtomicU64,
    inner: Mutex<(HashMap<CommandId, CommandStatus>, VecDeque<CommandId>)>,
    capacity: usize,
}

impl CommandLog {
    pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

    pub(crate) fn new(capacity: usize) -> Self {
        CommandLog {
            next_id: AtomicU64::new(1),
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
            capacity,
        }
    }

    pub(crate) fn start(&self, thing: ThingId, value: &Value) -> CommandId {
        let id = CommandId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let status = CommandStatus {
            id,
            thing,
            value: value.to_json(),
            issued: Timestamp::now().as_secs_f64(),
            state: CommandState::Pending,
        };
        let mut inner = self.inner.lock();
        let (map, order) = &mut *inner;
        map.insert(id, status);
        order.push_back(id);
        while order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        id
    }

    pub(crate) fn finish(&self, id: CommandId, state: CommandState) {
        if let Some(status) = self.inner.lock().0.get_mut(&id) {
            status.state = state;
        }
    }

    pub(crate) fn get(&self, id: CommandId) -> Option<CommandStatus> {
        self.inner.lock().0.get(&id).cloned()
    }
}
