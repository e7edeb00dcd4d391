//! Read paths: run on pooled connections, never on the writer thread.

use std::collections::BTreeMap;

use piazza_ngsild::query::EntityQuery;
use piazza_ngsild::{time, AttributeKind, Entity};
use piazza_store::{AttributeSummary, Page, QueryResult, StoreError, StoreResult, StoredContext, Tenant, TypeSummary};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use crate::{context_kind, decode, kind_of, sql};

pub(crate) fn get(connection: &Connection, tenant: &Tenant, id: &str) -> StoreResult<Option<Entity>> {
    let doc: Option<String> = connection
        .prepare_cached("SELECT doc FROM entities WHERE tenant = ?1 AND id = ?2")
        .and_then(|mut s| s.query_row(params![tenant.name(), id], |r| r.get(0)).optional())
        .map_err(sql)?;
    Ok(doc.map(|d| decode(&d)).transpose()?.and_then(|e| e.live(time::now())))
}

/// The part of a query SQL can answer: tenant, ids, type alternatives and
/// attribute presence. Returns the WHERE clause, its arguments, and whether
/// it is exact (nothing left to check in Rust).
fn candidates(tenant: &Tenant, query: &EntityQuery) -> (String, Vec<SqlValue>, bool) {
    let mut clause = String::from("tenant = ?1");
    let mut args = vec![SqlValue::Text(tenant.name().to_owned())];
    let mut exact = query.id_pattern.is_none()
        && query.q.is_none()
        && query.geo.is_none()
        && query.scope.is_none()
        && query.alternatives.is_empty();
    let placeholders = |args: &mut Vec<SqlValue>, values: &[&str]| -> String {
        let start = args.len() + 1;
        args.extend(values.iter().map(|v| SqlValue::Text((*v).to_owned())));
        (start..start + values.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    if !query.ids.is_empty() {
        let ids: Vec<&str> = query.ids.iter().map(String::as_str).collect();
        let list = placeholders(&mut args, &ids);
        clause.push_str(&format!(" AND id IN ({list})"));
    }
    match query.types.as_ref().map(|t| t.alternatives()) {
        Some(Some(types)) => {
            let list = placeholders(&mut args, &types);
            clause.push_str(&format!(
                " AND eid IN (SELECT eid FROM entity_types WHERE tenant = ?1 AND type IN ({list}))"
            ));
        }
        Some(None) => exact = false,
        None => {}
    }
    if !query.attrs.is_empty() {
        let names: Vec<&str> = query.attrs.iter().map(String::as_str).collect();
        let list = placeholders(&mut args, &names);
        clause.push_str(&format!(
            " AND eid IN (SELECT eid FROM entity_attrs WHERE tenant = ?1 AND name IN ({list}))"
        ));
    }
    (clause, args, exact)
}

pub(crate) fn query(
    connection: &Connection,
    tenant: &Tenant,
    query: &EntityQuery,
    page: Page,
) -> StoreResult<QueryResult> {
    let (clause, args, exact) = candidates(tenant, query);
    if exact {
        return exact_page(connection, &clause, args, page);
    }
    let mut statement = connection
        .prepare(&format!("SELECT doc FROM entities WHERE {clause} ORDER BY eid"))
        .map_err(sql)?;
    let mut rows = statement.query(params_from_iter(args)).map_err(sql)?;
    let mut result = QueryResult::default();
    let mut matched: u64 = 0;
    let now = time::now();
    while let Some(row) = rows.next().map_err(sql)? {
        let doc: String = row.get(0).map_err(sql)?;
        let Some(entity) = decode(&doc)?.live(now) else {
            continue;
        };
        if !query.matches(&entity) {
            continue;
        }
        matched += 1;
        if matched as usize > page.offset && result.entities.len() < page.limit {
            result.entities.push(entity);
        } else if !page.count && result.entities.len() >= page.limit {
            break;
        }
    }
    if page.count {
        result.total = Some(matched);
    }
    Ok(result)
}

fn exact_page(connection: &Connection, clause: &str, args: Vec<SqlValue>, page: Page) -> StoreResult<QueryResult> {
    let mut result = QueryResult::default();
    if page.count {
        let total: i64 = connection
            .prepare_cached(&format!("SELECT COUNT(*) FROM entities WHERE {clause}"))
            .and_then(|mut s| s.query_row(params_from_iter(args.iter()), |r| r.get(0)))
            .map_err(sql)?;
        result.total = Some(total.max(0) as u64);
    }
    if page.limit == 0 {
        return Ok(result);
    }
    let n = args.len();
    let mut statement = connection
        .prepare_cached(&format!(
            "SELECT doc FROM entities WHERE {clause} ORDER BY eid LIMIT ?{} OFFSET ?{}",
            n + 1,
            n + 2
        ))
        .map_err(sql)?;
    let mut all_args = args;
    all_args.push(SqlValue::Integer(page.limit as i64));
    all_args.push(SqlValue::Integer(page.offset as i64));
    let docs = statement
        .query_map(params_from_iter(all_args), |r| r.get::<_, String>(0))
        .map_err(sql)?;
    let now = time::now();
    for doc in docs {
        if let Some(entity) = decode(&doc.map_err(sql)?)?.live(now) {
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
            "SELECT DISTINCT t.type, a.name, a.kind FROM entity_types t JOIN entity_attrs a ON a.eid = t.eid \
             WHERE t.tenant = ?1 ORDER BY t.type, a.name, a.kind",
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
            "SELECT name, COUNT(DISTINCT eid), group_concat(DISTINCT kind) FROM entity_attrs WHERE tenant = ?1 GROUP BY name",
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
            "SELECT DISTINCT a.name, t.type FROM entity_attrs a JOIN entity_types t ON t.eid = a.eid \
             WHERE a.tenant = ?1 ORDER BY a.name, t.type",
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
