//! The embedded broker's public port: one listener for MQTT 3.1.1 and 5.
//!
//! Every connection starts with a CONNECT packet whose variable header
//! names the protocol level (4 for 3.1.1, 5 for MQTT 5). The front door
//! reads just that far, connects to the broker listener for that level on
//! loopback, replays the bytes it read and then splices the two sockets
//! until either side closes. Nothing after the level is interpreted here:
//! authentication, keep-alive and wills stay the broker's business (a
//! device that vanishes closes its spliced connection, so its will fires).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

/// A client that has not sent its CONNECT by then is dropped, so idle
/// sockets cannot pile up in front of the broker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The broker's listeners, by protocol.
#[derive(Debug, Clone, Copy)]
pub struct Backends {
    pub v4: SocketAddr,
    pub v5: SocketAddr,
}

/// Why a connection's first bytes are not an MQTT CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SniffError {
    #[error("the first packet is not CONNECT (header byte {0:#04x})")]
    NotConnect(u8),
    #[error("the CONNECT packet's remaining length is malformed")]
    Length,
    #[error("the CONNECT packet names no MQTT protocol")]
    ProtocolName,
}

/// The protocol level of the CONNECT packet that `prefix` begins with, or
/// `None` while more bytes are needed to tell.
pub fn protocol_level(prefix: &[u8]) -> Result<Option<u8>, SniffError> {
    let Some(&header) = prefix.first() else {
        return Ok(None);
    };
    // CONNECT is packet type 1 with all flag bits zero (MQTT 3.1.1 §3.1.1).
    if header != 0x10 {
        return Err(SniffError::NotConnect(header));
    }
    // Remaining length: one to four bytes, seven bits each.
    let mut at = 1;
    loop {
        let Some(&byte) = prefix.get(at) else {
            return Ok(None);
        };
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at == 5 {
            return Err(SniffError::Length);
        }
    }
    let Some(name_length) = prefix.get(at..at + 2) else {
        return Ok(None);
    };
    let name_length = usize::from(u16::from_be_bytes([name_length[0], name_length[1]]));
    at += 2;
    let expected: &[u8] = match name_length {
        4 => b"MQTT",
        6 => b"MQIsdp",
        _ => return Err(SniffError::ProtocolName),
    };
    let seen = &prefix[at.min(prefix.len())..(at + name_length).min(prefix.len())];
    if !expected.starts_with(seen) {
        return Err(SniffError::ProtocolName);
    }
    Ok(prefix.get(at + name_length).copied())
}

/// Serves `listener` on a thread of its own for the life of the process.
pub fn open(listener: std::net::TcpListener, backends: Backends) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("mqtt-front-door".into())
        .spawn(move || runtime.block_on(serve(listener, backends)))?;
    Ok(())
}

async fn serve(listener: std::net::TcpListener, backends: Backends) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "the MQTT port cannot be served");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((device, peer)) => {
                let span = tracing::debug_span!("mqtt_connection", %peer);
                tokio::spawn(
                    async move {
                        if let Err(error) = splice(device, backends).await {
                            tracing::debug!(%error, "MQTT connection ended");
                        }
                    }
                    .instrument(span),
                );
            }
            Err(error) => {
                // Out of file descriptors, typically: wait instead of spinning.
                tracing::warn!(%error, "cannot accept an MQTT connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn splice(mut device: TcpStream, backends: Backends) -> io::Result<()> {
    device.set_nodelay(true)?;
    let mut prefix = Vec::with_capacity(64);
    let level = tokio::time::timeout(CONNECT_TIMEOUT, read_level(&mut device, &mut prefix))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no CONNECT in time"))??;
    let backend = match level {
        5 => backends.v5,
        _ => backends.v4,
    };
    let mut broker = TcpStream::connect(backend).await?;
    broker.set_nodelay(true)?;
    broker.write_all(&prefix).await?;
    tokio::io::copy_bidirectional(&mut device, &mut broker).await?;
    Ok(())
}

async fn read_level(device: &mut TcpStream, prefix: &mut Vec<u8>) -> io::Result<u8> {
    loop {
        match protocol_level(prefix) {
            Ok(Some(level)) => return Ok(level),
            Ok(None) => {}
            Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
        }
        if device.read_buf(prefix).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A CONNECT as a client sends it, from the fixed header on.
    fn connect(name: &[u8], level: u8, remaining_length: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x10];
        packet.extend_from_slice(remaining_length);
        packet.extend_from_slice(&(name.len() as u16).to_be_bytes());
        packet.extend_from_slice(name);
        packet.push(level);
        packet.extend_from_slice(&[0x02, 0x00, 0x3c, 0x00, 0x01, b'c']);
        packet
    }

    #[test]
    fn levels_of_real_connect_packets() {
        assert_eq!(protocol_level(&connect(b"MQTT", 4, &[18])), Ok(Some(4)));
        assert_eq!(protocol_level(&connect(b"MQTT", 5, &[19])), Ok(Some(5)));
        assert_eq!(protocol_level(&connect(b"MQIsdp", 3, &[20])), Ok(Some(3)));
        // A long CONNECT (a big will) has a multi-byte remaining length.
        assert_eq!(
            protocol_level(&connect(b"MQTT", 5, &[0x80, 0x80, 0x01])),
            Ok(Some(5))
        );
    }

    #[test]
    fn every_strict_prefix_asks_for_more() {
        let packet = connect(b"MQTT", 5, &[0xc1, 0x02]);
        let level_at = 1 + 2 + 2 + 4;
        for end in 0..=level_at {
            assert_eq!(protocol_level(&packet[..end]), Ok(None), "{end}");
        }
    }

    #[test]
    fn what_is_not_a_connect_is_refused_early() {
        assert_eq!(
            protocol_level(b"GET / HTTP/1.1\r\n"),
            Err(SniffError::NotConnect(b'G'))
        );
        assert_eq!(
            protocol_level(&[0x10, 0xff, 0xff, 0xff, 0xff]),
            Err(SniffError::Length)
        );
        assert_eq!(
            protocol_level(&connect(b"HTTP", 4, &[18])),
            Err(SniffError::ProtocolName)
        );
        assert_eq!(
            protocol_level(&[0x10, 12, 0x00, 0x04, b'M', b'X']),
            Err(SniffError::ProtocolName)
        );
    }

    proptest! {
        #[test]
        fn any_bytes_are_answered_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = protocol_level(&bytes);
        }

        #[test]
        fn a_level_once_known_stays_known(level in any::<u8>(), tail in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut packet = connect(b"MQTT", level, &[30]);
            let known = protocol_level(&packet);
            packet.extend(tail);
            prop_assert_eq!(known, Ok(Some(level)));
            prop_assert_eq!(protocol_level(&packet), Ok(Some(level)));
        }
    }
}
