//! What the controller knows of every SDVS: where its gateway is, what it
//! offers, how loaded and charged it is, and whether it is up. Learnt from
//! Hello and ReportFeatures; an SDVS silent for three of its Hello
//! intervals is down.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use fogbank_smanage::{ConfigStat, Features, FwdStat};
use fogbank_taas::Location;
use serde::{Deserialize, Serialize};

/// Silent for this many intervals: down.
pub const MISSED_HELLOS: u64 = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SdvsRecord {
    pub address: u16,
    /// The gateway's S-MANAGE socket, where packets for this SDVS go.
    pub endpoint: SocketAddr,
    pub location: String,
    /// (id, on, type, driver) per sensor service.
    pub services: Vec<(u8, bool, String, String)>,
    /// 0–100, 255 for mains.
    pub battery: u8,
    pub busy: u8,
    pub low_battery: bool,
    /// Set by ReportFullTask, cleared when a Hello shows less load.
    pub full: bool,
    pub up: bool,
    /// Unix milliseconds.
    pub last_hello_ms: u64,
    /// The SDVS's Hello interval as far as the controller can tell: the
    /// controller's own interval at first, then following the gaps between
    /// two Hellos, halving at most per Hello and never above the
    /// controller's (so one odd gap cannot make a live SDVS look dead,
    /// nor a dead one look alive for long).
    pub hello_interval_ms: u64,
    /// Whether a Hello was heard since the record was made or loaded: the
    /// gap to the first one says nothing of the interval.
    #[serde(skip)]
    pub heard_hello: bool,
    #[serde(skip)]
    pub forwarding: Vec<FwdStat>,
    #[serde(skip)]
    pub configuring: Vec<ConfigStat>,
}

impl SdvsRecord {
    pub fn new(address: u16, endpoint: SocketAddr, now_ms: u64, interval_ms: u64) -> Self {
        SdvsRecord {
            address,
            endpoint,
            location: String::new(),
            services: Vec::new(),
            battery: 255,
            busy: 0,
            low_battery: false,
            full: false,
            up: true,
            last_hello_ms: now_ms,
            hello_interval_ms: interval_ms,
            heard_hello: false,
            forwarding: Vec::new(),
            configuring: Vec::new(),
        }
    }

    pub fn set_features(&mut self, features: &Features) {
        self.location = features.location.clone();
        self.services = features
            .services
            .iter()
            .map(|s| (s.id, s.on, s.kind.clone(), s.driver.clone()))
            .collect();
    }

    /// The sensor services of a type under a location, switched on.
    pub fn matching<'a>(
        &'a self,
        semantic_type: &'a str,
        location: &'a Location,
    ) -> impl Iterator<Item = u8> + 'a {
        let within = Location::new(&self.location).is_within(location);
        self.services
            .iter()
            .filter(move |s| within && s.1 && s.2 == semantic_type)
            .map(|s| s.0)
    }

    /// A Hello at `now_ms`, when the controller's own interval is
    /// `configured_ms`.
    pub fn hello(&mut self, now_ms: u64, busy: u8, battery: u8, configured_ms: u64) {
        let gap = now_ms.saturating_sub(self.last_hello_ms);
        if self.heard_hello && gap >= 200 {
            let floor = self.hello_interval_ms / 2;
            self.hello_interval_ms = gap.clamp(floor, configured_ms.max(floor));
        }
        self.heard_hello = true;
        self.last_hello_ms = now_ms;
        if busy < self.busy {
            self.full = false;
        }
        self.busy = busy;
        self.battery = battery;
        if battery == 255 || battery > 100 {
            self.low_battery = false;
        }
    }

    pub fn silent_too_long(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_hello_ms) > self.hello_interval_ms * MISSED_HELLOS + 500
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    pub sdvs: BTreeMap<u16, SdvsRecord>,
}

impl Registry {
    pub fn get(&self, address: u16) -> Option<&SdvsRecord> {
        self.sdvs.get(&address)
    }

    /// Every gateway endpoint, once.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        let mut endpoints: Vec<SocketAddr> = self.sdvs.values().map(|s| s.endpoint).collect();
        endpoints.sort();
        endpoints.dedup();
        endpoints
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hello_interval_is_learnt_and_silence_is_down() {
        let mut sdvs = SdvsRecord::new(0x100, "127.0.0.1:7602".parse().unwrap(), 0, 10_000);
        // The gap from the record's making to the first Hello is no interval.
        sdvs.hello(300, 0, 255, 10_000);
        assert_eq!(sdvs.hello_interval_ms, 10_000);
        // Hellos a second apart: halving towards it.
        for (i, want) in [(1, 5_000), (2, 2_500), (3, 1_250), (4, 1_000), (5, 1_000)] {
            sdvs.hello(300 + i * 1_000, 0, 255, 10_000);
            assert_eq!(sdvs.hello_interval_ms, want);
        }
        assert!(!sdvs.silent_too_long(5_300 + 3_000));
        assert!(sdvs.silent_too_long(5_300 + 3_600));
        // One odd short gap halves it once; the next normal one restores it.
        sdvs.hello(5_600, 0, 255, 10_000);
        assert_eq!(sdvs.hello_interval_ms, 500);
        sdvs.hello(6_600, 0, 255, 10_000);
        assert_eq!(sdvs.hello_interval_ms, 1_000);
        // Never above the controller's own.
        sdvs.hello(60_000, 0, 255, 10_000);
        assert_eq!(sdvs.hello_interval_ms, 10_000);
    }

    #[test]
    fn matching_is_by_type_location_segments_and_on() {
        let mut sdvs = SdvsRecord::new(0x100, "127.0.0.1:7602".parse().unwrap(), 0, 10_000);
        sdvs.location = "campus/building-a/floor-1".into();
        sdvs.services = vec![
            (1, true, "temperature".into(), "sim".into()),
            (2, false, "temperature".into(), "sim".into()),
            (3, true, "switch".into(), "sim".into()),
        ];
        let a = Location::new("campus/building-a");
        assert_eq!(sdvs.matching("temperature", &a).collect::<Vec<_>>(), [1]);
        let ab = Location::new("campus/building-ab");
        assert_eq!(sdvs.matching("temperature", &ab).count(), 0);
    }
}
