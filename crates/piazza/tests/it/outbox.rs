//! Notifications owed when the process dies are delivered after a restart.

use std::time::Duration;

use serde_json::{json, Value};

use crate::process::Server;

#[tokio::test]
async fn pending_notifications_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    survive_kill_9(|| Server::start(dir.path())).await;
}

/// On PostgreSQL the process that delivers is another one than the process
/// that was killed: the backlog is in the database, not in a process. It
/// takes over once the dead process's delivery lease ran out (short here).
#[tokio::test]
async fn pending_notifications_survive_kill_9_on_postgres() {
    let Some(database) = piazza_store_postgres::testing::TestDatabase::create().await else {
        return;
    };
    let url = std::ffi::OsString::from(database.url());
    let args = [
        "--database".as_ref(),
        url.as_os_str(),
        "--notification-lease-secs".as_ref(),
        "2".as_ref(),
    ];
    survive_kill_9(|| Server::start_args(&args)).await;
}

/// Five changes are notified to an endpoint that is down until the
/// broker is killed; a broker started afresh on the same store delivers
/// them all, in order.
async fn survive_kill_9(start: impl Fn() -> Server) {
    // The endpoint's port: nothing listens there until after the crash.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let server = start();
    let client = reqwest::Client::new();
    let entity = json!({"id": "urn:ngsi-ld:Car:k9", "type": "Car", "speed": {"type": "Property", "value": 0}});
    let created = client
        .post(server.url("/ngsi-ld/v1/entities"))
        .json(&entity)
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let subscription = json!({
        "id": "urn:ngsi-ld:Subscription:k9", "type": "Subscription",
        "entities": [{"type": "Car"}],
        "notification": {"endpoint": {"uri": format!("http://127.0.0.1:{port}/notify")}},
    });
    let subscribed = client
        .post(server.url("/ngsi-ld/v1/subscriptions"))
        .json(&subscription)
        .send()
        .await
        .expect("subscribe");
    assert_eq!(subscribed.status(), 201);
    for speed in 1..=5 {
        let updated = client
            .patch(server.url("/ngsi-ld/v1/entities/urn:ngsi-ld:Car:k9/attrs"))
            .json(&json!({"speed": {"type": "Property", "value": speed}}))
            .send()
            .await
            .expect("update");
        assert_eq!(updated.status(), 204);
    }
    server.kill_9();

    let (sender, mut inbox) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |body: axum::Json<Value>| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(body.0);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("endpoint port");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let server = start();
    let mut speeds = Vec::new();
    while speeds.len() < 5 {
        let notification = tokio::time::timeout(Duration::from_secs(20), inbox.recv())
            .await
            .expect("the pending notifications arrive after the restart")
            .expect("endpoint running");
        for item in notification["data"].as_array().expect("data") {
            speeds.push(item["speed"]["value"].as_i64().expect("speed"));
        }
    }
    assert_eq!(speeds, [1, 2, 3, 4, 5], "every change, in order");
    server.kill_9();
}
