//! Where a device registers, and how an adapter tells one to go
//! elsewhere: the types a move between gateways (`Hub::move_device`)
//! shares with the adapters that re-point devices and with the local cloud
//! that carries the offer.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::ThingId;

/// Where a device registers: a gateway's device endpoint, or any other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportTarget {
    /// The service name a device shows for it: the gateway's id, or empty.
    pub service: String,
    /// `coap` (and later `coaps`, `mqtt`).
    pub protocol: String,
    /// Host name or IP address. An unspecified address (`0.0.0.0`) means
    /// "the address you reach this gateway at"; the local cloud fills it in.
    pub host: String,
    pub port: u16,
}

/// Why a device could not be told to go elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepointError {
    /// The device does not implement the transport policy.
    #[error("{0}")]
    Unsupported(String),
    /// The adapter follows no such device now.
    #[error("{0}")]
    NoDevice(String),
    /// The device answered with a failure.
    #[error("{0}")]
    Refused(String),
    /// The device did not answer.
    #[error("{0}")]
    NoAnswer(String),
}

pub type RepointFuture = Pin<Box<dyn Future<Output = Result<(), RepointError>> + Send>>;

/// Implemented by adapters whose devices can be moved.
pub trait DeviceTransport: Send + Sync {
    /// Where devices of this adapter register at this gateway.
    fn listening(&self) -> Option<TransportTarget>;
    /// Whether `device` can be told to go elsewhere (a drain lists the
    /// others as unmovable, with this reason).
    fn can_move(&self, device: &str) -> Result<(), RepointError> {
        let _ = device;
        Ok(())
    }
    /// Tells `device` to register at `target` from now on; once it said
    /// yes, the adapter stops following it here.
    fn repoint(&self, device: &str, target: &TransportTarget) -> RepointFuture;
    /// Another gateway hands `device` over to this one. Devices that come
    /// by themselves (CoAP) need nothing; an adapter that runs its devices
    /// (the simulator) starts running it.
    fn expect(&self, device: &str) -> Result<(), RepointError> {
        let _ = device;
        Ok(())
    }
}

/// A text that names no device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} names no device: give {{gateway}}.{{adapter}}.{{device}} or one of its thing-service ids"
)]
pub struct BadDevice(pub String);

/// The adapter segment of extended services' outputs: such a "device" is
/// a service, which moves by its placement, not by a transport.
pub const SERVICES_ADAPTER: &str = "service";

/// One device, named as its thing services' ids name it:
/// `{home}.{adapter}.{device}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceRef {
    pub home: String,
    pub adapter: String,
    pub device: String,
}

impl DeviceRef {
    /// `{home}.{adapter}.{device}`, or any thing-service id of the device.
    pub fn parse(text: &str) -> Result<Self, BadDevice> {
        let bad = || BadDevice(text.chars().take(80).collect());
        let segments: Vec<&str> = text.split('.').collect();
        let probe = match segments.len() {
            3 => ThingId::parse(&format!("{text}.x")),
            4 => ThingId::parse(text),
            _ => return Err(bad()),
        }
        .map_err(|_| bad())?;
        Ok(DeviceRef {
            home: probe.gateway().to_owned(),
            adapter: probe.adapter().to_owned(),
            device: probe.device().to_owned(),
        })
    }

    pub fn of(id: &ThingId) -> Self {
        DeviceRef {
            home: id.gateway().to_owned(),
            adapter: id.adapter().to_owned(),
            device: id.device().to_owned(),
        }
    }

    pub(crate) fn holds(&self, id: &ThingId) -> bool {
        id.gateway() == self.home && id.adapter() == self.adapter && id.device() == self.device
    }
}

impl std::fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.home, self.adapter, self.device)
    }
}

/// What the owner tells the target before the device comes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceOffer {
    pub device: DeviceRef,
    /// The moves its thing services will have at the target.
    pub moves: u32,
}

/// Where a move stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum MoveState {
    Pending,
    /// The device registered at the target gateway, which owns its thing
    /// services now and holds their history.
    Arrived {
        readings_handed: u64,
        /// How long the device took to take its new endpoint (CoAP: the
        /// policy write's round trip, 4.15 fallback included).
        repoint_ms: f64,
    },
    /// The device took the new endpoint (one outside the local cloud).
    Repointed,
    Failed {
        reason: String,
    },
}

/// A move's record, as polling clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveStatus {
    pub id: u64,
    pub device: String,
    pub to: String,
    pub things: Vec<ThingId>,
    /// The gateway that runs the move (the device's owner when it began).
    pub at: String,
    pub issued: f64,
    #[serde(flatten)]
    pub state: MoveState,
}

/// Where a device is told to go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveTarget {
    /// A gateway of the local cloud: the ids stay, the history follows.
    Gateway(String),
    /// Any endpoint: the device leaves the local cloud's sight.
    Endpoint { host: String, port: u16 },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_device_is_named_by_its_prefix_or_any_of_its_ids() {
        let device = DeviceRef::parse("gw-a.coap.meter-7").unwrap();
        assert_eq!(
            DeviceRef::parse("gw-a.coap.meter-7.temperature"),
            Ok(device.clone())
        );
        assert_eq!(device.to_string(), "gw-a.coap.meter-7");
        for bad in [
            "",
            "gw-a",
            "gw-a.coap",
            "gw-a..x",
            "GW.coap.x",
            "a.b.c.d.e",
            "a.b.c/d",
        ] {
            assert!(DeviceRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_text_names_a_device_or_is_refused(text in "\\PC{0,300}") {
            if let Ok(device) = DeviceRef::parse(&text) {
                prop_assert_eq!(DeviceRef::parse(&device.to_string()), Ok(device));
            }
        }

        #[test]
        fn every_clean_prefix_names_its_device(
            home in "[a-z0-9_-]{1,20}",
            adapter in "[a-z0-9_-]{1,20}",
            name in "[a-z0-9_-]{1,20}",
        ) {
            let device = DeviceRef::parse(&format!("{home}.{adapter}.{name}")).unwrap();
            prop_assert_eq!((device.home, device.adapter, device.device), (home, adapter, name));
        }
    }
}
