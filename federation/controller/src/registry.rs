//! What the controller knows of every SDVS: where its gateway is, what it
//! offers, how loaded and charged it is, and whether it is up. Learnt from
//! Hello and ReportFeatures; an SDVS silent for three of its Hello
//! intervals is down.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use fogbank_smanage::{ConfigStat, Features, FwdStat};
use fogbank_taas::Location;
use serde::{Deserialize, Serialize};

/// Before two Hellos have shown an SDVS's interval, this one is assumed
/// (the gateways' default).
pub const DEFAULT_HELLO_INTERVAL_MS: u64 = 10_000;
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
    pub hello_interval_ms: u64,
    #[serde(skip)]
    pub forwarding: Vec<FwdStat>,
    #[serde(skip)]
    pub configuring: Vec<ConfigStat>,
}

impl SdvsRecord {
    pub fn new(address: u16, endpoint: SocketAddr, now_ms: u64) -> Self {
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
            hello_interval_ms: DEFAULT_HELLO_INTERVAL_MS,
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

    /// A Hello at `now_ms`: the interval is learnt from the gap since the
    /// last one (a gap of more than three intervals is an outage, not an
    /// interval).
    pub fn hello(&mut self, now_ms: u64, busy: u8, battery: u8) {
        let gap = now_ms.saturating_sub(self.last_hello_ms);
        if self.up && gap >= 200 && gap <= self.hello_interval_ms * MISSED_HELLOS {
            self.hello_interval_ms = gap;
        }
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
        let mut sdvs = SdvsRecord::new(0x100, "127.0.0.1:7602".parse().unwrap(), 0);
        sdvs.hello(1_000, 0, 255);
        assert_eq!(sdvs.hello_interval_ms, 1_000);
        sdvs.hello(2_000, 0, 255);
        assert!(!sdvs.silent_too_long(4_000));
        assert!(sdvs.silent_too_long(5_600));
    }

    #[test]
    fn matching_is_by_type_location_segments_and_on() {
        let mut sdvs = SdvsRecord::new(0x100, "127.0.0.1:7602".parse().unwrap(), 0);
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
