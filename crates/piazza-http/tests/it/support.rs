//! The shared test server and small helpers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use piazza_broker::{Broker, Limits};
use piazza_http::AppState;
use piazza_store::Store;
use piazza_store_embedded::EmbeddedStore;
use piazza_store_postgres::testing::TestDatabase;
use piazza_store_postgres::PostgresStore;
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const CORE: &str = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld";
/// Bodies larger than this are refused by the test server.
pub const TEST_BODY_LIMIT: usize = 64 * 1024;

/// The backend of this test binary's server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Postgres,
}

impl Backend {
    /// `it` runs on the embedded store, `it_postgres` (the same files) on
    /// PostgreSQL.
    pub fn of_this_binary() -> Backend {
        match env!("CARGO_CRATE_NAME") {
            "it_postgres" => Backend::Postgres,
            _ => Backend::Embedded,
        }
    }
}

struct Shared {
    /// `None` when the backend's server is unavailable (the suite is skipped).
    base: Option<String>,
}

/// A store for the shared server, and what keeps it alive.
async fn open_store() -> Option<(Arc<dyn Store>, Box<dyn std::any::Any + Send>)> {
    match Backend::of_this_binary() {
        Backend::Embedded => {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = EmbeddedStore::open(dir.path()).expect("store");
            Some((Arc::new(store), Box::new(dir)))
        }
        Backend::Postgres => {
            // The server lives as long as the process, so this database is
            // never dropped here: the next run's `TestDatabase::create`
            // drops it once this process has exited.
            let database = TestDatabase::create().await?;
            let store = PostgresStore::connect(database.url(), 8).await.expect("postgres store");
            // With PostGIS where the server has it (CI installs it): the
            // geo-queries of this suite then go through its narrowing.
            piazza_store_postgres::testing::has_postgis(&store);
            Some((Arc::new(store), Box::new(database)))
        }
    }
}

/// The base URL of the shared server (started on first use, in a thread of
/// its own so that it outlives every test's runtime).
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("test runtime");
            runtime.block_on(async move {
                let Some((store, guard)) = open_store().await else {
                    sender.send(None).expect("report no server");
                    return;
                };
                let broker = Arc::new(Broker::new(store, Limits::default()));
                let state = Arc::new(AppState {
                    broker,
                    max_body_bytes: TEST_BODY_LIMIT,
                });
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let address = listener.local_addr().expect("address");
                sender.send(Some(format!("http://{address}"))).expect("report address");
                piazza_http::serve(listener, state, std::future::pending())
                    .await
                    .expect("serve");
                drop(guard);
            });
        });
        Shared {
            base: receiver.recv().expect("server address"),
        }
    })
}

/// The shared server's base URL. Without a server to run on (PostgreSQL
/// unreachable, services not required) the whole binary is skipped: the
/// skip was announced on stderr, and the process ends successfully.
fn base() -> &'static str {
    match &shared().base {
        Some(base) => base,
        None => std::process::exit(0),
    }
}

/// A client bound to a fresh tenant of the shared server.
pub struct Client {
    http: reqwest::Client,
    pub base: String,
    pub tenant: String,
}

pub fn client() -> Client {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Client {
        http: reqwest::Client::new(),
        base: format!("{}/ngsi-ld/v1", base()),
        tenant: format!("t{}-{n}", std::process::id()),
    }
}

/// A response: status, headers and JSON body (Null when empty).
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The ProblemDetails type, for error responses.
    pub fn problem(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }
}

impl Client {
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("NGSILD-Tenant", &self.tenant)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::PATCH, path).json(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// Creates an entity and checks it was created.
    pub async fn create(&self, entity: &Value) {
        let reply = self.post("/entities", entity).await;
        assert_eq!(reply.status, StatusCode::CREATED, "create {entity}: {}", reply.body);
    }
}

pub fn problem(kind: &str) -> String {
    format!("https://uri.etsi.org/ngsi-ld/errors/{kind}")
}

/// A notification as an endpoint received it.
pub struct Received {
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

/// A real HTTP endpoint that records every notification POSTed to it.
pub struct Receiver {
    pub url: String,
    inbox: tokio::sync::mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        Self::serve(listener)
    }

    /// Serves on a listener bound beforehand (to reuse a known port).
    pub fn serve(listener: tokio::net::TcpListener) -> Receiver {
        let address = listener.local_addr().expect("receiver address");
        let (sender, inbox) = tokio::sync::mpsc::unbounded_channel();
        let app = axum::Router::new().route(
            "/notify",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sender = sender.clone();
                async move {
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let _ = sender.send(Received { headers, body });
                    StatusCode::OK
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{address}/notify"),
            inbox,
        }
    }

    /// The next notification; fails the test after `seconds`.
    pub async fn next(&mut self, seconds: u64) -> Received {
        tokio::time::timeout(std::time::Duration::from_secs(seconds), self.inbox.recv())
            .await
            .expect("a notification in time")
            .expect("receiver running")
    }

    /// Whether nothing arrives within `millis`.
    pub async fn quiet_for(&mut self, millis: u64) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(millis), self.inbox.recv())
            .await
            .is_err()
    }
}

/// A local port nothing listens on.
pub fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}
