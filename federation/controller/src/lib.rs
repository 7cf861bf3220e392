//! The SD-IoT controller (`fogbank controller`): the other end of every
//! gateway's S-MANAGE agent. It learns the SDVSs from their Hellos and
//! reports, places applications' requests on their sensor services —
//! *full*, *partial* with a waiting time, or *unable* — programs them,
//! queues requests that conflict, re-plans around SDVSs that go down,
//! collects the data, and relays packets between gateways.
//!
//! - [`registry`]: what is known of each SDVS.
//! - [`requests`]: requests and the pure planning and conflict rules.
//! - [`engine`]: the socket, the loop and the state, kept in RocksDB.
//!
//! The REST northbound interface is the node's (`fogbank controller`
//! serves it); this crate knows no HTTP.

pub mod engine;
pub mod registry;
pub mod requests;

pub use engine::{Controller, ControllerConfig, ControllerError, DataPoint, Event, GatewayFilter};
pub use registry::SdvsRecord;
pub use requests::{
    Action, Assignment, AssignmentState, Outcome, Request, RequestSpec, RequestState, Unable,
};
