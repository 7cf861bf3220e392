#![no_main]
//! What the SIP agent reads itself from a request (the Event, Expires and
//! Accept values, a MESSAGE's command) and the XML it writes from thing
//! data: no panic, and no attribute of a PIDF document broken open by
//! the text put in it.

use fogbank_sip::content::{self, Command};
use fogbank_sip::event;
use fogbank_taas::{Reading, Timestamp, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(rest.len());
    let (head, body) = rest.split_at(split);
    let text = String::from_utf8_lossy(head);
    if let Ok(parsed) = event::parse_event(&text) {
        assert!(!parsed.package.is_empty());
    }
    let _ = event::parse_expires(Some(&text));
    let _ = content::negotiate(text.lines());
    if let Ok(Command::Actuate(value)) = content::parse_command(&text, body) {
        if let Value::Number(n) = value {
            assert!(n.is_finite());
        }
    }
    let reading = Reading {
        time: Timestamp(1),
        value: Value::String(String::from_utf8_lossy(body).into_owned()),
    };
    let document = content::pidf(&text, &text, Some(&text), true, Some(&reading));
    let entity = document
        .split_once("entity=\"")
        .and_then(|(_, after)| after.split_once("\">"))
        .map(|(entity, _)| entity)
        .expect("the entity attribute closes");
    assert!(!entity.contains(['"', '<', '>']), "{entity}");
});
