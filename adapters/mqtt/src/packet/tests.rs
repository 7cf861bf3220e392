//! Packets as real clients send them, and hostile ones.

use super::publish::write_publish;
use super::*;
use proptest::prelude::*;

fn string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

#[test]
fn a_qos1_publish_as_a_311_client_sends_it() {
    // mosquitto_pub -q 1 -t things/bench/level -m 42, as captured.
    let bytes = b"\x32\x18\x00\x12things/bench/level\x00\x0742";
    assert_eq!(frame_length(bytes), Ok(Some(bytes.len())));
    let read = publish(bytes, false).unwrap();
    assert_eq!(
        (read.topic, read.alias, read.qos, read.dup, read.pkid),
        ("things/bench/level", None, 1, false, 7)
    );
    assert_eq!(read.payload, b"42");
    // Nothing to resolve: the same bytes come back.
    assert_eq!(read.without_alias(read.topic), bytes);
}

#[test]
fn mqtt5_properties_are_skipped_and_the_alias_kept() {
    let properties = [
        &[0x01, 0x01][..],
        &[0x23, 0x00, 0x05],
        &[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v'],
    ]
    .concat();
    let bytes = write_publish(0x3a, b"", 9, Some(&properties), b"21.5");
    let read = publish(&bytes, true).unwrap();
    assert_eq!(read.alias, Some(5));
    assert_eq!(read.topic, "");
    assert_eq!((read.qos, read.dup, read.pkid), (1, true, 9));
    assert_eq!(read.payload, b"21.5");

    let resolved = read.without_alias("things/t-1/temperature");
    assert_eq!(frame_length(&resolved), Ok(Some(resolved.len())));
    let again = publish(&resolved, true).unwrap();
    assert_eq!(again.topic, "things/t-1/temperature");
    assert_eq!(again.alias, None);
    assert_eq!((again.qos, again.dup, again.pkid), (1, true, 9));
    assert_eq!(again.payload, b"21.5");
    // The other properties stay.
    assert_eq!(
        again.properties,
        [0x01, 0x01, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v']
    );
}

#[test]
fn a_publish_names_one_topic() {
    for (topic, v5) in [
        (&b""[..], false),
        (b"", true),
        (b"things/#", false),
        (b"things/+/level", true),
        (b"things/a\0b", false),
    ] {
        let bytes = write_publish(0x30, topic, 0, v5.then_some(&[][..]), b"1");
        assert!(
            matches!(publish(&bytes, v5), Err(PacketError::TopicName(_))),
            "{topic:?}"
        );
    }
}

#[test]
fn mqtt5_properties_follow_their_rules() {
    let with = |properties: &[u8], payload: &[u8]| {
        let bytes = write_publish(0x30, b"things/t-1/level", 0, Some(properties), payload);
        publish(&bytes, true).map(|p| p.payload.to_vec())
    };
    let user = [&[0x26][..], &string(b"k"), &string(b"v")].concat();
    let response = |topic: &[u8]| [&[0x08][..], &string(topic)].concat();
    // User properties may repeat; nothing else may.
    assert!(with(&[&user[..], &user].concat(), b"1").is_ok());
    assert_eq!(
        with(&[0x01, 0x00, 0x01, 0x00], b"1"),
        Err(PacketError::Property(0x01))
    );
    assert_eq!(
        with(&[&response(b"a/b")[..], &response(b"c")].concat(), b"1"),
        Err(PacketError::Property(0x08))
    );
    // A response topic is a topic name.
    assert!(with(&response(b"replies/gw-1"), b"1").is_ok());
    assert!(matches!(
        with(&response(b"replies/#"), b"1"),
        Err(PacketError::TopicName(_))
    ));
    // A payload said to be UTF-8 must be.
    assert!(with(&[0x01, 0x01], "21.5 °C".as_bytes()).is_ok());
    assert_eq!(
        with(&[0x01, 0x01], b"\xff\xfe"),
        Err(PacketError::PayloadFormat)
    );
    assert!(with(&[0x01, 0x00], b"\xff\xfe").is_ok());
}

#[test]
fn connects_of_both_levels_name_their_client() {
    let mut v4 = string(b"MQTT");
    v4.extend_from_slice(&[4, 0x00, 0x00, 0x3c]);
    v4.extend(string(b"sensor-1"));
    assert_eq!(
        connect(&frame(0x10, &v4)),
        Ok(Connect {
            level: 4,
            client_id: "sensor-1".into()
        })
    );
    let mut v5 = string(b"MQTT");
    v5.extend_from_slice(&[5, 0x02, 0x00, 0x3c, 0x03, 0x21, 0x00, 0x0a]);
    v5.extend(string(b"sensor-2"));
    assert_eq!(connect(&frame(0x10, &v5)).unwrap().client_id, "sensor-2");
    assert_eq!(connect(b"\x30\x00"), Err(PacketError::NotConnect));
}

#[test]
fn acknowledgements_name_their_publish() {
    assert_eq!(acknowledged(b"\x40\x02\x00\x07"), Some(7));
    assert_eq!(acknowledged(b"\x50\x02\x01\x00"), Some(256));
    assert_eq!(acknowledged(b"\x90\x03\x00\x01\x00"), None);
    assert_eq!(acknowledged(b"\x40\x01\x00"), None);
}

#[test]
fn only_whole_packets_are_complete() {
    let stream = b"\x40\x02\x00\x07\xc0\x00\x30\x05\x00";
    assert_eq!(
        complete(stream),
        Ok(vec![&b"\x40\x02\x00\x07"[..], &b"\xc0\x00"[..]])
    );
    assert_eq!(complete(b""), Ok(vec![]));
    assert_eq!(
        complete(b"\xc0\x00\x30\xff\xff\xff\xff\x01"),
        Err(PacketError::Length)
    );
}

#[test]
fn what_a_connected_client_may_send() {
    // MQTT 3.1.1 §2.2.1: 1 CONNECT .. 14 DISCONNECT; 0 and 15 reserved.
    let client = [3, 4, 5, 6, 7, 8, 10, 12, 14];
    let server_only_or_reserved = [0, 1, 2, 9, 11, 13];
    for v5 in [false, true] {
        for kind in client {
            assert!(client_may_send(kind, v5), "{kind}");
        }
        for kind in server_only_or_reserved {
            assert!(!client_may_send(kind, v5), "{kind}");
        }
    }
    // AUTH is MQTT 5's, in both directions.
    assert!(client_may_send(AUTH, true));
    assert!(!client_may_send(AUTH, false));
}

#[test]
fn a_topic_in_an_error_is_an_excerpt() {
    // A wildcard at the end of a 60 000-byte topic: the error names
    // its start, not all of it (it goes into a log line).
    let topic = format!("things/{}/#", "t".repeat(60_000));
    let body = [&(topic.len() as u16).to_be_bytes()[..], topic.as_bytes()].concat();
    let mut packet = vec![0x30];
    let mut length = body.len();
    while length > 0x7f {
        packet.push((length & 0x7f) as u8 | 0x80);
        length >>= 7;
    }
    packet.push(length as u8);
    packet.extend_from_slice(&body);
    let error = publish(&packet, false).unwrap_err();
    assert!(matches!(error, PacketError::TopicName(_)));
    assert!(error.to_string().len() < 200, "{error}");
}

#[test]
fn subscribe_connack_and_puback_as_clients_and_brokers_send_them() {
    // SUBSCRIBE as MQTT 3.1.1 §3.8 and MQTT 5 §3.8 lay it out: packet
    // id, (5: properties,) then each filter and its options byte.
    let v4 = b"\x82\x1a\x00\x01\x00\x08things/#\x00\x00\x0a$share/g/x\x00";
    assert_eq!(
        subscription_filters(v4, false),
        Ok(vec!["things/#", "$share/g/x"])
    );
    let v5 = b"\x82\x0e\x00\x01\x00\x00\x08things/#\x00";
    assert_eq!(subscription_filters(v5, true), Ok(vec!["things/#"]));
    assert_eq!(
        subscription_filters(b"\x82\x02\x00\x01", false),
        Err(PacketError::Filter)
    );
    assert_eq!(
        subscription_filters(b"\x82\x06\x00\x01\x00\x02\xff\xfe", false),
        Err(PacketError::Filter)
    );
    assert!(matches!(
        subscription_filters(b"\x82\x05\x00\x01\x00\x08t", false),
        Err(PacketError::Truncated(_))
    ));

    assert!(connack_accepts(b"\x20\x02\x00\x00"));
    assert!(connack_accepts(b"\x20\x03\x00\x00\x00")); // MQTT 5, no properties
    assert!(!connack_accepts(b"\x20\x02\x00\x05")); // not authorised
    assert!(!connack_accepts(b"\x20\x03\x00\x87\x00"));
    assert!(!connack_accepts(b"\x40\x02\x00\x00"));

    assert_eq!(puback(0x1234), *b"\x40\x02\x12\x34");
    assert_eq!(acknowledged(&puback(7)), Some(7));
}

#[test]
fn lengths_need_their_whole_header() {
    assert_eq!(frame_length(b""), Ok(None));
    assert_eq!(frame_length(b"\x30"), Ok(None));
    assert_eq!(frame_length(b"\x30\x80"), Ok(None));
    assert_eq!(frame_length(b"\x30\x80\x01"), Ok(Some(3 + 128)));
    assert_eq!(frame_length(b"\xc0\x00"), Ok(Some(2)));
    assert_eq!(
        frame_length(b"\x30\xff\xff\xff\xff\x01"),
        Err(PacketError::Length)
    );
}

proptest! {
    #[test]
    fn any_bytes_are_answered_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = frame_length(&bytes);
        let _ = publish(&bytes, false);
        let _ = publish(&bytes, true);
        let _ = connect(&bytes);
        let _ = acknowledged(&bytes);
        let _ = connack_accepts(&bytes);
        let _ = subscription_filters(&bytes, false);
        let _ = subscription_filters(&bytes, true);
    }

    #[test]
    fn subscriptions_read_back(
        filters in proptest::collection::vec("[a-z/+#$]{0,20}", 1..5),
        pkid in any::<u16>(),
        v5 in any::<bool>(),
    ) {
        let mut body = pkid.to_be_bytes().to_vec();
        if v5 {
            body.extend([2, 0x0b, 7]); // a subscription identifier
        }
        for filter in &filters {
            body.extend(string(filter.as_bytes()));
            body.push(1);
        }
        let bytes = frame(0x82, &body);
        let read = subscription_filters(&bytes, v5).unwrap();
        prop_assert_eq!(read, filters.iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn resolving_an_alias_keeps_everything_else(
        topic in "[a-z/]{1,40}",
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        qos in 0u8..3,
        pkid in 1u16..,
        alias in 1u16..,
        user in proptest::option::of("[a-z]{0,8}"),
    ) {
        let mut properties = vec![0x23];
        properties.extend_from_slice(&alias.to_be_bytes());
        if let Some(user) = &user {
            properties.push(0x26);
            properties.extend(string(user.as_bytes()));
            properties.extend(string(b"v"));
        }
        let bytes = write_publish(0x30 | (qos << 1), b"", pkid, Some(&properties), &payload);
        let read = publish(&bytes, true).unwrap();
        prop_assert_eq!(read.alias, Some(alias));
        let resolved = read.without_alias(&topic);
        prop_assert_eq!(frame_length(&resolved), Ok(Some(resolved.len())));
        let again = publish(&resolved, true).unwrap();
        prop_assert_eq!(again.topic, topic.as_str());
        prop_assert_eq!(again.alias, None);
        prop_assert_eq!(again.payload, &payload[..]);
        prop_assert_eq!((again.qos, again.pkid), (qos, if qos > 0 { pkid } else { 0 }));
        prop_assert_eq!(again.properties.len(), properties.len() - 3);
    }

    #[test]
    fn publishes_read_back(
        topic in "[a-z/]{1,40}",
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        qos in 0u8..3,
        pkid in 1u16..,
        dup in any::<bool>(),
    ) {
        let header = 0x30 | (qos << 1) | if dup { 0x08 } else { 0 };
        let bytes = write_publish(header, topic.as_bytes(), pkid, None, &payload);
        prop_assert_eq!(frame_length(&bytes), Ok(Some(bytes.len())));
        let read = publish(&bytes, false).unwrap();
        prop_assert_eq!(read.topic, topic.as_str());
        prop_assert_eq!(read.payload, &payload[..]);
        prop_assert_eq!(read.pkid, if qos > 0 { pkid } else { 0 });
        prop_assert_eq!(read.dup, dup);
    }
}
