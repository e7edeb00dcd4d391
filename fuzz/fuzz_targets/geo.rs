//! Geo-queries: georel, geometry and coordinates as a client sends them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piazza_ngsild::query::GeoQuery;
use piazza_ngsild::ActiveContext;

fuzz_target!(|input: (&str, &str, &str)| {
    let (georel, geometry, coordinates) = input;
    let context = ActiveContext::core();
    let coordinates = serde_json::Value::String(coordinates.to_owned());
    if let Ok(query) = GeoQuery::parse(georel, geometry, &coordinates, None, &context) {
        let _ = query.bounding_box();
    }
});
