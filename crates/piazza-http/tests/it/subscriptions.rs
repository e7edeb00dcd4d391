//! Subscription management: create, retrieve, query, update, delete.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{client, problem, CORE};

fn subscription(id: &str) -> serde_json::Value {
    json!({
        "id": id,
        "type": "Subscription",
        "entities": [{"type": "AirQualityObserved"}],
        "watchedAttributes": ["pm10"],
        "q": "pm10>50",
        "notification": {"format": "keyValues", "endpoint": {"uri": "http://127.0.0.1:9/notify", "accept": "application/json"}},
    })
}

#[tokio::test]
async fn lifecycle() {
    let c = client();
    let created = c
        .post("/subscriptions", &subscription("urn:ngsi-ld:Subscription:s1"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        created.header("location"),
        Some("/ngsi-ld/v1/subscriptions/urn:ngsi-ld:Subscription:s1")
    );
    let again = c
        .post("/subscriptions", &subscription("urn:ngsi-ld:Subscription:s1"))
        .await;
    assert_eq!(again.problem(), problem("AlreadyExists"));
    let got = c.get("/subscriptions/urn:ngsi-ld:Subscription:s1").await;
    assert_eq!(got.body["status"], "active");
    assert_eq!(got.body["q"], "pm10>50");
    assert_eq!(got.body["jsonldContext"], CORE);
    let paused = c
        .patch(
            "/subscriptions/urn:ngsi-ld:Subscription:s1",
            &json!({"isActive": false}),
        )
        .await;
    assert_eq!(paused.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.get("/subscriptions/urn:ngsi-ld:Subscription:s1").await.body["status"],
        "paused"
    );
    let list = c.get("/subscriptions?count=true").await;
    assert_eq!(list.header("ngsild-results-count"), Some("1"));
    assert_eq!(
        c.delete("/subscriptions/urn:ngsi-ld:Subscription:s1").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.get("/subscriptions/urn:ngsi-ld:Subscription:s1").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn invalid_subscriptions_are_rejected() {
    let c = client();
    let mut no_endpoint = subscription("urn:ngsi-ld:Subscription:bad1");
    no_endpoint["notification"] = json!({"format": "keyValues"});
    let mut bad_q = subscription("urn:ngsi-ld:Subscription:bad2");
    bad_q["q"] = json!("pm10>>");
    let mut past = subscription("urn:ngsi-ld:Subscription:bad3");
    past["expiresAt"] = json!("2020-01-01T00:00:00Z");
    let mut nothing = subscription("urn:ngsi-ld:Subscription:bad4");
    nothing
        .as_object_mut()
        .map(|m| (m.remove("entities"), m.remove("watchedAttributes")));
    for case in [no_endpoint, bad_q, past, nothing] {
        let reply = c.post("/subscriptions", &case).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{case}");
    }
    assert_eq!(c.get("/subscriptions").await.body, json!([]));
}

#[tokio::test]
async fn an_inline_context_becomes_an_implicitly_created_context() {
    let c = client();
    let mut body = subscription("urn:ngsi-ld:Subscription:ld");
    body["@context"] = json!({"pm10": "https://example.org/pm10"});
    let created = c
        .send(
            c.request(Method::POST, "/subscriptions")
                .header("Content-Type", "application/ld+json")
                .json(&body),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let got = c.get("/subscriptions/urn:ngsi-ld:Subscription:ld").await;
    let url = got.body["jsonldContext"].as_str().unwrap_or_default().to_owned();
    let id = url.rsplit('/').next().unwrap_or_default();
    let served = c.get(&format!("/jsonldContexts/{id}")).await;
    assert_eq!(served.body, json!({"@context": {"pm10": "https://example.org/pm10"}}));
    let implicit = c.get("/jsonldContexts?kind=ImplicitlyCreated").await;
    assert_eq!(implicit.body.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn contradictory_notification_parameters_are_bad_requests() {
    let c = client();
    let endpoint = json!({"uri": "http://127.0.0.1:9/notify"});
    let invalid = [
        json!({"endpoint": endpoint, "pick": ["speed"], "omit": ["speed"]}),
        json!({"endpoint": endpoint, "pick": ["speed"], "attributes": ["speed"]}),
        json!({"endpoint": endpoint, "pick": []}),
        json!({"endpoint": endpoint, "format": "keyValues", "showChanges": true}),
        json!({"endpoint": {"uri": "http://127.0.0.1:9/notify", "receiverInfo": [{"key": "k", "value": 42}]}}),
        json!({"endpoint": {"uri": "http://127.0.0.1:9/notify", "notifierInfo": [{"key": "k"}]}}),
    ];
    for notification in invalid {
        let body = json!({"type": "Subscription", "entities": [{"type": "Car"}], "notification": notification});
        let reply = c.post("/subscriptions", &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{notification}: {}", reply.body);
    }
    let bad_csf = json!({"type": "Subscription", "entities": [{"type": "Car"}], "csf": "((",
        "notification": {"endpoint": endpoint}});
    assert_eq!(c.post("/subscriptions", &bad_csf).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn read_only_members_are_ignored_and_versions_echoed() {
    let c = client();
    let body = json!({
        "id": "urn:ngsi-ld:Subscription:ro", "type": "Subscription", "entities": [{"type": "Car"}],
        "status": "expired", "__internal": "x",
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}, "timesSent": 42},
    });
    assert_eq!(c.post("/subscriptions", &body).await.status, StatusCode::CREATED);
    let reply = c
        .send(
            c.request(Method::GET, "/subscriptions/urn:ngsi-ld:Subscription:ro")
                .header("Prefer", "respond-async, NGSI-LD=\"1.0\";q=1"),
        )
        .await;
    assert_eq!(reply.body["status"], "active");
    assert!(reply.body["notification"].get("timesSent").is_none());
    assert!(reply.body.get("__internal").is_none());
    assert!(
        reply.body.get("createdAt").is_none(),
        "system members need options=sysAttrs"
    );
    assert_eq!(reply.header("preference-applied"), Some("ngsi-ld=1.0"));
    let with_sys = c
        .get("/subscriptions/urn:ngsi-ld:Subscription:ro?options=sysAttrs")
        .await;
    assert!(with_sys.body["createdAt"].is_string());
    assert_eq!(
        with_sys.body["notificationTrigger"],
        json!(["attributeCreated", "attributeUpdated"])
    );
}

#[tokio::test]
async fn subscription_pages_link_to_their_neighbours() {
    let c = client();
    for n in 0..3 {
        let reply = c
            .post(
                "/subscriptions",
                &subscription(&format!("urn:ngsi-ld:Subscription:page{n}")),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let page = c.get("/subscriptions?limit=1&offset=1").await;
    assert_eq!(page.body.as_array().map(Vec::len), Some(1));
    let links: Vec<_> = page
        .headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        links
            .iter()
            .any(|l| l.contains("offset=0") && l.contains("rel=\"prev\"")),
        "{links:?}"
    );
    assert!(
        links
            .iter()
            .any(|l| l.contains("offset=2") && l.contains("rel=\"next\"")),
        "{links:?}"
    );
}
