//! Bad input never hurts: a clear 4xx, no panic, no partial write.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{client, problem, TEST_BODY_LIMIT};

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let c = client();
    let big = "x".repeat(TEST_BODY_LIMIT + 1);
    let reply = c
        .post(
            "/entities",
            &json!({"id": "urn:ngsi-ld:T:big", "type": "T", "blob": big}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.problem(), problem("PayloadTooLarge"));
}

#[tokio::test]
async fn malformed_json_and_wrong_media_types() {
    let c = client();
    let broken = c
        .send(
            c.request(Method::POST, "/entities")
                .header("Content-Type", "application/json")
                .body("{\"id\":"),
        )
        .await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    assert_eq!(broken.problem(), problem("InvalidRequest"));
    let xml = c
        .send(
            c.request(Method::POST, "/entities")
                .header("Content-Type", "application/xml")
                .body("<a/>"),
        )
        .await;
    assert_eq!(xml.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let not_acceptable = c
        .send(c.request(Method::GET, "/entities/urn:x:1").header("Accept", "text/csv"))
        .await;
    assert_eq!(not_acceptable.status, StatusCode::NOT_ACCEPTABLE);
    let ld_without_context = c
        .send(
            c.request(Method::POST, "/entities")
                .header("Content-Type", "application/ld+json")
                .body(r#"{"id":"urn:x:1","type":"T"}"#),
        )
        .await;
    assert_eq!(ld_without_context.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn invalid_entities_are_rejected_and_nothing_is_written() {
    let c = client();
    let cases = [
        json!({"id": "urn:ngsi-ld:T:1", "type": "T", "p": {"type": "Property"}}),
        json!({"id": "urn:ngsi-ld:T:1", "type": "T", "r": {"type": "Relationship", "object": "not a uri"}}),
        json!({"id": "urn:ngsi-ld:T:1", "type": "T", "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1]}}}),
        json!({"id": "urn:ngsi-ld:T:1", "type": "T", "p": {"type": "Property", "value": 1, "observedAt": "yesterday"}}),
        json!({"id": "urn:ngsi-ld:T:1", "type": "T", "bad name": 1}),
        json!({"id": "urn:ngsi-ld:T:1\u{202e}", "type": "T"}),
    ];
    for case in cases {
        let reply = c.post("/entities", &case).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{case}");
        assert_eq!(reply.problem(), problem("BadRequestData"), "{case}");
    }
    c.create(&json!({"id": "urn:ngsi-ld:T:probe", "type": "Probe"})).await;
    assert_eq!(c.get("/entities/urn:ngsi-ld:T:1").await.status, StatusCode::NOT_FOUND);
    assert_eq!(c.get("/types").await.body["typeList"], json!(["Probe"]));
}

#[tokio::test]
async fn hostile_query_strings_give_400_not_500() {
    let c = client();
    c.create(&json!({"id": "urn:ngsi-ld:T:h", "type": "T", "a": 1})).await;
    let deep = format!("{}a==1{}", "(".repeat(5000), ")".repeat(5000));
    let hostile = [
        format!("/entities?type=T&q={deep}"),
        "/entities?type=T&q=a~=(((((((((((".into(),
        "/entities?type=T&georel=near;maxDistance==1e400&geometry=Point&coordinates=[1,2]".into(),
        "/entities?type=T&geometry=Point&georel=within&coordinates=[[[".into(),
        "/entities?type=((((((T".into(),
        "/entities?type=T&limit=-1".into(),
        "/entities?type=T&offset=abc".into(),
        "/entities?idPattern=(a+)+$&type=T&q=a=%ZZ".into(),
        format!("/entities?type=T&q={}", "a==1;".repeat(2000)),
    ];
    for path in hostile {
        let reply = c.get(&path).await;
        assert!(reply.status.is_client_error(), "{path} answered {}", reply.status);
        assert!(
            reply.problem().starts_with("https://uri.etsi.org/ngsi-ld/errors/"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_problem_details() {
    let c = client();
    let reply = c.get("/nothing-here").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.problem(), problem("ResourceNotFound"));
}
