//! Resource-directory registrations (RFC 9176) and what they mean for the
//! gateway: the registration parameters, the links in CoRE link format
//! (RFC 6690), and the device resources that become thing services —
//! plain links by `rt`, LWM2M-style object links by the IPSO registry
//! ([`fogbank_coap_protocol::lwm2m`]). Pure: no I/O.

use std::time::Duration;

use coap_lite::link_format::LinkFormatParser;
use fogbank_taas::Kind;
use fogbank_taas::id::sanitize_segment;
use fogbank_taas::thing::guess_type;

use fogbank_coap_protocol::{lwm2m, transport_policy};

/// RFC 9176's default registration lifetime.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(90_000);

/// A link of a registration or of a device's `/.well-known/core`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    pub path: String,
    pub rt: Option<String>,
    pub iface: Option<String>,
    pub ct: Option<u16>,
    pub obs: bool,
    /// A unit given as a link attribute (`u="Cel"`), not standard but
    /// common in examples.
    pub unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RdError {
    #[error("the registration names no endpoint (ep)")]
    NoEndpoint,
    #[error("lt must be a number of seconds from 1 to 4294967295, not {0:?}")]
    Lifetime(String),
    #[error("the link format cannot be read")]
    LinkFormat,
    #[error("the body is not UTF-8")]
    NotText,
}

/// Registration parameters from the query (`ep`, `d`, `lt`, `lwm2m`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameters {
    pub endpoint: Option<String>,
    pub sector: Option<String>,
    pub lifetime: Option<Duration>,
    pub lwm2m: Option<String>,
}

pub fn parameters(queries: &[String]) -> Result<Parameters, RdError> {
    let find = |key: &str| {
        queries.iter().find_map(|q| match q.split_once('=') {
            Some((k, v)) if k == key => Some(v.to_owned()),
            _ => None,
        })
    };
    let lifetime = match find("lt") {
        None => None,
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) if (1..=u64::from(u32::MAX)).contains(&seconds) => {
                Some(Duration::from_secs(seconds))
            }
            _ => return Err(RdError::Lifetime(text)),
        },
    };
    Ok(Parameters {
        endpoint: find("ep").filter(|e| !e.is_empty()),
        sector: find("d").filter(|d| !d.is_empty()),
        lifetime,
        lwm2m: find("lwm2m"),
    })
}

/// The links of a link-format body.
pub fn links(body: &[u8]) -> Result<Vec<Link>, RdError> {
    let text = std::str::from_utf8(body).map_err(|_| RdError::NotText)?;
    let mut links = Vec::new();
    for parsed in LinkFormatParser::new(text) {
        let (target, attributes) = parsed.map_err(|_| RdError::LinkFormat)?;
        let mut link = Link {
            path: target.to_owned(),
            ..Link::default()
        };
        for (key, value) in attributes {
            let value = value.to_string();
            match key {
                "rt" => link.rt = Some(value),
                "if" => link.iface = Some(value),
                // `ct` may list several formats; the first is the default.
                "ct" => link.ct = value.split_whitespace().next().and_then(|f| f.parse().ok()),
                "obs" => link.obs = true,
                "u" => link.unit = Some(value),
                _ => {}
            }
        }
        links.push(link);
    }
    Ok(links)
}

/// A device resource the gateway follows, as one thing service.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceResource {
    /// The thing id's resource segment.
    pub name: String,
    /// Where the value is read (and observed).
    pub read_path: String,
    /// Where a command is written (PUT).
    pub write_path: String,
    pub observable: bool,
    pub content_format: Option<u16>,
    pub semantic_type: String,
    pub unit: Option<String>,
    pub kind: Kind,
    /// The LWM2M resource holding the value (TLV payloads).
    pub lwm2m_resource: Option<u16>,
}

/// The resources of a registration (or of a device's own link list).
/// Links that are not values — the device's `/.well-known/core`, the
/// root, LWM2M objects outside the IPSO table — are left out.
/// Whether the links name the Transport Management Policy object: the
/// device can be told to register elsewhere.
pub fn movable(links: &[Link]) -> bool {
    links
        .iter()
        .any(|link| transport_policy::is_policy_link(&link.path))
}

pub fn device_resources(links: &[Link], lwm2m_style: bool) -> Vec<DeviceResource> {
    let mut resources = Vec::new();
    for link in links {
        let path = link.path.trim_start_matches('/');
        if path.is_empty()
            || path.starts_with(".well-known")
            || path == "rd"
            || transport_policy::is_policy_link(path)
        {
            continue;
        }
        if lwm2m_style || lwm2m::object_instance(path).is_some() {
            if let Some((object, instance)) = lwm2m::object_instance(path) {
                let base = format!("/{}/{instance}", object.object);
                resources.push(DeviceResource {
                    name: lwm2m::resource_name(object, instance),
                    read_path: format!("{base}/{}", object.value_resource),
                    write_path: format!("{base}/{}", object.value_resource),
                    // An LWM2M server may observe any resource.
                    observable: true,
                    content_format: None,
                    semantic_type: object.semantic_type.to_owned(),
                    unit: object.unit.map(str::to_owned),
                    kind: object.kind,
                    lwm2m_resource: Some(object.value_resource),
                });
            }
            continue;
        }
        let words = link.rt.as_deref().unwrap_or(path);
        let (guessed, guessed_unit) = guess_type(words);
        let (semantic_type, guessed_unit) = match guessed {
            "" | "value" => guess_type(path),
            _ => (guessed, guessed_unit),
        };
        let actuator = link.iface.as_deref().is_some_and(|i| i.contains("core.a"))
            || semantic_type == "switch";
        resources.push(DeviceResource {
            name: sanitize_segment(&path.replace('/', "-")),
            read_path: format!("/{path}"),
            write_path: format!("/{path}"),
            observable: link.obs,
            content_format: link.ct,
            semantic_type: semantic_type.to_owned(),
            unit: link.unit.clone().or(guessed_unit.map(str::to_owned)),
            kind: if actuator {
                Kind::Actuator
            } else {
                Kind::Sensor
            },
            lwm2m_resource: None,
        });
    }
    resources
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn registration_parameters() {
        let q = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = parameters(&q(&["ep=node-1", "lt=120", "d=floor-2"])).unwrap();
        assert_eq!(p.endpoint.as_deref(), Some("node-1"));
        assert_eq!(p.sector.as_deref(), Some("floor-2"));
        assert_eq!(p.lifetime, Some(Duration::from_secs(120)));
        assert_eq!(
            parameters(&q(&["lt=0"])),
            Err(RdError::Lifetime("0".into()))
        );
        assert_eq!(
            parameters(&q(&["lt=x"])),
            Err(RdError::Lifetime("x".into()))
        );
        assert_eq!(parameters(&q(&[])).unwrap().endpoint, None);
    }

    #[test]
    fn links_of_rfc_9176_and_libcoap() {
        let body = br#"</sensors/temp>;rt="temperature-c";if="sensor";obs;ct=0,</sensors/light>;rt="light-lux";if="sensor",</time>;if="clock";rt="ticks";title="Internal Clock";ct=0;obs"#;
        let links = links(body).unwrap();
        assert_eq!(links.len(), 3);
        assert_eq!(links[0].path, "/sensors/temp");
        assert_eq!(links[0].rt.as_deref(), Some("temperature-c"));
        assert!(links[0].obs);
        assert_eq!(links[0].ct, Some(0));
        assert!(!links[1].obs);
        let resources = device_resources(&links, false);
        assert_eq!(resources[0].name, "sensors-temp");
        assert_eq!(resources[0].semantic_type, "temperature");
        assert_eq!(resources[0].unit.as_deref(), Some("Cel"));
        assert_eq!(resources[1].semantic_type, "light");
        assert!(resources[2].observable);
        assert!(super::links(b"not a link").is_err());
    }

    #[test]
    fn lwm2m_object_links_become_ipso_things() {
        let links =
            links(b"</>;rt=\"oma.lwm2m\";ct=11543,</1/0>,</3/0>,</3303/0>,</3311/0>,</3311/1>")
                .unwrap();
        let resources = device_resources(&links, true);
        let names: Vec<&str> = resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["temperature", "light-control", "light-control-1"]);
        assert_eq!(resources[0].read_path, "/3303/0/5700");
        assert_eq!(resources[1].write_path, "/3311/0/5850");
        assert_eq!(resources[1].kind, Kind::Actuator);
    }

    proptest! {
        #[test]
        fn any_body_parses_or_fails_cleanly(body in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(links) = links(&body) {
                let _ = device_resources(&links, false);
                let _ = device_resources(&links, true);
            }
        }
    }
}
