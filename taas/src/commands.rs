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
pub type ActuationResult = Result<Option<Value>, String>;

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
