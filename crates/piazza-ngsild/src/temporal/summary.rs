//! Aggregation from summaries: what a store may hand back instead of the
//! instances of a long numeric history, so that `aggregatedValues` over
//! 100,000 instances does not mean decoding 100,000 instances.
//!
//! A [`Summary`] holds what every aggregation method but `distinctCount`
//! needs (count, sum, sum of squares, the squared deviations from the mean,
//! min, max); summaries of disjoint sets of numbers merge into the summary
//! of their union. The periods are cut by the same [`PeriodWalker`] as the
//! instance path, so both paths agree on every boundary.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{AggrMethod, Aggregation, Duration, TemporalQuery, TimeProperty};
use crate::entity::AttributeKind;
use crate::time::Timestamp;

/// Below this many instances in a query's range a store aggregates the
/// instances themselves rather than summaries: about as fast, and exact to
/// the last bit of a floating-point sum. Both stores draw the line here, so
/// the same history is answered the same way whichever holds it.
pub const MIN_SUMMARISED: u64 = 2_000;

/// A summary of a set of numbers (booleans count as 0 and 1, as in
/// [`AggrMethod::apply`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub sum: f64,
    pub sumsq: f64,
    /// Σ (x − mean)², kept apart from `sumsq` because `sumsq/n − mean²`
    /// loses every digit of a small variance of large numbers.
    pub m2: f64,
    pub min: f64,
    pub max: f64,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            count: 0,
            sum: 0.0,
            sumsq: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Summary {
    /// The summary of one number.
    pub fn of(x: f64) -> Self {
        Self {
            count: 1,
            sum: x,
            sumsq: x * x,
            m2: 0.0,
            min: x,
            max: x,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }

    pub fn add(&mut self, x: f64) {
        self.merge(&Self::of(x));
    }

    /// Merges the summary of a disjoint set (Chan et al.'s pairwise update
    /// for the squared deviations).
    pub fn merge(&mut self, other: &Summary) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let (n_a, n_b) = (self.count as f64, other.count as f64);
        let delta = other.mean() - self.mean();
        self.m2 += other.m2 + delta * delta * n_a * n_b / (n_a + n_b);
        self.count += other.count;
        self.sum += other.sum;
        self.sumsq += other.sumsq;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

impl AggrMethod {
    /// Whether a [`Summary`] answers this method (`distinctCount` needs the values).
    pub fn summarisable(self) -> bool {
        self != Self::DistinctCount
    }

    /// The method's result for the numbers of a non-empty summary, as
    /// [`AggrMethod::apply`] gives it for the numbers themselves.
    pub fn of_summary(self, summary: &Summary) -> Option<Value> {
        if summary.is_empty() {
            return None;
        }
        match self {
            Self::TotalCount => Some(json!(summary.count)),
            Self::DistinctCount => None,
            Self::Sum => Some(json!(summary.sum)),
            Self::Sumsq => Some(json!(summary.sumsq)),
            Self::Avg => Some(json!(summary.mean())),
            Self::Stddev => Some(json!((summary.m2 / summary.count as f64).max(0.0).sqrt())),
            Self::Min => summary.min.is_finite().then(|| json!(summary.min)),
            Self::Max => summary.max.is_finite().then(|| json!(summary.max)),
        }
    }
}

impl Aggregation {
    /// Whether every method of the request can be answered from summaries.
    pub fn summarisable(&self) -> bool {
        self.methods.iter().all(|m| m.summarisable())
    }
}

/// One datasetId's history of an attribute, summarised per period by the
/// store: what [`super::render_temporal`] shows of it in `aggregatedValues`.
#[derive(Clone, Debug, PartialEq)]
pub struct SummarisedGroup {
    pub dataset_id: Option<String>,
    pub kind: AttributeKind,
    /// The non-empty periods, in time order: start, end, summary.
    pub periods: Vec<(Timestamp, Timestamp, Summary)>,
}

/// Where one instant falls among the aggregation periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// In the period `[start, end)` (without a period length: the one
    /// period from the origin to the end of the range).
    In(Timestamp, Timestamp),
    /// Before the origin: not aggregated.
    Before,
    /// Past the last representable period: neither this instant nor any later one.
    Beyond,
}

/// Cuts time into aggregation periods, `origin + k·period`, for instants
/// given in ascending order.
#[derive(Clone, Debug)]
pub struct PeriodWalker {
    origin: Timestamp,
    period: Option<Duration>,
    last_end: Timestamp,
    start: Timestamp,
    /// The end of the current period; `None` once past the last representable one.
    end: Option<Timestamp>,
}

impl PeriodWalker {
    /// `period` `None` or zero: one period from `origin` to `last_end`.
    pub fn new(origin: Timestamp, period: Option<Duration>, last_end: Timestamp) -> Self {
        let period = period.filter(|p| !p.is_zero());
        let end = match period {
            Some(p) => p.add_to(origin),
            None => Some(last_end),
        };
        Self {
            origin,
            period,
            last_end,
            start: origin,
            end,
        }
    }

    /// The period of `t`; `t` must not be before an instant placed earlier.
    pub fn place(&mut self, t: Timestamp) -> Placement {
        let Some(period) = self.period else {
            return Placement::In(self.origin, self.last_end);
        };
        if t < self.origin {
            return Placement::Before;
        }
        // A long gap between two instants skips at most this many empty periods.
        let mut guard = 0u32;
        loop {
            let Some(end) = self.end else {
                return Placement::Beyond;
            };
            if t < end {
                return Placement::In(self.start, end);
            }
            guard += 1;
            match period.add_to(end) {
                Some(next) if next > end && guard <= 1_000_000 => {
                    self.start = end;
                    self.end = Some(next);
                }
                _ => {
                    self.end = None;
                    return Placement::Beyond;
                }
            }
        }
    }

    /// The period holding the whole span `[from, to)`, when one does
    /// (without a period length, the one period always does); `from` must
    /// not be before an instant placed earlier.
    pub fn holding(&mut self, from: Timestamp, to: Timestamp) -> Option<(Timestamp, Timestamp)> {
        match self.place(from) {
            Placement::In(start, end) if self.period.is_none() || to <= end => Some((start, end)),
            _ => None,
        }
    }
}

/// The hour from `start`: the span a store's hourly summary covers.
pub fn hour_after(start: Timestamp) -> Timestamp {
    start + chrono::TimeDelta::hours(1)
}

/// Whether the hour from `start` lies wholly within the range `[lo, hi)`
/// (open bounds `None`): only then may its summary stand for the range's
/// instances in it.
pub fn hour_within(start: Timestamp, lo: Option<Timestamp>, hi: Option<Timestamp>) -> bool {
    lo.is_none_or(|lo| lo <= start) && hi.is_none_or(|hi| hour_after(start) <= hi)
}

/// One hour of a history as a store's hourly summary holds it: the summary
/// of its numbers, its first and last instant.
#[derive(Clone, Debug, PartialEq)]
pub struct HourSummary {
    pub start: Timestamp,
    pub summary: Summary,
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
}

/// A piece of one datasetId's history, in time order: a whole hour's
/// summary, or single numbers read from the instances.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    Hour(HourSummary),
    Points(Vec<(Timestamp, f64)>),
}

impl Piece {
    fn first(&self) -> Option<Timestamp> {
        match self {
            Piece::Hour(h) => h.first,
            Piece::Points(points) => points.first().map(|(t, _)| *t),
        }
    }

    fn last(&self) -> Option<Timestamp> {
        match self {
            Piece::Hour(h) => h.last,
            Piece::Points(points) => points.last().map(|(t, _)| *t),
        }
    }
}

/// The aggregation a store may answer from hourly summaries of
/// `observedAt`: `None` without one, for another time property, or with
/// `lastN` (which counts instances from the end).
pub fn summarisable(query: &TemporalQuery) -> Option<&Aggregation> {
    let aggregation = query.aggregation.as_ref()?;
    (query.timeproperty == TimeProperty::ObservedAt && query.last_n.is_none()).then_some(aggregation)
}

/// A store's summarised groups, each with its first instant, in the order
/// the instance path gives them (by first instant); `None` when together
/// they stand for more instances than a response may hold, so that the
/// instance path answers as it would.
pub fn ordered_groups(
    mut groups: Vec<(Timestamp, SummarisedGroup)>,
    instance_limit: usize,
) -> Option<Vec<SummarisedGroup>> {
    let total: u64 = groups
        .iter()
        .flat_map(|(_, g)| g.periods.iter().map(|(_, _, s)| s.count))
        .sum();
    if usize::try_from(total).map_or(true, |t| t > instance_limit) {
        return None;
    }
    groups.sort_by_key(|(first, _)| *first);
    Some(groups.into_iter().map(|(_, group)| group).collect())
}

/// Replaces the hours starting at `starts` among `pieces` by their numbers
/// as read from the instances (`points`, by hour start); an hour with no
/// number read is dropped.
pub fn read_as_points(
    pieces: &mut Vec<Piece>,
    starts: &[Timestamp],
    mut points: BTreeMap<Timestamp, Vec<(Timestamp, f64)>>,
) {
    pieces.retain_mut(|piece| {
        let Piece::Hour(hour) = piece else {
            return true;
        };
        if !starts.contains(&hour.start) {
            return true;
        }
        match points.remove(&hour.start) {
            Some(found) if !found.is_empty() => {
                *piece = Piece::Points(found);
                true
            }
            _ => false,
        }
    });
}

/// What [`fold_pieces`] made of one datasetId's pieces.
#[derive(Clone, Debug, PartialEq)]
pub enum Folded {
    /// No number in any period.
    Empty,
    /// The first instant and the non-empty periods, in time order.
    Periods(Timestamp, Vec<(Timestamp, Timestamp, Summary)>),
    /// These hours (by start) are cut by a period boundary or the origin:
    /// the store must pass their instances as points and fold again.
    NeedPoints(Vec<Timestamp>),
}

/// Folds one datasetId's pieces into the periods the instance path would
/// cut: `PeriodWalker::new(origin, period, end)`, the origin and end
/// defaulting to the first and last instant. Each round turns at least one
/// hour into points, so a store's loop of fold, read, fold ends.
pub fn fold_pieces(
    pieces: &[Piece],
    origin: Option<Timestamp>,
    end: Option<Timestamp>,
    period: Option<Duration>,
) -> Folded {
    let (Some(first), Some(last)) = (
        pieces.first().and_then(Piece::first),
        pieces.last().and_then(Piece::last),
    ) else {
        return Folded::Empty;
    };
    let mut walker = PeriodWalker::new(origin.unwrap_or(first), period, end.unwrap_or(last));
    let mut periods: Vec<(Timestamp, Timestamp, Summary)> = Vec::new();
    let mut cut = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Hour(hour) => match walker.holding(hour.start, hour_after(hour.start)) {
                Some((start, end)) => add_to_period(&mut periods, start, end, &hour.summary),
                None => cut.push(hour.start),
            },
            Piece::Points(points) => {
                for &(t, x) in points {
                    match walker.place(t) {
                        Placement::In(start, end) => add_to_period(&mut periods, start, end, &Summary::of(x)),
                        Placement::Before => {}
                        Placement::Beyond => break,
                    }
                }
            }
        }
    }
    if !cut.is_empty() {
        Folded::NeedPoints(cut)
    } else if periods.is_empty() {
        Folded::Empty
    } else {
        Folded::Periods(first, periods)
    }
}

fn add_to_period(
    periods: &mut Vec<(Timestamp, Timestamp, Summary)>,
    start: Timestamp,
    end: Timestamp,
    summary: &Summary,
) {
    match periods.last_mut() {
        Some((s, _, held)) if *s == start => held.merge(summary),
        _ => periods.push((start, end, *summary)),
    }
}

/// The `aggregatedValues` rendering of a summarised group: as
/// `aggregated` renders the instances the summaries stand for.
pub(super) fn render_group(group: &SummarisedGroup, aggregation: &Aggregation) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("type".into(), Value::String(group.kind.name().into()));
    for method in &aggregation.methods {
        let results = super::period_results(&group.periods, |summary| method.of_summary(summary));
        map.insert(method.name().into(), results);
    }
    if let Some(dataset) = &group.dataset_id {
        map.insert("datasetId".into(), Value::String(dataset.clone()));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(minutes: i64) -> Timestamp {
        crate::time::parse("2024-01-01T00:00:00Z").expect("valid") + chrono::TimeDelta::minutes(minutes)
    }

    proptest! {
        /// Merging summaries of any split of a set gives what the values
        /// give one by one, and what `apply` gives for the values.
        #[test]
        fn merged_summaries_agree_with_the_values(
            values in prop::collection::vec(-1e6f64..1e6, 1..200),
            cut in 0usize..200,
        ) {
            let cut = cut.min(values.len());
            let mut left = Summary::default();
            values[..cut].iter().for_each(|x| left.add(*x));
            let mut right = Summary::default();
            values[cut..].iter().for_each(|x| right.add(*x));
            left.merge(&right);
            let json: Vec<Value> = values.iter().map(|x| json!(x)).collect();
            let refs: Vec<&Value> = json.iter().collect();
            for method in AggrMethod::ALL.into_iter().filter(|m| m.summarisable()) {
                let expected = method.apply(&refs).and_then(|v| v.as_f64()).expect("numbers");
                let got = method.of_summary(&left).and_then(|v| v.as_f64()).expect("a result");
                let tolerance = 1e-9 * expected.abs().max(1.0) + if method == AggrMethod::Stddev { 1e-6 } else { 0.0 };
                prop_assert!((expected - got).abs() <= tolerance, "{method:?}: {expected} vs {got}");
            }
        }
    }

    #[test]
    fn a_small_variance_of_large_numbers_survives() {
        let mut summary = Summary::default();
        for x in [1e9 + 4.0, 1e9 + 7.0, 1e9 + 13.0, 1e9 + 16.0] {
            summary.add(x);
        }
        let stddev = AggrMethod::Stddev
            .of_summary(&summary)
            .and_then(|v| v.as_f64())
            .expect("stddev");
        assert!((stddev - 22.5f64.sqrt()).abs() < 1e-6, "{stddev}");
    }

    fn hour_of(start: i64, numbers: &[f64]) -> Piece {
        let mut summary = Summary::default();
        numbers.iter().for_each(|x| summary.add(*x));
        Piece::Hour(HourSummary {
            start: at(start),
            summary,
            first: Some(at(start + 1)),
            last: Some(at(start + 59)),
        })
    }

    #[test]
    fn hours_held_by_one_period_are_folded_whole_and_cut_ones_are_asked_for() {
        let day = Duration::parse("P1D").ok();
        let pieces = vec![hour_of(0, &[1.0, 2.0]), hour_of(60, &[3.0]), hour_of(24 * 60, &[10.0])];
        let Folded::Periods(first, periods) = fold_pieces(&pieces, Some(at(0)), None, day) else {
            panic!("hour-aligned days hold every hour");
        };
        assert_eq!(first, at(1));
        assert_eq!(periods.len(), 2);
        assert_eq!((periods[0].2.count, periods[0].2.sum), (3, 6.0));
        assert_eq!((periods[1].0, periods[1].2.sum), (at(24 * 60), 10.0));
        // Days from 00:30 cut the first two hours; the origin cuts nothing else.
        assert_eq!(
            fold_pieces(&pieces, Some(at(30)), None, day),
            Folded::NeedPoints(vec![at(0), at(24 * 60)])
        );
        // Read as points, they fold: the point before the origin is in no period.
        let read = vec![
            Piece::Points(vec![(at(10), 1.0), (at(40), 2.0)]),
            hour_of(60, &[3.0]),
            Piece::Points(vec![(at(24 * 60 + 40), 10.0)]),
        ];
        let Folded::Periods(first, periods) = fold_pieces(&read, Some(at(30)), None, day) else {
            panic!("every piece is placed");
        };
        assert_eq!(first, at(10));
        assert_eq!(periods.iter().map(|p| p.2.sum).collect::<Vec<_>>(), vec![5.0, 10.0]);
        assert_eq!(fold_pieces(&[], None, None, day), Folded::Empty);
        // The same through `read_as_points`: an hour without numbers read goes.
        let mut pieces = pieces;
        pieces.insert(1, hour_of(30, &[7.0]));
        let points = BTreeMap::from([
            (at(0), vec![(at(10), 1.0), (at(40), 2.0)]),
            (at(24 * 60), vec![(at(24 * 60 + 40), 10.0)]),
        ]);
        read_as_points(&mut pieces, &[at(0), at(30), at(24 * 60)], points);
        assert_eq!(pieces, read);
    }

    #[test]
    fn the_walker_places_instants_and_spans_in_periods() {
        let hour = Duration::parse("PT1H").expect("duration");
        let mut walker = PeriodWalker::new(at(30), Some(hour), at(1000));
        assert_eq!(walker.place(at(0)), Placement::Before);
        assert_eq!(walker.place(at(30)), Placement::In(at(30), at(90)));
        assert_eq!(walker.holding(at(90), at(150)), Some((at(90), at(150))));
        // [150, 240) crosses the boundary at 210.
        assert_eq!(walker.holding(at(180), at(240)), None);
        assert_eq!(walker.place(at(400)), Placement::In(at(390), at(450)));
        let mut single = PeriodWalker::new(at(30), None, at(100));
        assert_eq!(single.holding(at(0), at(5000)), Some((at(30), at(100))));
    }
}
