//! Server-Sent Events as an application reads them from a gateway's stream.

use std::io::{BufRead, BufReader};
use std::time::Duration;

/// Reads Server-Sent Events from a stream until `count` events of `kind` arrived.
pub fn read_events(url: &str, kind: &str, count: usize, timeout: Duration) -> Vec<String> {
    let response = ureq::get(url)
        .timeout(timeout)
        .call()
        .expect("stream opens");
    let mut events = Vec::new();
    each_event(response, kind, |data| {
        events.push(data);
        events.len() < count
    });
    events
}

/// Follows a stream in the background: the data of each event of `kind`,
/// as it comes, until the stream ends or stays silent for `idle`.
pub fn follow_events(url: &str, kind: &str, idle: Duration) -> std::sync::mpsc::Receiver<String> {
    let response = ureq::AgentBuilder::new()
        .timeout_read(idle)
        .build()
        .get(url)
        .call()
        .expect("stream opens");
    let (tx, rx) = std::sync::mpsc::channel();
    let kind = kind.to_owned();
    std::thread::spawn(move || each_event(response, &kind, |data| tx.send(data).is_ok()));
    rx
}

/// Hands the data of each event of `kind` to `more` while it says so.
fn each_event(response: ureq::Response, kind: &str, mut more: impl FnMut(String) -> bool) {
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let mut current_kind = String::new();
    for line in BufReader::new(response.into_reader()).lines() {
        let Ok(line) = line else { break };
        if let Some(k) = line.strip_prefix("event: ") {
            current_kind = k.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ")
            && current_kind == kind
            && !more(data.to_owned())
        {
            break;
        }
    }
}
