//! The embedded broker: rumqttd inside the gateway, so that devices need
//! nothing else. It runs for the life of the process on threads of its own.
//!
//! rumqttd serves MQTT 3.1.1 and MQTT 5 on separate listeners, but devices
//! expect both on one port. So the broker's two listeners sit on loopback
//! ports of their own, and the gateway's port is a front door
//! ([`front_door`]) that reads each connection's CONNECT and joins the
//! connection to the matching listener. The front door also hands every
//! device's publishes to the adapter's receiver, which stores them, before
//! it passes them to the broker; the adapter's own client session only
//! sends commands.
//!
//! Guarantee, exactly: a device's QoS 1 publish reaches rumqttd, which
//! acknowledges it, only once its readings are in the WAL. A publish that
//! cannot be stored closes the device's connection unacknowledged, and
//! the device sends it again when it reconnects.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

pub mod front_door;
mod interest;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "cannot listen for MQTT on {address}: {source} (set another address with --mqtt ADDR, or --mqtt off)"
    )]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the embedded MQTT broker: {0}")]
    Start(std::io::Error),
}

/// Starts the broker behind a front door on `listen` that stores devices'
/// publishes through the receiver `intake` holds, and returns the address
/// the gateway's own client connects to (the broker's MQTT 3.1.1
/// listener, directly).
pub fn start(
    listen: SocketAddr,
    max_message_bytes: usize,
    max_connect_bytes: usize,
    intake: std::sync::Arc<front_door::Intake>,
) -> Result<SocketAddr, EmbeddedError> {
    let public = TcpListener::bind(listen).map_err(|source| EmbeddedError::Listen {
        address: listen,
        source,
    })?;
    let bound = public.local_addr().map_err(EmbeddedError::Start)?;
    let loopback = local_client_address(SocketAddr::new(
        match bound.ip() {
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        },
        0,
    ));
    let v4 = free_loopback_port(loopback)?;
    let v5 = free_loopback_port(loopback)?;

    let server = |name: &str, listen| ServerSettings {
        name: name.into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: max_message_bytes,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            // In-memory log per filter: bounded, so a flood costs at most this.
            max_segment_size: 4 << 20,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server("mqtt-3.1.1", v4))])),
        v5: Some(HashMap::from([("1".to_owned(), server("mqtt-5", v5))])),
        ..Config::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(error) = broker.start() {
                tracing::error!(%error, "the embedded MQTT broker stopped");
            }
        })
        .map_err(EmbeddedError::Start)?;
    let backends = front_door::Backends {
        v4,
        v5,
        // The payload limit plus room for the topic and MQTT 5 properties.
        max_packet_bytes: max_message_bytes + (64 << 10),
        max_connect_bytes,
    };
    front_door::open(public, backends, intake).map_err(EmbeddedError::Start)?;
    tracing::info!(listen = %bound, "embedded MQTT broker listening (MQTT 3.1.1 and 5)");
    Ok(v4)
}

/// A loopback address with a port nobody holds at the moment.
fn free_loopback_port(loopback: SocketAddr) -> Result<SocketAddr, EmbeddedError> {
    let probe = TcpListener::bind(loopback).map_err(EmbeddedError::Start)?;
    probe.local_addr().map_err(EmbeddedError::Start)
}

fn local_client_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_connect_to_loopback_when_the_broker_listens_everywhere() {
        assert_eq!(
            local_client_address("0.0.0.0:1883".parse().unwrap()),
            "127.0.0.1:1883".parse().unwrap()
        );
        assert_eq!(
            local_client_address("[::]:1883".parse().unwrap()),
            "[::1]:1883".parse().unwrap()
        );
        assert_eq!(
            local_client_address("10.0.0.5:1883".parse().unwrap()),
            "10.0.0.5:1883".parse().unwrap()
        );
    }

    #[test]
    fn a_taken_address_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let intake = std::sync::Arc::new(front_door::Intake::new(None));
        let error = start(taken.local_addr().unwrap(), 1024, 1024, intake).unwrap_err();
        assert!(error.to_string().contains("--mqtt"), "{error}");
    }
}
