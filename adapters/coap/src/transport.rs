//! Moving a registered device to another endpoint: a write of the
//! Transport Management Policy object (`protocols/coap::transport_policy`)
//! to a device that listed it, after which the gateway stops following it.

use std::sync::Arc;

use coap_lite::{MessageClass, RequestType, ResponseType};
use fogbank_coap_protocol::endpoint::{self, RequestError};
use fogbank_coap_protocol::transport_policy::{self, Policy};
use fogbank_taas::untrusted::Excerpt;
use fogbank_taas::{DeviceTransport, RepointError, RepointFuture, TransportTarget};

use crate::devices::Directory;

/// The adapter's side of `Hub::move_device`.
pub struct Transport {
    pub directory: Arc<Directory>,
    /// `coap.advertise`: where devices moved here register, if set.
    pub advertise: Option<String>,
}

/// `host` or `host:port` (IPv6 in brackets with a port) → (host, port).
pub fn advertised(text: &str, default_port: u16) -> Option<(String, u16)> {
    let text = text.trim();
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
            (host.trim_matches(['[', ']']), port.parse().ok()?)
        }
        _ => (text.trim_matches(['[', ']']), default_port),
    };
    let clean = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    clean.then(|| (host.to_owned(), port))
}

impl DeviceTransport for Transport {
    fn listening(&self) -> Option<TransportTarget> {
        let address = self.directory.endpoint().local_addr();
        let (host, port) = self
            .advertise
            .as_deref()
            .and_then(|a| advertised(a, address.port()))
            .unwrap_or_else(|| (address.ip().to_string(), address.port()));
        Some(TransportTarget {
            service: String::new(),
            protocol: "coap".into(),
            host,
            port,
        })
    }

    fn can_move(&self, device: &str) -> Result<(), RepointError> {
        self.directory.movable_device(device).map(|_| ())
    }

    fn repoint(&self, device: &str, target: &TransportTarget) -> RepointFuture {
        let directory = self.directory.clone();
        let device = device.to_owned();
        let target = target.clone();
        let endpoint = directory.endpoint().clone();
        Box::pin(async move {
            let (key, address) = directory.movable_device(&device)?;
            // The exchange runs on the endpoint's runtime, beside its socket.
            let writer = endpoint.clone();
            endpoint
                .spawn(async move { write_policy(&writer, address, &target).await })
                .await
                .map_err(|e| RepointError::NoAnswer(e.to_string()))??;
            directory.let_go(&key);
            tracing::info!(%device, %address, "CoAP device re-pointed");
            Ok(())
        })
    }
}

/// PUT of the policy's instance: SenML JSON, or TLV for a device that
/// does not take SenML.
async fn write_policy(
    endpoint: &endpoint::Endpoint,
    address: std::net::SocketAddr,
    target: &TransportTarget,
) -> Result<(), RepointError> {
    let policy = Policy {
        service_name: &target.service,
        address: &target.host,
        port: target.port,
        protocol: &target.protocol,
    };
    let mut last = String::new();
    for content_format in transport_policy::FORMATS {
        let request = endpoint::request_packet(
            RequestType::Put,
            &transport_policy::instance_path(),
            &[],
            Some(content_format),
            transport_policy::body(&policy, content_format),
            None,
        );
        let response = endpoint
            .request(address, request)
            .await
            .map_err(|error| match error {
                RequestError::Timeout(_) => RepointError::NoAnswer(error.to_string()),
                _ => RepointError::Refused(error.to_string()),
            })?;
        let diagnostic = Excerpt(&String::from_utf8_lossy(&response.payload)).to_string();
        match response.header.code {
            MessageClass::Response(code) if !code.is_error() => return Ok(()),
            MessageClass::Response(ResponseType::UnsupportedContentFormat) => {
                last = format!("the device takes neither SenML JSON nor TLV: {diagnostic}");
            }
            MessageClass::Response(ResponseType::NotFound) => {
                return Err(RepointError::Unsupported(format!(
                    "the device has no {} instance: {diagnostic}",
                    transport_policy::instance_path()
                )));
            }
            code => {
                return Err(RepointError::Refused(format!(
                    "the device answered {code:?}: {diagnostic}"
                )));
            }
        }
    }
    Err(RepointError::Refused(last))
}

#[cfg(test)]
mod tests {
    use super::advertised;

    #[test]
    fn an_advertised_address_is_a_host_and_maybe_a_port() {
        assert_eq!(
            advertised("gw-b.site", 5683),
            Some(("gw-b.site".into(), 5683))
        );
        assert_eq!(
            advertised("10.0.0.2:5700", 5683),
            Some(("10.0.0.2".into(), 5700))
        );
        assert_eq!(advertised("fd00::2", 5683), Some(("fd00::2".into(), 5683)));
        assert_eq!(
            advertised("[fd00::2]:5700", 5683),
            Some(("fd00::2".into(), 5700))
        );
        for bad in ["", ":5683", "host:port", "a b", "coap://x"] {
            assert_eq!(advertised(bad, 5683), None, "{bad:?}");
        }
    }
}
