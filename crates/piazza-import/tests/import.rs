//! Imports of the real data in `testdata/` through a broker on an embedded
//! store, checked against counts taken from the files themselves.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use piazza_broker::piazza_store::{Page, Tenant};
use piazza_broker::{Broker, Limits};
use piazza_import::mapping::Mapping;
use piazza_import::{GtfsOptions, ImportError, Options, Summary, Validator};
use piazza_ngsild::query::{EntityQuery, TypeSelector};
use piazza_ngsild::temporal::TemporalQuery;
use piazza_ngsild::ActiveContext;
use piazza_store_embedded::EmbeddedStore;
use serde_json::{json, Value};

const UM: &str = "https://smartdatamodels.org/dataModel.UrbanMobility/";
const ENV: &str = "https://smartdatamodels.org/dataModel.Environment/";

fn testdata(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(path)
}

struct Fixture {
    broker: Broker,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("store");
    Fixture {
        broker: Broker::new(Arc::new(store), Limits::default()),
        _dir: dir,
    }
}

fn options() -> Options {
    Options::default()
}

async fn count(broker: &Broker, entity_type: &str) -> u64 {
    let query = EntityQuery {
        types: Some(TypeSelector::any_of(vec![entity_type.to_owned()])),
        ..EntityQuery::default()
    };
    let page = Page {
        offset: 0,
        limit: 1,
        count: true,
    };
    let result = broker.query(&Tenant::default(), query, page).await.expect("query");
    result.total.unwrap_or_default()
}

async fn entity(broker: &Broker, id: &str) -> piazza_ngsild::Entity {
    broker.entity(&Tenant::default(), id).await.expect(id)
}

/// Rows of one CSV file of a GTFS zip, counted with a CSV reader.
fn feed_rows(zip: &Path, file: &str) -> u64 {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(zip).expect("zip")).expect("archive");
    let mut text = String::new();
    archive
        .by_name(file)
        .expect(file)
        .read_to_string(&mut text)
        .expect("utf-8");
    csv::Reader::from_reader(text.as_bytes()).records().count() as u64
}

fn value<'a>(entity: &'a piazza_ngsild::Entity, attr: &str) -> &'a Value {
    &entity.attributes.get(attr).unwrap_or_else(|| panic!("{attr} missing"))[0].value
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prato_feed_becomes_urban_mobility_entities() {
    let f = fixture();
    let feed = testdata("gtfs/cap-prato-2016.gtfs.zip");
    let summary = piazza_import::import_gtfs(&f.broker, &options(), &feed, &GtfsOptions::default())
        .await
        .expect("import");
    assert_eq!(summary.rejected, 0, "{:?}", summary.rejections);

    let (stops, routes, trips) = (
        feed_rows(&feed, "stops.txt"),
        feed_rows(&feed, "routes.txt"),
        feed_rows(&feed, "trips.txt"),
    );
    assert_eq!(
        (stops, routes, trips),
        (1647, 23, 4401),
        "the feed as SOURCE.md describes it"
    );
    assert_eq!(count(&f.broker, &format!("{UM}GtfsStop")).await, stops);
    assert_eq!(count(&f.broker, &format!("{UM}GtfsRoute")).await, routes);
    assert_eq!(count(&f.broker, &format!("{UM}GtfsTrip")).await, trips);
    assert_eq!(
        count(&f.broker, &format!("{UM}GtfsStopTime")).await,
        feed_rows(&feed, "stop_times.txt")
    );
    assert_eq!(
        count(&f.broker, &format!("{UM}GtfsCalendarDateRule")).await,
        feed_rows(&feed, "calendar_dates.txt")
    );
    assert_eq!(count(&f.broker, &format!("{UM}GtfsService")).await, 398);
    assert_eq!(count(&f.broker, &format!("{UM}GtfsAgency")).await, 1);
    assert_eq!(summary.created, summary.total());

    // A trip points at its route and service, a stop time at its stop and trip.
    let trip_query = EntityQuery {
        types: Some(TypeSelector::any_of(vec![format!("{UM}GtfsStopTime")])),
        ..EntityQuery::default()
    };
    let page = Page {
        offset: 0,
        limit: 1,
        count: false,
    };
    let stop_time = f
        .broker
        .query(&Tenant::default(), trip_query, page)
        .await
        .expect("query")
        .entities
        .remove(0);
    let trip_id = value(&stop_time, &format!("{UM}hasTrip"))
        .as_str()
        .expect("trip")
        .to_owned();
    let stop_id = value(&stop_time, &format!("{UM}hasStop"))
        .as_str()
        .expect("stop")
        .to_owned();
    let trip = entity(&f.broker, &trip_id).await;
    let route = entity(
        &f.broker,
        value(&trip, &format!("{UM}hasRoute")).as_str().expect("route"),
    )
    .await;
    entity(
        &f.broker,
        value(&trip, &format!("{UM}hasService")).as_str().expect("service"),
    )
    .await;
    assert_eq!(
        value(&route, &format!("{UM}operatedBy")),
        "urn:ngsi-ld:GtfsAgency:169:169"
    );
    let stop = entity(&f.broker, &stop_id).await;
    assert!(stop_id.starts_with("urn:ngsi-ld:GtfsStop:169:"), "{stop_id}");
    let name = value(&stop, "https://smartdatamodels.org/name").as_str().expect("name");
    assert_eq!(name, name.trim(), "padded names are trimmed");
    assert!(!name.contains("  "), "{name:?}");
    let location = &stop.attributes["https://uri.etsi.org/ngsi-ld/location"][0];
    assert_eq!(location.kind, piazza_ngsild::AttributeKind::GeoProperty);
    assert_eq!(location.value["type"], "Point");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_feed_with_stations_and_a_calendar_re_imports_without_change() {
    let f = fixture();
    let feed = testdata("gtfs/google-sample-good_feed.zip");
    let first = piazza_import::import_gtfs(&f.broker, &options(), &feed, &GtfsOptions::default())
        .await
        .expect("import");
    assert_eq!(first.rejected, 0, "{:?}", first.rejections);
    assert!(first.created > 0);
    assert!(count(&f.broker, &format!("{UM}GtfsStation")).await >= 1);
    assert_eq!(
        count(&f.broker, &format!("{UM}GtfsCalendarRule")).await,
        feed_rows(&feed, "calendar.txt")
    );
    let again = piazza_import::import_gtfs(&f.broker, &options(), &feed, &GtfsOptions::default())
        .await
        .expect("re-import");
    assert_eq!(
        again,
        Summary {
            unchanged: first.created,
            ..Summary::default()
        },
        "re-running writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tuscan_comuni_as_points_and_boundaries() {
    let f = fixture();
    let csv = testdata("tuscany-comuni/comuni_toscana.csv");
    let points = Mapping::load(&testdata("mappings/comuni.toml")).expect("mapping");
    let summary = piazza_import::import_csv(&f.broker, &options(), &csv, &points)
        .await
        .expect("import");
    assert_eq!(
        (summary.created, summary.rejected),
        (273, 0),
        "{:?}",
        summary.rejections
    );

    let geojson = testdata("tuscany-comuni/limits_R_9_municipalities.simplified.geojson");
    let boundaries = Mapping::load(&testdata("mappings/comuni-boundaries.toml")).expect("mapping");
    let summary = piazza_import::import_geojson(&f.broker, &options(), &geojson, &boundaries)
        .await
        .expect("import");
    assert_eq!(
        (summary.updated, summary.rejected),
        (273, 0),
        "{:?}",
        summary.rejections
    );

    let core = ActiveContext::core();
    assert_eq!(count(&f.broker, &core.expand("Municipality")).await, 273);
    let firenze = entity(&f.broker, "urn:ngsi-ld:Municipality:048017").await;
    assert_eq!(value(&firenze, &core.expand("name")), "Firenze");
    assert_eq!(value(&firenze, &core.expand("population")), 360_930);
    assert_eq!(value(&firenze, &core.expand("location"))["type"], "Point");
    let boundary = value(&firenze, &core.expand("boundary"));
    assert!(matches!(boundary["type"].as_str(), Some("Polygon" | "MultiPolygon")));
}

/// Rows of `file` (a CSV) whose `column` is `wanted`.
fn csv_rows_where(file: &Path, column: &str, wanted: &str) -> Vec<csv::StringRecord> {
    let mut reader = csv::Reader::from_path(file).expect("csv");
    let index = reader
        .headers()
        .expect("header")
        .iter()
        .position(|h| h == column)
        .expect(column);
    reader
        .records()
        .map(|r| r.expect("row"))
        .filter(|r| r.get(index) == Some(wanted))
        .collect()
}

async fn pm10_history(broker: &Broker, id: &str) -> Vec<(String, Value)> {
    let query = TemporalQuery {
        attrs: vec![format!("{ENV}pm10")],
        ..TemporalQuery::default()
    };
    let history = broker
        .temporal_entity(&Tenant::default(), id, &query)
        .await
        .expect("history");
    history.attributes[&format!("{ENV}pm10")]
        .iter()
        .map(|i| {
            (
                i.attribute.observed_at.clone().unwrap_or_default(),
                i.attribute.value.clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn arpat_stations_and_their_daily_pm10_in_history() {
    let f = fixture();
    let stations = Mapping::load(&testdata("mappings/arpat-stations.toml")).expect("mapping");
    let summary = piazza_import::import_csv(
        &f.broker,
        &options(),
        &testdata("sensor-timeseries/arpat_stations_toscana.csv"),
        &stations,
    )
    .await
    .expect("stations");
    assert_eq!((summary.created, summary.rejected), (37, 0), "{:?}", summary.rejections);

    let series = testdata("sensor-timeseries/toscana_pm10_daily_2020.csv");
    let pm10 = Mapping::load(&testdata("mappings/arpat-pm10.toml")).expect("mapping");
    let summary = piazza_import::import_csv(&f.broker, &options(), &series, &pm10)
        .await
        .expect("pm10");
    assert_eq!(summary.rejected, 0, "{:?}", summary.rejections);
    assert_eq!(summary.total(), 6041);

    // LU-CAPANNORI: its history is the file's rows for it, in time order,
    // and the entity shows the last day.
    let rows = csv_rows_where(&series, "station_eu_code", "IT1187A");
    assert!(rows.len() > 100, "{} rows", rows.len());
    let id = "urn:ngsi-ld:AirQualityObserved:ARPAT:IT1187A";
    let history = pm10_history(&f.broker, id).await;
    assert_eq!(history.len(), rows.len());
    let mut expected: Vec<(String, f64)> = rows
        .iter()
        .map(|r| (format!("{}T00:00:00Z", &r[2]), r[3].parse::<f64>().expect("number")))
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let got: Vec<(String, f64)> = history
        .iter()
        .map(|(t, v)| (t.clone(), v.as_f64().expect("number")))
        .collect();
    assert_eq!(got, expected, "the series, in order");
    let station = entity(&f.broker, id).await;
    let current = &station.attributes[&format!("{ENV}pm10")][0];
    assert_eq!(current.observed_at.as_deref(), expected.last().map(|(t, _)| t.as_str()));
    assert_eq!(current.unit_code.as_deref(), Some("GQ"));
    assert!(
        station.attributes.contains_key("https://smartdatamodels.org/name"),
        "the station is kept"
    );

    // Re-running adds nothing to history.
    let again = piazza_import::import_csv(&f.broker, &options(), &series, &pm10)
        .await
        .expect("again");
    assert_eq!((again.unchanged, again.created, again.updated), (6041, 0, 0));
    assert_eq!(pm10_history(&f.broker, id).await.len(), rows.len());
}

/// Writes `text` as a CSV file in a temporary folder.
fn temp_csv(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn older_observations_fill_history_without_turning_back_the_current_value() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("dir");
    let pm10 = Mapping::load(&testdata("mappings/arpat-pm10.toml")).expect("mapping");
    let header = "\"reporting_year\",\"station_eu_code\",\"date\",\"PM10\"\n";
    let late = temp_csv(
        &dir,
        "late.csv",
        &format!("{header}2020,\"IT1\",2020-01-03,30\n2020,\"IT1\",2020-01-02,20\n"),
    );
    let early = temp_csv(
        &dir,
        "early.csv",
        &format!("{header}2020,\"IT1\",2020-01-01,10\n2020,\"IT1\",2020-01-02,20\n"),
    );
    piazza_import::import_csv(&f.broker, &options(), &late, &pm10)
        .await
        .expect("late");
    let summary = piazza_import::import_csv(&f.broker, &options(), &early, &pm10)
        .await
        .expect("early");
    assert_eq!(
        (summary.updated, summary.unchanged),
        (1, 1),
        "day 1 is new, day 2 known"
    );
    let id = "urn:ngsi-ld:AirQualityObserved:ARPAT:IT1";
    let days: Vec<String> = pm10_history(&f.broker, id).await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        days,
        ["2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z", "2020-01-03T00:00:00Z"]
    );
    let current = &entity(&f.broker, id).await.attributes[&format!("{ENV}pm10")][0];
    assert_eq!(current.value, 30.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_row_is_reported_with_its_line_and_the_rest_is_imported() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("dir");
    let original = std::fs::read_to_string(testdata("sensor-timeseries/arpat_stations_toscana.csv")).expect("csv");
    // Line 4 (the third station) gets a latitude (`st_y`, field 10) that is not a number.
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let mut fields: Vec<&str> = lines[3].split(',').collect();
    fields[9] = "north";
    lines[3] = fields.join(",");
    let broken = temp_csv(&dir, "stations.csv", &(lines.join("\n") + "\n"));
    let stations = Mapping::load(&testdata("mappings/arpat-stations.toml")).expect("mapping");

    let summary = piazza_import::import_csv(&f.broker, &options(), &broken, &stations)
        .await
        .expect("import");
    assert_eq!((summary.created, summary.rejected), (36, 1));
    let rejection = &summary.rejections[0];
    assert_eq!(rejection.origin.line, 4);
    assert!(rejection.reason.contains("st_y"), "{}", rejection.reason);
    assert!(rejection.to_string().starts_with(&format!("{}:4: ", broken.display())));

    let strict = Options {
        strict: true,
        tenant: Tenant::parse("strict").expect("tenant"),
        ..Options::default()
    };
    let error = piazza_import::import_csv(&f.broker, &strict, &broken, &stations)
        .await
        .err();
    assert!(
        matches!(&error, Some(ImportError::Strict(r)) if r.origin.line == 4),
        "{error:?}"
    );
    let written = f
        .broker
        .query(
            &strict.tenant,
            EntityQuery::default(),
            Page {
                offset: 0,
                limit: 100,
                count: true,
            },
        )
        .await
        .expect("query");
    assert_eq!(written.total, Some(2), "the rows before the bad one, nothing after");
}

#[tokio::test(flavor = "multi_thread")]
async fn smart_data_models_examples_normalized_and_key_values() {
    let f = fixture();
    let contexts: Vec<(String, PathBuf)> = [
        "Environment",
        "Parking",
        "Streetlighting",
        "WasteManagement",
        "PointOfInterest",
    ]
    .iter()
    .map(|subject| {
        (
            format!("https://raw.githubusercontent.com/smart-data-models/dataModel.{subject}/master/context.jsonld"),
            testdata(&format!(
                "smart-data-models/contexts/dataModel.{subject}.context.jsonld"
            )),
        )
    })
    .collect();
    let validating = Options {
        validator: Some(Validator::load(&testdata("smart-data-models")).expect("schemas")),
        ..Options::default()
    };
    let mut imported = 0;
    for model in [
        "OffStreetParking",
        "Streetlight",
        "WasteContainer",
        "PointOfInterest",
        "AirQualityObserved",
    ] {
        for file in ["example-normalized.jsonld", "example.jsonld"] {
            let path = testdata(&format!("smart-data-models/{model}/{file}"));
            // keyValues examples are what the schemas describe: validate them.
            let options = if file == "example.jsonld" && model != "AirQualityObserved" {
                &validating
            } else {
                &Options::default()
            };
            let summary = piazza_import::import_ngsild(&f.broker, options, &path, &contexts)
                .await
                .expect("import");
            assert_eq!(summary.rejected, 0, "{model}/{file}: {:?}", summary.rejections);
            imported += 1;
        }
    }
    assert_eq!(imported, 10);
    let parking = entity(&f.broker, "urn:ngsi-ld:OffStreetParking:porto-ParkingLot-23889").await;
    assert!(parking.types[0].ends_with("dataModel.Parking/OffStreetParking"));
    let spots = &parking.attributes["https://smartdatamodels.org/dataModel.Parking/availableSpotNumber"][0];
    assert_eq!(spots.kind, piazza_ngsild::AttributeKind::Property);
}

/// A normalized entity whose attribute is an array of instances (one per
/// datasetId) is imported as a multi-attribute, not as one Property whose
/// value is the array.
#[tokio::test(flavor = "multi_thread")]
async fn an_array_of_instances_is_imported_as_a_multi_attribute() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("hive.json");
    let hive = json!({
        "id": "urn:ngsi-ld:BeeHive:1",
        "type": "BeeHive",
        "temperature": [
            {"type": "Property", "value": 34.3, "datasetId": "urn:ngsi-ld:Dataset:inside"},
            {"type": "Property", "value": 31.0, "datasetId": "urn:ngsi-ld:Dataset:outside"}
        ]
    });
    std::fs::write(&file, hive.to_string()).expect("write");
    let summary = piazza_import::import_ngsild(&f.broker, &Options::default(), &file, &[])
        .await
        .expect("import");
    assert_eq!((summary.created, summary.rejected), (1, 0), "{:?}", summary.rejections);
    let hive = entity(&f.broker, "urn:ngsi-ld:BeeHive:1").await;
    let instances = &hive.attributes["https://uri.etsi.org/ngsi-ld/default-context/temperature"];
    let seen: Vec<(Option<&str>, &Value)> = instances.iter().map(|i| (i.dataset_id.as_deref(), &i.value)).collect();
    assert_eq!(
        seen,
        vec![
            (Some("urn:ngsi-ld:Dataset:inside"), &json!(34.3)),
            (Some("urn:ngsi-ld:Dataset:outside"), &json!(31.0))
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_rejects_what_the_schema_forbids() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("dir");
    let example = std::fs::read_to_string(testdata("smart-data-models/Streetlight/example.jsonld")).expect("example");
    let mut entity: Value = serde_json::from_str(&example).expect("json");
    entity["powerState"] = Value::String("dimmed-ish".into());
    let bad = dir.path().join("streetlight.jsonld");
    std::fs::write(&bad, entity.to_string()).expect("write");
    let options = Options {
        validator: Some(Validator::load(&testdata("smart-data-models")).expect("schemas")),
        ..Options::default()
    };
    let context = vec![(
        "https://raw.githubusercontent.com/smart-data-models/dataModel.Streetlighting/master/context.jsonld".to_owned(),
        testdata("smart-data-models/contexts/dataModel.Streetlighting.context.jsonld"),
    )];
    let summary = piazza_import::import_ngsild(&f.broker, &options, &bad, &context)
        .await
        .expect("import");
    assert_eq!(summary.rejected, 1);
    assert!(
        summary.rejections[0].reason.contains("powerState"),
        "{}",
        summary.rejections[0].reason
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn osm_fuel_stations_with_points_and_polygons() {
    let f = fixture();
    let mapping = Mapping::load(&testdata("mappings/osm-fuel-stations.toml")).expect("mapping");
    let file = testdata("prato-osm-poi/prato_fuel_stations_benzinai.geojson");
    let summary = piazza_import::import_geojson(&f.broker, &options(), &file, &mapping)
        .await
        .expect("import");
    assert_eq!((summary.created, summary.rejected), (56, 0), "{:?}", summary.rejections);
    let station = entity(&f.broker, "urn:ngsi-ld:PointOfInterest:osm:relation/447811").await;
    assert_eq!(
        value(&station, "https://smartdatamodels.org/address")["addressLocality"],
        "Prato"
    );
}
