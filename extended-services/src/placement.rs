//! Where in the local cloud a service runs: a pure function of what every
//! gateway knows alike — the manifest, the catalog, who is up, who
//! drains, and where the service runs now — so that each gateway decides
//! the same without asking the others. The gateway it names runs the
//! service; every other one keeps it on standby.
//!
//! - Pinned to a gateway (`placement = { gateway = "gw-b" }`): there, and
//!   nowhere while that gateway is down.
//! - Pinned to a location (`placement = { location = "campus/b1" }`): the
//!   gateway that owns most thing services within it.
//! - Otherwise: the gateway that owns most of the thing services it
//!   subscribes to. Ties, and services without inputs, stay where they run,
//!   else go to the gateway they were published at, else to the first by
//!   name — so a service moves only when something tells it to.
//!
//! Draining gateways are not chosen unless pinned by name.

use std::collections::{BTreeMap, BTreeSet};

use fogbank_taas::{Location, ThingService};
use serde::Serialize;

use crate::OUTPUT_ADAPTER;
use crate::manifest::{Manifest, Pin};

/// What a gateway knows of the local cloud when it places services.
pub struct View<'a> {
    /// Gateways that are up, this one included.
    pub up: &'a BTreeSet<String>,
    /// Gateways being drained: they keep only services pinned to them.
    pub draining: &'a BTreeSet<String>,
    /// Every thing service of the catalog, wherever owned.
    pub things: &'a [ThingService],
}

/// Where a service is to run, and why, for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// `None`: nowhere for now (the reason says what it waits for).
    pub gateway: Option<String>,
    pub reason: String,
}

impl Decision {
    fn at(gateway: &str, reason: String) -> Self {
        Decision {
            gateway: Some(gateway.to_owned()),
            reason,
        }
    }
}

/// Places `manifest`'s service, published at `home` and running at
/// `runner` (if anywhere), in `view`.
pub fn decide(manifest: &Manifest, home: &str, runner: Option<&str>, view: &View) -> Decision {
    let eligible: BTreeSet<&str> = view
        .up
        .iter()
        .filter(|g| !view.draining.contains(*g))
        .map(String::as_str)
        .collect();
    match &manifest.placement {
        Some(Pin {
            gateway: Some(gateway),
            ..
        }) => {
            if view.up.contains(gateway) {
                Decision::at(gateway, format!("pinned to gateway {gateway}"))
            } else {
                Decision {
                    gateway: None,
                    reason: format!("pinned to gateway {gateway}, which is down"),
                }
            }
        }
        Some(Pin {
            location: Some(location),
            ..
        }) => {
            let within = Location::new(location);
            let counts = owners(view, &eligible, |t| {
                !is_output(manifest, t) && t.location.is_within(&within)
            });
            match most(&counts, runner, home) {
                Some((gateway, count)) => Decision::at(
                    gateway,
                    format!(
                        "pinned to {location}: owns {count} of the {} thing services there",
                        counts.values().sum::<usize>()
                    ),
                ),
                None => Decision {
                    gateway: None,
                    reason: format!(
                        "pinned to {location}, where no gateway that is up owns a thing service"
                    ),
                },
            }
        }
        _ => {
            let counts = owners(view, &eligible, |t| {
                !is_output(manifest, t) && manifest.subscriptions.iter().any(|s| s.matches(t))
            });
            if let Some((gateway, count)) = most(&counts, runner, home) {
                let total: usize = counts.values().sum();
                return Decision::at(
                    gateway,
                    format!("owns {count} of its {total} inputs on gateways that are up"),
                );
            }
            let fallback = [runner, Some(home)]
                .into_iter()
                .flatten()
                .find(|g| eligible.contains(g))
                .map(|g| {
                    let why = if Some(g) == runner {
                        "stays where it runs"
                    } else {
                        "at the gateway it was published at"
                    };
                    (g, why)
                })
                .or_else(|| {
                    eligible
                        .first()
                        .map(|g| (*g, "the first gateway up by name"))
                });
            match fallback {
                Some((gateway, why)) => {
                    Decision::at(gateway, format!("no inputs on gateways that are up; {why}"))
                }
                None => Decision {
                    gateway: None,
                    reason: "no gateway is up that is not draining".into(),
                },
            }
        }
    }
}

/// Whether `thing` is one of the service's own outputs, wherever it runs.
fn is_output(manifest: &Manifest, thing: &ThingService) -> bool {
    thing.id.adapter() == OUTPUT_ADAPTER && thing.id.device() == manifest.name
}

/// How many of the things `wanted` picks each eligible gateway owns.
fn owners<'v>(
    view: &'v View,
    eligible: &BTreeSet<&str>,
    wanted: impl Fn(&ThingService) -> bool,
) -> BTreeMap<&'v str, usize> {
    let mut counts = BTreeMap::new();
    for thing in view.things {
        if eligible.contains(thing.gateway.as_str()) && wanted(thing) {
            *counts.entry(thing.gateway.as_str()).or_insert(0) += 1;
        }
    }
    counts
}

/// The gateway with the highest count; among equals the runner, then the
/// home, then the first by name.
fn most<'c>(
    counts: &BTreeMap<&'c str, usize>,
    runner: Option<&str>,
    home: &str,
) -> Option<(&'c str, usize)> {
    let best = *counts.values().max()?;
    let tied: Vec<&'c str> = counts
        .iter()
        .filter(|(_, n)| **n == best)
        .map(|(g, _)| *g)
        .collect();
    let chosen = tied
        .iter()
        .find(|g| Some(**g) == runner)
        .or_else(|| tied.iter().find(|g| **g == home))
        .or_else(|| tied.first())?;
    Some((chosen, best))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogbank_taas::{Kind, ThingId};

    fn thing(owner: &str, id: &str, kind: &str, location: &str) -> ThingService {
        let mut t =
            ThingService::new(ThingId::parse(id).unwrap(), Kind::Sensor, kind, None).at(location);
        t.gateway = owner.into();
        t
    }

    fn manifest(extra: &str) -> Manifest {
        Manifest::parse(&format!(
            "name = \"avg\"\nversion = \"1\"\nsubscriptions = [{{ type = \"temperature\" }}]\n{extra}"
        ))
        .unwrap()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn catalog() -> Vec<ThingService> {
        vec![
            thing("gw-a", "gw-a.sim.r1.temperature", "temperature", "campus/a"),
            thing("gw-b", "gw-b.sim.r2.temperature", "temperature", "campus/b"),
            thing("gw-b", "gw-b.sim.r3.temperature", "temperature", "campus/b"),
            thing("gw-c", "gw-c.sim.r4.humidity", "humidity", "campus/c"),
            thing("gw-c", "gw-c.sim.r5.humidity", "humidity", "campus/c"),
            thing("gw-c", "gw-c.sim.r6.humidity", "humidity", "campus/c"),
            // Its own output is no input, wherever it is.
            thing("gw-c", "gw-a.service.avg.out", "temperature", "campus/c"),
        ]
    }

    #[test]
    fn by_default_next_to_most_inputs() {
        let things = catalog();
        let view = View {
            up: &set(&["gw-a", "gw-b", "gw-c"]),
            draining: &set(&[]),
            things: &things,
        };
        let decision = decide(&manifest(""), "gw-a", Some("gw-a"), &view);
        assert_eq!(decision.gateway.as_deref(), Some("gw-b"));
        assert_eq!(
            decision.reason,
            "owns 2 of its 3 inputs on gateways that are up"
        );
    }

    #[test]
    fn a_gateway_that_is_down_or_draining_is_passed_over() {
        let things = catalog();
        let up = set(&["gw-a", "gw-c"]);
        let none = set(&[]);
        let view = View {
            up: &up,
            draining: &none,
            things: &things,
        };
        assert_eq!(
            decide(&manifest(""), "gw-a", Some("gw-b"), &view)
                .gateway
                .as_deref(),
            Some("gw-a")
        );
        let draining = set(&["gw-a"]);
        let view = View {
            up: &up,
            draining: &draining,
            things: &things,
        };
        let decision = decide(&manifest(""), "gw-a", Some("gw-a"), &view);
        assert_eq!(decision.gateway.as_deref(), Some("gw-c"));
        assert_eq!(
            decision.reason,
            "no inputs on gateways that are up; the first gateway up by name"
        );
    }

    #[test]
    fn ties_stay_where_the_service_runs_then_go_home() {
        let things = vec![
            thing("gw-a", "gw-a.sim.r1.temperature", "temperature", "x"),
            thing("gw-b", "gw-b.sim.r2.temperature", "temperature", "x"),
        ];
        let up = set(&["gw-a", "gw-b", "gw-c"]);
        let none = set(&[]);
        let view = View {
            up: &up,
            draining: &none,
            things: &things,
        };
        let m = manifest("");
        assert_eq!(
            decide(&m, "gw-c", Some("gw-b"), &view).gateway.as_deref(),
            Some("gw-b")
        );
        assert_eq!(
            decide(&m, "gw-b", None, &view).gateway.as_deref(),
            Some("gw-b")
        );
        assert_eq!(
            decide(&m, "gw-c", None, &view).gateway.as_deref(),
            Some("gw-a")
        );
        // Without inputs: where it runs, else home.
        let view = View {
            up: &up,
            draining: &none,
            things: &[],
        };
        assert_eq!(
            decide(&m, "gw-c", Some("gw-b"), &view).gateway.as_deref(),
            Some("gw-b")
        );
        assert_eq!(
            decide(&m, "gw-c", None, &view).gateway.as_deref(),
            Some("gw-c")
        );
    }

    #[test]
    fn pins_win_over_inputs() {
        let things = catalog();
        let up = set(&["gw-a", "gw-b", "gw-c"]);
        let draining = set(&["gw-a"]);
        let view = View {
            up: &up,
            draining: &draining,
            things: &things,
        };
        let pinned = manifest("placement = { gateway = \"gw-a\" }");
        assert_eq!(
            decide(&pinned, "gw-b", None, &view).gateway.as_deref(),
            Some("gw-a")
        );
        let elsewhere = manifest("placement = { gateway = \"gw-z\" }");
        let decision = decide(&elsewhere, "gw-b", None, &view);
        assert_eq!(decision.gateway, None);
        assert_eq!(decision.reason, "pinned to gateway gw-z, which is down");
        let located = manifest("placement = { location = \"campus/c\" }");
        let decision = decide(&located, "gw-a", None, &view);
        assert_eq!(decision.gateway.as_deref(), Some("gw-c"));
        assert_eq!(
            decision.reason,
            "pinned to campus/c: owns 3 of the 3 thing services there"
        );
        let nowhere = manifest("placement = { location = \"campus/z\" }");
        assert_eq!(decide(&nowhere, "gw-a", None, &view).gateway, None);
    }

    #[test]
    fn a_pin_names_one_place() {
        for bad in [
            "placement = { gateway = \"gw-a\", location = \"x\" }",
            "placement = {}",
            "placement = { gateway = \"\" }",
            "placement = { host = \"gw-a\" }",
        ] {
            let text = format!("name = \"avg\"\nversion = \"1\"\n{bad}");
            assert!(Manifest::parse(&text).is_err(), "{bad} accepted");
        }
    }
}
