//! What the hub needs from the local cloud, and what it tells it.
//!
//! The hub keeps the thing services of other gateways in its registry beside
//! its own, so that queries, descriptions and streams look the same for
//! both. Whatever needs the owner — its latest reading, its history, a
//! command, a live stream — goes through the [`Remote`] the local cloud
//! attaches. The hub knows nothing of how the call travels: this module is
//! the whole boundary between the two.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;

use serde::{Deserialize, Serialize};

use crate::commands::ActuationFuture;
use crate::store::Window;
use crate::transport::{DeviceOffer, DeviceRef, MoveStatus, MoveTarget, TransportTarget};
use crate::{Command, Hub, Reading, ThingId, ThingService};

/// Why a call to the owning gateway did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The owner is known to be down, or no connection to it exists.
    #[error("gateway {gateway} is unreachable")]
    Unreachable { gateway: String },
    /// The owner did not answer in time.
    #[error("gateway {gateway} did not answer within {seconds} s")]
    Timeout { gateway: String, seconds: u64 },
    /// The owner answered with a refusal (it no longer knows the thing, …).
    #[error("gateway {gateway} refused: {reason}")]
    Refused { gateway: String, reason: String },
    /// This gateway is not part of a local cloud.
    #[error("thing service {0} belongs to another gateway and this gateway has no local cloud")]
    NoCloud(ThingId),
}

pub type RemoteFuture<T> = Pin<Box<dyn Future<Output = Result<T, RemoteError>> + Send>>;

/// Calls to the gateway that owns a thing service. Implemented by the local
/// cloud; every call either answers or fails within its own timeout.
pub trait Remote: Send + Sync {
    fn latest(&self, thing: &ThingService) -> RemoteFuture<Option<Reading>>;
    fn history(&self, thing: &ThingService, window: Window) -> RemoteFuture<Vec<Reading>>;
    /// Carries a command to the owner, whose hub runs it as its own.
    fn actuate(&self, owner: &str, command: Command) -> ActuationFuture;
    /// Whether the gateway is up, as far as the local cloud knows.
    fn is_reachable(&self, gateway: &str) -> bool;
    /// Offers one of this gateway's devices to `gateway`, which answers
    /// where the device is to register. (Refused by a cloud that cannot
    /// move devices, as test doubles.)
    fn offer_device(&self, gateway: &str, offer: DeviceOffer) -> RemoteFuture<TransportTarget> {
        let _ = offer;
        refused(gateway)
    }
    /// Hands readings of a thing service that moved to `gateway` over to it.
    fn hand_history(
        &self,
        gateway: &str,
        thing: ThingId,
        readings: Vec<Reading>,
    ) -> RemoteFuture<()> {
        let _ = (thing, readings);
        refused(gateway)
    }
    /// The other gateways of the local cloud that are up.
    fn gateways_up(&self) -> Vec<String> {
        Vec::new()
    }
    /// Asks `gateway`, which owns `device` now, to move it to this one (an
    /// undrain); answers the id of the move it started.
    fn recall_device(&self, gateway: &str, device: DeviceRef) -> RemoteFuture<u64> {
        let _ = device;
        refused(gateway)
    }
    /// Asks `gateway`, which owns `device`, to move it to `target` (a move
    /// asked of this gateway); answers the move's status there.
    fn start_move(
        &self,
        gateway: &str,
        device: DeviceRef,
        target: MoveTarget,
        deadline_secs: u64,
    ) -> RemoteFuture<MoveStatus> {
        let _ = (device, target, deadline_secs);
        refused(gateway)
    }
    /// Where a move `gateway` started stands (`None`: it forgot it).
    fn move_status(&self, gateway: &str, id: u64) -> RemoteFuture<Option<MoveStatus>> {
        let _ = id;
        refused(gateway)
    }
    /// A local consumer started (`true`) or stopped wanting the readings
    /// of a remote thing service. Calls are balanced: one `false` for
    /// every `true`.
    fn interest(&self, thing: &ThingId, wanted: bool);
}

fn refused<T: Send + 'static>(gateway: &str) -> RemoteFuture<T> {
    let gateway = gateway.to_owned();
    Box::pin(async move {
        Err(RemoteError::Refused {
            gateway,
            reason: "this local cloud does not move devices".into(),
        })
    })
}

/// One change to a gateway's own catalog, in the order it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogChange {
    Upsert(ThingService),
    Remove(ThingId),
    /// The thing service's device moved to gateway `to`, which owns it now
    /// with `moves` moves (see `hub::moves`).
    Moved {
        id: ThingId,
        to: String,
        moves: u32,
    },
}

/// A gateway's own thing services at one version of its catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogSnapshot {
    /// When this run of the gateway started (µs): versions restart with it.
    pub incarnation: u64,
    /// How many changes this run has made; deltas carry it forward.
    pub version: u64,
    pub things: Vec<ThingService>,
}

/// How many local consumers follow each remote thing service.
pub(crate) type Followers = Arc<Mutex<HashMap<ThingId, usize>>>;

/// Keeps another gateway's thing service followed (its readings relayed
/// here) for as long as it lives. See [`Hub::follow`](crate::Hub::follow).
pub struct Follow {
    pub(crate) remote: Arc<dyn Remote>,
    pub(crate) thing: ThingId,
    pub(crate) followers: Followers,
}

impl Follow {
    pub(crate) fn start(remote: Arc<dyn Remote>, thing: ThingId, followers: Followers) -> Self {
        *followers.lock().entry(thing.clone()).or_default() += 1;
        remote.interest(&thing, true);
        Follow {
            remote,
            thing,
            followers,
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let mut followers = self.followers.lock();
        if let Some(count) = followers.get_mut(&self.thing) {
            *count -= 1;
            if *count == 0 {
                followers.remove(&self.thing);
            }
        }
        drop(followers);
        self.remote.interest(&self.thing, false);
    }
}

/// The other gateways' thing services a consumer (CoAP observers, an
/// extended service) wants followed, kept following exactly those.
#[derive(Default)]
pub struct FollowSet(HashMap<ThingId, Follow>);

impl FollowSet {
    /// Follows each of `wanted` that can be followed (see
    /// [`Hub::follow`]) and stops following everything else.
    pub fn follow_only(&mut self, hub: &Hub, wanted: impl IntoIterator<Item = ThingId>) {
        let wanted: HashSet<ThingId> = wanted.into_iter().collect();
        self.0.retain(|id, _| wanted.contains(id));
        for id in wanted {
            if !self.0.contains_key(&id)
                && let Some(follow) = hub.follow(&id)
            {
                self.0.insert(id, follow);
            }
        }
    }
}
