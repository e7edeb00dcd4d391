//! `piazza import gtfs <feed.zip|dir>`: a GTFS static feed (parsed by the
//! `gtfs-structures` crate) as Smart Data Models UrbanMobility entities:
//!
//! | GTFS | entity | relationships |
//! |---|---|---|
//! | agency.txt | GtfsAgency | |
//! | stops.txt | GtfsStop (GtfsStation, GtfsAccessPoint by location_type) | operatedBy, hasParentStation |
//! | routes.txt | GtfsRoute | operatedBy |
//! | service_ids | GtfsService | operatedBy |
//! | calendar.txt | GtfsCalendarRule | hasService |
//! | calendar_dates.txt | GtfsCalendarDateRule | hasService |
//! | trips.txt | GtfsTrip | hasRoute, hasService |
//! | stop_times.txt | GtfsStopTime | hasTrip, hasStop |
//!
//! Ids are `urn:ngsi-ld:<Type>:<feed>:<GTFS id>` (stop times:
//! `<trip_id>:<stop_sequence>`, calendar dates: `<service_id>:<YYYYMMDD>`),
//! so re-importing a newer version of the same feed updates its entities.
//! Names are the Smart Data Models terms, expanded with the UrbanMobility
//! @context's IRIs (compiled in below: the importer fetches nothing).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use gtfs_structures::{
    Agency, Availability, Calendar, CalendarDate, GtfsReader, LocationType, PickupDropOffType, RawGtfs, RawStopTime,
    RawTrip, Route, Stop, TimepointType,
};
use piazza_broker::ingest::ImportMode;
use piazza_broker::Broker;
use piazza_ngsild::ActiveContext;
use serde_json::{json, Map, Value};

use crate::mapping::uri_safe;
use crate::sink::Sink;
use crate::{ImportError, ImportResult, Options, Origin, Record, Rejection, Summary};

const UM: &str = "https://smartdatamodels.org/dataModel.UrbanMobility/";
const SDM: &str = "https://smartdatamodels.org/";

/// The terms used here and their IRIs in the Smart Data Models
/// UrbanMobility @context (`name` and friends are SDM-wide terms).
const TERMS: &[(&str, &str)] = &[
    ("GtfsAgency", UM),
    ("GtfsStop", UM),
    ("GtfsStation", UM),
    ("GtfsAccessPoint", UM),
    ("GtfsRoute", UM),
    ("GtfsService", UM),
    ("GtfsCalendarRule", UM),
    ("GtfsCalendarDateRule", UM),
    ("GtfsTrip", UM),
    ("GtfsStopTime", UM),
    ("agencyName", UM),
    ("page", UM),
    ("phone", UM),
    ("timezone", UM),
    ("language", UM),
    ("code", UM),
    ("zoneCode", UM),
    ("wheelChairAccessible", UM),
    ("hasParentStation", UM),
    ("operatedBy", UM),
    ("shortName", UM),
    ("routeType", UM),
    ("routeColor", UM),
    ("routeTextColor", UM),
    ("routeSortOrder", UM),
    ("hasService", UM),
    ("hasRoute", UM),
    ("headSign", UM),
    ("direction", UM),
    ("block", UM),
    ("bikesAllowed", UM),
    ("appliesOn", UM),
    ("exceptionType", UM),
    ("monday", UM),
    ("tuesday", UM),
    ("wednesday", UM),
    ("thursday", UM),
    ("friday", UM),
    ("saturday", UM),
    ("sunday", UM),
    ("hasTrip", UM),
    ("hasStop", UM),
    ("arrivalTime", UM),
    ("departureTime", UM),
    ("stopSequence", UM),
    ("distanceTravelled", UM),
    ("stopHeadsign", UM),
    ("pickupType", UM),
    ("dropOffType", UM),
    ("timepoint", UM),
    ("name", SDM),
    ("startDate", SDM),
    ("endDate", SDM),
    ("description", "http://purl.org/dc/terms/"),
];

/// Options of a GTFS import.
#[derive(Clone, Debug, Default)]
pub struct GtfsOptions {
    /// The feed's part of every id; default: the agency_id of a
    /// single-agency feed, else `feed`.
    pub feed_id: Option<String>,
}

/// Imports a GTFS feed (zip file or folder).
pub async fn import_gtfs(broker: &Broker, options: &Options, path: &Path, gtfs: &GtfsOptions) -> ImportResult<Summary> {
    let raw = read(path)?;
    let agencies = raw.agencies.as_ref().map(Vec::as_slice).unwrap_or_default();
    let feed = Feed {
        id: uri_safe(&feed_id(gtfs, agencies)),
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        operator: match agencies {
            [single] => Some(single.id.clone().unwrap_or_default()),
            _ => None,
        },
        context: gtfs_context(broker, options).await?,
    };
    let services = service_ids(&raw);
    let total = [
        count(&raw.agencies),
        count(&raw.stops),
        count(&raw.routes),
        services.len(),
        raw.calendar.as_ref().map_or(0, count),
        raw.calendar_dates.as_ref().map_or(0, count),
        count(&raw.trips),
        count(&raw.stop_times),
    ]
    .iter()
    .sum::<usize>();
    let mut sink = Sink::new(broker, options, ImportMode::Replace, Some(total as u64));
    push_file(&mut sink, &feed, "agency.txt", Some(&raw.agencies), Feed::agency).await?;
    push_file(&mut sink, &feed, "stops.txt", Some(&raw.stops), Feed::stop).await?;
    push_file(&mut sink, &feed, "routes.txt", Some(&raw.routes), Feed::route).await?;
    for service in &services {
        let record = feed.record(Origin::new(feed.file("(service_id)"), 0), feed.service(service));
        sink.push(record).await?;
    }
    push_file(&mut sink, &feed, "calendar.txt", raw.calendar.as_ref(), Feed::calendar).await?;
    push_file(
        &mut sink,
        &feed,
        "calendar_dates.txt",
        raw.calendar_dates.as_ref(),
        Feed::calendar_date,
    )
    .await?;
    push_file(&mut sink, &feed, "trips.txt", Some(&raw.trips), Feed::trip).await?;
    sink.progress().set_label("stop times");
    push_file(
        &mut sink,
        &feed,
        "stop_times.txt",
        Some(&raw.stop_times),
        Feed::stop_time,
    )
    .await?;
    sink.finish().await
}

fn read(path: &Path) -> ImportResult<RawGtfs> {
    // Shapes are not imported (no GtfsShape entities yet): skip parsing them.
    GtfsReader::default()
        .read_shapes(false)
        .raw()
        .read_from_path(path)
        .map_err(|e| ImportError::Input(format!("{}: not a readable GTFS feed: {e}", path.display())))
}

fn count<T>(file: &Result<Vec<T>, gtfs_structures::Error>) -> usize {
    file.as_ref().map_or(1, Vec::len)
}

/// Pushes the rows of one GTFS file; a file the GTFS parser refused is one
/// rejection (it reports the line), and the other files go on.
async fn push_file<T>(
    sink: &mut Sink<'_>,
    feed: &Feed,
    file: &str,
    rows: Option<&Result<Vec<T>, gtfs_structures::Error>>,
    entity: fn(&Feed, &T) -> Map<String, Value>,
) -> ImportResult<()> {
    match rows {
        None => Ok(()),
        Some(Err(error)) => {
            let rejection = Rejection {
                origin: Origin::new(feed.file(file), 0),
                reason: format!("file not imported: {error}"),
            };
            sink.push(Err(rejection)).await
        }
        Some(Ok(rows)) => {
            let started = std::time::Instant::now();
            for (index, row) in rows.iter().enumerate() {
                // Line 1 is the header.
                let origin = Origin::new(feed.file(file), index as u64 + 2);
                sink.push(feed.record(origin, entity(feed, row))).await?;
            }
            // Written before the next file, so each file's time is its own
            // (the benchmark reads the stop_times figure from this line).
            sink.flush().await?;
            let secs = started.elapsed().as_secs_f64();
            let secs = (secs * 1000.0).round() / 1000.0;
            let per_sec = (rows.len() as f64 / secs.max(1e-3)).round();
            // With the bar cleared, so that the log line does not tear it.
            sink.progress()
                .suspend(|| tracing::info!(file, rows = rows.len(), secs, per_sec, "imported"));
            Ok(())
        }
    }
}

fn feed_id(options: &GtfsOptions, agencies: &[Agency]) -> String {
    if let Some(id) = &options.feed_id {
        return id.clone();
    }
    match agencies {
        [single] => single
            .id
            .clone()
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(|| single.name.trim().replace(' ', "_")),
        _ => "feed".into(),
    }
}

/// Every service_id of calendar.txt and calendar_dates.txt, once.
fn service_ids(raw: &RawGtfs) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    if let Some(Ok(calendar)) = &raw.calendar {
        ids.extend(calendar.iter().map(|c| c.id.clone()));
    }
    if let Some(Ok(dates)) = &raw.calendar_dates {
        ids.extend(dates.iter().map(|d| d.service_id.clone()));
    }
    ids
}

/// The @context of the terms above, processed once.
async fn gtfs_context(broker: &Broker, options: &Options) -> ImportResult<Arc<ActiveContext>> {
    let terms: Map<String, Value> = TERMS
        .iter()
        .map(|(term, base)| ((*term).to_owned(), Value::String(format!("{base}{term}"))))
        .collect();
    Ok(broker.context(&options.tenant, Some(&Value::Object(terms))).await?)
}

struct Feed {
    id: String,
    /// The feed's file name, for reports.
    name: String,
    /// The agency of a single-agency feed: the operator of everything.
    operator: Option<String>,
    context: Arc<ActiveContext>,
}

impl Feed {
    fn file(&self, file: &str) -> String {
        format!("{}/{file}", self.name)
    }

    fn urn(&self, entity_type: &str, parts: &[&str]) -> String {
        let parts: Vec<String> = parts.iter().map(|p| uri_safe(p)).collect();
        format!("urn:ngsi-ld:{entity_type}:{}:{}", self.id, parts.join(":"))
    }

    fn record(&self, origin: Origin, body: Map<String, Value>) -> Result<Record, Rejection> {
        Ok(Record {
            origin,
            body,
            context: self.context.clone(),
            observed_at: None,
        })
    }

    fn agency_urn(&self, agency_id: &str) -> String {
        // A single agency may omit agency_id: it is then the feed itself.
        let id = if agency_id.is_empty() {
            self.id.as_str()
        } else {
            agency_id
        };
        self.urn("GtfsAgency", &[id])
    }

    fn operator_of(&self, agency_id: Option<&str>) -> Option<String> {
        agency_id
            .map(str::to_owned)
            .or_else(|| self.operator.clone())
            .map(|id| self.agency_urn(&id))
    }

    fn agency(&self, agency: &Agency) -> Map<String, Value> {
        let mut e = Entity::new(self.agency_urn(agency.id.as_deref().unwrap_or_default()), "GtfsAgency");
        e.text("agencyName", Some(&agency.name));
        e.text("page", Some(&agency.url));
        e.text("timezone", Some(&agency.timezone));
        e.text("language", agency.lang.as_deref());
        e.text("phone", agency.phone.as_deref());
        e.0
    }

    fn stop(&self, stop: &Stop) -> Map<String, Value> {
        let mut e = Entity::new(
            self.urn(stop_type(stop.location_type), &[&stop.id]),
            stop_type(stop.location_type),
        );
        e.text("name", stop.name.as_deref());
        e.text("code", stop.code.as_deref());
        e.text("description", stop.description.as_deref());
        e.text("zoneCode", stop.zone_id.as_deref());
        e.text("page", stop.url.as_deref());
        e.text("timezone", stop.timezone.as_deref());
        if let (Some(lon), Some(lat)) = (stop.longitude, stop.latitude) {
            e.set(
                "location",
                json!({"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}),
            );
        }
        if stop.wheelchair_boarding != Availability::InformationNotAvailable {
            e.text("wheelChairAccessible", Some(&code(&stop.wheelchair_boarding)));
        }
        if let Some(parent) = stop.parent_station.as_deref().filter(|p| !p.trim().is_empty()) {
            e.relationship("hasParentStation", self.urn("GtfsStation", &[parent]));
        }
        if let Some(operator) = self.operator_of(None) {
            e.set("operatedBy", json!({"type": "Relationship", "object": [operator]}));
        }
        e.0
    }

    fn route(&self, route: &Route) -> Map<String, Value> {
        let mut e = Entity::new(self.urn("GtfsRoute", &[&route.id]), "GtfsRoute");
        e.text("name", route.long_name.as_deref());
        e.text("shortName", route.short_name.as_deref());
        e.text("description", route.desc.as_deref());
        e.text("routeType", Some(&code(&route.route_type)));
        e.text(
            "routeColor",
            route
                .color
                .map(|c| format!("{:02X}{:02X}{:02X}", c.r, c.g, c.b))
                .as_deref(),
        );
        e.text(
            "routeTextColor",
            route
                .text_color
                .map(|c| format!("{:02X}{:02X}{:02X}", c.r, c.g, c.b))
                .as_deref(),
        );
        e.text("page", route.url.as_deref());
        if let Some(order) = route.order {
            e.set("routeSortOrder", json!({"type": "Property", "value": order}));
        }
        if let Some(operator) = self.operator_of(route.agency_id.as_deref()) {
            e.relationship("operatedBy", operator);
        }
        e.0
    }

    fn service(&self, service_id: &str) -> Map<String, Value> {
        let mut e = Entity::new(self.urn("GtfsService", &[service_id]), "GtfsService");
        e.text("name", Some(service_id));
        if let Some(operator) = self.operator_of(None) {
            e.relationship("operatedBy", operator);
        }
        e.0
    }

    fn calendar(&self, calendar: &Calendar) -> Map<String, Value> {
        let mut e = Entity::new(self.urn("GtfsCalendarRule", &[&calendar.id]), "GtfsCalendarRule");
        e.relationship("hasService", self.urn("GtfsService", &[&calendar.id]));
        let days = [
            ("monday", calendar.monday),
            ("tuesday", calendar.tuesday),
            ("wednesday", calendar.wednesday),
            ("thursday", calendar.thursday),
            ("friday", calendar.friday),
            ("saturday", calendar.saturday),
            ("sunday", calendar.sunday),
        ];
        for (day, runs) in days {
            e.set(day, json!({"type": "Property", "value": runs}));
        }
        e.text("startDate", Some(&calendar.start_date.to_string()));
        e.text("endDate", Some(&calendar.end_date.to_string()));
        e.0
    }

    fn calendar_date(&self, date: &CalendarDate) -> Map<String, Value> {
        let day = date.date.to_string();
        let compact = day.replace('-', "");
        let mut e = Entity::new(
            self.urn("GtfsCalendarDateRule", &[&date.service_id, &compact]),
            "GtfsCalendarDateRule",
        );
        e.relationship("hasService", self.urn("GtfsService", &[&date.service_id]));
        e.text("appliesOn", Some(&day));
        e.text("exceptionType", Some(&code(&date.exception_type)));
        e.0
    }

    fn trip(&self, trip: &RawTrip) -> Map<String, Value> {
        let mut e = Entity::new(self.urn("GtfsTrip", &[&trip.id]), "GtfsTrip");
        e.relationship("hasRoute", self.urn("GtfsRoute", &[&trip.route_id]));
        e.relationship("hasService", self.urn("GtfsService", &[&trip.service_id]));
        e.text("headSign", trip.trip_headsign.as_deref());
        e.text("shortName", trip.trip_short_name.as_deref());
        e.text("block", trip.block_id.as_deref());
        if let Some(direction) = trip.direction_id {
            e.number("direction", &code(&direction));
        }
        if trip.wheelchair_accessible != Availability::InformationNotAvailable {
            e.number("wheelChairAccessible", &code(&trip.wheelchair_accessible));
        }
        if trip.bikes_allowed != gtfs_structures::BikesAllowedType::NoBikeInfo {
            e.number("bikesAllowed", &code(&trip.bikes_allowed));
        }
        e.0
    }

    fn stop_time(&self, st: &RawStopTime) -> Map<String, Value> {
        let sequence = st.stop_sequence.to_string();
        let mut e = Entity::new(self.urn("GtfsStopTime", &[&st.trip_id, &sequence]), "GtfsStopTime");
        e.relationship("hasTrip", self.urn("GtfsTrip", &[&st.trip_id]));
        // stop_times may only name stops (location_type 0), never stations.
        e.relationship("hasStop", self.urn("GtfsStop", &[&st.stop_id]));
        e.text("arrivalTime", st.arrival_time.map(clock).as_deref());
        e.text("departureTime", st.departure_time.map(clock).as_deref());
        e.set("stopSequence", json!({"type": "Property", "value": st.stop_sequence}));
        if let Some(distance) = st.shape_dist_traveled {
            // Through the shortest decimal form: 1.2f32 stays 1.2, not 1.2000000476837158.
            e.number("distanceTravelled", &distance.to_string());
        }
        e.text("stopHeadsign", st.stop_headsign.as_deref());
        if st.pickup_type != PickupDropOffType::Regular {
            e.text("pickupType", Some(&code(&st.pickup_type)));
        }
        if st.drop_off_type != PickupDropOffType::Regular {
            e.text("dropOffType", Some(&code(&st.drop_off_type)));
        }
        if st.timepoint == TimepointType::Approximate {
            e.text("timepoint", Some("0"));
        }
        e.0
    }
}

fn stop_type(location_type: LocationType) -> &'static str {
    match location_type {
        LocationType::StopArea => "GtfsStation",
        LocationType::StationEntrance => "GtfsAccessPoint",
        _ => "GtfsStop",
    }
}

/// The GTFS code of an enumerated value, as written in the feed.
fn code<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// Seconds since the service day's noon-minus-12h → `HH:MM:SS` (may pass 24:00).
fn clock(seconds: u32) -> String {
    format!("{:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

/// A normalized entity under construction.
struct Entity(Map<String, Value>);

impl Entity {
    fn new(id: String, entity_type: &str) -> Self {
        let mut members = Map::new();
        members.insert("id".into(), Value::String(id));
        members.insert("type".into(), Value::String(entity_type.to_owned()));
        Self(members)
    }

    fn set(&mut self, name: &str, attribute: Value) {
        self.0.insert(name.to_owned(), attribute);
    }

    /// A text Property, with runs of spaces collapsed (some feeds, Prato's,
    /// pad fields to a fixed width, even between words); absent when empty.
    fn text(&mut self, name: &str, value: Option<&str>) {
        let Some(value) = value else {
            return;
        };
        let text = value.split_whitespace().collect::<Vec<_>>().join(" ");
        if !text.is_empty() {
            self.set(name, json!({"type": "Property", "value": text}));
        }
    }

    fn number(&mut self, name: &str, value: &str) {
        if let Ok(number) = value.parse::<f64>() {
            let value = if number.fract() == 0.0 && number.abs() < 1e15 {
                json!(number as i64)
            } else {
                json!(number)
            };
            self.set(name, json!({"type": "Property", "value": value}));
        }
    }

    fn relationship(&mut self, name: &str, object: String) {
        self.set(name, json!({"type": "Relationship", "object": object}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_codes() {
        assert_eq!(clock(25 * 3600 + 61), "25:01:01");
        assert_eq!(code(&gtfs_structures::RouteType::Bus), "3");
        assert_eq!(code(&gtfs_structures::Exception::Deleted), "2");
        assert_eq!(stop_type(LocationType::StopArea), "GtfsStation");
    }
}
