//! File importers: GTFS feeds, CSV and GeoJSON files with a mapping, and
//! NGSI-LD documents (Smart Data Models examples) become entities, written
//! through the broker's own write path ([`Broker::import_upsert`]).
//!
//! Layout:
//! - [`values`]: attribute values (keyValues or NGSI-LD) → normalized
//!   attributes; pure, and what a live bridge (MQTT) reuses.
//! - [`mapping`]: the TOML mapping of a CSV/GeoJSON file, and rows → entities.
//! - `csv_file`, `geojson`, `gtfs`, `ngsild`: one reader per format, each
//!   turning its input into [`Record`]s.
//! - `sink`: records → broker, in chunks; time series into history;
//!   rejections, `--strict`, the summary. `progress`: the terminal bar.
//! - `validate`: optional Smart Data Models JSON Schema validation.
//! - [`mqtt`]: the live bridge of `piazza serve --mqtt`: sensor messages
//!   become attribute updates, through the same [`Broker::import_upsert`].
//!
//! Every import is idempotent: entities are upserted and unchanged ones are
//! not written; observations already in history (same attribute, same
//! `observedAt`) are skipped.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use piazza_broker::{Broker, BrokerError};
use piazza_ngsild::ActiveContext;
use serde_json::{Map, Value};

pub use piazza_broker::ingest::ImportMode;
pub use piazza_broker::piazza_store::Tenant;

mod csv_file;
mod geojson;
mod gtfs;
pub mod mapping;
pub mod mqtt;
mod ngsild;
mod progress;
mod sink;
mod validate;
pub mod values;

pub use csv_file::import_csv;
pub use geojson::import_geojson;
pub use gtfs::{import_gtfs, GtfsOptions};
pub use ngsild::import_ngsild;
pub use validate::Validator;

/// Why an import stopped (a bad row alone does not stop it, unless `--strict`).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("mapping {}: {reason}", path.display())]
    Mapping { path: PathBuf, reason: String },
    #[error("{0}")]
    Input(String),
    #[error("schema validation: {0}")]
    Schema(String),
    /// `--strict`: the first rejected row.
    #[error("{0} (stopped: --strict)")]
    Strict(Rejection),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl ImportError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

pub type ImportResult<T> = Result<T, ImportError>;

/// Where a record comes from: file and line (1-based; 0 when not known),
/// or for JSON inputs the position of the feature or entity in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: u64,
    /// `line`, or what `line` counts in a JSON file (`feature`, `entity`).
    pub unit: &'static str,
}

impl Origin {
    pub fn new(file: impl Into<String>, line: u64) -> Self {
        Self {
            file: file.into(),
            line,
            unit: "line",
        }
    }

    /// The `n`th (1-based) `unit` of a JSON file.
    pub fn item(file: impl Into<String>, unit: &'static str, n: u64) -> Self {
        Self {
            file: file.into(),
            line: n,
            unit,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.unit) {
            (0, _) => write!(f, "{}", self.file),
            (n, "line") => write!(f, "{}:{n}", self.file),
            (n, unit) => write!(f, "{} ({unit} {n})", self.file),
        }
    }
}

/// A row (or feature, or entity) that was not imported, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub origin: Origin,
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.reason)
    }
}

/// One entity (or observation) to import: a normalized or concise NGSI-LD
/// body without `@context`, read with `context`.
#[derive(Clone, Debug)]
pub struct Record {
    pub origin: Origin,
    pub body: Map<String, Value>,
    pub context: Arc<ActiveContext>,
    /// Set on observations: they go to history, in `observedAt` order, and
    /// the entity shows the latest one.
    pub observed_at: Option<piazza_ngsild::time::Timestamp>,
}

/// How an import runs.
pub struct Options {
    pub tenant: Tenant,
    /// Stop at the first rejected row, with an error.
    pub strict: bool,
    /// Validate each entity against its Smart Data Models JSON Schema.
    pub validator: Option<Validator>,
    /// Entities per broker call (at most the broker's batch limit).
    pub chunk_size: usize,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Print each rejection on stderr as it happens.
    pub report_rejections: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tenant: Tenant::default(),
            strict: false,
            validator: None,
            chunk_size: 5000,
            progress: false,
            report_rejections: false,
        }
    }
}

/// Rejections kept in a summary; beyond, only counted (a huge bad file
/// must not fill memory).
const KEPT_REJECTIONS: usize = 1000;

/// What an import did, counted in records (rows, features, entities).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub created: u64,
    pub updated: u64,
    /// Already stored as given: nothing written.
    pub unchanged: u64,
    /// Left out on purpose: filtered out by the mapping, or without any value.
    pub skipped: u64,
    pub rejected: u64,
    /// The first rejections, in order.
    pub rejections: Vec<Rejection>,
}

impl Summary {
    pub(crate) fn reject(&mut self, rejection: Rejection) {
        self.rejected += 1;
        if self.rejections.len() < KEPT_REJECTIONS {
            self.rejections.push(rejection);
        }
    }

    /// Records read.
    pub fn total(&self) -> u64 {
        self.created + self.updated + self.unchanged + self.skipped + self.rejected
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} created, {} updated, {} unchanged, {} skipped, {} rejected",
            self.created, self.updated, self.unchanged, self.skipped, self.rejected
        )
    }
}

/// The file name used in reports: what the user typed.
pub(crate) fn display_name(path: &Path) -> String {
    path.display().to_string()
}

/// The context of a mapping's terms: its local @context file, or the core.
pub(crate) async fn mapping_context(
    broker: &Broker,
    tenant: &Tenant,
    mapping: &mapping::Mapping,
) -> ImportResult<Arc<ActiveContext>> {
    match mapping.context_path() {
        Some(path) => local_context(broker, tenant, &path).await,
        None => Ok(broker.context(tenant, None).await?),
    }
}

/// Resolves a local @context document (a JSON file with an `@context`
/// member) into an active context, without fetching anything.
pub(crate) async fn local_context(broker: &Broker, tenant: &Tenant, path: &Path) -> ImportResult<Arc<ActiveContext>> {
    let text = std::fs::read_to_string(path).map_err(|e| ImportError::io(path, e))?;
    let document: Value =
        serde_json::from_str(&text).map_err(|e| ImportError::Input(format!("{}: not JSON: {e}", path.display())))?;
    let Some(inner) = document.get("@context") else {
        return Err(ImportError::Input(format!("{}: no @context member", path.display())));
    };
    Ok(broker.context(tenant, Some(inner)).await?)
}
