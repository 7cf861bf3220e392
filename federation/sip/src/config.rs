//! What the node hands the agent: `[sip]` in typed form.

use std::net::SocketAddr;
use std::time::Duration;

use fogbank_taas::{Query, ThingId, ThingService};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Readings of the matching thing services go, as MESSAGEs, to `to`.
#[derive(Debug, Clone, Default)]
pub struct ForwardRule {
    /// Type and location prefix (the other fields are not used).
    pub select: Query,
    /// Empty: any id.
    pub ids: Vec<ThingId>,
    /// IMS identities, `sip:user@domain`.
    pub to: Vec<String>,
}

impl ForwardRule {
    pub fn matches(&self, thing: &ThingService) -> bool {
        self.select.matches(thing) && (self.ids.is_empty() || self.ids.contains(&thing.id))
    }
}

#[derive(Debug, Clone)]
pub struct SipConfig {
    /// The registrar and outbound proxy, `sip:host[:port]`.
    pub registrar: String,
    pub domain: String,
    pub username: String,
    pub password: String,
    pub transport: Transport,
    /// The socket the gateway's SIP endpoint binds.
    pub listen: SocketAddr,
    pub expires: Duration,
    /// Register every thing service this gateway owns, besides itself.
    pub register_things: bool,
    /// Notifications, publications and forwarded MESSAGEs of one thing
    /// are at least this far apart.
    pub min_interval: Duration,
    /// Where thing state is PUBLISHed (`sip:host[:port]`), if anywhere.
    pub presence_server: Option<String>,
    pub forward: Vec<ForwardRule>,
    /// Identities (`user@domain`) whose MESSAGEs may actuate.
    pub actuate: Vec<String>,
}
