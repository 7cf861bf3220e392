//! The embedded broker: rumqttd inside the gateway, so that devices need
//! nothing else. It runs for the life of the process on threads of its own;
//! the adapter is an ordinary client of it over loopback, so embedded and
//! external mode share one receive path.
//!
//! Guarantee, exactly: rumqttd acknowledges a device's QoS 1 publish when
//! it has the message in memory, and the adapter stores it within
//! milliseconds. A gateway killed inside that window loses what was in it;
//! a broker outage cannot happen without the gateway's own. Devices that
//! need more publish to an external broker with persistence (mode
//! `external`), where the gateway acknowledges only after storing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "cannot listen for MQTT on {address}: {source} (set another address with --mqtt ADDR, or --mqtt off)"
    )]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the embedded MQTT broker thread: {0}")]
    Thread(std::io::Error),
}

/// Starts the broker on `listen` and returns the address a local client
/// connects to (loopback when it listens on every interface).
pub fn start(listen: SocketAddr, max_message_bytes: usize) -> Result<SocketAddr, EmbeddedError> {
    // Bind once ourselves for a clear error; rumqttd would only log it.
    let probe = TcpListener::bind(listen).map_err(|source| EmbeddedError::Listen {
        address: listen,
        source,
    })?;
    let bound = probe.local_addr().map_err(|source| EmbeddedError::Listen {
        address: listen,
        source,
    })?;
    drop(probe);

    let server = ServerSettings {
        name: "fogbank".into(),
        listen: bound,
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
        // rumqttd serves MQTT 5 only on a port of its own; devices speak
        // 3.1.1 by default (Tasmota, ESPHome, Zigbee2MQTT), so that is what
        // the one configured port serves.
        v4: Some(HashMap::from([("1".to_owned(), server)])),
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
        .map_err(EmbeddedError::Thread)?;
    tracing::info!(listen = %bound, "embedded MQTT broker listening (MQTT 3.1.1)");
    Ok(local_client_address(bound))
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
        let error = start(taken.local_addr().unwrap(), 1024).unwrap_err();
        assert!(error.to_string().contains("--mqtt"), "{error}");
    }
}
