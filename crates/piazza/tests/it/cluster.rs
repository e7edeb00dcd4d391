//! Two `piazza serve` processes over one PostgreSQL database behave as one
//! broker: each notification is delivered once, by whichever process holds
//! the subscription's lease, and by the other when that one dies; a
//! subscription or @context changed through one process is followed by the
//! other.

use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use piazza_store_postgres::testing::TestDatabase;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::process::Server;

/// A lease this short keeps the take-over test brief.
const LEASE_SECS: &str = "2";

fn member(database: &TestDatabase) -> Server {
    Server::start_args(&[
        OsStr::new("--database"),
        OsStr::new(database.url()),
        OsStr::new("--notification-lease-secs"),
        OsStr::new(LEASE_SECS),
    ])
}

/// A notification endpoint that can be made to fail; it reports the
/// notifications it acknowledged and counts the ones it refused.
struct Endpoint {
    url: String,
    healthy: Arc<AtomicBool>,
    refused: Arc<Mutex<u32>>,
    acknowledged: UnboundedReceiver<Value>,
}

async fn endpoint() -> Endpoint {
    let healthy = Arc::new(AtomicBool::new(true));
    let refused = Arc::new(Mutex::new(0));
    let (sender, acknowledged) = unbounded_channel::<Value>();
    let (up, count) = (healthy.clone(), refused.clone());
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |body: axum::Json<Value>| {
            let (sender, up, count) = (sender.clone(), up.clone(), count.clone());
            async move {
                if up.load(Ordering::SeqCst) {
                    let _ = sender.send(body.0);
                    axum::http::StatusCode::OK
                } else {
                    *count.lock().expect("count") += 1;
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/notify", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Endpoint {
        url,
        healthy,
        refused,
        acknowledged,
    }
}

impl Endpoint {
    /// The speeds notified from now until `want` arrived, then for a
    /// further second, so that a duplicate sent late is caught too.
    async fn speeds(&mut self, want: usize, within: Duration) -> Vec<i64> {
        let mut speeds = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while speeds.len() < want {
            let Ok(Some(notification)) = tokio::time::timeout_at(deadline, self.acknowledged.recv()).await else {
                break;
            };
            speeds.extend(speeds_in(&notification));
        }
        while let Ok(Some(notification)) = tokio::time::timeout(Duration::from_secs(1), self.acknowledged.recv()).await
        {
            speeds.extend(speeds_in(&notification));
        }
        speeds
    }
}

fn speeds_in(notification: &Value) -> Vec<i64> {
    notification["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["speed"]["value"].as_i64())
        .collect()
}

async fn set_speed(client: &reqwest::Client, server: &Server, speed: i64) {
    let updated = client
        .patch(server.url("/ngsi-ld/v1/entities/urn:ngsi-ld:Car:c1/attrs"))
        .json(&json!({"speed": {"type": "Property", "value": speed}}))
        .send()
        .await
        .expect("update");
    assert_eq!(updated.status(), 204, "speed {speed}");
}

/// The process id in the holder of the subscription's lease (`pid:<n>/…`).
async fn lease_holder_pid(database: &TestDatabase) -> Option<u32> {
    let (client, connection) = tokio_postgres::connect(database.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let row = client
        .query_opt("SELECT holder FROM delivery_leases WHERE expires_at > now()", &[])
        .await
        .expect("read the lease")?;
    let holder: String = row.get(0);
    holder.strip_prefix("pid:")?.split('/').next()?.parse().ok()
}

/// Propagation between processes is asynchronous (NOTIFY after commit);
/// this leaves it ample time.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_cluster_notifies_once_and_the_survivor_delivers_what_a_dead_member_had_pending() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let (a, b) = (member(&database), member(&database));
    let client = reqwest::Client::new();
    let mut endpoint = endpoint().await;
    let car = json!({"id": "urn:ngsi-ld:Car:c1", "type": "Car", "speed": {"type": "Property", "value": 0}});
    let created = client
        .post(b.url("/ngsi-ld/v1/entities"))
        .json(&car)
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    // B has now read the tenant's subscriptions (none): it must learn of
    // the one created through A.
    let subscription = json!({
        "id": "urn:ngsi-ld:Subscription:cluster", "type": "Subscription",
        "entities": [{"type": "Car"}], "watchedAttributes": ["speed"],
        "notification": {"endpoint": {"uri": endpoint.url}},
    });
    let subscribed = client
        .post(a.url("/ngsi-ld/v1/subscriptions"))
        .json(&subscription)
        .send()
        .await
        .expect("subscribe");
    assert_eq!(subscribed.status(), 201);
    settle().await;

    for speed in 1..=10 {
        set_speed(&client, if speed % 2 == 0 { &a } else { &b }, speed).await;
    }
    let speeds = endpoint.speeds(10, Duration::from_secs(20)).await;
    assert_eq!(
        speeds,
        (1..=10).collect::<Vec<_>>(),
        "every change through either process is notified once, in order"
    );

    // The endpoint fails: the changes stay pending with the lease holder.
    endpoint.healthy.store(false, Ordering::SeqCst);
    for speed in 11..=15 {
        set_speed(&client, if speed % 2 == 0 { &a } else { &b }, speed).await;
    }
    let tried = tokio::time::Instant::now() + Duration::from_secs(20);
    while *endpoint.refused.lock().expect("count") == 0 {
        assert!(tokio::time::Instant::now() < tried, "the holder tries to deliver");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let holder = lease_holder_pid(&database).await.expect("a live lease");
    let (dead, survivor) = if holder == a.child.id() {
        (a, b)
    } else {
        assert_eq!(holder, b.child.id(), "the lease is held by a member");
        (b, a)
    };
    dead.kill_9();
    endpoint.healthy.store(true, Ordering::SeqCst);
    let speeds = endpoint.speeds(5, Duration::from_secs(30)).await;
    assert_eq!(
        speeds,
        (11..=15).collect::<Vec<_>>(),
        "the survivor takes the lease over and delivers the dead member's backlog once"
    );

    // A subscription deleted through one process notifies nothing through the other.
    let restarted = member(&database);
    let deleted = client
        .delete(restarted.url("/ngsi-ld/v1/subscriptions/urn:ngsi-ld:Subscription:cluster"))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 204);
    settle().await;
    set_speed(&client, &survivor, 16).await;
    assert_eq!(endpoint.speeds(0, Duration::ZERO).await, Vec::<i64>::new());
}

#[tokio::test]
async fn a_context_reloaded_through_one_process_is_used_by_the_other() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    // A user @context whose `speed` term changes meaning between versions.
    let version = Arc::new(Mutex::new("v1"));
    let served = version.clone();
    let app = axum::Router::new().route(
        "/context.jsonld",
        axum::routing::get(move || {
            let served = served.clone();
            async move {
                let v = *served.lock().expect("version");
                axum::Json(json!({"@context": {"speed": format!("https://example.org/{v}/speed")}}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let context_url = format!("http://{}/context.jsonld", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let link = format!("<{context_url}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"");

    let (a, b) = (member(&database), member(&database));
    let client = reqwest::Client::new();
    let create = |server: &Server, id: &str| {
        client
            .post(server.url("/ngsi-ld/v1/entities"))
            .header("Link", &link)
            .json(&json!({"id": id, "type": "Car", "speed": {"type": "Property", "value": 1}}))
            .send()
    };
    let expanded_terms = |server: &Server, id: &str| {
        let request = client.get(server.url(&format!("/ngsi-ld/v1/entities/{id}"))).send();
        async move {
            let entity: Value = request.await.expect("read").json().await.expect("json");
            entity.as_object().expect("entity").keys().cloned().collect::<Vec<_>>()
        }
    };
    assert_eq!(create(&b, "urn:ngsi-ld:Car:first").await.expect("create").status(), 201);
    assert!(expanded_terms(&b, "urn:ngsi-ld:Car:first")
        .await
        .contains(&"https://example.org/v1/speed".to_owned()));

    *version.lock().expect("version") = "v2";
    let reloaded = client
        .delete(a.url(&format!(
            "/ngsi-ld/v1/jsonldContexts/{}?reload=true",
            percent(&context_url)
        )))
        .send()
        .await
        .expect("reload");
    assert_eq!(reloaded.status(), 204, "{}", reloaded.text().await.unwrap_or_default());
    settle().await;
    assert_eq!(
        create(&b, "urn:ngsi-ld:Car:second").await.expect("create").status(),
        201
    );
    let terms = expanded_terms(&b, "urn:ngsi-ld:Car:second").await;
    assert!(
        terms.contains(&"https://example.org/v2/speed".to_owned()),
        "B reads with the context A reloaded: {terms:?}"
    );
}

/// Percent-encodes a URL for use as one path segment.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
