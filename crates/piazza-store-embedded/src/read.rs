//! Read paths: run on pooled connections, never on the writer thread.

use std::collections::BTreeMap;
use std::rc::Rc;

use piazza_ngsild::query::q::ValueBound;
use piazza_ngsild::query::EntityQuery;
use piazza_ngsild::{time, AttributeKind, Entity};
use piazza_store::{AttributeSummary, Page, QueryResult, StoreError, StoreResult, StoredContext, Tenant, TypeSummary};
use rusqlite::types::Value as SqlValue;
use rusqlite::vtab::array::Array;
use rusqlite::{params, Connection, OptionalExtension, Statement};

use crate::{context_kind, decode, decode_keeping, geo, kind_of, sql, values, OffCore};

pub(crate) fn get(connection: &Connection, tenant: &Tenant, id: &str) -> StoreResult<Option<Entity>> {
    let doc: Option<String> = connection
        .prepare_cached("SELECT doc FROM entities WHERE tenant = ?1 AND id = ?2")
        .and_then(|mut s| s.query_row(params![tenant.name(), id], |r| r.get(0)).optional())
        .map_err(sql)?;
    Ok(doc.map(|d| decode(&d)).transpose()?.and_then(|e| e.live(time::now())))
}

/// The part of a query SQL can answer: tenant, ids, type alternatives and
/// attribute presence, as the candidate entity numbers (`eid`) of a `SELECT`.
///
/// The candidates always come in index order (`key`), so SQLite never sorts
/// them (no `USE TEMP B-TREE FOR ORDER BY`): a page stops reading as soon as
/// it is full, and `LIMIT/OFFSET` walks an index.
struct Candidates {
    /// The driving table: `entity_types t` (one type), `entities e`, or the
    /// driving value bound's eids joined to `entities e`.
    from: String,
    /// The WHERE clause over `from`.
    filter: String,
    /// The ordered candidate key, `t.eid`, `e.eid` or the driving list's
    /// `r.value`.
    key: &'static str,
    args: Vec<SqlValue>,
    /// The eids of the driving value bound (ascending) and the number of
    /// their `rarray` parameter, whose place `args` holds with a NULL.
    driven: Option<(usize, Array)>,
    /// Nothing is left to check in Rust.
    exact: bool,
}

impl Candidates {
    /// The `ORDER BY` that keeps candidates in eid order. None when the
    /// driving bound's eids lead: the join is a loop over that ascending
    /// list (`CROSS JOIN` keeps it outermost) with a rowid lookup each, so
    /// the rows already come in eid order, and an `ORDER BY` would make
    /// SQLite copy every candidate's document into a sorter.
    fn order_by(&self) -> String {
        if self.driven.is_some() {
            String::new()
        } else {
            format!(" ORDER BY {}", self.key)
        }
    }

    /// `statement` with the candidates' arguments bound, then `extra` ones.
    fn bind(&self, statement: &mut Statement<'_>, extra: &[SqlValue]) -> StoreResult<()> {
        for (i, arg) in self.args.iter().chain(extra).enumerate() {
            match &self.driven {
                Some((index, eids)) if *index == i + 1 => statement.raw_bind_parameter(i + 1, eids),
                _ => statement.raw_bind_parameter(i + 1, arg),
            }
            .map_err(sql)?;
        }
        Ok(())
    }
}

/// How the value bounds of a query's `q` and its geo-query narrow its
/// candidates.
#[derive(Default)]
struct Narrowing {
    bounds: Vec<ValueBound>,
    /// The test few enough entities pass to drive the scan, with their
    /// eids (ascending, distinct).
    driver: Option<(Driver, Vec<i64>)>,
}

/// What drives a narrowed scan.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Driver {
    /// The value bound of this index in `bounds`: its SQL test is implied.
    Bound(usize),
    /// The spatial index: the geo-query is still tested in Rust.
    Geo,
}

/// A bound replaces the driver found so far only when it selects less
/// than this fraction (1/n) of its rows.
const DRIVER_SHARE: i64 = 4;

impl Narrowing {
    /// The bounds of the query's `q`, driven by the most selective of them
    /// and of the geo-query's region when it selects fewer index rows than
    /// driving is worth for this page (`values::drive_limit`).
    fn of(connection: &Connection, tenant: &Tenant, query: &EntityQuery, page: Page) -> StoreResult<Narrowing> {
        let bounds = query.q.as_ref().map(|q| q.value_bounds()).unwrap_or_default();
        let mut driver = None;
        if bounds.is_empty() && query.geo.is_none() {
            return Ok(Narrowing { bounds, driver });
        }
        let span = eid_span(connection, tenant)?;
        let wanted = if page.count {
            span
        } else {
            i64::try_from(page.offset.saturating_add(page.limit).saturating_add(1)).unwrap_or(i64::MAX)
        };
        let mut fewest = values::drive_limit(span, wanted);
        if let Some(geo_query) = &query.geo {
            if let Some(eids) = geo::eids_meeting(connection, geo_query, fewest)? {
                fewest = eids.len() as i64;
                driver = Some((Driver::Geo, eids));
            }
        }
        for (i, bound) in bounds.iter().enumerate() {
            // Once a driver is found, another bound is read only as far as
            // a fraction of it: a bound many entities meet (`status=="ok"`)
            // then costs a fraction of the driver instead of as much again,
            // and one a little more selective would not have paid for its
            // reading anyway (the page stops at its last entity).
            let limit = if driver.is_some() {
                // Against a driver most bounds lose: count their rows
                // first, which leaves SQLite no row to hand out, and list
                // only one that wins.
                let limit = fewest / DRIVER_SHARE;
                if values::rows_meeting(connection, tenant, bound, limit)? >= limit {
                    continue;
                }
                limit
            } else {
                fewest
            };
            if let Some(eids) = values::eids_meeting(connection, tenant, bound, limit)? {
                fewest = eids.len() as i64;
                driver = Some((Driver::Bound(i), eids));
            }
        }
        Ok(Narrowing { bounds, driver })
    }

    fn driver_index(&self) -> Option<usize> {
        match self.driver {
            Some((Driver::Bound(i), _)) => Some(i),
            _ => None,
        }
    }
}

/// How many eids the tenant's entities span (first to last): the size of
/// a walk through all of them, from two index seeks.
fn eid_span(connection: &Connection, tenant: &Tenant) -> StoreResult<i64> {
    let span: Option<i64> = connection
        .prepare_cached(
            "SELECT (SELECT max(eid) FROM entities WHERE tenant = ?1) - (SELECT min(eid) FROM entities WHERE tenant = ?1) + 1",
        )
        .and_then(|mut s| s.query_row([tenant.name()], |r| r.get(0)))
        .map_err(sql)?;
    Ok(span.unwrap_or(0))
}

/// Appends `values` to `args` as text parameters; returns their
/// placeholders (`?4,?5,?6`) for an `IN (…)` list.
pub(crate) fn placeholders<S: AsRef<str>>(args: &mut Vec<SqlValue>, values: impl IntoIterator<Item = S>) -> String {
    let start = args.len() + 1;
    args.extend(values.into_iter().map(|v| SqlValue::Text(v.as_ref().to_owned())));
    (start..=args.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn candidates(tenant: &Tenant, query: &EntityQuery, narrowing: &Narrowing) -> Candidates {
    let mut args = vec![SqlValue::Text(tenant.name().to_owned())];
    let mut driven = None;
    let mut exact = query.id_pattern.is_none()
        && query.q.is_none()
        && query.geo.is_none()
        && query.scope.is_none()
        && query.alternatives.is_empty();
    let types = match query.types.as_ref().map(|t| t.alternatives()) {
        Some(Some(types)) => Some(types),
        Some(None) => {
            exact = false;
            None
        }
        None => None,
    };
    // Probes whose candidates mostly pass (the type, the attribute list),
    // tested after the value bounds': of the candidates a driving list
    // names, a bound rules out many and the type few, and each probe is an
    // index seek. (Measured: a quarter less time for the probes of
    // `type=T&q=n>x;s=="y"` on 100k entities.)
    let mut late = String::new();
    let (from, mut filter, key) = match types.as_deref() {
        // One type and no ids: walk the (tenant, type, eid) index, which is
        // already in eid order.
        Some([single]) if query.ids.is_empty() && narrowing.driver.is_none() => {
            let list = placeholders(&mut args, [*single]);
            (
                String::from("entity_types t"),
                format!("t.tenant = ?1 AND t.type = {list}"),
                "t.eid",
            )
        }
        _ => {
            // The tenant's entities in eid order, through (tenant, eid), or
            // those a selective value bound names, in the order of its
            // (deduplicated, sorted) eid list, each looked up by rowid; `+`
            // keeps SQLite off the (tenant, eid) index then.
            // Probes on the driving list's eid rather than the looked-up
            // row's are tested before the rowid lookup: a candidate another
            // bound or the type rules out costs no read of `entities`.
            let key = if narrowing.driver.is_some() { "r.value" } else { "e.eid" };
            let (from, mut filter) = match &narrowing.driver {
                Some((_, eids)) => {
                    args.push(SqlValue::Null);
                    let index = args.len();
                    driven = Some((index, Rc::new(eids.iter().map(|e| SqlValue::Integer(*e)).collect())));
                    (
                        format!("rarray(?{index}) r CROSS JOIN entities e"),
                        String::from("e.eid = r.value AND +e.tenant = ?1"),
                    )
                }
                None => (String::from("entities e"), String::from("e.tenant = ?1")),
            };
            if !query.ids.is_empty() {
                // A handful of rows through the (tenant, id) index; sorting
                // them is cheap.
                let list = placeholders(&mut args, &query.ids);
                filter.push_str(&format!(" AND e.id IN ({list})"));
            }
            if let Some(types) = types {
                // Several types: a probe of the type table per entity (an
                // entity with two of the types comes once).
                let list = placeholders(&mut args, &types);
                late.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM entity_types x WHERE x.eid = {key} AND x.type IN ({list}) AND x.tenant = ?1)"
                ));
            }
            (from, filter, key)
        }
    };
    if !query.attrs.is_empty() {
        // A probe of the name table's primary key per candidate, so the
        // attribute list never drives (and never sorts) the scan.
        let keys = values::keys_of(&mut args, &query.attrs);
        late.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM entity_names a WHERE a.eid = {key} AND a.key IN ({keys}))"
        ));
    }
    for (i, bound) in narrowing.bounds.iter().enumerate() {
        if Some(i) != narrowing.driver_index() {
            // A probe of the by-entity value index per candidate.
            let (table, condition) = values::condition(bound, args.len() + 1, &mut args);
            filter.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM {table} v WHERE v.eid = {key} AND {condition})"
            ));
        }
    }
    filter.push_str(&late);
    Candidates {
        from,
        filter,
        key,
        args,
        driven,
        exact,
    }
}

/// The documents of all candidates, in eid order (the filtered path).
fn docs_sql(c: &Candidates) -> String {
    if c.key == "t.eid" {
        format!(
            "SELECT e.doc FROM {} JOIN entities e ON e.eid = t.eid WHERE {} AND e.tenant = ?1{}",
            c.from,
            c.filter,
            c.order_by()
        )
    } else {
        format!("SELECT e.doc FROM {} WHERE {}{}", c.from, c.filter, c.order_by())
    }
}

/// One page of candidate eids (the exact path): an index walk, no document
/// is read for the rows `OFFSET` skips.
fn page_sql(c: &Candidates) -> String {
    let n = c.args.len();
    format!(
        "SELECT {} FROM {} WHERE {}{} LIMIT ?{} OFFSET ?{}",
        c.key,
        c.from,
        c.filter,
        c.order_by(),
        n + 1,
        n + 2,
    )
}

/// Pages this deep, and counts, read up to every candidate: they run off
/// the runtime's core from the start, as do pages longer than
/// `INLINE_DOCUMENTS`.
const INLINE_OFFSET: usize = 1_000;

/// Documents a page examines on the calling worker before the rest of its
/// scan moves off the runtime's core: a few milliseconds at most.
const INLINE_DOCUMENTS: usize = 256;

/// A page of `query`. Short work runs on the calling thread; work that may
/// be long (a count, a deep offset, a long page, a scan no driving list
/// bounds, more than `INLINE_DOCUMENTS` documents) runs through `off_core`.
pub(crate) fn query(
    connection: &Connection,
    tenant: &Tenant,
    query: &EntityQuery,
    page: Page,
    off_core: OffCore,
) -> StoreResult<QueryResult> {
    if page.count || page.offset > INLINE_OFFSET || page.limit > INLINE_DOCUMENTS {
        return off_core.run(|| page_of(connection, tenant, query, page, None));
    }
    page_of(connection, tenant, query, page, Some(off_core))
}

/// `query`'s page; `inline` is how to move off the runtime's core while
/// still on it.
fn page_of(
    connection: &Connection,
    tenant: &Tenant,
    query: &EntityQuery,
    page: Page,
    mut inline: Option<OffCore>,
) -> StoreResult<QueryResult> {
    // One snapshot for the driving bound's eids, the count and the
    // documents: a write between them cannot make a page of neither state.
    let snapshot = connection.unchecked_transaction().map_err(sql)?;
    let narrowing = Narrowing::of(&snapshot, tenant, query, page)?;
    let candidates = candidates(tenant, query, &narrowing);
    if candidates.exact {
        // An index walk of at most `INLINE_OFFSET` + limit rows here.
        return exact_page(&snapshot, candidates, page);
    }
    if narrowing.driver.is_none() {
        if let Some(off_core) = inline.take() {
            // No driving list bounds the scan: it may walk every entity.
            return off_core.run(|| filtered_page(&snapshot, &candidates, query, page, None));
        }
    }
    filtered_page(&snapshot, &candidates, query, page, inline)
}

/// The page of candidates Rust still tests; after `INLINE_DOCUMENTS`
/// documents, the rest of the scan runs through `inline` when given.
fn filtered_page(
    snapshot: &Connection,
    candidates: &Candidates,
    query: &EntityQuery,
    page: Page,
    inline: Option<OffCore>,
) -> StoreResult<QueryResult> {
    let mut statement = snapshot.prepare_cached(&docs_sql(candidates)).map_err(sql)?;
    candidates.bind(&mut statement, &[])?;
    let mut rows = statement.raw_query();
    let mut result = QueryResult::default();
    let mut matched: u64 = 0;
    let now = time::now();
    let read = query.attributes_read();
    // One document examined; false once the scan is over.
    let mut examine = || -> StoreResult<bool> {
        let Some(row) = rows.next().map_err(sql)? else {
            return Ok(false);
        };
        let full = result.entities.len() >= page.limit;
        if full && !page.count {
            return Ok(false);
        }
        let doc = row.get_ref(0).and_then(|v| Ok(v.as_str()?)).map_err(sql)?;
        if matched as usize >= page.offset && !full {
            // A match here is returned: decode it whole at once.
            if let Some(entity) = decode(doc)?.live(now).filter(|e| query.matches(e)) {
                matched += 1;
                result.entities.push(entity);
            }
        } else if decode_keeping(doc, &read)?.live(now).is_some_and(|e| query.matches(&e)) {
            // Skipped by the offset or only counted: the attributes the
            // test reads decide it.
            matched += 1;
        }
        Ok(true)
    };
    let mut examined = 0;
    while examine()? {
        examined += 1;
        if let Some(off_core) = inline.filter(|_| examined == INLINE_DOCUMENTS) {
            off_core.run(|| {
                while examine()? {}
                Ok::<_, StoreError>(())
            })?;
            break;
        }
    }
    if page.count {
        result.total = Some(matched);
    }
    Ok(result)
}

/// The page of a query SQL answers whole, on the caller's snapshot.
fn exact_page(snapshot: &Connection, candidates: Candidates, page: Page) -> StoreResult<QueryResult> {
    let mut result = QueryResult::default();
    if page.count {
        let mut statement = snapshot
            .prepare_cached(&format!(
                "SELECT COUNT(*) FROM {} WHERE {}",
                candidates.from, candidates.filter
            ))
            .map_err(sql)?;
        candidates.bind(&mut statement, &[])?;
        let total: i64 = match statement.raw_query().next().map_err(sql)? {
            Some(row) => row.get(0).map_err(sql)?,
            None => 0,
        };
        result.total = Some(total.max(0) as u64);
    }
    if page.limit == 0 {
        return Ok(result);
    }
    let tenant = candidates.args[0].clone();
    let eids: Vec<i64> = {
        let mut statement = snapshot.prepare_cached(&page_sql(&candidates)).map_err(sql)?;
        let window = [
            SqlValue::Integer(page.limit as i64),
            SqlValue::Integer(page.offset as i64),
        ];
        candidates.bind(&mut statement, &window)?;
        let mut rows = statement.raw_query();
        let mut eids = Vec::new();
        while let Some(row) = rows.next().map_err(sql)? {
            eids.push(row.get::<_, i64>(0).map_err(sql)?);
        }
        eids
    };
    let mut doc_of = snapshot
        .prepare_cached("SELECT doc FROM entities WHERE eid = ?1 AND tenant = ?2")
        .map_err(sql)?;
    let now = time::now();
    for eid in eids {
        let doc: Option<String> = doc_of
            .query_row(params![eid, tenant], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        if let Some(entity) = doc.map(|d| decode(&d)).transpose()?.and_then(|e| e.live(now)) {
            result.entities.push(entity);
        }
    }
    Ok(result)
}

pub(crate) fn types(connection: &Connection, tenant: &Tenant) -> StoreResult<Vec<TypeSummary>> {
    let mut summaries: BTreeMap<String, TypeSummary> = BTreeMap::new();
    let mut counts = connection
        .prepare_cached("SELECT type, COUNT(*) FROM entity_types WHERE tenant = ?1 GROUP BY type")
        .map_err(sql)?;
    let rows = counts
        .query_map([tenant.name()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(sql)?;
    for row in rows {
        let (name, count) = row.map_err(sql)?;
        summaries.insert(
            name.clone(),
            TypeSummary {
                name,
                entity_count: count.max(0) as u64,
                attributes: Vec::new(),
            },
        );
    }
    let mut attrs = connection
        .prepare_cached(
            "SELECT DISTINCT t.type, n.name, a.kind FROM entity_types t JOIN entity_names a ON a.eid = t.eid \
             JOIN value_names n ON n.key = a.key WHERE t.tenant = ?1 ORDER BY t.type, n.name, a.kind",
        )
        .map_err(sql)?;
    let rows = attrs
        .query_map([tenant.name()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
        })
        .map_err(sql)?;
    for row in rows {
        let (type_name, attr, kind) = row.map_err(sql)?;
        let kind = kind_of(&kind)?;
        if let Some(summary) = summaries.get_mut(&type_name) {
            push_kind(&mut summary.attributes, attr, kind);
        }
    }
    Ok(summaries.into_values().collect())
}

fn push_kind(list: &mut Vec<(String, Vec<AttributeKind>)>, name: String, kind: AttributeKind) {
    match list.last_mut() {
        Some((last, kinds)) if *last == name => kinds.push(kind),
        _ => list.push((name, vec![kind])),
    }
}

pub(crate) fn attributes(connection: &Connection, tenant: &Tenant) -> StoreResult<Vec<AttributeSummary>> {
    let mut summaries: BTreeMap<String, AttributeSummary> = BTreeMap::new();
    let mut counts = connection
        .prepare_cached(
            "SELECT n.name, COUNT(DISTINCT a.eid), group_concat(DISTINCT a.kind) FROM value_names n \
             JOIN entity_names a ON a.key = n.key WHERE n.tenant = ?1 GROUP BY n.name",
        )
        .map_err(sql)?;
    let rows = counts
        .query_map([tenant.name()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
        })
        .map_err(sql)?;
    for row in rows {
        let (name, count, kinds) = row.map_err(sql)?;
        let kinds = kinds.split(',').map(kind_of).collect::<StoreResult<Vec<_>>>()?;
        summaries.insert(
            name.clone(),
            AttributeSummary {
                name,
                entity_count: count.max(0) as u64,
                kinds,
                types: Vec::new(),
            },
        );
    }
    let mut types = connection
        .prepare_cached(
            "SELECT DISTINCT n.name, t.type FROM value_names n JOIN entity_names a ON a.key = n.key \
             JOIN entity_types t ON t.eid = a.eid WHERE n.tenant = ?1 ORDER BY n.name, t.type",
        )
        .map_err(sql)?;
    let rows = types
        .query_map([tenant.name()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(sql)?;
    for row in rows {
        let (name, type_name) = row.map_err(sql)?;
        if let Some(summary) = summaries.get_mut(&name) {
            summary.types.push(type_name);
        }
    }
    Ok(summaries.into_values().collect())
}

pub(crate) fn contexts(connection: &Connection, tenant: &Tenant, id: Option<&str>) -> StoreResult<Vec<StoredContext>> {
    let mut statement = connection
        .prepare_cached(
            "SELECT id, url, kind, document, created_at FROM contexts WHERE tenant = ?1 AND (?2 IS NULL OR id = ?2) \
             ORDER BY created_at, id",
        )
        .map_err(sql)?;
    let rows = statement
        .query_map(params![tenant.name(), id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .map_err(sql)?;
    let mut contexts = Vec::new();
    for row in rows {
        let (id, url, kind, document, created_at) = row.map_err(sql)?;
        contexts.push(StoredContext {
            id,
            url,
            kind: context_kind(&kind)?,
            document: serde_json::from_str(&document).map_err(|e| StoreError::Corrupt(format!("context: {e}")))?,
            created_at: time::parse(&created_at).ok_or_else(|| StoreError::Corrupt("context timestamp".into()))?,
        });
    }
    Ok(contexts)
}

pub(crate) fn resources(
    connection: &Connection,
    tenant: &Tenant,
    kind: piazza_store::ResourceKind,
    id: Option<&str>,
) -> StoreResult<Vec<serde_json::Value>> {
    let mut statement = connection
        .prepare_cached(
            "SELECT document FROM resources WHERE tenant = ?1 AND kind = ?2 AND (?3 IS NULL OR id = ?3) ORDER BY rid",
        )
        .map_err(sql)?;
    let rows = statement
        .query_map(params![tenant.name(), kind.name(), id], |r| r.get::<_, String>(0))
        .map_err(sql)?;
    let mut documents = Vec::new();
    for row in rows {
        let text = row.map_err(sql)?;
        documents.push(serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("resource: {e}")))?);
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use piazza_ngsild::query::{EntityQuery, TypeSelector};
    use piazza_store::{Page, Tenant};
    use rusqlite::{params_from_iter, Connection};

    use super::{candidates, docs_sql, page_sql, Driver, Narrowing};
    use crate::values::DRIVE_LIMIT;

    const FIRST_PAGE: Page = Page {
        offset: 0,
        limit: 20,
        count: false,
    };

    fn schema() -> Connection {
        let connection = Connection::open_in_memory().expect("in-memory database");
        connection.execute_batch(crate::SCHEMA).expect("schema");
        rusqlite::vtab::array::load_module(&connection).expect("rarray");
        connection
    }

    /// The plan of `statement`, one detail per line.
    fn plan(connection: &Connection, statement: &str, args: &[rusqlite::types::Value]) -> String {
        let mut explain = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {statement}"))
            .expect("explain");
        let details = explain
            .query_map(params_from_iter(args.iter()), |r| r.get::<_, String>(3))
            .expect("plan rows")
            .collect::<Result<Vec<_>, _>>()
            .expect("plan");
        details.join("\n")
    }

    fn typed(types: TypeSelector, attrs: &[&str]) -> EntityQuery {
        EntityQuery {
            types: Some(types),
            attrs: attrs.iter().map(|a| (*a).to_owned()).collect(),
            ..EntityQuery::default()
        }
    }

    fn assert_no_sort(connection: &Connection, query: &EntityQuery) {
        let tenant = Tenant::parse("plan").expect("tenant");
        let c = candidates(&tenant, query, &Narrowing::default());
        let filtered = plan(connection, &docs_sql(&c), &c.args);
        assert!(
            !filtered.contains("TEMP B-TREE"),
            "the candidates are sorted:\n{filtered}"
        );
        let mut args = c.args.clone();
        args.extend([
            rusqlite::types::Value::Integer(20),
            rusqlite::types::Value::Integer(1000),
        ]);
        let paged = plan(connection, &page_sql(&c), &args);
        assert!(!paged.contains("TEMP B-TREE"), "a page sorts its candidates:\n{paged}");
    }

    #[test]
    fn a_single_type_query_walks_the_type_index_without_sorting() {
        let connection = schema();
        let query = typed(TypeSelector::Type("https://example.org/BeeHive".into()), &[]);
        let tenant = Tenant::parse("plan").expect("tenant");
        let c = candidates(&tenant, &query, &Narrowing::default());
        let filtered = plan(&connection, &docs_sql(&c), &c.args);
        assert!(
            filtered.contains("entity_types_by_type"),
            "not driven by the type index:\n{filtered}"
        );
        assert!(
            !filtered.contains("USE TEMP B-TREE FOR ORDER BY"),
            "the candidates are sorted:\n{filtered}"
        );
        assert_no_sort(&connection, &query);
    }

    #[test]
    fn type_alternatives_and_attributes_do_not_sort_either() {
        let connection = schema();
        let types = TypeSelector::Or(vec![
            TypeSelector::Type("https://example.org/A".into()),
            TypeSelector::Type("https://example.org/B".into()),
        ]);
        assert_no_sort(&connection, &typed(types, &["https://example.org/a"]));
        assert_no_sort(
            &connection,
            &typed(
                TypeSelector::Type("https://example.org/A".into()),
                &["https://example.org/a"],
            ),
        );
        assert_no_sort(
            &connection,
            &EntityQuery {
                attrs: vec!["https://example.org/a".into()],
                ..EntityQuery::default()
            },
        );
    }

    #[test]
    fn a_selective_value_bound_drives_the_scan_and_the_others_are_probed() {
        use piazza_ngsild::query::q::Query;
        use piazza_ngsild::ActiveContext;

        let connection = schema();
        let mut query = typed(TypeSelector::Type("https://example.org/BeeHive".into()), &[]);
        query.q = Some(Query::parse("temperature>39.7;status==\"alert\"", &ActiveContext::core()).expect("q"));
        let tenant = Tenant::parse("plan").expect("tenant");
        let bounds = query.q.as_ref().map(|q| q.value_bounds()).unwrap_or_default();
        let narrowing = Narrowing {
            bounds,
            driver: Some((Driver::Bound(0), vec![3, 7, 11])),
        };
        let c = candidates(&tenant, &query, &narrowing);
        let filtered = plan(&connection, &docs_sql(&c), &c.args);
        let steps: Vec<&str> = filtered.lines().collect();
        assert!(
            steps.first().is_some_and(|s| s.starts_with("SCAN r VIRTUAL TABLE")),
            "not driven by the bound's eid list:\n{filtered}"
        );
        // The type and the other bound are probed on the list's eid, in
        // the outer loop, before the rowid lookup of what passes them.
        let step = |prefix: &str| steps.iter().position(|s| s.starts_with(prefix));
        let lookup = step("SEARCH e USING INTEGER PRIMARY KEY");
        // The string bound's probe is a search on the candidate's eid, by
        // whichever index of the value table holds it.
        let (type_probe, bound_probe) = (
            step("SEARCH x USING PRIMARY KEY"),
            steps
                .iter()
                .position(|s| s.starts_with("SEARCH v USING") && s.contains("eid=?")),
        );
        assert!(
            lookup.is_some(),
            "the candidates are not looked up by rowid:\n{filtered}"
        );
        assert!(
            type_probe.is_some() && bound_probe.is_some(),
            "the type or the string bound is not probed per entity:\n{filtered}"
        );
        assert!(
            type_probe < lookup && bound_probe < lookup,
            "the probes come after the lookup of every candidate:\n{filtered}"
        );
        assert!(
            !filtered.contains("entity_types_by_type") && !filtered.contains("number"),
            "another index drives:\n{filtered}"
        );
        assert_eq!(
            filtered.matches("SCAN").count(),
            1,
            "something but the eid list is scanned:\n{filtered}"
        );
        assert!(
            !filtered.contains("TEMP B-TREE"),
            "the driven candidates' documents are sorted:\n{filtered}"
        );
    }

    #[test]
    fn the_bound_fewest_entities_meet_drives_with_its_eids_ascending() {
        use piazza_ngsild::query::q::Query;
        use piazza_ngsild::ActiveContext;

        let connection = schema();
        let tenant = Tenant::parse("plan").expect("tenant");
        let parse = |q: &str| EntityQuery {
            q: Some(Query::parse(q, &ActiveContext::core()).expect("q")),
            ..EntityQuery::default()
        };
        let bounds = parse("n>=1;s==\"x\"").q.map(|q| q.value_bounds()).unwrap_or_default();
        let (n, s) = (&bounds[0].attribute, &bounds[1].attribute);
        // The number of each name in tenant "plan"; another tenant's name
        // numbered first must not change which rows are read.
        let key = |name: &str| -> i64 {
            connection
                .execute(
                    "INSERT OR IGNORE INTO value_names(tenant, name) VALUES ('other', ?1), ('plan', ?1)",
                    [name],
                )
                .expect("names");
            connection
                .query_row(
                    "SELECT key FROM value_names WHERE tenant = 'plan' AND name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .expect("key")
        };
        // Numbers in value order are not in eid order, and eid 4 has two.
        for (value, eid) in [(1.0, 9), (2.0, 4), (3.0, 4), (4.0, 7), (0.0, 2)] {
            connection
                .execute(
                    "INSERT INTO value_numbers(key, value, eid) VALUES (?1, ?2, ?3)",
                    rusqlite::params![key(n), value, eid],
                )
                .expect("number row");
        }
        // More entities than DRIVE_LIMIT meet s=="x".
        for eid in 0..DRIVE_LIMIT + 10 {
            connection
                .execute(
                    "INSERT INTO value_texts(key, value, eid) VALUES (?1, 'x', ?2)",
                    rusqlite::params![key(s), eid],
                )
                .expect("text row");
        }
        let driver = |q: &str| {
            Narrowing::of(&connection, &tenant, &parse(q), FIRST_PAGE)
                .expect("narrowing")
                .driver
        };
        assert_eq!(driver("n>=1;s==\"x\""), Some((Driver::Bound(0), vec![4, 7, 9])));
        assert_eq!(driver("s==\"x\";n>=1"), Some((Driver::Bound(1), vec![4, 7, 9])));
        assert_eq!(driver("s==\"x\""), None, "a bound most entities meet drives");
        assert_eq!(driver("s==\"x\";n>=10"), Some((Driver::Bound(1), vec![])));
        // After a driver of 5 rows, a bound of 3 is not worth reading; one
        // of none is.
        for eid in [3, 5, 8] {
            connection
                .execute(
                    "INSERT INTO value_texts(key, value, eid) VALUES (?1, 'z', ?2)",
                    rusqlite::params![key(s), eid],
                )
                .expect("text row");
        }
        assert_eq!(driver("n>=0;s==\"z\""), Some((Driver::Bound(0), vec![2, 4, 7, 9])));
        assert_eq!(driver("s==\"z\";n>=0"), Some((Driver::Bound(0), vec![3, 5, 8])));
        assert_eq!(driver("n>=0;s==\"w\""), Some((Driver::Bound(1), vec![])));

        // Which bound drives `q` for `page`, and how many eids it lists.
        let driven = |q: &str, page: Page| {
            Narrowing::of(&connection, &tenant, &parse(q), page)
                .expect("narrowing")
                .driver
                .map(|(d, eids)| (d, eids.len()))
        };
        // In a tenant of a million entities, walking the type index to a
        // full page would probe far more candidates than the 2,010 rows of
        // s=="x": now it drives, for a page or a count; another tenant's
        // size does not count.
        for (eid, tenant) in [(1, "other"), (5_000_000, "other"), (10, "plan")] {
            connection
                .execute(
                    "INSERT INTO entities(eid, tenant, id, doc) VALUES (?1, ?2, ?3, '{}')",
                    rusqlite::params![eid, tenant, format!("urn:e:{eid}")],
                )
                .expect("entity");
        }
        assert_eq!(driver("s==\"x\""), None, "the tenant spans one eid");
        connection
            .execute(
                "INSERT INTO entities(eid, tenant, id, doc) VALUES (1000009, 'plan', 'urn:e:last', '{}')",
                [],
            )
            .expect("entity");
        assert_eq!(
            driven("s==\"x\"", FIRST_PAGE),
            Some((Driver::Bound(0), DRIVE_LIMIT as usize + 10))
        );
        // 20,000 rows are more than a page is worth reading at this size,
        // but a count would walk all million candidates.
        let tx = connection.unchecked_transaction().expect("transaction");
        for eid in 0..20_000 {
            tx.execute(
                "INSERT INTO value_texts(key, value, eid) VALUES (?1, 'y', ?2)",
                rusqlite::params![key(s), eid],
            )
            .expect("text row");
        }
        tx.commit().expect("commit");
        assert_eq!(driven("s==\"y\"", FIRST_PAGE), None);
        let counted = Page {
            count: true,
            ..FIRST_PAGE
        };
        assert_eq!(driven("s==\"y\"", counted), Some((Driver::Bound(0), 20_000)));
    }

    #[test]
    fn the_drive_limit_grows_as_the_square_root_of_the_tenant() {
        use crate::values::drive_limit;
        assert_eq!(drive_limit(0, 21), DRIVE_LIMIT, "an empty tenant");
        assert_eq!(drive_limit(1_000, 21), DRIVE_LIMIT, "a small tenant");
        let (at_100k, at_1m) = (drive_limit(100_000, 21), drive_limit(1_000_000, 21));
        assert!((5_000..7_000).contains(&at_100k), "{at_100k}");
        assert!((17_000..20_000).contains(&at_1m), "{at_1m}");
        assert!(drive_limit(1_000_000, 1_021) > 4 * at_1m, "a deep page wants more");
        assert_eq!(drive_limit(i64::MAX, i64::MAX), 200_000, "the list stays bounded");
    }
}
