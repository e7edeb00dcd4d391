//! The `piazza` binary: command line, configuration, tracing and wiring.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use piazza_broker::{Broker, Limits, NotifierConfig, Retention};
use piazza_http::AppState;
use piazza_store::Store;
use piazza_store_embedded::EmbeddedStore;
use piazza_store_postgres::{Postgis, PostgresConfig, PostgresStore};
use tokio::net::TcpListener;

mod dump;
mod import;

/// jemalloc rather than the system allocator: a request allocates and frees
/// thousands of small strings and maps (JSON documents decoded and rendered),
/// and glibc's bins and consolidation took a fifth of the broker's time under
/// the query benchmark (BENCHMARKS.md, "Allocator"). jemalloc rather than
/// mimalloc: its thread caches hand back the blocks freed last, still in
/// the core's cache, where mimalloc's free lists hand out blocks last
/// touched long ago (a cache miss on a tenth of query-q's samples); query-q
/// needs 9 % less CPU per request (BENCHMARKS.md, "jemalloc").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Piazza: a regional smart-city data platform speaking ETSI NGSI-LD.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the NGSI-LD context broker.
    Serve(ServeArgs),
    /// Load a file into the data dir (the server must be stopped); a dump also into PostgreSQL.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Write the whole store (every tenant, history included) as NDJSON, to
    /// move it to another backend with `piazza import ndjson` (stop the servers first).
    Export(dump::ExportArgs),
}

#[derive(Subcommand)]
enum ImportCommand {
    #[command(flatten)]
    File(import::ImportCommand),
    /// A dump written by `piazza export`: a whole store, every tenant and its history, into an
    /// empty store (the embedded one in --data-dir, or PostgreSQL with --database).
    Ndjson(dump::NdjsonArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PIAZZA_ADDR", default_value = "127.0.0.1:1026")]
    addr: SocketAddr,
    /// Folder of the embedded store (created if missing); unused with `--database`.
    #[arg(long, env = "PIAZZA_DATA_DIR", default_value = "./piazza-data")]
    data_dir: PathBuf,
    /// PostgreSQL instead of the embedded store: `postgres://user@host:port/database`.
    /// The schema is created and migrated at start-up.
    #[arg(long, env = "PIAZZA_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// Connections this process keeps open to PostgreSQL.
    #[arg(long, env = "PIAZZA_DATABASE_POOL_SIZE", default_value_t = piazza_store_postgres::DEFAULT_POOL_SIZE)]
    database_pool_size: usize,
    /// With `--database`: narrow geo-queries with PostGIS when the database
    /// has the extension (or piazza may create it), or never. Answers are
    /// the same either way.
    #[arg(long, env = "PIAZZA_POSTGIS", value_enum, default_value_t = PostgisFlag::Auto)]
    postgis: PostgisFlag,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "PIAZZA_MAX_BODY_BYTES", default_value_t = piazza_http::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Page size when a query gives no `limit`.
    #[arg(long, env = "PIAZZA_DEFAULT_PAGE_SIZE", default_value_t = Limits::default().default_page_size)]
    default_page_size: usize,
    /// Largest `limit` a query may ask for.
    #[arg(long, env = "PIAZZA_MAX_PAGE_SIZE", default_value_t = Limits::default().max_page_size)]
    max_page_size: usize,
    /// Most entities in one batch operation.
    #[arg(long, env = "PIAZZA_MAX_BATCH_SIZE", default_value_t = Limits::default().max_batch_size)]
    max_batch_size: usize,
    /// The URL clients reach this broker at (used in notifications to name
    /// contexts it hosts); default `http://<addr>`.
    #[arg(long, env = "PIAZZA_PUBLIC_URL")]
    public_url: Option<String>,
    /// Days of history kept (attribute instances); unset keeps everything.
    #[arg(long, env = "PIAZZA_HISTORY_RETENTION_DAYS")]
    history_retention_days: Option<u64>,
    /// Days of history kept for one tenant, as TENANT=DAYS (repeatable;
    /// in the environment, comma-separated).
    #[arg(long, env = "PIAZZA_TENANT_HISTORY_RETENTION", value_delimiter = ',', value_parser = tenant_days)]
    tenant_history_retention: Vec<(String, u64)>,
    /// Hours an undeliverable notification is retried before it is given up.
    #[arg(long, env = "PIAZZA_NOTIFICATION_MAX_AGE_HOURS", default_value_t = 24)]
    notification_max_age_hours: u64,
    /// With several processes over one database: seconds a process's claim
    /// on delivering a subscription lasts unrenewed, so the longest its
    /// notifications wait when that process dies.
    #[arg(long, env = "PIAZZA_NOTIFICATION_LEASE_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    notification_lease_secs: u64,
    /// MQTT broker whose sensor messages update entities
    /// (`mqtt://[user:password@]host[:port]`); unset runs no bridge.
    #[arg(long, env = "PIAZZA_MQTT_URL")]
    mqtt: Option<String>,
    /// First topic level(s) of the MQTT bridge: it listens to
    /// `<prefix>/<tenant>/<type>/<entity-id>/attrs` (tenant `-` is the default tenant).
    #[arg(long, env = "PIAZZA_MQTT_PREFIX", default_value = piazza_import::mqtt::DEFAULT_PREFIX)]
    mqtt_prefix: String,
}

/// `--postgis`.
#[derive(Clone, Copy, ValueEnum)]
enum PostgisFlag {
    Auto,
    Off,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PIAZZA_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("piazza: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Import(ImportCommand::File(command)) => import::run(command).await,
            Command::Import(ImportCommand::Ndjson(args)) => dump::import(args).await,
            Command::Export(args) => dump::export(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("piazza: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = PostgresConfig {
        pool_size: args.database_pool_size,
        postgis: match args.postgis {
            PostgisFlag::Auto => Postgis::Auto,
            PostgisFlag::Off => Postgis::Off,
        },
    };
    let store = open_store(args.database.as_deref(), config, &args.data_dir).await?;
    let limits = Limits {
        default_page_size: args.default_page_size,
        max_page_size: args.max_page_size,
        max_batch_size: args.max_batch_size,
        ..Limits::default()
    };
    let notifier = NotifierConfig {
        public_url: args
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", args.addr)),
        max_notice_age: std::time::Duration::from_secs(args.notification_max_age_hours.saturating_mul(3600)),
        lease: std::time::Duration::from_secs(args.notification_lease_secs),
        ..NotifierConfig::default()
    };
    let day = |days: u64| std::time::Duration::from_secs(days.saturating_mul(86_400));
    let retention = Retention {
        default: args.history_retention_days.map(day),
        tenants: args
            .tenant_history_retention
            .iter()
            .map(|(tenant, days)| (tenant.clone(), day(*days)))
            .collect(),
        ..Retention::default()
    };
    let broker = Arc::new(Broker::with_notifier(store, limits, notifier).with_retention(retention));
    broker.start().await.context("cannot resume notification delivery")?;
    let bridge = match &args.mqtt {
        Some(url) => Some(
            piazza_import::mqtt::MqttBridge::start(
                broker.clone(),
                piazza_import::mqtt::MqttBridgeConfig {
                    url: url.clone(),
                    prefix: args.mqtt_prefix.clone(),
                },
            )
            .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let state = Arc::new(AppState {
        broker: broker.clone(),
        max_body_bytes: args.max_body_bytes,
    });
    let shutdown = shutdown_signal()?;
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "NGSI-LD API ready");
    let served = piazza_http::serve(listener, state, shutdown).await;
    if let Some(bridge) = bridge {
        bridge.stop().await;
    }
    broker.stop().await;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// The backend the flags choose: PostgreSQL when a database URL is given,
/// else the embedded store in the data dir.
async fn open_store(
    database: Option<&str>,
    config: PostgresConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(url) = database {
        let store = PostgresStore::open(url, &config)
            .await
            .context("cannot open the PostgreSQL store")?;
        tracing::info!(database = %store.target(), "postgres store open");
        return Ok(Arc::new(store));
    }
    let store =
        EmbeddedStore::open(data_dir).with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    tracing::info!(path = %store.path().display(), "embedded store open");
    Ok(Arc::new(store))
}

/// Parses `TENANT=DAYS`.
fn tenant_days(text: &str) -> Result<(String, u64), String> {
    let (tenant, days) = text
        .split_once('=')
        .ok_or_else(|| format!("expected TENANT=DAYS, got '{text}'"))?;
    piazza_broker::piazza_store::Tenant::parse(tenant).map_err(|e| e.detail)?;
    let days = days.parse().map_err(|_| format!("'{days}' is not a number of days"))?;
    Ok((tenant.to_owned(), days))
}

/// Installs the SIGINT/SIGTERM handlers now, so that a signal sent as soon
/// as the broker says it is ready is never lost (or fatal), and returns a
/// future that resolves on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
            tracing::info!("shutting down");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
    }
}
