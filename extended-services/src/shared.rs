//! What a service's manager, its thread and its host calls all see of
//! it: state, counters and the log ring.
//!
//! It sits below both the host side of the imports (`host`) and the
//! service's run time (`service`), so that each depends on it and neither
//! on the other.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

use crate::manifest::Manifest;

/// Log lines kept per service.
const LOG_LINES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Running,
    /// Failed, waiting to be started again.
    Restarting,
    Stopped,
    /// Failed more often than it may; an operator starts it again.
    Failed,
    /// Placed on another gateway of the local cloud, which runs it.
    Elsewhere,
    /// Placed nowhere for now, or waiting for the gateway that ran it to
    /// let it go (the placement's reason says which).
    Waiting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// Microseconds since the epoch.
    pub time: u64,
    pub level: LogLevel,
    pub message: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Status {
    pub state: State,
    pub reason: Option<String>,
    pub restarts: u32,
}

/// What the manager and the service's thread both see.
pub(crate) struct Shared {
    pub manifest: Manifest,
    pub digest: String,
    /// The first segment of its outputs' ids: the gateway it was first
    /// published at, wherever it runs.
    pub home: String,
    /// Writes and deletions of its key-value store so far (a checkpoint
    /// is due when this moved).
    pub store_writes: AtomicU64,
    pub status: Mutex<Status>,
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub cpu_nanos: AtomicU64,
    pub memory_bytes: AtomicU64,
    pub published: AtomicU64,
    pub dropped: AtomicU64,
    /// Set to make the service's thread leave at once, whatever is queued.
    pub stopping: AtomicBool,
    logs: Mutex<VecDeque<LogLine>>,
    /// Set when the service runs in the harness, not on a gateway: its
    /// clock and what it tried.
    pub rehearsal: Option<Arc<Rehearsal>>,
}

/// What the harness (`rehearsal`) runs a service with: a clock that is the
/// readings' clock, so that a run is the same every time, and a record of
/// the grants it tried and the commands it gave (which go nowhere).
#[derive(Debug, Default)]
pub struct Rehearsal {
    /// Microseconds since the epoch.
    pub now: AtomicU64,
    pub attempts: Mutex<Vec<Attempt>>,
    pub commands: Mutex<Vec<Command>>,
}

/// A use of a grant: reading or actuating a thing service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub time: u64,
    /// `read` or `actuate`.
    pub grant: &'static str,
    pub thing: String,
    pub allowed: bool,
}

/// A command the service gave in the harness.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Command {
    pub time: u64,
    pub thing: String,
    #[serde(serialize_with = "crate::rehearsal::plain")]
    pub value: fogbank_taas::Value,
}

impl Shared {
    pub fn new(manifest: Manifest, digest: String, home: String) -> Self {
        Shared {
            manifest,
            digest,
            home,
            store_writes: AtomicU64::new(0),
            status: Mutex::new(Status {
                state: State::Stopped,
                reason: None,
                restarts: 0,
            }),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            cpu_nanos: AtomicU64::new(0),
            memory_bytes: AtomicU64::new(0),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            logs: Mutex::new(VecDeque::new()),
            rehearsal: None,
        }
    }

    /// Wall-clock time for the guest (µs since the epoch): the harness's
    /// clock there.
    pub fn wall_micros(&self) -> u64 {
        match &self.rehearsal {
            Some(rehearsal) => rehearsal.now.load(Ordering::Relaxed),
            None => SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        }
    }

    /// A clock that never steps back, for rate limits (µs): the harness's
    /// clock there.
    pub fn steady_micros(&self) -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        match &self.rehearsal {
            Some(rehearsal) => rehearsal.now.load(Ordering::Relaxed),
            None => START.get_or_init(Instant::now).elapsed().as_micros() as u64,
        }
    }

    /// Records a use of a grant, in the harness.
    pub fn attempted(&self, grant: &'static str, thing: &str, allowed: bool) {
        if let Some(rehearsal) = &self.rehearsal {
            rehearsal.attempts.lock().push(Attempt {
                time: self.wall_micros(),
                grant,
                thing: thing.to_owned(),
                allowed,
            });
        }
    }

    pub fn log(&self, level: LogLevel, message: String) {
        let name = &self.manifest.name;
        match level {
            LogLevel::Debug => tracing::debug!(service = %name, "{message}"),
            LogLevel::Info => tracing::info!(service = %name, "{message}"),
            LogLevel::Warn => tracing::warn!(service = %name, "{message}"),
            LogLevel::Error => tracing::error!(service = %name, "{message}"),
        }
        let mut logs = self.logs.lock();
        if logs.len() == LOG_LINES {
            logs.pop_front();
        }
        logs.push_back(LogLine {
            time: self.wall_micros(),
            level,
            message,
        });
    }

    pub fn logs(&self) -> Vec<LogLine> {
        self.logs.lock().iter().cloned().collect()
    }

    /// The newest error in the log, without copying the rest of it (every
    /// `/metrics` scrape asks each service).
    pub fn last_error(&self) -> Option<String> {
        self.logs
            .lock()
            .iter()
            .rev()
            .find(|l| l.level == LogLevel::Error)
            .map(|l| l.message.clone())
    }

    /// An upgrade keeps the log of the version it replaces.
    pub fn inherit_logs(&self, from: &Shared) {
        *self.logs.lock() = from.logs.lock().clone();
    }

    pub fn status(&self) -> Status {
        self.status.lock().clone()
    }

    pub fn set_state(&self, state: State, reason: Option<String>) {
        let mut status = self.status.lock();
        status.state = state;
        if reason.is_some() || state == State::Running {
            status.reason = reason;
        }
    }
}
