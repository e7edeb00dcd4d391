//! The PostgreSQL backend: the same [`Store`] port as the embedded store,
//! on a database that several `piazza` processes can share.
//!
//! Layout (`migrations/`): the tables of the embedded store, each with the
//! tenant in every key. Entities are JSON documents written with the same
//! serde serialisation as on SQLite; `entity_types`, `entity_attrs` and the
//! value tables (`attr_numbers`, `attr_texts`) let SQL narrow queries by
//! type, attribute and `q`'s value bounds, and the pure
//! `EntityQuery::matches` decides the rest.
//!
//! Why a transaction per `edit` call with advisory locks: an [`Edit`] is a
//! closure that can run only once, so a write must never have to be retried
//! after its closure ran. Before reading anything, the call takes a
//! transaction-scoped advisory lock on each `(tenant, entity id)` it will
//! touch, in one global order. That serialises every writer of an entity
//! across processes — including two creates of the same id, where there is
//! no row to lock yet — and rules out deadlocks between batches. Each edit
//! then reads its row `FOR UPDATE`, runs the closure, and writes the entity,
//! its index rows and its history in the same transaction; the reply is sent
//! only after the commit.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod};
use piazza_ngsild::query::EntityQuery;
use piazza_ngsild::temporal::{TemporalEntity, TemporalQuery};
use piazza_ngsild::time::Timestamp;
use piazza_ngsild::{Entity, NgsiError};
use piazza_store::{
    Applied, AttributeSummary, ClusterEvent, Delivery, DeliveryStats, Edit, Page, PendingNotice, QueryResult,
    RawCounts, RawKind, RawPage, RawRecord, ResourceKind, Store, StoreError, StoreResult, StoredContext, TemporalEdit,
    TemporalQueryResult, Tenant, TypeSummary,
};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_postgres::NoTls;

/// The text array a JSON array holds, in order (SQL, for `concat!`): a
/// batch sends each row's lists as JSON, since arrays of arrays do not
/// unnest row by row.
macro_rules! json_text_array {
    ($json:literal) => {
        concat!(
            "ARRAY(SELECT v FROM json_array_elements_text(",
            $json,
            ") WITH ORDINALITY AS e(v, k) ORDER BY k)"
        )
    };
}

mod aggregate;
mod cluster;
mod migrate;
mod outbox;
mod postgis;
mod raw;
mod read;
mod rows;
mod temporal;
pub mod testing;
mod values;
mod write;

pub use postgis::Postgis;

/// Connections kept by one process when the operator does not say.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How a [`PostgresStore`] is opened, beyond its URL.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// Connections kept by this process.
    pub pool_size: usize,
    /// Whether geo-queries may use PostGIS.
    pub postgis: Postgis,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            pool_size: DEFAULT_POOL_SIZE,
            postgis: Postgis::Auto,
        }
    }
}

/// How long a new connection may take before the store gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that can go wrong in this backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid database URL: {0}")]
    Url(String),
    /// The driver's error with its causes (the driver's own message alone
    /// is only "db error" or "error connecting to server").
    #[error("database: {}", explain(.0))]
    Database(tokio_postgres::Error),
    #[error("database connection: {0}")]
    Pool(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the database schema is at version {found}, newer than the {known} this piazza knows: upgrade piazza")]
    SchemaTooNew { found: i32, known: i32 },
    /// A raw export page asked to start after a key no page returned.
    #[error("invalid export cursor '{0}'")]
    InvalidCursor(String),
}

impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Database(error)
    }
}

/// An error and its causes, on one line.
pub fn explain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = inner.source();
    }
    text
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(e) => Self::Database(e),
            other => Self::Pool(other.to_string()),
        }
    }
}

impl From<Error> for StoreError {
    fn from(error: Error) -> Self {
        match error {
            Error::Corrupt(what) => StoreError::Corrupt(what),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Turns JIT compilation off on each new connection. Once a database has
/// statistics, the planner prices a `q` query's plan (a nested loop over a
/// driving list it cannot size) far above `jit_above_cost`, and compiling
/// it took 156 ms of a 208 ms statement that runs in 27 ms without:
/// query-q at 13 req/s where it ran at 80-100 before the first `ANALYZE`
/// (BENCHMARKS.md, "PostgreSQL: no JIT"). Piazza's statements are short;
/// none gains from it. Servers without the setting (before PostgreSQL 11)
/// are left as they are.
fn without_jit() -> Hook {
    Hook::async_fn(|client, _| {
        Box::pin(async move {
            client
                .batch_execute("SELECT set_config('jit', 'off', false) FROM pg_settings WHERE name = 'jit'")
                .await
                .map_err(HookError::Backend)
        })
    })
}

/// The PostgreSQL store: a pool of connections to one database.
pub struct PostgresStore {
    pool: Pool,
    target: String,
    config: tokio_postgres::Config,
    /// Who holds delivery leases through this handle: unique per handle,
    /// and names its process for operators (`pid:<n>/<uuid>`).
    holder: String,
    /// The change events of the processes sharing the database, heard on a
    /// connection of their own once someone asks for them.
    events: OnceLock<(broadcast::Sender<ClusterEvent>, tokio::task::JoinHandle<()>)>,
    /// Whether geo-queries are narrowed with PostGIS (`postgis.rs`), which
    /// also means this process writes shapes with every geo row.
    postgis: bool,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some((_, listener)) = self.events.get() {
            listener.abort();
        }
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/database`, or any
    /// libpq-style key=value string) with `pool_size` connections and
    /// PostGIS where available, then creates or migrates the schema.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self> {
        Self::open(
            url,
            &PostgresConfig {
                pool_size,
                ..PostgresConfig::default()
            },
        )
        .await
    }

    /// Connects to `url` as `options` say, then creates or migrates the
    /// schema and sets PostGIS up (or not).
    pub async fn open(url: &str, options: &PostgresConfig) -> Result<Self> {
        let pool_size = options.pool_size;
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| Error::Url(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("piazza");
        }
        let target = describe(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .post_create(without_jit())
            .build()
            .map_err(|e| Error::Pool(e.to_string()))?;
        let mut client = pool.get().await?;
        migrate::run(&mut client).await?;
        let postgis = postgis::prepare(&mut client, options.postgis).await?;
        Ok(Self {
            pool,
            target,
            config,
            holder: format!("pid:{}/{}", std::process::id(), uuid::Uuid::new_v4()),
            events: OnceLock::new(),
            postgis,
        })
    }

    /// Where the store is, for logs: hosts, ports, database and user,
    /// never the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether geo-queries are narrowed with PostGIS.
    pub fn uses_postgis(&self) -> bool {
        self.postgis
    }

    /// The schema version the database is at (for operators and tests).
    pub async fn schema_version(&self) -> Result<i32> {
        let client = self.pool.get().await?;
        migrate::current(&client).await
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }
}

fn describe(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            // One port given applies to every host, as in libpq.
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    format!(
        "{}/{} as {}",
        hosts.join(","),
        config.get_dbname().unwrap_or("(default)"),
        config.get_user().unwrap_or("(default)")
    )
}

/// Runs one backend call and turns its error into the port's.
async fn port<T>(call: impl std::future::Future<Output = Result<T>>) -> StoreResult<T> {
    call.await.map_err(|error| {
        tracing::error!(error = %error, "postgres store call failed");
        StoreError::from(error)
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn edit(&self, tenant: &Tenant, edits: Vec<Edit>) -> StoreResult<Vec<Result<Applied, NgsiError>>> {
        port(async {
            let mut client = self.client().await?;
            write::apply(&mut client, tenant, edits, self.postgis).await
        })
        .await
    }

    async fn get(&self, tenant: &Tenant, id: &str) -> StoreResult<Option<Entity>> {
        port(async { read::get(&self.client().await?, tenant, id).await }).await
    }

    async fn query(&self, tenant: &Tenant, query: Arc<EntityQuery>, page: Page) -> StoreResult<QueryResult> {
        port(async { read::query(&mut self.client().await?, tenant, &query, page, self.postgis).await }).await
    }

    async fn tenants(&self) -> StoreResult<Vec<Tenant>> {
        port(async { read::tenants(&self.client().await?).await }).await
    }

    async fn tenant_exists(&self, tenant: &Tenant) -> StoreResult<bool> {
        port(async { read::tenant_exists(&self.client().await?, tenant).await }).await
    }

    async fn types(&self, tenant: &Tenant) -> StoreResult<Vec<TypeSummary>> {
        port(async { read::types(&self.client().await?, tenant).await }).await
    }

    async fn attributes(&self, tenant: &Tenant) -> StoreResult<Vec<AttributeSummary>> {
        port(async { read::attributes(&self.client().await?, tenant).await }).await
    }

    async fn put_context(&self, tenant: &Tenant, context: StoredContext) -> StoreResult<()> {
        port(async { write::put_context(&self.client().await?, tenant, &context).await }).await
    }

    async fn get_context(&self, tenant: &Tenant, id: &str) -> StoreResult<Option<StoredContext>> {
        port(async { Ok(read::contexts(&self.client().await?, tenant, Some(id)).await?.pop()) }).await
    }

    async fn list_contexts(&self, tenant: &Tenant) -> StoreResult<Vec<StoredContext>> {
        port(async { read::contexts(&self.client().await?, tenant, None).await }).await
    }

    async fn delete_context(&self, tenant: &Tenant, id: &str) -> StoreResult<bool> {
        port(async { write::delete_context(&self.client().await?, tenant, id).await }).await
    }

    async fn put_resource(
        &self,
        tenant: &Tenant,
        kind: ResourceKind,
        id: &str,
        document: Value,
        create: bool,
    ) -> StoreResult<bool> {
        port(async {
            let mut client = self.client().await?;
            write::put_resource(&mut client, tenant, kind, id, &document, create).await
        })
        .await
    }

    async fn get_resource(&self, tenant: &Tenant, kind: ResourceKind, id: &str) -> StoreResult<Option<Value>> {
        port(async {
            Ok(read::resources(&self.client().await?, tenant, kind, Some(id))
                .await?
                .pop())
        })
        .await
    }

    async fn list_resources(&self, tenant: &Tenant, kind: ResourceKind) -> StoreResult<Vec<Value>> {
        port(async { read::resources(&self.client().await?, tenant, kind, None).await }).await
    }

    async fn delete_resource(&self, tenant: &Tenant, kind: ResourceKind, id: &str) -> StoreResult<bool> {
        port(async { write::delete_resource(&mut self.client().await?, tenant, kind, id).await }).await
    }

    async fn temporal_entity(
        &self,
        tenant: &Tenant,
        id: &str,
        query: &TemporalQuery,
    ) -> StoreResult<Option<TemporalEntity>> {
        port(async { temporal::entity_snapshot(&mut self.client().await?, tenant, id, query).await }).await
    }

    async fn temporal_query(
        &self,
        tenant: &Tenant,
        entities: Arc<EntityQuery>,
        query: &TemporalQuery,
        page: Page,
    ) -> StoreResult<TemporalQueryResult> {
        port(async { temporal::query(&mut self.client().await?, tenant, &entities, query, page).await }).await
    }

    async fn temporal_edit(&self, tenant: &Tenant, edit: TemporalEdit) -> StoreResult<Result<bool, NgsiError>> {
        port(async { temporal::edit(&mut self.client().await?, tenant, edit).await }).await
    }

    async fn purge_history(&self, tenant: &Tenant, horizon: Timestamp, limit: usize) -> StoreResult<u64> {
        port(async { temporal::purge(&self.client().await?, tenant, horizon, limit).await }).await
    }

    async fn pending_notices(
        &self,
        tenant: &Tenant,
        subscription_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<PendingNotice>> {
        port(async { outbox::pending(&self.client().await?, tenant, subscription_id, limit).await }).await
    }

    async fn subscriptions_with_notices(&self) -> StoreResult<Vec<(Tenant, String)>> {
        port(async { outbox::backlog(&self.client().await?).await }).await
    }

    async fn record_delivery(&self, tenant: &Tenant, subscription_id: &str, delivery: Delivery) -> StoreResult<()> {
        port(async { outbox::record(&mut self.client().await?, tenant, subscription_id, &delivery).await }).await
    }

    async fn delivery_stats(&self, tenant: &Tenant, subscription_id: &str) -> StoreResult<DeliveryStats> {
        port(async { outbox::stats(&self.client().await?, tenant, subscription_id).await }).await
    }

    async fn claim_delivery(&self, tenant: &Tenant, subscription_id: &str, lease: Duration) -> StoreResult<bool> {
        port(async { cluster::claim(&self.client().await?, &self.holder, tenant, subscription_id, lease).await }).await
    }

    async fn release_delivery(&self, tenant: &Tenant, subscription_id: &str) -> StoreResult<()> {
        port(async { cluster::release(&self.client().await?, &self.holder, tenant, subscription_id).await }).await
    }

    fn cluster_events(&self) -> Option<broadcast::Receiver<ClusterEvent>> {
        let (sender, _) = self.events.get_or_init(|| cluster::listen(self.config.clone()));
        Some(sender.subscribe())
    }
    async fn raw_counts(&self, tenant: &Tenant) -> StoreResult<RawCounts> {
        port(async { raw::counts(&self.client().await?, tenant).await }).await
    }

    async fn export_page(
        &self,
        tenant: &Tenant,
        kind: RawKind,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<RawPage> {
        port(async { raw::page(&self.client().await?, tenant, kind, after, limit).await }).await
    }

    async fn import_batch(&self, tenant: &Tenant, records: Vec<RawRecord>) -> StoreResult<u64> {
        port(async { raw::write(&mut self.client().await?, tenant, records, self.postgis).await }).await
    }

    async fn clear_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        port(async { raw::clear(&mut self.client().await?, tenant).await }).await
    }
}

#[cfg(test)]
mod tests;
