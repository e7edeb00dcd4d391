//! Batch operations: all-or-report semantics per entity.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{client, problem};

#[tokio::test]
async fn create_reports_each_failure_and_keeps_the_rest() {
    let c = client();
    c.create(&json!({"id": "urn:ngsi-ld:T:exists", "type": "T"})).await;
    let batch = json!([
        {"id": "urn:ngsi-ld:T:new", "type": "T"},
        {"id": "urn:ngsi-ld:T:exists", "type": "T"},
        {"id": "not a uri", "type": "T"},
    ]);
    let reply = c.post("/entityOperations/create", &batch).await;
    assert_eq!(reply.status, StatusCode::MULTI_STATUS);
    assert_eq!(reply.body["success"], json!(["urn:ngsi-ld:T:new"]));
    let errors = reply.body["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 2);
    assert!(errors.iter().any(|e| e["error"]["type"] == problem("AlreadyExists")));
    assert_eq!(c.get("/entities/urn:ngsi-ld:T:new").await.status, StatusCode::OK);
}

#[tokio::test]
async fn upsert_creates_or_replaces_and_update_appends() {
    let c = client();
    let first = c
        .post(
            "/entityOperations/upsert",
            &json!([{"id": "urn:ngsi-ld:T:u", "type": "T", "a": 1, "b": 1}]),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.body, json!(["urn:ngsi-ld:T:u"]));
    let replace = c
        .post(
            "/entityOperations/upsert",
            &json!([{"id": "urn:ngsi-ld:T:u", "type": "T", "a": 2}]),
        )
        .await;
    assert_eq!(replace.status, StatusCode::NO_CONTENT);
    let got = c.get("/entities/urn:ngsi-ld:T:u?options=keyValues").await;
    assert_eq!(got.body, json!({"id": "urn:ngsi-ld:T:u", "type": "T", "a": 2}));
    let update = c
        .post(
            "/entityOperations/upsert?options=update",
            &json!([{"id": "urn:ngsi-ld:T:u", "type": "T", "c": 3}]),
        )
        .await;
    assert_eq!(update.status, StatusCode::NO_CONTENT);
    let got = c.get("/entities/urn:ngsi-ld:T:u?options=keyValues").await;
    assert_eq!(got.body, json!({"id": "urn:ngsi-ld:T:u", "type": "T", "a": 2, "c": 3}));
}

#[tokio::test]
async fn delete_reports_missing_entities() {
    let c = client();
    c.create(&json!({"id": "urn:ngsi-ld:T:d1", "type": "T"})).await;
    let reply = c
        .post(
            "/entityOperations/delete",
            &json!(["urn:ngsi-ld:T:d1", "urn:ngsi-ld:T:none"]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::MULTI_STATUS);
    assert_eq!(reply.body["success"], json!(["urn:ngsi-ld:T:d1"]));
    assert_eq!(reply.body["errors"][0]["entityId"], "urn:ngsi-ld:T:none");
}
