//! Per-device rate limiting: a token bucket per device, so one chatty or
//! broken device cannot flood the store while the others carry on.

use std::collections::HashMap;
use std::time::Instant;

/// The most devices tracked; beyond it the idlest are forgotten.
const MAX_DEVICES: usize = 100_000;

pub struct RateLimiter {
    /// Messages per second per device; 0 means no limit.
    rate: f64,
    burst: f64,
    buckets: HashMap<String, (f64, Instant)>,
}

impl RateLimiter {
    pub fn new(rate: f64) -> Self {
        RateLimiter {
            rate,
            burst: (rate * 2.0).max(10.0),
            buckets: HashMap::new(),
        }
    }

    /// Whether `device` may send one more message at `now`.
    pub fn allow(&mut self, device: &str, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        if self.buckets.len() >= MAX_DEVICES && !self.buckets.contains_key(device) {
            let rate = self.rate;
            let burst = self.burst;
            // Buckets that have refilled hold no information: drop them.
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = self
            .buckets
            .entry(device.to_owned())
            .or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The device part of a topic for rate limiting: its first two levels
/// (`things/sensor-7`, `zigbee2mqtt/living_room`, `tele/tasmota_ABC123`).
pub fn device_key(topic: &str) -> &str {
    match topic.match_indices('/').nth(1) {
        Some((end, _)) => &topic[..end],
        None => topic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_flooding_device_is_limited_and_the_others_are_not() {
        let mut limiter = RateLimiter::new(10.0);
        let start = Instant::now();
        let allowed = (0..100)
            .filter(|_| limiter.allow("things/flood", start))
            .count();
        assert_eq!(allowed, 20, "the burst, then nothing");
        assert!(
            limiter.allow("things/quiet", start),
            "another device is unaffected"
        );
        // A second later ten more are allowed.
        let later = start + Duration::from_secs(1);
        let allowed = (0..100)
            .filter(|_| limiter.allow("things/flood", later))
            .count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn zero_means_unlimited_and_keys_are_two_levels() {
        let mut limiter = RateLimiter::new(0.0);
        assert!((0..10_000).all(|_| limiter.allow("x", Instant::now())));
        assert_eq!(device_key("things/sensor-7/temperature"), "things/sensor-7");
        assert_eq!(device_key("things/sensor-7"), "things/sensor-7");
        assert_eq!(device_key("status"), "status");
    }
}
