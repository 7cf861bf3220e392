//! What the log says about input from outside the gateway.
//!
//! A warning about a bad message is for the operator, but the message is
//! the peer's: left alone, a peer decides how much the gateway writes
//! (a 65 535-byte MQTT topic made a 64 KiB log line per small packet) and
//! what it looks like (a newline in a topic forges a log line). So text
//! from a peer goes into a log line as an [`Excerpt`] — at most
//! [`EXCERPT_CHARS`] characters, control characters escaped — and
//! warnings about one peer are rate-limited by [`may_warn`]: a burst of
//! [`BURST`], then one per [`INTERVAL`], with the number held back in the
//! next line that passes.

use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Characters of a peer's text shown in a log line.
pub const EXCERPT_CHARS: usize = 96;
/// Warnings about one peer logged at once before the limit applies.
pub const BURST: u32 = 5;
/// Once over its burst, a peer gets one warning per interval.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Peers remembered; past it the quietest are forgotten (a forgotten peer
/// starts with a new burst, which bounds the log all the same).
const PEERS: usize = 4096;

/// Untrusted text as it may appear in a log line: its start, escaped, and
/// how much was left out.
#[derive(Clone, Copy)]
pub struct Excerpt<'a>(pub &'a str);

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let shown = match text.char_indices().nth(EXCERPT_CHARS) {
            Some((end, _)) => &text[..end],
            None => text,
        };
        write!(f, "{}", shown.escape_debug())?;
        if shown.len() < text.len() {
            write!(f, "…(+{} bytes)", text.len() - shown.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Owns the excerpt of a text, for errors that outlive the input.
pub fn excerpt(text: &str) -> String {
    Excerpt(text).to_string()
}

/// Whether a warning about `peer` may be logged now. `Some(n)`: yes, and
/// `n` warnings about it were held back since the last one logged.
pub fn may_warn(peer: &str) -> Option<u64> {
    static LIMITER: LazyLock<Mutex<WarnLimiter>> = LazyLock::new(Mutex::default);
    LIMITER.lock().allow(peer, Instant::now())
}

/// Per-peer token buckets of warnings.
#[derive(Default)]
pub struct WarnLimiter {
    /// By a hash of the peer's name: a name is the peer's text too, and
    /// its length is not ours to keep.
    peers: HashMap<u64, Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    held_back: u64,
}

impl WarnLimiter {
    pub fn allow(&mut self, peer: &str, now: Instant) -> Option<u64> {
        let mut hasher = DefaultHasher::new();
        peer.hash(&mut hasher);
        let key = hasher.finish();
        let refill = |bucket: &Bucket| {
            let earned = now.duration_since(bucket.at).as_secs_f64() / INTERVAL.as_secs_f64();
            (bucket.tokens + earned).min(f64::from(BURST))
        };
        if self.peers.len() >= PEERS && !self.peers.contains_key(&key) {
            // A full bucket holds nothing worth keeping.
            self.peers
                .retain(|_, bucket| refill(bucket) < f64::from(BURST));
            if self.peers.len() >= PEERS {
                self.peers.clear();
            }
        }
        let bucket = self.peers.entry(key).or_insert(Bucket {
            tokens: f64::from(BURST),
            at: now,
            held_back: 0,
        });
        bucket.tokens = refill(bucket);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Some(std::mem::take(&mut bucket.held_back))
        } else {
            bucket.held_back += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_is_shown_whole_and_long_text_cut() {
        assert_eq!(Excerpt("things/a/level").to_string(), "things/a/level");
        let long = "x".repeat(65_535);
        let shown = Excerpt(&long).to_string();
        assert_eq!(
            shown,
            format!(
                "{}…(+{} bytes)",
                "x".repeat(EXCERPT_CHARS),
                65_535 - EXCERPT_CHARS
            )
        );
    }

    #[test]
    fn control_characters_cannot_forge_a_line() {
        let shown = Excerpt("a\nWARN forged\r\u{1b}[31m").to_string();
        assert!(!shown.contains('\n') && !shown.contains('\r') && !shown.contains('\u{1b}'));
        assert!(shown.starts_with("a\\nWARN forged"));
    }

    #[test]
    fn a_peer_gets_a_burst_then_one_per_interval_with_the_count_held_back() {
        let mut limiter = WarnLimiter::default();
        let start = Instant::now();
        for _ in 0..BURST {
            assert_eq!(limiter.allow("10.0.0.9:5683", start), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(limiter.allow("10.0.0.9:5683", start), None);
        }
        // Another peer is not held back by the first.
        assert_eq!(limiter.allow("10.0.0.10:5683", start), Some(0));
        assert_eq!(limiter.allow("10.0.0.9:5683", start + INTERVAL), Some(1000));
        assert_eq!(limiter.allow("10.0.0.9:5683", start + INTERVAL), None);
    }

    #[test]
    fn memory_is_bounded_by_the_number_of_peers() {
        let mut limiter = WarnLimiter::default();
        let now = Instant::now();
        for peer in 0..3 * PEERS {
            limiter.allow(&peer.to_string(), now);
        }
        assert!(limiter.peers.len() <= PEERS);
    }

    proptest! {
        #[test]
        fn an_excerpt_is_bounded_and_a_prefix_of_the_escaped_text(text in ".{0,300}") {
            let shown = Excerpt(&text).to_string();
            let escaped: String = text.escape_debug().collect();
            // Each character escapes to at most 10 (\u{10ffff}).
            prop_assert!(shown.chars().count() <= EXCERPT_CHARS * 10 + 24);
            let kept = shown.split('…').next().unwrap_or_default();
            prop_assert!(escaped.starts_with(kept));
        }
    }
}
