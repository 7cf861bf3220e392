//! The Adaptation-layer plugin contract.
//!
//! A plugin connects one family of devices (MQTT, CoAP, 802.15.4, the
//! simulator) to the TaaS layer. It is an actix actor that
//! - **announces** thing services and **emits** readings and availability
//!   through the [`AdapterContext`] it is started with, and
//! - **accepts** [`Actuate`] messages and answers each with the outcome.
//!
//! The host runs every plugin under an [`AdapterSupervisor`]: a plugin that
//! stops or panics is restarted with exponential backoff, and the rest of
//! the node does not notice. Plugins know nothing of the local cloud, WASM
//! or HTTP, and never call each other.

mod supervisor;
pub use fogbank_taas::untrusted;

use std::sync::Arc;

use actix::{Message, Recipient};
use fogbank_taas::{
    ActuationResult, Command, Delivery, DeviceTransport, Hub, IdError, IngestError, Ingested,
    Reading, Receipt, StoreError, ThingId, ThingReading, ThingService, Timestamp, Value,
};

pub use supervisor::{AdapterSupervisor, Backoff, GetStatus, Shutdown, SupervisorStatus};

/// An actuation command for one of the plugin's thing services.
#[derive(Debug, Clone, Message)]
#[rtype(result = "ActuationResult")]
pub struct Actuate(pub Command);

/// Why a plugin's call into the TaaS layer failed.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("{thing} does not belong to adapter {adapter} of this gateway")]
    Foreign { thing: ThingId, adapter: String },
}

/// What the host gives a plugin: its name, its gateway, and the only door
/// into the TaaS layer it has.
#[derive(Clone)]
pub struct AdapterContext {
    hub: Arc<Hub>,
    adapter: String,
}

impl AdapterContext {
    pub fn new(hub: Arc<Hub>, adapter: &str) -> Self {
        AdapterContext {
            hub,
            adapter: adapter.to_owned(),
        }
    }

    pub fn gateway(&self) -> &str {
        self.hub.gateway()
    }

    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    /// The id of one of this plugin's thing services (parts are sanitised).
    /// Its first segment is the device's home: this gateway, or the one it
    /// first registered at when it moved here (see `Hub::move_device`).
    pub fn thing_id(&self, device: &str, resource: &str) -> Result<ThingId, IdError> {
        let device = fogbank_taas::id::sanitized(device);
        self.hub.with_device_home(&self.adapter, &device, |home| {
            ThingId::new(home, &self.adapter, &device, resource)
        })
    }

    /// This adapter's devices that moved here from other gateways.
    pub fn adopted_devices(&self) -> Vec<String> {
        self.hub.adopted_devices(&self.adapter)
    }

    /// Whether one of this adapter's devices left for another gateway.
    pub fn has_departed(&self, device: &str) -> bool {
        self.hub.has_departed(&self.adapter, device)
    }

    fn check_owned(&self, id: &ThingId) -> Result<(), AdapterError> {
        if id.adapter() == self.adapter
            && self
                .hub
                .with_device_home(&self.adapter, id.device(), |home| home == id.gateway())
        {
            Ok(())
        } else {
            Err(AdapterError::Foreign {
                thing: id.clone(),
                adapter: self.adapter.clone(),
            })
        }
    }

    /// Adds or updates one of this plugin's thing services.
    pub fn announce(&self, thing: ThingService) -> Result<(), AdapterError> {
        self.check_owned(&thing.id)?;
        Ok(self.hub.announce(thing)?)
    }

    pub fn withdraw(&self, id: &ThingId) -> Result<(), AdapterError> {
        self.check_owned(id)?;
        self.hub.withdraw(id)?;
        Ok(())
    }

    /// Stores and publishes readings; when this returns Ok they are durable
    /// and may be acknowledged to the device.
    pub fn emit(&self, readings: Vec<ThingReading>) -> Result<(), AdapterError> {
        for r in &readings {
            self.check_owned(&r.thing)?;
        }
        Ok(self.hub.ingest(readings)?)
    }

    /// Like [`emit`](Self::emit) for a delivery the device may repeat until
    /// acknowledged; see [`Hub::ingest_once`]. Acknowledge to the device
    /// after this returns Ok, then [`release`](Self::release) the slot.
    pub fn emit_once(
        &self,
        receipt: &Receipt,
        readings: Vec<ThingReading>,
    ) -> Result<Ingested, AdapterError> {
        for r in &readings {
            self.check_owned(&r.thing)?;
        }
        Ok(self.hub.ingest_once(receipt, readings)?)
    }

    /// Several deliveries that arrived back to back, in one store write;
    /// see [`Hub::ingest_deliveries`]. One outcome per delivery, in order.
    pub fn emit_deliveries(
        &self,
        deliveries: Vec<Delivery>,
    ) -> Vec<Result<Ingested, AdapterError>> {
        let mut refused = Vec::with_capacity(deliveries.len());
        let mut owned = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match delivery
                .readings
                .iter()
                .try_for_each(|r| self.check_owned(&r.thing))
            {
                Ok(()) => {
                    refused.push(None);
                    owned.push(delivery);
                }
                Err(error) => refused.push(Some(error)),
            }
        }
        let mut stored = self.hub.ingest_deliveries(owned).into_iter();
        refused
            .into_iter()
            .map(|refusal| match refusal {
                Some(error) => Err(error),
                // The hub answers every delivery; were one missing, it
                // must not be acknowledged as stored.
                None => stored.next().map_or_else(
                    || Err(IngestError::NoOutcome.into()),
                    |outcome| outcome.map_err(AdapterError::from),
                ),
            })
            .collect()
    }

    pub fn release(&self, slot: &[u8]) -> Result<(), AdapterError> {
        Ok(self.hub.release(slot)?)
    }

    /// Forgets the receipts of several acknowledged deliveries at once.
    pub fn release_all<'a>(
        &self,
        slots: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), AdapterError> {
        Ok(self.hub.release_all(slots)?)
    }

    pub fn emit_value(
        &self,
        thing: &ThingId,
        value: Value,
        time: Timestamp,
    ) -> Result<(), AdapterError> {
        self.emit(vec![ThingReading {
            thing: thing.clone(),
            reading: Reading { time, value },
        }])
    }

    /// Marks every thing service of one device reachable or not.
    pub fn set_device_available(&self, device: &str, available: bool) -> Result<(), AdapterError> {
        Ok(self
            .hub
            .set_device_available(&self.adapter, device, available)?)
    }

    /// The time of a reading that arrived without one; never the same twice.
    pub fn arrival_time(&self) -> Timestamp {
        self.hub.arrival_time()
    }

    /// Counts an event for `/metrics` (`fogbank_adapter_events_total`).
    pub fn count(&self, event: &'static str) {
        self.hub.count_adapter_event(&self.adapter, event);
    }

    /// Read access for plugins that need the catalog (e.g. to restore state).
    pub fn thing(&self, id: &ThingId) -> Option<ThingService> {
        self.hub.thing(id)
    }

    /// Looks at a thing service without copying it: for the checks a
    /// plugin makes on every message.
    pub fn inspect_thing<R>(&self, id: &ThingId, f: impl FnOnce(&ThingService) -> R) -> Option<R> {
        self.hub.inspect_thing(id, f)
    }

    pub fn latest(&self, id: &ThingId) -> Option<Reading> {
        self.hub.latest(id).flatten()
    }
}

/// A kind of plugin, able to start its actor (again, after a crash).
pub trait Plugin: Send + 'static {
    /// The adapter name: the second segment of its thing-service ids.
    fn name(&self) -> &str;

    /// Starts the plugin's actor in the current arbiter and returns where
    /// its commands go.
    fn start(&self, context: AdapterContext) -> Recipient<Actuate>;

    /// How its devices are told to register at another gateway, for an
    /// adapter whose devices can move (see `Hub::move_device`).
    fn transport(&self) -> Option<Arc<dyn DeviceTransport>> {
        None
    }
}
