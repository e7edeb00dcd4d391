//! Moving a data dir between backends with `piazza export` and `piazza
//! import ndjson`, as an operator would: embedded → PostgreSQL → embedded,
//! checked through the HTTP API of a server on each, and the refusals of
//! a bad dump or a store that already holds data.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use piazza_store_postgres::testing::TestDatabase;
use serde_json::{json, Value};

use crate::process::Server;

/// `piazza <args>`, never on a database from the environment unless given.
fn piazza(args: &[&OsStr], stdin: Option<&[u8]>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_piazza"));
    command
        .args(args)
        .env_remove("PIAZZA_DATABASE_URL")
        .env_remove("PIAZZA_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run piazza");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        input.write_all(bytes).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait for piazza")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

fn os(text: &str) -> &OsStr {
    OsStr::new(text)
}

/// A notification endpoint that acknowledges everything.
async fn endpoint() -> String {
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/notify", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

const TENANTS: [&str; 2] = ["", "comune-prato"];

struct Api<'a> {
    server: &'a Server,
    client: reqwest::Client,
}

impl Api<'_> {
    fn request(&self, method: reqwest::Method, tenant: &str, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .client
            .request(method, self.server.url(&format!("/ngsi-ld/v1{path}")));
        if tenant.is_empty() {
            request
        } else {
            request.header("NGSILD-Tenant", tenant)
        }
    }

    async fn send(&self, method: reqwest::Method, tenant: &str, path: &str, body: Option<Value>) -> u16 {
        let mut request = self.request(method, tenant, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.expect("request");
        let status = reply.status().as_u16();
        assert!(
            status < 300,
            "{path}: {status} {}",
            reply.text().await.unwrap_or_default()
        );
        status
    }

    async fn get(&self, tenant: &str, path: &str) -> Value {
        let reply = self
            .request(reqwest::Method::GET, tenant, path)
            .send()
            .await
            .expect("get");
        assert_eq!(reply.status(), 200, "{path}");
        let body = reply.text().await.expect("body");
        // The port of the server is in URLs it renders (hosted @contexts).
        let body = body.replace(&self.server.base, "BASE");
        serde_json::from_str(&body).expect("json")
    }

    /// Writes in both tenants: creates, updates (history), a delete, a
    /// subscription (delivered, so it has statistics) and a hosted @context.
    async fn populate(&self, notify: &str) {
        use reqwest::Method;
        for (n, tenant) in (0u32..).zip(TENANTS) {
            let subscription = json!({
                "id": format!("urn:ngsi-ld:Subscription:rooms-{n}"), "type": "Subscription",
                "entities": [{"type": "Room"}],
                "notification": {"endpoint": {"uri": notify, "accept": "application/json"}},
            });
            self.send(Method::POST, tenant, "/subscriptions", Some(subscription))
                .await;
            let context = json!({"@context": {"temperatura": "https://example.org/temperature"}});
            self.send(Method::POST, tenant, "/jsonldContexts", Some(context)).await;
            for i in 1u32..=3 {
                let room = json!({
                    "id": format!("urn:ngsi-ld:Room:{i}"), "type": "Room",
                    "temperature": {"type": "Property", "value": 10 * i + n, "unitCode": "CEL"},
                    "name": format!("room {i} of tenant {n}"),
                    "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [11.25 + f64::from(i) / 100.0, 43.77]}},
                });
                self.send(Method::POST, tenant, "/entities", Some(room)).await;
            }
            for value in [21, 22] {
                let patch = json!({"temperature": {"type": "Property", "value": value + n}});
                self.send(Method::PATCH, tenant, "/entities/urn:ngsi-ld:Room:1/attrs", Some(patch))
                    .await;
            }
            self.send(Method::DELETE, tenant, "/entities/urn:ngsi-ld:Room:3", None)
                .await;
        }
    }

    /// What a client sees of both tenants.
    async fn views(&self) -> Vec<(String, Value)> {
        let mut views = Vec::new();
        for tenant in TENANTS {
            for path in [
                "/entities?type=Room&options=sysAttrs&limit=100",
                "/entities?type=Room&q=temperature>20&options=keyValues",
                "/entities?type=Room&q=name==%22room%202%20of%20tenant%201%22&options=keyValues",
                "/entities?type=Room&georel=near;maxDistance==500&geometry=Point&coordinates=[11.26,43.77]&options=keyValues",
                "/entities/urn:ngsi-ld:Room:3",
                "/temporal/entities/urn:ngsi-ld:Room:1?options=sysAttrs",
                "/temporal/entities/urn:ngsi-ld:Room:3",
                "/temporal/entities?type=Room&timerel=after&timeAt=2000-01-01T00:00:00Z",
                "/subscriptions",
                "/jsonldContexts?details=true",
                "/types?details=true",
                "/attributes?details=true",
            ] {
                let view = if path == "/entities/urn:ngsi-ld:Room:3" {
                    // Deleted: absent from the current state.
                    let status = self
                        .request(reqwest::Method::GET, tenant, path)
                        .send()
                        .await
                        .expect("get")
                        .status();
                    json!(status.as_u16())
                } else if path.starts_with("/jsonldContexts") {
                    // The core @context is the broker's own, stamped when it starts.
                    let mut contexts = self.get(tenant, path).await;
                    if let Some(list) = contexts.as_array_mut() {
                        list.retain(|c| c["localId"] != "urn:ngsi-ld:jsonldContext:core");
                        assert!(!list.is_empty(), "the hosted @context is listed");
                    }
                    contexts
                } else {
                    self.get(tenant, path).await
                };
                views.push((format!("tenant '{tenant}' {path}"), view));
            }
        }
        views
    }

    /// The views once notifications stopped changing subscription statistics.
    async fn settled_views(&self) -> Vec<(String, Value)> {
        let mut before = self.views().await;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.views().await;
            if now == before {
                return now;
            }
            before = now;
        }
        panic!("the views kept changing");
    }
}

fn assert_same_views(found: &[(String, Value)], wanted: &[(String, Value)], what: &str) {
    assert_eq!(found.len(), wanted.len());
    for ((path, found), (_, wanted)) in found.iter().zip(wanted) {
        assert_eq!(found, wanted, "{what}: {path}");
    }
}

/// A dump without its header line (which says when and from where).
fn body(dump: &str) -> Vec<&str> {
    dump.lines().skip(1).collect()
}

fn header(dump: &str) -> Value {
    serde_json::from_str(dump.lines().next().expect("header line")).expect("header json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_moves_to_postgres_and_back_with_its_history_subscriptions_and_contexts() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    let (embedded, back) = (work.path().join("embedded"), work.path().join("back"));
    let (first_dump, second_dump) = (work.path().join("first.ndjson"), work.path().join("second.ndjson"));
    let notify = endpoint().await;

    let server = Server::start(&embedded);
    let api = Api {
        server: &server,
        client: reqwest::Client::new(),
    };
    api.populate(&notify).await;
    let original = api.settled_views().await;
    let rooms = &original[0].1;
    assert_eq!(rooms.as_array().map(Vec::len), Some(2), "{rooms}");
    let history = &original[5].1;
    let temperatures = history["temperature"].as_array().expect("temperature history");
    assert_eq!(temperatures.len(), 3, "{history}");
    let subscriptions = &original[8].1;
    assert!(
        subscriptions[0]["notification"]["timesSent"].as_u64() > Some(0),
        "{subscriptions}"
    );
    assert!(server.terminate().success());

    // Embedded → NDJSON → PostgreSQL.
    let exported = piazza(
        &[
            os("export"),
            os("--data-dir"),
            embedded.as_os_str(),
            os("--output"),
            first_dump.as_os_str(),
        ],
        None,
    );
    ok(&exported, "export from the data dir");
    let summary = text(&exported.stderr);
    assert!(
        summary.contains("tenant comune-prato:") && summary.contains("2 entities"),
        "{summary}"
    );
    let imported = piazza(
        &[
            os("import"),
            os("ndjson"),
            first_dump.as_os_str(),
            os("--database"),
            os(database.url()),
        ],
        None,
    );
    ok(&imported, "import into PostgreSQL");
    assert!(
        text(&imported.stdout).contains("counts checked"),
        "{}",
        text(&imported.stdout)
    );
    // Into a store that holds data: refused, unless forced.
    let again = piazza(
        &[
            os("import"),
            os("ndjson"),
            first_dump.as_os_str(),
            os("--database"),
            os(database.url()),
        ],
        None,
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("not empty"), "{}", text(&again.stderr));
    let forced = piazza(
        &[
            os("import"),
            os("ndjson"),
            first_dump.as_os_str(),
            os("--database"),
            os(database.url()),
            os("--force"),
        ],
        None,
    );
    ok(&forced, "a forced import");

    let on_postgres = Server::start_args(&[os("--database"), os(database.url())]);
    let api = Api {
        server: &on_postgres,
        client: reqwest::Client::new(),
    };
    assert_same_views(&api.settled_views().await, &original, "on PostgreSQL");
    assert!(on_postgres.terminate().success());

    // PostgreSQL → NDJSON (standard output) → a new data dir (standard input).
    let exported = piazza(&[os("export"), os("--database"), os(database.url())], None);
    ok(&exported, "export from PostgreSQL");
    std::fs::write(&second_dump, &exported.stdout).expect("keep the second dump");
    let imported = piazza(
        &[os("import"), os("ndjson"), os("-"), os("--data-dir"), back.as_os_str()],
        Some(&exported.stdout),
    );
    ok(&imported, "import into a new data dir");

    let first = std::fs::read_to_string(&first_dump).expect("first dump");
    let second = text(&exported.stdout);
    assert_eq!(header(&first)["backend"], "embedded");
    assert_eq!(header(&second)["backend"], "postgres");
    assert_eq!(body(&second), body(&first), "the same records, in the same order");
    let third = piazza(&[os("export"), os("--data-dir"), back.as_os_str()], None);
    ok(&third, "export from the new data dir");
    assert_eq!(body(&text(&third.stdout)), body(&first));

    let server = Server::start(&back);
    let api = Api {
        server: &server,
        client: reqwest::Client::new(),
    };
    assert_same_views(&api.settled_views().await, &original, "back on the embedded store");
    assert!(server.terminate().success());
}

/// A small dump of a fresh data dir with one entity.
async fn small_dump(dir: &Path) -> String {
    let server = Server::start(dir);
    let created = reqwest::Client::new()
        .post(server.url("/ngsi-ld/v1/entities"))
        .json(&json!({"id": "urn:ngsi-ld:Room:1", "type": "Room", "temperature": 20}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    assert!(server.terminate().success());
    let exported = piazza(&[os("export"), os("--data-dir"), dir.as_os_str()], None);
    ok(&exported, "export");
    text(&exported.stdout)
}

#[tokio::test]
async fn a_bad_dump_is_refused_plainly_and_writes_nothing() {
    let work = tempfile::tempdir().expect("temp dir");
    let dump = small_dump(&work.path().join("source")).await;
    let target = work.path().join("target");
    let import = |file: &Path| {
        piazza(
            &[
                os("import"),
                os("ndjson"),
                file.as_os_str(),
                os("--data-dir"),
                target.as_os_str(),
            ],
            None,
        )
    };
    let lines: Vec<&str> = dump.lines().collect();

    let truncated = work.path().join("truncated.ndjson");
    std::fs::write(&truncated, lines[..lines.len() - 1].join("\n") + "\n").expect("write");
    let refused = import(&truncated);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("truncated"), "{}", text(&refused.stderr));

    let malformed = work.path().join("malformed.ndjson");
    let mut broken = lines.clone();
    broken[2] = "{\"kind\": \"entity\", \"tenant\": \"\", \"entity\": 42}";
    std::fs::write(&malformed, broken.join("\n") + "\n").expect("write");
    let refused = import(&malformed);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("line 3"), "{}", text(&refused.stderr));

    let newer = work.path().join("newer.ndjson");
    std::fs::write(&newer, dump.replacen("\"version\":1", "\"version\":99", 1)).expect("write");
    let refused = import(&newer);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("version 99"),
        "{}",
        text(&refused.stderr)
    );

    let miscounted = work.path().join("miscounted.ndjson");
    let mut wrong = lines.clone();
    let trailer = wrong.len() - 1;
    let changed = wrong[trailer].replace("\"entity\":1", "\"entity\":2");
    assert_ne!(changed, wrong[trailer]);
    wrong[trailer] = &changed;
    std::fs::write(&miscounted, wrong.join("\n") + "\n").expect("write");
    let refused = import(&miscounted);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("the trailer counts 2 entity records"),
        "{}",
        text(&refused.stderr)
    );

    // A file is checked before anything is written: the target is still
    // empty, so the good dump imports without --force.
    let good = work.path().join("good.ndjson");
    std::fs::write(&good, &dump).expect("write");
    ok(&import(&good), "the good dump");
    let exported = piazza(&[os("export"), os("--data-dir"), target.as_os_str()], None);
    assert_eq!(body(&text(&exported.stdout)), body(&dump));
}

#[tokio::test]
async fn a_bad_dump_on_standard_input_stops_with_what_was_written_and_a_forced_rerun_repairs() {
    let work = tempfile::tempdir().expect("temp dir");
    let dump = small_dump(&work.path().join("source")).await;
    let target = work.path().join("target");
    let from_stdin = |input: &str, force: bool| {
        // One record per transaction: what was read before the failure is written.
        let mut args = vec![
            os("import"),
            os("ndjson"),
            os("-"),
            os("--batch-size"),
            os("1"),
            os("--data-dir"),
            target.as_os_str(),
        ];
        if force {
            args.push(os("--force"));
        }
        piazza(&args, Some(input.as_bytes()))
    };
    // Cut before the trailer: the records went in, then the end was missing.
    let lines: Vec<&str> = dump.lines().collect();
    let cut = lines[..lines.len() - 1].join("\n") + "\n";
    let stopped = from_stdin(&cut, false);
    assert_eq!(stopped.status.code(), Some(1));
    let stderr = text(&stopped.stderr);
    assert!(
        stderr.contains("truncated") && stderr.contains("1 entity") && stderr.contains("--force"),
        "{stderr}"
    );
    let refused = from_stdin(&dump, false);
    assert!(text(&refused.stderr).contains("not empty"), "{}", text(&refused.stderr));
    ok(&from_stdin(&dump, true), "the forced re-run");
    let exported = piazza(&[os("export"), os("--data-dir"), target.as_os_str()], None);
    assert_eq!(body(&text(&exported.stdout)), body(&dump), "no duplicates");
}

#[test]
fn exporting_a_data_dir_that_does_not_exist_is_an_error_not_an_empty_dump() {
    let work = tempfile::tempdir().expect("temp dir");
    let missing = work.path().join("nothing-here");
    let output = piazza(&[os("export"), os("--data-dir"), missing.as_os_str()], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("is not a piazza data dir"),
        "{}",
        text(&output.stderr)
    );
    assert!(output.stdout.is_empty());
    assert!(!missing.exists(), "nothing was created");
}
