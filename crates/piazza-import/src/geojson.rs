//! `piazza import geojson <file> --mapping <file.toml>`: each feature is a
//! row whose columns are its properties; its geometry is the location.

use std::path::Path;

use piazza_broker::Broker;
use serde_json::Value;

use crate::mapping::{Mapping, Row};
use crate::sink::Sink;
use crate::{display_name, mapping_context, ImportError, ImportResult, Options, Origin, Record, Rejection, Summary};

struct Feature<'a>(&'a Value);

impl Row for Feature<'_> {
    /// `@id` is the feature's id; other columns are properties, by exact
    /// name or as a `/` path into nested objects (`tags/addr:city`).
    fn get(&self, column: &str) -> Option<Value> {
        if column == "@id" {
            return self.0.get("id").filter(|v| !v.is_null()).cloned();
        }
        let properties = self.0.get("properties")?;
        if let Some(value) = properties.get(column) {
            return Some(value.clone()).filter(|v| !v.is_null());
        }
        column
            .split('/')
            .try_fold(properties, |value, key| value.get(key))
            .filter(|v| !v.is_null())
            .cloned()
    }

    fn geometry(&self) -> Option<&Value> {
        self.0.get("geometry").filter(|g| g.is_object())
    }
}

/// Imports every feature of a GeoJSON FeatureCollection (or one Feature).
pub async fn import_geojson(
    broker: &Broker,
    options: &Options,
    file: &Path,
    mapping: &Mapping,
) -> ImportResult<Summary> {
    let name = display_name(file);
    let context = mapping_context(broker, &options.tenant, mapping).await?;
    let text = std::fs::read_to_string(file).map_err(|e| ImportError::io(file, e))?;
    let document: Value =
        serde_json::from_str(&text).map_err(|e| ImportError::Input(format!("{name}: not JSON: {e}")))?;
    let features = features(&document)
        .ok_or_else(|| ImportError::Input(format!("{name}: neither a GeoJSON FeatureCollection nor a Feature")))?;
    let mut sink = Sink::new(broker, options, mapping.import_mode(), Some(features.len() as u64));
    for (index, feature) in features.iter().enumerate() {
        let origin = Origin::item(&name, "feature", index as u64 + 1);
        if feature.get("type").and_then(Value::as_str) != Some("Feature") {
            let reason = "not a GeoJSON Feature".to_owned();
            sink.push(Err(Rejection { origin, reason })).await?;
            continue;
        }
        match mapping.entity(&Feature(feature)) {
            Ok(Some((body, observed_at))) => {
                let record = Record {
                    origin,
                    body,
                    context: context.clone(),
                    observed_at,
                };
                sink.push(Ok(record)).await?;
            }
            Ok(None) => sink.skip(),
            Err(reason) => sink.push(Err(Rejection { origin, reason })).await?,
        }
    }
    sink.finish().await
}

fn features(document: &Value) -> Option<Vec<&Value>> {
    match document.get("type").and_then(Value::as_str)? {
        "FeatureCollection" => Some(document.get("features")?.as_array()?.iter().collect()),
        "Feature" => Some(vec![document]),
        _ => None,
    }
}
