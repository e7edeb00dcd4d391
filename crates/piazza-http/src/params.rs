//! Query-string parameters and what they mean: entity selection,
//! projection, representation and paging.

use piazza_broker::Limits;
use piazza_ngsild::query::{Collation, EntityQuery, GeoQuery, OrderBy, Projection, Query, ScopeQuery, TypeSelector};
use piazza_ngsild::render::{Format, RenderOptions};
use piazza_ngsild::{ActiveContext, ErrorKind};
use piazza_store::Page;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::linked::{self, Join, Shape};

/// The longest query string accepted: hostile queries fail fast.
const MAX_QUERY_LEN: usize = 64 * 1024;

/// Decoded query parameters, in order.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(raw: Option<&str>) -> ApiResult<Params> {
        let raw = raw.unwrap_or("");
        if raw.len() > MAX_QUERY_LEN {
            return Err(ApiError::bad_request(format!(
                "query strings are limited to {MAX_QUERY_LEN} bytes"
            )));
        }
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Ok(Params(pairs))
    }

    /// Rejects parameters this endpoint does not know (clause 6.3.x).
    pub fn allow_only(&self, known: &[&str]) -> ApiResult<()> {
        for (name, _) in &self.0 {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::invalid_request(format!("unknown query parameter '{name}'")));
            }
        }
        Ok(())
    }

    pub fn from_pairs(pairs: Vec<(String, String)>) -> Params {
        Params(pairs)
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A comma-separated list parameter; empty items are an error.
    pub fn list(&self, name: &str) -> ApiResult<Option<Vec<String>>> {
        let Some(raw) = self.get(name) else { return Ok(None) };
        let items: Vec<String> = raw.split(',').map(|s| s.trim().to_owned()).collect();
        if items.iter().any(String::is_empty) {
            return Err(ApiError::bad_request(format!("parameter {name} has an empty item")));
        }
        Ok(Some(items))
    }

    pub fn options(&self) -> Vec<String> {
        self.get("options")
            .map(|o| {
                o.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn has_option(&self, option: &str) -> bool {
        self.options().iter().any(|o| o == option)
    }

    pub fn flag(&self, name: &str) -> ApiResult<bool> {
        match self.get(name) {
            None => Ok(false),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(ApiError::bad_request(format!(
                "parameter {name} must be true or false, not '{other}'"
            ))),
        }
    }

    pub fn number(&self, name: &str) -> ApiResult<Option<i64>> {
        self.get(name)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("parameter {name} must be an integer")))
            })
            .transpose()
    }
}

/// Which entities: `id`, `idPattern`, `type`, `attrs`, `q`, `scopeQ` and the geo-query.
pub fn entity_query(params: &Params, context: &ActiveContext) -> ApiResult<EntityQuery> {
    let mut query = EntityQuery::default();
    if let Some(ids) = params.list("id")? {
        for id in &ids {
            if !piazza_ngsild::entity::is_uri(id) {
                return Err(ApiError::bad_request(format!("id '{id}' is not a URI")));
            }
        }
        query.ids = ids;
    }
    if let Some(pattern) = params.get("idPattern") {
        query.id_pattern = Some(compile_pattern(pattern)?);
    }
    // `type=*`: entities of any type (clause 4.17).
    if let Some(types) = params.get("type").filter(|t| *t != "*") {
        query.types = Some(TypeSelector::parse(types, context)?);
    }
    if let Some(attrs) = params.list("attrs")? {
        query.attrs = expand_names(&attrs, context)?;
    }
    if let Some(q) = params.get("q") {
        let mut parsed = Query::parse(q, context)?;
        if let Some(names) = params.list("expandValues")? {
            parsed.expand_values(&expand_names(&names, context)?);
        }
        query.q = Some(parsed);
    }
    if let Some(scope) = params.get("scopeQ") {
        query.scope = Some(ScopeQuery::parse(scope)?);
    }
    query.geo = geo_query(params, context)?;
    Ok(query)
}

pub fn compile_pattern(pattern: &str) -> ApiResult<regex::Regex> {
    // A quantifier on a quantifier (`a**`) is accepted by this regex engine
    // but is an error in most others: clients mean something else.
    let mut previous_quantifier = false;
    let mut escaped = false;
    for c in pattern.chars() {
        let quantifier = !escaped && matches!(c, '*' | '+');
        if quantifier && previous_quantifier {
            return Err(ApiError::bad_request(format!(
                "invalid idPattern '{pattern}': repeated quantifier"
            )));
        }
        previous_quantifier = quantifier;
        escaped = !escaped && c == '\\';
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| ApiError::bad_request(format!("invalid idPattern: {e}")))
}

fn geo_query(params: &Params, context: &ActiveContext) -> ApiResult<Option<GeoQuery>> {
    let georel = params.get("georel");
    let geometry = params.get("geometry");
    let coordinates = params.get("coordinates");
    match (georel, geometry, coordinates) {
        (None, None, None) => Ok(None),
        (Some(georel), Some(geometry), Some(coordinates)) => Ok(Some(GeoQuery::parse(
            georel,
            geometry,
            &Value::String(coordinates.to_owned()),
            params.get("geoproperty"),
            context,
        )?)),
        _ => Err(ApiError::bad_request(
            "a geo-query needs georel, geometry and coordinates together",
        )),
    }
}

/// Expands attribute names, rejecting invalid ones.
pub fn expand_names(names: &[String], context: &ActiveContext) -> ApiResult<Vec<String>> {
    names
        .iter()
        .map(|name| {
            let expanded = context.expand(name);
            if piazza_ngsild::entity::is_valid_name(name) && !expanded.starts_with('@') {
                Ok(expanded)
            } else {
                Err(ApiError::bad_request(format!("invalid attribute name '{name}'")))
            }
        })
        .collect()
}

/// Which members to return, of the entities and of their linked entities:
/// `attrs`/`pick` keep, `omit` drops (expanded names; `id` and `type`
/// expand to `@id` and `@type`). A selection reaching into linked entities
/// (`rel{...}`) needs a `join` deep enough.
pub fn shape(params: &Params, context: &ActiveContext, join: Option<Join>) -> ApiResult<Shape> {
    let pick = params
        .get("pick")
        .map(|t| linked::parse_members(t, "pick"))
        .transpose()?;
    let omit = params
        .get("omit")
        .map(|t| linked::parse_members(t, "omit"))
        .transpose()?;
    let attrs = params.list("attrs")?;
    if attrs.is_some() && (pick.is_some() || omit.is_some()) {
        return Err(ApiError::bad_request("attrs cannot be combined with pick or omit"));
    }
    for (list, what) in [(&pick, "pick"), (&omit, "omit")] {
        check_join_depth(list.as_deref().map_or(0, linked::depth), join, what)?;
    }
    if let Some(attrs) = attrs {
        let projection = Projection {
            pick: Some(expand_names(&attrs, context)?),
            omit: Vec::new(),
            keep_core: true,
        };
        return Ok(Shape {
            projection,
            links: Vec::new(),
        });
    }
    Shape::build(pick.as_deref(), omit.as_deref(), context)
}

/// A selection or query `depth` linked entities deep needs `join` with at
/// least that `joinLevel`.
pub fn check_join_depth(depth: usize, join: Option<Join>, what: &str) -> ApiResult<()> {
    match join {
        _ if depth == 0 => Ok(()),
        None => Err(ApiError::bad_request(format!(
            "{what} addresses linked entities, which needs join"
        ))),
        Some(join) if depth > join.level => Err(ApiError::bad_request(format!(
            "{what} addresses linked entities {depth} levels deep, more than joinLevel {}",
            join.level
        ))),
        Some(_) => Ok(()),
    }
}

/// `orderBy` with `orderFrom` and `collation`.
pub fn order(params: &Params, context: &ActiveContext) -> ApiResult<Option<OrderBy>> {
    let collation = params
        .get("collation")
        .map(Collation::parse)
        .transpose()?
        .unwrap_or_default();
    let Some(order_by) = params.get("orderBy") else {
        return Ok(None);
    };
    let order_from = params
        .get("orderFrom")
        .map(|text| {
            serde_json::from_str::<Value>(text)
                .map_err(|_| ApiError::bad_request("orderFrom must be a JSON array of coordinates"))
        })
        .transpose()?;
    Ok(Some(OrderBy::parse(order_by, order_from.as_ref(), collation, context)?))
}

/// `options`, `format` and `lang`.
pub fn render_options(params: &Params) -> ApiResult<RenderOptions> {
    let mut options = RenderOptions::default();
    for option in params.options() {
        match option.as_str() {
            "sysAttrs" => options.sys_attrs = true,
            "keyValues" | "simplified" | "concise" | "normalized" => {
                options.format = Format::from_option(&option).unwrap_or_default()
            }
            // Options of other operations are accepted and have no effect here.
            "noOverwrite" | "replace" | "update" | "temporalValues" | "aggregatedValues" | "audit" | "noHistory" => {}
            other => return Err(ApiError::invalid_request(format!("unknown option '{other}'"))),
        }
    }
    if let Some(format) = params.get("format") {
        options.format = Format::from_option(format)
            .ok_or_else(|| ApiError::invalid_request(format!("unknown format '{format}'")))?;
    }
    if let Some(lang) = params.get("lang") {
        if lang.is_empty() {
            return Err(ApiError::bad_request("lang must not be empty"));
        }
        options.lang = Some(lang.to_owned());
    }
    Ok(options)
}

/// `limit`, `offset` and `count`.
pub fn page(params: &Params, limits: &Limits) -> ApiResult<Page> {
    let limit = match params.number("limit")? {
        None => limits.default_page_size,
        Some(n) if n < 0 => return Err(ApiError::bad_request("limit must not be negative")),
        Some(n) if n as u64 > limits.max_page_size as u64 => {
            return Err(ApiError::new(
                ErrorKind::TooManyResults,
                format!("limit may be at most {}", limits.max_page_size),
            ))
        }
        Some(n) => n as usize,
    };
    let offset = match params.number("offset")? {
        None => 0,
        Some(n) if n < 0 => return Err(ApiError::bad_request("offset must not be negative")),
        Some(n) => n as usize,
    };
    let count = params.flag("count")?;
    if limit == 0 && !count {
        return Err(ApiError::bad_request("limit=0 is only allowed with count=true"));
    }
    Ok(Page { offset, limit, count })
}
