//! The gateway as a SIP user agent under an IMS core (seed 000): things
//! are named by SIP URIs, `sip:{thing-id}@{domain}`, and IMS applications
//! reach them through the core.
//!
//! - [`agent`](Agent): the ezk endpoint on its own thread, wiring the
//!   parts below; `shared`: the state they share (every part depends on
//!   it, none on another part); `config`: the settings; `request`: reading
//!   and answering an incoming request.
//! - `registrations`: REGISTER of the gateway's and its things' addresses
//!   of record, refreshed, retried, bound again after a registrar restart.
//! - `inbound`: only the registrar/proxy may ask (403 otherwise).
//! - `notifier`: SUBSCRIBE/NOTIFY, event package `fogbank-thing`.
//! - `messages`: MESSAGE in (read, actuate) and out (forwarding rules).
//! - `presence`: PUBLISH of each thing's state as PIDF.
//! - [`content`] and [`event`]: the bodies and header values we write and
//!   read ourselves, pure functions (fuzzed).
//!
//! The SIP stack is ezk's: `sip-types` parses every message, `sip-core`
//! runs the RFC 3261 transactions over UDP and TCP, `sip-auth` answers
//! digest challenges (MD5, SHA-256), `sip-ua` makes REGISTERs and holds
//! dialogs. The exchanges around it are ours: ezk's registration loop
//! panics when a registrar does not answer, and it has no notifier.
//! Like every client of the hub, this crate knows thing services, not
//! devices or adapters.

mod agent;
mod config;
pub mod content;
pub mod event;
mod fleet;
mod inbound;
mod messages;
mod notifier;
mod outbound;
mod presence;
mod registrations;
mod request;
mod shared;

pub use agent::{Agent, AgentView, SipError};
pub use config::{ForwardRule, SipConfig, Transport};
pub use notifier::SubscriptionView;
pub use registrations::RegistrationView;
pub use shared::RegistrationState;
