//! Aggregation in the database: an `aggregatedValues` request over a long
//! numeric history is summed by PostgreSQL, one row per period, instead of
//! shipping every instance to be decoded and folded in Rust.
//!
//! The periods are cut by the model's `PeriodWalker`, the same as the
//! instance path, and sent as an array of boundaries: `width_bucket` places
//! each instant by binary search among them. The numbers come from the
//! generated `num` column (migration 7), so an instance's document is not
//! parsed at read time. What the embedded store's rollups decline, this
//! declines too (another time property, `lastN`, a short history, anything
//! but live numbers in the range, more instances than a response may
//! hold): the instances are then read as before.

use deadpool_postgres::GenericClient;
use piazza_ngsild::temporal::{
    PeriodWalker, Placement, SummarisedGroup, Summary, TemporalQuery, TimeProperty, MIN_SUMMARISED,
};
use piazza_ngsild::time::Timestamp;
use piazza_ngsild::AttributeKind;
use piazza_store::Tenant;
use tokio_postgres::types::ToSql;

use crate::Result;

/// The most periods one datasetId's range is cut into here; past it (a
/// one-second period over a year) the instances are read instead.
const MAX_PERIODS: usize = 100_000;

/// The instances of the range; `observed_at` is compared with open bounds
/// as -infinity and infinity, so one statement serves every `timerel`.
const RANGE: &str = "tenant = $1 AND entity_id = $2 AND attr = $3 \
     AND observed_at >= coalesce($4::timestamptz, '-infinity') AND observed_at < coalesce($5::timestamptz, 'infinity')";

/// One datasetId's instances in the range: how many, how many are not live
/// numbers, the first and last instant.
struct Extent {
    dataset: String,
    count: i64,
    others: i64,
    first: Timestamp,
    last: Timestamp,
}

/// The periods of `attr`'s history summarised per datasetId, or `None` when
/// the instances must be read instead.
pub(crate) async fn summarised(
    client: &impl GenericClient,
    tenant: &Tenant,
    id: &str,
    attr: &str,
    query: &TemporalQuery,
) -> Result<Option<Vec<SummarisedGroup>>> {
    let Some(aggregation) = &query.aggregation else {
        return Ok(None);
    };
    if query.timeproperty != TimeProperty::ObservedAt || query.last_n.is_some() {
        return Ok(None);
    }
    let (lo, hi) = query.timerel.map_or((None, None), |rel| rel.bounds());
    // Without a range, instances without observedAt are aggregated at
    // their createdAt; the range below leaves them out.
    if query.timerel.is_none() && has_untimed(client, tenant, id, attr).await? {
        return Ok(None);
    }
    let extents = extents(client, tenant, id, attr, lo, hi).await?;
    let total: i64 = extents.iter().map(|e| e.count).sum();
    if extents.iter().any(|e| e.others > 0) || u64::try_from(total).map_or(true, |t| t < MIN_SUMMARISED) {
        return Ok(None);
    }
    let (window_origin, window_end) = query.timerel.map_or((None, None), |rel| rel.aggregation_window());
    let mut groups = Vec::with_capacity(extents.len());
    let mut summarised = 0u64;
    let periodic = aggregation.period.is_some_and(|p| !p.is_zero());
    for extent in extents {
        let origin = window_origin.unwrap_or(extent.first);
        let mut walker = PeriodWalker::new(origin, aggregation.period, window_end.unwrap_or(extent.last));
        let Some(cuts) = cuts(&mut walker, periodic, origin, &extent) else {
            return Ok(None);
        };
        let periods = periods(client, tenant, id, attr, (lo, hi), &extent.dataset, &cuts).await?;
        summarised += periods.iter().map(|(_, _, s)| s.count).sum::<u64>();
        if !periods.is_empty() {
            groups.push(SummarisedGroup {
                dataset_id: (!extent.dataset.is_empty()).then_some(extent.dataset),
                kind: AttributeKind::Property,
                periods,
            });
        }
    }
    if usize::try_from(summarised).map_or(true, |n| n > query.instance_limit) {
        return Ok(None);
    }
    Ok(Some(groups))
}

/// Whether the attribute has instances without `observedAt`.
async fn has_untimed(client: &impl GenericClient, tenant: &Tenant, id: &str, attr: &str) -> Result<bool> {
    let statement = client
        .prepare_cached(
            "SELECT 1 FROM attr_instances WHERE tenant = $1 AND entity_id = $2 AND attr = $3 \
             AND observed_at IS NULL LIMIT 1",
        )
        .await?;
    Ok(client
        .query_opt(&statement, &[&tenant.name(), &id, &attr])
        .await?
        .is_some())
}

/// Each datasetId's extent in the range, in the order of its first instant
/// (the order the instance path groups them in).
async fn extents(
    client: &impl GenericClient,
    tenant: &Tenant,
    id: &str,
    attr: &str,
    lo: Option<Timestamp>,
    hi: Option<Timestamp>,
) -> Result<Vec<Extent>> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT coalesce(dataset_id, ''), count(*), count(*) FILTER (WHERE num IS NULL), \
             min(observed_at), max(observed_at) FROM attr_instances WHERE {RANGE} \
             GROUP BY 1 ORDER BY 4, 1"
        ))
        .await?;
    let rows = client
        .query(&statement, &[&tenant.name(), &id, &attr, &lo, &hi])
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Extent {
                dataset: row.try_get(0)?,
                count: row.try_get(1)?,
                others: row.try_get(2)?,
                first: row.try_get(3)?,
                last: row.try_get(4)?,
            })
        })
        .collect()
}

/// The periods of one datasetId's extent, and the thresholds `width_bucket`
/// places its instants among: bucket k (from 1) is period k − 1, bucket 0
/// is before the origin, a bucket past the periods is beyond the last one.
#[derive(Debug, PartialEq)]
struct Cuts {
    spans: Vec<(Timestamp, Timestamp)>,
    thresholds: Vec<Timestamp>,
}

/// The cuts of `extent`, as the walker places its instants; `None` when
/// there are too many periods.
fn cuts(walker: &mut PeriodWalker, periodic: bool, origin: Timestamp, extent: &Extent) -> Option<Cuts> {
    let mut cuts = Cuts {
        spans: Vec::new(),
        thresholds: Vec::new(),
    };
    if !periodic {
        // Without a period length the walker places every instant in its
        // one period, even one past the period's nominal end.
        if let Placement::In(start, end) = walker.place(extent.first) {
            cuts.spans.push((start, end));
            cuts.thresholds.push(extent.first);
        }
        return Some(cuts);
    }
    let mut placed = walker.place(extent.first.max(origin));
    while let Placement::In(start, end) = placed {
        cuts.spans.push((start, end));
        cuts.thresholds.push(start);
        if cuts.spans.len() > MAX_PERIODS {
            return None;
        }
        if end > extent.last {
            break;
        }
        placed = walker.place(end);
    }
    // The end of the last period: an instant past it (only when the walker
    // gave up, beyond the last representable period) is in none.
    if let Some(&(_, end)) = cuts.spans.last() {
        cuts.thresholds.push(end);
    }
    Some(cuts)
}

/// The non-empty periods of one datasetId's numbers in the range.
async fn periods(
    client: &impl GenericClient,
    tenant: &Tenant,
    id: &str,
    attr: &str,
    (lo, hi): (Option<Timestamp>, Option<Timestamp>),
    dataset: &str,
    cuts: &Cuts,
) -> Result<Vec<(Timestamp, Timestamp, Summary)>> {
    if cuts.spans.is_empty() {
        return Ok(Vec::new());
    }
    let statement = client
        .prepare_cached(&format!(
            "SELECT b, count(*), sum(num), sum(num * num), var_pop(num) * count(*), min(num), max(num) \
             FROM (SELECT width_bucket(observed_at, $7::timestamptz[]) AS b, num FROM attr_instances \
                   WHERE {RANGE} AND coalesce(dataset_id, '') = $6) AS placed \
             WHERE b BETWEEN 1 AND $8 GROUP BY b ORDER BY b"
        ))
        .await?;
    let last_bucket = i32::try_from(cuts.spans.len()).unwrap_or(i32::MAX);
    let params: [&(dyn ToSql + Sync); 8] = [
        &tenant.name(),
        &id,
        &attr,
        &lo,
        &hi,
        &dataset,
        &cuts.thresholds,
        &last_bucket,
    ];
    let rows = client.query(&statement, &params).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let bucket: i32 = row.try_get(0)?;
        let Some(&(start, end)) = usize::try_from(bucket - 1).ok().and_then(|k| cuts.spans.get(k)) else {
            continue;
        };
        let count: i64 = row.try_get(1)?;
        let summary = Summary {
            count: u64::try_from(count).unwrap_or(0),
            sum: row.try_get(2)?,
            sumsq: row.try_get(3)?,
            m2: row.try_get(4)?,
            min: row.try_get(5)?,
            max: row.try_get(6)?,
        };
        out.push((start, end, summary));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use piazza_ngsild::temporal::Duration;
    use piazza_ngsild::time;

    fn at(text: &str) -> Timestamp {
        time::parse(text).expect("valid time")
    }

    fn extent(first: &str, last: &str) -> Extent {
        Extent {
            dataset: String::new(),
            count: 2,
            others: 0,
            first: at(first),
            last: at(last),
        }
    }

    fn cut(period: Option<&str>, origin: &str, last_end: &str, extent: &Extent) -> Option<Cuts> {
        let period = period.map(|p| Duration::parse(p).expect("duration"));
        let mut walker = PeriodWalker::new(at(origin), period, at(last_end));
        cuts(&mut walker, period.is_some(), at(origin), extent)
    }

    #[test]
    fn periods_run_from_the_first_instant_s_to_the_last_instant_s() {
        let span = extent("2024-01-01T05:00:00Z", "2024-01-03T12:00:00Z");
        let cuts = cut(Some("P1D"), "2024-01-01T00:00:00Z", "2024-01-03T12:00:00Z", &span).expect("few");
        let days: Vec<Timestamp> = ["01", "02", "03", "04"]
            .iter()
            .map(|d| at(&format!("2024-01-{d}T00:00:00Z")))
            .collect();
        assert_eq!(cuts.thresholds, days);
        assert_eq!(
            cuts.spans,
            vec![(days[0], days[1]), (days[1], days[2]), (days[2], days[3])]
        );
    }

    #[test]
    fn an_instant_on_a_boundary_opens_the_next_period() {
        let span = extent("2024-01-01T00:00:00Z", "2024-01-01T02:00:00Z");
        let cuts = cut(Some("PT1H"), "2024-01-01T00:00:00Z", "2024-01-01T02:00:00Z", &span).expect("few");
        assert_eq!(cuts.spans.len(), 3, "{cuts:?}");
        assert_eq!(cuts.thresholds.last(), Some(&at("2024-01-01T03:00:00Z")));
    }

    #[test]
    fn instants_before_the_origin_fall_in_no_period() {
        let span = extent("2023-12-31T20:00:00Z", "2024-01-01T01:30:00Z");
        let cuts = cut(Some("PT1H"), "2024-01-01T00:00:00Z", "2024-01-01T02:00:00Z", &span).expect("few");
        assert_eq!(cuts.thresholds[0], at("2024-01-01T00:00:00Z"));
        assert_eq!(cuts.spans.len(), 2);
    }

    #[test]
    fn without_a_period_one_period_holds_every_instant() {
        let span = extent("2024-01-01T00:00:00Z", "2024-03-01T00:00:00Z");
        let cuts = cut(None, "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z", &span).expect("one");
        // The one threshold is the first instant: no bucket past it.
        assert_eq!(cuts.thresholds, vec![at("2024-01-01T00:00:00Z")]);
        assert_eq!(
            cuts.spans,
            vec![(at("2024-01-01T00:00:00Z"), at("2024-02-01T00:00:00Z"))]
        );
    }

    #[test]
    fn too_many_periods_are_declined() {
        let span = extent("2024-01-01T00:00:00Z", "2024-12-31T00:00:00Z");
        assert_eq!(
            cut(Some("PT1S"), "2024-01-01T00:00:00Z", "2024-12-31T00:00:00Z", &span),
            None
        );
    }
}
