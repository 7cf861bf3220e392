//! A device's features as ReportFeatures carries them: its location and
//! one entry per sensor service, cut to fit one packet.

use fogbank_smanage::{FeatureService, Features, HEADER_LEN, MAX_PACKET_LEN};
use fogbank_taas::ThingService;

/// Longer locations are cut: a features list must fit one packet.
pub const MAX_LOCATION: usize = 64;
/// Longer types and driver names are cut for the same reason.
const MAX_NAME: usize = 32;

/// The ASCII form of a name, non-ASCII characters as `?`, cut to `max`.
fn ascii(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if c.is_ascii() { c } else { '?' })
        .take(max)
        .collect()
}

/// The features of a device whose services are given in id order. The
/// second value is true when some services did not fit and were left out.
pub fn features<'a>(
    location: &str,
    services: impl IntoIterator<Item = (u8, &'a ThingService)>,
) -> (Features, bool) {
    let location = ascii(location, MAX_LOCATION);
    // Header, report kind, location length, location, count.
    let mut len = HEADER_LEN + 1 + 1 + location.len() + 1;
    let mut listed = Vec::new();
    let mut cut = false;
    for (id, thing) in services {
        let entry = FeatureService {
            id,
            on: thing.available,
            kind: ascii(&thing.semantic_type, MAX_NAME),
            driver: ascii(&thing.adapter, MAX_NAME),
        };
        let entry_len = 4 + entry.kind.len() + entry.driver.len();
        if len + entry_len > MAX_PACKET_LEN || listed.len() == usize::from(u8::MAX) {
            cut = true;
            break;
        }
        len += entry_len;
        listed.push(entry);
    }
    (
        Features {
            location,
            services: listed,
        },
        cut,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogbank_smanage::{Address, Body, Packet, Report};
    use fogbank_taas::{Kind, ThingId};

    #[test]
    fn features_always_fit_one_report() {
        let things: Vec<ThingService> = (0..40)
            .map(|i| {
                ThingService::new(
                    ThingId::parse(&format!("g.sim.d.resource{i}")).unwrap(),
                    Kind::Sensor,
                    "a-rather-long-semantic-type-name-indeed",
                    None,
                )
            })
            .collect();
        let (features, cut) = features(
            &"campus/é/".repeat(20),
            things.iter().enumerate().map(|(i, t)| (i as u8 + 1, t)),
        );
        assert!(cut);
        assert_eq!(features.location.len(), MAX_LOCATION);
        assert!(features.location.is_ascii());
        let packet = Packet {
            source: Address(0x100),
            destination: Address::CONTROLLER,
            next_hop: Address::CONTROLLER,
            ttl: 16,
            message_id: 0,
            body: Body::Report(Report::Features(features.clone())),
        };
        assert!(packet.encode().unwrap().len() <= MAX_PACKET_LEN);
        assert!(!features.services.is_empty());
    }
}
