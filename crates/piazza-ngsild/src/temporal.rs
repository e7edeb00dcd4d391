//! History: the temporal representation of entities (GS CIM 009, clauses
//! 4.5.7–4.5.9, 5.6.11–5.6.16, 5.7.3–5.7.4): attribute instances through
//! time, the temporal query (`timerel`, `timeAt`, `endTimeAt`,
//! `timeproperty`, `lastN`), ISO 8601 durations, aggregation, and rendering
//! as normalized, `temporalValues` or `aggregatedValues`.
//!
//! Pure: the store keeps instances and hands them back; everything that
//! decides what they mean lives here.

use chrono::{Datelike, Months, TimeDelta};
use indexmap::IndexMap;
use serde_json::{json, Map, Value};

use crate::entity::{Attribute, AttributeKind};
use crate::error::{NgsiError, Result};
use crate::jsonld::ActiveContext;
use crate::render::{self, Format, RenderOptions};
use crate::time::{self, Timestamp};

mod summary;
pub use summary::{
    fold_pieces, hour_after, hour_within, ordered_groups, read_as_points, summarisable, Folded, HourSummary,
    PeriodWalker, Piece, Placement, SummarisedGroup, Summary, MIN_SUMMARISED,
};

/// The prefix of every attribute instance id.
pub const INSTANCE_PREFIX: &str = "urn:ngsi-ld:attribute:instance:";

/// Which timestamp of an instance a temporal query is about (`timeproperty`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeProperty {
    #[default]
    ObservedAt,
    CreatedAt,
    ModifiedAt,
    DeletedAt,
}

impl TimeProperty {
    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "observedAt" => Self::ObservedAt,
            "createdAt" => Self::CreatedAt,
            "modifiedAt" => Self::ModifiedAt,
            "deletedAt" => Self::DeletedAt,
            other => return Err(NgsiError::bad_request(format!("unknown timeproperty '{other}'"))),
        })
    }

    /// The instance's timestamp of this kind.
    pub fn of(self, instance: &Instance) -> Option<Timestamp> {
        match self {
            Self::ObservedAt => instance.attribute.observed_at.as_deref().and_then(time::parse),
            Self::CreatedAt => instance.attribute.created_at,
            Self::ModifiedAt => instance.attribute.modified_at,
            Self::DeletedAt => instance.deleted_at,
        }
    }
}

/// `timerel` with its instants: before is `t < timeAt`, after is
/// `t >= timeAt`, between is `timeAt <= t < endTimeAt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeRel {
    Before(Timestamp),
    After(Timestamp),
    Between(Timestamp, Timestamp),
}

impl TimeRel {
    /// Lower (inclusive) and upper (exclusive) bounds.
    pub fn bounds(self) -> (Option<Timestamp>, Option<Timestamp>) {
        match self {
            Self::Before(at) => (None, Some(at)),
            Self::After(at) => (Some(at), None),
            Self::Between(start, end) => (Some(start), Some(end)),
        }
    }

    pub fn contains(self, t: Timestamp) -> bool {
        let (lo, hi) = self.bounds();
        lo.is_none_or(|lo| t >= lo) && hi.is_none_or(|hi| t < hi)
    }

    /// Where aggregation periods start (`timeAt` of after/between) and
    /// where the last one ends without a period length (`endTimeAt`);
    /// `None`: at the history's first, or last, instant.
    pub fn aggregation_window(self) -> (Option<Timestamp>, Option<Timestamp>) {
        match self {
            Self::After(at) => (Some(at), None),
            Self::Between(start, end) => (Some(start), Some(end)),
            Self::Before(_) => (None, None),
        }
    }
}

/// What history to return of each entity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemporalQuery {
    pub timerel: Option<TimeRel>,
    pub timeproperty: TimeProperty,
    /// Only the last N instances of each attribute.
    pub last_n: Option<usize>,
    /// Expanded attribute names; empty means all.
    pub attrs: Vec<String>,
    /// The most instances of one entity returned at once (clause 6.3.10);
    /// beyond, the response is cut at an instant and is partial.
    pub instance_limit: usize,
    /// `orderBy=id` (clause 5.7.4.4, the only ordering of temporal
    /// queries): entities by id, descending when `true`; `None` keeps the
    /// order of creation.
    pub order_by_id: Option<bool>,
    /// The aggregation a request renders the histories as, when every one
    /// of its methods can be answered from summaries: the store may then
    /// return [`TemporalEntity::summaries`] for an attribute instead of its
    /// instances. Rendering gives the same result either way, up to the
    /// rounding of floating-point sums taken in another order.
    pub aggregation: Option<Aggregation>,
}

impl Default for TemporalQuery {
    fn default() -> Self {
        Self {
            timerel: None,
            timeproperty: TimeProperty::ObservedAt,
            last_n: None,
            attrs: Vec::new(),
            instance_limit: usize::MAX,
            order_by_id: None,
            aggregation: None,
        }
    }
}

/// The raw temporal parameters of a request.
#[derive(Clone, Copy, Debug, Default)]
pub struct TemporalParams<'a> {
    pub timerel: Option<&'a str>,
    pub time_at: Option<&'a str>,
    pub end_time_at: Option<&'a str>,
    pub timeproperty: Option<&'a str>,
    pub last_n: Option<&'a str>,
}

impl TemporalQuery {
    /// Parses and checks the temporal parameters: an inconsistent set is a
    /// BadRequestData (clause 5.7.3).
    pub fn parse(params: TemporalParams<'_>) -> Result<Self> {
        let instant = |name: &str, text: Option<&str>| -> Result<Option<Timestamp>> {
            text.map(|t| time::parse(t).ok_or_else(|| NgsiError::bad_request(format!("{name} must be a DateTime"))))
                .transpose()
        };
        let time_at = instant("timeAt", params.time_at)?;
        let end_time_at = instant("endTimeAt", params.end_time_at)?;
        let timerel = match (params.timerel, time_at, end_time_at) {
            (None, None, None) => None,
            (None, _, _) => return Err(NgsiError::bad_request("timeAt and endTimeAt need timerel")),
            (Some(_), None, _) => return Err(NgsiError::bad_request("timerel needs timeAt")),
            (Some("before"), Some(at), None) => Some(TimeRel::Before(at)),
            (Some("after"), Some(at), None) => Some(TimeRel::After(at)),
            (Some("between"), Some(start), Some(end)) if start < end => Some(TimeRel::Between(start, end)),
            (Some("between"), Some(_), Some(_)) => {
                return Err(NgsiError::bad_request("endTimeAt must be later than timeAt"))
            }
            (Some("between"), Some(_), None) => return Err(NgsiError::bad_request("timerel=between needs endTimeAt")),
            (Some("before" | "after"), Some(_), Some(_)) => {
                return Err(NgsiError::bad_request("endTimeAt only goes with timerel=between"))
            }
            (Some(other), _, _) => return Err(NgsiError::bad_request(format!("unknown timerel '{other}'"))),
        };
        let timeproperty = params
            .timeproperty
            .map(TimeProperty::parse)
            .transpose()?
            .unwrap_or_default();
        let last_n = match params.last_n {
            None => None,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(NgsiError::bad_request("lastN must be a positive integer")),
            },
        };
        Ok(Self {
            timerel,
            timeproperty,
            last_n,
            ..Self::default()
        })
    }

    /// Whether an instance is selected by the time relation.
    pub fn selects(&self, instance: &Instance) -> bool {
        match self.timerel {
            None => true,
            Some(rel) => self.timeproperty.of(instance).is_some_and(|t| rel.contains(t)),
        }
    }
}

/// One recorded instance of an attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// `urn:ngsi-ld:attribute:instance:<uuid>`.
    pub instance_id: String,
    /// The attribute as it was, with its `observedAt`, and `createdAt` /
    /// `modifiedAt` of the instance.
    pub attribute: Attribute,
    /// Set on the record of a deletion.
    pub deleted_at: Option<Timestamp>,
}

/// The temporal evolution of one entity (expanded names).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TemporalEntity {
    pub id: String,
    pub types: Vec<String>,
    pub scope: Vec<String>,
    pub created_at: Option<Timestamp>,
    pub modified_at: Option<Timestamp>,
    pub deleted_at: Option<Timestamp>,
    /// Instances of each attribute, in time order (of the query's time property).
    pub attributes: IndexMap<String, Vec<Instance>>,
    /// Set when the instance limit cut the history: the range returned.
    pub range: Option<TimeRange>,
    /// Attributes the store answered an aggregation for with summaries
    /// instead of instances (see [`TemporalQuery::aggregation`]); rendered
    /// only as `aggregatedValues`.
    pub summaries: IndexMap<String, Vec<SummarisedGroup>>,
}

impl TemporalEntity {
    /// Whether any attribute history is held, as instances or as summaries.
    pub fn has_attributes(&self) -> bool {
        !self.attributes.is_empty() || !self.summaries.is_empty()
    }
}

/// The instants a partial temporal response covers (`Content-Range: date-time`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub start: Timestamp,
    pub end: Timestamp,
    /// `lastN`, when given (the size of the Content-Range).
    pub size: Option<usize>,
}

impl TimeRange {
    /// `date-time <start>-<end>/<size|*>`.
    pub fn header(&self) -> String {
        let size = self.size.map_or_else(|| "*".to_owned(), |n| n.to_string());
        format!(
            "date-time {}-{}/{size}",
            format_instant(&self.start),
            format_instant(&self.end)
        )
    }
}

/// Formats an instant without fractional seconds when it has none.
pub fn format_instant(ts: &Timestamp) -> String {
    if ts.timestamp_subsec_micros() == 0 {
        ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    } else {
        time::format(ts)
    }
}

/// Applies `lastN` and the instance limit to instances already selected
/// by the time relation and sorted ascending per attribute. When the total
/// exceeds the limit, the history is cut at one instant, across attributes
/// (clause 6.3.10): attributes cut entirely remain, empty.
pub fn paginate(entity: &mut TemporalEntity, query: &TemporalQuery) {
    let time_of = |i: &Instance| query.timeproperty.of(i).or(i.attribute.created_at);
    if let Some(n) = query.last_n {
        for instances in entity.attributes.values_mut() {
            if instances.len() > n {
                instances.drain(..instances.len() - n);
            }
        }
    }
    let total: usize = entity.attributes.values().map(Vec::len).sum();
    let truncated = total > query.instance_limit;
    if !truncated && query.last_n.is_none() {
        return;
    }
    let mut times: Vec<Timestamp> = entity.attributes.values().flatten().filter_map(time_of).collect();
    let descending = query.last_n.is_some();
    times.sort();
    if descending {
        times.reverse();
    }
    if !truncated {
        // lastN alone: partial only if some attribute had more than N.
        return;
    }
    let limit = query.instance_limit.max(1);
    let Some(&cut) = times.get(limit - 1) else { return };
    for instances in entity.attributes.values_mut() {
        instances.retain(|i| time_of(i).is_some_and(|t| if descending { t >= cut } else { t <= cut }));
    }
    let first = times.first().copied().unwrap_or(cut);
    let start = match (query.timerel, descending) {
        (Some(TimeRel::After(at)), false) | (Some(TimeRel::Between(at, _)), false) => at,
        (Some(TimeRel::Before(at)), true) | (Some(TimeRel::Between(_, at)), true) => at,
        _ => first,
    };
    entity.range = Some(TimeRange {
        start,
        end: cut,
        size: query.last_n,
    });
}

/// A period length (ISO 8601 duration): calendar months plus an exact time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Duration {
    pub months: u32,
    pub seconds: i64,
    pub micros: i64,
}

impl Duration {
    /// Parses `PnYnMnWnDTnHnMnS` (fractions on the seconds only); the
    /// duration must not be empty.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || NgsiError::bad_request(format!("aggrPeriodDuration: '{text}' is not an ISO 8601 duration"));
        let rest = text.strip_prefix('P').ok_or_else(bad)?;
        if rest.is_empty() || rest.len() > 64 {
            return Err(bad());
        }
        let (date, clock) = match rest.split_once('T') {
            Some((_, "")) => return Err(bad()),
            Some((d, c)) => (d, Some(c)),
            None => (rest, None),
        };
        let mut months: u64 = 0;
        let mut seconds: u64 = 0;
        let mut micros: u64 = 0;
        let mut parse_part = |part: &str, units: &[(char, u64, bool)]| -> Result<()> {
            let mut number = String::new();
            let mut order = 0;
            for c in part.chars() {
                if c.is_ascii_digit() || (c == '.' || c == ',') {
                    number.push(if c == ',' { '.' } else { c });
                    continue;
                }
                let position = units[order..].iter().position(|(u, _, _)| *u == c).ok_or_else(bad)?;
                let (_, factor, is_months) = units[order + position];
                order += position + 1;
                if number.is_empty() {
                    return Err(bad());
                }
                if number.contains('.') {
                    if c != 'S' {
                        return Err(bad());
                    }
                    let value: f64 = number.parse().map_err(|_| bad())?;
                    if !value.is_finite() || value > 1e12 {
                        return Err(bad());
                    }
                    let whole = value.trunc() as u64;
                    seconds = seconds.checked_add(whole).ok_or_else(bad)?;
                    micros += ((value - value.trunc()) * 1e6).round() as u64;
                } else {
                    let value: u64 = number.parse().map_err(|_| bad())?;
                    let scaled = value.checked_mul(factor).ok_or_else(bad)?;
                    if is_months {
                        months = months.checked_add(scaled).ok_or_else(bad)?;
                    } else {
                        seconds = seconds.checked_add(scaled).ok_or_else(bad)?;
                    }
                }
                number.clear();
            }
            if number.is_empty() {
                Ok(())
            } else {
                Err(bad())
            }
        };
        parse_part(
            date,
            &[
                ('Y', 12, true),
                ('M', 1, true),
                ('W', 7 * 86_400, false),
                ('D', 86_400, false),
            ],
        )?;
        if let Some(clock) = clock {
            parse_part(clock, &[('H', 3_600, false), ('M', 60, false), ('S', 1, false)])?;
        }
        // A sane bound: 10,000 years.
        if months > 120_000 || seconds > 400_000_000_000 {
            return Err(bad());
        }
        Ok(Self {
            months: months as u32,
            seconds: seconds as i64,
            micros: micros as i64,
        })
    }

    pub fn is_zero(&self) -> bool {
        self.months == 0 && self.seconds == 0 && self.micros == 0
    }

    /// `start` plus this duration; `None` when out of range.
    pub fn add_to(&self, start: Timestamp) -> Option<Timestamp> {
        let shifted = start.checked_add_months(Months::new(self.months))?;
        // Keep the type used: chrono needs `Datelike` for month arithmetic sanity.
        let _ = shifted.year();
        shifted.checked_add_signed(TimeDelta::try_seconds(self.seconds)? + TimeDelta::microseconds(self.micros))
    }
}

/// Aggregation functions of `aggrMethods` (clause 4.5.19).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggrMethod {
    TotalCount,
    DistinctCount,
    Sum,
    Avg,
    Min,
    Max,
    Stddev,
    Sumsq,
}

impl AggrMethod {
    pub const ALL: [AggrMethod; 8] = [
        Self::TotalCount,
        Self::DistinctCount,
        Self::Sum,
        Self::Avg,
        Self::Min,
        Self::Max,
        Self::Stddev,
        Self::Sumsq,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::TotalCount => "totalCount",
            Self::DistinctCount => "distinctCount",
            Self::Sum => "sum",
            Self::Avg => "avg",
            Self::Min => "min",
            Self::Max => "max",
            Self::Stddev => "stddev",
            Self::Sumsq => "sumsq",
        }
    }

    /// Parses a comma-separated `aggrMethods` list.
    pub fn parse_list(text: &str) -> Result<Vec<Self>> {
        let mut methods = Vec::new();
        for name in text.split(',').map(str::trim) {
            let method = Self::ALL
                .into_iter()
                .find(|m| m.name() == name)
                .ok_or_else(|| NgsiError::bad_request(format!("aggrMethods: unknown aggregation method '{name}'")))?;
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        Ok(methods)
    }

    /// Applies the function to the values of one period; `None` when it
    /// does not apply to them (e.g. a sum of strings).
    pub fn apply(self, values: &[&Value]) -> Option<Value> {
        let numbers = || -> Option<Vec<f64>> { values.iter().map(|v| numeric(v)).collect() };
        match self {
            Self::TotalCount => Some(json!(values.len())),
            Self::DistinctCount => {
                let mut distinct: Vec<&Value> = Vec::new();
                for v in values {
                    if !distinct.contains(v) {
                        distinct.push(v);
                    }
                }
                Some(json!(distinct.len()))
            }
            Self::Sum => Some(json!(numbers()?.iter().sum::<f64>())),
            Self::Sumsq => Some(json!(numbers()?.iter().map(|x| x * x).sum::<f64>())),
            Self::Avg => {
                let n = numbers()?;
                (!n.is_empty()).then(|| json!(n.iter().sum::<f64>() / n.len() as f64))
            }
            Self::Stddev => {
                let n = numbers()?;
                if n.is_empty() {
                    return None;
                }
                let mean = n.iter().sum::<f64>() / n.len() as f64;
                let variance = n.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n.len() as f64;
                Some(json!(variance.sqrt()))
            }
            Self::Min | Self::Max => {
                if let Some(n) = numbers() {
                    let folded = if self == Self::Min {
                        n.iter().copied().fold(f64::INFINITY, f64::min)
                    } else {
                        n.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                    };
                    return folded.is_finite().then(|| json!(folded));
                }
                let strings: Option<Vec<&str>> = values.iter().map(|v| v.as_str()).collect();
                let strings = strings?;
                let pick = if self == Self::Min {
                    strings.iter().min()
                } else {
                    strings.iter().max()
                };
                pick.map(|s| json!(s))
            }
        }
    }
}

/// A number, or a boolean as 0/1 (clause 4.5.19 counts `true` as 1).
fn numeric(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// How to aggregate (`options=aggregatedValues`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregation {
    pub methods: Vec<AggrMethod>,
    /// `aggrPeriodDuration`; `None` or zero: one period over everything.
    pub period: Option<Duration>,
}

/// The periods of `instances` (time order) and their values: each period
/// starts at `origin` plus a multiple of `period`; empty periods are left out.
fn periods<'a>(
    instances: &[(Timestamp, &'a Value)],
    origin: Timestamp,
    period: Option<Duration>,
    last_end: Timestamp,
) -> Vec<(Timestamp, Timestamp, Vec<&'a Value>)> {
    let mut out: Vec<(Timestamp, Timestamp, Vec<&'a Value>)> = Vec::new();
    let mut walker = PeriodWalker::new(origin, period, last_end);
    for (t, value) in instances {
        let (start, end) = match walker.place(*t) {
            Placement::In(start, end) => (start, end),
            Placement::Before => continue,
            Placement::Beyond => break,
        };
        match out.last_mut() {
            Some((s, _, values)) if *s == start => values.push(value),
            _ => out.push((start, end, vec![value])),
        }
    }
    out
}

/// Renders a temporal entity: normalized (an array of instances per
/// attribute), `temporalValues`, or `aggregatedValues`.
pub fn render_temporal(
    entity: &TemporalEntity,
    context: &ActiveContext,
    options: &TemporalRender,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("id".into(), Value::String(entity.id.clone()));
    out.insert("type".into(), render::render_types(&entity.types, context));
    if !entity.scope.is_empty() {
        out.insert("scope".into(), json!(entity.scope));
    }
    if options.render.sys_attrs {
        if let Some(created) = &entity.created_at {
            out.insert("createdAt".into(), Value::String(time::format(created)));
        }
        if let Some(modified) = &entity.modified_at {
            out.insert("modifiedAt".into(), Value::String(time::format(modified)));
        }
        if let Some(deleted) = &entity.deleted_at {
            out.insert("deletedAt".into(), Value::String(time::format(deleted)));
        }
    }
    for (name, instances) in &entity.attributes {
        let value = match &options.mode {
            TemporalMode::Normalized => Value::Array(
                instances
                    .iter()
                    .map(|i| render_instance(i, context, &options.render))
                    .collect(),
            ),
            TemporalMode::Values => by_dataset(instances, |group| temporal_values(group, context, options)),
            TemporalMode::Aggregated(aggregation) => {
                by_dataset(instances, |group| aggregated(group, aggregation, options))
            }
        };
        out.insert(context.compact(name), value);
    }
    if let TemporalMode::Aggregated(aggregation) = &options.mode {
        for (name, groups) in &entity.summaries {
            let rendered = groups
                .iter()
                .map(|group| Value::Object(summary::render_group(group, aggregation)))
                .collect();
            out.insert(context.compact(name), one_or_array(rendered));
        }
    }
    out
}

/// How to render a temporal entity.
#[derive(Clone, Debug)]
pub struct TemporalRender {
    pub mode: TemporalMode,
    pub render: RenderOptions,
    pub timeproperty: TimeProperty,
    /// Where aggregation periods start: `timeAt` of after/between queries.
    pub origin: Option<Timestamp>,
    /// Where the last period ends when there is no period length.
    pub end: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TemporalMode {
    Normalized,
    Values,
    Aggregated(Aggregation),
}

/// One instance as an attribute object with its `instanceId` (and `deletedAt`).
pub fn render_instance(instance: &Instance, context: &ActiveContext, options: &RenderOptions) -> Value {
    let options = RenderOptions {
        format: Format::Normalized,
        ..options.clone()
    };
    let mut rendered = render::render_attribute(&instance.attribute, context, &options);
    if let Value::Object(map) = &mut rendered {
        map.insert("instanceId".into(), Value::String(instance.instance_id.clone()));
        if let Some(deleted) = &instance.deleted_at {
            map.insert("deletedAt".into(), Value::String(time::format(deleted)));
        }
    }
    rendered
}

/// One rendering per datasetId: an object for a single dataset, an array otherwise.
fn by_dataset(instances: &[Instance], render_group: impl Fn(&[&Instance]) -> Map<String, Value>) -> Value {
    // An attribute whose instances were all cut by pagination keeps its
    // shape, with no values.
    if instances.is_empty() {
        return Value::Object(render_group(&[]));
    }
    let mut groups: IndexMap<Option<&str>, Vec<&Instance>> = IndexMap::new();
    for instance in instances {
        groups
            .entry(instance.attribute.dataset_id.as_deref())
            .or_default()
            .push(instance);
    }
    let rendered: Vec<Value> = groups
        .into_iter()
        .map(|(dataset, group)| {
            let mut map = render_group(&group);
            if let Some(dataset) = dataset {
                map.insert("datasetId".into(), Value::String(dataset.to_owned()));
            }
            Value::Object(map)
        })
        .collect();
    one_or_array(rendered)
}

/// The kind a group of instances is shown as (the last one's).
fn group_kind(group: &[&Instance], options: &RenderOptions) -> AttributeKind {
    let kind = group
        .iter()
        .rev()
        .find(|i| i.deleted_at.is_none())
        .map_or(AttributeKind::Property, |i| i.attribute.kind);
    if kind == AttributeKind::LanguageProperty && options.lang.is_some() {
        AttributeKind::Property
    } else {
        kind
    }
}

/// The member holding the `[value, time]` pairs of a kind (clause 4.5.9).
fn values_key(kind: AttributeKind) -> &'static str {
    match kind {
        AttributeKind::Property | AttributeKind::GeoProperty => "values",
        AttributeKind::Relationship => "objects",
        AttributeKind::LanguageProperty => "languageMaps",
        AttributeKind::VocabProperty => "vocabs",
        AttributeKind::ListProperty => "valueLists",
        AttributeKind::ListRelationship => "objectLists",
        AttributeKind::JsonProperty => "jsons",
    }
}

/// The simplified value of an instance (keyValues of its attribute): a
/// LanguageProperty, JsonProperty or VocabProperty keeps its `languageMap`,
/// `json` or `vocab` wrapper (clause 4.5.9), so that it stays told apart from
/// a plain value.
fn simple_value(instance: &Instance, context: &ActiveContext, options: &RenderOptions) -> Value {
    let options = RenderOptions {
        format: Format::KeyValues,
        ..options.clone()
    };
    let keeps_wrapper = matches!(
        instance.attribute.kind,
        AttributeKind::Property
            | AttributeKind::LanguageProperty
            | AttributeKind::JsonProperty
            | AttributeKind::VocabProperty
    );
    match render::render_attribute(&instance.attribute, context, &options) {
        Value::Object(mut map) if !keeps_wrapper => {
            let key = instance.attribute.kind.value_key();
            map.remove(key).unwrap_or(Value::Object(map))
        }
        other => other,
    }
}

fn instant_of(instance: &Instance, property: TimeProperty) -> Option<Timestamp> {
    property.of(instance).or(instance.attribute.created_at)
}

fn temporal_values(group: &[&Instance], context: &ActiveContext, options: &TemporalRender) -> Map<String, Value> {
    let kind = group_kind(group, &options.render);
    let values: Vec<Value> = group
        .iter()
        .filter(|i| i.deleted_at.is_none())
        .map(|i| {
            let at = instant_of(i, options.timeproperty).map(|t| format_instant(&t));
            json!([simple_value(i, context, &options.render), at])
        })
        .collect();
    let mut map = Map::new();
    map.insert("type".into(), Value::String(kind.name().into()));
    map.insert(values_key(kind).into(), Value::Array(values));
    map
}

fn aggregated(group: &[&Instance], aggregation: &Aggregation, options: &TemporalRender) -> Map<String, Value> {
    let kind = group_kind(group, &options.render);
    let points: Vec<(Timestamp, &Value)> = group
        .iter()
        .filter(|i| i.deleted_at.is_none())
        .filter_map(|i| Some((instant_of(i, options.timeproperty)?, &i.attribute.value)))
        .collect();
    let origin = options.origin.or_else(|| points.first().map(|(t, _)| *t));
    let last_end = options.end.or_else(|| points.last().map(|(t, _)| *t));
    let mut map = Map::new();
    map.insert("type".into(), Value::String(kind.name().into()));
    let buckets = match (origin, last_end) {
        (Some(origin), Some(end)) => periods(&points, origin, aggregation.period, end),
        _ => Vec::new(),
    };
    for method in &aggregation.methods {
        map.insert(
            method.name().into(),
            period_results(&buckets, |values| method.apply(values)),
        );
    }
    map
}

/// One aggregation method's `[result, start, end]` per period; a period
/// the method does not apply to is left out.
fn period_results<T>(periods: &[(Timestamp, Timestamp, T)], result: impl Fn(&T) -> Option<Value>) -> Value {
    Value::Array(
        periods
            .iter()
            .filter_map(|(start, end, held)| Some(json!([result(held)?, format_instant(start), format_instant(end)])))
            .collect(),
    )
}

/// A single rendering as itself, several as an array (one per datasetId).
fn one_or_array(mut rendered: Vec<Value>) -> Value {
    match rendered.len() {
        1 => rendered.pop().unwrap_or(Value::Null),
        _ => Value::Array(rendered),
    }
}

#[cfg(test)]
mod tests;
