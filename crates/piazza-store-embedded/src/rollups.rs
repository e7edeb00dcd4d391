//! Aggregation from hourly summaries (`attr_rollups`: counted by
//! `temporal::insert`, marked stale by the triggers in `schema.sql`): an
//! `aggregatedValues` request over a long numeric history reads one row per
//! hour instead of decoding every instance.
//!
//! Only the histories in `rolled_up` have summaries. A history is rolled up
//! the first time an aggregation reads at least `MIN_SUMMARISED` of its
//! instances (the reader asks the writer: [`roll_up`]), and from then on
//! every instance recorded is counted into its hour. Short histories, most
//! of them, cost their writes no summary.
//!
//! A summary only ever stands for instances: an hour that is stale, or that
//! a period boundary or the query's range cuts, is read from the instances
//! themselves; a range holding anything but live numbers (a deletion record,
//! a string) is answered from the instances as before. Periods are cut by
//! the model's `PeriodWalker`, the same as the instance path.

use std::collections::BTreeMap;

use piazza_ngsild::temporal::{
    fold_pieces, hour_after, hour_within, ordered_groups, read_as_points, summarisable, Aggregation, Folded,
    HourSummary, Piece, SummarisedGroup, Summary, TemporalQuery, MIN_SUMMARISED,
};
use piazza_ngsild::time::{self, Timestamp};
use piazza_ngsild::{Attribute, AttributeKind};
use piazza_store::StoreResult;
use rusqlite::{params, Connection, Transaction};

use crate::sql;
use crate::temporal::Series;

/// `PRAGMA user_version` from which the rollups are complete.
const ROLLUP_VERSION: i64 = 3;

/// `PRAGMA user_version` from which only the histories in `rolled_up` have rollups.
const ROLLED_UP_VERSION: i64 = 9;

/// Whether an instance row counts as a number (its `num`, set by the writer).
const IS_NUMBER: &str = "(num IS NOT NULL AND deleted_at IS NULL)";

/// The attributes of a temporal entity whose histories are rolled up.
pub(crate) fn rolled_up(connection: &Connection, teid: i64) -> rusqlite::Result<Vec<i64>> {
    connection
        .prepare_cached("SELECT attr FROM rolled_up WHERE teid = ?1")?
        .query_map([teid], |r| r.get(0))?
        .collect()
}

/// At most this many histories are rolled up for one read; the others it
/// meets are aggregated from their instances this time, and rolled up by
/// the reads after it. Rolling up holds the writer (about 120 ms for a
/// history of 100,000 instances): a temporal query's page of long
/// histories rolled up at once would stall every write for seconds.
pub(crate) const ROLL_UPS_PER_READ: usize = 4;

/// Whether the history of `key` is rolled up.
pub(crate) fn is_rolled_up(connection: &Connection, key: Series) -> rusqlite::Result<bool> {
    connection
        .prepare_cached("SELECT 1 FROM rolled_up WHERE teid = ?1 AND attr = ?2")?
        .exists(params![key.teid, key.attr])
}

/// Whether `query`'s range holds enough of `key`'s history to be answered
/// from rollups: `MIN_SUMMARISED` instances, counted in the time index
/// without reading them.
pub(crate) fn long_in_range(connection: &Connection, key: Series, query: &TemporalQuery) -> StoreResult<bool> {
    let (lo, hi) = query.timerel.map_or((None, None), |rel| rel.bounds());
    let found: i64 = connection
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM attr_instances WHERE teid = ?1 AND attr = ?2 \
             AND (?3 IS NULL OR observed_at >= ?3) AND (?4 IS NULL OR observed_at < ?4) LIMIT ?5)",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    key.teid,
                    key.attr,
                    lo.as_ref().map(time::format),
                    hi.as_ref().map(time::format),
                    i64::try_from(MIN_SUMMARISED).unwrap_or(i64::MAX)
                ],
                |r| r.get(0),
            )
        })
        .map_err(sql)?;
    Ok(u64::try_from(found).unwrap_or(0) >= MIN_SUMMARISED)
}

/// Builds the rollups of a history from its instances and keeps them from
/// then on (a history already rolled up is left as it is).
pub(crate) fn roll_up(tx: &Transaction<'_>, key: Series) -> rusqlite::Result<()> {
    if is_rolled_up(tx, key)? {
        return Ok(());
    }
    // Rows left by the triggers for a history that was not rolled up.
    forget(tx, key.teid, Some(key.attr))?;
    let hours: Vec<String> = tx
        .prepare_cached(
            "SELECT DISTINCT substr(observed_at, 1, 13) FROM attr_instances \
             WHERE teid = ?1 AND attr = ?2 AND observed_at IS NOT NULL",
        )?
        .query_map(params![key.teid, key.attr], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for hour in &hours {
        rebuild(tx, key, hour)?;
    }
    tx.prepare_cached("INSERT INTO rolled_up (teid, attr) VALUES (?1, ?2)")?
        .execute(params![key.teid, key.attr])?;
    Ok(())
}

/// The number an instance contributes to aggregations, stored as its
/// `num`: the value of a live Property when it is a number or a boolean
/// (as 0 and 1, the way aggregation counts booleans).
pub(crate) fn number_of(attribute: &Attribute, deleted: bool) -> Option<f64> {
    if deleted || attribute.kind != AttributeKind::Property {
        return None;
    }
    match &attribute.value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// Counts a new instance into the rollup of its hour: a number into the
/// figures, anything else into `others`.
pub(crate) fn count(
    tx: &Transaction<'_>,
    series: Series,
    dataset_id: Option<&str>,
    observed_at: &str,
    number: Option<f64>,
) -> rusqlite::Result<()> {
    let hour = &observed_at[..observed_at.len().min(13)];
    let dataset = dataset_id.unwrap_or("");
    let key = params![series.teid, series.attr, dataset, hour];
    let Some(x) = number else {
        tx.prepare_cached(
            "INSERT INTO attr_rollups (teid, attr, dataset, hour, count, others, stale, sum, sumsq, m2) \
             VALUES (?1, ?2, ?3, ?4, 0, 1, 0, 0.0, 0.0, 0.0) ON CONFLICT DO UPDATE SET others = others + 1",
        )?
        .execute(key)?;
        return Ok(());
    };
    // The squared deviations take Welford's step (from the old count and
    // sum: SET reads the row as it was).
    tx.prepare_cached(
        "INSERT INTO attr_rollups (teid, attr, dataset, hour, count, others, stale, sum, sumsq, m2, \
         min, max, first_at, last_at) VALUES (?1, ?2, ?3, ?4, 1, 0, 0, ?5, ?5 * ?5, 0.0, ?5, ?5, ?6, ?6) \
         ON CONFLICT DO UPDATE SET \
         m2 = CASE WHEN count = 0 THEN 0.0 \
              ELSE m2 + (?5 - sum / count) * (?5 - (sum + ?5) / (count + 1)) END, \
         min = CASE WHEN count = 0 OR ?5 < min THEN ?5 ELSE min END, \
         max = CASE WHEN count = 0 OR ?5 > max THEN ?5 ELSE max END, \
         first_at = CASE WHEN first_at IS NULL OR ?6 < first_at THEN ?6 ELSE first_at END, \
         last_at = CASE WHEN last_at IS NULL OR ?6 > last_at THEN ?6 ELSE last_at END, \
         count = count + 1, sum = sum + ?5, sumsq = sumsq + ?5 * ?5",
    )?
    .execute(params![series.teid, series.attr, dataset, hour, x, observed_at])?;
    Ok(())
}

/// Adds `attr_instances.num` to a data dir written before it existed; the
/// values are filled in by [`backfill`]. Runs before the schema, whose
/// triggers read the column.
pub(crate) fn add_number_column(connection: &Connection) -> StoreResult<()> {
    let columns: Vec<String> = connection
        .prepare("SELECT name FROM pragma_table_info('attr_instances')")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(sql)?;
    if !columns.is_empty() && !columns.iter().any(|c| c == "num") {
        connection
            .execute_batch("ALTER TABLE attr_instances ADD COLUMN num REAL")
            .map_err(sql)?;
    }
    Ok(())
}

/// The text key of the hour of an instant ('YYYY-MM-DDTHH').
fn hour_key(t: &Timestamp) -> String {
    let mut key = time::format(t);
    key.truncate(13);
    key
}

fn hour_start(key: &str) -> Option<Timestamp> {
    time::parse(&format!("{key}:00:00Z"))
}

/// One hour of one datasetId, as the rollup table holds it.
struct Hour {
    summary: HourSummary,
    stale: bool,
}

/// A query's range of instants, `[lo, hi)`.
#[derive(Clone, Copy)]
struct Range {
    lo: Option<Timestamp>,
    hi: Option<Timestamp>,
}

impl Range {
    fn holds_hour(self, start: Timestamp) -> bool {
        hour_within(start, self.lo, self.hi)
    }

    /// `[from, to)` cut to the range.
    fn clip(self, from: Timestamp, to: Timestamp) -> (Timestamp, Timestamp) {
        (
            self.lo.map_or(from, |lo| lo.max(from)),
            self.hi.map_or(to, |hi| hi.min(to)),
        )
    }
}

/// How one attribute's history answers a query.
pub(crate) enum Summarised {
    /// Its periods summarised per datasetId, from the rollups.
    Groups(Vec<SummarisedGroup>),
    /// Its instances: no summarisable aggregation asked for (another time
    /// property, `lastN`), a short range, or anything but live numbers in it.
    Instances,
    /// Its instances, for a summarisable aggregation over a history without
    /// rollups: to be rolled up if the range is long ([`long_in_range`]).
    NotRolledUp,
}

/// How `key`'s history answers `query` (see [`Summarised`]).
pub(crate) fn summarised(connection: &Connection, key: Series, query: &TemporalQuery) -> StoreResult<Summarised> {
    let Some(aggregation) = summarisable(query) else {
        return Ok(Summarised::Instances);
    };
    if !is_rolled_up(connection, key).map_err(sql)? {
        return Ok(Summarised::NotRolledUp);
    }
    Ok(match from_rollups(connection, key, query, aggregation)? {
        Some(groups) => Summarised::Groups(groups),
        None => Summarised::Instances,
    })
}

/// The periods of a rolled-up history, or `None` when its instances must
/// be read instead (see [`Summarised::Instances`]).
fn from_rollups(
    connection: &Connection,
    key: Series,
    query: &TemporalQuery,
    aggregation: &Aggregation,
) -> StoreResult<Option<Vec<SummarisedGroup>>> {
    let (lo, hi) = query.timerel.map_or((None, None), |rel| rel.bounds());
    // Without a range, instances without observedAt are aggregated at
    // their createdAt; the rollups do not hold them.
    if query.timerel.is_none() && has_untimed(connection, key)? {
        return Ok(None);
    }
    let range = Range { lo, hi };
    let Some(hours) = hours(connection, key, range)? else {
        return Ok(None);
    };
    if hours.values().flatten().map(|h| h.summary.summary.count).sum::<u64>() < MIN_SUMMARISED {
        return Ok(None);
    }
    let mut groups = Vec::new();
    for (dataset, hours) in hours {
        let Some(group) = summarise_group(connection, key, &dataset, hours, range, aggregation, query)? else {
            return Ok(None);
        };
        groups.extend(group);
    }
    Ok(ordered_groups(groups, query.instance_limit))
}

/// Whether the attribute has instances without `observedAt`.
fn has_untimed(connection: &Connection, key: Series) -> StoreResult<bool> {
    connection
        .prepare_cached("SELECT 1 FROM attr_instances WHERE teid = ?1 AND attr = ?2 AND observed_at IS NULL LIMIT 1")
        .and_then(|mut s| s.exists(params![key.teid, key.attr]))
        .map_err(sql)
}

/// The rollup hours touching the range, by datasetId, in time order;
/// `None` when one of them holds anything but live numbers.
fn hours(connection: &Connection, key: Series, range: Range) -> StoreResult<Option<BTreeMap<String, Vec<Hour>>>> {
    let from = range.lo.as_ref().map_or_else(String::new, hour_key);
    // The hour holding the last instant before `hi`.
    let to = range
        .hi
        .map(|hi| hour_key(&(hi - chrono::TimeDelta::microseconds(1))))
        .unwrap_or_else(|| "\u{10FFFF}".to_owned());
    let mut statement = connection
        .prepare_cached(
            "SELECT dataset, hour, count, others, stale, sum, sumsq, m2, min, max, first_at, last_at \
             FROM attr_rollups WHERE teid = ?1 AND attr = ?2 AND hour >= ?3 AND hour <= ?4 ORDER BY hour",
        )
        .map_err(sql)?;
    let mut rows = statement.query(params![key.teid, key.attr, from, to]).map_err(sql)?;
    let mut by_dataset: BTreeMap<String, Vec<Hour>> = BTreeMap::new();
    while let Some(row) = rows.next().map_err(sql)? {
        let others: i64 = row.get(3).map_err(sql)?;
        if others > 0 {
            return Ok(None);
        }
        // Borrowed, not copied: a year of hours is 8,760 rows.
        let text = |i: usize| row.get_ref(i).and_then(|v| Ok(v.as_str()?)).map_err(sql);
        let Some(start) = hour_start(text(1)?) else {
            return Ok(None);
        };
        let count: i64 = row.get(2).map_err(sql)?;
        let instant = |i: usize| -> StoreResult<Option<Timestamp>> {
            let text = row.get_ref(i).and_then(|v| Ok(v.as_str_or_null()?)).map_err(sql)?;
            Ok(text.and_then(time::parse))
        };
        let summary = Summary {
            count: u64::try_from(count).unwrap_or(0),
            sum: row.get(5).map_err(sql)?,
            sumsq: row.get(6).map_err(sql)?,
            m2: row.get(7).map_err(sql)?,
            min: row.get::<_, Option<f64>>(8).map_err(sql)?.unwrap_or(f64::INFINITY),
            max: row.get::<_, Option<f64>>(9).map_err(sql)?.unwrap_or(f64::NEG_INFINITY),
        };
        let hour = Hour {
            summary: HourSummary {
                start,
                summary,
                first: instant(10)?,
                last: instant(11)?,
            },
            stale: row.get::<_, i64>(4).map_err(sql)? != 0,
        };
        let dataset = text(0)?;
        match by_dataset.get_mut(dataset) {
            Some(hours) => hours.push(hour),
            None => {
                by_dataset.insert(dataset.to_owned(), vec![hour]);
            }
        }
    }
    Ok(Some(by_dataset))
}

/// The numbers of one datasetId's instances in `[from, to)`, in time
/// order; `None` when anything else is there.
fn points(
    connection: &Connection,
    key: Series,
    dataset: &str,
    from: Timestamp,
    to: Timestamp,
) -> StoreResult<Option<Vec<(Timestamp, f64)>>> {
    let mut statement = connection
        .prepare_cached(&format!(
            "SELECT observed_at, {IS_NUMBER}, num FROM attr_instances \
             WHERE teid = ?1 AND attr = ?2 AND observed_at >= ?3 AND observed_at < ?4 \
             AND coalesce(dataset_id, '') = ?5 ORDER BY observed_at"
        ))
        .map_err(sql)?;
    let mut rows = statement
        .query(params![
            key.teid,
            key.attr,
            time::format(&from),
            time::format(&to),
            dataset
        ])
        .map_err(sql)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql)? {
        let at: String = row.get(0).map_err(sql)?;
        let is_number: bool = row.get(1).map_err(sql)?;
        let (Some(at), true) = (time::parse(&at), is_number) else {
            return Ok(None);
        };
        out.push((at, row.get(2).map_err(sql)?));
    }
    Ok(Some(out))
}

/// One datasetId's periods, with its first instant in the range;
/// `Ok(None)` when the instances must be read instead, `Ok(Some(None))`
/// when nothing is in the range.
fn summarise_group(
    connection: &Connection,
    key: Series,
    dataset: &str,
    hours: Vec<Hour>,
    range: Range,
    aggregation: &Aggregation,
    query: &TemporalQuery,
) -> StoreResult<Option<Option<(Timestamp, SummarisedGroup)>>> {
    let mut pieces = Vec::with_capacity(hours.len());
    for Hour { summary: hour, stale } in hours {
        if stale || !range.holds_hour(hour.start) {
            let Some(found) = hour_points(connection, key, dataset, range, hour.start)? else {
                return Ok(None);
            };
            if !found.is_empty() {
                pieces.push(Piece::Points(found));
            }
        } else if !hour.summary.is_empty() {
            pieces.push(Piece::Hour(hour));
        }
    }
    let (origin, end) = query.timerel.map_or((None, None), |rel| rel.aggregation_window());
    loop {
        match fold_pieces(&pieces, origin, end, aggregation.period) {
            Folded::Empty => return Ok(Some(None)),
            Folded::Periods(first, periods) => {
                let group = SummarisedGroup {
                    dataset_id: (!dataset.is_empty()).then(|| dataset.to_owned()),
                    kind: AttributeKind::Property,
                    periods,
                };
                return Ok(Some(Some((first, group))));
            }
            // Cut by a period boundary (or the origin): their instances decide.
            Folded::NeedPoints(starts) => {
                let mut points = BTreeMap::new();
                for &start in &starts {
                    let Some(found) = hour_points(connection, key, dataset, range, start)? else {
                        return Ok(None);
                    };
                    points.insert(start, found);
                }
                read_as_points(&mut pieces, &starts, points);
            }
        }
    }
}

/// The numbers of one hour's instances within the range (see [`points`]).
fn hour_points(
    connection: &Connection,
    key: Series,
    dataset: &str,
    range: Range,
    start: Timestamp,
) -> StoreResult<Option<Vec<(Timestamp, f64)>>> {
    let (from, to) = range.clip(start, hour_after(start));
    points(connection, key, dataset, from, to)
}

/// Rebuilds the stale hours of one attribute's history from its instances
/// (after an instance was changed or deleted); a history not rolled up
/// loses the rows the triggers made for it.
pub(crate) fn refresh(tx: &Transaction<'_>, key: Series) -> rusqlite::Result<()> {
    if !is_rolled_up(tx, key)? {
        return forget(tx, key.teid, Some(key.attr));
    }
    let stale: Vec<String> = tx
        .prepare_cached("SELECT DISTINCT hour FROM attr_rollups WHERE teid = ?1 AND attr = ?2 AND stale = 1")?
        .query_map(params![key.teid, key.attr], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for hour in stale {
        rebuild(tx, key, &hour)?;
    }
    Ok(())
}

/// Forgets the rollups of a history (`attr` `None`: every attribute), and
/// that it was rolled up: it is rolled up again when found long again.
pub(crate) fn forget(tx: &Transaction<'_>, teid: i64, attr: Option<i64>) -> rusqlite::Result<()> {
    for table in ["attr_rollups", "rolled_up"] {
        match attr {
            Some(attr) => tx
                .prepare_cached(&format!("DELETE FROM {table} WHERE teid = ?1 AND attr = ?2"))?
                .execute(params![teid, attr])?,
            None => tx
                .prepare_cached(&format!("DELETE FROM {table} WHERE teid = ?1"))?
                .execute([teid])?,
        };
    }
    Ok(())
}

/// Rewrites the rows of one hour from the instances of that hour.
fn rebuild(tx: &Transaction<'_>, key: Series, hour: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM attr_rollups WHERE teid = ?1 AND attr = ?2 AND hour = ?3")?
        .execute(params![key.teid, key.attr, hour])?;
    let Some(start) = hour_start(hour) else {
        return Ok(());
    };
    let (from, to) = (time::format(&start), time::format(&hour_after(start)));
    struct Row {
        summary: Summary,
        others: i64,
        first: Option<String>,
        last: Option<String>,
    }
    let mut by_dataset: BTreeMap<String, Row> = BTreeMap::new();
    {
        let mut statement = tx.prepare_cached(&format!(
            "SELECT coalesce(dataset_id, ''), observed_at, {IS_NUMBER}, num \
             FROM attr_instances WHERE teid = ?1 AND attr = ?2 AND observed_at >= ?3 AND observed_at < ?4"
        ))?;
        let mut rows = statement.query(params![key.teid, key.attr, from, to])?;
        while let Some(r) = rows.next()? {
            let row = by_dataset.entry(r.get(0)?).or_insert_with(|| Row {
                summary: Summary::default(),
                others: 0,
                first: None,
                last: None,
            });
            if !r.get::<_, bool>(2)? {
                row.others += 1;
                continue;
            }
            let at: String = r.get(1)?;
            row.summary.add(r.get(3)?);
            if row.first.as_ref().is_none_or(|f| at < *f) {
                row.first = Some(at.clone());
            }
            if row.last.as_ref().is_none_or(|l| at > *l) {
                row.last = Some(at);
            }
        }
    }
    for (dataset, row) in by_dataset {
        let (min, max) = if row.summary.is_empty() {
            (None, None)
        } else {
            (Some(row.summary.min), Some(row.summary.max))
        };
        tx.prepare_cached(
            "INSERT INTO attr_rollups (teid, attr, dataset, hour, count, others, stale, sum, sumsq, m2, \
             min, max, first_at, last_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?
        .execute(params![
            key.teid,
            key.attr,
            dataset,
            hour,
            i64::try_from(row.summary.count).unwrap_or(i64::MAX),
            row.others,
            row.summary.sum,
            row.summary.sumsq,
            row.summary.m2,
            min,
            max,
            row.first,
            row.last
        ])?;
    }
    Ok(())
}

/// Gives the instances of a data dir written before `num` existed their
/// numbers (its long histories are rolled up by [`prune`]).
pub(crate) fn backfill(connection: &mut Connection) -> StoreResult<()> {
    if crate::filled_to(connection)? >= ROLLUP_VERSION {
        return Ok(());
    }
    let transaction = connection.transaction().map_err(sql)?;
    set_numbers(&transaction).map_err(sql)?;
    transaction
        .pragma_update(None, "user_version", ROLLUP_VERSION)
        .map_err(sql)?;
    transaction.commit().map_err(sql)
}

/// Rolls up the long histories (`MIN_SUMMARISED` instances or more) of a
/// data dir written before `rolled_up`, when every history had rollups or
/// none had, and drops every other rollup.
pub(crate) fn prune(connection: &mut Connection) -> StoreResult<()> {
    if crate::filled_to(connection)? >= ROLLED_UP_VERSION {
        return Ok(());
    }
    let transaction = connection.transaction().map_err(sql)?;
    let long: Vec<Series> = transaction
        .prepare("SELECT teid, attr FROM attr_instances GROUP BY teid, attr HAVING count(*) >= ?1")
        .and_then(|mut s| {
            s.query_map([i64::try_from(MIN_SUMMARISED).unwrap_or(i64::MAX)], |r| {
                Ok(Series {
                    teid: r.get(0)?,
                    attr: r.get(1)?,
                })
            })?
            .collect()
        })
        .map_err(sql)?;
    for &series in &long {
        roll_up(&transaction, series).map_err(sql)?;
    }
    let pruned = transaction
        .execute(
            "DELETE FROM attr_rollups WHERE NOT EXISTS \
             (SELECT 1 FROM rolled_up r WHERE r.teid = attr_rollups.teid AND r.attr = attr_rollups.attr)",
            [],
        )
        .map_err(sql)?;
    transaction
        .pragma_update(None, "user_version", ROLLED_UP_VERSION)
        .map_err(sql)?;
    transaction.commit().map_err(sql)?;
    if !long.is_empty() || pruned > 0 {
        tracing::info!(
            histories = long.len(),
            pruned,
            "long histories rolled up, other rollups dropped"
        );
    }
    Ok(())
}

/// Sets the `num` of every instance from its document.
pub(crate) fn set_numbers(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "UPDATE attr_instances SET num = json_extract(doc, '$.value') * 1.0 \
         WHERE deleted_at IS NULL AND json_extract(doc, '$.kind') IS 'Property' \
         AND coalesce(json_type(doc, '$.value') IN ('integer', 'real', 'true', 'false'), 0);",
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use piazza_ngsild::temporal::{AggrMethod, Duration, TimeRel};
    use piazza_ngsild::{Attribute, AttributeKind};
    use piazza_store::{Store, TemporalEdit, Tenant};
    use serde_json::json;

    use super::*;
    use crate::EmbeddedStore;

    const ID: &str = "urn:r:1";
    const ATTR: &str = "https://example.org/t";

    fn minute(k: i64) -> Timestamp {
        time::parse("2024-01-01T00:00:00Z").expect("instant") + chrono::TimeDelta::minutes(k)
    }

    fn numbers(n: i64) -> Vec<Attribute> {
        (0..n)
            .map(|k| {
                let mut a = Attribute::new(AttributeKind::Property, json!(k % 17));
                a.observed_at = Some(time::format(&minute(k)));
                a
            })
            .collect()
    }

    async fn load(store: &EmbeddedStore, tenant: &Tenant, instances: Vec<Attribute>) {
        for chunk in instances.chunks(1000) {
            upsert(store, tenant, ID, chunk.to_vec()).await;
        }
    }

    /// Adds `instances` to the history of `id` (made if missing).
    async fn upsert(store: &EmbeddedStore, tenant: &Tenant, id: &str, instances: Vec<Attribute>) {
        let edit = TemporalEdit::Upsert {
            id: id.into(),
            types: vec!["https://example.org/R".into()],
            scope: Vec::new(),
            attributes: vec![(ATTR.into(), instances)],
        };
        store.temporal_edit(tenant, edit).await.expect("store").expect("edit");
    }

    /// Appends one instance of `value` observed at `minute(at)`.
    async fn append(store: &EmbeddedStore, tenant: &Tenant, value: serde_json::Value, at: i64) {
        let mut instance = Attribute::new(AttributeKind::Property, value);
        instance.observed_at = Some(time::format(&minute(at)));
        let append = TemporalEdit::Append {
            id: ID.into(),
            attributes: vec![(ATTR.into(), vec![instance])],
        };
        store
            .temporal_edit(tenant, append)
            .await
            .expect("store")
            .expect("append");
    }

    fn daily() -> TemporalQuery {
        TemporalQuery {
            timerel: Some(TimeRel::After(minute(0))),
            aggregation: Some(Aggregation {
                methods: vec![AggrMethod::TotalCount, AggrMethod::Max],
                period: Some(Duration::parse("P1D").expect("duration")),
            }),
            ..TemporalQuery::default()
        }
    }

    /// The per-day counts when the answer came from summaries, `None` when
    /// it came as instances.
    async fn daily_counts(store: &EmbeddedStore, tenant: &Tenant) -> Option<Vec<u64>> {
        let entity = store
            .temporal_entity(tenant, ID, &daily())
            .await
            .expect("read")
            .expect("entity");
        let groups = entity.summaries.get(ATTR)?;
        assert!(
            entity.attributes.is_empty(),
            "an attribute is summarised or listed, not both"
        );
        Some(groups[0].periods.iter().map(|(_, _, s)| s.count).collect())
    }

    fn stale_rows(dir: &Path, tenant: &Tenant) -> usize {
        let connection = Connection::open(dir.join("piazza.sqlite")).expect("open");
        connection
            .query_row(
                "SELECT count(*) FROM attr_rollups r JOIN temporal_entities te ON te.teid = r.teid \
                 WHERE te.tenant = ?1 AND r.stale = 1",
                [tenant.name()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .expect("count")
    }

    /// The rollup rows, and the histories rolled up, of the data dir.
    fn rolled(dir: &Path) -> (i64, i64) {
        let connection = Connection::open(dir.join("piazza.sqlite")).expect("open");
        let count = |table: &str| {
            connection
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get::<_, i64>(0))
                .expect("count")
        };
        (count("attr_rollups"), count("rolled_up"))
    }

    #[tokio::test]
    async fn long_numeric_histories_are_answered_from_rollups() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let tenant = Tenant::default();
        load(&store, &tenant, numbers(3_000)).await;
        assert_eq!(
            rolled(dir.path()),
            (0, 0),
            "no history is rolled up before it is aggregated"
        );
        // Rolled up by the first aggregation, which answers from the rollups.
        assert_eq!(daily_counts(&store, &tenant).await, Some(vec![1440, 1440, 120]));
        assert_eq!(rolled(dir.path()), (50, 1), "50 hours of one history");

        // A changed and a deleted instance leave no stale hour behind.
        let all = store
            .temporal_entity(&tenant, ID, &TemporalQuery::default())
            .await
            .expect("read")
            .expect("entity");
        let instances = &all.attributes[ATTR];
        let mut changed = instances[10].attribute.clone();
        changed.value = json!(99);
        let modify = TemporalEdit::ModifyInstance {
            id: ID.into(),
            attr: ATTR.into(),
            instance_id: instances[10].instance_id.clone(),
            instance: Box::new(changed),
        };
        store
            .temporal_edit(&tenant, modify)
            .await
            .expect("store")
            .expect("modify");
        let delete = TemporalEdit::DeleteInstance {
            id: ID.into(),
            attr: ATTR.into(),
            instance_id: instances[1500].instance_id.clone(),
        };
        store
            .temporal_edit(&tenant, delete)
            .await
            .expect("store")
            .expect("delete");
        assert_eq!(stale_rows(dir.path(), &tenant), 0);
        assert_eq!(daily_counts(&store, &tenant).await, Some(vec![1440, 1439, 120]));
        let entity = store
            .temporal_entity(&tenant, ID, &daily())
            .await
            .expect("read")
            .expect("entity");
        assert_eq!(entity.summaries[ATTR][0].periods[0].2.max, 99.0);

        // An instance recorded after the roll-up is counted into its hour.
        append(&store, &tenant, json!(5), 3_000).await;
        assert_eq!(daily_counts(&store, &tenant).await, Some(vec![1440, 1439, 121]));

        // A string among the numbers: the instances answer.
        append(&store, &tenant, json!("warm"), 2_000).await;
        assert_eq!(daily_counts(&store, &tenant).await, None);
    }

    #[tokio::test]
    async fn short_histories_are_answered_from_instances() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let tenant = Tenant::default();
        load(
            &store,
            &tenant,
            numbers(i64::try_from(MIN_SUMMARISED).expect("small") - 1),
        )
        .await;
        assert_eq!(daily_counts(&store, &tenant).await, None);
        assert_eq!(rolled(dir.path()), (0, 0), "a short history is not rolled up");
    }

    /// A temporal query meeting more long histories than one read rolls up
    /// answers them all, the rest from their instances, and leaves them to
    /// the reads after it.
    #[tokio::test]
    async fn a_read_rolls_up_a_few_histories_and_aggregates_the_others_from_instances() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let tenant = Tenant::default();
        let n = i64::try_from(MIN_SUMMARISED).expect("small");
        for k in 0..ROLL_UPS_PER_READ + 2 {
            upsert(&store, &tenant, &format!("urn:r:{k}"), numbers(n)).await;
        }
        let page = piazza_store::Page {
            offset: 0,
            limit: 100,
            count: false,
        };
        for rolled_up in [ROLL_UPS_PER_READ, ROLL_UPS_PER_READ + 2] {
            let found = store
                .temporal_query(&tenant, Arc::new(Default::default()), &daily(), page)
                .await
                .expect("query");
            let counted: Vec<u64> = found
                .entities
                .iter()
                .map(|e| match e.summaries.get(ATTR) {
                    Some(groups) => groups[0].periods.iter().map(|(_, _, s)| s.count).sum(),
                    None => e.attributes[ATTR].len() as u64,
                })
                .collect();
            assert_eq!(counted, vec![MIN_SUMMARISED; ROLL_UPS_PER_READ + 2]);
            let summarised = found.entities.iter().filter(|e| !e.summaries.is_empty()).count();
            assert_eq!(summarised, rolled_up);
            assert_eq!(rolled(dir.path()).1, i64::try_from(rolled_up).expect("small"));
        }
    }

    #[tokio::test]
    async fn an_older_data_dir_keeps_the_rollups_of_its_long_histories_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tenant = Tenant::default();
        {
            let store = EmbeddedStore::open(dir.path()).expect("store");
            load(&store, &tenant, numbers(3_000)).await;
            upsert(&store, &tenant, "urn:r:short", numbers(10)).await;
        }
        {
            // Before `rolled_up`, every history had rollups.
            let mut connection = Connection::open(dir.path().join("piazza.sqlite")).expect("open");
            let tx = connection.transaction().expect("transaction");
            let all: Vec<(i64, i64)> = tx
                .prepare("SELECT DISTINCT teid, attr FROM attr_instances")
                .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
                .expect("histories");
            for (teid, attr) in all {
                roll_up(&tx, Series { teid, attr }).expect("rollups");
            }
            tx.execute_batch("DELETE FROM rolled_up; PRAGMA user_version = 8;")
                .expect("make it a data dir of before rolled_up");
            tx.commit().expect("commit");
        }
        assert_eq!(rolled(dir.path()), (50 + 1, 0));
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("reopen"));
        assert_eq!(rolled(dir.path()), (50, 1), "the long history's rollups, kept");
        assert_eq!(daily_counts(&store, &tenant).await, Some(vec![1440, 1440, 120]));
    }

    #[tokio::test]
    async fn rollups_are_built_for_an_older_data_dir() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tenant = Tenant::default();
        {
            let store = EmbeddedStore::open(dir.path()).expect("store");
            load(&store, &tenant, numbers(3_000)).await;
        }
        {
            let connection = Connection::open(dir.path().join("piazza.sqlite")).expect("open");
            connection
                .execute_batch(
                    "DROP TRIGGER attr_rollups_deleted; \
                     DROP TRIGGER attr_rollups_changed; ALTER TABLE attr_instances DROP COLUMN num; \
                     DROP TABLE attr_rollups; PRAGMA user_version = 2;",
                )
                .expect("make it a data dir of before the rollups");
        }
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("reopen"));
        assert_eq!(daily_counts(&store, &tenant).await, Some(vec![1440, 1440, 120]));
        assert_eq!(stale_rows(dir.path(), &tenant), 0);
    }
}
