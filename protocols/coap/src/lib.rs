//! CoAP as the gateway speaks it, for everyone who speaks it: the CoAP
//! adapter (devices at `/rd`, observed or polled), the 802.15.4 adapter
//! (CoAP carried in 6LoWPAN) and the node (applications at `/things`).
//!
//! - [`endpoint`]: the gateway's one UDP endpoint — the RFC 7252 message
//!   layer, Observe (RFC 7641) on both sides, block-wise transfer
//!   (RFC 7959); requests routed by first path segment to a [`endpoint::Handler`].
//! - [`uploads`]: Block1 bodies being reassembled, bounded (pure).
//! - [`message`]: requests and responses as plain data, option helpers,
//!   content-format numbers.
//! - [`payload`]: a device's payload → values, by content format (text,
//!   SenML JSON/CBOR, CBOR, OMA-TLV).
//! - [`lwm2m`]: the IPSO objects and the OMA-TLV format (pure).
//! - [`device_info`]: the LWM2M Device object `/3/0` — manufacturer,
//!   model, serial, firmware (pure).
//!
//! Nothing here knows the resource directory, the hub or an adapter: what
//! a request means is its handler's business.

pub mod device_info;
pub mod endpoint;
pub mod lwm2m;
pub mod message;
pub mod payload;
pub mod transport_policy;
pub mod uploads;
