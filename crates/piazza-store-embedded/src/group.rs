//! One group of write jobs, one transaction (group commit).
//!
//! Entity edits run without a SAVEPOINT each: a savepoint makes SQLite copy
//! every page an edit touches into its statement journal first, which was a
//! sixth of the writer's time under `create` and held batch upserts back by
//! a third (BENCHMARKS.md, "Savepoints"). An edit is still all or nothing:
//! a refused edit writes nothing, and when an edit's write fails half-way
//! (an SQL error) the group's transaction is rolled back, what the edits
//! before it wrote is written again from their kept outcomes, the failed
//! edit is answered with its error and the rest of the group runs with a
//! savepoint per edit, as every group once did.
//!
//! Other jobs (`Exec`: contexts, resources, temporal edits) may roll back
//! on purpose and cannot be run twice: a group holding one uses savepoints
//! throughout.

use piazza_ngsild::{Entity, NgsiError};
use piazza_store::{Applied, Edit, NewState, OutboxEntry, Tenant};
use rusqlite::{Connection, Transaction};

use crate::values::NameKeys;
use crate::{delete, fail_group, load, outbox, put, temporal, Pending, WriteJob};

/// Runs `group` in one transaction and commits it; returns the answers to
/// send once the commit is durable (none if it failed: those are answered
/// with the error here).
pub(crate) fn run_group(connection: &mut Connection, group: Vec<WriteJob>) -> Vec<Pending> {
    let transaction = match connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(t) => t,
        Err(e) => {
            fail_group(group, &format!("cannot begin a transaction: {e}"));
            return Vec::new();
        }
    };
    let mut run = Group {
        transaction: &transaction,
        savepoints: group.iter().any(|job| matches!(job, WriteJob::Exec { .. })),
        written: Vec::new(),
        pending: Vec::with_capacity(group.len()),
        keys: NameKeys::default(),
    };
    let mut jobs = group.into_iter();
    while let Some(job) = jobs.next() {
        if let Err(why) = run.job(job) {
            // The transaction no longer holds what was answered: nothing may commit.
            tracing::error!(error = %why, "write group abandoned");
            run.pending.into_iter().for_each(|p| p.fail(&why));
            fail_group(jobs.collect(), &why);
            return Vec::new();
        }
    }
    let pending = run.pending;
    if let Err(e) = transaction.commit() {
        tracing::error!(error = %e, "commit failed");
        let why = format!("commit failed: {e}");
        pending.into_iter().for_each(|p| p.fail(&why));
        return Vec::new();
    }
    pending
}

/// A group under way in its transaction.
struct Group<'c> {
    transaction: &'c Transaction<'c>,
    /// Each edit in its own savepoint (see the module doc).
    savepoints: bool,
    /// What the edits run without a savepoint wrote, in order: to be written
    /// again if the transaction has to start over.
    written: Vec<Written>,
    /// The answers of the jobs done, in order.
    pending: Vec<Pending>,
    /// The name numbers the group's edits looked up.
    keys: NameKeys,
}

/// An edit's write, run without a savepoint: its outcome is in its job's
/// answer (`Applied`), at these positions.
struct Written {
    tenant: Tenant,
    job: usize,
    edit: usize,
    entries: Vec<OutboxEntry>,
}

/// An edit decided: what to write, not yet written.
struct Change {
    /// The stored row, if any (an expired entity has one but no `before`).
    eid: Option<i64>,
    applied: Applied,
    /// Whether there is anything to write.
    writes: bool,
    /// The notifications the change owes.
    entries: Vec<OutboxEntry>,
}

impl Group<'_> {
    /// Runs one job; an error abandons the group.
    fn job(&mut self, job: WriteJob) -> Result<(), String> {
        match job {
            WriteJob::Edits { tenant, edits, reply } => {
                let mut results = Vec::with_capacity(edits.len());
                for edit in edits {
                    match self.edit(&tenant, edit, &results) {
                        Ok(result) => results.push(result),
                        Err(why) => {
                            drop(reply.send(Err(crate::backend(why.clone()))));
                            return Err(why);
                        }
                    }
                }
                self.pending.push(Pending::Edits(reply, results));
            }
            WriteJob::Exec { run, reply } => {
                let result = in_savepoint(self.transaction, |tx| run(tx)).map_err(crate::sql);
                // It may have deleted names, or rolled back ones it made.
                self.keys.clear();
                self.pending.push(Pending::Exec(reply, result));
            }
        }
        Ok(())
    }

    /// Decides and writes one edit; `done` are the answers of its job's
    /// earlier edits. An error abandons the group.
    fn edit(&mut self, tenant: &Tenant, edit: Edit, done: &Answers) -> Result<Result<Applied, NgsiError>, String> {
        let change = match decide(self.transaction, tenant, edit) {
            Ok(change) => change,
            Err(refused) => return Ok(Err(refused)),
        };
        if !change.writes {
            return Ok(Ok(change.applied));
        }
        if self.savepoints {
            let wrote = in_savepoint(self.transaction, |tx| change.write(tx, tenant, &mut self.keys));
            if wrote.is_err() {
                self.keys.clear();
            }
            return Ok(wrote.map(|()| change.applied).map_err(storage_failure));
        }
        match change.write(self.transaction, tenant, &mut self.keys) {
            Ok(()) => {
                self.written.push(Written {
                    tenant: tenant.clone(),
                    job: self.pending.len(),
                    edit: done.len(),
                    entries: change.entries,
                });
                Ok(Ok(change.applied))
            }
            Err(e) => {
                // Part of this edit may be in the transaction: start it over
                // without it.
                self.start_over(done)
                    .map_err(|again| format!("cannot write a group again after a failed edit ({e}): {again}"))?;
                self.savepoints = true;
                Ok(Err(storage_failure(e)))
            }
        }
    }

    /// Rolls the transaction back and writes again what the edits run so
    /// far wrote (`current`: the answers of the job under way).
    fn start_over(&mut self, current: &Answers) -> Result<(), String> {
        let tx = self.transaction;
        // SQLite may already have rolled back (SQLITE_FULL, SQLITE_IOERR...).
        if !tx.is_autocommit() {
            tx.execute_batch("ROLLBACK").map_err(|e| e.to_string())?;
        }
        self.keys.clear();
        tx.execute_batch("BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
        for written in std::mem::take(&mut self.written) {
            let results = match self.pending.get(written.job) {
                Some(Pending::Edits(_, results)) => results,
                Some(Pending::Exec(..)) => return Err("an edit's answer is missing".into()),
                None => current,
            };
            let Some(Ok(applied)) = results.get(written.edit) else {
                return Err("an edit's answer is missing".into());
            };
            let (before, after) = (applied.before.as_ref(), applied.after.as_ref());
            let Some(id) = after.or(before).map(|e| e.id.as_str()) else {
                continue;
            };
            let eid = load(tx, &written.tenant, id)
                .map_err(|e| e.to_string())?
                .map(|(eid, _)| eid);
            write_change(
                tx,
                &written.tenant,
                eid,
                before,
                after,
                &written.entries,
                &mut self.keys,
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The answers of a job's edits so far.
type Answers = Vec<Result<Applied, NgsiError>>;

/// Loads the entity, runs the edit's closure and, when it writes, its
/// observer: everything but the write. A refused edit is its error.
fn decide(transaction: &Transaction<'_>, tenant: &Tenant, edit: Edit) -> Result<Change, NgsiError> {
    let stored = load(transaction, tenant, &edit.entity_id).map_err(|e| NgsiError::internal(e.to_string()))?;
    let (eid, before) = match stored {
        Some((eid, entity)) => (Some(eid), entity),
        None => (None, None),
    };
    let outcome = (edit.apply)(before.as_ref())?;
    let (after, writes) = match outcome.state {
        NewState::Keep => (before.clone(), false),
        NewState::Put(entity) => (Some(entity), true),
        // Deleting what has no row writes nothing.
        NewState::Delete => (None, eid.is_some()),
    };
    let entries = match edit.observe {
        Some(observe) if writes => observe(before.as_ref(), after.as_ref()),
        _ => Vec::new(),
    };
    Ok(Change {
        eid,
        applied: Applied {
            before,
            after,
            report: outcome.report,
        },
        writes,
        entries,
    })
}

impl Change {
    fn write(&self, tx: &Transaction<'_>, tenant: &Tenant, keys: &mut NameKeys) -> rusqlite::Result<()> {
        write_change(
            tx,
            tenant,
            self.eid,
            self.applied.before.as_ref(),
            self.applied.after.as_ref(),
            &self.entries,
            keys,
        )
    }
}

/// Writes an entity's new state (`None`: deleted), its history and the
/// notifications it owes.
fn write_change(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    eid: Option<i64>,
    before: Option<&Entity>,
    after: Option<&Entity>,
    entries: &[OutboxEntry],
    keys: &mut NameKeys,
) -> rusqlite::Result<()> {
    match (after, eid) {
        (Some(entity), _) => put(tx, tenant, eid, before, entity, keys)?,
        (None, Some(eid)) => delete(tx, eid)?,
        (None, None) => return Ok(()),
    }
    temporal::record(tx, tenant, before, after, keys)?;
    outbox::enqueue(tx, tenant, entries)
}

fn storage_failure(e: rusqlite::Error) -> NgsiError {
    NgsiError::internal(format!("storage failure: {e}"))
}

/// Runs `run` in a savepoint: all of it is kept, or none.
fn in_savepoint<T>(
    transaction: &Transaction<'_>,
    run: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    transaction.execute_batch("SAVEPOINT edit")?;
    match run(transaction) {
        Ok(value) => {
            transaction.execute_batch("RELEASE edit")?;
            Ok(value)
        }
        Err(e) => {
            transaction.execute_batch("ROLLBACK TO edit; RELEASE edit")?;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use piazza_store::{Edit, OutboxEntry, Store, Tenant};
    use serde_json::json;

    use crate::tests::replace_with;
    use crate::EmbeddedStore;

    const POISON: &str = "urn:ngsi-ld:T:poison";

    /// Makes every history write of `POISON` fail: its edit fails half-way,
    /// after its entity, name, value and spatial rows were written.
    fn poison(path: &Path) {
        let connection = rusqlite::Connection::open(path).expect("open");
        connection
            .execute_batch(&format!(
                "CREATE TRIGGER poison BEFORE INSERT ON attr_instances \
                 WHEN NEW.teid = (SELECT teid FROM temporal_entities WHERE id = '{POISON}') \
                 BEGIN SELECT RAISE(ABORT, 'poisoned'); END;"
            ))
            .expect("trigger");
    }

    fn body(id: &str, value: f64) -> serde_json::Value {
        json!({"id": id, "type": "T",
            "p": {"type": "Property", "value": value},
            "s": {"type": "Property", "value": "x"},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [11.0, 43.0]}}})
    }

    /// A replace of `id` with `p = value` that owes one notification.
    fn observed(id: &str, value: f64) -> Edit {
        let mut edit = replace_with(body(id, value));
        let entity_id = id.to_owned();
        edit.observe = Some(Box::new(move |_, _| {
            vec![OutboxEntry {
                subscription_id: "urn:sub".into(),
                entity_id,
                notice: json!({"p": value}),
            }]
        }));
        edit
    }

    /// Rows anywhere in the store that belong to `id`.
    fn rows_of(path: &Path, id: &str) -> i64 {
        let connection = rusqlite::Connection::open(path).expect("open");
        let count = |sql: &str| -> i64 { connection.query_row(sql, [id], |r| r.get(0)).expect(sql) };
        let eid = "(SELECT eid FROM entities WHERE id = ?1)";
        [
            "SELECT COUNT(*) FROM entities WHERE id = ?1".to_owned(),
            format!("SELECT COUNT(*) FROM entity_types WHERE eid = {eid}"),
            format!("SELECT COUNT(*) FROM entity_names WHERE eid = {eid}"),
            format!("SELECT COUNT(*) FROM value_numbers WHERE eid = {eid}"),
            format!("SELECT COUNT(*) FROM value_texts WHERE eid = {eid}"),
            format!("SELECT COUNT(*) FROM geo_keys WHERE eid = {eid}"),
            "SELECT COUNT(*) FROM history_rows WHERE entity_id = ?1".to_owned(),
            "SELECT COUNT(*) FROM temporal_entities WHERE id = ?1".to_owned(),
            "SELECT COUNT(*) FROM outbox WHERE entity_id = ?1".to_owned(),
        ]
        .iter()
        .map(|sql| count(sql))
        .sum()
    }

    /// The first column of `sql` (one parameter: the entity id), in order.
    fn column<T: rusqlite::types::FromSql>(path: &Path, sql: &str, id: &str) -> Vec<T> {
        let connection = rusqlite::Connection::open(path).expect("open");
        let mut statement = connection.prepare(sql).expect("prepare");
        let rows = statement.query_map([id], |r| r.get(0)).expect("query");
        rows.map(|r| r.expect("row")).collect()
    }

    fn history_of(path: &Path, id: &str) -> Vec<f64> {
        let sql = "SELECT i.num FROM attr_instances i JOIN history_rows h ON h.iid = i.iid \
                   WHERE h.entity_id = ?1 AND h.attr LIKE '%/p' ORDER BY i.iid";
        column(path, sql, id)
    }

    fn notices_of(path: &Path, id: &str) -> Vec<String> {
        column(path, "SELECT notice FROM outbox WHERE entity_id = ?1 ORDER BY seq", id)
    }

    /// An edit failing half-way in a batch leaves nothing of itself; the
    /// edits before it are written once (not lost, not twice) and those
    /// after it are written too.
    #[tokio::test]
    async fn an_edit_failing_half_way_leaves_nothing_and_spares_the_rest_of_its_batch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let tenant = Tenant::default();
        let path = store.path().to_owned();
        poison(&path);
        let a = "urn:ngsi-ld:T:a";
        let b = "urn:ngsi-ld:T:b";
        let results = store
            .edit(
                &tenant,
                vec![
                    observed(a, 1.0),
                    observed(a, 2.0),
                    observed(POISON, 9.0),
                    observed(b, 3.0),
                    observed(a, 4.0),
                ],
            )
            .await
            .expect("batch");
        let failed: Vec<bool> = results.iter().map(Result::is_err).collect();
        assert_eq!(failed, [false, false, true, false, false]);
        let error = results[2].as_ref().err().map(ToString::to_string).unwrap_or_default();
        assert!(error.contains("poisoned"), "{error}");

        assert_eq!(rows_of(&path, POISON), 0, "the failed edit left rows behind");
        assert_eq!(history_of(&path, a), [1.0, 2.0, 4.0]);
        assert_eq!(history_of(&path, b), [3.0]);
        assert_eq!(notices_of(&path, a), [r#"{"p":1.0}"#, r#"{"p":2.0}"#, r#"{"p":4.0}"#]);
        assert_eq!(notices_of(&path, b), [r#"{"p":3.0}"#]);
        let stored = store.get(&tenant, a).await.expect("get").expect("a is stored");
        assert_eq!(
            stored.attributes.values().next().map(|p| p[0].value.clone()),
            Some(json!(4.0))
        );
        assert!(store.get(&tenant, b).await.expect("get").is_some());
        assert!(store.get(&tenant, POISON).await.expect("get").is_none());

        // The store goes on writing, without savepoints again.
        store.edit(&tenant, vec![observed(b, 5.0)]).await.expect("edit");
        assert_eq!(history_of(&path, b), [3.0, 5.0]);
    }

    /// The names an edit made before it failed are rolled back with it: the
    /// edits after it in the group make them again rather than trust the
    /// numbers the group looked up.
    #[tokio::test]
    async fn names_made_by_a_failed_edit_are_made_again_by_the_edits_after_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let tenant = Tenant::default();
        let path = store.path().to_owned();
        poison(&path);
        let b = "urn:ngsi-ld:T:b";
        let with_fresh = |id: &str, value: f64| {
            let mut body = body(id, value);
            body["fresh"] = json!({"type": "Property", "value": value});
            replace_with(body)
        };
        let results = store
            .edit(&tenant, vec![with_fresh(POISON, 9.0), with_fresh(b, 3.0)])
            .await
            .expect("batch");
        assert_eq!(results.iter().map(Result::is_err).collect::<Vec<_>>(), [true, false]);
        // Both read through `value_names`: a number without its name row
        // would lose the history and the name.
        let history: Vec<f64> = column(
            &path,
            "SELECT i.num FROM attr_instances i JOIN history_rows h ON h.iid = i.iid \
             WHERE h.entity_id = ?1 AND h.attr LIKE '%/fresh'",
            b,
        );
        assert_eq!(history, [3.0]);
        let names: Vec<String> = column(
            &path,
            "SELECT v.name FROM entity_names n JOIN value_names v ON v.key = n.key \
             WHERE n.eid = (SELECT eid FROM entities WHERE id = ?1) ORDER BY v.name",
            b,
        );
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.iter().any(|n| n.ends_with("/fresh")), "{names:?}");
    }

    /// Many writers at once, one of them failing: jobs grouped with it in
    /// one transaction are written once each, whatever the grouping.
    #[tokio::test]
    async fn a_failing_edit_spares_the_jobs_grouped_with_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
        let tenant = Tenant::default();
        let path = store.path().to_owned();
        poison(&path);
        let ids: Vec<String> = (0..64).map(|i| format!("urn:ngsi-ld:T:{i}")).collect();
        let mut tasks = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let (store, tenant) = (store.clone(), tenant.clone());
            let edits = if i == 32 {
                vec![observed(id, 1.0), observed(POISON, 9.0), observed(id, 2.0)]
            } else {
                vec![observed(id, 1.0), observed(id, 2.0)]
            };
            tasks.push(tokio::spawn(async move { store.edit(&tenant, edits).await }));
        }
        for task in tasks {
            let results = task.await.expect("task").expect("edit");
            assert_eq!(
                results.iter().filter(|r| r.is_err()).count(),
                usize::from(results.len() == 3)
            );
        }
        for id in &ids {
            assert_eq!(history_of(&path, id), [1.0, 2.0], "{id}");
            assert_eq!(notices_of(&path, id).len(), 2, "{id}");
        }
        assert_eq!(rows_of(&path, POISON), 0);
    }
}
