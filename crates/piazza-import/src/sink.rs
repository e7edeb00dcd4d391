//! Records → broker. Entities are upserted in chunks (one broker call, one
//! storage transaction each; every entity atomic on its own). Observations
//! are gathered per entity and written in `observedAt` order at the end, so
//! the entity shows the latest one and history holds them all.
//!
//! Re-running an import: an unchanged entity is not written
//! ([`Broker::import_upsert`]); an observation whose attribute already has
//! an instance at the same `observedAt` is skipped; an observation older
//! than the entity's current one goes to history only (temporal API), so
//! back-filling never turns the current state back in time.

use std::collections::{BTreeMap, HashMap, HashSet};

use piazza_broker::ingest::{ImportMode, ImportOutcome};
use piazza_broker::{Broker, BrokerError, Payload};
use piazza_ngsild::entity::{parse_entity, ParseOptions};
use piazza_ngsild::temporal::TemporalQuery;
use piazza_ngsild::time::{self, Timestamp};
use piazza_ngsild::ErrorKind;
use serde_json::{Map, Value};

use crate::progress::Progress;
use crate::{values, ImportError, ImportResult, Options, Record, Rejection, Summary};

/// Members of a record body that are not attributes.
const NOT_ATTRIBUTES: &[&str] = &["id", "type", "scope", "expiresAt"];

pub(crate) struct Sink<'a> {
    broker: &'a Broker,
    options: &'a Options,
    mode: ImportMode,
    pending: Vec<Record>,
    /// Observations by entity id, in the order read.
    series: BTreeMap<String, Vec<Record>>,
    summary: Summary,
    progress: Progress,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(broker: &'a Broker, options: &'a Options, mode: ImportMode, total: Option<u64>) -> Self {
        Self {
            broker,
            options,
            mode,
            pending: Vec::new(),
            series: BTreeMap::new(),
            summary: Summary::default(),
            progress: Progress::new(options.progress, total, "importing"),
        }
    }

    pub(crate) fn progress(&self) -> &Progress {
        &self.progress
    }

    /// A record read, or a row that could not become one.
    pub(crate) async fn push(&mut self, item: Result<Record, Rejection>) -> ImportResult<()> {
        let record = match item.and_then(|record| self.check(record)) {
            Ok(record) => record,
            Err(rejection) => return self.reject(rejection).await,
        };
        if record.observed_at.is_some() {
            let id = record
                .body
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            self.series.entry(id).or_default().push(record);
            return Ok(());
        }
        self.pending.push(record);
        if self.pending.len() >= self.options.chunk_size {
            self.flush().await?;
        }
        Ok(())
    }

    /// A row left out on purpose (filtered, or without any value).
    pub(crate) fn skip(&mut self) {
        self.summary.skipped += 1;
        self.progress.advance(1);
    }

    /// Writes everything still buffered and returns the summary.
    pub(crate) async fn finish(mut self) -> ImportResult<Summary> {
        self.drain().await?;
        self.progress.finish();
        Ok(self.summary)
    }

    async fn drain(&mut self) -> ImportResult<()> {
        self.flush().await?;
        self.write_series().await
    }

    /// Refuses, before anything is written, what the broker would refuse
    /// (so `--strict` stops before a bad row, not after its chunk) and what
    /// does not match its Smart Data Models schema.
    fn check(&self, record: Record) -> Result<Record, Rejection> {
        let body = Value::Object(record.body.clone());
        if let Err(error) = parse_entity(&body, &record.context, ParseOptions::CREATE) {
            return Err(Rejection {
                origin: record.origin,
                reason: error.detail,
            });
        }
        // Observations and update-mode rows are fragments, not whole entities.
        let whole = record.observed_at.is_none() && self.mode == ImportMode::Replace;
        if let (Some(validator), true) = (&self.options.validator, whole) {
            if let Err(reason) = validator.validate(&Value::Object(values::key_values(&record.body))) {
                return Err(Rejection {
                    origin: record.origin,
                    reason,
                });
            }
        }
        Ok(record)
    }

    /// Counts and reports a rejection (no I/O: it is also called while writing).
    fn note(&mut self, rejection: &Rejection) {
        if self.options.report_rejections {
            self.progress.println(&format!("rejected {rejection}"));
        }
        self.summary.reject(rejection.clone());
        self.progress.advance(1);
    }

    /// A row refused before writing; `--strict` stops here.
    async fn reject(&mut self, rejection: Rejection) -> ImportResult<()> {
        self.note(&rejection);
        if self.options.strict {
            // What was read before the bad row is imported, nothing after it.
            self.drain().await?;
            self.progress.finish();
            return Err(ImportError::Strict(rejection));
        }
        Ok(())
    }

    /// Writes the entities read so far (observations wait for the end).
    pub(crate) async fn flush(&mut self) -> ImportResult<()> {
        let records = std::mem::take(&mut self.pending);
        self.upsert(records, self.mode).await
    }

    /// One broker call per chunk; counts each record's outcome.
    async fn upsert(&mut self, records: Vec<Record>, mode: ImportMode) -> ImportResult<()> {
        for chunk in records.chunks(self.options.chunk_size.max(1)) {
            let payloads = chunk
                .iter()
                .map(|r| Payload {
                    body: Value::Object(r.body.clone()),
                    context: r.context.clone(),
                })
                .collect();
            let items = self.broker.import_upsert(&self.options.tenant, payloads, mode).await?;
            let mut first = None;
            for (record, item) in chunk.iter().zip(items) {
                match item.result {
                    Ok(outcome) => self.count(outcome),
                    Err(error) => {
                        let rejection = Rejection {
                            origin: record.origin.clone(),
                            reason: error.detail,
                        };
                        self.note(&rejection);
                        first.get_or_insert(rejection);
                    }
                }
            }
            self.stop_if_strict(first)?;
        }
        Ok(())
    }

    /// A write the broker refused: with `--strict`, the import stops (what
    /// the same chunk held besides is written: each entity is atomic).
    fn stop_if_strict(&self, first: Option<Rejection>) -> ImportResult<()> {
        match first {
            Some(rejection) if self.options.strict => Err(ImportError::Strict(rejection)),
            _ => Ok(()),
        }
    }

    fn count(&mut self, outcome: ImportOutcome) {
        match outcome {
            ImportOutcome::Created => self.summary.created += 1,
            ImportOutcome::Updated => self.summary.updated += 1,
            ImportOutcome::Unchanged => self.summary.unchanged += 1,
        }
        self.progress.advance(1);
    }

    /// Writes the observations gathered, entity by entity.
    async fn write_series(&mut self) -> ImportResult<()> {
        let series = std::mem::take(&mut self.series);
        let mut live = Vec::new();
        for (id, mut points) in series {
            // Stable: observations at the same instant keep the file's order.
            points.sort_by_key(|p| p.observed_at);
            let known = self.recorded(&id, &points).await?;
            let mut latest = self.current(&id).await?;
            let mut backfill = Vec::new();
            for point in points {
                let (newer, older) = split_point(point, &known, &mut latest);
                match (newer, older) {
                    (None, None) => {
                        self.summary.unchanged += 1;
                        self.progress.advance(1);
                    }
                    (Some(newer), older) => {
                        live.push(newer);
                        // The older part of a mixed row adds history only; the
                        // row is counted once, through its newer part.
                        backfill.extend(older.map(|o| (o, false)));
                    }
                    (None, Some(older)) => backfill.push((older, true)),
                }
            }
            self.write_history(&id, backfill).await?;
            if live.len() >= self.options.chunk_size {
                self.upsert(std::mem::take(&mut live), ImportMode::Update).await?;
            }
        }
        self.upsert(live, ImportMode::Update).await
    }

    /// The (attribute, observedAt) pairs already in the history of `id`,
    /// for the attributes and time span of `points`.
    async fn recorded(&self, id: &str, points: &[Record]) -> ImportResult<HashSet<(String, Timestamp)>> {
        let attrs: HashSet<String> = points
            .iter()
            .flat_map(|p| attribute_names(p).map(|n| p.context.expand(n)))
            .collect();
        let query = TemporalQuery {
            attrs: attrs.into_iter().collect(),
            ..TemporalQuery::default()
        };
        let history = match self.broker.temporal_entity(&self.options.tenant, id, &query).await {
            Ok(history) => history,
            Err(error) if is_absent(&error) => return Ok(HashSet::new()),
            Err(error) => return Err(error.into()),
        };
        let mut known = HashSet::new();
        for (name, instances) in history.attributes {
            for instance in instances {
                if let Some(at) = instance.attribute.observed_at.as_deref().and_then(time::parse) {
                    known.insert((name.clone(), at));
                }
            }
        }
        Ok(known)
    }

    /// The `observedAt` of each attribute of the stored entity (expanded names).
    async fn current(&self, id: &str) -> ImportResult<HashMap<String, Timestamp>> {
        let entity = match self.broker.entity(&self.options.tenant, id).await {
            Ok(entity) => entity,
            Err(error) if is_absent(&error) => return Ok(HashMap::new()),
            Err(error) => return Err(error.into()),
        };
        Ok(entity
            .attributes
            .iter()
            .filter_map(|(name, instances)| {
                let at = instances
                    .iter()
                    .find(|i| i.dataset_id.is_none())?
                    .observed_at
                    .as_deref()
                    .and_then(time::parse)?;
                Some((name.clone(), at))
            })
            .collect())
    }

    /// Adds observations older than the entity's current ones to its
    /// history through the temporal API (they must not become current).
    /// Each point says whether it counts as a row in the summary.
    async fn write_history(&mut self, id: &str, points: Vec<(Record, bool)>) -> ImportResult<()> {
        let Some((first, _)) = points.first() else {
            return Ok(());
        };
        let context = first.context.clone();
        let mut body = Map::new();
        body.insert("id".into(), Value::String(id.to_owned()));
        if let Some(entity_type) = first.body.get("type") {
            body.insert("type".into(), entity_type.clone());
        }
        for (point, _) in &points {
            for name in attribute_names(point) {
                let instances = body.entry(name.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
                if let (Value::Array(list), Some(instance)) = (instances, point.body.get(name)) {
                    list.push(instance.clone());
                }
            }
        }
        let payload = Payload {
            body: Value::Object(body),
            context,
        };
        match self.broker.upsert_temporal(&self.options.tenant, payload).await {
            Ok(_) => {
                let counted = points.iter().filter(|(_, counts)| *counts).count() as u64;
                self.summary.updated += counted;
                self.progress.advance(counted);
                Ok(())
            }
            Err(BrokerError::Ngsi(error)) => {
                let mut first = None;
                for (point, _) in points.into_iter().filter(|(_, counts)| *counts) {
                    let rejection = Rejection {
                        origin: point.origin,
                        reason: error.detail.clone(),
                    };
                    self.note(&rejection);
                    first.get_or_insert(rejection);
                }
                self.stop_if_strict(first)
            }
            Err(error) => Err(error.into()),
        }
    }
}

fn attribute_names(record: &Record) -> impl Iterator<Item = &str> {
    record
        .body
        .keys()
        .map(String::as_str)
        .filter(|k| !NOT_ATTRIBUTES.contains(k))
}

/// Splits an observation into the attributes newer than the entity's
/// current ones (to apply) and the older ones (history only), dropping
/// those already recorded at that instant. Updates `latest`.
fn split_point(
    point: Record,
    known: &HashSet<(String, Timestamp)>,
    latest: &mut HashMap<String, Timestamp>,
) -> (Option<Record>, Option<Record>) {
    let Some(at) = point.observed_at else {
        return (Some(point), None);
    };
    let mut newer = point.clone();
    let mut older = point.clone();
    let (mut any_newer, mut any_older) = (false, false);
    for name in attribute_names(&point) {
        let expanded = point.context.expand(name);
        let is_known = known.contains(&(expanded.clone(), at));
        let is_newer = !is_known && latest.get(&expanded).is_none_or(|t| at > *t);
        if is_newer {
            latest.insert(expanded, at);
            older.body.remove(name);
            any_newer = true;
        } else {
            newer.body.remove(name);
            if is_known {
                older.body.remove(name);
            } else {
                any_older = true;
            }
        }
    }
    (any_newer.then_some(newer), any_older.then_some(older))
}

/// The entity or tenant does not exist yet: nothing recorded.
fn is_absent(error: &BrokerError) -> bool {
    matches!(error.kind(), ErrorKind::ResourceNotFound | ErrorKind::NonexistentTenant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;
    use piazza_ngsild::ActiveContext;
    use serde_json::json;

    fn point(day: u32, attrs: Value) -> Record {
        let at = time::parse(&format!("2020-01-{day:02}T00:00:00Z"));
        let mut body = json!({"id": "urn:ngsi-ld:S:1", "type": "S"});
        if let (Value::Object(b), Value::Object(a)) = (&mut body, attrs) {
            b.extend(a);
        }
        Record {
            origin: Origin::new("f.csv", u64::from(day) + 1),
            body: body.as_object().cloned().unwrap_or_default(),
            context: ActiveContext::core(),
            observed_at: at,
        }
    }

    #[test]
    fn observations_split_into_new_old_and_known() {
        let core = ActiveContext::core();
        let (pm10, no2) = (core.expand("pm10"), core.expand("no2"));
        let day = |d: u32| time::parse(&format!("2020-01-{d:02}T00:00:00Z")).expect("time");
        let known: HashSet<_> = [(pm10.clone(), day(5))].into_iter().collect();
        let mut latest: HashMap<_, _> = [(pm10.clone(), day(5)), (no2.clone(), day(3))].into_iter().collect();

        let (newer, older) = split_point(point(5, json!({"pm10": 1, "no2": 2})), &known, &mut latest);
        assert!(older.is_none(), "pm10 is known at day 5");
        let newer = newer.expect("no2 at day 5 is newer than day 3");
        assert!(newer.body.contains_key("no2") && !newer.body.contains_key("pm10"));
        assert_eq!(latest[&no2], day(5));

        let (newer, older) = split_point(point(4, json!({"pm10": 1})), &known, &mut latest);
        assert!(newer.is_none());
        assert!(
            older.is_some_and(|o| o.body.contains_key("pm10")),
            "day 4 is back-filled"
        );

        let (newer, older) = split_point(point(5, json!({"pm10": 1})), &known, &mut latest);
        assert!(newer.is_none() && older.is_none(), "already recorded");
    }
}
