//! The local cloud: the gateways of a site sharing their thing services
//! over libp2p, so that an application on any of them uses every thing as
//! if it were local.
//!
//! - **Transport**: TCP, then the cluster key's private-network handshake
//!   (a gateway without the key cannot even start Noise), then Noise and
//!   Yamux. Peers come from mDNS and from configured bootstrap addresses;
//!   members announce their listen addresses in their beacons, so a
//!   gateway that knows one member comes to know them all.
//! - **Catalog**: each gateway is the single writer of its own thing
//!   services and gossips numbered deltas; a member whose copy is behind
//!   (a missed delta, a restart, a partition) fetches a snapshot. Beacons
//!   every [`BEACON_PERIOD`] carry each catalog's version: the digest that
//!   repairs anything missed, and the heartbeat that tells who is alive.
//! - **Calls**: latest reading, history and actuation of a remote thing go
//!   to its owner by request-response ([`wire::Request`]).
//! - **Streams**: a gateway joins a thing's readings topic only while a
//!   local consumer holds a subscription to it ([`Hub::subscribe_thing`]);
//!   the owner then writes that thing's readings onto a direct stream to
//!   it (`streams`).
//!
//! The hub sees none of this: it calls the [`Remote`] this module attaches.
//! The swarm runs on its own thread so that HTTP load cannot delay
//! beacons (and make healthy gateways look dead).

mod key_check;
mod keys;
pub mod members;
mod node;
mod records;
mod streams;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use libp2p::Multiaddr;
/// The cluster key (a libp2p private-network pre-shared key).
pub use libp2p::pnet::PreSharedKey as ClusterKey;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use fogbank_taas::commands::{ActuationError, ActuationFuture};
use fogbank_taas::remote::{Remote, RemoteError, RemoteFuture};
use fogbank_taas::store::Window;
use fogbank_taas::{
    Command, CommandState, DeviceOffer, DeviceRef, Hub, MoveStatus, MoveTarget, Reading, ThingId,
    ThingService, TransportTarget,
};
pub use keys::{
    IDENTITY_FILE, KeyError, cluster_key_from_file, cluster_key_from_hex, new_cluster_key,
};
pub use members::ForgetError;
use wire::{Request, Response};

/// How often a gateway tells the others it is alive and where its catalog is.
pub const BEACON_PERIOD: Duration = Duration::from_millis(500);
/// A member not heard from for this long is down.
pub const SILENCE: Duration = Duration::from_secs(2);
/// How long a read (latest, history, snapshot) may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a remote command may take: the owner's own deadline, plus the
/// way there and back.
pub const ACTUATE_TIMEOUT: Duration = Duration::from_secs(35);

/// How a gateway joins the local cloud.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// Where to listen, e.g. `/ip4/0.0.0.0/tcp/4001`.
    pub listen: Multiaddr,
    /// Bootstrap peers, with or without a `/p2p/` peer id; `/dns*`
    /// addresses are resolved by the system resolver at each dial.
    pub peers: Vec<Multiaddr>,
    pub mdns: bool,
    pub cluster_key: ClusterKey,
    /// Where the identity key is kept.
    pub data_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: Multiaddr, reason: String },
    #[error("cannot start the local cloud: {0}")]
    Start(String),
}

/// A gateway of the local cloud, as `GET /api/v1/peers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerInfo {
    pub gateway: String,
    pub peer_id: String,
    /// `up` or `down`; this gateway itself is `local`.
    pub state: &'static str,
    pub addresses: Vec<String>,
    /// Thing services it owns.
    pub things: usize,
    /// Readings it has stored since it started, as of its last beacon
    /// (twice a second): two reads make its ingest rate.
    pub readings_ingested: u64,
    /// Milliseconds since it was last heard from (0 for this gateway).
    pub last_seen_ms: u64,
}

/// The gateways that are up: kept by the swarm thread (a mirror of its
/// `Members`), read by the hub's handle without a round trip.
type Reachable = Arc<parking_lot::RwLock<std::collections::HashSet<String>>>;

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloudStats {
    pub gateways_up: usize,
    pub gateways_down: usize,
    /// Other gateways' thing services whose readings local consumers follow.
    pub following: usize,
    /// This gateway's thing services other gateways follow.
    pub followed: usize,
    /// Readings sent to other gateways / received from them.
    pub readings_sent: u64,
    pub readings_received: u64,
    /// Readings for a follower that did not keep up, dropped.
    pub readings_dropped: u64,
    /// Incoming connections that failed the handshake: most often a
    /// gateway without the cluster key (logged once per host; counted all).
    pub connections_refused: u64,
}

/// What the rest of the gateway asks of the swarm thread.
enum Order {
    Call {
        gateway: String,
        request: Request,
        reply: oneshot::Sender<Result<Response, RemoteError>>,
    },
    Interest {
        thing: ThingId,
        wanted: bool,
    },
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Forget {
        gateway: String,
        reply: oneshot::Sender<Result<(), ForgetError>>,
    },
    Stats(oneshot::Sender<CloudStats>),
    /// A pull of replicated records from this gateway ended.
    Pulled(String),
    /// What a bootstrap peer's `/dns*` address resolved to, to dial.
    Dial {
        origin: Multiaddr,
        resolved: Vec<Multiaddr>,
    },
}

/// The running local cloud of this gateway.
pub struct Cloud {
    orders: mpsc::UnboundedSender<Order>,
    peer_id: String,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    stop: parking_lot::Mutex<Option<oneshot::Sender<()>>>,
}

impl Cloud {
    /// Joins the local cloud: listens, dials the bootstrap peers, and
    /// attaches itself to `hub` so that remote thing services work.
    pub fn start(hub: Arc<Hub>, config: CloudConfig) -> Result<Cloud, CloudError> {
        let identity = keys::identity(&config.data_dir)?;
        let peer_id = identity.public().to_peer_id().to_string();
        let (orders, orders_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_hub = hub.clone();
        let loopback = orders.clone();
        let reachable = Reachable::default();
        let thread_reachable = reachable.clone();
        let thread = std::thread::Builder::new()
            .name("local-cloud".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(CloudError::Start(error.to_string())));
                        return;
                    }
                };
                runtime.block_on(node::run(
                    thread_hub,
                    config,
                    identity,
                    thread_reachable,
                    orders_rx,
                    loopback,
                    stop_rx,
                    ready_tx,
                ));
            })
            .map_err(|e| CloudError::Start(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let _ = thread.join();
                return Err(error);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(CloudError::Start("the swarm thread ended".into()));
            }
        }
        hub.attach_remote(Arc::new(Handle {
            orders: orders.clone(),
            reachable,
        }));
        tracing::info!(%peer_id, "joined the local cloud");
        Ok(Cloud {
            orders,
            peer_id,
            thread: parking_lot::Mutex::new(Some(thread)),
            stop: parking_lot::Mutex::new(Some(stop)),
        })
    }

    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// The gateways of the local cloud, this one first.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        let (tx, rx) = oneshot::channel();
        if self.orders.send(Order::Peers(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Forgets a gateway that is down for good (decommissioned): it leaves
    /// the peer list and its thing services leave the catalog. If it ever
    /// comes back, it is a new member like any other.
    pub async fn forget(&self, gateway: &str) -> Result<(), ForgetError> {
        let (reply, answer) = oneshot::channel();
        let order = Order::Forget {
            gateway: gateway.to_owned(),
            reply,
        };
        if self.orders.send(order).is_err() {
            return Err(ForgetError::Unknown(gateway.to_owned()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(ForgetError::Unknown(gateway.to_owned())))
    }

    pub async fn stats(&self) -> CloudStats {
        let (tx, rx) = oneshot::channel();
        if self.orders.send(Order::Stats(tx)).is_err() {
            return CloudStats::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Leaves the local cloud and waits until the swarm thread has let go
    /// of the hub (the others notice at once: the connections close).
    /// Must happen before the hub's store closes.
    pub fn stop(&self) {
        if let Some(stop) = self.stop.lock().take() {
            let _ = stop.send(());
        }
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The hub's way into the swarm thread.
#[derive(Clone)]
struct Handle {
    orders: mpsc::UnboundedSender<Order>,
    reachable: Reachable,
}

impl Handle {
    pub(crate) fn call(
        &self,
        gateway: &str,
        request: Request,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response, RemoteError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let gateway = gateway.to_owned();
        let sent = self.orders.send(Order::Call {
            gateway: gateway.clone(),
            request,
            reply,
        });
        async move {
            let unreachable = || RemoteError::Unreachable {
                gateway: gateway.clone(),
            };
            sent.map_err(|_| unreachable())?;
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Err(unreachable()),
                Err(_) => Err(RemoteError::Timeout {
                    gateway: gateway.clone(),
                    seconds: timeout.as_secs(),
                }),
            }
        }
    }
}

pub(crate) fn unexpected(gateway: &str, response: Response) -> RemoteError {
    let reason = match response {
        Response::Refused(reason) => reason,
        other => format!("answered out of turn: {other:?}"),
    };
    RemoteError::Refused {
        gateway: gateway.to_owned(),
        reason,
    }
}

impl Remote for Handle {
    fn latest(&self, thing: &ThingService) -> RemoteFuture<Option<Reading>> {
        let gateway = thing.gateway.clone();
        let call = self.call(&gateway, Request::Latest(thing.id.clone()), READ_TIMEOUT);
        Box::pin(async move {
            match call.await? {
                Response::Latest(reading) => Ok(reading),
                other => Err(unexpected(&gateway, other)),
            }
        })
    }

    fn history(&self, thing: &ThingService, window: Window) -> RemoteFuture<Vec<Reading>> {
        let gateway = thing.gateway.clone();
        let call = self.call(
            &gateway,
            Request::History {
                thing: thing.id.clone(),
                window,
            },
            READ_TIMEOUT,
        );
        Box::pin(async move {
            match call.await? {
                Response::History(readings) => Ok(readings),
                other => Err(unexpected(&gateway, other)),
            }
        })
    }

    fn actuate(&self, owner: &str, command: Command) -> ActuationFuture {
        let gateway = owner.to_owned();
        let call = self.call(
            &gateway,
            Request::Actuate {
                thing: command.thing,
                value: command.value,
            },
            ACTUATE_TIMEOUT,
        );
        Box::pin(async move {
            match call.await {
                Ok(Response::Actuated(CommandState::Succeeded { confirmed })) => {
                    Ok(confirmed.map(fogbank_taas::Value::from_json))
                }
                Ok(Response::Actuated(CommandState::Failed { reason })) => {
                    Err(ActuationError::Owner { gateway, reason })
                }
                Ok(Response::Actuated(CommandState::Pending)) => Err(ActuationError::Owner {
                    gateway,
                    reason: "no outcome".into(),
                }),
                Ok(other) => Err(ActuationError::Send(
                    unexpected(&gateway, other).to_string(),
                )),
                Err(error) => Err(ActuationError::Send(error.to_string())),
            }
        })
    }

    fn is_reachable(&self, gateway: &str) -> bool {
        self.reachable.read().contains(gateway)
    }

    fn offer_device(&self, gateway: &str, offer: DeviceOffer) -> RemoteFuture<TransportTarget> {
        let gateway = gateway.to_owned();
        let call = self.call(&gateway, Request::OfferDevice(offer), READ_TIMEOUT);
        Box::pin(async move {
            match call.await? {
                Response::Welcome(target) => Ok(target),
                other => Err(unexpected(&gateway, other)),
            }
        })
    }

    fn gateways_up(&self) -> Vec<String> {
        let mut up: Vec<String> = self.reachable.read().iter().cloned().collect();
        up.sort();
        up
    }

    fn recall_device(&self, gateway: &str, device: DeviceRef) -> RemoteFuture<u64> {
        let gateway = gateway.to_owned();
        let call = self.call(&gateway, Request::RecallDevice(device), READ_TIMEOUT);
        Box::pin(async move {
            match call.await? {
                Response::Recalled(id) => Ok(id),
                other => Err(unexpected(&gateway, other)),
            }
        })
    }

    fn start_move(
        &self,
        gateway: &str,
        device: DeviceRef,
        target: MoveTarget,
        deadline_secs: u64,
    ) -> RemoteFuture<MoveStatus> {
        let gateway = gateway.to_owned();
        let request = Request::StartMove {
            device,
            target,
            deadline_secs,
        };
        let call = self.call(&gateway, request, READ_TIMEOUT);
        Box::pin(async move {
            match call.await? {
                Response::Moving(Some(status)) => Ok(*status),
                other => Err(unexpected(&gateway, other)),
            }
        })
    }

    fn move_status(&self, gateway: &str, id: u64) -> RemoteFuture<Option<MoveStatus>> {
        let gateway = gateway.to_owned();
        let call = self.call(&gateway, Request::MoveStatus(id), READ_TIMEOUT);
        Box::pin(async move {
            match call.await? {
                Response::Moving(status) => Ok(status.map(|s| *s)),
                other => Err(unexpected(&gateway, other)),
            }
        })
    }

    fn hand_history(
        &self,
        gateway: &str,
        thing: ThingId,
        readings: Vec<Reading>,
    ) -> RemoteFuture<()> {
        let gateway = gateway.to_owned();
        let call = self.call(
            &gateway,
            Request::HandHistory { thing, readings },
            ACTUATE_TIMEOUT,
        );
        Box::pin(async move {
            match call.await? {
                Response::HistoryTaken(_) => Ok(()),
                other => Err(unexpected(&gateway, other)),
            }
        })
    }

    fn interest(&self, thing: &ThingId, wanted: bool) {
        let _ = self.orders.send(Order::Interest {
            thing: thing.clone(),
            wanted,
        });
    }
}
