//! Optional validation against the Smart Data Models JSON Schemas
//! (`--validate`). The schemas live in a folder laid out like
//! `shared/data/smart-data-models/`: `<Type>/schema.json`, plus the
//! documents their `$ref`s point to (`common-schema.json`,
//! `subject-schemas/*.json`), which are served from that folder by their
//! `$id`, never fetched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jsonschema::{Retrieve, Uri};
use serde_json::Value;

use crate::{ImportError, ImportResult};

/// The Smart Data Models schemas of one folder, compiled on first use.
pub struct Validator {
    dir: PathBuf,
    documents: Arc<HashMap<String, Value>>,
    compiled: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

/// Serves referenced schemas from the folder, by URI.
struct LocalSchemas(Arc<HashMap<String, Value>>);

impl Retrieve for LocalSchemas {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let key = uri.as_str().split('#').next().unwrap_or_default();
        self.0
            .get(key)
            .cloned()
            .ok_or_else(|| format!("schema {key} is not in the schema folder (nothing is fetched)").into())
    }
}

impl Validator {
    /// Indexes every JSON document of `dir` (one level of sub-folders) that
    /// has a `$id`.
    pub fn load(dir: &Path) -> ImportResult<Self> {
        let mut documents = HashMap::new();
        for path in json_files(dir)? {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(document) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if let Some(id) = document.get("$id").and_then(Value::as_str) {
                for uri in aliases(id) {
                    documents.insert(uri, document.clone());
                }
            }
        }
        if documents.is_empty() {
            return Err(ImportError::Schema(format!(
                "no JSON Schema found in {} (expected <Type>/schema.json files)",
                dir.display()
            )));
        }
        Ok(Self {
            dir: dir.to_owned(),
            documents: Arc::new(documents),
            compiled: Mutex::new(HashMap::new()),
        })
    }

    /// Validates a keyValues entity; the reason lists the first violations.
    pub fn validate(&self, entity: &Value) -> Result<(), String> {
        let entity_type = short_type(entity).ok_or("the entity has no type")?;
        let validator = self.validator(&entity_type)?;
        let problems: Vec<String> = validator
            .iter_errors(entity)
            .take(3)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "does not match the {entity_type} schema: {}",
                problems.join("; ")
            ))
        }
    }

    fn validator(&self, entity_type: &str) -> Result<Arc<jsonschema::Validator>, String> {
        if let Some(hit) = self.compiled.lock().ok().and_then(|c| c.get(entity_type).cloned()) {
            return Ok(hit);
        }
        let path = self.dir.join(entity_type).join("schema.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|_| format!("no schema for type {entity_type} ({} not found)", path.display()))?;
        let schema: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let validator = jsonschema::options()
            .with_retriever(LocalSchemas(self.documents.clone()))
            .build(&schema)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let validator = Arc::new(validator);
        if let Ok(mut compiled) = self.compiled.lock() {
            compiled.insert(entity_type.to_owned(), validator.clone());
        }
        Ok(validator)
    }
}

/// The `.json` files of `dir` and of its direct sub-folders.
fn json_files(dir: &Path) -> ImportResult<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| ImportError::io(dir, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Ok(inner) = std::fs::read_dir(&path) {
                files.extend(inner.flatten().map(|e| e.path()).filter(|p| is_json(p)));
            }
        } else if is_json(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

/// The URIs a schema is referred to by: its `$id`, and for the Smart Data
/// Models site the repository copy some models use
/// (`smart-data-models.github.io/dataModel.X/f.json` is published from
/// `raw.githubusercontent.com/smart-data-models/dataModel.X/master/f.json`).
fn aliases(id: &str) -> Vec<String> {
    let mut uris = vec![id.to_owned()];
    if let Some(rest) = id.strip_prefix("https://smart-data-models.github.io/") {
        if let Some((repo, file)) = rest.split_once('/') {
            uris.push(format!(
                "https://raw.githubusercontent.com/smart-data-models/{repo}/master/{file}"
            ));
        }
    }
    uris
}

/// The type name as Smart Data Models folders use it (`GtfsStop`), from a
/// term or an IRI, of the first type given.
fn short_type(entity: &Value) -> Option<String> {
    let value = entity.get("type")?;
    let first = match value {
        Value::Array(items) => items.first()?.as_str()?,
        other => other.as_str()?,
    };
    let short = first.rsplit(['/', '#']).next().unwrap_or(first);
    (!short.is_empty()).then(|| short.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_aliases() {
        let entity = serde_json::json!({"type": "https://smartdatamodels.org/dataModel.Parking/OffStreetParking"});
        assert_eq!(short_type(&entity).as_deref(), Some("OffStreetParking"));
        let uris = aliases("https://smart-data-models.github.io/dataModel.Environment/Environment-schema.json");
        assert_eq!(
            uris[1],
            "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/Environment-schema.json"
        );
    }
}
