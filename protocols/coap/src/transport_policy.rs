//! The Transport Management Policy object: how a gateway tells an LWM2M
//! device to register somewhere else.
//!
//! TRESCIMO re-points its devices by writing such an object (service name,
//! address, port); this is fogbank's, with an id from OMA's range for
//! private objects that need no registration (26241–32768). Its definition,
//! in the object XML Leshan and Wakaama load, is
//! `docs/lwm2m/31024.xml`. A device that implements it lists `</31024/0>`
//! in its registration; the gateway writes the instance (PUT of all four
//! resources), the device answers 2.04, deregisters (or lets its
//! registration lapse) and registers at `{protocol}://{address}:{port}`.
//!
//! Pure: no I/O.

use crate::message::format;

/// The object's id.
pub const OBJECT: u16 = 31024;
/// Resource 0: the service name (the target gateway's id; may be empty).
pub const SERVICE_NAME: u16 = 0;
/// Resource 1: host name or IP address to register at.
pub const ADDRESS: u16 = 1;
/// Resource 2: UDP (or TCP) port.
pub const PORT: u16 = 2;
/// Resource 3: `coap`, `coaps` or `mqtt`.
pub const PROTOCOL: u16 = 3;

/// The path a device's instance is written at.
pub fn instance_path() -> String {
    format!("/{OBJECT}/0")
}

/// Whether a registration link names the object (`/31024/0`, `/31024`).
pub fn is_policy_link(path: &str) -> bool {
    let mut segments = path.trim_matches('/').split('/');
    segments.next() == Some("31024") && segments.next().is_none_or(|i| i.parse::<u16>().is_ok())
}

/// What is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy<'a> {
    pub service_name: &'a str,
    pub address: &'a str,
    pub port: u16,
    pub protocol: &'a str,
}

/// The instance as SenML JSON (content-format 110), names relative to
/// the instance (`bn` = `/31024/0/`), as LWM2M 1.1 writes it.
pub fn senml_json(policy: &Policy) -> Vec<u8> {
    let pack = serde_json::json!([
        {"bn": format!("/{OBJECT}/0/"), "n": SERVICE_NAME.to_string(), "vs": policy.service_name},
        {"n": ADDRESS.to_string(), "vs": policy.address},
        {"n": PORT.to_string(), "v": policy.port},
        {"n": PROTOCOL.to_string(), "vs": policy.protocol},
    ]);
    serde_json::to_vec(&pack).unwrap_or_default()
}

/// The instance as OMA-TLV (content-format 11542): four resource TLVs.
pub fn tlv(policy: &Policy) -> Vec<u8> {
    let mut out = Vec::new();
    resource_tlv(&mut out, SERVICE_NAME, policy.service_name.as_bytes());
    resource_tlv(&mut out, ADDRESS, policy.address.as_bytes());
    // Integers are the shortest of 1, 2, 4 or 8 big-endian bytes.
    let port = i32::from(policy.port);
    if port <= i32::from(i16::MAX) {
        resource_tlv(&mut out, PORT, &(port as i16).to_be_bytes());
    } else {
        resource_tlv(&mut out, PORT, &port.to_be_bytes());
    }
    resource_tlv(&mut out, PROTOCOL, policy.protocol.as_bytes());
    out
}

/// One "resource with value" TLV (OMA LWM2M 1.0, 6.4.3).
fn resource_tlv(out: &mut Vec<u8>, id: u16, value: &[u8]) {
    let mut kind = 0b1100_0000u8;
    if id > 0xFF {
        kind |= 0b0010_0000;
    }
    let length = value.len();
    let length_bytes: Vec<u8> = match length {
        0..=7 => {
            kind |= length as u8;
            Vec::new()
        }
        8..=0xFF => {
            kind |= 0b0000_1000;
            vec![length as u8]
        }
        0x100..=0xFFFF => {
            kind |= 0b0001_0000;
            (length as u16).to_be_bytes().to_vec()
        }
        _ => {
            kind |= 0b0001_1000;
            (length as u32).to_be_bytes()[1..].to_vec()
        }
    };
    out.push(kind);
    if id > 0xFF {
        out.extend_from_slice(&id.to_be_bytes());
    } else {
        out.push(id as u8);
    }
    out.extend_from_slice(&length_bytes);
    out.extend_from_slice(value);
}

/// The formats a write is tried in, in order: SenML JSON, then TLV for a
/// device that answers 4.15 to the first.
pub const FORMATS: [u16; 2] = [format::SENML_JSON, format::LWM2M_TLV];

/// The body of a write in `content_format` (one of [`FORMATS`]).
pub fn body(policy: &Policy, content_format: u16) -> Vec<u8> {
    if content_format == format::LWM2M_TLV {
        tlv(policy)
    } else {
        senml_json(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lwm2m::{Tlv, decode_tlv, find_resource};

    const POLICY: Policy = Policy {
        service_name: "gw-b",
        address: "192.0.2.7",
        port: 5683,
        protocol: "coap",
    };

    #[test]
    fn the_tlv_form_reads_back_resource_by_resource() {
        let entries = decode_tlv(&tlv(&POLICY)).unwrap();
        assert_eq!(entries.len(), 4);
        assert!(entries.iter().all(|e| matches!(e, Tlv::Resource(..))));
        assert_eq!(find_resource(&entries, SERVICE_NAME), Some(&b"gw-b"[..]));
        assert_eq!(find_resource(&entries, ADDRESS), Some(&b"192.0.2.7"[..]));
        assert_eq!(
            find_resource(&entries, PORT),
            Some(&5683i16.to_be_bytes()[..])
        );
        assert_eq!(find_resource(&entries, PROTOCOL), Some(&b"coap"[..]));
    }

    #[test]
    fn the_tlv_form_matches_the_specification_byte_for_byte() {
        // Resource 0 "gw-b": type 0b11_0_00_100 (8-bit id, length 4 in the
        // type byte), id 0, then the bytes; resource 1 has 9 bytes, so an
        // 8-bit length field (0b11_0_01_000).
        let bytes = tlv(&POLICY);
        assert_eq!(&bytes[..6], &[0xC4, 0x00, b'g', b'w', b'-', b'b']);
        assert_eq!(&bytes[6..9], &[0xC8, 0x01, 9]);
        let port_at = 9 + 9;
        assert_eq!(&bytes[port_at..port_at + 4], &[0xC2, 0x02, 0x16, 0x33]);
    }

    #[test]
    fn the_senml_form_names_each_resource_under_the_instance() {
        let pack: serde_json::Value = serde_json::from_slice(&senml_json(&POLICY)).unwrap();
        assert_eq!(pack[0]["bn"], "/31024/0/");
        assert_eq!(pack[0]["n"], "0");
        assert_eq!(pack[0]["vs"], "gw-b");
        assert_eq!(pack[1]["vs"], "192.0.2.7");
        assert_eq!(pack[2]["v"], 5683);
        assert_eq!(pack[3]["vs"], "coap");
    }

    /// The object XML published for device makers says what this module
    /// writes: the id, and each resource's id and type.
    #[test]
    fn the_published_object_definition_matches() {
        let xml = include_str!("../../../docs/lwm2m/31024.xml");
        let text_of = |tag: &str, within: &str| -> String {
            let open = format!("<{tag}>");
            let start = within.find(&open).unwrap() + open.len();
            let end = within[start..].find(&format!("</{tag}>")).unwrap();
            within[start..start + end].to_owned()
        };
        assert_eq!(text_of("ObjectID", xml), OBJECT.to_string());
        assert_eq!(
            text_of("ObjectURN", xml),
            format!("urn:oma:lwm2m:x:{OBJECT}")
        );
        for (id, name, kind) in [
            (SERVICE_NAME, "Service Name", "String"),
            (ADDRESS, "Address", "String"),
            (PORT, "Port", "Integer"),
            (PROTOCOL, "Protocol", "String"),
        ] {
            let item = xml
                .split(&format!("<Item ID=\"{id}\">"))
                .nth(1)
                .unwrap_or_else(|| panic!("resource {id} is defined"));
            assert_eq!(text_of("Name", item), name);
            assert_eq!(text_of("Type", item), kind);
        }
    }

    proptest::proptest! {
        /// Whatever is written reads back, in both forms: any address (a
        /// host name, an IPv6 literal, up to a TLV's 24-bit length) and
        /// any port.
        #[test]
        fn any_policy_reads_back(
            service in "[a-z0-9_-]{0,40}",
            address in "\\PC{0,300}",
            port: u16,
            protocol in "[a-z]{1,8}",
        ) {
            let policy = Policy { service_name: &service, address: &address, port, protocol: &protocol };
            let entries = decode_tlv(&tlv(&policy)).unwrap();
            proptest::prop_assert_eq!(find_resource(&entries, SERVICE_NAME), Some(service.as_bytes()));
            proptest::prop_assert_eq!(find_resource(&entries, ADDRESS), Some(address.as_bytes()));
            proptest::prop_assert_eq!(find_resource(&entries, PROTOCOL), Some(protocol.as_bytes()));
            let port_bytes = find_resource(&entries, PORT).unwrap();
            let read = match port_bytes.len() {
                2 => i64::from(i16::from_be_bytes([port_bytes[0], port_bytes[1]])),
                4 => i64::from(i32::from_be_bytes(port_bytes.try_into().unwrap())),
                other => panic!("a port in {other} bytes"),
            };
            proptest::prop_assert_eq!(read, i64::from(port));

            let pack: serde_json::Value = serde_json::from_slice(&senml_json(&policy)).unwrap();
            proptest::prop_assert_eq!(pack[1]["vs"].as_str(), Some(address.as_str()));
            proptest::prop_assert_eq!(pack[2]["v"].as_u64(), Some(u64::from(port)));
        }
    }

    #[test]
    fn only_the_policy_object_is_a_policy_link() {
        assert!(is_policy_link("/31024/0"));
        assert!(is_policy_link("31024"));
        assert!(!is_policy_link("/3102/0"));
        assert!(!is_policy_link("/31024x/0"));
        assert!(!is_policy_link("/3303/0"));
    }
}
