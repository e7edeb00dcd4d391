use proptest::prelude::*;
use serde_json::json;

use super::*;

fn ts(text: &str) -> Timestamp {
    time::parse(text).expect("valid test timestamp")
}

fn instance(value: Value, observed: &str) -> Instance {
    let mut attribute = Attribute::new(AttributeKind::Property, value);
    attribute.observed_at = Some(observed.to_owned());
    attribute.created_at = Some(ts(observed));
    Instance {
        instance_id: format!("{INSTANCE_PREFIX}{observed}"),
        attribute,
        deleted_at: None,
    }
}

fn params<'a>(timerel: Option<&'a str>, at: Option<&'a str>, end: Option<&'a str>) -> TemporalParams<'a> {
    TemporalParams {
        timerel,
        time_at: at,
        end_time_at: end,
        ..TemporalParams::default()
    }
}

#[test]
fn temporal_query_checks_consistency() {
    assert!(TemporalQuery::parse(params(None, None, None))
        .unwrap()
        .timerel
        .is_none());
    let before = TemporalQuery::parse(params(Some("before"), Some("2020-01-01T00:00:00Z"), None)).unwrap();
    assert_eq!(before.timerel, Some(TimeRel::Before(ts("2020-01-01T00:00:00Z"))));
    for bad in [
        params(Some("before"), None, None),
        params(None, Some("2020-01-01T00:00:00Z"), None),
        params(Some("between"), Some("2020-01-01T00:00:00Z"), None),
        params(
            Some("between"),
            Some("2020-01-02T00:00:00Z"),
            Some("2020-01-01T00:00:00Z"),
        ),
        params(Some("sometime"), Some("2020-01-01T00:00:00Z"), None),
        params(Some("after"), Some("yesterday"), None),
    ] {
        assert!(TemporalQuery::parse(bad).is_err(), "{bad:?}");
    }
    let bad_last = TemporalParams {
        last_n: Some("0"),
        ..TemporalParams::default()
    };
    assert!(TemporalQuery::parse(bad_last).is_err());
    let bad_property = TemporalParams {
        timeproperty: Some("seenAt"),
        ..TemporalParams::default()
    };
    assert!(TemporalQuery::parse(bad_property).is_err());
}

#[test]
fn timerel_bounds() {
    let between = TimeRel::Between(ts("2020-01-01T00:00:00Z"), ts("2020-01-02T00:00:00Z"));
    assert!(between.contains(ts("2020-01-01T00:00:00Z")));
    assert!(!between.contains(ts("2020-01-02T00:00:00Z")));
    assert!(TimeRel::Before(ts("2020-01-01T00:00:00Z")).contains(ts("2019-12-31T23:59:59Z")));
    assert!(TimeRel::After(ts("2020-01-01T00:00:00Z")).contains(ts("2020-01-01T00:00:00Z")));
}

#[test]
fn durations() {
    let d = Duration::parse("PT1H").unwrap();
    assert_eq!(d.seconds, 3600);
    assert_eq!(Duration::parse("P1D").unwrap().seconds, 86_400);
    assert_eq!(Duration::parse("P1Y2M").unwrap().months, 14);
    assert_eq!(Duration::parse("P1W").unwrap().seconds, 7 * 86_400);
    let f = Duration::parse("PT1.5S").unwrap();
    assert_eq!((f.seconds, f.micros), (1, 500_000));
    assert_eq!(
        Duration::parse("P1M").unwrap().add_to(ts("2020-01-31T00:00:00Z")),
        Some(ts("2020-02-29T00:00:00Z"))
    );
    for bad in [
        "", "P", "PT", "1D", "P1H", "PT1D", "P1.5D", "PD", "P1D2", "PT1M1H", "P-1D", "P1DT",
    ] {
        assert!(Duration::parse(bad).is_err(), "{bad}");
    }
}

proptest! {
    #[test]
    fn duration_parser_never_panics(text in "\\PC{0,24}") {
        let _ = Duration::parse(&text);
    }

    #[test]
    fn duration_round_trips(y in 0u32..100, m in 0u32..12, d in 0u32..400, h in 0u32..48, min in 0u32..120, s in 0u32..120) {
        let text = format!("P{y}Y{m}M{d}DT{h}H{min}M{s}S");
        let parsed = Duration::parse(&text).unwrap();
        prop_assert_eq!(parsed.months, y * 12 + m);
        prop_assert_eq!(parsed.seconds, i64::from(d) * 86_400 + i64::from(h) * 3600 + i64::from(min) * 60 + i64::from(s));
    }

    #[test]
    fn duration_fragment_garbage_is_rejected(prefix in "[A-Z0-9.]{0,10}") {
        let text = format!("X{prefix}");
        prop_assert!(Duration::parse(&text).is_err());
    }
}

#[test]
fn aggregation_methods() {
    let values = [json!(1), json!(2), json!(2), json!(5)];
    let refs: Vec<&Value> = values.iter().collect();
    assert_eq!(AggrMethod::TotalCount.apply(&refs), Some(json!(4)));
    assert_eq!(AggrMethod::DistinctCount.apply(&refs), Some(json!(3)));
    assert_eq!(AggrMethod::Sum.apply(&refs), Some(json!(10.0)));
    assert_eq!(AggrMethod::Avg.apply(&refs), Some(json!(2.5)));
    assert_eq!(AggrMethod::Min.apply(&refs), Some(json!(1.0)));
    assert_eq!(AggrMethod::Max.apply(&refs), Some(json!(5.0)));
    assert_eq!(AggrMethod::Sumsq.apply(&refs), Some(json!(34.0)));
    assert_eq!(AggrMethod::Stddev.apply(&refs), Some(json!(1.5)));
    let words = [json!("b"), json!("a")];
    let refs: Vec<&Value> = words.iter().collect();
    assert_eq!(AggrMethod::Sum.apply(&refs), None);
    assert_eq!(AggrMethod::Min.apply(&refs), Some(json!("a")));
    assert!(AggrMethod::parse_list("avg,max").is_ok());
    assert!(AggrMethod::parse_list("avg,median").is_err());
}

fn vehicle() -> TemporalEntity {
    let mut entity = TemporalEntity {
        id: "urn:ngsi-ld:Vehicle:1".into(),
        types: vec!["https://example.org/Vehicle".into()],
        ..TemporalEntity::default()
    };
    entity.attributes.insert(
        "https://example.org/speed".into(),
        vec![
            instance(json!(120), "2020-08-01T12:03:00Z"),
            instance(json!(80), "2020-08-01T12:05:00Z"),
            instance(json!(100), "2020-08-01T12:07:00Z"),
        ],
    );
    entity.attributes.insert(
        "https://example.org/fuelLevel".into(),
        vec![
            instance(json!(67), "2020-08-01T12:03:00Z"),
            instance(json!(53), "2020-08-01T13:05:00Z"),
            instance(json!(40), "2020-08-01T14:07:00Z"),
        ],
    );
    entity
}

#[test]
fn renders_temporal_values_and_aggregations() {
    let context = ActiveContext::core();
    let entity = vehicle();
    let options = TemporalRender {
        mode: TemporalMode::Values,
        render: RenderOptions::default(),
        timeproperty: TimeProperty::ObservedAt,
        origin: None,
        end: None,
    };
    let body = render_temporal(&entity, &context, &options);
    assert_eq!(
        body["https://example.org/speed"],
        json!({"type": "Property", "values": [[120, "2020-08-01T12:03:00Z"], [80, "2020-08-01T12:05:00Z"], [100, "2020-08-01T12:07:00Z"]]})
    );
    let aggregated = TemporalRender {
        mode: TemporalMode::Aggregated(Aggregation {
            methods: vec![AggrMethod::Avg, AggrMethod::Max],
            period: Some(Duration::parse("PT1H").unwrap()),
        }),
        ..options
    };
    let body = render_temporal(&entity, &context, &aggregated);
    assert_eq!(
        body["https://example.org/fuelLevel"]["avg"],
        json!([
            [67.0, "2020-08-01T12:03:00Z", "2020-08-01T13:03:00Z"],
            [53.0, "2020-08-01T13:03:00Z", "2020-08-01T14:03:00Z"],
            [40.0, "2020-08-01T14:03:00Z", "2020-08-01T15:03:00Z"]
        ])
    );
    assert_eq!(
        body["https://example.org/speed"]["max"],
        json!([[120.0, "2020-08-01T12:03:00Z", "2020-08-01T13:03:00Z"]])
    );
}

#[test]
fn normalized_instances_carry_their_ids() {
    let context = ActiveContext::core();
    let options = TemporalRender {
        mode: TemporalMode::Normalized,
        render: RenderOptions::default(),
        timeproperty: TimeProperty::ObservedAt,
        origin: None,
        end: None,
    };
    let body = render_temporal(&vehicle(), &context, &options);
    let speed = body["https://example.org/speed"].as_array().unwrap();
    assert_eq!(speed.len(), 3);
    assert_eq!(speed[0]["value"], json!(120));
    assert!(speed[0]["instanceId"].as_str().unwrap().starts_with(INSTANCE_PREFIX));
}

#[test]
fn pagination_cuts_across_attributes() {
    let mut entity = vehicle();
    let query = TemporalQuery {
        instance_limit: 4,
        ..TemporalQuery::default()
    };
    paginate(&mut entity, &query);
    let range = entity.range.expect("partial");
    assert_eq!(range.start, ts("2020-08-01T12:03:00Z"));
    assert_eq!(range.end, ts("2020-08-01T12:07:00Z"));
    assert_eq!(range.header(), "date-time 2020-08-01T12:03:00Z-2020-08-01T12:07:00Z/*");
    let kept: usize = entity.attributes.values().map(Vec::len).sum();
    assert_eq!(kept, 4);

    let mut entity = vehicle();
    let query = TemporalQuery {
        instance_limit: 2,
        last_n: Some(2),
        ..TemporalQuery::default()
    };
    paginate(&mut entity, &query);
    let range = entity.range.expect("partial");
    assert_eq!(range.start, ts("2020-08-01T14:07:00Z"));
    assert_eq!(range.end, ts("2020-08-01T13:05:00Z"));
    assert_eq!(entity.attributes["https://example.org/speed"].len(), 0);
}
