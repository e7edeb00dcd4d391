//! An acknowledged write survives `kill -9`.

use serde_json::json;

use crate::process::Server;

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let client = reqwest::Client::new();
    let batch: Vec<_> = (0..300)
        .map(|i| json!({"id": format!("urn:ngsi-ld:Meter:{i}"), "type": "Meter", "reading": i}))
        .collect();
    let created = client
        .post(server.url("/ngsi-ld/v1/entityOperations/create"))
        .json(&batch)
        .send()
        .await
        .expect("batch");
    assert_eq!(created.status(), 201);
    // Concurrent single writes, every one acknowledged before the kill.
    let mut writes = Vec::new();
    for i in 0..40 {
        let (client, url) = (
            client.clone(),
            server.url(&format!("/ngsi-ld/v1/entities/urn:ngsi-ld:Meter:{i}/attrs/reading")),
        );
        writes.push(tokio::spawn(async move {
            client
                .patch(url)
                .json(&json!({"value": 1000 + i}))
                .send()
                .await
                .expect("patch")
                .status()
        }));
    }
    for write in writes {
        assert_eq!(write.await.expect("task"), 204);
    }
    server.kill_9();

    let server = Server::start(dir.path());
    let count = client
        .get(server.url("/ngsi-ld/v1/entities?type=Meter&count=true&limit=0"))
        .send()
        .await
        .expect("count");
    assert_eq!(count.headers()["ngsild-results-count"], "300");
    for i in [0, 17, 39] {
        let entity: serde_json::Value = client
            .get(server.url(&format!("/ngsi-ld/v1/entities/urn:ngsi-ld:Meter:{i}?options=keyValues")))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(entity["reading"], json!(1000 + i));
    }
    server.kill_9();
}
