//! Queries: type, q, geo-queries, paging and counts.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::client;

async fn load_sensors(c: &crate::support::Client, n: usize) {
    let entities: Vec<_> = (0..n)
        .map(|i| {
            json!({
                "id": format!("urn:ngsi-ld:AirQualityObserved:{i:04}"),
                "type": "AirQualityObserved",
                "pm10": {"type": "Property", "value": i as f64 / 2.0},
                "station": {"type": "Relationship", "object": format!("urn:ngsi-ld:Station:{}", i % 3)},
                "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [11.0 + i as f64 * 0.01, 43.7]}},
            })
        })
        .collect();
    let reply = c.post("/entityOperations/create", &json!(entities)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

fn ids(body: &serde_json::Value) -> Vec<String> {
    body.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn q_filters_by_value_and_relationship() {
    let c = client();
    load_sensors(&c, 30).await;
    let reply = c
        .get("/entities?type=AirQualityObserved&q=pm10>=10;pm10<11&count=true")
        .await;
    assert_eq!(
        ids(&reply.body),
        [
            "urn:ngsi-ld:AirQualityObserved:0020",
            "urn:ngsi-ld:AirQualityObserved:0021"
        ]
    );
    assert_eq!(reply.header("ngsild-results-count"), Some("2"));
    let by_station = c
        .get("/entities?type=AirQualityObserved&q=station==\"urn:ngsi-ld:Station:1\"&count=true&limit=0")
        .await;
    assert_eq!(by_station.header("ngsild-results-count"), Some("10"));
    assert_eq!(by_station.body, json!([]));
    let bad = c.get("/entities?type=AirQualityObserved&q=pm10>>3").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn paging_walks_every_match_once() {
    let c = client();
    load_sensors(&c, 45).await;
    let mut seen = Vec::new();
    for offset in (0..45).step_by(10) {
        let page = c
            .get(&format!("/entities?type=AirQualityObserved&limit=10&offset={offset}"))
            .await;
        seen.extend(ids(&page.body));
    }
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (45, 45));
    let too_big = c.get("/entities?type=AirQualityObserved&limit=100000").await;
    assert_eq!(too_big.status, StatusCode::FORBIDDEN);
}

/// The next-page link is there exactly when a match follows the page,
/// whether or not the client asked for the count (which the link no longer
/// needs).
#[tokio::test]
async fn the_next_link_appears_only_when_a_match_follows() {
    let c = client();
    load_sensors(&c, 30).await;
    let next = |reply: &crate::support::Reply| -> Option<String> {
        reply
            .headers
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|l| l.contains("rel=\"next\""))
            .map(str::to_owned)
    };
    for count in ["", "&count=true"] {
        for (offset, more) in [(0, true), (10, true), (19, true), (20, false), (25, false), (40, false)] {
            let page = c
                .get(&format!(
                    "/entities?type=AirQualityObserved&limit=10&offset={offset}{count}"
                ))
                .await;
            assert_eq!(page.status, StatusCode::OK);
            assert_eq!(ids(&page.body).len(), 30usize.saturating_sub(offset).min(10));
            let link = next(&page);
            assert_eq!(link.is_some(), more, "offset {offset}{count}: {link:?}");
            if let Some(link) = link {
                assert!(link.contains(&format!("offset={}", offset + 10)), "{link}");
            }
        }
    }
    // A q whose matches end exactly at the page boundary.
    let exact = c
        .get("/entities?type=AirQualityObserved&q=station==\"urn:ngsi-ld:Station:1\"&limit=10")
        .await;
    assert_eq!(ids(&exact.body).len(), 10);
    assert_eq!(next(&exact), None);
}

#[tokio::test]
async fn geo_near_and_within() {
    let c = client();
    load_sensors(&c, 20).await;
    // 0.01 degrees of longitude at 43.7°N is about 800 m.
    let near = c
        .get("/entities?type=AirQualityObserved&georel=near;maxDistance==1000&geometry=Point&coordinates=[11.0,43.7]")
        .await;
    assert_eq!(near.status, StatusCode::OK, "{}", near.body);
    assert_eq!(
        ids(&near.body),
        [
            "urn:ngsi-ld:AirQualityObserved:0000",
            "urn:ngsi-ld:AirQualityObserved:0001"
        ]
    );
    let polygon = "[[[11.045,43.6],[11.075,43.6],[11.075,43.8],[11.045,43.8],[11.045,43.6]]]";
    let within = c
        .get(&format!(
            "/entities?type=AirQualityObserved&georel=within&geometry=Polygon&coordinates={polygon}"
        ))
        .await;
    assert_eq!(ids(&within.body).len(), 3);
}

#[tokio::test]
async fn post_query_matches_get_query() {
    let c = client();
    load_sensors(&c, 10).await;
    let body = json!({"type": "Query", "entities": [{"type": "AirQualityObserved"}], "q": "pm10>3"});
    let reply = c.post("/entityOperations/query", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let get = c.get("/entities?type=AirQualityObserved&q=pm10>3").await;
    assert_eq!(ids(&reply.body), ids(&get.body));
    assert_eq!(ids(&get.body).len(), 3);
}
