//! Tenants: strict isolation, implicit creation, NonexistentTenant.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{client, problem};

#[tokio::test]
async fn nothing_of_one_tenant_is_visible_or_writable_from_another() {
    let (a, b) = (client(), client());
    a.create(&json!({"id": "urn:ngsi-ld:Secret:1", "type": "Secret", "pin": 1234}))
        .await;
    b.create(&json!({"id": "urn:ngsi-ld:Other:1", "type": "Other"})).await;
    assert_eq!(
        b.get("/entities/urn:ngsi-ld:Secret:1").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(b.get("/entities?type=Secret").await.body, json!([]));
    assert_eq!(b.get("/types").await.body["typeList"], json!(["Other"]));
    let overwrite = b
        .patch("/entities/urn:ngsi-ld:Secret:1/attrs/pin", &json!({"value": 0}))
        .await;
    assert_eq!(overwrite.status, StatusCode::NOT_FOUND);
    assert_eq!(
        b.delete("/entities/urn:ngsi-ld:Secret:1").await.status,
        StatusCode::NOT_FOUND
    );
    // The same id in another tenant is another entity.
    b.create(&json!({"id": "urn:ngsi-ld:Secret:1", "type": "Decoy"})).await;
    let original = a.get("/entities/urn:ngsi-ld:Secret:1?options=keyValues").await;
    assert_eq!(
        original.body,
        json!({"id": "urn:ngsi-ld:Secret:1", "type": "Secret", "pin": 1234})
    );
}

#[tokio::test]
async fn reads_of_an_unknown_tenant_are_nonexistent_tenant() {
    let c = client();
    let reply = c.get("/entities?type=Building").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.problem(), problem("NonexistentTenant"));
    assert_eq!(reply.header("ngsild-tenant"), Some(c.tenant.as_str()));
    let ambiguous = c
        .send(
            c.request(Method::GET, "/entities?type=T")
                .header("NGSILD-Tenant", "other"),
        )
        .await;
    assert_eq!(ambiguous.status, StatusCode::BAD_REQUEST, "two tenant headers");
    let raw = reqwest::Client::new();
    for hostile in ["../../etc", "a/b", &"x".repeat(100)] {
        let url = format!("{}/entities?type=T", c.base);
        let reply = raw
            .get(url)
            .header("NGSILD-Tenant", hostile)
            .send()
            .await
            .expect("request");
        assert_eq!(reply.status(), StatusCode::BAD_REQUEST, "{hostile}");
    }
}
