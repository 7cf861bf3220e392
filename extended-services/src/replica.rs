//! What the Service layer keeps in the local cloud's replicated records
//! (`fogbank_taas::replicated`), so that every gateway knows every service:
//!
//! - `service/{name}`: a [`ServiceRecord`], its component as the blob. A
//!   publish, start, stop or removal anywhere writes it; the gateway the
//!   service is placed on acts on it.
//! - `service-run/{name}`: a [`RunRecord`] — which gateway runs the
//!   service, or last ran it and let it go — with a checkpoint of its
//!   key-value store as the blob ([`crate::checkpoint::encode`]).
//!
//! The key-value store is *checkpointed*, not replicated on each write: the
//! gateway that runs a service writes a checkpoint at most once per
//! [`CHECKPOINT_EVERY`] while the store changes, and a last one when it lets
//! the service go. A gateway that takes over after its runner died starts
//! from the last checkpoint, so the writes of that runner's last second or
//! so can be lost; a hand-over between live gateways loses none.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) const SERVICE: &str = "service/";
pub(crate) const RUN: &str = "service-run/";
/// How often a running service's changed store is checkpointed.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A service as the whole local cloud knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceRecord {
    pub manifest: String,
    pub digest: String,
    /// Whether it should run; `stop` clears it, `start` sets it.
    pub enabled: bool,
    /// Microseconds since the epoch.
    pub installed_at: u64,
    /// The gateway it was first published at: the first segment of its
    /// outputs' ids wherever it runs.
    pub home: String,
    /// The publisher's, over `digest` and `manifest`; every gateway with
    /// trusted keys checks it before it runs the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::Signature>,
}

/// Who runs a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub gateway: String,
    /// `false`: the gateway let the service go (its checkpoint is final).
    pub held: bool,
}

impl RunRecord {
    /// The gateway that runs the service now, if any.
    pub fn runner(&self) -> Option<&str> {
        self.held.then_some(self.gateway.as_str())
    }
}
