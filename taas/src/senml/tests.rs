//! Packs from RFC 8428 and hostile ones, in both encodings.

use super::*;
use proptest::prelude::*;

const NOW: Timestamp = Timestamp(1_700_000_000_000_000);

#[test]
fn rfc8428_multiple_datapoints_example() {
    // RFC 8428 §5.1.2.
    let pack = br#"[
        {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
        {"n":"current","u":"A","v":1.2}
    ]"#;
    let resolved = resolve(&parse_json(pack).unwrap(), NOW).unwrap();
    assert_eq!(resolved.len(), 2);
    assert_eq!(resolved[0].name, "urn:dev:ow:10e2073a01080063:voltage");
    assert_eq!(resolved[1].name, "urn:dev:ow:10e2073a01080063:current");
    assert_eq!(resolved[1].unit.as_deref(), Some("A"));
    assert_eq!(resolved[1].value, Value::Number(1.2));
    assert_eq!(resolved[0].time, NOW, "no time means now");
}

#[test]
fn base_time_value_and_relative_times() {
    let pack = br#"[
        {"bn":"dev:","bt":1.276020076001e+09,"bu":"A","bver":5,"n":"x","v":120.1},
        {"n":"x","t":-5,"v":1},
        {"bt":-10,"n":"x","bv":100,"v":1.5}
    ]"#;
    let resolved = resolve(&parse_json(pack).unwrap(), NOW).unwrap();
    assert_eq!(resolved[0].time, Timestamp(1_276_020_076_001_000));
    assert_eq!(resolved[1].time, Timestamp(1_276_020_071_001_000));
    assert_eq!(resolved[1].unit.as_deref(), Some("A"));
    // bt -10 is relative to now.
    assert_eq!(resolved[2].time, Timestamp(NOW.0 - 10_000_000));
    assert_eq!(resolved[2].value, Value::Number(101.5));
}

#[test]
fn value_kinds_and_sum() {
    let pack =
        br#"[{"n":"a","vb":true},{"n":"b","vs":"on"},{"n":"c","vd":"AQID"},{"n":"d","s":42}]"#;
    let values: Vec<Value> = resolve(&parse_json(pack).unwrap(), NOW)
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(
        values,
        vec![
            Value::Bool(true),
            Value::String("on".into()),
            Value::Data(vec![1, 2, 3]),
            Value::Number(42.0)
        ]
    );
}

#[test]
fn rejections() {
    let check = |json: &str| resolve(&parse_json(json.as_bytes())?, NOW);
    assert_eq!(check("[]"), Err(SenmlError::Empty));
    assert_eq!(check(r#"[{"n":"a"}]"#), Err(SenmlError::NoValue(0)));
    assert_eq!(
        check(r#"[{"n":"a","v":1,"vb":true}]"#),
        Err(SenmlError::SeveralValues(0))
    );
    assert_eq!(
        check(r#"[{"n":"-a","v":1}]"#),
        Err(SenmlError::BadName(0, "-a".into()))
    );
    assert_eq!(
        check(r#"[{"n":"a","v":1,"x_":1}]"#),
        Err(SenmlError::MustUnderstand(0, "x_".into()))
    );
    assert_eq!(
        check(r#"[{"n":"a","v":1,"bver":11}]"#),
        Err(SenmlError::Version(0, 11))
    );
    assert_eq!(
        check(r#"[{"n":"a","v":1,"t":1e300}]"#),
        Err(SenmlError::BadTime(0))
    );
    assert!(matches!(
        check(r#"[{"n":"a","v":"1"}]"#),
        Err(SenmlError::Json(_))
    ));
    assert!(matches!(
        check(r#"[{"n":"a","v":1,"v":2}]"#),
        Err(SenmlError::Json(_))
    ));
    assert!(matches!(check(r#"{"n":"a"}"#), Err(SenmlError::Json(_))));
    // Unknown fields without the trailing underscore are ignored.
    assert!(check(r#"[{"n":"a","v":1,"foo":{"x":[1]}}]"#).is_ok());
    // A null is an absent field.
    assert_eq!(
        check(r#"[{"n":"a","v":1,"vs":null,"t":null}]"#).unwrap()[0].value,
        Value::Number(1.0)
    );
}

#[test]
fn cbor_rfc_example_decodes() {
    // RFC 8428 §6 example: [{-2: "urn:dev:ow:10e2073a01080063:", -3: 1.276020076001e+09, -4: "A", -1: 5, 0: "voltage", 1: "V", 2: 120.1}, {0: "current", 6: -5, 2: 1.2}]
    let records = vec![
        Record {
            bn: Some("urn:dev:ow:10e2073a01080063:".into()),
            bt: Some(1.276020076001e9),
            bu: Some("A".into()),
            bver: Some(5),
            n: Some("voltage".into()),
            u: Some("V".into()),
            v: Some(120.1),
            ..Default::default()
        },
        Record {
            n: Some("current".into()),
            t: Some(-5.0),
            v: Some(1.2),
            ..Default::default()
        },
    ];
    let bytes = to_cbor(&records);
    assert_eq!(parse_cbor(&bytes).unwrap(), records);
    // The integer label for `n` is 0 and for `v` is 2 (RFC 8428 table 6).
    let raw: ciborium::Value = ciborium::de::from_reader(&bytes[..]).unwrap();
    let first = &raw.as_array().unwrap()[1].as_map().unwrap()[0];
    assert_eq!(first.0, ciborium::Value::Integer(0.into()));
}

fn record_strategy() -> impl Strategy<Value = Record> {
    let finite = || prop_oneof![(-1e6f64..1e6f64), (-1000i32..1000).prop_map(f64::from)];
    (
        proptest::option::of("[a-z][a-z0-9:/._-]{0,10}"),
        proptest::option::of("[a-z]{1,5}"),
        proptest::option::of("[A-Za-z%]{1,4}"),
        prop_oneof![
            finite().prop_map(|v| Record {
                v: Some(v),
                ..Default::default()
            }),
            any::<bool>().prop_map(|b| Record {
                vb: Some(b),
                ..Default::default()
            }),
            "[ -~]{0,12}".prop_map(|s| Record {
                vs: Some(s),
                ..Default::default()
            }),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(|d| Record {
                vd: Some(d),
                ..Default::default()
            }),
        ],
        proptest::option::of(1.0e9f64..2.0e9f64),
    )
        .prop_map(|(bn, n, u, mut r, t)| {
            r.bn = bn;
            r.n = n;
            r.u = u;
            r.t = t;
            r
        })
}

proptest! {
    #[test]
    fn json_roundtrip(records in proptest::collection::vec(record_strategy(), 1..6)) {
        prop_assert_eq!(parse_json(&to_json(&records)).unwrap(), records);
    }

    #[test]
    fn cbor_roundtrip(records in proptest::collection::vec(record_strategy(), 1..6)) {
        prop_assert_eq!(parse_cbor(&to_cbor(&records)).unwrap(), records);
    }

    #[test]
    fn resolution_is_encoding_independent(records in proptest::collection::vec(record_strategy(), 1..6)) {
        let via_json = resolve(&parse_json(&to_json(&records)).unwrap(), NOW);
        let via_cbor = resolve(&parse_cbor(&to_cbor(&records)).unwrap(), NOW);
        prop_assert_eq!(via_json, via_cbor);
    }

    #[test]
    fn decoders_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_json(&bytes).map(|r| resolve(&r, NOW));
        let _ = parse_cbor(&bytes).map(|r| resolve(&r, NOW));
    }

    #[test]
    fn pack_for_resolves_back(values in proptest::collection::vec((1_000_000_000_000_000u64..2_000_000_000_000_000, -1e6f64..1e6), 1..8)) {
        let readings: Vec<(Timestamp, Value)> = values.iter().map(|(t, v)| (Timestamp(*t), Value::Number(*v))).collect();
        let records = pack_for("gw.sim.dev.temperature", Some("Cel"), readings.clone());
        let resolved = resolve(&parse_json(&to_json(&records)).unwrap(), NOW).unwrap();
        for (r, (t, v)) in resolved.iter().zip(readings) {
            prop_assert_eq!(&r.name, "gw.sim.dev.temperature");
            prop_assert_eq!(r.unit.as_deref(), Some("Cel"));
            prop_assert_eq!(r.time, t);
            prop_assert_eq!(&r.value, &v);
        }
    }
}
