//! The store through its public methods, on a temporary directory.

use std::time::Duration;

use proptest::prelude::*;

use super::keys::{id_prefix, id_prefix_end};
use super::*;
use crate::id::ThingId;
use crate::reading::{ThingReading, Timestamp, Value};
use crate::testing::{id, reading};
use crate::thing::{Kind, ThingService};

#[test]
fn a_checkpoint_taken_while_writing_holds_every_acknowledged_reading() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), &StoreOptions::default()).unwrap();
    let thing = id("g.a.d.r");
    for t in 1..=500 {
        store.append(&[tr(&thing, t, t as f64)]).unwrap();
    }
    let copy = dir.path().join("copy");
    store.checkpoint(&copy).unwrap();
    store.append(&[tr(&thing, 501, 501.0)]).unwrap();
    assert!(
        store.checkpoint(&copy).is_err(),
        "an existing directory is not overwritten"
    );
    drop(store);
    let restored = Store::open(&copy, &StoreOptions::default()).unwrap();
    let times: Vec<u64> = restored
        .history(&thing, Window::ALL)
        .unwrap()
        .iter()
        .map(|r| r.time.0)
        .collect();
    assert_eq!(times, (1..=500).collect::<Vec<u64>>());
}

/// A numeric reading.
fn tr(thing: &ThingId, t: u64, v: f64) -> ThingReading {
    reading(thing, t, Value::Number(v))
}

proptest! {
    #[test]
    fn key_order_is_time_order(a in any::<u64>(), b in any::<u64>()) {
        let thing = id("g.a.d.r");
        prop_assert_eq!(reading_key(&thing, Timestamp(a)).cmp(&reading_key(&thing, Timestamp(b))), a.cmp(&b));
    }

    #[test]
    fn keys_of_different_things_never_interleave(
        x in "[a-z0-9_-]{1,6}", y in "[a-z0-9_-]{1,6}", t1 in any::<u64>(), t2 in any::<u64>(), t3 in any::<u64>()
    ) {
        prop_assume!(x != y);
        let (a, b) = (id(&format!("g.a.d.{x}")), id(&format!("g.a.d.{y}")));
        let (a1, a2) = (reading_key(&a, Timestamp(t1.min(t2))), reading_key(&a, Timestamp(t1.max(t2))));
        let b3 = reading_key(&b, Timestamp(t3));
        prop_assert!(!(a1 < b3 && b3 < a2), "another thing's key fell inside a range");
        prop_assert!(a1.as_slice() >= id_prefix(a.as_str().as_bytes()).as_slice());
        prop_assert!(a2.as_slice() < id_prefix_end(a.as_str().as_bytes()).as_slice());
    }

    #[test]
    fn keys_parse_back(t in any::<u64>(), r in "[a-z0-9_-]{1,10}") {
        let thing = id(&format!("g.a.d.{r}"));
        let key = reading_key(&thing, Timestamp(t));
        let (raw, time) = parse_reading_key(&key).unwrap();
        prop_assert_eq!(raw, thing.as_str().as_bytes());
        prop_assert_eq!(time, Timestamp(t));
    }

    #[test]
    fn key_parser_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
        let _ = parse_reading_key(&bytes);
    }
}

#[test]
fn history_ranges_limits_and_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let a = id("g.a.d.x");
    let ab = id("g.a.d.x-b"); // shares a textual prefix with `a`
    let rs: Vec<_> = (1..=10)
        .map(|t| tr(&a, t, t as f64))
        .chain([tr(&ab, 5, 99.0)])
        .collect();
    store.append(&rs).unwrap();
    let times = |window: Window| -> Vec<u64> {
        store
            .history(&a, window)
            .unwrap()
            .iter()
            .map(|r| r.time.0)
            .collect()
    };
    let between = Window {
        from: Timestamp(3),
        to: Timestamp(6),
        ..Window::ALL
    };
    assert_eq!(times(between), vec![3, 4, 5, 6]);
    assert_eq!(
        times(Window {
            limit: 3,
            ..Window::ALL
        }),
        vec![1, 2, 3]
    );
    assert_eq!(times(Window::newest(3)), vec![8, 9, 10]);
    assert_eq!(store.latest(&a).unwrap().unwrap().time, Timestamp(10));
    assert_eq!(
        store.latest(&ab).unwrap().unwrap().value,
        Value::Number(99.0)
    );
    // The same time again replaces, never duplicates.
    store.append(&[tr(&a, 10, 42.0)]).unwrap();
    let all = store.history(&a, Window::ALL).unwrap();
    assert_eq!(all.len(), 10);
    assert_eq!(all[9].value, Value::Number(42.0));
}

#[test]
fn things_and_history_survive_reopen_and_delete_removes_both() {
    let dir = tempfile::tempdir().unwrap();
    let a = id("g.sim.d.temperature");
    {
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        store
            .put_thing(&ThingService::new(
                a.clone(),
                Kind::Sensor,
                "temperature",
                Some("Cel"),
            ))
            .unwrap();
        store.append(&[tr(&a, 7, 21.5)]).unwrap();
    }
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let things = store.load_things().unwrap();
    assert_eq!(things.len(), 1);
    assert_eq!(things[0].unit.as_deref(), Some("Cel"));
    assert_eq!(
        store.latest(&a).unwrap().unwrap().value,
        Value::Number(21.5)
    );
    store.delete_thing(&a).unwrap();
    assert!(store.load_things().unwrap().is_empty());
    assert!(store.latest(&a).unwrap().is_none());
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let second = Store::open(dir.path(), &StoreOptions::default());
    assert!(matches!(second, Err(StoreError::Open { .. })));
}

#[test]
fn retention_by_age_cuts_every_thing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let (a, b) = (id("g.a.d.x"), id("g.a.e.y"));
    let secs = 1_000_000;
    let rs: Vec<_> = (0..100)
        .flat_map(|t| [tr(&a, t * secs, 1.0), tr(&b, t * secs, 2.0)])
        .collect();
    store.append(&rs).unwrap();
    let retention = Retention {
        max_age: Some(Duration::from_secs(10)),
        max_bytes: None,
    };
    let report = store
        .enforce_retention(&retention, Timestamp(99 * secs))
        .unwrap();
    assert_eq!(report.cutoff, Some(Timestamp(89 * secs)));
    for thing in [&a, &b] {
        let left = store.history(thing, Window::ALL).unwrap();
        assert_eq!(left.len(), 11, "readings 89..=99 remain");
        assert_eq!(left[0].time, Timestamp(89 * secs));
    }
}

#[test]
fn retention_by_size_drops_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let things: Vec<ThingId> = (0..4).map(|n| id(&format!("g.a.d.r{n}"))).collect();
    // Incompressible values so the size is predictable.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for chunk in 0..20u64 {
        let rs: Vec<_> = (0..5_000u64)
            .flat_map(|i| {
                let t = chunk * 5_000 + i;
                things
                    .iter()
                    .map(move |thing| (thing.clone(), t))
                    .collect::<Vec<_>>()
            })
            .map(|(thing, t)| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                tr(&thing, t, f64::from_bits(seed >> 2))
            })
            .collect();
        store.append(&rs).unwrap();
    }
    store.compact_readings().unwrap();
    let full = store.readings_bytes().unwrap();
    let limit = full / 2;
    let report = store
        .enforce_retention(
            &Retention {
                max_age: None,
                max_bytes: Some(limit),
            },
            Timestamp(0),
        )
        .unwrap();
    assert!(report.bytes_after <= limit, "{report:?}");
    let cutoff = report.cutoff.unwrap();
    for thing in &things {
        let left = store.history(thing, Window::ALL).unwrap();
        assert_eq!(
            left.first().unwrap().time,
            cutoff,
            "oldest readings went first"
        );
        assert_eq!(
            left.last().unwrap().time,
            Timestamp(99_999),
            "newest readings stay"
        );
    }
}

#[test]
fn services_and_their_data_are_kept_apart_and_removed_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    store.put_service("avg", b"r1", Some(b"c1")).unwrap();
    store.put_service("avg-b", b"r2", Some(b"c2")).unwrap();
    // An upgrade of the record alone keeps the component.
    store.put_service("avg", b"r1'", None).unwrap();
    store.put_service_value("avg", "count", b"7").unwrap();
    store.put_service_value("avg", "co", b"x").unwrap();
    store.put_service_value("avg-b", "count", b"8").unwrap();
    let all = store.load_services().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (
            all[0].name.as_str(),
            &all[0].record[..],
            &all[0].component[..]
        ),
        ("avg", &b"r1'"[..], &b"c1"[..])
    );
    assert_eq!(
        store.service_value("avg", "count").unwrap(),
        Some(b"7".to_vec())
    );
    assert_eq!(
        store.service_entries("avg", "co").unwrap(),
        vec![("co".to_owned(), 1), ("count".to_owned(), 1)]
    );
    store.delete_service_value("avg", "co").unwrap();
    store.delete_service("avg").unwrap();
    assert_eq!(store.load_services().unwrap().len(), 1);
    assert_eq!(store.service_value("avg", "count").unwrap(), None);
    assert_eq!(
        store.service_value("avg-b", "count").unwrap(),
        Some(b"8".to_vec())
    );
}

#[test]
fn layer_state_keeps_spaces_apart_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        store.put_state("smanage", "sdvs/g.sim.d", &[1, 2]).unwrap();
        store
            .put_state("smanage", "service/g.sim.d.t", &[3])
            .unwrap();
        store.put_state("smanagex", "other", &[9]).unwrap();
        store.put_state("smanage", "gone", &[0]).unwrap();
        store.delete_state("smanage", "gone").unwrap();
    }
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    assert_eq!(
        store.state("smanage", "").unwrap(),
        vec![
            ("sdvs/g.sim.d".to_owned(), vec![1, 2]),
            ("service/g.sim.d.t".to_owned(), vec![3]),
        ]
    );
    assert_eq!(store.state("smanagex", "").unwrap().len(), 1);
    assert_eq!(
        store.state("smanage", "service/").unwrap(),
        vec![("service/g.sim.d.t".to_owned(), vec![3])]
    );
}
