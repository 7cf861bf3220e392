//! The hub's behaviour through its public methods.

use std::sync::Arc;

use super::*;
use crate::commands::{Actuator, Command, CommandState};
use crate::remote::{CatalogChange, Remote, RemoteError};
use crate::senml;
use crate::store::Window;
use crate::testing::{id, reading};
use crate::{Kind, Query, Reading, ThingId, Timestamp, Value};

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
    let times: Vec<u64> = hub
        .history(&t, Window::ALL)
        .unwrap()
        .iter()
        .map(|r| r.time.0)
        .collect();
    assert_eq!(times, vec![1, 4, 5]);
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
