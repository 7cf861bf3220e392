//! The bodies the gateway writes and reads over SIP, as pure functions so
//! that they can be fuzzed and tested on their own (no I/O, no panics):
//!
//! - a reading as SenML JSON (the REST read form: one record with `bn`,
//!   `bu`, `t` and a value), or as PIDF (RFC 3863) whose tuple carries the
//!   reading as SenML XML (RFC 8428 §7) in the SenML namespace;
//! - the `Accept` negotiation between those two;
//! - the command in an incoming MESSAGE: `GET` in `text/plain`, or a
//!   SenML JSON pack carrying the value for an actuator.

use fogbank_taas::reading::{Reading, Timestamp, Value};
use fogbank_taas::senml;

pub const SENML_JSON: &str = "application/senml+json";
pub const PIDF_XML: &str = "application/pidf+xml";
pub const TEXT_PLAIN: &str = "text/plain";

/// A body format a watcher can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    SenmlJson,
    Pidf,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::SenmlJson => SENML_JSON,
            Format::Pidf => PIDF_XML,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::SenmlJson => "senml+json",
            Format::Pidf => "pidf+xml",
        }
    }
}

/// The format for the `Accept` header values of a request (each may list
/// several types). No `Accept` means SenML JSON; SenML JSON wins when
/// both are acceptable; `None` when neither is (406).
pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Option<Format> {
    let mut any = false;
    let mut pidf = false;
    for range in accept.into_iter().flat_map(|v| v.split(',')) {
        any = true;
        // Parameters (q=…) are ignored: a q=0 offer is not worth the code.
        let media = range.split(';').next().unwrap_or_default().trim();
        if media.eq_ignore_ascii_case(SENML_JSON)
            || media.eq_ignore_ascii_case("application/*")
            || media == "*/*"
        {
            return Some(Format::SenmlJson);
        }
        pidf |= media.eq_ignore_ascii_case(PIDF_XML);
    }
    match (any, pidf) {
        (false, _) => Some(Format::SenmlJson),
        (true, true) => Some(Format::Pidf),
        (true, false) => None,
    }
}

/// A thing service's reading as a SenML JSON pack, named by its id.
pub fn senml_json(thing: &str, unit: Option<&str>, reading: &Reading) -> Vec<u8> {
    senml::to_json(&senml::pack_for(
        thing,
        unit,
        [(reading.time, reading.value.clone())],
    ))
}

/// The body in `format`: a reading, or for a thing without one yet, an
/// empty pack (SenML JSON) or a tuple with no reading (PIDF).
pub fn body(
    format: Format,
    entity: &str,
    thing: &str,
    unit: Option<&str>,
    available: bool,
    reading: Option<&Reading>,
) -> Vec<u8> {
    match (format, reading) {
        (Format::SenmlJson, Some(reading)) => senml_json(thing, unit, reading),
        (Format::SenmlJson, None) => b"[]".to_vec(),
        (Format::Pidf, reading) => pidf(entity, thing, unit, available, reading).into_bytes(),
    }
}

/// A PIDF document for `entity` (the thing's AoR) with one tuple: `open`
/// while the thing is available, and the reading as SenML XML.
pub fn pidf(
    entity: &str,
    thing: &str,
    unit: Option<&str>,
    available: bool,
    reading: Option<&Reading>,
) -> String {
    let basic = if available { "open" } else { "closed" };
    let sensml = reading
        .map(|r| senml_xml(thing, unit, r))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{}\">\
         <tuple id=\"reading\"><status><basic>{basic}</basic></status>{sensml}</tuple>\
         </presence>",
        escape(entity)
    )
}

/// One reading as a SenML XML pack (RFC 8428 §7).
pub fn senml_xml(thing: &str, unit: Option<&str>, reading: &Reading) -> String {
    let mut record = format!("<senml bn=\"{}\"", escape(thing));
    if let Some(unit) = unit {
        record += &format!(" bu=\"{}\"", escape(unit));
    }
    record += &format!(" t=\"{}\"", reading.time.as_secs_f64());
    match &reading.value {
        Value::Number(n) => record += &format!(" v=\"{n}\""),
        Value::Bool(b) => record += &format!(" vb=\"{b}\""),
        Value::String(s) => record += &format!(" vs=\"{}\"", escape(s)),
        Value::Data(d) => {
            use base64::Engine;
            let data = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d);
            record += &format!(" vd=\"{data}\"");
        }
    }
    format!("<sensml xmlns=\"urn:ietf:params:xml:ns:senml\">{record}/></sensml>")
}

/// Escapes text for an XML attribute or element.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// What a MESSAGE to a thing asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// The latest reading, in a MESSAGE back.
    Get,
    /// This value to the actuator.
    Actuate(Value),
}

/// Why a MESSAGE's body is not a command: 415 for the type, 400 else.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("a MESSAGE to a thing is text/plain GET or application/senml+json, not {0:?}")]
    Type(String),
    #[error("text/plain must say GET")]
    NotGet,
    #[error("not a SenML pack: {0}")]
    Senml(String),
    #[error("the pack must carry exactly one value, it carries {0}")]
    Values(usize),
}

/// The command in a MESSAGE body of `content_type`.
pub fn parse_command(content_type: &str, body: &[u8]) -> Result<Command, CommandError> {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        TEXT_PLAIN => match std::str::from_utf8(body).map(str::trim) {
            Ok(text) if text.eq_ignore_ascii_case("GET") => Ok(Command::Get),
            _ => Err(CommandError::NotGet),
        },
        SENML_JSON => {
            let records =
                senml::parse_json(body).map_err(|e| CommandError::Senml(e.to_string()))?;
            let resolved = senml::resolve(&records, Timestamp::now())
                .map_err(|e| CommandError::Senml(e.to_string()))?;
            match <[_; 1]>::try_from(resolved) {
                Ok([one]) => Ok(Command::Actuate(one.value)),
                Err(all) => Err(CommandError::Values(all.len())),
            }
        }
        _ => Err(CommandError::Type(content_type.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(value: Value) -> Reading {
        Reading {
            time: Timestamp(1_700_000_000_250_000),
            value,
        }
    }

    #[test]
    fn accept_picks_senml_json_unless_only_pidf_is_acceptable() {
        assert_eq!(negotiate([]), Some(Format::SenmlJson));
        assert_eq!(negotiate([PIDF_XML]), Some(Format::Pidf));
        assert_eq!(
            negotiate(["application/pidf+xml;q=0.5, application/senml+json"]),
            Some(Format::SenmlJson)
        );
        assert_eq!(negotiate(["Application/PIDF+XML"]), Some(Format::Pidf));
        assert_eq!(negotiate(["*/*"]), Some(Format::SenmlJson));
        assert_eq!(negotiate(["text/html", "application/xml"]), None);
    }

    #[test]
    fn senml_json_is_the_rest_read_form() {
        let body = senml_json("gw.sim.t", Some("Cel"), &reading(Value::Number(21.5)));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"bn": "gw.sim.t", "bu": "Cel", "t": 1_700_000_000.25, "v": 21.5}])
        );
    }

    #[test]
    fn pidf_carries_the_reading_as_senml_xml_and_escapes_text() {
        let doc = pidf(
            "sip:gw.sim.t@iot.local",
            "gw.sim.t",
            None,
            true,
            Some(&reading(Value::String("<a & \"b\">".into()))),
        );
        assert!(doc.contains("entity=\"sip:gw.sim.t@iot.local\""), "{doc}");
        assert!(doc.contains("<basic>open</basic>"), "{doc}");
        assert!(
            doc.contains(
                "<sensml xmlns=\"urn:ietf:params:xml:ns:senml\"><senml bn=\"gw.sim.t\" t=\"1700000000.25\" vs=\"&lt;a &amp; &quot;b&quot;&gt;\"/></sensml>"
            ),
            "{doc}"
        );
        let closed = pidf("sip:x@d", "x", Some("lx"), false, None);
        assert!(
            closed.contains("<basic>closed</basic></status></tuple>"),
            "{closed}"
        );
    }

    #[test]
    fn message_commands() {
        assert_eq!(parse_command("text/plain", b" get\r\n"), Ok(Command::Get));
        assert_eq!(
            parse_command("text/plain;charset=utf-8", b"PUT 1"),
            Err(CommandError::NotGet)
        );
        assert_eq!(
            parse_command("application/senml+json", br#"[{"n":"lamp","vb":false}]"#),
            Ok(Command::Actuate(Value::Bool(false)))
        );
        assert_eq!(
            parse_command("application/senml+json", br#"[{"v":1},{"v":2}]"#),
            Err(CommandError::Values(2))
        );
        assert!(matches!(
            parse_command("application/senml+json", b"{"),
            Err(CommandError::Senml(_))
        ));
        assert!(matches!(
            parse_command("image/png", b""),
            Err(CommandError::Type(_))
        ));
    }

    proptest::proptest! {
        /// Whatever a thing's id, unit or string value holds, it cannot
        /// open or close an attribute or element of the document.
        #[test]
        fn xml_text_is_always_escaped(entity in ".*", text in ".*") {
            let reading = reading(Value::String(text.clone()));
            let doc = pidf(&entity, &text, Some(&text), true, Some(&reading));
            let inside: Vec<&str> = doc.split('"').skip(1).step_by(2).collect();
            for value in inside {
                proptest::prop_assert!(!value.contains(['<', '>']));
            }
        }

        #[test]
        fn negotiation_and_commands_take_any_text(accept in ".*", kind in ".*", body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = negotiate([accept.as_str()]);
            let _ = parse_command(&kind, &body);
        }
    }
}
