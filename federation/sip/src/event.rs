//! The header values a notifier reads itself (RFC 6665 `Event` with the
//! RFC 6446 `min-interval` parameter, `Expires`), as pure functions of the
//! text so that they are fuzzed with the bodies. ezk parses the message
//! framing and the headers it types; these it hands over as text.

use std::time::Duration;

/// The one event package a gateway is the notifier for.
pub const PACKAGE: &str = "fogbank-thing";

/// A subscription is granted this long when its SUBSCRIBE names no expiry.
pub const DEFAULT_EXPIRES: u32 = 3600;
/// And at most this long: a watcher refreshes.
pub const MAX_EXPIRES: u32 = 86_400;

/// An `Event` header value: `package[;id=…][;min-interval=…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHeader {
    pub package: String,
    pub id: Option<String>,
    /// The watcher's minimum time between notifications (RFC 6446).
    pub min_interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the Event header is empty")]
    NoPackage,
    #[error("the event package {0:?} is not a token")]
    Package(String),
    #[error("min-interval {0:?} is not a number of seconds")]
    MinInterval(String),
    #[error("Expires {0:?} is not a number of seconds")]
    Expires(String),
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

pub fn parse_event(value: &str) -> Result<EventHeader, HeaderError> {
    let mut parts = value.split(';');
    let package = parts.next().unwrap_or_default().trim();
    if package.is_empty() {
        return Err(HeaderError::NoPackage);
    }
    if !is_token(package) {
        return Err(HeaderError::Package(package.to_owned()));
    }
    let mut event = EventHeader {
        package: package.to_ascii_lowercase(),
        id: None,
        min_interval: None,
    };
    for parameter in parts {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let value = value.trim().trim_matches('"');
        match name.trim().to_ascii_lowercase().as_str() {
            "id" => event.id = Some(value.to_owned()),
            "min-interval" => {
                let secs: u32 = value
                    .parse()
                    .map_err(|_| HeaderError::MinInterval(value.to_owned()))?;
                event.min_interval = Some(Duration::from_secs(secs.into()));
            }
            _ => {}
        }
    }
    Ok(event)
}

/// The expiry a SUBSCRIBE asks for: its `Expires`, else the default;
/// capped at [`MAX_EXPIRES`]. Zero is a fetch (or an unsubscribe).
pub fn parse_expires(value: Option<&str>) -> Result<u32, HeaderError> {
    match value.map(str::trim) {
        None => Ok(DEFAULT_EXPIRES),
        Some(text) => text
            .parse::<u64>()
            .map(|secs| secs.min(u64::from(MAX_EXPIRES)) as u32)
            .map_err(|_| HeaderError::Expires(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_headers() {
        assert_eq!(
            parse_event("fogbank-thing"),
            Ok(EventHeader {
                package: PACKAGE.into(),
                id: None,
                min_interval: None
            })
        );
        assert_eq!(
            parse_event(" Fogbank-Thing ; min-interval=5;id=\"a1\""),
            Ok(EventHeader {
                package: PACKAGE.into(),
                id: Some("a1".into()),
                min_interval: Some(Duration::from_secs(5))
            })
        );
        assert_eq!(parse_event(""), Err(HeaderError::NoPackage));
        assert_eq!(
            parse_event("presence;min-interval=soon"),
            Err(HeaderError::MinInterval("soon".into()))
        );
        assert_eq!(parse_event("a b"), Err(HeaderError::Package("a b".into())));
    }

    #[test]
    fn expires_values() {
        assert_eq!(parse_expires(None), Ok(DEFAULT_EXPIRES));
        assert_eq!(parse_expires(Some(" 0")), Ok(0));
        assert_eq!(parse_expires(Some("99999999999")), Ok(MAX_EXPIRES));
        assert_eq!(
            parse_expires(Some("-1")),
            Err(HeaderError::Expires("-1".into()))
        );
    }

    proptest::proptest! {
        #[test]
        fn event_parameters_round_trip(package in "[a-z][a-z0-9.-]{0,20}", secs: u32, id in "[a-z0-9]{1,8}") {
            let parsed = parse_event(&format!("{package};id={id};min-interval={secs}")).unwrap();
            proptest::prop_assert_eq!(parsed.package, package);
            proptest::prop_assert_eq!(parsed.id, Some(id));
            proptest::prop_assert_eq!(parsed.min_interval, Some(Duration::from_secs(secs.into())));
        }

        #[test]
        fn any_header_text_parses_or_is_refused(text in ".*") {
            let _ = parse_event(&text);
            let _ = parse_expires(Some(&text));
        }
    }
}
