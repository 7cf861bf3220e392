//! Which topics some client of the embedded broker may want.
//!
//! The front door stores every device's message itself, so the broker is
//! only needed for a message that an MQTT client subscribes to (or that
//! the broker must keep: retained ones). Passing every message on anyway
//! cost more than storing it: the broker's connection and router threads
//! woke for each one, and its acknowledgement came back the same way.
//!
//! Every SUBSCRIBE passes the front door, so it learns each filter there,
//! before the broker does. Filters are never forgotten: a session the
//! broker keeps for a client that went away still holds its
//! subscriptions, and forwarding a message nobody wants costs only time.
//! Past [`MAX_FILTERS`] distinct filters (or one the front door cannot
//! read) it stops choosing and wants everything.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

/// Distinct filters kept before the front door wants every topic: keeps
/// the check of each message short whatever clients subscribe to.
pub const MAX_FILTERS: usize = 128;

/// The topic filters subscribed to through the front door.
#[derive(Debug, Default)]
pub struct Interest {
    filters: RwLock<Vec<String>>,
    everything: AtomicBool,
}

impl Interest {
    /// Someone subscribed to `filter` (as sent: a shared subscription's
    /// `$share/{group}/` prefix is taken off here).
    pub fn learn(&self, filter: &str) {
        let Some(filter) = unshared(filter) else {
            self.learn_everything();
            return;
        };
        if self.wants_everything() || self.filters.read().iter().any(|f| f == filter) {
            return;
        }
        let mut filters = self.filters.write();
        if filters.len() >= MAX_FILTERS {
            self.learn_everything();
        } else if !filters.iter().any(|f| f == filter) {
            filters.push(filter.to_owned());
        }
    }

    /// Someone subscribed to what the front door could not read.
    pub fn learn_everything(&self) {
        self.everything.store(true, Ordering::Relaxed);
    }

    fn wants_everything(&self) -> bool {
        self.everything.load(Ordering::Relaxed)
    }

    /// Whether a message to `topic` may reach a subscriber.
    pub fn wants(&self, topic: &str) -> bool {
        self.wants_everything() || self.filters.read().iter().any(|f| matches(f, topic))
    }
}

/// The filter a subscription matches topics with: `$share/{group}/{filter}`
/// is a shared subscription to `{filter}` (MQTT 5 §4.8.2); `None` for a
/// `$share/` without both parts.
fn unshared(filter: &str) -> Option<&str> {
    match filter.strip_prefix("$share/") {
        None => Some(filter),
        Some(rest) => rest
            .split_once('/')
            .map(|(_, filter)| filter)
            .filter(|f| !f.is_empty()),
    }
}

/// Whether `filter` matches `topic` (MQTT 3.1.1 §4.7, the same in 5): `+`
/// one level, `#` the rest of the levels including none. Broader than the
/// broker where it may be: `$`-topics are not kept from wildcards, since
/// the cost of a message passed on for nobody is only time.
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for pattern in filter.split('/') {
        if pattern == "#" {
            return true;
        }
        match levels.next() {
            Some(level) if pattern == "+" || pattern == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn filters_match_as_the_specification_says() {
        // MQTT 3.1.1 §4.7.1.2 and §4.7.1.3's examples.
        for topic in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ] {
            assert!(matches("sport/tennis/player1/#", topic), "{topic}");
        }
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(matches("sport/+", "sport/"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("#", "anything/at/all"));
        assert!(!matches("things/a", "things/ab"));
        assert!(!matches("things/a/b", "things/a"));
    }

    #[test]
    fn nothing_is_wanted_until_someone_subscribes() {
        let interest = Interest::default();
        assert!(!interest.wants("things/kitchen/temperature"));
        interest.learn("things/+/temperature");
        assert!(interest.wants("things/kitchen/temperature"));
        assert!(!interest.wants("things/kitchen/humidity"));
        interest.learn("$share/apps/things/+/humidity");
        assert!(interest.wants("things/kitchen/humidity"));
        assert!(!interest.wants("devices/x"));
    }

    #[test]
    fn past_the_limit_or_unreadable_everything_is_wanted() {
        let interest = Interest::default();
        for n in 0..MAX_FILTERS {
            interest.learn(&format!("things/{n}"));
            interest.learn(&format!("things/{n}"));
        }
        assert!(!interest.wants("devices/x"), "repeats are one filter");
        interest.learn("one/more");
        assert!(interest.wants("devices/x"));

        let interest = Interest::default();
        interest.learn("$share/no-filter");
        assert!(interest.wants("devices/x"));
    }

    fn level() -> impl Strategy<Value = String> {
        "[a-c]{0,2}"
    }

    proptest! {
        #[test]
        fn a_topic_matches_itself_and_its_wildcards(levels in proptest::collection::vec(level(), 1..5), at in any::<prop::sample::Index>()) {
            let topic = levels.join("/");
            prop_assert!(matches(&topic, &topic));
            let i = at.index(levels.len());
            let mut plus = levels.clone();
            plus[i] = "+".into();
            prop_assert!(matches(&plus.join("/"), &topic));
            let hash = [&levels[..i], &["#".to_owned()]].concat().join("/");
            prop_assert!(matches(&hash, &topic));
        }

        #[test]
        fn a_filter_without_wildcards_matches_only_itself(a in proptest::collection::vec(level(), 1..4), b in proptest::collection::vec(level(), 1..4)) {
            prop_assert_eq!(matches(&a.join("/"), &b.join("/")), a == b);
        }
    }
}
