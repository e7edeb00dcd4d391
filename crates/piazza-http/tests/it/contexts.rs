//! User @contexts: fetched over real HTTP from a local server, used for
//! expansion and compaction, and unavailable contexts reported as such.

use std::net::SocketAddr;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::client;

/// Serves one @context document on an ephemeral port, the way a data
/// provider's web server would.
async fn context_server() -> SocketAddr {
    let document = json!({"@context": {"Museo": "https://example.org/tourism#Museum", "visitatori": "https://example.org/tourism#visitors"}});
    let app = axum::Router::new().route(
        "/ctx.jsonld",
        axum::routing::get(move || async move { axum::Json(document) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

fn link(url: &str) -> String {
    format!("<{url}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"")
}

#[tokio::test]
async fn a_user_context_expands_on_the_way_in_and_compacts_on_the_way_out() {
    let c = client();
    let url = format!("http://{}/ctx.jsonld", context_server().await);
    let entity = json!({"id": "urn:ngsi-ld:Museo:uffizi", "type": "Museo", "visitatori": 4000000});
    let created = c
        .send(
            c.request(Method::POST, "/entities")
                .header("Link", link(&url))
                .json(&entity),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    // Without the context, the full IRIs show.
    let plain = c.get("/entities/urn:ngsi-ld:Museo:uffizi?options=keyValues").await;
    assert_eq!(plain.body["type"], "https://example.org/tourism#Museum");
    assert_eq!(plain.body["https://example.org/tourism#visitors"], json!(4000000));
    // With it, the user's terms.
    let with = c
        .send(
            c.request(Method::GET, "/entities?type=Museo&options=keyValues")
                .header("Link", link(&url)),
        )
        .await;
    assert_eq!(
        with.body,
        json!([{"id": "urn:ngsi-ld:Museo:uffizi", "type": "Museo", "visitatori": 4000000}])
    );
}

#[tokio::test]
async fn an_unreachable_context_is_reported_not_guessed() {
    let c = client();
    let entity = json!({"id": "urn:ngsi-ld:T:ctx", "type": "T"});
    let reply = c
        .send(
            c.request(Method::POST, "/entities")
                .header("Link", link("http://127.0.0.1:9/nothing.jsonld"))
                .json(&entity),
        )
        .await;
    assert!(reply.status.is_server_error(), "{}", reply.status);
    assert_eq!(
        reply.body["type"],
        "https://uri.etsi.org/ngsi-ld/errors/LdContextNotAvailable"
    );
}
