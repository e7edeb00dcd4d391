//! Aggregation from hourly summaries (`attr_rollups`, kept exact by the
//! triggers of migration 8): an `aggregatedValues` request over a long
//! numeric history reads one row per hour instead of every instance.
//!
//! As on the embedded store (`rollups.rs` there): an hour that the query's
//! range or a period boundary cuts is read from the instances, and the
//! model's `fold_pieces` cuts the periods with the same `PeriodWalker` as
//! the instance path. What that store declines, this declines too (another
//! time property, `lastN`, a short history, anything but live numbers in
//! the range, more instances than a response may hold): the instances are
//! then read as before.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use piazza_ngsild::temporal::{
    fold_pieces, hour_within, ordered_groups, read_as_points, summarisable, Folded, HourSummary, Piece,
    SummarisedGroup, Summary, TemporalQuery, MIN_SUMMARISED,
};
use piazza_ngsild::time::Timestamp;
use piazza_ngsild::AttributeKind;
use piazza_store::Tenant;
use tokio_postgres::types::ToSql;

use crate::Result;

/// Which attribute's history, and the query's range of instants `[lo, hi)`.
struct Key<'a> {
    tenant: &'a Tenant,
    id: &'a str,
    attr: &'a str,
    lo: Option<Timestamp>,
    hi: Option<Timestamp>,
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
    let Some(aggregation) = summarisable(query) else {
        return Ok(None);
    };
    let (lo, hi) = query.timerel.map_or((None, None), |rel| rel.bounds());
    let key = Key {
        tenant,
        id,
        attr,
        lo,
        hi,
    };
    // Without a range, instances without observedAt are aggregated at
    // their createdAt; the rollups do not hold them.
    if query.timerel.is_none() && has_untimed(client, &key).await? {
        return Ok(None);
    }
    let Some(hours) = hours(client, &key).await? else {
        return Ok(None);
    };
    if hours.values().flatten().map(|h| h.summary.count).sum::<u64>() < MIN_SUMMARISED {
        return Ok(None);
    }
    let (origin, end) = query.timerel.map_or((None, None), |rel| rel.aggregation_window());
    let mut groups = Vec::new();
    for (dataset, hours) in hours {
        let cut: Vec<Timestamp> = hours
            .iter()
            .map(|h| h.start)
            .filter(|s| !hour_within(*s, key.lo, key.hi))
            .collect();
        let mut pieces: Vec<Piece> = hours.into_iter().map(Piece::Hour).collect();
        if !read_points(client, &key, &dataset, &cut, &mut pieces).await? {
            return Ok(None);
        }
        loop {
            match fold_pieces(&pieces, origin, end, aggregation.period) {
                Folded::Empty => break,
                Folded::Periods(first, periods) => {
                    let dataset_id = (!dataset.is_empty()).then(|| dataset.clone());
                    let kind = AttributeKind::Property;
                    groups.push((
                        first,
                        SummarisedGroup {
                            dataset_id,
                            kind,
                            periods,
                        },
                    ));
                    break;
                }
                Folded::NeedPoints(starts) => {
                    if !read_points(client, &key, &dataset, &starts, &mut pieces).await? {
                        return Ok(None);
                    }
                }
            }
        }
    }
    Ok(ordered_groups(groups, query.instance_limit))
}

/// Whether the attribute has instances without `observedAt`.
async fn has_untimed(client: &impl GenericClient, key: &Key<'_>) -> Result<bool> {
    let statement = client
        .prepare_cached(
            "SELECT 1 FROM attr_instances WHERE tenant = $1 AND entity_id = $2 AND attr = $3 \
             AND observed_at IS NULL LIMIT 1",
        )
        .await?;
    Ok(client
        .query_opt(&statement, &[&key.tenant.name(), &key.id, &key.attr])
        .await?
        .is_some())
}

/// The hours touching the range, by datasetId, in time order; `None` when
/// one of them holds anything but live numbers.
async fn hours(client: &impl GenericClient, key: &Key<'_>) -> Result<Option<BTreeMap<String, Vec<HourSummary>>>> {
    let statement = client
        .prepare_cached(
            "SELECT dataset, hour, count, others, sum, sumsq, m2, min, max, first_at, last_at FROM attr_rollups \
             WHERE tenant = $1 AND entity_id = $2 AND attr = $3 \
             AND hour >= date_trunc('hour', coalesce($4::timestamptz, '-infinity'), 'UTC') \
             AND hour < coalesce($5::timestamptz, 'infinity') ORDER BY hour",
        )
        .await?;
    let rows = client
        .query(&statement, &[&key.tenant.name(), &key.id, &key.attr, &key.lo, &key.hi])
        .await?;
    let mut by_dataset: BTreeMap<String, Vec<HourSummary>> = BTreeMap::new();
    for row in rows {
        if row.try_get::<_, i64>(3)? > 0 {
            return Ok(None);
        }
        let count: i64 = row.try_get(2)?;
        let hour = HourSummary {
            start: row.try_get(1)?,
            summary: Summary {
                count: u64::try_from(count).unwrap_or(0),
                sum: row.try_get(4)?,
                sumsq: row.try_get(5)?,
                m2: row.try_get(6)?,
                min: row.try_get::<_, Option<f64>>(7)?.unwrap_or(f64::INFINITY),
                max: row.try_get::<_, Option<f64>>(8)?.unwrap_or(f64::NEG_INFINITY),
            },
            first: row.try_get(9)?,
            last: row.try_get(10)?,
        };
        by_dataset.entry(row.try_get(0)?).or_default().push(hour);
    }
    Ok(Some(by_dataset))
}

/// Replaces the hours starting at `starts` among `pieces` by their numbers
/// within the range (an hour with none in it is dropped); `false` when an
/// instance there is not a live number.
async fn read_points(
    client: &impl GenericClient,
    key: &Key<'_>,
    dataset: &str,
    starts: &[Timestamp],
    pieces: &mut Vec<Piece>,
) -> Result<bool> {
    if starts.is_empty() {
        return Ok(true);
    }
    let statement = client
        .prepare_cached(
            "SELECT h.start, i.observed_at, i.num FROM unnest($4::timestamptz[]) AS h(start) \
             CROSS JOIN LATERAL (SELECT observed_at, num FROM attr_instances \
                 WHERE tenant = $1 AND entity_id = $2 AND attr = $3 AND coalesce(dataset_id, '') = $5 \
                 AND observed_at >= greatest(h.start, $6::timestamptz) \
                 AND observed_at < least(h.start + interval '1 hour', $7::timestamptz)) AS i \
             ORDER BY h.start, i.observed_at",
        )
        .await?;
    let params: [&(dyn ToSql + Sync); 7] = [
        &key.tenant.name(),
        &key.id,
        &key.attr,
        &starts,
        &dataset,
        &key.lo,
        &key.hi,
    ];
    let mut points: BTreeMap<Timestamp, Vec<(Timestamp, f64)>> = BTreeMap::new();
    for row in client.query(&statement, &params).await? {
        let Some(number) = row.try_get::<_, Option<f64>>(2)? else {
            return Ok(false);
        };
        points
            .entry(row.try_get(0)?)
            .or_default()
            .push((row.try_get(1)?, number));
    }
    read_as_points(pieces, starts, points);
    Ok(true)
}
