//! The hub's behaviour through its public methods.

use std::sync::Arc;

use super::*;
use crate::commands::{Actuator, Command, CommandState};
use crate::remote::{CatalogChange, Remote, RemoteError};
use crate::senml;
use crate::store::Window;
use crate::testing::{id, reading};
use crate::transport::{
    DeviceOffer, DeviceRef, DeviceTransport, RepointError, RepointFuture, TransportTarget,
};
use crate::{Kind, Query, Reading, ThingId, Timestamp, Value};
use moves::MoveError;

fn hub_with_things(dir: &std::path::Path) -> Arc<Hub> {
    let hub = Hub::open("gw", dir, HubOptions::default()).unwrap();
    hub.announce(ThingService::new(
        id("gw.x.d.temperature"),
        Kind::Sensor,
        "temperature",
        Some("Cel"),
    ))
    .unwrap();
    hub.announce(ThingService::new(
        id("gw.x.d.lamp"),
        Kind::Actuator,
        "switch",
        None,
    ))
    .unwrap();
    hub
}

#[test]
fn a_batch_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_things(dir.path());
    let t = id("gw.x.d.temperature");
    let unknown = reading(&id("gw.x.d.nothing"), 2, Value::Number(1.0));
    assert!(matches!(
        hub.ingest(vec![reading(&t, 1, Value::Number(20.0)), unknown]),
        Err(IngestError::UnknownThing(_))
    ));
    let wrong = reading(&t, 3, Value::Bool(true));
    assert!(matches!(
        hub.ingest(vec![reading(&t, 1, Value::Number(20.0)), wrong]),
        Err(IngestError::WrongType { .. })
    ));
    assert!(
        hub.history(&t, Window::ALL).unwrap().is_empty(),
        "nothing of a refused batch is stored"
    );
    assert_eq!(hub.latest(&t), Some(None));
    assert_eq!(hub.stats().readings_rejected, 2);
}

/// The times of `thing`'s stored readings, oldest first.
fn history_times(hub: &Hub, thing: &ThingId) -> Vec<u64> {
    let history = hub.history(thing, Window::ALL).unwrap();
    history.iter().map(|r| r.time.0).collect()
}

#[test]
fn a_repeated_delivery_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let t = id("gw.x.d.temperature");
    let receipt = Receipt {
        slot: b"mqtt/7".to_vec(),
        fingerprint: b"abc".to_vec(),
        redelivered: false,
    };
    {
        let hub = hub_with_things(dir.path());
        let first = hub
            .ingest_once(&receipt, vec![reading(&t, 1, Value::Number(20.0))])
            .unwrap();
        assert_eq!(first, Ingested::Stored);
    }
    // After a crash the sender repeats it: same slot, same content.
    let hub = Hub::open("gw", dir.path(), HubOptions::default()).unwrap();
    let receipt = Receipt {
        redelivered: true,
        ..receipt
    };
    let again = hub
        .ingest_once(&receipt, vec![reading(&t, 2, Value::Number(20.0))])
        .unwrap();
    assert_eq!(again, Ingested::AlreadyStored);
    assert_eq!(hub.history(&t, Window::ALL).unwrap().len(), 1);
    // Other content in the same slot is a new delivery.
    let other = Receipt {
        fingerprint: b"xyz".to_vec(),
        ..receipt.clone()
    };
    assert_eq!(
        hub.ingest_once(&other, vec![reading(&t, 3, Value::Number(21.0))])
            .unwrap(),
        Ingested::Stored
    );
    // Once released, the slot is free even for the same content.
    hub.release(&receipt.slot).unwrap();
    assert_eq!(
        hub.ingest_once(&other, vec![reading(&t, 4, Value::Number(21.0))])
            .unwrap(),
        Ingested::Stored
    );
    assert_eq!(hub.history(&t, Window::ALL).unwrap().len(), 3);
}

#[test]
fn deliveries_of_one_write_succeed_or_fail_each_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_things(dir.path());
    let t = id("gw.x.d.temperature");
    let receipt = |slot: &str, redelivered| {
        Some(Receipt {
            slot: slot.as_bytes().to_vec(),
            fingerprint: b"same".to_vec(),
            redelivered,
        })
    };
    hub.ingest_once(
        &receipt("s/1", false).unwrap(),
        vec![reading(&t, 1, Value::Number(20.0))],
    )
    .unwrap();
    let outcomes = hub.ingest_deliveries(vec![
        Delivery {
            receipt: receipt("s/1", true),
            readings: vec![reading(&t, 2, Value::Number(20.0))],
        },
        Delivery {
            receipt: receipt("s/2", false),
            readings: vec![reading(&id("gw.x.d.nothing"), 3, Value::Number(1.0))],
        },
        Delivery {
            receipt: receipt("s/3", false),
            readings: vec![reading(&t, 4, Value::Number(22.0))],
        },
        Delivery {
            receipt: None,
            readings: vec![reading(&t, 5, Value::Number(23.0))],
        },
    ]);
    assert!(matches!(outcomes[0], Ok(Ingested::AlreadyStored)));
    assert!(matches!(outcomes[1], Err(IngestError::UnknownThing(_))));
    assert!(matches!(outcomes[2], Ok(Ingested::Stored)));
    assert!(matches!(outcomes[3], Ok(Ingested::Stored)));
    assert_eq!(history_times(&hub, &t), vec![1, 4, 5]);
    assert_eq!(hub.stats().readings_ingested, 3);
    assert_eq!(hub.stats().readings_rejected, 1);
    // The stored delivery's receipt was written with it; releasing
    // several at once frees them all.
    assert_eq!(
        hub.ingest_once(
            &receipt("s/3", true).unwrap(),
            vec![reading(&t, 6, Value::Number(22.0))]
        )
        .unwrap(),
        Ingested::AlreadyStored
    );
    hub.release_all([b"s/1".as_slice(), b"s/3".as_slice()])
        .unwrap();
    assert_eq!(
        hub.ingest_once(
            &receipt("s/3", true).unwrap(),
            vec![reading(&t, 7, Value::Number(22.0))]
        )
        .unwrap(),
        Ingested::Stored
    );
}

/// A QoS 1 receipt released under a runtime waits for the next write of
/// readings and goes in its batch; its slot is free meanwhile; with no
/// write coming, a flush deletes it within `FLUSH_AFTER`.
#[tokio::test(start_paused = true)]
async fn released_receipts_ride_with_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_things(dir.path());
    let t = id("gw.x.d.temperature");
    let receipt = |slot: &str, fingerprint: &str, redelivered| Receipt {
        slot: slot.as_bytes().to_vec(),
        fingerprint: fingerprint.as_bytes().to_vec(),
        redelivered,
    };
    let stored_receipt = |slot: &str| hub.store().receipt(slot.as_bytes()).unwrap();
    for (n, slot) in ["s/1", "s/2"].into_iter().enumerate() {
        let delivery = receipt(slot, "same", false);
        hub.ingest_once(&delivery, vec![reading(&t, n as u64, Value::Number(1.0))])
            .unwrap();
    }
    hub.release_all([b"s/1".as_slice(), b"s/2".as_slice()])
        .unwrap();
    // Not written yet, and yet free: a repeat in a released slot is new.
    assert_eq!(stored_receipt("s/1").as_deref(), Some(b"same".as_slice()));
    assert_eq!(
        hub.ingest_once(
            &receipt("s/1", "same", true),
            vec![reading(&t, 10, Value::Number(2.0))]
        )
        .unwrap(),
        Ingested::Stored
    );
    // That write carried both deletes, before its own receipt in s/1.
    assert_eq!(stored_receipt("s/1").as_deref(), Some(b"same".as_slice()));
    assert_eq!(stored_receipt("s/2"), None);
    // A repeat of the delivery just stored is recognised.
    assert_eq!(
        hub.ingest_once(
            &receipt("s/1", "same", true),
            vec![reading(&t, 11, Value::Number(2.0))]
        )
        .unwrap(),
        Ingested::AlreadyStored
    );

    // No write comes: the flush deletes the release on its own.
    hub.release(b"s/1").unwrap();
    assert!(stored_receipt("s/1").is_some());
    tokio::time::sleep(receipts::FLUSH_AFTER * 2).await;
    assert_eq!(stored_receipt("s/1"), None);
    assert_eq!(history_times(&hub, &t), vec![0, 1, 10]);
}

/// A hub closed with releases waiting writes them, so a restart finds
/// the slots free.
#[tokio::test(start_paused = true)]
async fn waiting_releases_are_written_when_the_hub_closes() {
    let dir = tempfile::tempdir().unwrap();
    let t = id("gw.x.d.temperature");
    let delivery = Receipt {
        slot: b"s/9".to_vec(),
        fingerprint: b"f".to_vec(),
        redelivered: false,
    };
    {
        let hub = hub_with_things(dir.path());
        hub.ingest_once(&delivery, vec![reading(&t, 1, Value::Number(1.0))])
            .unwrap();
        hub.release(&delivery.slot).unwrap();
        assert!(hub.store().receipt(b"s/9").unwrap().is_some());
    }
    let hub = Hub::open("gw", dir.path(), HubOptions::default()).unwrap();
    assert_eq!(hub.store().receipt(b"s/9").unwrap(), None);
    let repeat = Receipt {
        redelivered: true,
        ..delivery
    };
    assert_eq!(
        hub.ingest_once(&repeat, vec![reading(&t, 2, Value::Number(1.0))])
            .unwrap(),
        Ingested::Stored
    );
}

/// A burst's receipts are one record; one released of two rewrites it
/// with the other, and a restart rebuilds which are live from the records.
#[test]
fn a_bursts_receipts_are_one_record_partly_released_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t = id("gw.x.d.temperature");
    let receipt = |slot: &str, redelivered| Receipt {
        slot: slot.as_bytes().to_vec(),
        fingerprint: b"same".to_vec(),
        redelivered,
    };
    let delivery = |slot: &str, time, redelivered| Delivery {
        receipt: Some(receipt(slot, redelivered)),
        readings: vec![reading(&t, time, Value::Number(1.0))],
    };
    {
        let hub = hub_with_things(dir.path());
        let outcomes =
            hub.ingest_deliveries(vec![delivery("s/1", 1, false), delivery("s/2", 2, false)]);
        assert!(outcomes.iter().all(|o| matches!(o, Ok(Ingested::Stored))));
        let records = hub.store().load_receipts().unwrap();
        assert_eq!(records.len(), 1, "one record for the burst: {records:?}");
        assert_eq!(records[0].1.len(), 2);
        // Outside a runtime the release is written at once.
        hub.release(b"s/1").unwrap();
        let records = hub.store().load_receipts().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].1, vec![(b"s/2".to_vec(), b"same".to_vec())]);
        // Another burst, another record.
        hub.ingest_deliveries(vec![delivery("s/3", 3, false)]);
        assert_eq!(hub.store().load_receipts().unwrap().len(), 2);
    }
    let hub = Hub::open("gw", dir.path(), HubOptions::default()).unwrap();
    let outcomes = hub.ingest_deliveries(vec![
        delivery("s/2", 4, true),
        delivery("s/1", 5, true),
        delivery("s/3", 6, true),
    ]);
    assert!(matches!(outcomes[0], Ok(Ingested::AlreadyStored)));
    assert!(
        matches!(outcomes[1], Ok(Ingested::Stored)),
        "s/1 was released"
    );
    assert!(matches!(outcomes[2], Ok(Ingested::AlreadyStored)));
    hub.release_all([b"s/1".as_slice(), b"s/2".as_slice(), b"s/3".as_slice()])
        .unwrap();
    assert_eq!(hub.store().load_receipts().unwrap(), vec![]);
    assert_eq!(history_times(&hub, &t), vec![1, 2, 3, 5]);
}

#[test]
fn arrival_times_never_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_things(dir.path());
    let times: Vec<Timestamp> = (0..10_000).map(|_| hub.arrival_time()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn latest_is_the_newest_whatever_the_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_things(dir.path());
    let t = id("gw.x.d.temperature");
    hub.ingest(vec![reading(&t, 20, Value::Number(2.0))])
        .unwrap();
    hub.ingest(vec![reading(&t, 10, Value::Number(1.0))])
        .unwrap();
    assert_eq!(hub.latest(&t).flatten().unwrap().time, Timestamp(20));
    assert_eq!(hub.history(&t, Window::ALL).unwrap().len(), 2);
}

#[test]
fn senml_records_map_to_things_by_name_and_unit() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_things(dir.path());
    let t = id("gw.x.d.temperature");
    let record = |name: &str, unit: Option<&str>| senml::Resolved {
        name: name.into(),
        unit: unit.map(str::to_owned),
        value: Value::Number(1.0),
        time: Timestamp(5),
    };
    let ok = hub
        .readings_from_senml(
            Some(&t),
            vec![record("", Some("Cel")), record("gw.x.d.temperature", None)],
        )
        .unwrap();
    assert!(ok.iter().all(|r| r.thing == t));
    let by_name = hub
        .readings_from_senml(None, vec![record("gw.x.d.lamp", None)])
        .unwrap();
    assert_eq!(by_name[0].thing, id("gw.x.d.lamp"));
    assert!(matches!(
        hub.readings_from_senml(Some(&t), vec![record("", Some("K"))]),
        Err(IngestError::WrongUnit { .. })
    ));
    assert!(matches!(
        hub.readings_from_senml(Some(&t), vec![record("other", None)]),
        Err(IngestError::BadName { .. })
    ));
    assert!(matches!(
        hub.readings_from_senml(None, vec![record("no-id", None)]),
        Err(IngestError::BadName { .. })
    ));
}

#[tokio::test]
async fn actuation_is_validated_before_it_reaches_an_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_things(dir.path());
    let lamp = id("gw.x.d.lamp");
    assert!(matches!(
        hub.actuate(&id("gw.x.d.temperature"), Value::Number(1.0)),
        Err(ActuateError::NotActuator(_))
    ));
    assert!(matches!(
        hub.actuate(&lamp, Value::Number(1.0)),
        Err(ActuateError::WrongType { .. })
    ));
    assert!(matches!(
        hub.actuate(&id("gw.x.d.nothing"), Value::Bool(true)),
        Err(ActuateError::UnknownThing(_))
    ));
    assert!(matches!(
        hub.actuate(&lamp, Value::Bool(true)),
        Err(ActuateError::NoAdapter { .. })
    ));

    struct Echo;
    impl Actuator for Echo {
        fn actuate(&self, command: Command) -> crate::commands::ActuationFuture {
            Box::pin(async move { Ok(Some(command.value)) })
        }
    }
    hub.register_actuator("x", Arc::new(Echo));
    let ticket = hub.actuate(&lamp, Value::Bool(true)).unwrap();
    assert_eq!(
        ticket.outcome.await.unwrap(),
        CommandState::Succeeded {
            confirmed: Some(serde_json::json!(true))
        }
    );
    assert_eq!(
        hub.command(ticket.id).unwrap().state,
        CommandState::Succeeded {
            confirmed: Some(serde_json::json!(true))
        }
    );

    hub.set_available(&lamp, false).unwrap();
    assert!(matches!(
        hub.actuate(&lamp, Value::Bool(true)),
        Err(ActuateError::Unavailable(_))
    ));
}

#[test]
fn reopened_things_wait_for_their_adapter_and_readings_wake_them() {
    let dir = tempfile::tempdir().unwrap();
    let t = id("gw.x.d.temperature");
    {
        let hub = hub_with_things(dir.path());
        hub.ingest(vec![reading(&t, 7, Value::Number(21.0))])
            .unwrap();
    }
    let hub = Hub::open("gw", dir.path(), HubOptions::default()).unwrap();
    let thing = hub.thing(&t).unwrap();
    assert!(!thing.available);
    assert_eq!(hub.latest(&t).flatten().unwrap().value, Value::Number(21.0));
    hub.ingest(vec![reading(&t, 8, Value::Number(21.5))])
        .unwrap();
    assert!(
        hub.thing(&t).unwrap().available,
        "a reading proves the device is there"
    );
}

/// Records what the hub asks of the local cloud.
#[derive(Default)]
struct Recorder {
    interest: parking_lot::Mutex<Vec<(ThingId, bool)>>,
    /// History handed over: (to, thing, how many readings).
    handed: parking_lot::Mutex<Vec<(String, ThingId, usize)>>,
    /// Hand-overs that fail (the target unreachable) before one is taken.
    unreachable_hand_overs: std::sync::atomic::AtomicUsize,
}

impl Remote for Recorder {
    fn latest(&self, thing: &ThingService) -> crate::remote::RemoteFuture<Option<Reading>> {
        let gateway = thing.gateway.clone();
        Box::pin(async move { Err(RemoteError::Unreachable { gateway }) })
    }
    fn history(
        &self,
        thing: &ThingService,
        _: Window,
    ) -> crate::remote::RemoteFuture<Vec<Reading>> {
        let gateway = thing.gateway.clone();
        Box::pin(async move { Err(RemoteError::Unreachable { gateway }) })
    }
    fn actuate(&self, _: &str, _: Command) -> crate::ActuationFuture {
        Box::pin(async { Ok(None) })
    }
    fn is_reachable(&self, _: &str) -> bool {
        true
    }
    fn hand_history(
        &self,
        gateway: &str,
        thing: ThingId,
        readings: Vec<Reading>,
    ) -> crate::remote::RemoteFuture<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let gateway = gateway.to_owned();
        if self
            .unreachable_hand_overs
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Box::pin(async move { Err(RemoteError::Unreachable { gateway }) });
        }
        self.handed.lock().push((gateway, thing, readings.len()));
        Box::pin(async { Ok(()) })
    }
    fn interest(&self, thing: &ThingId, wanted: bool) {
        self.interest.lock().push((thing.clone(), wanted));
    }
}

fn remote_thing(raw: &str) -> ThingService {
    ThingService::new(id(raw), Kind::Sensor, "temperature", Some("Cel"))
}

#[tokio::test]
async fn other_gateways_things_are_listed_but_never_stored_here() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_things(dir.path());
    let before = hub.catalog_position().1;
    let theirs = remote_thing("gw-b.x.d.temperature");
    hub.replace_remote_catalog(
        "gw-b",
        vec![theirs.clone(), remote_thing("gw-c.x.d.forged")],
    );
    assert_eq!(hub.thing(&theirs.id), Some(theirs.clone()));
    assert_eq!(
        hub.thing(&id("gw-c.x.d.forged")),
        None,
        "gw-b speaks only for gw-b"
    );
    assert_eq!(
        hub.catalog_position().1,
        before,
        "not a change of our own catalog"
    );
    assert_eq!(hub.own_thing_count(), 2);
    assert!(matches!(
        hub.ingest(vec![reading(&theirs.id, 1, Value::Number(1.0))]),
        Err(IngestError::NotOwned { .. })
    ));
    // Without a local cloud, calls for them fail clearly.
    assert!(matches!(
        hub.read_latest(&theirs.id).await,
        Err(ReadError::Remote(RemoteError::NoCloud(_)))
    ));

    hub.mark_gateway_down("gw-b");
    assert!(!hub.thing(&theirs.id).unwrap().available);
    hub.apply_remote_changes("gw-b", vec![CatalogChange::Upsert(theirs.clone())]);
    assert!(hub.thing(&theirs.id).unwrap().available);
    hub.apply_remote_changes("gw-b", vec![CatalogChange::Remove(theirs.id.clone())]);
    assert_eq!(hub.thing(&theirs.id), None);
    drop(hub);
    let reopened = Hub::open("gw", dir.path(), HubOptions::default()).unwrap();
    assert_eq!(
        reopened.query(&Query::default()).len(),
        2,
        "only our own were stored"
    );
}

#[tokio::test]
async fn relayed_readings_reach_subscribers_and_following_lasts_as_long_as_they_do() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_things(dir.path());
    let recorder = Arc::new(Recorder::default());
    hub.attach_remote(recorder.clone());
    let theirs = remote_thing("gw-b.x.d.temperature");
    hub.replace_remote_catalog("gw-b", vec![theirs.clone()]);

    let mut stream = hub.subscribe_thing("test", &theirs.id);
    assert!(hub.is_following(&theirs.id));
    let second = hub.follow(&theirs.id).unwrap();
    hub.relay(vec![
        reading(&theirs.id, 5, Value::Number(21.0)),
        reading(&theirs.id, 6, Value::Bool(true)), // wrong type: dropped
        reading(&id("gw.x.d.temperature"), 7, Value::Number(1.0)), // ours: dropped
    ]);
    assert_eq!(
        stream.recv().await,
        Some(crate::Event::Reading(Arc::new(reading(
            &theirs.id,
            5,
            Value::Number(21.0)
        ))))
    );
    assert!(stream.try_recv().is_none());
    assert_eq!(
        hub.latest(&theirs.id),
        Some(Some(Reading {
            time: Timestamp(5),
            value: Value::Number(21.0)
        }))
    );
    assert_eq!(hub.latest(&id("gw.x.d.temperature")), Some(None));

    drop(stream);
    assert!(hub.is_following(&theirs.id), "one follower is left");
    drop(second);
    assert!(!hub.is_following(&theirs.id));
    assert_eq!(
        *recorder.interest.lock(),
        vec![
            (theirs.id.clone(), true),
            (theirs.id.clone(), true),
            (theirs.id.clone(), false),
            (theirs.id.clone(), false)
        ]
    );
    assert!(
        hub.follow(&id("gw.x.d.temperature")).is_none(),
        "our own need no following"
    );
}

// ------------------------------------------------------------------ moves

/// `raw` as `owner` holds it after `moves` moves.
fn owned(raw: &str, owner: &str, moves: u32) -> ThingService {
    let mut thing = remote_thing(raw);
    thing.gateway = owner.to_owned();
    thing.moves = moves;
    thing
}

#[test]
fn between_two_owners_of_one_id_the_entry_with_more_moves_wins_in_any_order() {
    let x = "gw-a.x.d.temperature";
    let before = || CatalogChange::Upsert(owned(x, "gw-a", 0));
    let after = || CatalogChange::Upsert(owned(x, "gw-b", 1));
    let moved = || CatalogChange::Moved {
        id: id(x),
        to: "gw-b".into(),
        moves: 1,
    };
    // (gateway, change) in the order a third gateway hears them.
    let orders: Vec<Vec<(&str, CatalogChange)>> = vec![
        vec![("gw-a", before()), ("gw-b", after()), ("gw-a", moved())],
        vec![("gw-a", before()), ("gw-a", moved()), ("gw-b", after())],
        vec![("gw-b", after()), ("gw-a", before()), ("gw-a", moved())],
        vec![
            ("gw-a", before()),
            ("gw-b", after()),
            ("gw-a", CatalogChange::Remove(id(x))),
        ],
    ];
    for (n, order) in orders.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::open("gw-c", dir.path(), HubOptions::default()).unwrap();
        for (gateway, change) in order {
            hub.apply_remote_changes(gateway, vec![change]);
        }
        let thing = hub
            .thing(&id(x))
            .unwrap_or_else(|| panic!("order {n}: kept"));
        assert_eq!(
            (thing.gateway.as_str(), thing.moves),
            ("gw-b", 1),
            "order {n}"
        );
        // A stale snapshot of the old owner changes nothing.
        hub.replace_remote_catalog("gw-a", vec![owned(x, "gw-a", 0)]);
        assert_eq!(hub.thing(&id(x)).unwrap().gateway, "gw-b", "order {n}");
    }
}

/// A transport that only says where its devices register.
struct Listening;

impl DeviceTransport for Listening {
    fn listening(&self) -> Option<TransportTarget> {
        Some(TransportTarget {
            service: String::new(),
            protocol: "coap".into(),
            host: "0.0.0.0".into(),
            port: 5683,
        })
    }
    fn repoint(&self, _: &str, _: &TransportTarget) -> RepointFuture {
        Box::pin(async { Err(RepointError::NoDevice("none".into())) })
    }
}

#[test]
fn a_device_that_moved_here_keeps_its_home_in_its_ids_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let x = id("gw-a.x.d.temperature");
    {
        let hub = Hub::open("gw-b", dir.path(), HubOptions::default()).unwrap();
        let offer = DeviceOffer {
            device: DeviceRef::parse("gw-a.x.d").unwrap(),
            moves: 1,
        };
        assert!(
            matches!(
                hub.accept_device("gw-a", offer.clone()),
                Err(MoveError::NoTransport(_))
            ),
            "an adapter that cannot move devices takes none"
        );
        hub.attach_transport("x", Arc::new(Listening));
        let target = hub.accept_device("gw-a", offer).unwrap();
        assert_eq!((target.service.as_str(), target.port), ("gw-b", 5683));
        assert_eq!(hub.device_home("x", "d"), "gw-a");
        assert_eq!(hub.device_home("x", "other"), "gw-b");
        hub.announce(remote_thing(x.as_str())).unwrap();
        let thing = hub.thing(&x).unwrap();
        assert_eq!((thing.gateway.as_str(), thing.moves), ("gw-b", 1));
        hub.ingest(vec![reading(&x, 50, Value::Number(2.0))])
            .unwrap();
        // History comes only from the gateway the device came from.
        let old = vec![Reading {
            time: Timestamp(10),
            value: Value::Number(1.0),
        }];
        assert!(hub.import_history("gw-c", &x, old.clone()).is_err());
        assert_eq!(hub.import_history("gw-a", &x, old).unwrap(), 1);
        let history: Vec<u64> = hub
            .history(&x, Window::ALL)
            .unwrap()
            .iter()
            .map(|r| r.time.0)
            .collect();
        assert_eq!(history, vec![10, 50]);
        assert_eq!(hub.latest(&x).flatten().unwrap().time, Timestamp(50));
    }
    let hub = Hub::open("gw-b", dir.path(), HubOptions::default()).unwrap();
    assert_eq!(hub.device_home("x", "d"), "gw-a", "the adoption is stored");
    assert_eq!(hub.thing(&x).unwrap().moves, 1);
}

#[tokio::test]
async fn a_thing_taken_over_elsewhere_is_released_with_its_whole_history() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_things(dir.path());
    let taker = Arc::new(Recorder::default());
    hub.attach_remote(taker.clone());
    let t = id("gw.x.d.temperature");
    let readings: Vec<_> = (1..=4_500)
        .map(|n| reading(&t, n, Value::Number(n as f64)))
        .collect();
    hub.ingest(readings).unwrap();
    let mut changes = hub.catalog_changes();

    // Its device registered at gw-b, which announces it with a move more.
    hub.apply_remote_changes(
        "gw-b",
        vec![CatalogChange::Upsert(owned(t.as_str(), "gw-b", 1))],
    );
    let (_, change) = changes.recv().await.unwrap();
    assert_eq!(
        change,
        CatalogChange::Moved {
            id: t.clone(),
            to: "gw-b".into(),
            moves: 1
        }
    );
    for _ in 0..100 {
        if hub.history(&t, Window::ALL).unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let handed = taker.handed.lock().clone();
    assert_eq!(
        handed.iter().map(|(_, _, n)| n).sum::<usize>(),
        4_500,
        "in chunks: {handed:?}"
    );
    assert!(
        handed
            .iter()
            .all(|(to, thing, _)| to == "gw-b" && *thing == t)
    );
    assert!(
        hub.history(&t, Window::ALL).unwrap().is_empty(),
        "deleted once handed"
    );
    assert_eq!(hub.own_thing_count(), 1, "the lamp stays");
    // It is gone from this gateway's store too: a restart does not bring it back.
    drop(changes);
    let reopened_things = hub.store().load_things().unwrap();
    assert!(reopened_things.iter().all(|thing| thing.id != t));
    // A stale announcement by this gateway's adapter takes nothing back,
    // nor does marking it.
    hub.announce(remote_thing(t.as_str())).unwrap();
    hub.set_available(&t, false).unwrap();
    let thing = hub.thing(&t).unwrap();
    assert_eq!((thing.gateway.as_str(), thing.available), ("gw-b", true));
    assert!(
        hub.store()
            .load_things()
            .unwrap()
            .iter()
            .all(|thing| thing.id != t)
    );
}

#[tokio::test(start_paused = true)]
async fn a_hand_over_the_target_could_not_take_goes_on_until_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_things(dir.path());
    let taker = Arc::new(Recorder::default());
    // More failures than one hand-over tries a chunk.
    taker
        .unreachable_hand_overs
        .store(8, std::sync::atomic::Ordering::Relaxed);
    hub.attach_remote(taker.clone());
    let t = id("gw.x.d.temperature");
    hub.ingest(vec![reading(&t, 1, Value::Number(1.0))])
        .unwrap();
    hub.apply_remote_changes(
        "gw-b",
        vec![CatalogChange::Upsert(owned(t.as_str(), "gw-b", 1))],
    );
    // Virtual time: the retries' pauses pass at once.
    for _ in 0..200 {
        if !taker.handed.lock().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert_eq!(taker.handed.lock().len(), 1, "handed over at last");
    for _ in 0..10 {
        if hub.history(&t, Window::ALL).unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        hub.history(&t, Window::ALL).unwrap().is_empty(),
        "and only then deleted here"
    );
}
