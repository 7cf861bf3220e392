//! The gateway as a SIP user agent towards an IMS core (seed 000): it
//! registers its own address of record `sip:{gateway}@{domain}` and, when
//! asked, one per thing service it owns, `sip:{thing-id}@{domain}`, so
//! that the core routes requests for a thing to the gateway that has it.
//!
//! - [`registrations`]: the bindings — registered as things appear,
//!   removed as they go, retried with backoff when the registrar refuses
//!   or is down, all removed on shutdown.
//!
//! The SIP stack is ezk's (`sip-core` transactions, `sip-auth` digest MD5
//! and SHA-256 with qop, `sip-ua`'s REGISTER builder); nothing here parses
//! SIP. The exchange around it is ours: ezk's own registration loop
//! panics when a registrar does not answer, and asks for 300 s whatever
//! it is told.
//! Like every client of the hub, this crate knows thing services, not
//! devices or adapters.

pub mod registrations;

pub use registrations::{RegistrationState, RegistrationView, Registrations, SipConfig, SipError};
