//! Moving an MQTT device to another gateway: our convention, for devices
//! we simulate and for firmware that adopts it (`docs/moves.md`).
//!
//! A device says it follows a transport-management policy by publishing,
//! retained, its current one on `things/{device}/policy`. To move it, the
//! gateway publishes, retained, the new policy on
//! `things/{device}/policy/set` — a JSON object with the resources of LWM2M
//! object 31024 (`service`, `address`, `port`, `protocol`) — and the device
//! connects to that broker. Retained, so that a device that was offline
//! hears it when it comes back. Third-party firmware (Tasmota, ESPHome,
//! Zigbee2MQTT) knows no such topic and cannot be moved this way.
//!
//! Only the embedded broker moves devices: gateways sharing an external
//! broker share its devices' connections already.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use fogbank_taas::{DeviceTransport, RepointError, RepointFuture, TransportTarget};
use parking_lot::Mutex;
use rumqttc::{AsyncClient, QoS};
use serde::Serialize;

/// Devices that published a policy: they can be moved.
pub type Movable = Arc<Mutex<HashSet<String>>>;
/// The adapter's broker session, once it started.
pub type SharedClient = Arc<Mutex<Option<AsyncClient>>>;

/// The topic a device's new policy is published on.
pub fn policy_topic(device: &str) -> String {
    format!("things/{device}/policy/set")
}

/// The policy as its JSON payload.
#[derive(Debug, Serialize)]
struct Policy<'a> {
    service: &'a str,
    address: &'a str,
    port: u16,
    protocol: &'a str,
}

/// The MQTT adapter's side of `Hub::move_device`.
pub struct Transport {
    pub movable: Movable,
    pub client: SharedClient,
    /// Where the embedded broker listens for devices.
    pub listen: SocketAddr,
}

impl DeviceTransport for Transport {
    fn listening(&self) -> Option<TransportTarget> {
        Some(TransportTarget {
            service: String::new(),
            protocol: "mqtt".into(),
            host: self.listen.ip().to_string(),
            port: self.listen.port(),
        })
    }

    fn can_move(&self, device: &str) -> Result<(), RepointError> {
        if self.movable.lock().contains(device) {
            Ok(())
        } else {
            Err(RepointError::Unsupported(format!(
                "MQTT device {device} publishes no things/{device}/policy: it follows no transport-management policy"
            )))
        }
    }

    fn repoint(&self, device: &str, target: &TransportTarget) -> RepointFuture {
        let follows = self.can_move(device);
        let client = self.client.lock().clone();
        let device = device.to_owned();
        let target = target.clone();
        Box::pin(async move {
            follows?;
            if target.protocol != "mqtt" {
                return Err(RepointError::Unsupported(format!(
                    "an MQTT device moves to an MQTT broker, not to {}",
                    target.protocol
                )));
            }
            let client = client.ok_or_else(|| {
                RepointError::NoAnswer("the MQTT adapter is not connected to its broker".into())
            })?;
            let policy = Policy {
                service: &target.service,
                address: &target.host,
                port: target.port,
                protocol: "mqtt",
            };
            // Strings and a number: it serialises.
            let payload = serde_json::to_vec(&policy).unwrap_or_default();
            client
                .publish(policy_topic(&device), QoS::AtLeastOnce, true, payload)
                .await
                .map_err(|e| {
                    RepointError::NoAnswer(format!("the policy was not published: {e}"))
                })?;
            tracing::info!(%device, host = %target.host, port = target.port, "MQTT device told to move");
            Ok(())
        })
    }
}
