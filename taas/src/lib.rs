//! The Things-as-a-Service layer.
//!
//! Everything above the adapters speaks to things through this crate: the
//! thing-service model ([`thing`], [`id`]), readings and SenML ([`reading`],
//! [`senml`]), Thing Descriptions ([`td`]), and the [`Hub`] that ties the
//! [`registry`], the RocksDB [`store`], the [`bus`] and actuation
//! ([`commands`]) together.
//!
//! This crate knows no protocol: no CoAP, MQTT, HTTP or SIP type appears in
//! it. Callers bring bytes in SenML form or typed values.

pub mod bus;
pub mod commands;
mod hub;
pub mod id;
pub mod reading;
pub mod registry;
pub mod remote;
pub mod replicated;
pub mod senml;
pub mod store;
pub mod td;
#[cfg(test)]
mod testing;
pub mod thing;
pub mod thread;
pub mod transport;
pub mod untrusted;

pub use bus::{Bus, BusStats, Event, Filter, Subscription};
pub use commands::{
    ActuationError, ActuationFuture, ActuationResult, Actuator, Command, CommandId, CommandState,
    CommandStatus,
};
pub use hub::{
    ActuateError, CommandTicket, Delivery, DrainStatus, Hub, HubOptions, HubStats, IngestError,
    Ingested, MOVE_DEADLINE, MoveError, ReadError, Receipt,
};
pub use id::{IdError, ThingId};
pub use reading::{Reading, ThingReading, Timestamp, Value};
pub use remote::{CatalogChange, CatalogSnapshot, Follow, FollowSet, Remote, RemoteError};
pub use store::{
    Halt, Retention, RetentionReport, Store, StoreError, StoreOptions, StoredService, Window,
};
pub use thing::{DataType, Kind, Location, Query, ThingService};
pub use transport::{
    DeviceOffer, DeviceRef, DeviceTransport, MoveState, MoveStatus, MoveTarget, RepointError,
    RepointFuture, SERVICES_ADAPTER, TransportTarget,
};
