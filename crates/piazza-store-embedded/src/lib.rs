//! The embedded backend: one SQLite file per data dir (WAL mode), written by
//! one thread with group commit, read by a small pool of connections.
//!
//! Why one writer: SQLite serialises writers anyway; doing it in one thread
//! lets us batch every write that arrives while the previous group is being
//! applied into the next transaction (group commit). A failing edit never
//! leaves half an entity behind, whatever else is in the batch (`group`).
//!
//! Two threads keep the disk off the writer's path: the flusher syncs the
//! WAL and only then answers a group's writers (`flush`), and the
//! checkpointer copies the WAL back into the database file (`checkpoint`).
//!
//! Layout (see `schema.sql`): `entities` holds each entity as JSON (expanded
//! names), `entity_types` and `entity_names` index types and attribute names
//! for type queries and discovery; `contexts` holds @context documents.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use async_trait::async_trait;
use piazza_ngsild::query::EntityQuery;
use piazza_ngsild::temporal::{TemporalEntity, TemporalQuery};
use piazza_ngsild::{time, AttributeKind, Entity, NgsiError};
use piazza_store::{
    Applied, AttributeSummary, ContextKind, Delivery, DeliveryStats, Edit, Page, PendingNotice, QueryResult, RawCounts,
    RawKind, RawPage, RawRecord, ResourceKind, Store, StoreError, StoreResult, StoredContext, TemporalEdit,
    TemporalQueryResult, Tenant, TypeSummary,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::rows::MultiRowInsert;

mod cache;
mod checkpoint;
mod flush;
mod geo;
mod group;
mod outbox;
mod raw;
mod read;
mod rekey;
mod rollups;
mod rows;
mod temporal;
mod tenants;
mod values;

const SCHEMA: &str = include_str!("schema.sql");
/// How many queued write jobs one transaction may absorb.
const MAX_GROUP: usize = 256;
/// A group takes no further job once it holds this many entity edits. Up to
/// 16 batch upserts of 1,000 entities in one transaction dirtied more pages
/// than the writer's page cache holds, which SQLite then spilled to the WAL
/// in the middle of the transaction; one batch or so per transaction loads
/// 7-13 % faster, with a shorter tail (BENCHMARKS.md, "Group size").
/// Single-entity writes never come near it.
const MAX_GROUP_EDITS: usize = 1_000;
/// Read connections, and reads running at once: more wait for one. On a
/// few cores reads are CPU-bound, so more at once would not go faster; and
/// a connection opened per read beyond the pool (as before) paid for the
/// schema, its statements and a cold page cache every time: 8 % of the
/// broker's time under 16 clients of the temporal API.
const READERS: usize = 8;

type EditResults = StoreResult<Vec<Result<Applied, NgsiError>>>;
/// A write that is not an entity edit (contexts), run in the writer's transaction.
type ExecFn = Box<dyn FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send>;

enum WriteJob {
    Edits {
        tenant: Tenant,
        edits: Vec<Edit>,
        reply: oneshot::Sender<EditResults>,
    },
    Exec {
        run: ExecFn,
        reply: oneshot::Sender<StoreResult<()>>,
    },
}

/// The SQLite store.
pub struct EmbeddedStore {
    /// Held for the store's lifetime: one process per data dir.
    _lock: std::fs::File,
    /// `None` once the store is dropped: the writer then finishes its queue.
    writer: Mutex<Option<mpsc::Sender<WriteJob>>>,
    writer_thread: Option<thread::JoinHandle<()>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// `READERS` permits: one per read running.
    read_permits: Arc<tokio::sync::Semaphore>,
    path: PathBuf,
    known_tenants: tenants::KnownTenants,
}

impl Drop for EmbeddedStore {
    /// Closes the readers, then waits for the writer to finish its queue,
    /// checkpoint the WAL into the database and close, so that a store shut
    /// down cleanly leaves no WAL behind (otherwise, depending on which
    /// connection closed last, the WAL stayed at its high-water size, to be
    /// replayed at the next start).
    fn drop(&mut self) {
        if let Ok(mut readers) = self.readers.lock() {
            readers.clear();
        }
        if let Ok(mut writer) = self.writer.lock() {
            writer.take();
        }
        if let Some(thread) = self.writer_thread.take() {
            if thread.join().is_err() {
                tracing::error!("the SQLite writer thread panicked");
            }
        }
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| backend(format!("cannot create {}: {e}", data_dir.display())))?;
        // Two processes on one SQLite file would each think they are the
        // only writer; refuse the second one instead.
        let lock = std::fs::File::create(data_dir.join("piazza.lock"))
            .map_err(|e| backend(format!("cannot create the lock file in {}: {e}", data_dir.display())))?;
        lock.try_lock()
            .map_err(|_| backend(format!("{} is in use by another piazza process", data_dir.display())))?;
        let path = data_dir.join("piazza.sqlite");
        let mut connection = open_connection(&path)?;
        rollups::add_number_column(&connection)?;
        rekey::set_aside(&connection)?;
        connection.execute_batch(SCHEMA).map_err(sql)?;
        // In the order the indexes were added (`user_version` 3, 4, 5, 7, 8, 9):
        // a backfill records its version, which marks every earlier one done.
        rollups::backfill(&mut connection)?;
        geo::backfill(&mut connection)?;
        values::backfill(&mut connection)?;
        rekey::rekey(&mut connection)?;
        backfill_names(&mut connection)?;
        rollups::prune(&mut connection)?;
        // The writer's commits skip the sync; the flusher makes them durable
        // before they are answered (see `flush`). Checkpoints are the
        // checkpointer's (see `checkpoint`). The writer sizes its own page
        // cache (see `cache`).
        connection
            .execute_batch(&format!(
                "PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint={}; PRAGMA journal_size_limit={};",
                checkpoint::WRITER_FALLBACK,
                checkpoint::WAL_KEPT_BYTES
            ))
            .map_err(sql)?;
        let checkpointer = checkpoint::Checkpointer::start(open_connection(&path)?, checkpoint::RESTART_AT)
            .map_err(|e| backend(format!("cannot start the checkpoint thread: {e}")))?;
        let sync =
            flush::wal_sync(&path).map_err(|e| backend(format!("cannot open the WAL of {}: {e}", path.display())))?;
        let flusher =
            flush::Flusher::start(sync).map_err(|e| backend(format!("cannot start the flusher thread: {e}")))?;
        let (sender, receiver) = mpsc::channel();
        let writer_thread = thread::Builder::new()
            .name("piazza-sqlite-writer".into())
            .spawn(move || writer_loop(connection, receiver, flusher, checkpointer))
            .map_err(|e| backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            _lock: lock,
            writer: Mutex::new(Some(sender)),
            writer_thread: Some(writer_thread),
            readers: Arc::new(Mutex::new(Vec::new())),
            read_permits: Arc::new(tokio::sync::Semaphore::new(READERS)),
            path,
            known_tenants: tenants::KnownTenants::default(),
        })
    }

    /// The database file (for operators: `sqlite3 <path>`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, job: WriteJob) -> StoreResult<()> {
        let sender = self.writer.lock().map_err(|_| backend("writer channel poisoned"))?;
        let sender = sender.as_ref().ok_or_else(|| backend("the store is closed"))?;
        sender.send(job).map_err(|_| backend("the writer thread has stopped"))
    }

    async fn exec(
        &self,
        run: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send + 'static,
    ) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteJob::Exec {
            run: Box::new(run),
            reply,
        })?;
        answer.await.map_err(|_| backend("the writer thread dropped a job"))?
    }

    /// Runs a read on a pooled connection, off the async runtime.
    async fn read<T: Send + 'static>(
        &self,
        run: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let permit = self.read_permit().await?;
        let (readers, path) = (self.readers.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            with_reader(&readers, &path, run)
        })
        .await
        .map_err(|e| backend(format!("read task failed: {e}")))?
    }

    /// Runs a read that decodes entities (a query page, one entity) on the
    /// calling worker thread, so that the caller renders and frees them on
    /// the thread that allocated them (with mimalloc, blocks freed from
    /// another thread were 15 % of query-q's time: BENCHMARKS.md, "Query
    /// pages decoded in place"), and no thread is woken for a short read
    /// (BENCHMARKS.md, "Query pages inline"). `run` moves work that may be
    /// long off the runtime's core through the `OffCore` it is given. A
    /// current-thread runtime (tests, CLI commands) cannot block in place:
    /// the read runs on the pool.
    async fn read_page<T: Send + 'static>(
        &self,
        run: impl FnOnce(&Connection, OffCore) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !multi_thread {
            return self.read(move |c| run(c, OffCore { multi_thread })).await;
        }
        let _permit = self.read_permit().await?;
        with_reader(&self.readers, &self.path, |c| run(c, OffCore { multi_thread }))
    }

    /// One of the `READERS` reads that may run at once.
    async fn read_permit(&self) -> StoreResult<tokio::sync::OwnedSemaphorePermit> {
        self.read_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| backend("the store is closed"))
    }
}

/// How a read running on a runtime worker moves work off the worker's core.
/// A short query page runs inline: handing the core to another thread
/// (`block_in_place`) for every request cost a thread wake-up and a
/// context switch each, 10-25 % of a short query's CPU (BENCHMARKS.md,
/// "Query pages inline"). Work that may be long goes through `run`, so that
/// it never holds up the runtime's other tasks for long.
#[derive(Clone, Copy)]
pub(crate) struct OffCore {
    multi_thread: bool,
}

impl OffCore {
    /// `work`, with the worker's core handed to another thread meanwhile
    /// where there is one to hand over.
    pub(crate) fn run<R>(self, work: impl FnOnce() -> R) -> R {
        if self.multi_thread {
            tokio::task::block_in_place(work)
        } else {
            work()
        }
    }
}

/// Runs `run` on a connection from the pool (or a new one), then returns
/// the connection to the pool.
fn with_reader<T>(
    readers: &Mutex<Vec<Connection>>,
    path: &Path,
    run: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    let pooled = readers.lock().map_err(|_| backend("reader pool poisoned"))?.pop();
    let connection = match pooled {
        Some(c) => c,
        None => open_connection(path)?,
    };
    let result = run(&connection);
    if let Ok(mut pool) = readers.lock() {
        if pool.len() < READERS {
            pool.push(connection);
        }
    }
    result
}

/// `PRAGMA user_version`: the last index added to the schema that this data
/// dir has filled (each module names its version).
pub(crate) fn filled_to(connection: &Connection) -> StoreResult<i64> {
    connection
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql)
}

/// Runs `index` over every stored entity, in one transaction, for a data
/// dir whose `user_version` is below `version` (written before that index
/// existed), then records `version`: how an index added to the schema is
/// filled once.
pub(crate) fn backfill_entities(
    connection: &mut Connection,
    version: i64,
    what: &str,
    mut index: impl FnMut(&Transaction<'_>, i64, &Tenant, &Entity) -> rusqlite::Result<()>,
) -> StoreResult<()> {
    if filled_to(connection)? >= version {
        return Ok(());
    }
    let transaction = connection.transaction().map_err(sql)?;
    let mut indexed = 0u64;
    {
        let mut rows = transaction
            .prepare("SELECT eid, tenant, doc FROM entities")
            .map_err(sql)?;
        let mut rows = rows.query([]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let (eid, tenant, doc): (i64, String, String) = (
                row.get(0).map_err(sql)?,
                row.get(1).map_err(sql)?,
                row.get(2).map_err(sql)?,
            );
            if indexed == 0 {
                // Said before the work: the server is not ready until it
                // ends (the value indexes of 100,000 entities took 3.4 s,
                // BENCHMARKS.md).
                tracing::info!("building {what} for an older data dir, once");
            }
            let tenant = Tenant::parse(&tenant).map_err(|e| StoreError::Corrupt(e.detail))?;
            index(&transaction, eid, &tenant, &decode(&doc)?).map_err(sql)?;
            indexed += 1;
        }
    }
    transaction.pragma_update(None, "user_version", version).map_err(sql)?;
    transaction.commit().map_err(sql)?;
    if indexed > 0 {
        tracing::info!(entities = indexed, "{what} built for an older data dir");
    }
    Ok(())
}

/// Prepared statements kept per connection: more than any one operation
/// uses, so none is compiled twice while the connection lives.
const STATEMENT_CACHE: usize = 256;

fn open_connection(path: &Path) -> StoreResult<Connection> {
    // Through the VFS that writes a transaction's WAL frames in one call
    // (see `piazza_wal_vfs`): the writer's system calls were a quarter of
    // its time per create.
    let vfs = piazza_wal_vfs::register().map_err(|e| backend(e.to_string()))?;
    let connection = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs).map_err(sql)?;
    // FULL: the commits made before the writer starts (schema, backfills)
    // are synced by SQLite itself; the writer then switches to NORMAL and
    // leaves the sync to the flusher.
    // temp_store=MEMORY keeps the statement sub-journal of each edit's
    // SAVEPOINT (and any sorter) in memory instead of a temporary file; the
    // savepoints stay, so an edit still commits whole or not at all.
    // cache_size: the readers' (the writer sets its own).
    connection
        .execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000; \
             PRAGMA temp_store=MEMORY; PRAGMA cache_size=-{};",
            cache::READER_CACHE_KIB
        ))
        .map_err(sql)?;
    let journal: String = connection
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(sql)?;
    if !journal.eq_ignore_ascii_case("wal") {
        // The flusher syncs the WAL: without one, nothing would be synced.
        return Err(backend(format!(
            "{} cannot use a write-ahead log (journal mode {journal})",
            path.display()
        )));
    }
    // `rarray`: how a query hands SQLite the eids its value index selected.
    rusqlite::vtab::array::load_module(&connection).map_err(sql)?;
    // One entity write runs more distinct statements (entity row, names,
    // value, spatial and time indexes, history, rollups) than rusqlite's
    // default of 16 cached ones: they evicted each other and every write
    // compiled its SQL again (a third of batch upsert's time,
    // BENCHMARKS.md 2026-12-06).
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(connection)
}

fn writer_loop(
    mut connection: Connection,
    receiver: mpsc::Receiver<WriteJob>,
    flusher: flush::Flusher,
    mut checkpointer: checkpoint::Checkpointer,
) {
    let mut cache = cache::WriterCache::default();
    cache.after_commit(&connection);
    while let Ok(first) = receiver.recv() {
        let group = take_group(first, &receiver);
        if flusher.is_broken() {
            fail_group(group, flush::BROKEN);
            continue;
        }
        flusher.answer_when_durable(group::run_group(&mut connection, group));
        // Outside any transaction, as a WAL restart needs.
        checkpointer.after_commit();
        cache.after_commit(&connection);
    }
    // Every write answered, synced, before the store goes away; the last
    // checkpoint below needs the checkpointer's connection closed.
    flusher.finish();
    checkpointer.finish();
    // The store is closing: fold the WAL into the database file.
    if let Err(e) = connection.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(error = %e, "final WAL checkpoint failed; the WAL will be replayed at the next start");
    }
}

/// `first` and the jobs queued behind it, as many as one transaction takes.
fn take_group(first: WriteJob, receiver: &mpsc::Receiver<WriteJob>) -> Vec<WriteJob> {
    let mut edits = first.edits();
    let mut group = vec![first];
    while group.len() < MAX_GROUP && edits < MAX_GROUP_EDITS {
        match receiver.try_recv() {
            Ok(job) => {
                edits += job.edits();
                group.push(job);
            }
            Err(_) => break,
        }
    }
    group
}

impl WriteJob {
    /// The entity edits the job holds.
    fn edits(&self) -> usize {
        match self {
            WriteJob::Edits { edits, .. } => edits.len(),
            WriteJob::Exec { .. } => 0,
        }
    }
}

/// A job's answer, held until its transaction is durable.
enum Pending {
    Edits(oneshot::Sender<EditResults>, Vec<Result<Applied, NgsiError>>),
    Exec(oneshot::Sender<StoreResult<()>>, StoreResult<()>),
}

impl Pending {
    fn answer(self) {
        // A dropped receiver is a client that went away: nothing to tell.
        match self {
            Pending::Edits(reply, results) => drop(reply.send(Ok(results))),
            Pending::Exec(reply, result) => drop(reply.send(result)),
        }
    }

    fn fail(self, why: &str) {
        match self {
            Pending::Edits(reply, _) => drop(reply.send(Err(backend(why)))),
            Pending::Exec(reply, _) => drop(reply.send(Err(backend(why)))),
        }
    }
}

fn fail_group(group: Vec<WriteJob>, why: &str) {
    tracing::error!(error = why, "write group failed");
    for job in group {
        match job {
            WriteJob::Edits { reply, .. } => drop(reply.send(Err(backend(why)))),
            WriteJob::Exec { reply, .. } => drop(reply.send(Err(backend(why)))),
        }
    }
}

/// The stored row of an entity: its key, and the entity unless it expired
/// (an expired entity is absent, and its id may be created afresh).
fn load(transaction: &Transaction<'_>, tenant: &Tenant, id: &str) -> StoreResult<Option<(i64, Option<Entity>)>> {
    let row: Option<(i64, String)> = transaction
        .prepare_cached("SELECT eid, doc FROM entities WHERE tenant = ?1 AND id = ?2")
        .and_then(|mut s| {
            s.query_row(params![tenant.name(), id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(sql)?;
    row.map(|(eid, doc)| Ok((eid, decode(&doc)?.live(time::now()))))
        .transpose()
}

/// Writes an entity and its index rows; `before` is what the row held, as
/// far as it is known (an expired entity's rows are replaced whole).
fn put(
    transaction: &Transaction<'_>,
    tenant: &Tenant,
    eid: Option<i64>,
    before: Option<&Entity>,
    entity: &Entity,
    keys: &mut values::NameKeys,
) -> rusqlite::Result<()> {
    let doc =
        piazza_ngsild::entity::encode(entity).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let eid = match eid {
        Some(eid) => {
            transaction
                .prepare_cached("UPDATE entities SET doc = ?1 WHERE eid = ?2")?
                .execute(params![doc, eid])?;
            if before.is_none() {
                // An expired entity created afresh: its rows are still there.
                clear_index_rows(transaction, eid)?;
            }
            eid
        }
        None => {
            keys.ensure_tenant(transaction, tenant)?;
            transaction
                .prepare_cached("INSERT INTO entities(tenant, id, doc) VALUES (?1, ?2, ?3)")?
                .execute(params![tenant.name(), entity.id, doc])?;
            transaction.last_insert_rowid()
        }
    };
    reindex_names(transaction, tenant, eid, before, entity, keys)?;
    geo::reindex(transaction, eid, before, Some(entity))?;
    values::reindex(transaction, tenant, eid, before, Some(entity), keys)
}

/// Brings `entity_types` and `entity_names` from `before`'s rows to
/// `after`'s, writing only the difference: an update of attribute values
/// (most writes) touches none of their rows, where rewriting them all cost
/// four b-trees and a page per attribute name.
fn reindex_names(
    transaction: &Transaction<'_>,
    tenant: &Tenant,
    eid: i64,
    before: Option<&Entity>,
    after: &Entity,
    keys: &mut values::NameKeys,
) -> rusqlite::Result<()> {
    if before.is_some_and(|before| same_names(before, after)) {
        return Ok(());
    }
    let (old, new) = (before.map(type_names).unwrap_or_default(), type_names(after));
    for gone in old.difference(&new) {
        transaction
            .prepare_cached("DELETE FROM entity_types WHERE eid = ?1 AND type = ?2")?
            .execute(params![eid, gone])?;
    }
    for added in new.difference(&old) {
        transaction
            .prepare_cached("INSERT OR IGNORE INTO entity_types(eid, tenant, type) VALUES (?1, ?2, ?3)")?
            .execute(params![eid, tenant.name(), added])?;
    }
    let (old, new) = (before.map(attribute_kinds).unwrap_or_default(), attribute_kinds(after));
    for (name, kind) in old.difference(&new) {
        if let Some(key) = keys.get(transaction, tenant, name, false)? {
            transaction
                .prepare_cached("DELETE FROM entity_names WHERE eid = ?1 AND key = ?2 AND kind = ?3")?
                .execute(params![eid, key, kind])?;
        }
    }
    static INSERT_NAMES: MultiRowInsert =
        MultiRowInsert::new("INSERT OR IGNORE INTO entity_names(eid, key, kind) VALUES", 3);
    let added = new
        .difference(&old)
        .map(|(name, kind)| Ok((eid, keys.get(transaction, tenant, name, true)?, *kind)))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    INSERT_NAMES.run(transaction, &added, |(eid, key, kind)| [eid, key, kind])?;
    Ok(())
}

/// `PRAGMA user_version` from which `entity_names` is complete.
const NAMES_VERSION: i64 = 8;

/// Builds `entity_names` for a data dir written before it (its names were
/// kept by text in `entity_attrs`, dropped by the schema).
fn backfill_names(connection: &mut Connection) -> StoreResult<()> {
    // One transaction: the names' numbers hold throughout.
    let mut keys = values::NameKeys::default();
    backfill_entities(
        connection,
        NAMES_VERSION,
        "the attribute name index",
        |tx, eid, tenant, entity| reindex_names(tx, tenant, eid, None, entity, &mut keys),
    )
}

/// Whether two versions of an entity have the same types and the same
/// attributes with the same kinds, in the same order: what an update of
/// values keeps, checked without building the sets `reindex_names` diffs
/// (another order takes the long way, to the same rows).
fn same_names(before: &Entity, after: &Entity) -> bool {
    before.types == after.types
        && before.attributes.len() == after.attributes.len()
        && before
            .attributes
            .iter()
            .zip(&after.attributes)
            .all(|((old_name, old), (new_name, new))| {
                old_name == new_name && old.len() == new.len() && old.iter().zip(new).all(|(a, b)| a.kind == b.kind)
            })
}

fn type_names(entity: &Entity) -> BTreeSet<&str> {
    entity.types.iter().map(String::as_str).collect()
}

/// The `entity_names` rows of an entity: each attribute name with each
/// kind its instances have.
fn attribute_kinds(entity: &Entity) -> BTreeSet<(&str, &'static str)> {
    entity
        .attributes
        .iter()
        .flat_map(|(name, instances)| instances.iter().map(move |i| (name.as_str(), i.kind.name())))
        .collect()
}

/// Drops every index row of row `eid`: types, names, spatial keys, values.
fn clear_index_rows(transaction: &Transaction<'_>, eid: i64) -> rusqlite::Result<()> {
    transaction
        .prepare_cached("DELETE FROM entity_types WHERE eid = ?1")?
        .execute([eid])?;
    transaction
        .prepare_cached("DELETE FROM entity_names WHERE eid = ?1")?
        .execute([eid])?;
    geo::clear(transaction, eid)?;
    values::clear_entity(transaction, eid)
}

fn delete(transaction: &Transaction<'_>, eid: i64) -> rusqlite::Result<()> {
    clear_index_rows(transaction, eid)?;
    transaction
        .prepare_cached("DELETE FROM entities WHERE eid = ?1")?
        .execute([eid])?;
    Ok(())
}

fn decode(doc: &str) -> StoreResult<Entity> {
    piazza_ngsild::entity::decode(doc).map_err(|e| StoreError::Corrupt(format!("entity document: {e}")))
}

/// `doc` with only the attributes in `keep` (see `decode_keeping`).
fn decode_keeping(doc: &str, keep: &[String]) -> StoreResult<Entity> {
    piazza_ngsild::entity::decode_keeping(doc, keep).map_err(|e| StoreError::Corrupt(format!("entity document: {e}")))
}

fn sql(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

fn backend(why: impl Into<String>) -> StoreError {
    StoreError::Backend(why.into())
}

fn kind_of(name: &str) -> StoreResult<AttributeKind> {
    AttributeKind::from_name(name).ok_or_else(|| StoreError::Corrupt(format!("unknown attribute kind {name}")))
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn edit(&self, tenant: &Tenant, edits: Vec<Edit>) -> StoreResult<Vec<Result<Applied, NgsiError>>> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteJob::Edits {
            tenant: tenant.clone(),
            edits,
            reply,
        })?;
        answer.await.map_err(|_| backend("the writer thread dropped a job"))?
    }

    async fn get(&self, tenant: &Tenant, id: &str) -> StoreResult<Option<Entity>> {
        let (tenant, id) = (tenant.clone(), id.to_owned());
        // One index seek and one document: short enough to run inline.
        self.read_page(move |c, _| read::get(c, &tenant, &id)).await
    }

    async fn query(&self, tenant: &Tenant, query: Arc<EntityQuery>, page: Page) -> StoreResult<QueryResult> {
        let tenant = tenant.clone();
        self.read_page(move |c, off_core| read::query(c, &tenant, &query, page, off_core))
            .await
    }

    async fn tenants(&self) -> StoreResult<Vec<Tenant>> {
        self.read(|c| {
            let mut statement = c
                .prepare_cached("SELECT name FROM tenants ORDER BY name")
                .map_err(sql)?;
            let names = statement
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(sql)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql)?;
            // The default tenant is always there, written to or not.
            let mut tenants = vec![Tenant::default()];
            for name in names.iter().filter(|n| !n.is_empty()) {
                tenants.push(Tenant::parse(name).map_err(|e| StoreError::Corrupt(e.detail))?);
            }
            Ok(tenants)
        })
        .await
    }

    async fn tenant_exists(&self, tenant: &Tenant) -> StoreResult<bool> {
        if self.known_tenants.contains(tenant) {
            return Ok(true);
        }
        let ticket = self.known_tenants.ticket();
        let name = tenant.clone();
        let exists = self
            .read(move |c| {
                c.prepare_cached("SELECT 1 FROM tenants WHERE name = ?1")
                    .and_then(|mut s| s.exists([name.name()]))
                    .map_err(sql)
            })
            .await?;
        if exists {
            self.known_tenants.remember(tenant, ticket);
        }
        Ok(exists)
    }

    async fn types(&self, tenant: &Tenant) -> StoreResult<Vec<TypeSummary>> {
        let tenant = tenant.clone();
        self.read(move |c| read::types(c, &tenant)).await
    }

    async fn attributes(&self, tenant: &Tenant) -> StoreResult<Vec<AttributeSummary>> {
        let tenant = tenant.clone();
        self.read(move |c| read::attributes(c, &tenant)).await
    }

    async fn put_context(&self, tenant: &Tenant, context: StoredContext) -> StoreResult<()> {
        let tenant = tenant.clone();
        self.exec(move |tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO contexts(tenant, id, url, kind, document, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                tenant.name(),
                context.id,
                context.url,
                context.kind.name(),
                context.document.to_string(),
                piazza_ngsild::time::format(&context.created_at)
            ])?;
            Ok(())
        })
        .await
    }

    async fn get_context(&self, tenant: &Tenant, id: &str) -> StoreResult<Option<StoredContext>> {
        let (tenant, id) = (tenant.clone(), id.to_owned());
        self.read(move |c| Ok(read::contexts(c, &tenant, Some(&id))?.pop()))
            .await
    }

    async fn list_contexts(&self, tenant: &Tenant) -> StoreResult<Vec<StoredContext>> {
        let tenant = tenant.clone();
        self.read(move |c| read::contexts(c, &tenant, None)).await
    }

    async fn put_resource(
        &self,
        tenant: &Tenant,
        kind: ResourceKind,
        id: &str,
        document: Value,
        create: bool,
    ) -> StoreResult<bool> {
        let (tenant, id) = (tenant.clone(), id.to_owned());
        self.exec_flag(move |tx| {
            let text = document.to_string();
            let changed = if create {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO resources(tenant, kind, id, document) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![tenant.name(), kind.name(), id, text])?
            } else {
                tx.prepare_cached("UPDATE resources SET document = ?4 WHERE tenant = ?1 AND kind = ?2 AND id = ?3")?
                    .execute(params![tenant.name(), kind.name(), id, text])?
            };
            if changed > 0 {
                tenants::ensure(tx, &tenant)?;
            }
            Ok(changed > 0)
        })
        .await
    }

    async fn get_resource(&self, tenant: &Tenant, kind: ResourceKind, id: &str) -> StoreResult<Option<Value>> {
        let (tenant, id) = (tenant.clone(), id.to_owned());
        self.read(move |c| Ok(read::resources(c, &tenant, kind, Some(&id))?.pop()))
            .await
    }

    async fn list_resources(&self, tenant: &Tenant, kind: ResourceKind) -> StoreResult<Vec<Value>> {
        let tenant = tenant.clone();
        self.read(move |c| read::resources(c, &tenant, kind, None)).await
    }

    async fn delete_resource(&self, tenant: &Tenant, kind: ResourceKind, id: &str) -> StoreResult<bool> {
        let (tenant, id) = (tenant.clone(), id.to_owned());
        self.exec_flag(move |tx| {
            let n = tx
                .prepare_cached("DELETE FROM resources WHERE tenant = ?1 AND kind = ?2 AND id = ?3")?
                .execute(params![tenant.name(), kind.name(), id])?;
            if kind == ResourceKind::Subscription {
                outbox::forget(tx, &tenant, &id)?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn delete_context(&self, tenant: &Tenant, id: &str) -> StoreResult<bool> {
        let (tenant, id) = (tenant.clone(), id.to_owned());
        self.exec_flag(move |tx| {
            let n = tx
                .prepare_cached("DELETE FROM contexts WHERE tenant = ?1 AND id = ?2")?
                .execute(params![tenant.name(), id])?;
            Ok(n > 0)
        })
        .await
    }
    async fn temporal_entity(
        &self,
        tenant: &Tenant,
        id: &str,
        query: &TemporalQuery,
    ) -> StoreResult<Option<TemporalEntity>> {
        let (tenant, id, query) = (tenant.clone(), id.to_owned(), query.clone());
        self.read_rolling_up(move |c, to_roll_up| temporal::entity(c, &tenant, &id, &query, to_roll_up))
            .await
    }

    async fn temporal_query(
        &self,
        tenant: &Tenant,
        entities: Arc<EntityQuery>,
        query: &TemporalQuery,
        page: Page,
    ) -> StoreResult<TemporalQueryResult> {
        let (tenant, query) = (tenant.clone(), query.clone());
        self.read_rolling_up(move |c, to_roll_up| temporal::query(c, &tenant, &entities, &query, page, to_roll_up))
            .await
    }

    async fn temporal_edit(&self, tenant: &Tenant, edit: TemporalEdit) -> StoreResult<Result<bool, NgsiError>> {
        self.temporal_edit_impl(tenant, edit).await
    }

    async fn purge_history(&self, tenant: &Tenant, horizon: time::Timestamp, limit: usize) -> StoreResult<u64> {
        let tenant = tenant.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let horizon = time::format(&horizon);
        let purged = Arc::new(Mutex::new(0u64));
        let count = purged.clone();
        self.exec(move |tx| {
            // Instances are numbered in recording order, so the oldest come
            // first: the scan goes by row id (`+teid`: not through the time
            // index, whose order would have to be sorted) and stops at `limit`.
            let n = tx
                .prepare_cached(
                    "DELETE FROM attr_instances WHERE iid IN (SELECT iid FROM attr_instances \
                     WHERE +teid IN (SELECT teid FROM temporal_entities WHERE tenant = ?1) \
                     AND created_at < ?2 ORDER BY iid LIMIT ?3)",
                )?
                .execute(params![tenant.name(), horizon, limit])?;
            if let Ok(mut c) = count.lock() {
                *c = n as u64;
            }
            Ok(())
        })
        .await?;
        let n = purged.lock().map(|c| *c).unwrap_or(0);
        Ok(n)
    }

    async fn pending_notices(
        &self,
        tenant: &Tenant,
        subscription_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<PendingNotice>> {
        let (tenant, id) = (tenant.clone(), subscription_id.to_owned());
        self.read(move |c| outbox::pending(c, &tenant, &id, limit)).await
    }

    async fn subscriptions_with_notices(&self) -> StoreResult<Vec<(Tenant, String)>> {
        self.read(outbox::backlog).await
    }

    async fn record_delivery(&self, tenant: &Tenant, subscription_id: &str, delivery: Delivery) -> StoreResult<()> {
        let (tenant, id) = (tenant.clone(), subscription_id.to_owned());
        self.exec(move |tx| outbox::record(tx, &tenant, &id, &delivery)).await
    }

    async fn delivery_stats(&self, tenant: &Tenant, subscription_id: &str) -> StoreResult<DeliveryStats> {
        let (tenant, id) = (tenant.clone(), subscription_id.to_owned());
        self.read(move |c| outbox::stats(c, &tenant, &id)).await
    }

    async fn raw_counts(&self, tenant: &Tenant) -> StoreResult<RawCounts> {
        let tenant = tenant.clone();
        self.read(move |c| raw::counts(c, &tenant)).await
    }

    async fn export_page(
        &self,
        tenant: &Tenant,
        kind: RawKind,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<RawPage> {
        let (tenant, after) = (tenant.clone(), after.map(str::to_owned));
        self.read(move |c| raw::page(c, &tenant, kind, after.as_deref(), limit))
            .await
    }

    async fn import_batch(&self, tenant: &Tenant, records: Vec<RawRecord>) -> StoreResult<u64> {
        let tenant = tenant.clone();
        self.exec_returning(move |tx| raw::write(tx, &tenant, records)).await
    }

    async fn clear_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        let cleared = tenant.clone();
        let result = self.exec(move |tx| raw::clear(tx, &cleared)).await;
        // Even when the answer is an error: the clear may have committed.
        self.known_tenants.forget(tenant);
        result
    }
}

impl EmbeddedStore {
    /// Runs a history read. When it met aggregations over long histories
    /// that have no rollups yet (and left them out), has the writer roll
    /// them up, then reads again in full: from the new rollups or, should
    /// rolling up have failed, from the instances.
    async fn read_rolling_up<T: Send + 'static>(
        &self,
        run: impl Fn(&Connection, Option<&mut Vec<temporal::Series>>) -> StoreResult<T> + Send + Sync + 'static,
    ) -> StoreResult<T> {
        let run = Arc::new(run);
        let first = run.clone();
        let (answer, to_roll_up) = self
            .read(move |c| {
                let mut to_roll_up = Vec::new();
                Ok((first(c, Some(&mut to_roll_up))?, to_roll_up))
            })
            .await?;
        if to_roll_up.is_empty() {
            return Ok(answer);
        }
        let rolled = self
            .exec(move |tx| {
                to_roll_up
                    .into_iter()
                    .try_for_each(|series| rollups::roll_up(tx, series))
            })
            .await;
        if let Err(e) = rolled {
            tracing::warn!(error = %e, "cannot roll up a long history; it is aggregated from its instances");
        }
        self.read(move |c| run(c, None)).await
    }

    /// Runs a write that answers a value, on the writer.
    async fn exec_returning<T: Send + 'static>(
        &self,
        run: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let slot: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
        let answer = slot.clone();
        self.exec(move |tx| {
            let value = run(tx)?;
            if let Ok(mut s) = answer.lock() {
                *s = Some(value);
            }
            Ok(())
        })
        .await?;
        let value = slot.lock().ok().and_then(|mut s| s.take());
        value.ok_or_else(|| backend("the writer produced no answer"))
    }

    /// Runs a write whose answer is one flag (rows changed), on the writer.
    async fn exec_flag(
        &self,
        run: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<bool> + Send + 'static,
    ) -> StoreResult<bool> {
        let flag = Arc::new(Mutex::new(false));
        let answer = flag.clone();
        self.exec(move |tx| {
            let value = run(tx)?;
            if let Ok(mut f) = answer.lock() {
                *f = value;
            }
            Ok(())
        })
        .await?;
        let value = flag.lock().map(|f| *f).unwrap_or(false);
        Ok(value)
    }

    async fn temporal_edit_impl(&self, tenant: &Tenant, edit: TemporalEdit) -> StoreResult<Result<bool, NgsiError>> {
        let tenant = tenant.clone();
        let outcome: Arc<Mutex<Option<Result<bool, NgsiError>>>> = Arc::new(Mutex::new(None));
        let slot = outcome.clone();
        let ran = self
            .exec(move |tx| {
                let result = temporal::edit(tx, &tenant, edit);
                let (keep, back) = match result {
                    Ok(created) => (Ok(created), Ok(())),
                    Err(temporal::EditFailure::Ngsi(e)) => (Err(e), Err(rusqlite::Error::InvalidQuery)),
                    Err(temporal::EditFailure::Sql(e)) => return Err(e),
                };
                if let Ok(mut s) = slot.lock() {
                    *s = Some(keep);
                }
                back
            })
            .await;
        let decided = outcome.lock().ok().and_then(|mut s| s.take());
        match (decided, ran) {
            // A refused edit rolled back its savepoint on purpose.
            (Some(result), _) => Ok(result),
            (None, Err(e)) => Err(e),
            (None, Ok(())) => Err(backend("the temporal edit produced no outcome")),
        }
    }
}

fn context_kind(name: &str) -> StoreResult<ContextKind> {
    ContextKind::from_name(name).ok_or_else(|| StoreError::Corrupt(format!("unknown context kind {name}")))
}

#[cfg(test)]
mod tests {
    use piazza_ngsild::entity::{parse_entity, ParseOptions};
    use piazza_ngsild::update::UpdateOutcome;
    use piazza_ngsild::ActiveContext;
    use piazza_store::{Edit, EditOutcome, Store};
    use serde_json::json;

    /// An edit that stores `body` (core context) as the whole entity.
    pub(crate) fn replace_with(body: serde_json::Value) -> Edit {
        let mut entity = parse_entity(&body, &ActiveContext::core(), ParseOptions::CREATE).expect("valid entity");
        entity.stamp_new(piazza_ngsild::time::now());
        Edit::new(entity.id.clone(), move |_| {
            Ok(EditOutcome::put(entity, UpdateOutcome::default()))
        })
    }

    /// The `entity_types` and `entity_names` rows, short names, sorted.
    fn name_rows(path: &std::path::Path) -> (Vec<String>, Vec<String>) {
        let connection = rusqlite::Connection::open(path).expect("open");
        let short = |s: String| s.rsplit('/').next().unwrap_or_default().to_owned();
        let collect = |sql: &str| -> Vec<String> {
            let mut statement = connection.prepare(sql).expect("prepare");
            let mut rows: Vec<String> = statement
                .query_map([], |r| r.get::<_, String>(0))
                .expect("query")
                .map(|r| short(r.expect("row")))
                .collect();
            rows.sort();
            rows
        };
        (
            collect("SELECT type FROM entity_types"),
            collect("SELECT n.name || '|' || a.kind FROM entity_names a JOIN value_names n ON n.key = a.key"),
        )
    }

    #[tokio::test]
    async fn an_older_data_dir_gets_its_attribute_name_index_at_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = super::EmbeddedStore::open(dir.path()).expect("open store");
        let tenants = [
            piazza_store::Tenant::default(),
            piazza_store::Tenant::parse("acme").expect("tenant"),
        ];
        let bodies = [
            json!({"id": "urn:t:1", "type": "A", "p": {"type": "Property", "value": 1},
                   "q": {"type": "Relationship", "object": "urn:x:1"}}),
            json!({"id": "urn:t:2", "type": ["A", "B"], "p": [{"type": "Property", "value": 2},
                   {"type": "Relationship", "object": "urn:x:3", "datasetId": "urn:d:1"}]}),
        ];
        // The second tenant has only the second entity.
        store
            .edit(&tenants[0], bodies.iter().cloned().map(replace_with).collect())
            .await
            .expect("edit");
        store
            .edit(&tenants[1], vec![replace_with(bodies[1].clone())])
            .await
            .expect("edit");
        let mut discovery = Vec::new();
        for tenant in &tenants {
            discovery.push(format!(
                "{:?} {:?}",
                store.types(tenant).await.expect("types"),
                store.attributes(tenant).await.expect("attributes")
            ));
        }
        assert_ne!(discovery[0], discovery[1]);
        let path = store.path().to_owned();
        let rows = name_rows(&path);
        drop(store);

        let old = rusqlite::Connection::open(&path).expect("sqlite");
        old.execute_batch(
            "DELETE FROM entity_names; \
             CREATE TABLE entity_attrs (eid INTEGER NOT NULL, tenant TEXT NOT NULL, name TEXT NOT NULL, \
               kind TEXT NOT NULL, PRIMARY KEY (eid, name, kind)) WITHOUT ROWID; \
             PRAGMA user_version = 7;",
        )
        .expect("age the data dir");
        drop(old);

        let store = super::EmbeddedStore::open(dir.path()).expect("reopen");
        for (tenant, before) in tenants.iter().zip(&discovery) {
            let after = format!(
                "{:?} {:?}",
                store.types(tenant).await.expect("types"),
                store.attributes(tenant).await.expect("attributes")
            );
            assert_eq!(&after, before, "discovery of tenant '{tenant}'");
        }
        drop(store);
        assert_eq!(name_rows(&path), rows);
        let old_table: i64 = rusqlite::Connection::open(&path)
            .expect("sqlite")
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'entity_attrs'",
                [],
                |r| r.get(0),
            )
            .expect("tables");
        assert_eq!(old_table, 0);
    }

    /// Documents leave out the attributes' system times that are the
    /// entity's; the store reads every one back.
    #[tokio::test]
    async fn attribute_times_come_back_whole_from_their_shorter_documents() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = super::EmbeddedStore::open(dir.path()).expect("open store");
        let tenant = piazza_store::Tenant::default();
        let body = json!({"id": "urn:t:1", "type": "A",
            "p": {"type": "Property", "value": 1, "accuracy": {"type": "Property", "value": 0.5}},
            "q": {"type": "Relationship", "object": "urn:x:1"}});
        store.edit(&tenant, vec![replace_with(body)]).await.expect("create");
        let created = store.get(&tenant, "urn:t:1").await.expect("get").expect("stored");
        let p = ActiveContext::core().expand("p");
        let later = created.created_at.expect("stamped") + chrono::Duration::seconds(1);
        let name = p.clone();
        let update = Edit::new("urn:t:1", move |before| {
            let mut entity = before.cloned().expect("stored");
            let instance = &mut entity.attributes.get_mut(&name).expect("p")[0];
            instance.value = json!(2);
            instance.modified_at = Some(later);
            entity.modified_at = Some(later);
            Ok(EditOutcome::put(entity, UpdateOutcome::default()))
        });
        store.edit(&tenant, vec![update]).await.expect("update");

        let got = store.get(&tenant, "urn:t:1").await.expect("get").expect("stored");
        let (t0, p_now) = (created.created_at, &got.attributes[&p][0]);
        assert_eq!((got.created_at, got.modified_at), (t0, Some(later)));
        assert_eq!((p_now.created_at, p_now.modified_at), (t0, Some(later)));
        let q_now = &got.attributes[&ActiveContext::core().expand("q")][0];
        assert_eq!((q_now.created_at, q_now.modified_at), (t0, t0));
        let accuracy = p_now.sub.values().next().expect("sub-attribute");
        assert_eq!((accuracy.created_at, accuracy.modified_at), (t0, t0));
        let doc: String = rusqlite::Connection::open(store.path())
            .and_then(|c| c.query_row("SELECT doc FROM entities", [], |r| r.get(0)))
            .expect("document");
        // The entity's two; only `q` and the sub-attribute were modified at
        // another time than the entity.
        assert_eq!(doc.matches("\"created_at\"").count(), 1, "{doc}");
        assert_eq!(doc.matches("\"modified_at\"").count(), 3, "{doc}");
    }

    #[tokio::test]
    async fn type_and_attribute_rows_follow_each_edit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = super::EmbeddedStore::open(dir.path()).expect("open store");
        let tenant = piazza_store::Tenant::default();
        let path = store.path().to_owned();
        let first = json!({"id": "urn:t:1", "type": "A",
            "p": {"type": "Property", "value": 1},
            "q": {"type": "Relationship", "object": "urn:x:1"}});
        store.edit(&tenant, vec![replace_with(first)]).await.expect("create");
        let expected = (vec!["A".into()], vec!["p|Property".into(), "q|Relationship".into()]);
        assert_eq!(name_rows(&path), expected);

        // A value change alone, then a change of types and attributes.
        let values_only = json!({"id": "urn:t:1", "type": "A",
            "p": {"type": "Property", "value": 2},
            "q": {"type": "Relationship", "object": "urn:x:2"}});
        store
            .edit(&tenant, vec![replace_with(values_only)])
            .await
            .expect("update");
        assert_eq!(name_rows(&path), expected);
        let reshaped = json!({"id": "urn:t:1", "type": ["A", "B"],
            "p": [{"type": "Property", "value": 2},
                  {"type": "Relationship", "object": "urn:x:3", "datasetId": "urn:d:1"}],
            "r": {"type": "Property", "value": "x"}});
        store.edit(&tenant, vec![replace_with(reshaped)]).await.expect("update");
        assert_eq!(
            name_rows(&path),
            (
                vec!["A".into(), "B".into()],
                vec!["p|Property".into(), "p|Relationship".into(), "r|Property".into()]
            )
        );
        // Same names and instance counts, one instance of another kind.
        let rekinded = json!({"id": "urn:t:1", "type": ["A", "B"],
            "p": [{"type": "Relationship", "object": "urn:x:4"},
                  {"type": "Relationship", "object": "urn:x:3", "datasetId": "urn:d:1"}],
            "r": {"type": "Property", "value": "x"}});
        store.edit(&tenant, vec![replace_with(rekinded)]).await.expect("update");
        assert_eq!(
            name_rows(&path),
            (
                vec!["A".into(), "B".into()],
                vec!["p|Relationship".into(), "r|Property".into()]
            )
        );

        let delete = Edit::new(String::from("urn:t:1"), |_| {
            Ok(EditOutcome {
                state: piazza_store::NewState::Delete,
                report: UpdateOutcome::default(),
            })
        });
        store.edit(&tenant, vec![delete]).await.expect("delete");
        assert_eq!(name_rows(&path), (Vec::new(), Vec::new()));
    }

    /// On a multi-thread runtime a query page runs inline while short and
    /// moves off the worker's core when it may be long (a count, a deep
    /// page, a scan no driving list bounds, more than `INLINE_DOCUMENTS`
    /// documents); each way gives the page the query asks for. One entity
    /// by id is read inline too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn query_pages_are_right_inline_and_off_the_core() {
        use std::sync::Arc;

        use piazza_ngsild::query::{EntityQuery, Query};
        use piazza_store::{Page, Tenant};

        let dir = tempfile::tempdir().expect("temp dir");
        let store = super::EmbeddedStore::open(dir.path()).expect("open store");
        let tenant = Tenant::parse("offcore").expect("tenant");
        let parity = |i: usize| if i.is_multiple_of(2) { "even" } else { "odd" };
        let edits = (0..600)
            .map(|i| {
                replace_with(json!({"id": format!("urn:q:{i:04}"), "type": "T",
                    "n": {"type": "Property", "value": i}, "s": {"type": "Property", "value": parity(i)}}))
            })
            .collect();
        store.edit(&tenant, edits).await.expect("create");
        let id = |i: usize| format!("urn:q:{i:04}");
        let page = |offset, limit, count| Page { offset, limit, count };
        let cases: Vec<(&str, Page, Vec<String>, Option<u64>)> = vec![
            // A selective bound drives: a few documents, inline.
            ("n>=590", page(0, 20, false), (590..600).map(id).collect(), None),
            // Past `INLINE_DOCUMENTS` documents examined (the 280 evens
            // skipped, then five), the rest off the core.
            (
                "s==\"even\"",
                page(280, 5, false),
                (560..570).step_by(2).map(id).collect(),
                None,
            ),
            // A count: off the core from the start.
            ("n>=0", page(0, 5, true), (0..5).map(id).collect(), Some(600)),
            // No bound selective enough to drive.
            (
                "n<600;s==\"odd\"",
                page(0, 5, false),
                (1..10).step_by(2).map(id).collect(),
                None,
            ),
            // Every entity a candidate, 600 documents examined.
            ("n>=0", page(595, 10, false), (595..600).map(id).collect(), None),
            // Deeper than `INLINE_OFFSET`: off the core from the start.
            ("n>=0", page(1_001, 5, false), Vec::new(), None),
            // Longer than `INLINE_DOCUMENTS`: likewise.
            ("n>=300", page(0, 1_000, false), (300..600).map(id).collect(), None),
        ];
        for (q, page, expected, total) in cases {
            let query = EntityQuery {
                q: Some(Query::parse(q, &ActiveContext::core()).expect("q")),
                ..Default::default()
            };
            let found = store.query(&tenant, Arc::new(query), page).await.expect("query");
            let ids: Vec<String> = found.entities.into_iter().map(|e| e.id).collect();
            assert_eq!(ids, expected, "{q}");
            assert_eq!(found.total, total, "{q}");
        }
        // One entity, inline too.
        let one = store.get(&tenant, &id(7)).await.expect("get").expect("found");
        assert_eq!(one.id, id(7));
        assert!(store.get(&tenant, "urn:q:none").await.expect("get").is_none());
    }

    /// Many reads at once share `READERS` connections: the others wait
    /// instead of each opening (and dropping) a connection of its own.
    /// Reads on the pool and query pages in place share the same bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_share_a_bounded_set_of_connections() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().expect("temp dir");
        let store = std::sync::Arc::new(super::EmbeddedStore::open(dir.path()).expect("open store"));
        let (running, most) = (
            std::sync::Arc::new(AtomicUsize::new(0)),
            std::sync::Arc::new(AtomicUsize::new(0)),
        );
        let reads: Vec<_> = (0..4 * super::READERS)
            .map(|i| {
                let (store, running, most) = (store.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    let read = move |connection: &rusqlite::Connection| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        let answer: i64 = connection.query_row("SELECT 1", [], |r| r.get(0)).map_err(super::sql)?;
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(answer)
                    };
                    if i % 2 == 0 {
                        store.read(read).await
                    } else {
                        store.read_page(move |c, off_core| off_core.run(|| read(c))).await
                    }
                })
            })
            .collect();
        for read in reads {
            assert_eq!(read.await.expect("task").expect("read"), 1);
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= super::READERS, "{most} reads ran at once");
        assert!(store.readers.lock().expect("pool").len() <= super::READERS);
    }

    /// A job of `n` edits that would each write nothing.
    fn job_of(n: usize) -> super::WriteJob {
        let edits = (0..n)
            .map(|i| {
                Edit::new(format!("urn:g:{i}"), |_| {
                    Ok(EditOutcome {
                        state: piazza_store::NewState::Keep,
                        report: UpdateOutcome::default(),
                    })
                })
            })
            .collect();
        let (reply, _) = tokio::sync::oneshot::channel();
        super::WriteJob::Edits {
            tenant: piazza_store::Tenant::default(),
            edits,
            reply,
        }
    }

    #[test]
    fn a_write_group_stops_taking_jobs_once_it_holds_enough_edits() {
        let sizes = |group: &[super::WriteJob]| group.iter().map(super::WriteJob::edits).collect::<Vec<_>>();
        let (sender, receiver) = std::sync::mpsc::channel();
        for n in [600, 600, 300, 1] {
            sender.send(job_of(n)).expect("queue");
        }
        let first = receiver.recv().expect("first");
        assert_eq!(sizes(&super::take_group(first, &receiver)), [600, 600]);
        let first = receiver.recv().expect("first");
        assert_eq!(sizes(&super::take_group(first, &receiver)), [300, 1]);

        // Single-entity writes fill a group up to its job limit.
        for _ in 0..super::MAX_GROUP + 3 {
            sender.send(job_of(1)).expect("queue");
        }
        let first = receiver.recv().expect("first");
        assert_eq!(super::take_group(first, &receiver).len(), super::MAX_GROUP);
        let first = receiver.recv().expect("first");
        assert_eq!(super::take_group(first, &receiver).len(), 3);
    }

    #[test]
    fn a_data_dir_is_used_by_one_store_at_a_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = super::EmbeddedStore::open(dir.path()).expect("first store");
        let second = super::EmbeddedStore::open(dir.path());
        assert!(second.is_err(), "a second store on the same data dir must be refused");
        drop(first);
    }

    #[tokio::test]
    async fn a_store_dropped_after_reads_and_writes_leaves_no_wal() {
        use piazza_store::Store;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = super::EmbeddedStore::open(dir.path()).expect("open store");
        let tenant = piazza_store::Tenant::default();
        let mut attribute = piazza_ngsild::Attribute::new(piazza_ngsild::AttributeKind::Property, 1.into());
        attribute.observed_at = Some("2024-01-01T00:00:00Z".into());
        let edit = piazza_store::TemporalEdit::Upsert {
            id: "urn:w:1".into(),
            types: vec!["https://example.org/W".into()],
            scope: Vec::new(),
            attributes: vec![("https://example.org/p".into(), vec![attribute; 2_000])],
        };
        store.temporal_edit(&tenant, edit).await.expect("store").expect("edit");
        let query = piazza_ngsild::temporal::TemporalQuery::default();
        store
            .temporal_entity(&tenant, "urn:w:1", &query)
            .await
            .expect("read")
            .expect("entity");
        let wal = dir.path().join("piazza.sqlite-wal");
        assert!(
            std::fs::metadata(&wal).map_or(0, |m| m.len()) > 0,
            "the writes went through the WAL"
        );
        // Another connection still open (an operator's sqlite3 shell): the
        // store's last close is then not the file's, which alone would
        // leave the WAL as it is.
        let other = rusqlite::Connection::open(dir.path().join("piazza.sqlite")).expect("open");
        let _: i64 = other
            .query_row("SELECT count(*) FROM temporal_entities", [], |r| r.get(0))
            .expect("read");
        drop(store);
        assert_eq!(
            std::fs::metadata(&wal).map_or(0, |m| m.len()),
            0,
            "the WAL was folded in at close"
        );
        drop(other);
    }

    piazza_store::conformance_suite!(async || {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = super::EmbeddedStore::open(dir.path()).expect("open store");
        (
            std::sync::Arc::new(store) as std::sync::Arc<dyn piazza_store::Store>,
            dir,
        )
    });

    /// The names of the indexes on `attr_instances`, sorted.
    fn history_indexes(path: &std::path::Path) -> Vec<String> {
        let connection = rusqlite::Connection::open(path).expect("open");
        let mut statement = connection
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'attr_instances' ORDER BY name",
            )
            .expect("prepare");
        let names = statement
            .query_map([], |r| r.get::<_, String>(0))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect();
        names
    }

    #[tokio::test]
    async fn an_older_data_dir_loses_the_created_and_modified_history_indexes_at_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = super::EmbeddedStore::open(dir.path()).expect("open store");
        let path = store.path().to_owned();
        drop(store);
        let kept = vec!["attr_instances_by_id".to_owned(), "attr_instances_observed".to_owned()];
        assert_eq!(history_indexes(&path), kept);

        let old = rusqlite::Connection::open(&path).expect("sqlite");
        old.execute_batch(
            "CREATE INDEX attr_instances_created ON attr_instances (teid, attr, created_at); \
             CREATE INDEX attr_instances_modified ON attr_instances (teid, attr, modified_at);",
        )
        .expect("age the data dir");
        drop(old);
        assert_eq!(history_indexes(&path).len(), 4);

        let store = super::EmbeddedStore::open(dir.path()).expect("reopen");
        drop(store);
        assert_eq!(history_indexes(&path), kept);
    }
}
