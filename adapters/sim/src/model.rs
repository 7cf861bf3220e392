//! The physics of one simulated floor: plausible, not accurate.

use std::f64::consts::PI;

use fogbank_taas::Timestamp;

/// Light a lamp adds, in lux.
const LAMP_LUX: f64 = 350.0;
/// Warmth a lamp adds once the room has settled, in °C.
const LAMP_HEAT: f64 = 0.6;

/// One floor: a device with four sensors and a lamp.
#[derive(Debug, Clone)]
pub struct Floor {
    pub device: String,
    pub location: String,
    pub lamp: bool,
    floor: u8,
    temperature: f64,
    rng: u64,
}

/// What the sensors of a floor read at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub temperature: f64,
    pub humidity: f64,
    pub light: f64,
    pub motion: bool,
}

impl Floor {
    pub fn new(building: &str, floor: u8, seed: u64) -> Self {
        Floor {
            device: format!("{building}-floor-{floor}"),
            location: format!("campus/{building}/floor-{floor}"),
            lamp: false,
            floor,
            temperature: 21.0 + f64::from(floor) * 0.3,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// The floor a device name such as `building-a-floor-3` names (one
    /// that moved here from another gateway's campus).
    pub fn from_device(device: &str) -> Option<Self> {
        let (building, floor) = device.rsplit_once("-floor-")?;
        let floor: u8 = floor.parse().ok()?;
        if building.is_empty() {
            return None;
        }
        let seed = device
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        Some(Floor::new(building, floor, seed))
    }

    /// xorshift64*: deterministic per floor, good enough for jitter.
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn jitter(&mut self, amplitude: f64) -> f64 {
        (self.random() * 2.0 - 1.0) * amplitude
    }

    /// Advances the floor to `now` and reads its sensors.
    pub fn step(&mut self, now: Timestamp) -> Sample {
        let hour = (now.as_secs_f64() / 3600.0) % 24.0;
        let daylight = (PI * (hour - 6.0) / 12.0).sin().max(0.0);
        let outdoor_swing = 1.5 * (2.0 * PI * (hour - 9.0) / 24.0).sin();
        let target = 21.0
            + f64::from(self.floor) * 0.3
            + outdoor_swing
            + if self.lamp { LAMP_HEAT } else { 0.0 };
        // Rooms warm and cool slowly towards their target.
        self.temperature += (target - self.temperature) * 0.05 + self.jitter(0.03);
        let humidity =
            (45.0 - (self.temperature - 21.0) * 2.0 + self.jitter(0.5)).clamp(20.0, 80.0);
        let light = (daylight * 600.0 * (0.8 + 0.05 * f64::from(self.floor))
            + if self.lamp { LAMP_LUX } else { 0.0 }
            + self.jitter(5.0))
        .max(0.0);
        let occupancy = if (8.0..19.0).contains(&hour) {
            0.3
        } else {
            0.02
        };
        let motion = self.random() < occupancy;
        Sample {
            temperature: round(self.temperature, 2),
            humidity: round(humidity, 1),
            light: round(light, 0),
            motion,
        }
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: Timestamp = Timestamp(1_700_049_600_000_000); // 12:00 UTC

    #[test]
    fn a_floor_that_moved_here_is_known_by_its_device_name() {
        let floor = Floor::from_device("building-k-floor-12").unwrap();
        assert_eq!(floor.device, "building-k-floor-12");
        assert_eq!(floor.location, "campus/building-k/floor-12");
        for other in [
            "boiler-1",
            "-floor-2",
            "building-a-floor-",
            "building-a-floor-999",
        ] {
            assert!(Floor::from_device(other).is_none(), "{other}");
        }
    }

    #[test]
    fn values_are_plausible_and_change() {
        let mut floor = Floor::new("building-a", 2, 7);
        let samples: Vec<Sample> = (0..50)
            .map(|i| floor.step(Timestamp(NOON.0 + i * 1_000_000)))
            .collect();
        for s in &samples {
            assert!((15.0..30.0).contains(&s.temperature), "{s:?}");
            assert!((20.0..=80.0).contains(&s.humidity), "{s:?}");
            assert!(s.light >= 0.0);
        }
        assert!(
            samples
                .windows(2)
                .any(|w| w[0].temperature != w[1].temperature)
        );
        assert!(samples.iter().any(|s| s.motion) && samples.iter().any(|s| !s.motion));
    }

    #[test]
    fn the_lamp_brightens_at_once_and_warms_slowly() {
        let mut off = Floor::new("building-a", 1, 1);
        let mut on = off.clone();
        on.lamp = true;
        let a = off.step(NOON);
        let b = on.step(NOON);
        assert!(b.light - a.light > LAMP_LUX - 20.0, "{a:?} {b:?}");
        let (mut t_off, mut t_on) = (a.temperature, b.temperature);
        for i in 1..200 {
            t_off = off.step(Timestamp(NOON.0 + i)).temperature;
            t_on = on.step(Timestamp(NOON.0 + i)).temperature;
        }
        assert!(t_on - t_off > LAMP_HEAT / 2.0, "{t_off} {t_on}");
    }
}
