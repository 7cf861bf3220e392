//! The CONNECT sniffing and the byte budget, and a connection refused at
//! its fixed header.

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

#[test]
fn the_budget_is_shared_and_given_back() {
    let budget = Budget::new(1000);
    let first = budget.take(600).unwrap();
    assert!(budget.take(500).is_none(), "over what is left");
    let second = budget.take(400).unwrap();
    assert!(budget.take(1).is_none());
    drop(first);
    assert!(budget.take(600).is_some());
    drop(second);
    assert!(budget.take(1000).is_some());
}

/// A CONNECT declaring 256 MiB is refused from its first five bytes,
/// without waiting for its body.
#[tokio::test]
async fn a_connect_over_the_limit_is_refused_at_its_fixed_header() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(&[0x10, 0xff, 0xff, 0xff, 0x7f, 0, 4])
            .await
            .unwrap();
        stream
    });
    let (mut device, _) = listener.accept().await.unwrap();
    let _client = client.await.unwrap();
    let mut prefix = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        read_connect(&mut device, &mut prefix, 16 << 10),
    )
    .await
    .expect("refused without waiting for the body");
    let error = read.unwrap_err();
    assert_eq!(
        sniff_error(&error),
        Some(&SniffError::TooLarge {
            length: 1 + 4 + 268_435_455,
            limit: 16 << 10
        })
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
