use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::entity::{parse_entity, ParseOptions};
use crate::error::ErrorKind;
use crate::jsonld::NoRemoteContexts;

fn core() -> std::sync::Arc<ActiveContext> {
    ActiveContext::core()
}

fn entity(body: Value) -> Entity {
    parse_entity(&body, &core(), ParseOptions::CREATE).expect("test entity is valid")
}

fn matches(query: &str, entity: &Entity) -> bool {
    Query::parse(query, &core())
        .unwrap_or_else(|e| panic!("'{query}' should parse: {e}"))
        .matches(entity)
}

/// Asserts each query's outcome against `entity`, reporting the failing one.
fn check(entity: &Entity, cases: &[(&str, bool)]) {
    for (query, expected) in cases {
        assert_eq!(matches(query, entity), *expected, "{query}");
    }
}

fn car() -> Entity {
    entity(json!({
        "id": "urn:ngsi-ld:Vehicle:A1",
        "type": "Vehicle",
        "speed": {"type": "Property", "value": 80, "unitCode": "KMH", "observedAt": "2018-12-04T12:00:00Z",
                  "accuracy": {"type": "Property", "value": 0.95}},
        "brand": {"type": "Property", "value": "Mercedes"},
        "electric": {"type": "Property", "value": false},
        "mileage": {"type": "Property", "value": 12.5},
        "serviced": {"type": "Property", "value": "2018-11-30T09:30:00Z"},
        "bought": {"type": "Property", "value": {"@type": "Date", "@value": "2017-05-20"}},
        "opens": {"type": "Property", "value": "08:30:00Z"},
        "tags": {"type": "Property", "value": ["red", "fast", 7]},
        "address": {"type": "Property", "value": {"city": "Firenze", "street": {"name": "Via Roma", "number": 3},
                    "phones": [{"kind": "home"}, {"kind": "work"}]}},
        "isParked": {"type": "Relationship", "object": "urn:ngsi-ld:Parking:P1"},
        "owners": {"type": "Relationship", "object": ["urn:ngsi-ld:Person:1", "urn:ngsi-ld:Person:2"]},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [11.25, 43.77]}},
        "name": {"type": "LanguageProperty", "languageMap": {"it": "Macchina", "en": "Car"}},
        "category": {"type": "VocabProperty", "vocab": "Sedan"},
        "readings": {"type": "ListProperty", "valueList": [3, 9, 27]},
    }))
}

#[test]
fn equality_and_inequality_of_every_value_kind() {
    check(
        &car(),
        &[
            ("speed==80", true),
            ("speed==80.0", true),
            ("speed==81", false),
            ("speed!=81", true),
            ("speed!=80", false),
            ("brand==\"Mercedes\"", true),
            ("brand==\"Audi\"", false),
            ("brand!=\"Audi\"", true),
            ("electric==false", true),
            ("electric==true", false),
            ("electric!=true", true),
            ("mileage==12.5", true),
            ("isParked==\"urn:ngsi-ld:Parking:P1\"", true),
            ("isParked==urn:ngsi-ld:Parking:P1", true),
            ("isParked==urn:ngsi-ld:Parking:P2", false),
        ],
    );
}

#[test]
fn ordering_operators() {
    check(
        &car(),
        &[
            ("speed>79", true),
            ("speed>80", false),
            ("speed>=80", true),
            ("speed>=81", false),
            ("speed<81", true),
            ("speed<80", false),
            ("speed<=80", true),
            ("speed<=79.9", false),
            ("mileage>12", true),
            ("mileage<-1", false),
            ("brand>\"Audi\"", true),
            ("brand<\"Audi\"", false),
            ("brand<=\"Mercedes\"", true),
        ],
    );
}

#[test]
fn values_of_different_types_never_compare() {
    check(
        &car(),
        &[
            ("brand>1", false),
            ("brand==1", false),
            ("speed==\"80\"", false),
            ("speed>\"1\"", false),
            ("electric==\"false\"", false),
            ("speed==true", false),
            // Different values, so != holds even across types.
            ("brand!=1", true),
        ],
    );
}

#[test]
fn and_binds_tighter_than_or() {
    let car = car();
    check(
        &car,
        &[
            ("speed==1;brand==\"Mercedes\"|electric==false", true),
            ("speed==1;(brand==\"Mercedes\"|electric==false)", false),
            ("electric==false|speed==1;brand==\"Audi\"", true),
            ("(electric==false|speed==1);brand==\"Audi\"", false),
            ("speed==80;brand==\"Mercedes\";electric==false", true),
            ("speed==80;brand==\"Mercedes\";electric==true", false),
            ("speed==1|brand==\"Audi\"|mileage==12.5", true),
            ("((speed==80))", true),
            ("(speed==80;(brand==\"Audi\"|(mileage>12;mileage<13)))", true),
        ],
    );
}

#[test]
fn existence_and_absence() {
    check(
        &car(),
        &[
            ("speed", true),
            ("colour", false),
            ("!colour", true),
            ("!speed", false),
            ("speed;!colour", true),
            ("location", true),
            ("speed.accuracy", true),
            ("speed.precision", false),
            ("!speed.precision", true),
            ("speed.observedAt", true),
            ("brand.observedAt", false),
            ("speed.unitCode", true),
            ("address[city]", true),
            ("address[country]", false),
            ("address[street.name]", true),
            ("colour!=\"red\"", false),
            ("colour!~=red", false),
        ],
    );
}

#[test]
fn ranges() {
    check(
        &car(),
        &[
            ("speed==70..90", true),
            ("speed==80..90", true),
            ("speed==70..80", true),
            ("speed==81..90", false),
            ("speed!=81..90", true),
            ("speed!=70..90", false),
            ("mileage==12.1..12.9", true),
            ("brand==\"A\"..\"N\"", true),
            ("brand==\"N\"..\"Z\"", false),
            ("serviced==2018-11-01T00:00:00Z..2018-12-01T00:00:00Z", true),
            ("serviced==2018-12-01T00:00:00Z..2018-12-31T00:00:00Z", false),
            ("opens==08:00:00Z..09:00:00Z", true),
        ],
    );
}

#[test]
fn value_lists() {
    check(
        &car(),
        &[
            ("speed==70,80,90", true),
            ("speed==70,90", false),
            ("speed!=70,90", true),
            ("speed!=70,80", false),
            ("brand==\"Audi\",\"Mercedes\"", true),
            ("brand==\"Audi\",\"BMW\"", false),
            ("isParked==urn:ngsi-ld:Parking:P9,urn:ngsi-ld:Parking:P1", true),
        ],
    );
}

#[test]
fn regular_expressions() {
    check(
        &car(),
        &[
            ("brand~=Merc", true),
            ("brand~=^Merc.*s$", true),
            ("brand~=^Audi", false),
            ("brand!~=^Audi", true),
            ("brand!~=Merc", false),
            ("brand~=(?i)mercedes", true),
            ("brand~=(Audi|Merc)", true),
            ("brand~=\"Audi|Merc\"", true),
            ("brand~=[M;|)]erc", true),
            ("brand~=\"e\\\\w\"", true),
            ("brand~=Merc;speed==80", true),
            ("brand~=Audi|speed==80", true),
            ("(brand~=Audi)", false),
            ("isParked~=Parking", true),
            ("name~=Macch", true),
            ("speed~=80", false),
            ("speed!~=80", true),
        ],
    );
}

#[test]
fn dates_and_times() {
    check(
        &car(),
        &[
            ("serviced==2018-11-30T09:30:00Z", true),
            ("serviced==2018-11-30T10:30:00+01:00", true),
            ("serviced>2018-11-30T09:00:00Z", true),
            ("serviced<2018-11-30T09:00:00Z", false),
            ("serviced>=2018-11-30T09:30:00.000Z", true),
            ("serviced==2018-11-30", true),
            ("serviced>2018-11-29", true),
            ("serviced<2018-11-30", false),
            ("bought==2017-05-20", true),
            ("bought<2018-01-01", true),
            ("bought>2018-01-01", false),
            ("opens>08:00:00Z", true),
            ("opens<08:00:00", false),
            ("serviced>09:00:00Z", true),
            ("speed.observedAt>=2018-12-04T12:00:00Z", true),
            ("speed.observedAt>2018-12-04T12:00:00Z", false),
            ("speed.observedAt==2018-12-04", true),
            // A quoted date is a string: it compares as text.
            ("serviced==\"2018-11-30T09:30:00Z\"", true),
            ("brand>2018-01-01", false),
        ],
    );
}

#[test]
fn system_timestamps_compare_as_instants() {
    let mut car = car();
    let now = time::parse("2024-03-01T10:00:00Z").expect("valid");
    car.stamp_new(now);
    check(
        &car,
        &[
            ("speed.createdAt==2024-03-01T10:00:00Z", true),
            ("speed.modifiedAt>2024-01-01T00:00:00Z", true),
            ("speed.modifiedAt<2024-01-01T00:00:00Z", false),
            ("speed.createdAt==2024-03-01", true),
            ("speed.createdAt~=^2024-03", true),
            ("speed.accuracy.createdAt>=2024-03-01T10:00:00Z", true),
        ],
    );
}

#[test]
fn sub_attributes_and_metadata() {
    check(
        &car(),
        &[
            ("speed.accuracy==0.95", true),
            ("speed.accuracy>0.99", false),
            ("speed.unitCode==\"KMH\"", true),
            ("speed.unitCode!=\"KMH\"", false),
            ("speed.accuracy.unitCode", false),
            ("speed.nothing==1", false),
        ],
    );
}

#[test]
fn compound_members() {
    check(
        &car(),
        &[
            ("address[city]==\"Firenze\"", true),
            ("address[city]==\"Roma\"", false),
            ("address[street.number]==3", true),
            ("address[street][number]>2", true),
            ("address[street.name]~=Roma", true),
            ("address[phones.kind]==\"work\"", true),
            ("address[phones.kind]==\"fax\"", false),
            ("address[city.name]==\"Firenze\"", false),
            ("address==\"Firenze\"", false),
        ],
    );
}

#[test]
fn array_values_match_any_element() {
    check(
        &car(),
        &[
            ("tags==\"fast\"", true),
            ("tags==7", true),
            ("tags==\"slow\"", false),
            ("tags!=\"slow\"", true),
            ("tags!=\"red\"", false),
            ("tags>5", true),
            ("readings==9", true),
            ("readings>20", true),
            ("readings>30", false),
            ("readings==10..20", false),
        ],
    );
}

#[test]
fn relationships_match_any_object() {
    check(
        &car(),
        &[
            ("owners==\"urn:ngsi-ld:Person:2\"", true),
            ("owners==urn:ngsi-ld:Person:3", false),
            ("owners!=urn:ngsi-ld:Person:1", false),
            ("owners!=urn:ngsi-ld:Person:3", true),
            ("isParked[x]", false),
        ],
    );
}

#[test]
fn language_maps() {
    check(
        &car(),
        &[
            ("name==\"Car\"", true),
            ("name==\"Macchina\"", true),
            ("name==\"Auto\"", false),
            ("name[it]==\"Macchina\"", true),
            ("name[it]==\"Car\"", false),
            ("name[en]==\"Car\"", true),
            ("name[fr]", false),
            ("name[it]", true),
        ],
    );
}

#[test]
fn vocab_values_compare_expanded_with_expand_values() {
    let sedan = core().expand("Sedan");
    let car = car();
    // Without expandValues the query value is compared as written.
    check(
        &car,
        &[
            ("category==\"Sedan\"", false),
            ("category==Sedan", false),
            (&format!("category==\"{sedan}\""), true),
        ],
    );
    for (text, expected) in [
        ("category==\"Sedan\"", true),
        ("category==Sedan", true),
        ("category==\"Coupe\"", false),
        ("category!=\"Coupe\"", true),
        ("category!=\"Sedan\"", false),
        ("category==\"Coupe\",\"Sedan\"", true),
    ] {
        let mut query = Query::parse(text, &core()).unwrap();
        query.expand_values(&[core().expand("category")]);
        assert_eq!(query.matches(&car), expected, "{text}");
    }
}

#[test]
fn relationships_only_support_equality() {
    check(
        &car(),
        &[
            ("isParked>\"urn:a\"", false),
            ("isParked<\"urn:z\"", false),
            ("isParked==\"urn:ngsi-ld:Parking:P1\"", true),
        ],
    );
}

#[test]
fn linked_entity_terms_follow_relationships() {
    let context = core();
    let car = car();
    let parking = entity(
        json!({"id": "urn:ngsi-ld:Parking:P1", "type": "Parking", "name": {"type": "Property", "value": "Central"}}),
    );
    let mut linked = std::collections::HashMap::new();
    linked.insert(parking.id.clone(), parking);
    for (text, expected) in [
        ("isParked{name}==\"Central\"", true),
        ("isParked{Parking:name}==\"Central\"", true),
        ("isParked{Vehicle:name}==\"Central\"", false),
        ("isParked{name}==\"Other\"", false),
        ("isParked{name}", true),
        ("!isParked{name}", false),
    ] {
        let query = Query::parse(text, &context).unwrap();
        assert_eq!(query.matches_linked(&car, &|id| linked.get(id)), expected, "{text}");
        assert_eq!(query.link_depth(), 1, "{text}");
        assert_eq!(query.link_relationships(), vec![context.expand("isParked")]);
    }
    // Without the linked entities, a positive linked term cannot match.
    assert!(!Query::parse("isParked{name}", &context).unwrap().matches(&car));
    assert_eq!(Query::parse("a{b{c}}==1", &context).unwrap().link_depth(), 2);
    for bad in ["a{b", "a{}", "a{b}}", "a{:b}", "a{b{c}"] {
        assert!(Query::parse(bad, &context).is_err(), "{bad}");
    }
    let too_deep = format!("{}x{}", "r{".repeat(MAX_HOPS + 1), "}".repeat(MAX_HOPS + 1));
    assert!(Query::parse(&too_deep, &context).is_err());
}

#[test]
fn geo_properties_only_exist() {
    check(
        &car(),
        &[
            ("location", true),
            ("location==\"Point\"", false),
            ("location!=\"Point\"", false),
            ("location[type]==\"Point\"", false),
            ("location~=Point", false),
        ],
    );
}

#[test]
fn multi_instance_attributes_match_if_any_instance_does() {
    let sensor = entity(json!({
        "id": "urn:ngsi-ld:Sensor:1",
        "type": "Sensor",
        "temperature": [
            {"type": "Property", "value": 20, "datasetId": "urn:ngsi-ld:Dataset:a"},
            {"type": "Property", "value": 30, "datasetId": "urn:ngsi-ld:Dataset:b", "unitCode": "CEL"},
        ],
    }));
    check(
        &sensor,
        &[
            ("temperature==20", true),
            ("temperature==30", true),
            ("temperature>25", true),
            ("temperature>35", false),
            ("temperature!=20", true),
            ("temperature!=20,30", false),
            ("temperature.datasetId==\"urn:ngsi-ld:Dataset:b\"", true),
            ("temperature.datasetId==urn:ngsi-ld:Dataset:c", false),
            ("temperature.unitCode==\"CEL\"", true),
        ],
    );
}

#[test]
fn names_are_expanded_with_the_context() {
    let user = json!({"schema": "https://schema.org/", "speed": "https://example.org/speed"});
    let context = ActiveContext::from_user_context(&user, &NoRemoteContexts).expect("valid context");
    let body = json!({"id": "urn:x:1", "type": "T", "speed": 5, "schema:color": "red"});
    let thing = parse_entity(&body, &context, ParseOptions::CREATE).expect("valid");
    let query = Query::parse("speed==5;schema:color==\"red\"", &context).expect("valid");
    assert!(query.matches(&thing));
    // With the core context alone `speed` means another attribute.
    assert!(!Query::parse("speed==5", &core()).expect("valid").matches(&thing));
}

#[test]
fn attribute_names_are_expanded_and_unique() {
    let query = Query::parse("speed>1;(brand==\"x\"|speed.accuracy);!colour;address[city]", &core()).expect("valid");
    let expected: Vec<String> = ["speed", "brand", "colour", "address"]
        .iter()
        .map(|n| core().expand(n))
        .collect();
    assert_eq!(query.attribute_names(), expected);
}

#[test]
fn strings_may_contain_separators_and_escapes() {
    let thing = entity(json!({
        "id": "urn:x:1", "type": "T",
        "motto": "a;b|c)(d,e..f \"quoted\" back\\slash",
    }));
    check(
        &thing,
        &[
            ("motto==\"a;b|c)(d,e..f \\\"quoted\\\" back\\\\slash\"", true),
            ("motto==\"a;b|c\"", false),
            ("motto~=\"b\\|c\\)\"", true),
        ],
    );
}

#[test]
fn whitespace_between_tokens_is_ignored() {
    check(
        &car(),
        &[
            (" speed > 79 ; ( brand == \"Mercedes\" | electric == true ) ", true),
            ("speed == 70 .. 90", true),
            ("speed == 70 , 80", true),
        ],
    );
}

#[test]
fn typed_literal_values_compare_by_their_value() {
    let thing = entity(json!({
        "id": "urn:x:1", "type": "T",
        "at": {"type": "Property", "value": {"@type": "DateTime", "@value": "2018-12-04T12:00:00Z"}},
    }));
    check(
        &thing,
        &[
            ("at==2018-12-04T12:00:00Z", true),
            ("at>2018-12-04T11:00:00Z", true),
            ("at<2018-12-04T11:00:00Z", false),
        ],
    );
}

#[test]
fn large_integers_compare_exactly() {
    let thing = entity(json!({"id": "urn:x:1", "type": "T", "n": 9007199254740993_i64}));
    check(
        &thing,
        &[
            ("n==9007199254740993", true),
            ("n==9007199254740992", false),
            ("n>9007199254740992", true),
        ],
    );
}

#[test]
fn garbage_is_bad_request_data() {
    let bad = [
        "",
        "   ",
        "(",
        ")",
        "()",
        "speed==",
        "speed=80",
        "speed===80",
        "speed=~80",
        "speed<>80",
        "speed>",
        "==80",
        "speed==80;",
        "speed==80|",
        ";speed",
        "speed==80)",
        "(speed==80",
        "speed==\"open",
        "speed==\"a\\\"",
        "speed==80 90",
        "speed==1..",
        "speed==..5",
        "speed==1..\"a\"",
        "electric==true..false",
        "electric>true",
        "speed>1,2",
        "speed>1..2",
        "speed.",
        ".speed",
        "speed..accuracy",
        "address[",
        "address[]",
        "address[city",
        "address[a..b]",
        "address[city]x",
        "!",
        "!!speed",
        "!(speed)",
        "speed~=",
        "speed~=(unclosed",
        "speed~=[unclosed",
        "speed~=a{99999999}",
        "speed==1e999",
        "speed==--1",
        "speed==2018-13-45",
        "speed==25:00:00Z",
        "speed.observedAt[x]",
        "speed==80 ; <script>",
        "a b",
        "speed==1,,2",
    ];
    for text in bad {
        let error = Query::parse(text, &core()).expect_err(text);
        assert_eq!(error.kind, ErrorKind::BadRequestData, "{text}");
    }
}

#[test]
fn nesting_is_limited() {
    let deep = format!("{}speed{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
    assert!(Query::parse(&deep, &core()).is_err());
    let shallow = format!("{}speed{}", "(".repeat(MAX_DEPTH - 1), ")".repeat(MAX_DEPTH - 1));
    assert!(Query::parse(&shallow, &core()).is_ok());
    let hostile = "(".repeat(100_000);
    assert!(Query::parse(&hostile, &core()).is_err());
}

#[test]
fn huge_regexes_are_rejected() {
    let nested = format!("speed~={}a{}", "(".repeat(200), ")".repeat(200));
    assert!(Query::parse(&nested, &core()).is_err());
    assert!(Query::parse("speed~=(\\w{100}){100}", &core()).is_err());
}

#[test]
fn non_ascii_input_is_handled() {
    let thing = entity(json!({"id": "urn:x:1", "type": "T", "città": "Firenzé"}));
    check(&thing, &[("città==\"Firenzé\"", true), ("città~=é$", true)]);
    // A bare word is a string (compared as written, or expanded with expandValues).
    check(&thing, &[("città==Firenzé", true)]);
    for bad in ["é==", "città==\"é", "città[é"] {
        assert!(Query::parse(bad, &core()).is_err(), "{bad}");
    }
}

proptest! {
    #[test]
    fn parse_never_panics(text in ".{0,64}") {
        let _ = Query::parse(&text, &core());
    }

    #[test]
    fn parse_and_match_never_panic_on_query_like_text(
        text in r#"[a-z!=<>~;|(),.\[\]"0-9:TZ +\-\\]{0,48}"#,
    ) {
        if let Ok(query) = Query::parse(&text, &core()) {
            let _ = query.matches(&car());
            let _ = query.attribute_names();
        }
    }
}

fn bounds(query: &str) -> Vec<ValueBound> {
    Query::parse(query, &core()).expect("query").value_bounds()
}

#[test]
fn value_bounds_are_stated_only_for_whole_attribute_comparisons() {
    let speed = core().expand("speed");
    let brand = core().expand("brand");
    assert_eq!(
        bounds("speed>80;brand==\"Mercedes\""),
        vec![
            ValueBound {
                attribute: speed.clone(),
                test: ValueTest::Between {
                    low: Some(80.0),
                    high: None
                }
            },
            ValueBound {
                attribute: brand,
                test: ValueTest::Texts(vec!["Mercedes".into()])
            },
        ]
    );
    assert_eq!(
        bounds("speed==1..5"),
        vec![ValueBound {
            attribute: speed.clone(),
            test: ValueTest::Between {
                low: Some(1.0),
                high: Some(5.0)
            }
        }]
    );
    assert_eq!(
        bounds("speed==1,2"),
        vec![ValueBound {
            attribute: speed,
            test: ValueTest::Numbers(vec![1.0, 2.0])
        }]
    );
    for unbounded in [
        "speed>80|brand==\"Mercedes\"",
        "speed!=80",
        "brand~=\"Merc.*\"",
        "speed.observedAt>2018-01-01T00:00:00Z",
        "speed.accuracy>0.5",
        "address[city]==\"Prato\"",
        "speed",
        "!speed",
        "speed==1,\"one\"",
        "serviced>2018-01-01T00:00:00Z",
    ] {
        assert_eq!(bounds(unbounded), Vec::new(), "{unbounded}");
    }
}

#[test]
fn indexed_values_are_the_numbers_and_strings_comparisons_see() {
    let car = car();
    let values = indexed_values(&car);
    let of = |name: &str| -> Vec<IndexedValue> {
        let name = core().expand(name);
        values
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(of("speed"), vec![IndexedValue::Number(80.0)]);
    assert_eq!(of("brand"), vec![IndexedValue::Text("Mercedes".into())]);
    assert_eq!(of("electric"), Vec::new(), "booleans are not indexed");
    assert_eq!(
        of("bought"),
        vec![IndexedValue::Text("2017-05-20".into())],
        "typed literals by value"
    );
}

/// An attribute value of one of the shapes `q` treats differently.
fn arbitrary_value() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        (-5i64..5).prop_map(Value::from),
        (-5.0f64..5.0).prop_map(|f| json!((f * 4.0).round() / 4.0)),
        prop::sample::select(vec!["a", "b", "Mercedes", "2017-05-20"]).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ];
    prop_oneof![
        3 => scalar.clone(),
        1 => prop::collection::vec(scalar.clone(), 0..3).prop_map(Value::from),
        1 => scalar.prop_map(|v| json!({"@value": v})),
    ]
}

fn arbitrary_query() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec!["p", "q"]);
    let literal = prop::sample::select(vec![
        "0",
        "1",
        "-2",
        "2.5",
        "-1.25",
        "\"a\"",
        "\"b\"",
        "true",
        "1..3",
        "0,2",
        "\"a\",\"b\"",
    ]);
    let operator = prop::sample::select(vec!["==", "!=", ">", ">=", "<", "<=", "~="]);
    let term = (name, operator, literal).prop_map(|(n, o, l)| format!("{n}{o}{l}"));
    prop::collection::vec(term, 1..3).prop_flat_map(|terms| {
        let n = terms.len();
        (
            Just(terms),
            prop::collection::vec(prop::sample::select(vec![";", ";", ";", "|"]), n),
        )
            .prop_map(|(terms, joins)| {
                let mut q = String::new();
                for (i, term) in terms.iter().enumerate() {
                    if i > 0 {
                        q.push_str(joins[i]);
                    }
                    q.push_str(term);
                }
                q
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// The index contract: an entity a query matches meets all its bounds
    /// through its indexed values, so narrowing never loses a match.
    #[test]
    fn an_entity_a_query_matches_meets_its_value_bounds(
        p in prop::collection::vec(arbitrary_value(), 1..3),
        q in prop::collection::vec(arbitrary_value(), 0..2),
        query in arbitrary_query(),
    ) {
        let mut body = json!({"id": "urn:ngsi-ld:T:1", "type": "T"});
        let instances = |values: &[Value]| -> Value {
            values.iter().enumerate().map(|(i, v)| {
                let mut instance = json!({"type": "Property", "value": v});
                if i > 0 {
                    instance["datasetId"] = json!(format!("urn:ngsi-ld:Dataset:{i}"));
                }
                instance
            }).collect::<Vec<_>>().into()
        };
        body["p"] = instances(&p);
        if !q.is_empty() {
            body["q"] = instances(&q);
        }
        let Ok(entity) = parse_entity(&body, &core(), ParseOptions::CREATE) else { return Ok(()) };
        let Ok(parsed) = Query::parse(&query, &core()) else { return Ok(()) };
        if parsed.matches(&entity) {
            let values = indexed_values(&entity);
            for bound in parsed.value_bounds() {
                prop_assert!(
                    values.iter().any(|(name, value)| *name == bound.attribute && bound.test.passes(value)),
                    "{query} matches but {bound:?} is not met by {values:?}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// What a store's candidate check relies on: an entity decoded with
    /// only the attributes a query reads matches exactly when the whole
    /// entity does; decoded with all of them, it is the entity but for its
    /// own timestamps.
    #[test]
    fn an_entity_keeping_the_attributes_read_matches_as_the_whole(
        p in prop::collection::vec(arbitrary_value(), 1..3),
        q in prop::collection::vec(arbitrary_value(), 0..2),
        r in arbitrary_value(),
        query in arbitrary_query(),
        by_attrs in any::<bool>(),
    ) {
        let instances = |values: &[Value]| -> Value {
            values.iter().enumerate().map(|(i, v)| {
                let mut instance = json!({"type": "Property", "value": v, "observedAt": "2024-05-01T00:00:00Z"});
                if i > 0 {
                    instance["datasetId"] = json!(format!("urn:ngsi-ld:Dataset:{i}"));
                }
                instance
            }).collect::<Vec<_>>().into()
        };
        let mut body = json!({"id": "urn:ngsi-ld:T:1", "type": "T", "p": instances(&p), "r": instances(&[r])});
        if !q.is_empty() {
            body["q"] = instances(&q);
        }
        let Ok(mut whole) = parse_entity(&body, &core(), ParseOptions::CREATE) else { return Ok(()) };
        whole.stamp_new(time::now());
        let Ok(parsed) = Query::parse(&query, &core()) else { return Ok(()) };
        let selection = crate::query::EntityQuery {
            q: Some(parsed),
            attrs: if by_attrs { vec![core().expand("r")] } else { Vec::new() },
            ..Default::default()
        };
        let doc = serde_json::to_string(&whole).expect("entities serialise");
        let kept = crate::entity::decode_keeping(&doc, &selection.attributes_read()).expect("stored form");
        prop_assert_eq!(selection.matches(&kept), selection.matches(&whole), "{}", query);

        let names: Vec<String> = whole.attributes.keys().cloned().collect();
        let mut all = crate::entity::decode_keeping(&doc, &names).expect("stored form");
        all.created_at = whole.created_at;
        all.modified_at = whole.modified_at;
        prop_assert_eq!(all, whole);
    }
}
