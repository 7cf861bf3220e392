//! S-MANAGE, the protocol between the gateways' software-defined virtual
//! sensors (SDVSs) and the SD-IoT controller, as plain data and pure
//! functions. Both ends use it: the gateway's agent and `fogbank
//! controller`. The byte layout is the project's contract
//! (`docs/smanage.md`); nothing here does I/O, reads a clock or knows the
//! hub — time comes in as an argument, so every table can be tested and
//! fuzzed on its own.
//!
//! - [`header`]: the 10-byte header, addresses, type codes, and
//!   [`Datagram`], a header with an opaque body (what forwarding sees).
//! - [`packet`]: [`Packet`], the typed body of every type code, with
//!   [`decode`] and [`Packet::encode`].
//! - [`entry`]: forwarding and configuring entries, the two instructions
//!   a controller installs.
//! - [`forwarding`]: the forwarding table — windows, operators, actions,
//!   counters, TTLs.
//! - [`configuring`]: the configuring table — which instruction is due,
//!   running, executed or expired, and when a request is complete.
//! - [`value`]: readings as `value × 10^exponent`.
//! - [`counters`]: what an endpoint counts, by packet type and reason.

pub mod configuring;
pub mod counters;
pub mod entry;
pub mod error;
pub mod forwarding;
pub mod header;
pub mod packet;
pub mod value;

pub use counters::PacketCounters;
pub use entry::{
    CONFIGURING_ENTRY_LEN, ConfigAction, ConfiguringEntry, FORWARDING_ENTRY_LEN, FieldName,
    ForwardAction, ForwardingEntry, Operator,
};
pub use error::{DecodeError, EncodeError};
pub use header::{Address, Datagram, HEADER_LEN, Header, MAX_PACKET_LEN, PacketType};
pub use packet::{
    Body, ConfigStat, FeatureService, Features, FwdStat, Packet, Report, SdvsStatus,
    SensorResponse, decode,
};
