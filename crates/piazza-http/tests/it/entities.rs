//! Entity lifecycle over HTTP: create, retrieve in every representation,
//! the attribute operations, merge, replace and delete.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{client, problem, CORE};

fn duomo(id: &str) -> serde_json::Value {
    json!({
        "id": id,
        "type": "Building",
        "name": {"type": "Property", "value": "Duomo"},
        "height": {"type": "Property", "value": 114.5, "unitCode": "MTR", "observedAt": "2024-05-01T10:00:00Z"},
        "city": {"type": "Relationship", "object": "urn:ngsi-ld:City:Firenze"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [11.2560, 43.7731]}},
    })
}

#[tokio::test]
async fn create_then_retrieve_round_trips_the_normalized_form() {
    let c = client();
    let entity = duomo("urn:ngsi-ld:Building:duomo");
    let reply = c.post("/entities", &entity).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(
        reply.header("location"),
        Some("/ngsi-ld/v1/entities/urn:ngsi-ld:Building:duomo")
    );
    assert_eq!(reply.header("ngsild-tenant"), Some(c.tenant.as_str()));
    let got = c.get("/entities/urn:ngsi-ld:Building:duomo").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, entity);
    assert!(got.header("link").is_some_and(|l| l.contains(CORE)));
    assert_eq!(got.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn representations_key_values_concise_geojson_and_ld() {
    let c = client();
    c.create(&duomo("urn:ngsi-ld:Building:r")).await;
    let kv = c.get("/entities/urn:ngsi-ld:Building:r?options=keyValues").await;
    assert_eq!(kv.body["height"], json!(114.5));
    assert_eq!(kv.body["city"], json!("urn:ngsi-ld:City:Firenze"));
    let concise = c.get("/entities/urn:ngsi-ld:Building:r?format=concise").await;
    assert_eq!(concise.body["name"], json!("Duomo"));
    assert_eq!(concise.body["city"], json!({"object": "urn:ngsi-ld:City:Firenze"}));
    let geo = c
        .send(
            c.request(Method::GET, "/entities/urn:ngsi-ld:Building:r")
                .header("Accept", "application/geo+json"),
        )
        .await;
    assert_eq!(geo.body["type"], "Feature");
    assert_eq!(geo.body["geometry"]["coordinates"], json!([11.2560, 43.7731]));
    assert_eq!(geo.header("content-type"), Some("application/geo+json"));
    assert_eq!(geo.body["@context"], json!(CORE));
    let plain_geo = c
        .send(
            c.request(Method::GET, "/entities/urn:ngsi-ld:Building:r")
                .header("Accept", "application/geo+json")
                .header("Prefer", "body=json"),
        )
        .await;
    assert!(
        plain_geo.body.get("@context").is_none(),
        "Prefer: body=json moves the context to a Link header"
    );
    assert!(plain_geo.header("link").is_some_and(|l| l.contains(CORE)));
    let ld = c
        .send(
            c.request(Method::GET, "/entities/urn:ngsi-ld:Building:r")
                .header("Accept", "application/ld+json"),
        )
        .await;
    assert_eq!(ld.body["@context"], json!(CORE));
    assert_eq!(ld.header("content-type"), Some("application/ld+json"));
    assert!(ld.header("link").is_none(), "JSON-LD carries its context in the body");
    let listed = c
        .send(
            c.request(Method::GET, "/entities?type=Building&options=keyValues")
                .header("Accept", "application/ld+json"),
        )
        .await;
    let items = listed.body.as_array().expect("a list of entities");
    assert!(!items.is_empty());
    for item in items {
        assert_eq!(item["@context"], json!(CORE), "every listed entity carries the context");
        assert_eq!(item["type"], json!("Building"));
    }
    let sys = c.get("/entities/urn:ngsi-ld:Building:r?options=sysAttrs").await;
    assert!(sys.body["createdAt"].is_string() && sys.body["name"]["modifiedAt"].is_string());
}

#[tokio::test]
async fn attribute_operations_change_only_what_they_name() {
    let c = client();
    c.create(&duomo("urn:ngsi-ld:Building:a")).await;
    let base = "/entities/urn:ngsi-ld:Building:a";
    let append = c
        .post(
            &format!("{base}/attrs"),
            &json!({"visitors": {"type": "Property", "value": 10}}),
        )
        .await;
    assert_eq!(append.status, StatusCode::NO_CONTENT);
    let no_overwrite = c
        .post(&format!("{base}/attrs?options=noOverwrite"), &json!({"visitors": 99}))
        .await;
    assert_eq!(no_overwrite.status, StatusCode::MULTI_STATUS);
    assert_eq!(no_overwrite.body["notUpdated"].as_array().map(Vec::len), Some(1));
    let partial = c.patch(&format!("{base}/attrs/height"), &json!({"value": 115})).await;
    assert_eq!(partial.status, StatusCode::NO_CONTENT);
    let got = c.get(base).await;
    assert_eq!(got.body["visitors"]["value"], json!(10));
    assert_eq!(got.body["height"]["value"], json!(115));
    assert_eq!(
        got.body["height"]["unitCode"],
        json!("MTR"),
        "partial update keeps other members"
    );
    let deleted = c.delete(&format!("{base}/attrs/visitors")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let missing = c.delete(&format!("{base}/attrs/visitors")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.problem(), problem("ResourceNotFound"));
}

#[tokio::test]
async fn multi_instance_attributes_by_dataset_id() {
    let c = client();
    let entity = json!({"id": "urn:ngsi-ld:Sensor:m", "type": "Sensor",
        "speed": [{"type": "Property", "value": 50}, {"type": "Property", "value": 52, "datasetId": "urn:ngsi-ld:gps"}]});
    c.create(&entity).await;
    let got = c.get("/entities/urn:ngsi-ld:Sensor:m").await;
    assert_eq!(got.body["speed"].as_array().map(Vec::len), Some(2));
    let reply = c
        .delete("/entities/urn:ngsi-ld:Sensor:m/attrs/speed?datasetId=urn:ngsi-ld:gps")
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let got = c.get("/entities/urn:ngsi-ld:Sensor:m").await;
    assert_eq!(got.body["speed"]["value"], json!(50));
}

#[tokio::test]
async fn merge_replace_and_delete() {
    let c = client();
    c.create(&duomo("urn:ngsi-ld:Building:m")).await;
    let path = "/entities/urn:ngsi-ld:Building:m";
    let merge = c
        .patch(path, &json!({"name": "Cattedrale", "city": "urn:ngsi-ld:null"}))
        .await;
    assert_eq!(merge.status, StatusCode::NO_CONTENT);
    let got = c.get(path).await;
    assert_eq!(got.body["name"]["value"], json!("Cattedrale"));
    assert!(got.body.get("city").is_none(), "an NGSI-LD Null deletes in a merge");
    assert!(got.body.get("height").is_some(), "a merge keeps what it does not name");
    let created = c.get(&format!("{path}?options=sysAttrs")).await.body["createdAt"].clone();
    let replace = c
        .put(
            path,
            &json!({"id": "urn:ngsi-ld:Building:m", "type": "Church", "name": "Santa Maria"}),
        )
        .await;
    assert_eq!(replace.status, StatusCode::NO_CONTENT);
    let got = c.get(&format!("{path}?options=sysAttrs")).await;
    assert_eq!(got.body["type"], "Church");
    assert!(got.body.get("height").is_none());
    assert_eq!(got.body["createdAt"], created, "replace keeps createdAt");
    assert_eq!(c.delete(path).await.status, StatusCode::NO_CONTENT);
    assert_eq!(c.get(path).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn creating_twice_is_a_conflict() {
    let c = client();
    c.create(&duomo("urn:ngsi-ld:Building:twice")).await;
    let again = c.post("/entities", &duomo("urn:ngsi-ld:Building:twice")).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.problem(), problem("AlreadyExists"));
}

#[tokio::test]
async fn discovery_lists_types_and_attributes() {
    let c = client();
    c.create(&duomo("urn:ngsi-ld:Building:d")).await;
    let types = c.get("/types").await;
    assert_eq!(types.body["typeList"], json!(["Building"]));
    let info = c.get("/types/Building").await;
    assert_eq!(info.body["entityCount"], json!(1));
    let attributes = c.get("/attributes").await;
    let names = attributes.body["attributeList"].as_array().cloned().unwrap_or_default();
    assert!(names.contains(&json!("height")) && names.contains(&json!("location")));
}
