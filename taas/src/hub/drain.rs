//! Draining a gateway: every device it owns that can move goes to the
//! other gateways of the local cloud (spread by how many thing services
//! each owns, or to one named gateway), and undraining brings the devices
//! whose home it is back. Each device goes by an ordinary move
//! ([`Hub::move_device`]), a few at a time; the drain waits for all of them
//! and reports what could not move and why.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Hub;
use super::moves::MoveError;
use crate::replicated::{Blob, DRAINING};
use crate::transport::{DeviceRef, MoveState, MoveTarget, SERVICES_ADAPTER};
use crate::{ThingService, Timestamp};

/// Moves running at once during a drain.
const IN_FLIGHT: usize = 32;

/// What a drain (or undrain) is doing, or did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainStatus {
    /// `drain` or `undrain`.
    pub kind: String,
    /// `running`, then `done` (everything that could move did) or
    /// `incomplete` (see `failed`).
    pub state: String,
    pub issued: f64,
    /// Devices that moved: device → the gateway it went to.
    pub moved: BTreeMap<String, String>,
    /// Devices that were to move and did not: device → why.
    pub failed: BTreeMap<String, String>,
    /// Devices that cannot move at all (a radio on this gateway's serial
    /// line, a third-party MQTT device): device → why.
    pub unmovable: BTreeMap<String, String>,
}

impl DrainStatus {
    fn new(kind: &str) -> Self {
        DrainStatus {
            kind: kind.to_owned(),
            state: "running".into(),
            issued: Timestamp::now().as_secs_f64(),
            moved: BTreeMap::new(),
            failed: BTreeMap::new(),
            unmovable: BTreeMap::new(),
        }
    }
}

impl Hub {
    /// Starts moving every device this gateway owns to the others (or to
    /// `to`); [`drain_status`](Self::drain_status) follows it.
    pub fn drain(
        self: &Arc<Self>,
        to: Option<String>,
        deadline: Duration,
    ) -> Result<DrainStatus, MoveError> {
        let remote = self.remote.read().clone();
        let targets: Vec<String> = match (&to, &remote) {
            (Some(gateway), Some(remote)) if remote.is_reachable(gateway) => vec![gateway.clone()],
            (Some(gateway), _) => return Err(MoveError::UnknownGateway(gateway.clone())),
            (None, Some(remote)) => remote.gateways_up(),
            (None, None) => Vec::new(),
        };
        if targets.is_empty() {
            return Err(MoveError::Refused(
                "no other gateway of the local cloud is up to take the devices".into(),
            ));
        }
        self.begin_drain("drain")?;
        let mut status = DrainStatus::new("drain");
        let mut movable = Vec::new();
        let mut services = Vec::new();
        for (device, things) in self.devices_owned() {
            if device.adapter == SERVICES_ADAPTER {
                // Extended services move by their placement, which passes
                // over a draining gateway.
                services.push(device);
            } else {
                match self.transport_of(&device.adapter) {
                    Ok(transport) => match transport.can_move(&device.device) {
                        Ok(()) => movable.push((device, things.len())),
                        Err(why) => {
                            status.unmovable.insert(device.to_string(), why.to_string());
                        }
                    },
                    Err(_) => {
                        status.unmovable.insert(
                            device.to_string(),
                            format!("the {} adapter cannot move its devices", device.adapter),
                        );
                    }
                }
            }
        }
        // Spread by load: each device to the target that owns (and is
        // given) the fewest thing services.
        let mut load: HashMap<String, usize> = targets
            .iter()
            .map(|g| (g.clone(), self.registry.count(|t| t.gateway == *g)))
            .collect();
        let mut plan = Vec::with_capacity(movable.len());
        for (device, things) in movable {
            let target = targets
                .iter()
                .min_by_key(|g| (load.get(*g).copied().unwrap_or(0), *g))
                .cloned()
                .unwrap_or_default();
            *load.entry(target.clone()).or_default() += things;
            plan.push((device, MoveTarget::Gateway(target)));
        }
        tracing::info!(
            devices = plan.len(),
            unmovable = status.unmovable.len(),
            ?targets,
            "draining"
        );
        self.run_drain(status.clone(), plan, services, deadline);
        Ok(status)
    }

    /// Starts bringing back every device whose home this gateway is and
    /// that another gateway owns now (each owner moves it here).
    pub fn undrain(self: &Arc<Self>, deadline: Duration) -> Result<DrainStatus, MoveError> {
        let Some(remote) = self.remote.read().clone() else {
            return Err(MoveError::Refused("this gateway has no local cloud".into()));
        };
        self.begin_drain("undrain")?;
        let mut away: BTreeMap<DeviceRef, String> = BTreeMap::new();
        for thing in self
            .registry
            .select(|t| t.id.gateway() == self.gateway && t.gateway != self.gateway)
        {
            // Extended services come back by their placement once their
            // inputs are home, not by a recall.
            if thing.adapter == SERVICES_ADAPTER {
                continue;
            }
            away.insert(DeviceRef::of(&thing.id), thing.gateway.clone());
        }
        // Each owner moves its device here; a move is over when its owner
        // says so (arrived: the history is here too).
        let mut away = away.into_iter();
        let next = move || {
            let recall = away.next();
            let remote = remote.clone();
            async move {
                let (device, owner) = recall?;
                let name = device.to_string();
                Some(match remote.recall_device(&owner, device).await {
                    Ok(id) => Ok(Following::new(name, owner, id)),
                    Err(error) => Err((name, error.to_string())),
                })
            }
        };
        let status = DrainStatus::new("undrain");
        let hub = self.clone();
        let started = status.clone();
        tokio::spawn(async move {
            let status = hub
                .clone()
                .follow_moves(started, next, deadline, Duration::from_millis(50))
                .await;
            hub.finish_drain(status);
        });
        Ok(status)
    }

    /// The drain or undrain running now, or the last one.
    pub fn drain_status(&self) -> Option<DrainStatus> {
        self.drain.lock().clone()
    }

    fn begin_drain(&self, kind: &str) -> Result<(), MoveError> {
        let mut drain = self.drain.lock();
        if drain.as_ref().is_some_and(|d| d.state == "running") {
            return Err(MoveError::Refused(format!(
                "a {} is running; wait for it",
                drain.as_ref().map_or("drain", |d| d.kind.as_str())
            )));
        }
        *drain = Some(DrainStatus::new(kind));
        drop(drain);
        // Tells every gateway's Service layer to place nothing here while
        // draining (`replicated::DRAINING`).
        let key = format!("{DRAINING}{}", self.gateway);
        let value = (kind == "drain").then(String::new);
        self.put_record(&key, value, Blob::None)?;
        Ok(())
    }

    fn finish_drain(&self, mut status: DrainStatus) {
        status.state = if status.failed.is_empty() {
            "done"
        } else {
            "incomplete"
        }
        .into();
        tracing::info!(kind = %status.kind, state = %status.state, moved = status.moved.len(), failed = status.failed.len(), "drain finished");
        *self.drain.lock() = Some(status);
    }

    /// The devices this gateway owns, with their thing services.
    fn devices_owned(&self) -> BTreeMap<DeviceRef, Vec<ThingService>> {
        let mut devices: BTreeMap<DeviceRef, Vec<ThingService>> = BTreeMap::new();
        for thing in self.registry.select(|t| t.gateway == self.gateway) {
            devices
                .entry(DeviceRef::of(&thing.id))
                .or_default()
                .push(thing);
        }
        devices
    }

    /// Runs the planned moves here, [`IN_FLIGHT`] at a time.
    fn run_drain(
        self: &Arc<Self>,
        status: DrainStatus,
        plan: Vec<(DeviceRef, MoveTarget)>,
        services: Vec<DeviceRef>,
        deadline: Duration,
    ) {
        *self.drain.lock() = Some(status.clone());
        let mut plan = plan.into_iter();
        let hub = self.clone();
        let next = move || {
            let planned = plan.next();
            let hub = hub.clone();
            async move {
                let (device, target) = planned?;
                let name = device.to_string();
                Some(match hub.move_device(&name, target, deadline) {
                    Ok(started) => Ok(Following::new(name, started.at, started.id)),
                    Err(error) => Err((name, error.to_string())),
                })
            }
        };
        let hub = self.clone();
        tokio::spawn(async move {
            let status = hub
                .clone()
                .follow_moves(status, next, deadline, Duration::from_millis(20))
                .await;
            let status = hub.follow_services(status, services, deadline).await;
            hub.finish_drain(status);
        });
    }

    /// Waits until every extended service that ran here runs on another
    /// gateway (its outputs owned there), and records where each went, or
    /// that it is still here at the deadline.
    async fn follow_services(
        &self,
        mut status: DrainStatus,
        services: Vec<DeviceRef>,
        deadline: Duration,
    ) -> DrainStatus {
        let started = tokio::time::Instant::now();
        let mut waiting = services;
        loop {
            waiting.retain(|service| {
                let owners: Vec<String> = self
                    .device_things(service)
                    .into_iter()
                    .map(|t| t.gateway)
                    .collect();
                match owners.first() {
                    Some(owner) if owners.iter().all(|o| o == owner && *o != self.gateway) => {
                        status.moved.insert(service.to_string(), owner.clone());
                        false
                    }
                    _ => true,
                }
            });
            if waiting.is_empty() {
                return status;
            }
            if started.elapsed() > deadline {
                for service in waiting {
                    status.failed.insert(
                        service.to_string(),
                        "the extended service still runs here: pinned to this gateway, or no other gateway may run it".into(),
                    );
                }
                return status;
            }
            *self.drain.lock() = Some(status.clone());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts moves with `next`, [`IN_FLIGHT`] at a time, follows each at
    /// the gateway that runs it until it ends (polling every `pause`), and
    /// records in `status` where each device went or why it did not.
    async fn follow_moves<F, Fut>(
        self: Arc<Self>,
        mut status: DrainStatus,
        mut next: F,
        deadline: Duration,
        pause: Duration,
    ) -> DrainStatus
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<Result<Following, (String, String)>>>,
    {
        let mut running: Vec<Following> = Vec::new();
        loop {
            while running.len() < IN_FLIGHT {
                match next().await {
                    Some(Ok(started)) => running.push(started),
                    Some(Err((device, reason))) => {
                        status.failed.insert(device, reason);
                    }
                    None => break,
                }
            }
            if running.is_empty() {
                break;
            }
            *self.drain.lock() = Some(status.clone());
            tokio::time::sleep(pause).await;
            let mut still = Vec::with_capacity(running.len());
            for following in running {
                let Following {
                    device,
                    at,
                    id,
                    since,
                } = &following;
                match self.move_status_at(at, *id).await {
                    Ok(Some(moved)) => match moved.state {
                        MoveState::Pending => still.push(following),
                        MoveState::Arrived { .. } | MoveState::Repointed => {
                            status.moved.insert(device.clone(), moved.to);
                        }
                        MoveState::Failed { reason } => {
                            status.failed.insert(device.clone(), reason);
                        }
                    },
                    Ok(None) => {
                        status
                            .failed
                            .insert(device.clone(), format!("gateway {at} forgot the move"));
                    }
                    // The mover's own deadline ends the move; past twice
                    // that, its silence is the answer.
                    Err(error) if since.elapsed() < deadline * 2 => {
                        tracing::debug!(%at, %error, "no word of a move yet");
                        still.push(following);
                    }
                    Err(error) => {
                        status.failed.insert(device.clone(), error.to_string());
                    }
                }
            }
            running = still;
        }
        status
    }
}

/// A move a drain or undrain follows: the gateway that runs it, its id.
struct Following {
    device: String,
    at: String,
    id: u64,
    since: tokio::time::Instant,
}

impl Following {
    fn new(device: String, at: String, id: u64) -> Self {
        Following {
            device,
            at,
            id,
            since: tokio::time::Instant::now(),
        }
    }
}
