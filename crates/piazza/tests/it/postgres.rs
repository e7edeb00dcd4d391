//! `piazza serve --database`: the binary on PostgreSQL, one process and two.

use std::ffi::OsStr;
use std::process::Command;

use piazza_store_postgres::testing::TestDatabase;
use serde_json::json;

use crate::process::Server;

fn on(database: &TestDatabase) -> Server {
    Server::start_args(&[OsStr::new("--database"), OsStr::new(database.url())])
}

#[tokio::test]
async fn writes_through_one_process_are_read_through_another_and_survive_kill_9() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let (a, b) = (on(&database), on(&database));
    let client = reqwest::Client::new();
    let entity = json!({"id": "urn:ngsi-ld:Meter:1", "type": "Meter", "reading": 7});
    let created = client
        .post(a.url("/ngsi-ld/v1/entities"))
        .json(&entity)
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let read = |server: &Server| {
        client
            .get(server.url("/ngsi-ld/v1/entities/urn:ngsi-ld:Meter:1?options=keyValues"))
            .send()
    };
    let through_b: serde_json::Value = read(&b).await.expect("read").json().await.expect("json");
    assert_eq!(through_b, entity, "a write through A is visible through B at once");
    a.kill_9();
    b.kill_9();
    let again = on(&database);
    let after: serde_json::Value = read(&again).await.expect("read").json().await.expect("json");
    assert_eq!(after, entity, "an acknowledged write survives kill -9 of every process");
}

#[test]
fn an_unreachable_database_is_a_plain_error_and_a_nonzero_exit() {
    let output = Command::new(env!("CARGO_BIN_EXE_piazza"))
        .args(["serve", "--addr", "127.0.0.1:0", "--database"])
        .arg("postgres://nobody@127.0.0.1:1/none")
        .output()
        .expect("run piazza");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open the PostgreSQL store"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "the cause is given: {stderr}");
}
