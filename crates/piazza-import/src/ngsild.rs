//! `piazza import ngsild <file.json>`: NGSI-LD entities as documents (one
//! entity or an array), normalized, concise or keyValues, each with its
//! `@context` — the form of the Smart Data Models `example*.jsonld` files.
//!
//! Remote @contexts are resolved by the broker (fetched once and cached);
//! on an air-gapped site `--context URL=FILE` gives the document of a URL
//! from a local copy, kept as that URL's cached context.

use std::path::{Path, PathBuf};

use piazza_broker::ingest::ImportMode;
use piazza_broker::Broker;
use serde_json::Value;

use crate::sink::Sink;
use crate::{display_name, values, ImportError, ImportResult, Options, Origin, Record, Rejection, Summary};

/// Imports the entities of an NGSI-LD document; `contexts` are local
/// copies of remote @contexts (URL, file).
pub async fn import_ngsild(
    broker: &Broker,
    options: &Options,
    file: &Path,
    contexts: &[(String, PathBuf)],
) -> ImportResult<Summary> {
    for (url, path) in contexts {
        preload(broker, options, url, path).await?;
    }
    let name = display_name(file);
    let text = std::fs::read_to_string(file).map_err(|e| ImportError::io(file, e))?;
    let document: Value =
        serde_json::from_str(&text).map_err(|e| ImportError::Input(format!("{name}: not JSON: {e}")))?;
    let entities = match document {
        Value::Array(items) => items,
        single => vec![single],
    };
    let mut sink = Sink::new(broker, options, ImportMode::Replace, Some(entities.len() as u64));
    for (index, entity) in entities.iter().enumerate() {
        let origin = Origin::item(&name, "entity", index as u64 + 1);
        let record = record(broker, options, entity, origin).await;
        sink.push(record).await?;
    }
    sink.finish().await
}

async fn record(broker: &Broker, options: &Options, entity: &Value, origin: Origin) -> Result<Record, Rejection> {
    let reject = |reason: String| Rejection {
        origin: origin.clone(),
        reason,
    };
    let Value::Object(members) = entity else {
        return Err(reject("an entity must be a JSON object".into()));
    };
    let context = broker
        .context(&options.tenant, members.get("@context"))
        .await
        .map_err(|e| reject(format!("{e} (give a local copy with --context URL=FILE)")))?;
    Ok(Record {
        origin: origin.clone(),
        body: values::fragment(members, None, None, None),
        context,
        observed_at: None,
    })
}

async fn preload(broker: &Broker, options: &Options, url: &str, path: &Path) -> ImportResult<()> {
    let text = std::fs::read_to_string(path).map_err(|e| ImportError::io(path, e))?;
    let document: Value =
        serde_json::from_str(&text).map_err(|e| ImportError::Input(format!("{}: not JSON: {e}", path.display())))?;
    broker.cache_context(&options.tenant, url, document).await?;
    Ok(())
}
