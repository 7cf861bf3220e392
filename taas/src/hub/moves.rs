//! Devices that move to another gateway of the local cloud and keep the
//! ids of their thing services.
//!
//! An id names the gateway that first saw the device, its *home*; a thing
//! service's `gateway` is its owner now, and `moves` counts the handovers,
//! so that wherever two entries for one id meet, the one with more moves
//! is the current one. A move is driven by the owner:
//!
//! 1. **offer**: the target records the device as *adopted* — (adapter,
//!    device) → home, previous owner, moves — in its store, and answers
//!    where its devices register ([`DeviceTransport::listening`]);
//! 2. **repoint**: the owner's adapter tells the device to register there
//!    (CoAP: a write of the Transport Management Policy object) and stops
//!    following it here;
//! 3. **arrival**: the device registers at the target, whose adapter names
//!    its things by the adoption — the same ids — and announces them as its
//!    own, with one move more; the owner sees that in the target's catalog
//!    changes;
//! 4. **release**: the owner drops the things from its catalog with a
//!    `Moved` change (other gateways switch owner without a gap), hands its
//!    history of them to the target in chunks, and only then deletes it.
//!
//! A reading the old owner acknowledged before the device left is in its
//! store, and so reaches the target's store in step 4; a reading the device
//! sends to the target is stored there. None is stored twice: a store key
//! is the thing and the reading's time.
//!
//! A release also runs when a device turns up at another gateway without
//! a move being watched here (it arrived after the move's deadline, or
//! this gateway restarted meanwhile): the catalog change that shows it
//! starts the same steps.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::Hub;
use crate::remote::{CatalogChange, RemoteError};
use crate::store::{StoreError, Window};
use crate::transport::{
    BadDevice, DeviceOffer, DeviceRef, DeviceTransport, MoveState, MoveStatus, MoveTarget,
    TransportTarget,
};
use crate::{Reading, ThingId, ThingReading, ThingService, Timestamp};

/// A device this gateway took over, persisted: its things keep `home` in
/// their ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Adoption {
    home: String,
    from: String,
    moves: u32,
}

/// The devices adopted here, adapter → device → adoption. Every reading a
/// device sends asks for its things' home, so lookups take borrowed names
/// and build no key.
#[derive(Default)]
struct Adoptions(HashMap<String, HashMap<String, Adoption>>);

impl Adoptions {
    fn get(&self, adapter: &str, device: &str) -> Option<&Adoption> {
        self.0.get(adapter)?.get(device)
    }

    fn insert(&mut self, adapter: &str, device: &str, adoption: Adoption) {
        self.0
            .entry(adapter.to_owned())
            .or_default()
            .insert(device.to_owned(), adoption);
    }

    fn remove(&mut self, adapter: &str, device: &str) -> Option<Adoption> {
        let devices = self.0.get_mut(adapter)?;
        let removed = devices.remove(device);
        if devices.is_empty() {
            self.0.remove(adapter);
        }
        removed
    }

    fn devices(&self, adapter: &str) -> impl Iterator<Item = &String> {
        self.0
            .get(adapter)
            .into_iter()
            .flat_map(|devices| devices.keys())
    }
}

/// Why a move was refused before it started, or a hand-over refused.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    BadDevice(#[from] BadDevice),
    #[error("no thing service of device {0} is known")]
    UnknownDevice(DeviceRef),
    #[error("device {device} is owned by gateway {owner}; ask it")]
    NotOwner { device: DeviceRef, owner: String },
    #[error("the {0} adapter cannot move its devices")]
    NoTransport(String),
    #[error("device {0} is at this gateway already")]
    AlreadyHere(DeviceRef),
    #[error("gateway {0} is not a member of the local cloud that is up")]
    UnknownGateway(String),
    #[error("a device {0} of this gateway's own is registered here")]
    Conflict(DeviceRef),
    #[error("device {0} is moving already")]
    Busy(DeviceRef),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The hub's state for moves.
#[derive(Default)]
pub(super) struct Moves {
    transports: parking_lot::RwLock<HashMap<String, Arc<dyn DeviceTransport>>>,
    adopted: parking_lot::RwLock<Adoptions>,
    /// Devices that left for another gateway: (adapter, device) → where.
    departed: parking_lot::RwLock<HashMap<(String, String), String>>,
    /// Things whose release runs now.
    releasing: Mutex<HashSet<ThingId>>,
    /// Devices whose move runs now.
    moving: Mutex<HashSet<DeviceRef>>,
    log: Mutex<VecDeque<MoveStatus>>,
    next_id: AtomicU64,
}

/// Store space of adoptions, keyed `{adapter}/{device}`.
const ADOPTED: &str = "taas/adopted";
/// Store space of devices that left, keyed `{adapter}/{device}`, the
/// gateway they went to as the value.
const DEPARTED: &str = "taas/departed";
/// Readings per hand-over call.
const HISTORY_CHUNK: usize = 2_000;
/// Tries of one chunk before the hand-over fails (0.2 + 0.4 + … s apart).
const HAND_ATTEMPTS: u32 = 6;
/// A failed hand-over is tried again this often, this many times.
const HAND_OVER_RETRY: Duration = Duration::from_secs(10);
const HAND_OVER_RETRIES: u32 = 360;
/// Moves that stay pollable.
const LOG: usize = 1_000;
/// How long a device may take to register at its target.
pub const MOVE_DEADLINE: Duration = Duration::from_secs(30);

impl Moves {
    pub(super) fn load(store: &crate::Store) -> Result<Self, StoreError> {
        let moves = Moves::default();
        for (key, value) in store.state(ADOPTED, "")? {
            let Some((adapter, device)) = key.split_once('/') else {
                continue;
            };
            match serde_json::from_slice::<Adoption>(&value) {
                Ok(adoption) => {
                    moves.adopted.write().insert(adapter, device, adoption);
                }
                Err(error) => tracing::warn!(%key, %error, "skipping an unreadable adoption"),
            }
        }
        for (key, value) in store.state(DEPARTED, "")? {
            if let Some((adapter, device)) = key.split_once('/') {
                moves.departed.write().insert(
                    (adapter.to_owned(), device.to_owned()),
                    String::from_utf8_lossy(&value).into_owned(),
                );
            }
        }
        moves.next_id.store(1, Ordering::Relaxed);
        Ok(moves)
    }

    fn record(&self, status: MoveStatus) {
        let mut log = self.log.lock();
        log.retain(|s| s.id != status.id);
        log.push_back(status);
        while log.len() > LOG {
            log.pop_front();
        }
    }
}

impl Hub {
    /// Lets `adapter`'s devices be moved to and from this gateway.
    pub fn attach_transport(&self, adapter: &str, transport: Arc<dyn DeviceTransport>) {
        self.moves
            .transports
            .write()
            .insert(adapter.to_owned(), transport);
    }

    pub(super) fn transport_of(
        &self,
        adapter: &str,
    ) -> Result<Arc<dyn DeviceTransport>, MoveError> {
        self.moves
            .transports
            .read()
            .get(adapter)
            .cloned()
            .ok_or_else(|| MoveError::NoTransport(adapter.to_owned()))
    }

    /// The first segment of the ids of `adapter`'s `device` here: the
    /// gateway that first saw it.
    pub fn device_home(&self, adapter: &str, device: &str) -> String {
        self.with_device_home(adapter, device, str::to_owned)
    }

    /// `with` given [`device_home`](Self::device_home), without copying it.
    pub fn with_device_home<R>(
        &self,
        adapter: &str,
        device: &str,
        with: impl FnOnce(&str) -> R,
    ) -> R {
        let adopted = self.moves.adopted.read();
        with(
            adopted
                .get(adapter, device)
                .map_or(&self.gateway, |a| &a.home),
        )
    }

    /// The moves an own thing service has had (0 unless adopted).
    pub(super) fn moves_of(&self, id: &ThingId) -> u32 {
        self.moves
            .adopted
            .read()
            .get(id.adapter(), id.device())
            .filter(|a| a.home == id.gateway())
            .map_or(0, |a| a.moves)
    }

    /// Whether this gateway owns a thing service of `adapter`'s `device`.
    fn runs_device(&self, adapter: &str, device: &str) -> bool {
        self.registry.count(|t| {
            t.gateway == self.gateway && t.id.adapter() == adapter && t.id.device() == device
        }) > 0
    }

    /// The thing services of a device, wherever they are owned.
    pub(super) fn device_things(&self, device: &DeviceRef) -> Vec<ThingService> {
        self.registry.select(|t| device.holds(&t.id))
    }

    /// A gateway of the local cloud offers `device`: expect it.
    pub fn accept_device(
        &self,
        from: &str,
        offer: DeviceOffer,
    ) -> Result<TransportTarget, MoveError> {
        let DeviceOffer { device, moves } = offer;
        let transport = self.transport_of(&device.adapter)?;
        let mut target = transport
            .listening()
            .ok_or_else(|| MoveError::NoTransport(device.adapter.clone()))?;
        let home = self.device_home(&device.adapter, &device.device);
        if self.runs_device(&device.adapter, &device.device) && home != device.home {
            return Err(MoveError::Conflict(device));
        }
        self.adopt(&device, from, moves)?;
        if let Err(error) = transport.expect(&device.device) {
            self.moves
                .adopted
                .write()
                .remove(&device.adapter, &device.device);
            self.store
                .delete_state(ADOPTED, &state_key(&device.adapter, &device.device))?;
            return Err(MoveError::Refused(format!(
                "the {} adapter cannot take it: {error}",
                device.adapter
            )));
        }
        tracing::info!(%device, %from, moves, "expecting a device from another gateway");
        target.service = self.gateway.clone();
        Ok(target)
    }

    /// Records that this gateway runs `device` now, taken over from `from`
    /// with `moves` moves: its things keep the ids of `device.home`, and
    /// the history `from` hands over is taken. A device is adopted when
    /// offered; an extended service, when its placement brings it here.
    pub fn adopt(&self, device: &DeviceRef, from: &str, moves: u32) -> Result<(), StoreError> {
        let adoption = Adoption {
            home: device.home.clone(),
            from: from.to_owned(),
            moves,
        };
        let key = state_key(&device.adapter, &device.device);
        // JSON of strings and a number: it serialises.
        let bytes = serde_json::to_vec(&adoption).unwrap_or_default();
        self.store.put_state(ADOPTED, &key, &bytes)?;
        self.moves
            .adopted
            .write()
            .insert(&device.adapter, &device.device, adoption);
        self.forget_departure(&device.adapter, &device.device)
    }

    /// Readings of a thing that moved here, from the gateway it came from:
    /// stored as history, neither published nor counted as new.
    pub fn import_history(
        &self,
        from: &str,
        thing: &ThingId,
        readings: Vec<Reading>,
    ) -> Result<usize, MoveError> {
        let owned = self.registry.inspect(thing, |t| t.gateway == self.gateway);
        let adopted_from = self
            .moves
            .adopted
            .read()
            .get(thing.adapter(), thing.device())
            .is_some_and(|a| a.from == from && a.home == thing.gateway());
        if owned != Some(true) || !adopted_from {
            return Err(MoveError::Refused(format!(
                "{thing} did not move here from gateway {from}"
            )));
        }
        let count = readings.len();
        let newest = readings.iter().max_by_key(|r| r.time).cloned();
        let readings: Vec<ThingReading> = readings
            .into_iter()
            .map(|reading| ThingReading {
                thing: thing.clone(),
                reading,
            })
            .collect();
        self.store.append(&readings)?;
        if let Some(newest) = newest {
            self.registry.offer_latest(thing, &newest);
        }
        Ok(count)
    }

    /// Starts moving the device `device` names to `target`; the move runs
    /// on, its outcome in [`move_status`](Self::move_status).
    pub fn move_device(
        self: &Arc<Self>,
        device: &str,
        target: MoveTarget,
        deadline: Duration,
    ) -> Result<MoveStatus, MoveError> {
        let device = DeviceRef::parse(device)?;
        let things = self.device_things(&device);
        let Some(first) = things.first() else {
            return Err(MoveError::UnknownDevice(device));
        };
        if first.gateway != self.gateway {
            return Err(MoveError::NotOwner {
                owner: first.gateway.clone(),
                device,
            });
        }
        let transport = self.transport_of(&device.adapter)?;
        transport
            .can_move(&device.device)
            .map_err(|why| MoveError::Refused(why.to_string()))?;
        let to = match &target {
            MoveTarget::Gateway(gateway) => gateway.clone(),
            MoveTarget::Endpoint { host, port } => format!("{host}:{port}"),
        };
        /// A target with what reaching it takes.
        enum Route {
            Gateway(String, Arc<dyn crate::Remote>),
            Endpoint { host: String, port: u16 },
        }
        let route = match target {
            MoveTarget::Gateway(gateway) if gateway == self.gateway => {
                return Err(MoveError::AlreadyHere(device));
            }
            MoveTarget::Gateway(gateway) => {
                let remote = self.remote.read().clone();
                match remote {
                    Some(remote) if remote.is_reachable(&gateway) => {
                        Route::Gateway(gateway, remote)
                    }
                    _ => return Err(MoveError::UnknownGateway(gateway)),
                }
            }
            MoveTarget::Endpoint { host, port } => Route::Endpoint { host, port },
        };
        if !self.moves.moving.lock().insert(device.clone()) {
            return Err(MoveError::Busy(device));
        }
        let status = MoveStatus {
            id: self.moves.next_id.fetch_add(1, Ordering::Relaxed),
            device: device.to_string(),
            to,
            things: things.iter().map(|t| t.id.clone()).collect(),
            at: self.gateway.clone(),
            issued: Timestamp::now().as_secs_f64(),
            state: MoveState::Pending,
        };
        self.moves.record(status.clone());
        let moves = things.iter().map(|t| t.moves).max().unwrap_or(0) + 1;
        let hub = self.clone();
        let mut finished = status.clone();
        tokio::spawn(async move {
            let outcome = match route {
                Route::Gateway(gateway, remote) => {
                    let offer = DeviceOffer {
                        device: device.clone(),
                        moves,
                    };
                    hub.move_to_gateway(&*transport, &*remote, &gateway, offer, deadline)
                        .await
                }
                Route::Endpoint { host, port } => {
                    hub.move_elsewhere(&*transport, &device, host, port).await
                }
            };
            finished.state = outcome.unwrap_or_else(|reason| MoveState::Failed { reason });
            tracing::info!(device = %device, to = %finished.to, state = ?finished.state, "move finished");
            hub.moves.moving.lock().remove(&device);
            hub.moves.record(finished);
        });
        Ok(status)
    }

    async fn move_to_gateway(
        self: &Arc<Self>,
        transport: &dyn DeviceTransport,
        remote: &dyn crate::Remote,
        gateway: &str,
        offer: DeviceOffer,
        deadline: Duration,
    ) -> Result<MoveState, String> {
        let device = offer.device.clone();
        let ids: Vec<ThingId> = self
            .device_things(&device)
            .into_iter()
            .map(|t| t.id)
            .collect();
        let target = remote
            .offer_device(gateway, offer)
            .await
            .map_err(|e| format!("the target did not take the device: {e}"))?;
        let repointing = tokio::time::Instant::now();
        transport
            .repoint(&device.device, &target)
            .await
            .map_err(|e| format!("the device was not re-pointed: {e}"))?;
        let repoint_ms = repointing.elapsed().as_secs_f64() * 1e3;
        tracing::info!(%device, %gateway, host = %target.host, port = target.port, "device re-pointed; waiting for it at the target");
        let started = tokio::time::Instant::now();
        loop {
            // By id: cheap enough to ask every few milliseconds.
            let arrived = ids
                .iter()
                .all(|id| self.registry.inspect(id, |t| t.gateway == gateway) == Some(true));
            if arrived {
                break;
            }
            if started.elapsed() > deadline {
                return Err(format!(
                    "the device did not register at {gateway} within {} s; it will be handed over if it does later",
                    deadline.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut handed = 0;
        for thing in self.device_things(&device) {
            handed += self
                .give_up(&thing.id, gateway, thing.moves, remote)
                .await
                .map_err(|e| format!("{}: history not handed over: {e}", thing.id))?;
        }
        Ok(MoveState::Arrived {
            readings_handed: handed,
            repoint_ms,
        })
    }

    async fn move_elsewhere(
        &self,
        transport: &dyn DeviceTransport,
        device: &DeviceRef,
        host: String,
        port: u16,
    ) -> Result<MoveState, String> {
        let protocol = transport
            .listening()
            .map_or_else(|| device.adapter.clone(), |l| l.protocol);
        let target = TransportTarget {
            service: String::new(),
            protocol,
            host,
            port,
        };
        transport
            .repoint(&device.device, &target)
            .await
            .map_err(|e| format!("the device was not re-pointed: {e}"))?;
        for thing in self.device_things(device) {
            if let Err(error) = self.set_available(&thing.id, false) {
                tracing::warn!(thing = %thing.id, %error, "cannot mark a moved-away thing unavailable");
            }
        }
        Ok(MoveState::Repointed)
    }

    /// Gives up a thing service that another gateway owns now: the catalog
    /// entry goes with a `Moved` change, then the history is handed over
    /// and deleted here. Returns how many readings were handed. A hand-over
    /// the target could not take for now goes on in the background.
    async fn give_up(
        self: &Arc<Self>,
        id: &ThingId,
        to: &str,
        moves: u32,
        remote: &dyn crate::Remote,
    ) -> Result<u64, RemoteError> {
        if !self.moves.releasing.lock().insert(id.clone()) {
            return Ok(0);
        }
        let outcome = self.hand_over(id, to, moves, remote).await;
        match &outcome {
            Err(error) if !matches!(error, RemoteError::Refused { .. }) => {
                self.keep_handing_over(id.clone(), to.to_owned(), moves);
            }
            _ => {
                self.moves.releasing.lock().remove(id);
            }
        }
        outcome
    }

    /// Tries a failed hand-over again every [`HAND_OVER_RETRY`] for an
    /// hour, so that a target that was busy or cut off still gets the
    /// history (the readings stay here until it has them).
    fn keep_handing_over(self: &Arc<Self>, id: ThingId, to: String, moves: u32) {
        let hub = self.clone();
        tokio::spawn(async move {
            for _ in 0..HAND_OVER_RETRIES {
                tokio::time::sleep(HAND_OVER_RETRY).await;
                let Some(remote) = hub.remote.read().clone() else {
                    break;
                };
                match hub.hand_over(&id, &to, moves, &*remote).await {
                    Ok(handed) => {
                        tracing::info!(thing = %id, %to, handed, "history handed over at last");
                        break;
                    }
                    Err(error @ RemoteError::Refused { .. }) => {
                        tracing::warn!(thing = %id, %to, %error, "history refused; kept here");
                        break;
                    }
                    Err(error) => {
                        tracing::debug!(thing = %id, %to, %error, "history not handed over yet");
                    }
                }
            }
            hub.moves.releasing.lock().remove(&id);
        });
    }

    async fn hand_over(
        &self,
        id: &ThingId,
        to: &str,
        moves: u32,
        remote: &dyn crate::Remote,
    ) -> Result<u64, RemoteError> {
        let store_failed = |e: StoreError| RemoteError::Refused {
            gateway: to.to_owned(),
            reason: format!("this gateway's store: {e}"),
        };
        self.store.forget_thing(id).map_err(store_failed)?;
        self.record_departure(id, to).map_err(store_failed)?;
        self.feed.lock().record(CatalogChange::Moved {
            id: id.clone(),
            to: to.to_owned(),
            moves,
        });
        let mut handed = 0u64;
        let mut from = Timestamp::MIN;
        loop {
            let window = Window {
                from,
                limit: HISTORY_CHUNK,
                ..Window::ALL
            };
            let chunk = self.store.history(id, window).map_err(store_failed)?;
            let Some(last) = chunk.last().map(|r| r.time) else {
                break;
            };
            let full = chunk.len() == HISTORY_CHUNK;
            handed += chunk.len() as u64;
            hand_chunk(remote, to, id, chunk).await?;
            if !full {
                break;
            }
            from = Timestamp(last.0 + 1);
        }
        self.store.delete_history(id).map_err(store_failed)?;
        self.forget_adoption(id);
        tracing::info!(thing = %id, %to, handed, "thing service handed over");
        Ok(handed)
    }

    fn record_departure(&self, id: &ThingId, to: &str) -> Result<(), StoreError> {
        let key = (id.adapter().to_owned(), id.device().to_owned());
        if self
            .moves
            .departed
            .read()
            .get(&key)
            .is_some_and(|g| g == to)
        {
            return Ok(());
        }
        self.store
            .put_state(DEPARTED, &state_key(&key.0, &key.1), to.as_bytes())?;
        self.moves.departed.write().insert(key, to.to_owned());
        Ok(())
    }

    fn forget_departure(&self, adapter: &str, device: &str) -> Result<(), StoreError> {
        let key = (adapter.to_owned(), device.to_owned());
        if self.moves.departed.write().remove(&key).is_some() {
            self.store
                .delete_state(DEPARTED, &state_key(adapter, device))?;
        }
        Ok(())
    }

    /// Devices of `adapter` that moved here from other gateways: an adapter
    /// that runs its devices itself (the simulator) runs these too.
    pub fn adopted_devices(&self, adapter: &str) -> Vec<String> {
        let mut devices: Vec<String> = self
            .moves
            .adopted
            .read()
            .devices(adapter)
            .cloned()
            .collect();
        devices.sort();
        devices
    }

    /// Whether `adapter`'s `device` left for another gateway (and has not
    /// come back): an adapter that runs its devices itself leaves it out.
    pub fn has_departed(&self, adapter: &str, device: &str) -> bool {
        self.moves
            .departed
            .read()
            .contains_key(&(adapter.to_owned(), device.to_owned()))
    }

    /// The device of `id` left: its adoption here, if any, ends.
    fn forget_adoption(&self, id: &ThingId) {
        let (adapter, device) = (id.adapter(), id.device());
        if self.runs_device(adapter, device)
            || self.moves.adopted.write().remove(adapter, device).is_none()
        {
            return;
        }
        if let Err(error) = self
            .store
            .delete_state(ADOPTED, &state_key(adapter, device))
        {
            tracing::warn!(thing = %id, %error, "cannot forget an adoption");
        }
    }

    /// Another gateway announced a thing service of ours with more moves:
    /// its device went there. Release it, unless a move here does already.
    pub(super) fn released_elsewhere(self: &Arc<Self>, thing: &ThingService) {
        if self.moves.releasing.lock().contains(&thing.id)
            || self.moves.moving.lock().contains(&DeviceRef::of(&thing.id))
        {
            return;
        }
        let Some(remote) = self.remote.read().clone() else {
            return;
        };
        let hub = self.clone();
        let id = thing.id.clone();
        let to = thing.gateway.clone();
        let moves = thing.moves;
        tracing::info!(thing = %id, %to, "a thing service of ours was taken over; releasing it");
        tokio::spawn(async move {
            if let Err(error) = hub.give_up(&id, &to, moves, &*remote).await {
                tracing::warn!(thing = %id, %to, %error, "history not handed over");
            }
        });
    }

    /// Like [`move_device`](Self::move_device), from any gateway: a device
    /// another gateway owns is moved by its owner, asked over the local
    /// cloud (the status says `at` which gateway to follow it).
    pub async fn move_device_anywhere(
        self: &Arc<Self>,
        device: &str,
        target: MoveTarget,
        deadline: Duration,
    ) -> Result<MoveStatus, MoveError> {
        match self.move_device(device, target.clone(), deadline) {
            Err(MoveError::NotOwner { owner, device }) => {
                let remote = self.remote.read().clone();
                let Some(remote) = remote else {
                    return Err(MoveError::NotOwner { owner, device });
                };
                remote
                    .start_move(&owner, device, target, deadline.as_secs())
                    .await
                    .map_err(|e| MoveError::Refused(e.to_string()))
            }
            started => started,
        }
    }

    /// Where a move stands, started here or (`at`) at another gateway;
    /// `None` when that gateway does not know it, or is no gateway of the
    /// local cloud that is up.
    pub async fn move_status_at(
        &self,
        at: &str,
        id: u64,
    ) -> Result<Option<MoveStatus>, RemoteError> {
        if at == self.gateway {
            return Ok(self.move_status(id));
        }
        let remote = self.remote.read().clone();
        match remote {
            Some(remote) if remote.is_reachable(at) => remote.move_status(at, id).await,
            _ => Ok(None),
        }
    }

    /// A move started here, while it is remembered.
    pub fn move_status(&self, id: u64) -> Option<MoveStatus> {
        self.moves.log.lock().iter().find(|s| s.id == id).cloned()
    }
}

/// The store key of a device's adoption or departure.
fn state_key(adapter: &str, device: &str) -> String {
    format!("{adapter}/{device}")
}

/// Hands one chunk of history over, trying again after a failure that may
/// pass (the target busy with many moves at once, a call timed out): the
/// chunk is stored there whole or not at all, and a repeat stores the same
/// readings under the same keys.
async fn hand_chunk(
    remote: &dyn crate::Remote,
    to: &str,
    id: &ThingId,
    chunk: Vec<Reading>,
) -> Result<(), RemoteError> {
    let mut pause = Duration::from_millis(200);
    let mut attempts = 1;
    loop {
        match remote.hand_history(to, id.clone(), chunk.clone()).await {
            Ok(()) => return Ok(()),
            Err(refused @ RemoteError::Refused { .. }) => return Err(refused),
            Err(error) if attempts >= HAND_ATTEMPTS => return Err(error),
            Err(error) => {
                tracing::debug!(thing = %id, %to, %error, attempts, "history chunk not taken yet; again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempts += 1;
            }
        }
    }
}
