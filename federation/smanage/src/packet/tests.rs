use proptest::prelude::*;

use super::*;
use crate::entry::{ConfigAction, FieldName, ForwardAction, Operator};

fn header_bytes(source: u16, destination: u16, packet_type: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&source.to_be_bytes());
    bytes.extend_from_slice(&destination.to_be_bytes());
    bytes.extend_from_slice(&0u16.to_be_bytes());
    bytes.push(packet_type);
    bytes.push((10 + body.len()) as u8);
    bytes.push(16);
    bytes.push(1);
    bytes.extend_from_slice(body);
    bytes
}

#[test]
fn a_hello_from_an_sdvs_carries_state_and_battery() {
    let packet = decode(&header_bytes(0x0101, 0, 0x01, &[3, 87])).unwrap();
    assert_eq!(
        packet.body,
        Body::Hello(Some(SdvsStatus {
            state: 3,
            battery: 87
        }))
    );
    assert_eq!(packet.ttl, 16);
    assert_eq!(
        decode(&header_bytes(0, 0x0101, 0x01, &[])).unwrap().body,
        Body::Hello(None)
    );
    assert!(matches!(
        decode(&header_bytes(0x0101, 0, 0x01, &[3])),
        Err(DecodeError::Body { .. })
    ));
}

#[test]
fn a_response_is_21_5_as_215_and_minus_one() {
    let body = [
        0x00, 0x07, 0x02, 0x67, 0x5B, 0xA2, 0x00, 0x00, 0x00, 0x00, 0xD7, 0xFF,
    ];
    let packet = decode(&header_bytes(0x0101, 0, 0x04, &body)).unwrap();
    assert_eq!(
        packet.body,
        Body::Response(SensorResponse {
            request_id: 7,
            service: 2,
            time: 0x675B_A200,
            value: 215,
            exponent: -1,
        })
    );
}

#[test]
fn a_forwarding_entry_decodes_field_by_field() {
    let body = [1, 1, 0, 0x01, 0x05, 0, 0x02, 0x00, 0x00, 0x00, 0x00, 0x3C];
    let packet = decode(&header_bytes(0, 0x0101, 0x10, &body)).unwrap();
    assert_eq!(
        packet.body,
        Body::SetForwarding(ForwardingEntry {
            window: 1,
            field: FieldName::Destination,
            operator: Operator::Equal,
            value: 0x0105,
            action: ForwardAction::Unicast,
            value1: 0x0200,
            value2: 0,
            ttl: 60,
        })
    );
    let mut impossible = body;
    impossible[2] = 6;
    assert_eq!(
        decode(&header_bytes(0, 0x0101, 0x10, &impossible)),
        Err(DecodeError::ImpossibleEntry {
            what: "operator",
            value: 6
        })
    );
}

#[test]
fn a_configuring_entry_decodes_field_by_field() {
    let body = [
        0x00, 0x07, 0x02, 0x00, 0x01, 0x00, 0x0A, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x1E,
    ];
    let packet = decode(&header_bytes(0, 0x0101, 0x11, &body)).unwrap();
    assert_eq!(
        packet.body,
        Body::SetConfiguring(ConfiguringEntry {
            request_id: 7,
            service: 2,
            frequency: 1,
            period: 10,
            destination: Address::CONTROLLER,
            action: ConfigAction::Read,
            value: -1,
            ttl: 30,
        })
    );
}

#[test]
fn features_list_location_and_services() {
    let mut body = vec![0x01, 4];
    body.extend_from_slice(b"a/b1");
    body.push(1);
    body.extend_from_slice(&[1, 1, 4]);
    body.extend_from_slice(b"lamp");
    body.push(3);
    body.extend_from_slice(b"sim");
    let packet = decode(&header_bytes(0x0101, 0, 0x02, &body)).unwrap();
    assert_eq!(
        packet.body,
        Body::Report(Report::Features(Features {
            location: "a/b1".into(),
            services: vec![FeatureService {
                id: 1,
                on: true,
                kind: "lamp".into(),
                driver: "sim".into(),
            }],
        }))
    );
    body.push(0);
    assert!(decode(&header_bytes(0x0101, 0, 0x02, &body)).is_err());
}

#[test]
fn config_stats_need_y_or_n() {
    let mut stat = vec![
        0, 7, 2, 0, 20, 0, 0, 0, 3, 0x67, 0x5B, 0xA2, 0, 0, 0, 0, 3, b'N',
    ];
    let packet = decode(&header_bytes(0x0101, 0, 0x16, &stat)).unwrap();
    assert_eq!(
        packet.body,
        Body::ResponseConfigStats(vec![ConfigStat {
            request_id: 7,
            service: 2,
            ttl_left: 20,
            counter: 3,
            start_time: 0x675B_A200,
            running_time: 3,
            executed: false,
        }])
    );
    stat[17] = b'y';
    assert!(matches!(
        decode(&header_bytes(0x0101, 0, 0x16, &stat)),
        Err(DecodeError::ImpossibleEntry { .. })
    ));
}

#[test]
fn unknown_type_codes_are_data_and_a_request_wraps_a_whole_packet() {
    let data = header_bytes(0x0101, 0x0202, 0x42, b"hi");
    assert_eq!(
        decode(&data).unwrap().body,
        Body::Data {
            packet_type: 0x42,
            bytes: b"hi".to_vec()
        }
    );
    let request = decode(&header_bytes(0x0101, 0, 0x03, &data)).unwrap();
    let Body::Request(inner) = request.body else {
        panic!("not a request: {request:?}");
    };
    assert_eq!(inner.encode().unwrap(), data);
    assert!(decode(&header_bytes(0x0101, 0, 0x03, &data[..11])).is_err());
}

#[test]
fn a_packet_over_255_bytes_is_not_encoded() {
    let packet = Packet {
        source: Address(1),
        destination: Address::CONTROLLER,
        next_hop: Address::CONTROLLER,
        ttl: 1,
        message_id: 0,
        body: Body::Data {
            packet_type: 0x80,
            bytes: vec![0; 246],
        },
    };
    assert_eq!(packet.encode(), Err(EncodeError::TooLong { len: 256 }));
}

fn ascii(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(0x20u8..0x7f, 0..max)
        .prop_map(|b| b.into_iter().map(char::from).collect())
}

fn features() -> impl Strategy<Value = Features> {
    (
        ascii(20),
        proptest::collection::vec((1u8.., any::<bool>(), ascii(12), ascii(8)), 0..6),
    )
        .prop_map(|(location, services)| Features {
            location,
            services: services
                .into_iter()
                .map(|(id, on, kind, driver)| FeatureService {
                    id,
                    on,
                    kind,
                    driver,
                })
                .collect(),
        })
}

fn configuring() -> impl Strategy<Value = ConfiguringEntry> {
    (
        any::<u16>(),
        1u8..,
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
        0u8..4,
        any::<i16>(),
        any::<u16>(),
    )
        .prop_map(
            |(request_id, service, frequency, period, destination, action, value, ttl)| {
                ConfiguringEntry {
                    request_id,
                    service,
                    frequency,
                    period,
                    destination: Address(destination),
                    action: [
                        ConfigAction::Read,
                        ConfigAction::SwitchOn,
                        ConfigAction::SwitchOff,
                        ConfigAction::Set,
                    ][usize::from(action)],
                    value,
                    ttl,
                }
            },
        )
}

fn forwarding() -> impl Strategy<Value = ForwardingEntry> {
    (
        any::<u8>(),
        0usize..7,
        0usize..6,
        any::<u16>(),
        0usize..6,
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(
            |(window, field, operator, value, action, value1, value2, ttl)| ForwardingEntry {
                window,
                field: [
                    FieldName::Source,
                    FieldName::Destination,
                    FieldName::NextHop,
                    FieldName::Type,
                    FieldName::Length,
                    FieldName::Ttl,
                    FieldName::MessageId,
                ][field],
                operator: [
                    Operator::Equal,
                    Operator::NotEqual,
                    Operator::Greater,
                    Operator::GreaterOrEqual,
                    Operator::Less,
                    Operator::LessOrEqual,
                ][operator],
                value,
                action: [
                    ForwardAction::Unicast,
                    ForwardAction::Multicast,
                    ForwardAction::Broadcast,
                    ForwardAction::Drop,
                    ForwardAction::Modify,
                    ForwardAction::Continue,
                ][action],
                value1,
                value2,
                ttl,
            },
        )
}

fn report() -> impl Strategy<Value = Report> {
    prop_oneof![
        features().prop_map(Report::Features),
        (any::<u16>(), any::<u8>()).prop_map(|(request_id, service)| {
            Report::ConfigurationRemove {
                request_id,
                service,
            }
        }),
        any::<u8>().prop_map(|battery| Report::LowBatt { battery }),
        any::<u8>().prop_map(|state| Report::FullTask { state }),
        any::<u16>().prop_map(|request_id| Report::Completion { request_id }),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        proptest::option::of((any::<u8>(), any::<u8>()))
            .prop_map(|s| Body::Hello(s.map(|(state, battery)| SdvsStatus { state, battery }))),
        report().prop_map(Body::Report),
        (
            any::<u16>(),
            any::<u8>(),
            any::<u32>(),
            any::<i32>(),
            any::<i8>()
        )
            .prop_map(
                |(request_id, service, time, value, exponent)| Body::Response(SensorResponse {
                    request_id,
                    service,
                    time,
                    value,
                    exponent
                })
            ),
        forwarding().prop_map(Body::SetForwarding),
        configuring().prop_map(Body::SetConfiguring),
        configuring().prop_map(Body::ModifyConfiguration),
        any::<u8>().prop_map(|index| Body::RequestFwdStats { index }),
        any::<u16>().prop_map(|request_id| Body::RequestConfigStats { request_id }),
        proptest::collection::vec((any::<u8>(), any::<u16>(), any::<u32>()), 0..35).prop_map(|s| {
            Body::ResponseFwdStats(
                s.into_iter()
                    .map(|(index, ttl_left, counter)| FwdStat {
                        index,
                        ttl_left,
                        counter,
                    })
                    .collect(),
            )
        }),
        proptest::collection::vec(
            (
                any::<u16>(),
                any::<u8>(),
                any::<u16>(),
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                any::<bool>()
            ),
            0..13
        )
        .prop_map(|s| Body::ResponseConfigStats(
            s.into_iter()
                .map(
                    |(
                        request_id,
                        service,
                        ttl_left,
                        counter,
                        start_time,
                        running_time,
                        executed,
                    )| {
                        ConfigStat {
                            request_id,
                            service,
                            ttl_left,
                            counter,
                            start_time,
                            running_time,
                            executed,
                        }
                    }
                )
                .collect()
        )),
        Just(Body::RequestFeatures),
        features().prop_map(Body::ResponseFeatures),
        (0x19u8.., proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(packet_type, bytes)| Body::Data { packet_type, bytes }),
    ]
}

fn packet() -> impl Strategy<Value = Packet> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
        any::<u8>(),
        body(),
    )
        .prop_map(
            |(source, destination, next_hop, ttl, message_id, body)| Packet {
                source: Address(source),
                destination: Address(destination),
                next_hop: Address(next_hop),
                ttl,
                message_id,
                body,
            },
        )
}

proptest! {
    #[test]
    fn decode_after_encode_is_the_packet(packet in packet()) {
        // Every generated body fits in 255 bytes.
        let bytes = packet.encode().unwrap();
        prop_assert_eq!(bytes.len(), usize::from(bytes[7]));
        prop_assert_eq!(decode(&bytes).unwrap(), packet.clone());
        // A Request carries the encoded packet whole, when it fits.
        if bytes.len() + HEADER_LEN <= MAX_PACKET_LEN {
            let wrapped = Packet {
                body: Body::Request(Datagram::decode(&bytes).unwrap()),
                ..packet
            };
            prop_assert_eq!(decode(&wrapped.encode().unwrap()).unwrap(), wrapped);
        }
    }

    #[test]
    fn what_decodes_encodes_to_the_same_bytes(
        packet_type in prop_oneof![0u8..0x06, 0x10u8..0x19, any::<u8>()],
        body in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let mut bytes = vec![0x01, 0x02, 0, 0, 0, 0, packet_type, (10 + body.len()) as u8, 9, 1];
        bytes.extend_from_slice(&body);
        if let Ok(packet) = decode(&bytes) {
            prop_assert_eq!(packet.encode().unwrap(), bytes);
        }
    }

    #[test]
    fn any_bytes_are_a_packet_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(packet) = decode(&bytes) {
            prop_assert_eq!(packet.encode().unwrap(), bytes);
        }
    }
}
