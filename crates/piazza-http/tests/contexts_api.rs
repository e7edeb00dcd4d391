//! The @context management API and the request prechecks, end to end
//! through the router (no network: only hosted contexts are used).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use piazza_broker::{Broker, Limits};
use piazza_http::{router, AppState, DEFAULT_MAX_BODY_BYTES};
use piazza_store_embedded::EmbeddedStore;
use serde_json::Value;
use tower::ServiceExt;

fn app(dir: &tempfile::TempDir) -> axum::Router {
    let store = EmbeddedStore::open(dir.path()).expect("store opens");
    let broker = Arc::new(Broker::new(Arc::new(store), Limits::default()));
    router(Arc::new(AppState {
        broker,
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
    }))
}

async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, headers, body.to_vec())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("JSON body")
}

#[tokio::test]
async fn hosted_context_lifecycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app(&dir);
    let document = r#"{"@context": {"A1": "urn:ngsi-ld:attributes:A1"}}"#;
    let add = Request::post("/ngsi-ld/v1/jsonldContexts")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, document.len())
        .body(Body::from(document))
        .expect("request");
    let (status, headers, _) = send(&app, add).await;
    assert_eq!(status, StatusCode::CREATED);
    let location = headers[header::LOCATION].to_str().expect("text").to_owned();
    let id = location
        .strip_prefix("/ngsi-ld/v1/jsonldContexts/")
        .expect("relative Location");

    let (status, headers, body) = send(&app, get(&location)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(json(&body), json(document.as_bytes()));

    let (_, _, body) = send(&app, get(&format!("{location}?details=true"))).await;
    let details = json(&body);
    assert_eq!(details["kind"], "Hosted");
    assert!(details["URL"].as_str().is_some_and(|u| u.ends_with(&location)));

    let (_, _, body) = send(&app, get("/ngsi-ld/v1/jsonldContexts?kind=Cached")).await;
    assert_eq!(
        json(&body),
        serde_json::json!(["https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"])
    );

    let reload = Request::delete(format!("{location}?reload=true"))
        .body(Body::empty())
        .expect("request");
    assert_eq!(
        send(&app, reload).await.0,
        StatusCode::BAD_REQUEST,
        "hosted contexts are not reloaded"
    );
    let other_tenant = Request::delete(&location)
        .header("NGSILD-Tenant", "other")
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&app, other_tenant).await.0, StatusCode::NOT_FOUND);
    let delete = Request::delete(format!("/ngsi-ld/v1/jsonldContexts/{id}"))
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&app, delete).await.0, StatusCode::NO_CONTENT);
    assert_eq!(send(&app, get(&location)).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_core_context_is_reloaded_not_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app(&dir);
    let core =
        "/ngsi-ld/v1/jsonldContexts/https%3A%2F%2Furi.etsi.org%2Fngsi-ld%2Fv1%2Fngsi-ld-core-context-v1.8.jsonld";
    let delete = Request::delete(core).body(Body::empty()).expect("request");
    let (status, _, body) = send(&app, delete).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        json(&body)["type"],
        "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    );
    let reload = Request::delete(format!("{core}?reload=true"))
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&app, reload).await.0, StatusCode::NO_CONTENT);
    let (status, _, body) = send(&app, get(&format!("{core}?details=true"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["kind"], "Cached");
    let unknown = Request::delete("/ngsi-ld/v1/jsonldContexts/nope?reload=true")
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&app, unknown).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn prechecks_come_before_routing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app(&dir);
    let chunked = Request::post("/ngsi-ld/v1/entities")
        .header(header::CONTENT_TYPE, "application/json")
        .header("NGSILD-Tenant", "nosuchtenant")
        .body(Body::from("{}"))
        .expect("request");
    let (status, _, body) = send(&app, chunked).await;
    assert_eq!(status, StatusCode::LENGTH_REQUIRED);
    assert!(body.is_empty());

    let xml = Request::get("/ngsi-ld/v1/subscriptions/urn:x")
        .header(header::ACCEPT, "application/xml")
        .body(Body::empty());
    assert_eq!(send(&app, xml.expect("request")).await.0, StatusCode::NOT_ACCEPTABLE);

    let unknown = Request::post("/ngsi-ld/v1/subscriptions?invalidParams=x")
        .header(header::CONTENT_TYPE, "application/ld+json")
        .header(header::CONTENT_LENGTH, 2)
        .body(Body::from("{}"))
        .expect("request");
    let (status, _, body) = send(&app, unknown).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        json(&body)["type"],
        "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest"
    );

    let (status, headers, _) = send(&app, get("/ngsi-ld/v1/info/sourceIdentity")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
}
