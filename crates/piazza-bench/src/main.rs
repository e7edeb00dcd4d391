//! `piazza-bench`: the benchmark harness of the issue "Benchmark harness".
//!
//! It builds nothing: it runs the release `piazza` binary on a fresh temporary
//! data dir and an ephemeral port, loads data, drives closed-loop load over
//! HTTP keep-alive from this process, and prints one table.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hyper::Method;

mod broker;
mod history;
mod ingest;
mod load;
mod mqtt;
mod notify;
mod report;
mod template;

use broker::Broker;
use load::{MakeReq, Outcome, Req, Shape};
use report::{BrokerCpu, Row};
use template::{Rng, ENTITY_TYPE};

/// The broker's allocator, so that the ceiling (a bare route in this
/// process) is measured as the broker would run it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Benchmark harness for the Piazza NGSI-LD broker.
///
/// Needs the release broker: `cargo build --release -p piazza` (the harness
/// builds nothing itself). Traffic goes to 127.0.0.1 only.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Scenarios to run; `all` runs every one, in the order listed.
    #[arg(value_enum, default_values_t = [Scenario::All])]
    scenarios: Vec<Scenario>,
    /// The broker binary [default: `piazza` next to this executable].
    #[arg(long)]
    piazza_bin: Option<PathBuf>,
    /// Keep-alive connections of the load generator (and of the ceiling).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Connections of the query scenarios without a target (query-q-count,
    /// query-rel, geo-near, deep-page, temporal-query). They are CPU-bound:
    /// on 2 cores more connections raise the latency, not the throughput,
    /// and the slowest of them (temporal-query, a fraction of a second each
    /// at 100k entities) would keep the run waiting at each deadline.
    #[arg(long, default_value_t = 4)]
    query_connections: usize,
    /// Measured time of each load scenario.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Unmeasured load before each scenario: opens the connections and warms
    /// the page cache and SQLite's statement cache.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Entities of the query data set (loaded by batch upsert).
    #[arg(long, default_value_t = 100_000)]
    entities: u64,
    /// Entities per batch upsert request.
    #[arg(long, default_value_t = 1000)]
    batch_size: u64,
    /// Entities, in their own tenant, that the update scenarios modify.
    #[arg(long, default_value_t = 10_000)]
    write_set: u64,
    /// Restarts measured by `cold-start` (the median is reported).
    #[arg(long, default_value_t = 3)]
    restarts: usize,
    /// The GTFS feed of `ingest-gtfs` (run from the repository root for the default).
    #[arg(long, default_value = "testdata/gtfs/cap-prato-2016.gtfs.zip")]
    gtfs_feed: PathBuf,
    /// Run the broker on PostgreSQL (`piazza serve --database`): the URL of
    /// an empty database. Footprint's peak RSS is then the broker process's
    /// only, and its bytes PostgreSQL's `pg_database_size`.
    #[arg(long)]
    database: Option<String>,
    /// With `--database`: the broker's `--postgis`.
    #[arg(long, value_enum, default_value_t = PostgisMode::Auto)]
    postgis: PostgisMode,
    /// The MQTT broker of `ingest-mqtt`.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    mqtt_url: String,
    /// Messages published by `ingest-mqtt`.
    #[arg(long, default_value_t = 20_000)]
    mqtt_messages: u64,
    /// A request unanswered after this long counts as an error.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// Attribute instances of the entity of the temporal evolution scenarios.
    #[arg(long, default_value_t = 100_000)]
    temporal_instances: u64,
}

/// The broker's `--postgis` on PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PostgisMode {
    Auto,
    Off,
}

impl PostgisMode {
    fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Scenario {
    /// Every scenario below.
    All,
    /// Load the query data set with POST /entityOperations/upsert (entities/s).
    BatchUpsert,
    /// POST /entities of the template entity (new ids).
    Create,
    /// PATCH /entities/{id}/attrs/{attr} on random entities of the write set.
    PartialUpdate,
    /// PATCH /entities/{id}/attrs (3 attributes) on random entities of the write set.
    UpdateAttrs,
    /// GET /entities/{id} of random entities of the data set.
    Retrieve,
    /// GET /entities?type&q: numeric multi-instance attribute and string equality (page of 20).
    QueryQ,
    /// As query-q with count=true: every candidate must be evaluated.
    QueryQCount,
    /// GET /entities?type&q on the relationship object.
    QueryRel,
    /// GET /entities?type with georel=near;maxDistance==1000.
    GeoNear,
    /// GET /entities?type with an offset within the last 1000 entities.
    DeepPage,
    /// A bare axum route in this process returning a retrieve-sized payload.
    Ceiling,
    /// Peak RSS of the broker (VmHWM), bytes on disk per entity and per
    /// attribute instance of history.
    Footprint,
    /// Stop, restart on the same data, time from spawn to /health 200.
    ColdStart,
    /// `piazza import gtfs` of a real feed (the Prato feed in testdata/): stop_times rows/s.
    IngestGtfs,
    /// Sensor messages through Mosquitto and `serve --mqtt`: messages/s applied.
    IngestMqtt,
    /// Temporal evolution of one entity (plain, temporalValues, aggregated) and a temporal query by type.
    Temporal,
    /// Update → HTTP notification received, one at a time.
    Subscriptions,
}

const WRITE_TENANT: &str = "bench-writes";
const API: &str = "/ngsi-ld/v1";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli))
}

fn expand(wanted: &[Scenario]) -> BTreeSet<Scenario> {
    if wanted.contains(&Scenario::All) {
        Scenario::value_variants()
            .iter()
            .copied()
            .filter(|s| *s != Scenario::All)
            .collect()
    } else {
        wanted.iter().copied().collect()
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let bin = match &cli.piazza_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the harness executable has no folder")?
            .join("piazza"),
    };
    if !bin.is_file() {
        bail!(
            "no broker binary at {}: build it with `cargo build --release -p piazza` or pass --piazza-bin",
            bin.display()
        );
    }
    let scenarios = expand(&cli.scenarios);
    let work = tempfile::Builder::new().prefix("piazza-bench-").tempdir()?;
    let data_dir = work.path().join("data");
    let log = work.path().join("broker.log");
    eprintln!("{}", report::machine());
    eprintln!(
        "broker {}; storage {}; broker log {}",
        bin.display(),
        cli.database.as_deref().map_or_else(
            || data_dir.display().to_string(),
            |_| format!("PostgreSQL (--database, --postgis {})", cli.postgis.name())
        ),
        log.display()
    );
    eprintln!(
        "sizes: {} query entities, batches of {}, write set {}, {} connections ({} for the query scenarios without a target), {} s per scenario after {} s warm-up",
        cli.entities,
        cli.batch_size,
        cli.write_set,
        cli.connections,
        cli.query_connections,
        cli.duration_secs,
        cli.warmup_secs
    );
    let mut bench = Bench {
        cli,
        bin,
        data_dir,
        log,
        broker: None,
        dataset: false,
        write_set: false,
        stored: 0,
        created: Arc::new(AtomicU64::new(0)),
        rows: Vec::new(),
    };
    let result = bench.all(&scenarios).await;
    if let Some(broker) = bench.broker.take() {
        broker.stop()?;
    }
    result?;
    println!();
    println!("{}", report::table(&bench.rows));
    println!("{}", report::targets(&bench.rows, bench.cli.entities));
    eprintln!("load average at the end: {}", report::loadavg());
    Ok(())
}

/// A scenario's measured load, and what the broker used for it.
struct Measured {
    outcome: Outcome,
    /// Requests answered during the warm-up (stored entities, for create).
    warm: u64,
    broker_cpu: Option<BrokerCpu>,
}

impl Measured {
    fn row(&self, name: &str) -> Row {
        let mut row = Row::measured(name, self.outcome.summary());
        row.broker_cpu = self.broker_cpu;
        row
    }
}

struct Bench {
    cli: Cli,
    bin: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    broker: Option<Broker>,
    /// Whether the query data set / the write set are loaded.
    dataset: bool,
    write_set: bool,
    /// Entities stored in the broker, for bytes on disk per entity.
    stored: u64,
    /// Next number of a created entity (shared by all connections).
    created: Arc<AtomicU64>,
    rows: Vec<Row>,
}

impl Bench {
    async fn all(&mut self, scenarios: &BTreeSet<Scenario>) -> anyhow::Result<()> {
        // BTreeSet order is declaration order: loads first, ceiling after the
        // retrieve payload exists, footprint and restarts last.
        for &scenario in scenarios {
            eprintln!("== {scenario:?}");
            match scenario {
                Scenario::All => {}
                Scenario::BatchUpsert => self.load_dataset(true).await?,
                Scenario::Create => self.create().await?,
                Scenario::PartialUpdate | Scenario::UpdateAttrs => self.update(scenario).await?,
                Scenario::Retrieve
                | Scenario::QueryQ
                | Scenario::QueryQCount
                | Scenario::QueryRel
                | Scenario::GeoNear
                | Scenario::DeepPage => self.read(scenario).await?,
                Scenario::Ceiling => self.ceiling().await?,
                Scenario::Footprint => self.footprint().await?,
                Scenario::ColdStart => self.cold_start().await?,
                Scenario::IngestGtfs => self.ingest_gtfs()?,
                Scenario::IngestMqtt => self.ingest_mqtt().await?,
                Scenario::Temporal => self.temporal().await?,
                Scenario::Subscriptions => self.notification_latency().await?,
            }
        }
        Ok(())
    }

    fn shape(&self, duration: Option<Duration>) -> Shape {
        self.shape_with(self.cli.connections, duration)
    }

    fn shape_with(&self, connections: usize, duration: Option<Duration>) -> Shape {
        Shape {
            connections,
            duration,
            timeout: Duration::from_secs(self.cli.timeout_secs),
        }
    }

    async fn broker(&mut self) -> anyhow::Result<std::net::SocketAddr> {
        if let Some(b) = &self.broker {
            return Ok(b.addr);
        }
        let (b, _) = Broker::start(&self.bin, &self.data_dir, &self.log, &self.backend()).await?;
        let addr = b.addr;
        self.broker = Some(b);
        Ok(addr)
    }

    /// The environment choosing the broker's storage backend.
    fn backend(&self) -> Vec<(&str, &str)> {
        match &self.cli.database {
            Some(url) => vec![
                ("PIAZZA_DATABASE_URL", url.as_str()),
                ("PIAZZA_POSTGIS", self.cli.postgis.name()),
            ],
            None => Vec::new(),
        }
    }

    /// Warm-up, then the measured run, of a duration-bounded load.
    async fn timed(&mut self, make: MakeReq, connections: usize) -> anyhow::Result<Measured> {
        let addr = self.broker().await?;
        let mut warm = 0;
        if self.cli.warmup_secs > 0 {
            let shape = self.shape_with(connections, Some(Duration::from_secs(self.cli.warmup_secs)));
            warm = load::drive(addr, shape, make.clone()).await?.latencies.len();
        }
        let shape = self.shape_with(connections, Some(Duration::from_secs(self.cli.duration_secs)));
        let before = self.broker_cpu_time();
        let outcome = load::drive(addr, shape, make).await?;
        if let Some(error) = &outcome.first_error {
            eprintln!("   first error: {error}");
        }
        Ok(self.measured(outcome, warm, before))
    }

    /// The broker's CPU time so far, if it runs (and /proc says).
    fn broker_cpu_time(&self) -> Option<Duration> {
        self.broker.as_ref().and_then(|b| b.cpu_time().ok())
    }

    /// `outcome` with the broker's CPU since `cpu_before`.
    fn measured(&self, outcome: Outcome, warm: u64, cpu_before: Option<Duration>) -> Measured {
        let requests = outcome.latencies.len() + outcome.errors;
        let broker_cpu = cpu_before
            .zip(self.broker_cpu_time())
            .and_then(|(before, after)| BrokerCpu::of(after.saturating_sub(before), requests, outcome.elapsed));
        Measured {
            outcome,
            warm,
            broker_cpu,
        }
    }

    /// Upserts entities `0..count` of a set in batches; count-bounded.
    async fn upsert_set(
        &mut self,
        prefix: &'static str,
        count: u64,
        tenant: Option<&'static str>,
    ) -> anyhow::Result<Measured> {
        let addr = self.broker().await?;
        let batch = self.cli.batch_size.max(1);
        let batches = count.div_ceil(batch);
        let next = Arc::new(AtomicU64::new(0));
        // Bodies are made on the fly (a 1M-entity set would not fit in memory
        // pre-serialised); that is ~1 % of the broker's work per batch.
        let make: MakeReq = Arc::new(move |_rng: &mut Rng| {
            let b = next.fetch_add(1, Ordering::Relaxed);
            if b >= batches {
                return None;
            }
            let entities: Vec<serde_json::Value> = (b * batch..((b + 1) * batch).min(count))
                .map(|n| template::template_entity(&template::entity_id(prefix, n), n))
                .collect();
            let body = serde_json::to_vec(&entities).expect("JSON values serialise");
            let req = Req::with_body(Method::POST, format!("{API}/entityOperations/upsert"), body.into());
            Some(match tenant {
                Some(t) => req.tenant(t),
                None => req,
            })
        });
        let before = self.broker_cpu_time();
        let outcome = load::drive(addr, self.shape(None), make).await?;
        if outcome.errors > 0 {
            bail!(
                "loading {count} entities: {} failed batches; first: {}",
                outcome.errors,
                outcome.first_error.unwrap_or_default()
            );
        }
        self.stored += count;
        let measured = self.measured(outcome, 0, before);
        self.vacuum_analyze().await?;
        Ok(measured)
    }

    /// On PostgreSQL, vacuums and analyzes what was just loaded, as
    /// autovacuum does within a minute or so in a database in use (since
    /// PostgreSQL 13 also after inserts alone). Measured right after a bulk
    /// load, the planner has no statistics and no page is marked all-visible,
    /// so the plans and their reads are not those of a database in service
    /// (BENCHMARKS.md, "PostgreSQL: no JIT"). Not part of any measurement.
    async fn vacuum_analyze(&self) -> anyhow::Result<()> {
        let Some(url) = &self.cli.database else {
            return Ok(());
        };
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .context("connecting to analyse the loaded database")?;
        tokio::spawn(connection);
        client
            .batch_execute("VACUUM ANALYZE")
            .await
            .context("analysing the loaded database")?;
        Ok(())
    }

    async fn load_dataset(&mut self, measured: bool) -> anyhow::Result<()> {
        if self.dataset {
            return Ok(());
        }
        if !measured {
            eprintln!("   loading the query data set ({} entities)", self.cli.entities);
        }
        let load = self.upsert_set("d", self.cli.entities, None).await?;
        self.dataset = true;
        let entities_per_sec = self.cli.entities as f64 / load.outcome.elapsed.as_secs_f64();
        // The broker must really hold them all: a query with count says so.
        let addr = self.broker().await?;
        let (_, headers, _) = load::once(
            addr,
            Req::get(format!("{API}/entities?type={ENTITY_TYPE}&limit=1&count=true")),
        )
        .await?;
        let counted = headers
            .get("ngsild-results-count")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        if counted != self.cli.entities.to_string() {
            bail!("loaded {} entities but the broker counts {counted}", self.cli.entities);
        }
        eprintln!(
            "   {} entities in {:.1} s = {entities_per_sec:.0} entities/s",
            self.cli.entities,
            load.outcome.elapsed.as_secs_f64()
        );
        if measured {
            let mut row = load.row("batch-upsert");
            let per_entity = match load.broker_cpu {
                Some(c) => format!(
                    "; broker CPU {:.0} µs per entity",
                    c.per_request.as_secs_f64() * 1e6 / self.cli.batch_size.max(1) as f64
                ),
                None => String::new(),
            };
            row.note = format!(
                "{entities_per_sec:.0} entities/s ({} × {} entities){per_entity}",
                self.cli.entities.div_ceil(self.cli.batch_size),
                self.cli.batch_size
            );
            row.entities_per_sec = Some(entities_per_sec);
            self.rows.push(row);
        }
        Ok(())
    }

    async fn create(&mut self) -> anyhow::Result<()> {
        let created = self.created.clone();
        let make: MakeReq = Arc::new(move |_rng: &mut Rng| {
            let n = created.fetch_add(1, Ordering::Relaxed);
            let body = serde_json::to_vec(&template::template_entity(&template::entity_id("c", n), n))
                .expect("JSON values serialise");
            Some(Req::with_body(Method::POST, format!("{API}/entities"), body.into()).tenant(WRITE_TENANT))
        });
        let measured = self.timed(make, self.cli.connections).await?;
        self.stored += measured.warm + measured.outcome.latencies.len();
        let mut row = measured.row("create");
        row.note = "template entity, 1 per request".into();
        self.rows.push(row);
        Ok(())
    }

    async fn update(&mut self, scenario: Scenario) -> anyhow::Result<()> {
        if !self.write_set {
            eprintln!("   loading the write set ({} entities)", self.cli.write_set);
            self.upsert_set("w", self.cli.write_set, Some(WRITE_TENANT)).await?;
            self.write_set = true;
        }
        let size = self.cli.write_set.max(1);
        let partial = scenario == Scenario::PartialUpdate;
        let make: MakeReq = Arc::new(move |rng: &mut Rng| {
            let n = rng.below(size);
            let id = template::entity_id("w", n);
            let req = if partial {
                let value = 20.0 + rng.below(4000) as f64 / 100.0;
                let body = serde_json::to_vec(&template::partial_update_body(value, n)).expect("serialise");
                Req::with_body(Method::PATCH, format!("{API}/entities/{id}/attrs/weight"), body.into())
            } else {
                let body = serde_json::to_vec(&template::update_attrs_body(rng, n)).expect("serialise");
                Req::with_body(Method::PATCH, format!("{API}/entities/{id}/attrs"), body.into())
            };
            Some(req.tenant(WRITE_TENANT))
        });
        let measured = self.timed(make, self.cli.connections).await?;
        let (name, note) = if partial {
            ("partial-update", "attrs/weight")
        } else {
            ("update-attrs", "3 attributes")
        };
        let mut row = measured.row(name);
        row.note = format!("{note}, random of {size} entities");
        self.rows.push(row);
        Ok(())
    }

    async fn read(&mut self, scenario: Scenario) -> anyhow::Result<()> {
        self.load_dataset(false).await?;
        let n_entities = self.cli.entities.max(1);
        let base = format!("{API}/entities?type={ENTITY_TYPE}");
        let (name, note, make): (&str, String, MakeReq) = match scenario {
            Scenario::Retrieve => (
                "retrieve",
                format!("random of {n_entities}"),
                Arc::new(move |rng: &mut Rng| {
                    let id = template::entity_id("d", rng.below(n_entities));
                    Some(Req::get(format!("{API}/entities/{id}")))
                }),
            ),
            Scenario::QueryQ | Scenario::QueryQCount => {
                let count = if scenario == Scenario::QueryQCount {
                    "&count=true"
                } else {
                    ""
                };
                let name = if count.is_empty() { "query-q" } else { "query-q-count" };
                (
                    name,
                    format!("q=temperature>39.7..39.9;status==…{count} over {n_entities}"),
                    Arc::new(move |rng: &mut Rng| {
                        let q = template::encode(&template::q_property(rng));
                        Some(Req::get(format!("{base}&q={q}{count}")))
                    }),
                )
            }
            Scenario::QueryRel => (
                "query-rel",
                format!("q=belongs==<1 of {} apiaries> over {n_entities}", template::APIARIES),
                Arc::new(move |rng: &mut Rng| {
                    let q = template::encode(&template::q_relationship(rng));
                    Some(Req::get(format!("{base}&q={q}")))
                }),
            ),
            Scenario::GeoNear => (
                "geo-near",
                format!("near;maxDistance==1000 over {n_entities}"),
                Arc::new(move |rng: &mut Rng| {
                    let (lon0, lat0, dlon, dlat) = template::AREA;
                    let lon = lon0 + rng.unit() * dlon;
                    let lat = lat0 + rng.unit() * dlat;
                    let coordinates = template::encode(&format!("[{lon:.5},{lat:.5}]"));
                    let georel = template::encode("near;maxDistance==1000");
                    Some(Req::get(format!(
                        "{base}&georel={georel}&geometry=Point&coordinates={coordinates}"
                    )))
                }),
            ),
            Scenario::DeepPage => (
                "deep-page",
                format!("limit=20, offset in the last 1000 of {n_entities}"),
                Arc::new(move |rng: &mut Rng| {
                    let offset = n_entities.saturating_sub(20 + rng.below(1000));
                    Some(Req::get(format!("{base}&limit=20&offset={offset}")))
                }),
            ),
            _ => unreachable!("read() is only called for read scenarios"),
        };
        // query-q carries a target, stated for 16 connections: it is
        // measured with the generator's connections, as retrieve is.
        let connections = if matches!(scenario, Scenario::Retrieve | Scenario::QueryQ) {
            self.cli.connections
        } else {
            self.cli.query_connections
        };
        let mut row = self.timed(make, connections).await?.row(name);
        row.note = if connections == self.cli.connections {
            note
        } else {
            format!("{note}; {connections} connections")
        };
        self.rows.push(row);
        Ok(())
    }

    async fn ceiling(&mut self) -> anyhow::Result<()> {
        self.load_dataset(false).await?;
        let addr = self.broker().await?;
        let (status, _, payload) = load::once(
            addr,
            Req::get(format!("{API}/entities/{}", template::entity_id("d", 0))),
        )
        .await?;
        if !status.is_success() {
            bail!("retrieving the sample entity: HTTP {status}");
        }
        let size = payload.len();
        let server = ceiling_server(payload).await?;
        let make: MakeReq = Arc::new(|_rng: &mut Rng| Some(Req::get("/ceiling".into())));
        let shape = self.shape(Some(Duration::from_secs(self.cli.warmup_secs)));
        let ceiling_addr = server.0;
        if self.cli.warmup_secs > 0 {
            load::drive(ceiling_addr, shape, make.clone()).await?;
        }
        let outcome = load::drive(
            ceiling_addr,
            self.shape(Some(Duration::from_secs(self.cli.duration_secs))),
            make,
        )
        .await?;
        server.1.abort();
        let mut row = Row::measured("ceiling", outcome.summary());
        row.note = format!("bare axum route, {size}-byte body");
        row.is_ceiling = true;
        self.rows.push(row);
        Ok(())
    }

    async fn footprint(&mut self) -> anyhow::Result<()> {
        self.load_dataset(false).await?;
        self.broker().await?;
        let broker = self.broker.take().context("broker running")?;
        let rss = broker.peak_rss()?;
        broker.stop()?;
        let mib = |bytes: u64| bytes as f64 / 1048576.0;
        let disk = self.disk_size().await?;
        let (process, store) = if self.cli.database.is_some() {
            (
                " (the broker process)",
                format!("in PostgreSQL ({:.1} MiB, pg_database_size", mib(disk)),
            )
        } else {
            // Taken before the history below grows it: the WAL keeps its
            // high-water size after a checkpoint, so say how much of the total it is.
            let wal = std::fs::metadata(self.data_dir.join("piazza.sqlite-wal")).map_or(0, |m| m.len());
            (
                "",
                format!("on disk ({:.1} MiB of which WAL {:.1} MiB", mib(disk), mib(wal)),
            )
        };
        let per_instance = self.bytes_per_instance(disk).await?;
        let per_entity = disk as f64 / self.stored.max(1) as f64;
        let mut row = Row::unmeasured("footprint");
        row.note = format!(
            "peak RSS {:.0} MiB{process}; {per_entity:.0} B/entity {store}, {} entities); \
             {per_instance:.0} B per attribute instance of history ({FOOTPRINT_INSTANCES} more of one entity)",
            mib(rss),
            self.stored
        );
        row.peak_rss = Some(rss);
        self.rows.push(row);
        Ok(())
    }

    /// What the store grows by per attribute instance of history:
    /// `FOOTPRINT_INSTANCES` observations appended to one entity of a tenant
    /// of their own, the size (`before`) taken with the broker stopped, as
    /// it is again after. An entity's bytes above include its first
    /// instances; this is what each later change of an attribute costs.
    async fn bytes_per_instance(&mut self, before: u64) -> anyhow::Result<f64> {
        self.load_history("bench-footprint", FOOTPRINT_INSTANCES).await?;
        if let Some(broker) = self.broker.take() {
            broker.stop()?;
        }
        let after = self.disk_size().await?;
        Ok(after.saturating_sub(before) as f64 / FOOTPRINT_INSTANCES as f64)
    }

    /// The store's size on disk (the data dir, or PostgreSQL's database).
    async fn disk_size(&self) -> anyhow::Result<u64> {
        match &self.cli.database {
            Some(url) => database_size(url).await,
            None => broker::dir_size(&self.data_dir),
        }
    }

    async fn cold_start(&mut self) -> anyhow::Result<()> {
        self.load_dataset(false).await?;
        if let Some(b) = self.broker.take() {
            b.stop()?;
        }
        let mut times = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..self.cli.restarts.max(1) {
            let (b, took) = Broker::start(&self.bin, &self.data_dir, &self.log, &self.backend()).await?;
            times.push(took);
            rss.push(b.peak_rss().unwrap_or(0));
            b.stop()?;
        }
        times.sort();
        let median = times[times.len() / 2];
        let mut row = Row::unmeasured("cold-start");
        row.note = format!(
            "ready in {:.0} ms (median of {}: {}), {} entities on disk; RSS at ready {:.0} MiB",
            median.as_secs_f64() * 1000.0,
            times.len(),
            times
                .iter()
                .map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0))
                .collect::<Vec<_>>()
                .join("/"),
            self.stored,
            rss.iter().copied().max().unwrap_or(0) as f64 / 1048576.0
        );
        row.restart = Some(median);
        self.rows.push(row);
        Ok(())
    }
}

impl Bench {
    /// Imports the GTFS feed into a data dir of its own with the release
    /// binary (the broker is not involved: imports write the data dir).
    fn ingest_gtfs(&mut self) -> anyhow::Result<()> {
        let feed = &self.cli.gtfs_feed;
        if !feed.is_file() {
            self.rows.push(Row::unavailable(
                "ingest-gtfs",
                &format!(
                    "no feed at {} (run from the repository root or pass --gtfs-feed)",
                    feed.display()
                ),
            ));
            return Ok(());
        }
        let data_dir = self.data_dir.with_file_name("import-data");
        let figures = ingest::gtfs(&self.bin, feed, &data_dir)?;
        let mut row = Row::unmeasured("ingest-gtfs");
        row.note = figures.note();
        row.entities_per_sec = Some(figures.entities_per_sec());
        self.rows.push(row);
        Ok(())
    }
}

/// The ceiling: the same generator against a route that does nothing but
/// return `payload`, served by axum/hyper like the broker.
async fn ceiling_server(payload: Bytes) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::routing::get;
    let router = axum::Router::new().route(
        "/ceiling",
        get(move || {
            let payload = payload.clone();
            async move { ([(hyper::header::CONTENT_TYPE, "application/json")], payload) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            eprintln!("ceiling server: {error}");
        }
    });
    Ok((addr, task))
}

/// Attribute instances the footprint appends to measure history's bytes.
const FOOTPRINT_INSTANCES: u64 = 20_000;

/// The bytes PostgreSQL uses for the database at `url` (tables, indexes, TOAST).
async fn database_size(url: &str) -> anyhow::Result<u64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to measure the database")?;
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}
