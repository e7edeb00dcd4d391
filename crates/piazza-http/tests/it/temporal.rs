//! The temporal API: history recorded by ordinary updates, then read back
//! with each option; temporal provisioning.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{client, problem};

const ID: &str = "urn:ngsi-ld:Sensor:t1";

fn values(body: &Value, attr: &str) -> Vec<Value> {
    body[attr]
        .as_array()
        .map(|a| a.iter().map(|i| i["value"].clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn updates_build_a_history_read_with_each_option() {
    let c = client();
    c.create(&json!({"id": ID, "type": "Sensor",
        "temperature": {"type": "Property", "value": 10, "observedAt": "2024-01-01T10:00:00Z"}}))
        .await;
    for (value, hour) in [(12, 11), (14, 12), (16, 13)] {
        let reply = c
            .patch(
                &format!("/entities/{ID}/attrs/temperature"),
                &json!({"value": value, "observedAt": format!("2024-01-01T{hour}:00:00Z")}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    }
    let all = c.get(&format!("/temporal/entities/{ID}")).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body["type"], json!("Sensor"));
    assert_eq!(
        values(&all.body, "temperature"),
        vec![json!(10), json!(12), json!(14), json!(16)]
    );
    assert!(all.body["temperature"][0]["instanceId"]
        .as_str()
        .unwrap()
        .starts_with("urn:ngsi-ld:attribute:instance:"));

    let after = c
        .get(&format!(
            "/temporal/entities/{ID}?timerel=after&timeAt=2024-01-01T12:00:00Z"
        ))
        .await;
    assert_eq!(values(&after.body, "temperature"), vec![json!(14), json!(16)]);
    let between = c
        .get(&format!(
            "/temporal/entities/{ID}?timerel=between&timeAt=2024-01-01T11:00:00Z&endTimeAt=2024-01-01T13:00:00Z"
        ))
        .await;
    assert_eq!(values(&between.body, "temperature"), vec![json!(12), json!(14)]);
    let last = c.get(&format!("/temporal/entities/{ID}?lastN=1")).await;
    assert_eq!(values(&last.body, "temperature"), vec![json!(16)]);

    let simplified = c.get(&format!("/temporal/entities/{ID}?options=temporalValues")).await;
    assert_eq!(
        simplified.body["temperature"],
        json!({"type": "Property", "values": [
            [10, "2024-01-01T10:00:00Z"], [12, "2024-01-01T11:00:00Z"],
            [14, "2024-01-01T12:00:00Z"], [16, "2024-01-01T13:00:00Z"]]})
    );
    let aggregated = c
        .get(&format!(
            "/temporal/entities/{ID}?options=aggregatedValues&aggrMethods=avg,max,totalCount&aggrPeriodDuration=PT2H"
        ))
        .await;
    assert_eq!(
        aggregated.body["temperature"]["avg"],
        json!([
            [11.0, "2024-01-01T10:00:00Z", "2024-01-01T12:00:00Z"],
            [15.0, "2024-01-01T12:00:00Z", "2024-01-01T14:00:00Z"]
        ])
    );
    assert_eq!(aggregated.body["temperature"]["totalCount"][0][0], json!(2));
    let sys = c.get(&format!("/temporal/entities/{ID}?options=sysAttrs")).await;
    assert!(sys.body["temperature"][0]["createdAt"].is_string());
    assert!(all.body["temperature"][0].get("createdAt").is_none());

    let listed = c.get("/temporal/entities?type=Sensor&attrs=temperature").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1));

    // Inconsistent temporal parameters are 400.
    for bad in [
        "timerel=between&timeAt=2024-01-01T11:00:00Z",
        "timerel=after",
        "timeAt=2024-01-01T11:00:00Z",
        "timerel=whenever&timeAt=2024-01-01T11:00:00Z",
        "lastN=-1",
        "options=aggregatedValues&aggrMethods=median",
        "options=aggregatedValues&aggrMethods=avg&aggrPeriodDuration=1H",
    ] {
        let reply = c.get(&format!("/temporal/entities/{ID}?{bad}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.problem(), problem("BadRequestData"), "{bad}");
    }
    // Deleting the entity keeps its history.
    assert_eq!(
        c.delete(&format!("/entities/{ID}")).await.status,
        StatusCode::NO_CONTENT
    );
    let kept = c.get(&format!("/temporal/entities/{ID}")).await;
    assert_eq!(kept.status, StatusCode::OK);
    assert_eq!(kept.body["type"], json!("Sensor"));
}

#[tokio::test]
async fn temporal_provisioning() {
    let c = client();
    let id = "urn:ngsi-ld:Vehicle:tp";
    let body = json!({"id": id, "type": "Vehicle", "speed": [
        {"type": "Property", "value": 120, "observedAt": "2020-08-01T12:03:00Z"},
        {"type": "Property", "value": 80, "observedAt": "2020-08-01T12:05:00Z"}]});
    assert_eq!(c.post("/temporal/entities", &body).await.status, StatusCode::CREATED);
    assert_eq!(c.post("/temporal/entities", &body).await.status, StatusCode::NO_CONTENT);
    let history = c.get(&format!("/temporal/entities/{id}")).await;
    assert_eq!(values(&history.body, "speed").len(), 4);

    let append = json!({"fuelLevel": {"type": "Property", "value": 40, "observedAt": "2020-08-01T12:07:00Z"}});
    assert_eq!(
        c.post(&format!("/temporal/entities/{id}/attrs"), &append).await.status,
        StatusCode::NO_CONTENT
    );
    let instance = history.body["speed"][0]["instanceId"].as_str().unwrap().to_owned();
    let modified = c
        .patch(
            &format!("/temporal/entities/{id}/attrs/speed/{instance}"),
            &json!({"speed": {"type": "Property", "value": 1, "observedAt": "2020-08-01T12:03:00Z"}}),
        )
        .await;
    assert_eq!(modified.status, StatusCode::NO_CONTENT, "{}", modified.body);
    let history = c.get(&format!("/temporal/entities/{id}")).await;
    assert_eq!(history.body["speed"][0]["value"], json!(1));
    assert_eq!(values(&history.body, "fuelLevel"), vec![json!(40)]);
    let gone = c
        .delete(&format!("/temporal/entities/{id}/attrs/speed/{instance}"))
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.delete(&format!("/temporal/entities/{id}/attrs/speed/{instance}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.delete(&format!("/temporal/entities/{id}/attrs/fuelLevel"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let history = c.get(&format!("/temporal/entities/{id}")).await;
    assert!(history.body.get("fuelLevel").is_none());
    assert_eq!(
        c.delete(&format!("/temporal/entities/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.get(&format!("/temporal/entities/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.post("/temporal/entities", &json!({"id": "not a uri", "type": "V"}))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn long_histories_are_paged_with_content_range() {
    let c = client();
    let id = "urn:ngsi-ld:Vehicle:long";
    let instances: Vec<Value> = (0..50)
        .map(|i| json!({"type": "Property", "value": i, "observedAt": format!("2020-01-01T00:{i:02}:00Z")}))
        .collect();
    let body = json!({"id": id, "type": "Vehicle", "speed": instances});
    assert_eq!(c.post("/temporal/entities", &body).await.status, StatusCode::CREATED);
    let page = c.get(&format!("/temporal/entities/{id}")).await;
    assert_eq!(page.status, StatusCode::PARTIAL_CONTENT);
    let range = page.header("content-range").unwrap_or_default().to_owned();
    assert!(range.starts_with("date-time 2020-01-01T00:00:00Z-"), "{range}");
    assert!(range.ends_with("/*"), "{range}");
    let last = c.get(&format!("/temporal/entities/{id}?lastN=5")).await;
    assert_eq!(last.status, StatusCode::OK);
    assert_eq!(values(&last.body, "speed").len(), 5);
}

#[tokio::test]
async fn temporal_query_by_post_reads_temporal_q_and_aggr_params() {
    let c = client();
    let id = "urn:ngsi-ld:Meter:p1";
    let created = c
        .post(
            "/temporal/entities",
            &json!({"id": id, "type": "Meter", "power": [
                {"type": "Property", "value": 1, "observedAt": "2024-01-01T10:00:00Z"},
                {"type": "Property", "value": 3, "observedAt": "2024-01-01T12:00:00Z"}]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let query = json!({"type": "Query", "entities": [{"type": "Meter"}],
        "temporalQ": {"timerel": "after", "timeAt": "2024-01-01T11:00:00Z"}});
    let reply = c.post("/temporal/entityOperations/query", &query).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(values(&reply.body[0], "power"), vec![json!(3)]);

    let mut aggregated = query.clone();
    aggregated["aggrParams"] = json!({"aggrMethods": ["max"]});
    let reply = c.post("/temporal/entityOperations/query", &aggregated).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body[0]["power"]["max"].is_array(), "{}", reply.body);

    let mut bad = query.clone();
    bad["temporalQ"]["lastN"] = json!(0);
    let reply = c.post("/temporal/entityOperations/query", &bad).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let unbounded = json!({"type": "Query", "temporalQ": {"lastN": 1}});
    let reply = c.post("/temporal/entityOperations/query", &unbounded).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn temporal_query_orders_by_id_only_and_format_wins_over_options() {
    let c = client();
    for id in ["urn:ngsi-ld:Lamp:b", "urn:ngsi-ld:Lamp:a"] {
        let created = c
            .post(
                "/temporal/entities",
                &json!({"id": id, "type": "Lamp", "lux": [
                    {"type": "Property", "value": 5, "observedAt": "2024-01-01T10:00:00Z"}]}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    }
    let ids = |body: &Value| -> Vec<Value> { body.as_array().unwrap().iter().map(|e| e["id"].clone()).collect() };
    let asc = c.get("/temporal/entities?type=Lamp&orderBy=id").await;
    assert_eq!(asc.status, StatusCode::OK, "{}", asc.body);
    assert_eq!(
        ids(&asc.body),
        vec![json!("urn:ngsi-ld:Lamp:a"), json!("urn:ngsi-ld:Lamp:b")]
    );
    let desc = c.get("/temporal/entities?type=Lamp&orderBy=id;desc").await;
    assert_eq!(
        ids(&desc.body),
        vec![json!("urn:ngsi-ld:Lamp:b"), json!("urn:ngsi-ld:Lamp:a")]
    );
    let by_name = c.get("/temporal/entities?type=Lamp&orderBy=lux").await;
    assert_eq!(by_name.status, StatusCode::BAD_REQUEST);

    let both = c
        .get("/temporal/entities?type=Lamp&format=temporalValues&options=aggregatedValues&aggrMethods=sum")
        .await;
    assert_eq!(both.status, StatusCode::OK, "{}", both.body);
    assert!(both.body[0]["lux"]["values"].is_array(), "{}", both.body);
    let system_only = c.get("/temporal/entities?attrs=createdAt").await;
    assert_eq!(system_only.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_scope_history_gives_the_temporal_entity_its_latest_scope() {
    let c = client();
    let id = "urn:ngsi-ld:Van:s1";
    let created = c
        .post(
            "/temporal/entities",
            &json!({"id": id, "type": "Van",
                "scope": [{"type": "Property", "value": "/R", "observedAt": "2024-01-01T10:00:00Z"},
                          {"type": "Property", "value": "/S", "observedAt": "2024-01-01T12:00:00Z"}],
                "speed": [{"type": "Property", "value": 1, "observedAt": "2024-01-01T11:00:00Z"}]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let scoped = c.get("/temporal/entities?type=Van&scopeQ=/S").await;
    assert_eq!(scoped.status, StatusCode::OK, "{}", scoped.body);
    assert_eq!(scoped.body.as_array().map(Vec::len), Some(1), "{}", scoped.body);
    let other = c.get("/temporal/entities?type=Van&scopeQ=/X").await;
    assert_eq!(other.body.as_array().map(Vec::len), Some(0), "{}", other.body);
}

#[tokio::test]
async fn a_deletion_instance_is_accepted_but_a_null_member_is_not() {
    let c = client();
    let id = "urn:ngsi-ld:Van:n1";
    let first = json!({"id": id, "type": "Van",
        "speed": [{"type": "Property", "value": 1, "observedAt": "2024-01-01T10:00:00Z"}]});
    assert_eq!(c.post("/temporal/entities", &first).await.status, StatusCode::CREATED);
    let second = json!({"id": id, "type": ["Van", "Truck"],
        "speed": [{"type": "Property", "value": "urn:ngsi-ld:null", "observedAt": "2024-01-02T10:00:00Z"}]});
    let reply = c.post("/temporal/entities", &second).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    let history = c.get(&format!("/temporal/entities/{id}")).await;
    assert_eq!(
        history.body["speed"].as_array().map(Vec::len),
        Some(2),
        "{}",
        history.body
    );
    let bare = json!({"id": "urn:ngsi-ld:Van:n2", "type": "Van", "expiresAt": "urn:ngsi-ld:null",
        "speed": [{"type": "Property", "value": 1, "observedAt": "2024-01-01T10:00:00Z"}]});
    assert_eq!(
        c.post("/temporal/entities", &bare).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn aggregates_cover_every_instance_not_one_page() {
    let c = crate::support::client();
    let instances: Vec<_> = (0..50)
        .map(|i| serde_json::json!({"type": "Property", "value": i, "observedAt": format!("2024-01-01T00:{i:02}:00Z")}))
        .collect();
    let body = serde_json::json!({"id": "urn:ngsi-ld:Sensor:agg", "type": "Sensor", "pm10": instances});
    let created = c.post("/temporal/entities", &body).await;
    assert_eq!(created.status, reqwest::StatusCode::CREATED, "{}", created.body);
    let reply = c
        .get("/temporal/entities/urn:ngsi-ld:Sensor:agg?options=aggregatedValues&aggrMethods=totalCount,sum&aggrPeriodDuration=P1D")
        .await;
    assert_eq!(reply.status, reqwest::StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["pm10"]["totalCount"][0][0], 50, "{}", reply.body);
    assert_eq!(reply.body["pm10"]["sum"][0][0], 1225.0, "{}", reply.body);
}

/// A temporal query by type and attributes pages and counts the entities
/// those select, in creation order (or by id), whichever way the storage
/// narrows them; `q` still tests each entity's latest state.
#[tokio::test]
async fn a_temporal_query_pages_and_counts_what_type_and_attrs_select() {
    let c = client();
    // Hives but every third (an Apiary); weight on even ones, humidity on odd.
    for i in 0..12 {
        let kind = if i % 3 == 0 { "Apiary" } else { "Hive" };
        let attr = if i % 2 == 0 { "weight" } else { "humidity" };
        c.create(&json!({"id": format!("urn:ngsi-ld:T:{i:02}"), "type": kind,
            attr: {"type": "Property", "value": i, "observedAt": "2024-01-01T10:00:00Z"}}))
            .await;
    }
    for (query, expected, total) in [
        (
            "type=Hive&attrs=weight&count=true&limit=2&offset=1",
            vec![4, 8],
            Some("4"),
        ),
        (
            "type=Hive&attrs=weight&count=true&limit=10&offset=3",
            vec![10],
            Some("4"),
        ),
        (
            "type=Hive,Apiary&attrs=weight,humidity&count=true&limit=3&offset=9",
            vec![9, 10, 11],
            Some("12"),
        ),
        ("type=Apiary&orderBy=id;desc&limit=3", vec![9, 6, 3], None),
        (
            "type=Hive&attrs=weight&id=urn:ngsi-ld:T:04,urn:ngsi-ld:T:05",
            vec![4],
            None,
        ),
        ("type=Hive&q=weight>=4&count=true&limit=2", vec![4, 8], Some("3")),
        ("type=Hive&attrs=pressure&count=true", vec![], Some("0")),
    ] {
        let reply = c.get(&format!("/temporal/entities?{query}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.body);
        assert_eq!(id_numbers(&reply), expected, "{query}");
        assert_eq!(reply.header("NGSILD-Results-Count"), total, "{query}");
    }
}

/// An entity without an instance in the time range has no history to show:
/// it is in no page and not in the count, so that consecutive pages share
/// no entity, whether SQL or Rust tests the candidates (`q`), in any order,
/// and across the batches the candidates are read in.
#[tokio::test]
async fn a_temporal_query_with_a_time_range_pages_only_what_has_history_in_it() {
    let c = client();
    // Even nests observed in 2024, odd ones in 2020.
    let nests: Vec<Value> = (0..70)
        .map(|i| {
            let year = if i % 2 == 0 { 2024 } else { 2020 };
            json!({"id": format!("urn:ngsi-ld:N:{i:02}"), "type": "Nest",
                "eggs": {"type": "Property", "value": i, "observedAt": format!("{year}-01-01T10:00:00Z")}})
        })
        .collect();
    let created = c.post("/entityOperations/create", &json!(nests)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let recent = "type=Nest&attrs=eggs&timerel=after&timeAt=2023-01-01T00:00:00Z&count=true";
    let old = "type=Nest&timerel=before&timeAt=2023-01-01T00:00:00Z&count=true";
    for (query, expected) in [
        (format!("{recent}&limit=2"), vec![0, 2]),
        (format!("{recent}&limit=2&offset=2"), vec![4, 6]),
        (format!("{recent}&limit=3&offset=33"), vec![66, 68]),
        (format!("{recent}&orderBy=id;desc&limit=3&offset=1"), vec![66, 64, 62]),
        (format!("{old}&limit=2&offset=1"), vec![3, 5]),
        // `q` is tested in Rust, on candidates read 64 at a time.
        (format!("{recent}&q=eggs>=10&limit=4&offset=26"), vec![62, 64, 66, 68]),
        (format!("{old}&q=eggs>=0&orderBy=id;desc&limit=2&offset=32"), vec![5, 3]),
        (
            format!("{recent}&options=aggregatedValues&aggrMethods=sum&aggrPeriodDuration=P1D&limit=2&offset=1"),
            vec![2, 4],
        ),
    ] {
        let reply = c.get(&format!("/temporal/entities?{query}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.body);
        assert_eq!(id_numbers(&reply), expected, "{query}");
        let total = if query.contains("eggs>=10") { "30" } else { "35" };
        assert_eq!(reply.header("NGSILD-Results-Count"), Some(total), "{query}");
    }
    let summed = c
        .get(&format!(
            "/temporal/entities?{recent}&options=aggregatedValues&aggrMethods=sum&aggrPeriodDuration=P1D&limit=1"
        ))
        .await;
    assert_eq!(summed.body[0]["eggs"]["sum"][0][0], json!(0.0), "{}", summed.body);
}

/// The numbers ending the ids (`urn:ngsi-ld:X:NN`) of the entities listed.
fn id_numbers(reply: &crate::support::Reply) -> Vec<u64> {
    reply
        .body
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default()[14..].parse().expect("number"))
        .collect()
}
