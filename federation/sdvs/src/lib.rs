//! The gateway's S-MANAGE agent. Every device of the gateway (any adapter's,
//! the simulator's, an extended service's outputs) is one software-defined
//! virtual sensor (SDVS) towards the SD-IoT controller: it says Hello,
//! reports its features, battery and load, and runs the forwarding and
//! configuring instructions the controller installs — reads sampled from
//! the hub's latest readings, switches and sets through `Hub::actuate`,
//! the same path as `PUT …/actuation`.
//!
//! - [`block`]: the gateway's address block.
//! - [`directory`]: stable SDVS addresses and sensor-service ids, in the
//!   store.
//! - [`features`]: a device's features, cut to fit a packet.
//! - [`sdvs`]: one SDVS's state and the packets it starts.
//! - [`agent`]: the socket and the loop, on a thread of its own.
//!
//! Like every client of the hub, the agent knows thing services and
//! nothing of devices' protocols or adapters; the protocol itself is
//! `fogbank-smanage`.

pub mod agent;
pub mod block;
pub mod directory;
pub mod features;
pub mod sdvs;

pub use agent::{Agent, AgentConfig, AgentError, AgentStatus, SdvsView};
pub use block::AddressBlock;
