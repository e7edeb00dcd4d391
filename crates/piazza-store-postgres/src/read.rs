//! Read paths: entity queries, discovery, contexts and resources.

use std::collections::BTreeMap;

use deadpool_postgres::{GenericClient, Transaction};
use piazza_ngsild::query::geo::{SpatialFilter, PLANAR_TOLERANCE_DEG};
use piazza_ngsild::query::q::ValueBound;
use piazza_ngsild::query::{EntityQuery, GeoQuery};
use piazza_ngsild::{time, AttributeKind, Entity};
use piazza_store::{
    AttributeSummary, ContextKind, Page, QueryResult, ResourceKind, StoredContext, Tenant, TypeSummary,
};
use serde_json::Value;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::IsolationLevel;

use crate::write::decode_entity;
use crate::{values, Error, Result};

/// The most rows fetched per round trip when documents are filtered in
/// Rust: a page stops reading as soon as it is full, without the server
/// producing every candidate first.
const FETCH: i32 = 256;

pub(crate) async fn get(client: &impl GenericClient, tenant: &Tenant, id: &str) -> Result<Option<Entity>> {
    let statement = client
        .prepare_cached("SELECT doc FROM entities WHERE tenant = $1 AND id = $2")
        .await?;
    let row = client.query_opt(&statement, &[&tenant.name(), &id]).await?;
    Ok(row
        .map(|r| decode_entity(&r, 0))
        .transpose()?
        .and_then(|e| e.live(time::now())))
}

pub(crate) async fn tenant_exists(client: &impl GenericClient, tenant: &Tenant) -> Result<bool> {
    let statement = client.prepare_cached("SELECT 1 FROM tenants WHERE name = $1").await?;
    Ok(client.query_opt(&statement, &[&tenant.name()]).await?.is_some())
}

/// Every tenant anything was written in; the default tenant always.
pub(crate) async fn tenants(client: &impl GenericClient) -> Result<Vec<Tenant>> {
    let statement = client.prepare_cached("SELECT name FROM tenants ORDER BY name").await?;
    let mut tenants = vec![Tenant::default()];
    for row in client.query(&statement, &[]).await? {
        let name: String = row.try_get(0)?;
        if !name.is_empty() {
            tenants.push(Tenant::parse(&name).map_err(|e| Error::Corrupt(e.detail))?);
        }
    }
    Ok(tenants)
}

/// A statement argument.
type Arg = Box<dyn ToSql + Sync + Send>;

/// The part of a query SQL can answer: tenant, ids, type alternatives and
/// attribute presence, as candidate entity numbers (`eid`) in index order.
/// The same narrowing as the embedded store's, so both see the same
/// candidates in the same order.
struct Candidates {
    /// The driving table: `entity_types t` (one type), `entities e`, or a
    /// driving value bound's entity numbers `d` joined to `entities e`.
    from: String,
    filter: String,
    /// The candidate key the filters test, `t.eid` or `e.eid`.
    key: &'static str,
    /// The key candidates come in order of: `key`, or `d.eid` when a value
    /// bound drives.
    order: &'static str,
    args: Vec<Arg>,
    /// Nothing is left to check in Rust.
    exact: bool,
}

impl Candidates {
    /// Adds an argument; returns its placeholder.
    fn arg(&mut self, value: Arg) -> String {
        self.args.push(value);
        format!("${}", self.args.len())
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect()
    }
}

/// How the value bounds of a query's `q` narrow its candidates: the most
/// selective bound, when few enough rows meet it, is searched once and
/// drives the scan; every other bound is probed per candidate.
#[derive(Default)]
struct Narrowing {
    bounds: Vec<ValueBound>,
    driver: Option<usize>,
}

/// A bound meeting fewer index rows than this drives the scan: its entity
/// numbers are collected once into an array the candidates are looked up
/// by. Counting stops there, so a loose bound costs a bounded read.
const DRIVE_LIMIT: i64 = 5_000;

impl Narrowing {
    /// The bounds of the query's `q`, and which one drives. The rows are
    /// counted rather than left to the planner, which right after a bulk
    /// load has no statistics and would walk every entity of the type.
    async fn of(client: &impl GenericClient, tenant: &Tenant, query: &EntityQuery) -> Result<Narrowing> {
        let bounds = query.q.as_ref().map(|q| q.value_bounds()).unwrap_or_default();
        if bounds.is_empty() {
            return Ok(Narrowing::default());
        }
        let mut args: Vec<Arg> = vec![Box::new(tenant.name().to_owned())];
        let mut arg = |value: Arg| {
            args.push(value);
            format!("${}", args.len())
        };
        // Each bound is counted only up to the fewest rows counted before
        // it (the first up to DRIVE_LIMIT), since a bound meeting more
        // cannot drive: `status=="alert"` after a range meeting 2,000 rows
        // reads 2,000 index rows instead of 5,000. `ORDER BY v.value`
        // keeps each count on its index: with statistics, which take every
        // attribute's values for the range's, the planner expected 122,000
        // rows and scanned the whole table for the 1,500 there were (94-160
        // ms against 6, BENCHMARKS.md, "PostgreSQL: no JIT").
        let mut counts: Vec<String> = Vec::with_capacity(bounds.len());
        for (i, bound) in bounds.iter().enumerate() {
            let (table, condition) = values::condition(bound, &mut arg);
            let limit = match i {
                0 => DRIVE_LIMIT.to_string(),
                _ => {
                    let before: Vec<String> = (0..i).map(|j| format!("(SELECT n FROM c{j})")).collect();
                    format!("least({})", before.join(", "))
                }
            };
            counts.push(format!(
                "c{i} AS (SELECT COUNT(*) AS n FROM (SELECT 1 FROM {table} v WHERE v.tenant = $1 AND {condition} \
                 ORDER BY v.value LIMIT {limit}) s)"
            ));
        }
        let columns: Vec<String> = (0..bounds.len()).map(|i| format!("(SELECT n FROM c{i})")).collect();
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
        let statement = client
            .prepare_cached(&format!("WITH {} SELECT {}", counts.join(", "), columns.join(", ")))
            .await?;
        let row = client.query_one(&statement, &params).await?;
        let mut driver = None;
        let mut fewest = DRIVE_LIMIT;
        for i in 0..bounds.len() {
            let rows: i64 = row.try_get(i)?;
            if rows < fewest {
                fewest = rows;
                driver = Some(i);
            }
        }
        Ok(Narrowing { bounds, driver })
    }
}

/// Narrows the candidates by the value bounds (each a necessary condition
/// of a match, so no match is lost).
fn value_filter(c: &mut Candidates, narrowing: &Narrowing) {
    let key = c.key;
    for (i, bound) in narrowing.bounds.iter().enumerate() {
        let (table, condition) = values::condition(bound, &mut |value| c.arg(value));
        if Some(i) == narrowing.driver {
            // The bound's entity numbers, searched once and sorted, then
            // each entity looked up by primary key in that order (LATERAL
            // with `OFFSET 0`: a nested loop, whatever the statistics), so
            // candidates stream in eid order and a page stops reading at
            // its last entity. As `e.eid = ANY(ARRAY(...))` every candidate
            // was fetched and probed, then sorted, before the first row
            // left PostgreSQL (31 ms against 6 ms for a first page at 100k,
            // BENCHMARKS.md); on `entity_types` the planner without
            // statistics tested the array against every entity of the
            // type (800 ms). `candidates` makes the key `e.eid` here.
            c.from = format!(
                "(SELECT DISTINCT v.eid FROM {table} v WHERE v.tenant = $1 AND {condition} ORDER BY v.eid) d \
                 CROSS JOIN LATERAL (SELECT * FROM entities e WHERE e.tenant = $1 AND e.eid = d.eid OFFSET 0) e"
            );
            c.order = "d.eid";
        } else {
            // A probe of the by-entity index per candidate. `OFFSET 0`
            // keeps the planner from turning it into a join, which without
            // statistics it drove from the value rows (25,000 of them, each
            // tested against the driver's array: seconds).
            c.filter.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM {table} v WHERE v.tenant = $1 AND v.eid = {key} AND {condition} OFFSET 0)"
            ));
        }
    }
}

/// What ends a type or attribute `EXISTS` when a value bound drives: `OFFSET
/// 0` keeps it a probe of each of the driver's few candidates rather than a
/// join the planner, without statistics after a bulk load, might drive
/// from the other side.
fn probe(narrowing: &Narrowing) -> &'static str {
    if narrowing.driver.is_some() {
        " OFFSET 0"
    } else {
        ""
    }
}

fn candidates(tenant: &Tenant, query: &EntityQuery, postgis: bool, narrowing: &Narrowing) -> Candidates {
    let mut exact = query.id_pattern.is_none()
        && query.q.is_none()
        && query.geo.is_none()
        && query.scope.is_none()
        && query.alternatives.is_empty();
    let types = match query.types.as_ref().map(|t| t.alternatives()) {
        Some(Some(types)) => Some(types.into_iter().map(str::to_owned).collect::<Vec<String>>()),
        Some(None) => {
            exact = false;
            None
        }
        None => None,
    };
    let mut c = Candidates {
        from: String::from("entities e"),
        filter: String::new(),
        key: "e.eid",
        order: "e.eid",
        args: vec![Box::new(tenant.name().to_owned())],
        exact,
    };
    match types {
        // One type and no ids: walk the (tenant, type, eid) index.
        // A driving value bound takes the entities path (its array is then
        // looked up by primary key); the type is probed per candidate.
        Some(mut single) if single.len() == 1 && query.ids.is_empty() && narrowing.driver.is_none() => {
            let p = c.arg(Box::new(single.remove(0)));
            c.from = String::from("entity_types t");
            c.key = "t.eid";
            c.order = "t.eid";
            c.filter = format!("t.tenant = $1 AND t.type = {p}");
        }
        types => {
            c.filter = String::from("e.tenant = $1");
            if !query.ids.is_empty() {
                let p = c.arg(Box::new(query.ids.clone()));
                c.filter.push_str(&format!(" AND e.id = ANY({p})"));
            }
            if let Some(types) = types {
                let p = c.arg(Box::new(types));
                let probe = probe(narrowing);
                c.filter.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM entity_types x WHERE x.tenant = $1 AND x.eid = e.eid AND x.type = ANY({p}){probe})"
                ));
            }
        }
    }
    if let Some(geo) = &query.geo {
        geo_filter(&mut c, geo, postgis);
    }
    value_filter(&mut c, narrowing);
    if !query.attrs.is_empty() {
        let p = c.arg(Box::new(query.attrs.clone()));
        let (key, probe) = (c.key, probe(narrowing));
        c.filter.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM entity_attrs a WHERE a.tenant = $1 AND a.eid = {key} AND a.name = ANY({p}){probe})"
        ));
    }
    c
}

/// Narrows a geo-query's candidates to entities with a value of the
/// GeoProperty in `entity_geo` that can match: its box meets the query's
/// (when the relation bounds one), and with PostGIS its shapes pass the
/// query's [`SpatialFilter`]. Each test is a necessary condition of a match
/// (`piazza_ngsild::query::geo::spatial` says why); the matching itself
/// stays in Rust. Rows without shapes (NULL) stay candidates.
fn geo_filter(c: &mut Candidates, geo: &GeoQuery, postgis: bool) {
    let mut tests = Vec::new();
    if let Some(bounds) = geo.bounding_box() {
        let query_box = box_arg(c, bounds);
        tests.push(format!("g.bbox && {query_box}"));
    }
    match postgis.then(|| geo.spatial_filter()).flatten() {
        None => {}
        Some(SpatialFilter::Meets { shape, inside, around }) => {
            let (shape, tolerance) = (c.arg(Box::new(shape)), c.arg(Box::new(PLANAR_TOLERANCE_DEG)));
            let mut known = vec![format!(
                "ST_DWithin(g.shape, ST_GeomFromWKB({shape}, 4326), {tolerance})"
            )];
            if let Some(inside) = inside {
                known.push(format!("g.bbox <@ {}", box_arg(c, inside)));
            }
            if let Some(around) = around {
                known.push(format!("g.bbox @> {}", box_arg(c, around)));
            }
            tests.push(format!("(g.shape IS NULL OR ({}))", known.join(" AND ")));
        }
        Some(SpatialFilter::Near { sphere, angle }) => {
            let (sphere, meters) = (
                c.arg(Box::new(sphere)),
                c.arg(Box::new(angle * POSTGIS_SPHERE_RADIUS_M)),
            );
            tests.push(format!(
                "(g.sphere IS NULL OR ST_DWithin(g.sphere, ST_GeogFromWKB({sphere}), {meters}, false))"
            ));
        }
    }
    if tests.is_empty() {
        return;
    }
    let name = c.arg(Box::new(geo.geoproperty().to_owned()));
    let key = c.key;
    // The index is searched once, and the candidates looked up by key: an
    // uncorrelated ARRAY(...) is an init plan, run once. As a correlated
    // EXISTS, a planner without statistics yet (just after a bulk load)
    // reads every entity of the type and probes its geo rows one by one:
    // hundreds of milliseconds at 20,000 entities, seconds with PostGIS.
    c.filter.push_str(&format!(
        " AND {key} = ANY(ARRAY(SELECT g.eid FROM entity_geo g WHERE g.tenant = $1 AND g.attr = {name} AND {}))",
        tests.join(" AND ")
    ));
}

/// The radius of the sphere PostGIS measures geography on when told not to
/// use the spheroid: WGS84's mean radius (2a + b) / 3.
const POSTGIS_SPHERE_RADIUS_M: f64 = 6_371_008.771_415;

/// A `box` argument from `[min_lon, min_lat, max_lon, max_lat]`.
fn box_arg(c: &mut Candidates, [west, south, east, north]: [f64; 4]) -> String {
    let corners: Vec<String> = [west, south, east, north]
        .into_iter()
        .map(|v| c.arg(Box::new(v)))
        .collect();
    format!(
        "box(point({}, {}), point({}, {}))",
        corners[0], corners[1], corners[2], corners[3]
    )
}

/// The documents of all candidates, in eid order (the filtered path).
fn docs_sql(c: &Candidates) -> String {
    if c.key == "t.eid" {
        format!(
            "SELECT e.doc FROM {} JOIN entities e ON e.tenant = t.tenant AND e.eid = t.eid WHERE {} ORDER BY {}",
            c.from, c.filter, c.order
        )
    } else {
        format!("SELECT e.doc FROM {} WHERE {} ORDER BY {}", c.from, c.filter, c.order)
    }
}

/// One page of candidates (the exact path): the index is walked for the
/// rows `OFFSET` skips, and only the page's documents are read.
fn page_sql(c: &Candidates, limit: &str, offset: &str) -> String {
    format!(
        "SELECT e.doc FROM (SELECT {key} AS eid FROM {} WHERE {} ORDER BY {key} LIMIT {limit} OFFSET {offset}) p \
         JOIN entities e ON e.tenant = $1 AND e.eid = p.eid ORDER BY p.eid",
        c.from,
        c.filter,
        key = c.key
    )
}

/// How many candidates SQL leaves a query, and the plan of reading them:
/// for tests that the narrowing is really used.
#[cfg(test)]
pub(crate) async fn explain_candidates(
    client: &impl GenericClient,
    tenant: &Tenant,
    query: &EntityQuery,
    postgis: bool,
) -> Result<(i64, String)> {
    let narrowing = Narrowing::of(client, tenant, query).await?;
    let c = candidates(tenant, query, postgis, &narrowing);
    let count = format!("SELECT COUNT(*) FROM {} WHERE {}", c.from, c.filter);
    let count: i64 = client.query_one(&count, &c.params()).await?.try_get(0)?;
    let mut plan = String::new();
    for row in client.query(&format!("EXPLAIN {}", docs_sql(&c)), &c.params()).await? {
        plan.push_str(&row.try_get::<_, String>(0)?);
        plan.push('\n');
    }
    Ok((count, plan))
}

/// A read-only snapshot, so that a count and its page agree.
async fn snapshot(client: &mut deadpool_postgres::Object) -> Result<Transaction<'_>> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

pub(crate) async fn query(
    client: &mut deadpool_postgres::Object,
    tenant: &Tenant,
    query: &EntityQuery,
    page: Page,
    postgis: bool,
) -> Result<QueryResult> {
    let transaction = snapshot(client).await?;
    let narrowing = Narrowing::of(&transaction, tenant, query).await?;
    let candidates = candidates(tenant, query, postgis, &narrowing);
    let result = if candidates.exact {
        exact_page(&transaction, candidates, page).await?
    } else {
        filtered(&transaction, candidates, query, page).await?
    };
    transaction.commit().await?;
    Ok(result)
}

/// Reads candidates in chunks through a portal and keeps those `query`
/// matches.
async fn filtered(
    transaction: &Transaction<'_>,
    candidates: Candidates,
    query: &EntityQuery,
    page: Page,
) -> Result<QueryResult> {
    let statement = transaction.prepare_cached(&docs_sql(&candidates)).await?;
    let portal = transaction.bind(&statement, &candidates.params()).await?;
    let mut result = QueryResult::default();
    let mut matched: u64 = 0;
    let now = time::now();
    // A page asks first for as many rows as it could take, then for more
    // and more: when SQL's narrowing is as good as exact (a `q` of value
    // bounds), the first round trip holds the page, and a driving bound's
    // nested loop has looked up no more candidates than that.
    let mut fetch = if page.count {
        FETCH
    } else {
        i32::try_from(page.offset.saturating_add(page.limit)).map_or(FETCH, |n| n.clamp(1, FETCH))
    };
    'chunks: loop {
        let rows = transaction.query_portal(&portal, fetch).await?;
        fetch = fetch.saturating_mul(2).min(FETCH);
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let Some(entity) = decode_entity(row, 0)?.live(now) else {
                continue;
            };
            if !query.matches(&entity) {
                continue;
            }
            matched += 1;
            if matched as usize > page.offset && result.entities.len() < page.limit {
                result.entities.push(entity);
            }
            // A full page stops at once: waiting for the next match would
            // cost another round trip of candidates.
            if !page.count && result.entities.len() >= page.limit {
                break 'chunks;
            }
        }
    }
    if page.count {
        result.total = Some(matched);
    }
    Ok(result)
}

async fn exact_page(transaction: &Transaction<'_>, mut candidates: Candidates, page: Page) -> Result<QueryResult> {
    let mut result = QueryResult::default();
    if page.count {
        let sql = format!("SELECT COUNT(*) FROM {} WHERE {}", candidates.from, candidates.filter);
        let statement = transaction.prepare_cached(&sql).await?;
        let total: i64 = transaction
            .query_one(&statement, &candidates.params())
            .await?
            .try_get(0)?;
        result.total = Some(total.max(0) as u64);
    }
    if page.limit == 0 {
        return Ok(result);
    }
    let limit = candidates.arg(Box::new(i64::try_from(page.limit).unwrap_or(i64::MAX)));
    let offset = candidates.arg(Box::new(i64::try_from(page.offset).unwrap_or(i64::MAX)));
    let statement = transaction
        .prepare_cached(&page_sql(&candidates, &limit, &offset))
        .await?;
    let now = time::now();
    for row in transaction.query(&statement, &candidates.params()).await? {
        if let Some(entity) = decode_entity(&row, 0)?.live(now) {
            result.entities.push(entity);
        }
    }
    Ok(result)
}

fn kind_of(name: &str) -> Result<AttributeKind> {
    AttributeKind::from_name(name).ok_or_else(|| Error::Corrupt(format!("unknown attribute kind {name}")))
}

pub(crate) async fn types(client: &impl GenericClient, tenant: &Tenant) -> Result<Vec<TypeSummary>> {
    let mut summaries: BTreeMap<String, TypeSummary> = BTreeMap::new();
    let counts = client
        .prepare_cached("SELECT type, COUNT(*) FROM entity_types WHERE tenant = $1 GROUP BY type")
        .await?;
    for row in client.query(&counts, &[&tenant.name()]).await? {
        let (name, count): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        summaries.insert(
            name.clone(),
            TypeSummary {
                name,
                entity_count: count.max(0) as u64,
                attributes: Vec::new(),
            },
        );
    }
    let attrs = client
        .prepare_cached(
            "SELECT DISTINCT t.type, a.name, a.kind FROM entity_types t \
             JOIN entity_attrs a ON a.tenant = t.tenant AND a.eid = t.eid \
             WHERE t.tenant = $1 ORDER BY t.type, a.name, a.kind",
        )
        .await?;
    for row in client.query(&attrs, &[&tenant.name()]).await? {
        let (type_name, attr, kind): (String, String, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let kind = kind_of(&kind)?;
        if let Some(summary) = summaries.get_mut(&type_name) {
            match summary.attributes.last_mut() {
                Some((last, kinds)) if *last == attr => kinds.push(kind),
                _ => summary.attributes.push((attr, vec![kind])),
            }
        }
    }
    Ok(summaries.into_values().collect())
}

pub(crate) async fn attributes(client: &impl GenericClient, tenant: &Tenant) -> Result<Vec<AttributeSummary>> {
    let mut summaries: BTreeMap<String, AttributeSummary> = BTreeMap::new();
    let counts = client
        .prepare_cached(
            "SELECT name, COUNT(DISTINCT eid), array_agg(DISTINCT kind) FROM entity_attrs \
             WHERE tenant = $1 GROUP BY name",
        )
        .await?;
    for row in client.query(&counts, &[&tenant.name()]).await? {
        let (name, count, kinds): (String, i64, Vec<String>) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let kinds = kinds.iter().map(|k| kind_of(k)).collect::<Result<Vec<_>>>()?;
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
    let types = client
        .prepare_cached(
            "SELECT DISTINCT a.name, t.type FROM entity_attrs a \
             JOIN entity_types t ON t.tenant = a.tenant AND t.eid = a.eid \
             WHERE a.tenant = $1 ORDER BY a.name, t.type",
        )
        .await?;
    for row in client.query(&types, &[&tenant.name()]).await? {
        let (name, type_name): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        if let Some(summary) = summaries.get_mut(&name) {
            summary.types.push(type_name);
        }
    }
    Ok(summaries.into_values().collect())
}

pub(crate) async fn contexts(
    client: &impl GenericClient,
    tenant: &Tenant,
    id: Option<&str>,
) -> Result<Vec<StoredContext>> {
    let statement = client
        .prepare_cached(
            "SELECT id, url, kind, document, created_at FROM contexts \
             WHERE tenant = $1 AND ($2::text IS NULL OR id = $2) ORDER BY created_at, id",
        )
        .await?;
    let mut contexts = Vec::new();
    for row in client.query(&statement, &[&tenant.name(), &id]).await? {
        let kind: String = row.try_get(2)?;
        let Json(document) = row
            .try_get::<_, Json<Value>>(3)
            .map_err(|e| Error::Corrupt(format!("context document: {e}")))?;
        contexts.push(StoredContext {
            id: row.try_get(0)?,
            url: row.try_get(1)?,
            kind: ContextKind::from_name(&kind)
                .ok_or_else(|| Error::Corrupt(format!("unknown context kind {kind}")))?,
            document,
            created_at: row.try_get(4)?,
        });
    }
    Ok(contexts)
}

pub(crate) async fn resources(
    client: &impl GenericClient,
    tenant: &Tenant,
    kind: ResourceKind,
    id: Option<&str>,
) -> Result<Vec<Value>> {
    let statement = client
        .prepare_cached(
            "SELECT document FROM resources WHERE tenant = $1 AND kind = $2 AND ($3::text IS NULL OR id = $3) \
             ORDER BY rid",
        )
        .await?;
    let rows = client.query(&statement, &[&tenant.name(), &kind.name(), &id]).await?;
    rows.iter()
        .map(|row| {
            row.try_get::<_, Json<Value>>(0)
                .map(|Json(document)| document)
                .map_err(|e| Error::Corrupt(format!("resource document: {e}")))
        })
        .collect()
}
