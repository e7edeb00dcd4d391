//! `piazza import …`: loads a file into a data dir, in process.
//!
//! Imports open the data dir like `serve` does and write through the same
//! broker, so they need the server stopped (one process per data dir); in
//! exchange they need no network, no running server, and write as fast as
//! the store allows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use piazza_broker::piazza_store::Tenant;
use piazza_broker::{Broker, Limits};
use piazza_import::mapping::Mapping;
use piazza_import::{GtfsOptions, ImportError, Options, Summary, Validator};
use piazza_store_embedded::EmbeddedStore;

#[derive(Subcommand)]
pub enum ImportCommand {
    /// A GTFS static feed (zip file or folder) as Smart Data Models UrbanMobility entities.
    Gtfs {
        /// The feed: a .zip file or a folder of .txt files.
        feed: PathBuf,
        /// The feed's part of every entity id [default: the agency_id of a single-agency feed].
        #[arg(long)]
        feed_id: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// A CSV file, one entity (or observation) per row, as the mapping says.
    Csv {
        file: PathBuf,
        /// The mapping file (TOML, see docs/IMPORT.md).
        #[arg(long)]
        mapping: PathBuf,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// A GeoJSON FeatureCollection, one entity per feature, as the mapping says.
    Geojson {
        file: PathBuf,
        /// The mapping file (TOML, see docs/IMPORT.md).
        #[arg(long)]
        mapping: PathBuf,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// NGSI-LD entities (one or an array; normalized, concise or keyValues), e.g. Smart Data Models examples.
    Ngsild {
        file: PathBuf,
        /// A local copy of a remote @context: URL=FILE (repeatable); nothing is fetched for that URL.
        #[arg(long = "context", value_name = "URL=FILE", value_parser = parse_context)]
        contexts: Vec<(String, PathBuf)>,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Args)]
pub struct CommonArgs {
    /// Folder of the embedded store (created if missing); the server must not be running on it.
    #[arg(long, env = "PIAZZA_DATA_DIR", default_value = "./piazza-data")]
    data_dir: PathBuf,
    /// The tenant to import into [default: the default tenant].
    #[arg(long, env = "PIAZZA_TENANT")]
    tenant: Option<String>,
    /// Stop at the first bad row and exit non-zero (rows before it are imported).
    #[arg(long)]
    strict: bool,
    /// Validate each entity against its Smart Data Models JSON Schema (see --schemas).
    #[arg(long)]
    validate: bool,
    /// Entities written per storage transaction (larger is faster: fewer fsyncs).
    #[arg(long, default_value_t = 5000)]
    batch_size: usize,
    /// Folder of Smart Data Models schemas: <Type>/schema.json and the documents they $ref.
    #[arg(long, env = "PIAZZA_SCHEMAS_DIR", default_value = "./smart-data-models")]
    schemas: PathBuf,
}

fn parse_context(text: &str) -> Result<(String, PathBuf), String> {
    let (url, file) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not URL=FILE"))?;
    Ok((url.to_owned(), PathBuf::from(file)))
}

pub async fn run(command: ImportCommand) -> anyhow::Result<()> {
    let (common, what) = match &command {
        ImportCommand::Gtfs { common, feed, .. } => (common, feed),
        ImportCommand::Csv { common, file, .. }
        | ImportCommand::Geojson { common, file, .. }
        | ImportCommand::Ngsild { common, file, .. } => (common, file),
    };
    let broker = open(&common.data_dir)?;
    let options = options(common)?;
    let started = Instant::now();
    let result = match &command {
        ImportCommand::Gtfs { feed, feed_id, .. } => {
            let gtfs = GtfsOptions {
                feed_id: feed_id.clone(),
            };
            piazza_import::import_gtfs(&broker, &options, feed, &gtfs).await
        }
        ImportCommand::Csv { file, mapping, .. } => {
            let mapping = Mapping::load(mapping)?;
            piazza_import::import_csv(&broker, &options, file, &mapping).await
        }
        ImportCommand::Geojson { file, mapping, .. } => {
            let mapping = Mapping::load(mapping)?;
            piazza_import::import_geojson(&broker, &options, file, &mapping).await
        }
        ImportCommand::Ngsild { file, contexts, .. } => {
            piazza_import::import_ngsild(&broker, &options, file, contexts).await
        }
    };
    match result {
        Ok(summary) => {
            report(what, &summary, started);
            Ok(())
        }
        Err(ImportError::Strict(rejection)) => bail!("{rejection} (stopped: --strict)"),
        Err(error) => Err(error.into()),
    }
}

/// Opens the data dir as `serve` does; refuses plainly when a server has it.
fn open(data_dir: &Path) -> anyhow::Result<Broker> {
    if in_use(data_dir) {
        bail!(
            "{} is in use by a running piazza server: stop it, then run the import again \
             (imports write the data dir directly, not through the server)",
            data_dir.display()
        );
    }
    let store =
        EmbeddedStore::open(data_dir).with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    Ok(Broker::new(Arc::new(store), Limits::default()))
}

/// Whether another process holds the data dir's lock (`piazza.lock`).
pub(crate) fn in_use(data_dir: &Path) -> bool {
    let Ok(lock) = std::fs::File::open(data_dir.join("piazza.lock")) else {
        return false;
    };
    matches!(lock.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

fn options(common: &CommonArgs) -> anyhow::Result<Options> {
    let tenant = match &common.tenant {
        Some(name) => Tenant::parse(name).map_err(|e| anyhow::anyhow!("--tenant: {}", e.detail))?,
        None => Tenant::default(),
    };
    let validator = if common.validate {
        Some(Validator::load(&common.schemas)?)
    } else {
        None
    };
    Ok(Options {
        tenant,
        strict: common.strict,
        validator,
        progress: true,
        report_rejections: true,
        chunk_size: common.batch_size.clamp(1, Limits::default().max_batch_size),
    })
}

fn report(file: &Path, summary: &Summary, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    let rate = summary.total() as f64 / seconds.max(1e-6);
    println!(
        "{}: {summary} ({} records in {seconds:.1} s, {rate:.0}/s)",
        file.display(),
        summary.total()
    );
}
