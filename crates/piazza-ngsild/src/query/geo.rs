//! Geo-queries (GS CIM 009, clause 4.10): `georel`, `geometry`, `coordinates`
//! and `geoproperty`, from URL parameters or from a `geoQ` object.
//!
//! Semantics, with Q the query geometry and E a value of the entity's GeoProperty:
//! - `near;maxDistance==d` / `near;minDistance==d`: the distance in meters
//!   between Q and E, the smallest distance between a point of Q and a point
//!   of E, is `<= d` / `>= d` (`d` a positive number, as the grammar of
//!   clause 4.10 says). Q may be any geometry: for a Point the distance is to
//!   the nearest point of E; otherwise it is 0 if Q and E meet, else the
//!   least distance from a position of either to the nearest point of the
//!   other. Nearest points are searched on great-circle arcs (haversine) and
//!   distances to them measured on the WGS84 ellipsoid (geodesic), so
//!   point-to-point distances are exact.
//! - `within`, `contains`, `intersects`, `equals`, `disjoint`, `overlaps`: the
//!   DE-9IM predicates of OGC Simple Features, computed by `geo`'s `Relate` on
//!   lon/lat taken as a plane (as RFC 7946 does for lines between positions).
//!   `within` is "E within Q", `contains` is "E contains Q", `equals` is
//!   topological equality. A consequence: a point on a polygon's boundary
//!   intersects the polygon but is neither `within` it nor `contained` by it.
//!
//! An entity matches if any instance (any `datasetId`) of the GeoProperty
//! matches. Geometries never wrap around the antimeridian (RFC 7946 asks
//! producers to cut them there); `near` distances do cross it.
//! [`GeoQuery::matches`] applies the storage pre-filter box too, so an index
//! pre-filter can never change a result. A spatial index (PostGIS) may
//! narrow further with [`GeoQuery::spatial_filter`] and
//! [`GeoQuery::value_shape`] (`spatial.rs` says why they never drop a match).
//!
//! Polygons are read leniently, as PostGIS-backed brokers do: rings must be
//! closed with at least 4 positions (RFC 7946), consecutive repeated
//! positions are dropped, and areas that are not valid in OGC Simple
//! Features (rings crossing themselves or each other, holes outside their
//! shell, overlapping parts of a MultiPolygon) are repaired before `geo`'s
//! `Relate` sees them, the way PostGIS' `ST_MakeValid` (method "structure")
//! does: each ring encloses what the even-odd rule says, holes are cut from
//! their shell and the parts are merged. A query polygon is refused only when
//! it encloses no area at all (or positions leave the WGS84 range, or it is
//! too costly to check: `TooComplexQuery`). A stored geometry that cannot be
//! repaired is related as it is; every call into `geo` is guarded against
//! panics, so a shape `geo` cannot take matches nothing rather than crash.

use std::borrow::Cow;
use std::panic::{self, UnwindSafe};

use geo::coordinate_position::CoordPos;
use geo::dimensions::Dimensions;
use geo::line_intersection::{line_intersection, LineIntersection};
use geo::{
    BooleanOps, BoundingRect, Closest, Coord, CoordsIter, Distance, Geodesic, Geometry, GeometryCollection,
    HaversineClosestPoint, Intersects, Line, LineString, MultiLineString, MultiPoint, MultiPolygon, Point, Polygon,
    Rect, Relate,
};
use serde_json::{Map, Value};

use crate::entity::{is_valid_name, AttributeKind, Entity};
use crate::error::{ErrorKind, NgsiError, Result};
use crate::jsonld::ActiveContext;

mod spatial;
pub use spatial::{SpatialFilter, ValueShape, PLANAR_TOLERANCE_DEG};

/// The GeoProperty tested when the query names none (clause 4.10).
const DEFAULT_GEOPROPERTY: &str = "location";

/// The smallest meridional radius of curvature of WGS84 (at the equator). No
/// path on the ellipsoid covers a degree of latitude in fewer meters than on
/// a sphere of this radius, so `near` boxes built with it never cut off a match.
const MIN_RADIUS_M: f64 = 6_335_439.0;

/// Extra room on `near` boxes for the sphere-versus-ellipsoid approximation
/// in longitude and for rounding.
const BOX_MARGIN: f64 = 1.01;

/// GeometryCollections may nest; entity values deeper than this do not match,
/// which bounds the recursion on stored data.
const MAX_COLLECTION_DEPTH: usize = 16;

/// Positions allowed in a `near` reference other than a Point. Its distance
/// to an entity costs one nearest-point search per position of either, each
/// over all segments of the other, so this bounds the work per entity.
const MAX_NEAR_REFERENCE_POSITIONS: usize = 1_000;

/// A parsed geo-query, ready to test entities.
#[derive(Clone, Debug)]
pub struct GeoQuery {
    relation: Relation,
    georel: String,
    kind: GeometryKind,
    coordinates: Value,
    shape: Geometry<f64>,
    extent: Rect<f64>,
    geoproperty: String,
    prefilter: Option<Rect<f64>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Relation {
    Near(Bound),
    Topological(Predicate),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Bound {
    Max(f64),
    Min(f64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Predicate {
    Within,
    Contains,
    Intersects,
    Equals,
    Disjoint,
    Overlaps,
}

/// The geometry types a geo-query may use (clause 4.10 excludes GeometryCollection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GeometryKind {
    Point,
    MultiPoint,
    LineString,
    MultiLineString,
    Polygon,
    MultiPolygon,
}

impl GeoQuery {
    /// Parses the URL form: `georel` (e.g. `near;maxDistance==2000`,
    /// `within`), `geometry` (`Point`, `Polygon`...), `coordinates` (a JSON
    /// array, or a string holding its text as sent in a URL) and the
    /// GeoProperty to test (default `location`), expanded with `context`.
    pub fn parse(
        georel: &str,
        geometry: &str,
        coordinates: &Value,
        geoproperty: Option<&str>,
        context: &ActiveContext,
    ) -> Result<GeoQuery> {
        let relation = parse_relation(georel).map_err(invalid)?;
        let kind = GeometryKind::from_name(geometry).ok_or_else(|| {
            invalid(format!(
                "unknown geometry '{geometry}'; expected one of {}",
                GeometryKind::NAMES
            ))
        })?;
        let coordinates = coordinates_array(coordinates).map_err(invalid)?;
        let shape = query_shape(kind, &coordinates)?;
        if matches!(relation, Relation::Near(_)) && shape.coords_count() > MAX_NEAR_REFERENCE_POSITIONS {
            return Err(NgsiError::new(
                ErrorKind::TooComplexQuery,
                format!("a 'near' reference has at most {MAX_NEAR_REFERENCE_POSITIONS} positions"),
            ));
        }
        let extent = shape
            .bounding_rect()
            .ok_or_else(|| invalid(format!("the {geometry} has no position")))?;
        let prefilter = prefilter(relation, &shape);
        let name = geoproperty.unwrap_or(DEFAULT_GEOPROPERTY);
        if !is_valid_name(name) {
            return Err(invalid(format!("invalid geoproperty '{name}'")));
        }
        Ok(GeoQuery {
            relation,
            georel: georel.to_owned(),
            kind,
            coordinates: coordinates.into_owned(),
            shape,
            extent,
            geoproperty: context.expand(name),
            prefilter,
        })
    }

    /// Parses the `geoQ` object of `POST /entityOperations/query` and of
    /// subscriptions: `{"geometry", "coordinates", "georel", "geoproperty"?}`.
    pub fn from_json(value: &Value, context: &ActiveContext) -> Result<GeoQuery> {
        let Value::Object(members) = value else {
            return Err(invalid("geoQ must be a JSON object"));
        };
        let georel = required_string(members, "georel")?;
        let geometry = required_string(members, "geometry")?;
        let coordinates = members
            .get("coordinates")
            .ok_or_else(|| invalid("geoQ has no 'coordinates' member"))?;
        let geoproperty = match members.get("geoproperty") {
            None => None,
            Some(Value::String(name)) => Some(name.as_str()),
            Some(_) => return Err(invalid("geoQ 'geoproperty' must be a string")),
        };
        Self::parse(georel, geometry, coordinates, geoproperty, context)
    }

    /// The `geoQ` object for this query, with the GeoProperty compacted for
    /// `context` (what a subscription is rendered with).
    pub fn to_json(&self, context: &ActiveContext) -> Value {
        serde_json::json!({
            "geometry": self.kind.name(),
            "coordinates": self.coordinates,
            "georel": self.georel,
            "geoproperty": context.compact(&self.geoproperty),
        })
    }

    /// Whether any instance of the entity's GeoProperty satisfies the relation.
    pub fn matches(&self, entity: &Entity) -> bool {
        entity.attributes.get(&self.geoproperty).is_some_and(|instances| {
            instances
                .iter()
                .filter(|instance| instance.kind == AttributeKind::GeoProperty)
                .any(|instance| self.matches_value(&instance.value))
        })
    }

    /// A conservative `[min_lon, min_lat, max_lon, max_lat]` box that every
    /// matching geometry intersects, or `None` when the relation cannot be
    /// bounded (`disjoint`, `near;minDistance`, `near` from a reference other
    /// than a Point, whose great-circle arcs leave the box of its positions).
    pub fn bounding_box(&self) -> Option<[f64; 4]> {
        self.prefilter
            .map(|rect| [rect.min().x, rect.min().y, rect.max().x, rect.max().y])
    }

    /// The `[min_lon, min_lat, max_lon, max_lat]` box of a stored
    /// GeoProperty value, as the matching sees it: an entity can only match
    /// a query whose [`bounding_box`](Self::bounding_box) this box
    /// intersects (boundaries included). `None` when the value is no
    /// geometry the matching understands, which then never matches a
    /// bounded query. Storage keeps these boxes to pre-filter candidates.
    pub fn value_bounds(value: &Value) -> Option<[f64; 4]> {
        let rect = entity_geometry(value, 0)?.bounding_rect()?;
        Some([rect.min().x, rect.min().y, rect.max().x, rect.max().y])
    }

    /// The expanded name of the GeoProperty tested.
    pub fn geoproperty(&self) -> &str {
        &self.geoproperty
    }

    fn matches_value(&self, value: &Value) -> bool {
        entity_geometry(value, 0).is_some_and(|target| self.matches_geometry(&target))
    }

    fn matches_geometry(&self, target: &Geometry<f64>) -> bool {
        // Checking the storage pre-filter here too keeps both paths giving the
        // same answer, and rejects most entities without any trigonometry.
        if let Some(prefilter) = &self.prefilter {
            if !target.bounding_rect().is_some_and(|rect| rect.intersects(prefilter)) {
                return false;
            }
        }
        match self.relation {
            Relation::Near(bound) => self.near(bound, target),
            Relation::Topological(predicate) => self.relates(predicate, target),
        }
    }

    fn relates(&self, predicate: Predicate, target: &Geometry<f64>) -> bool {
        // Geometries whose boxes are apart are disjoint: `disjoint`, which
        // has no pre-filter, skips building the topology graph for them.
        if target
            .bounding_rect()
            .is_some_and(|rect| !rect.intersects(&self.extent))
        {
            return predicate == Predicate::Disjoint;
        }
        let target = match evaluable(target) {
            Ok(shape) => shape,
            // Not worth the time, like a query of that shape.
            Err(Flaw::TooComplex) => return false,
            // Beyond repair: relate it as it is, the guard catching what `geo` refuses.
            Err(Flaw::Invalid(_)) => Cow::Borrowed(target),
        };
        guarded(|| target.relate(&self.shape)).is_some_and(|matrix| predicate.holds(&matrix))
    }

    fn near(&self, bound: Bound, target: &Geometry<f64>) -> bool {
        let distance = match &self.shape {
            Geometry::Point(center) => distance_m(*center, target),
            reference => distance_between_m(reference, target),
        };
        match distance {
            Some(distance) => match bound {
                Bound::Max(limit) => distance <= limit,
                Bound::Min(limit) => distance >= limit,
            },
            None => false,
        }
    }
}

impl Predicate {
    fn holds(self, matrix: &geo::relate::IntersectionMatrix) -> bool {
        match self {
            Self::Within => matrix.is_within(),
            Self::Contains => matrix.is_contains(),
            Self::Intersects => matrix.is_intersects(),
            Self::Equals => matrix.is_equal_topo(),
            Self::Disjoint => matrix.is_disjoint(),
            Self::Overlaps => matrix.is_overlaps(),
        }
    }
}

impl GeometryKind {
    const NAMES: &'static str = "Point, MultiPoint, LineString, MultiLineString, Polygon, MultiPolygon";

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "Point" => Self::Point,
            "MultiPoint" => Self::MultiPoint,
            "LineString" => Self::LineString,
            "MultiLineString" => Self::MultiLineString,
            "Polygon" => Self::Polygon,
            "MultiPolygon" => Self::MultiPolygon,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Point => "Point",
            Self::MultiPoint => "MultiPoint",
            Self::LineString => "LineString",
            Self::MultiLineString => "MultiLineString",
            Self::Polygon => "Polygon",
            Self::MultiPolygon => "MultiPolygon",
        }
    }
}

/// The query geometry, built and checked.
fn query_shape(kind: GeometryKind, coordinates: &Value) -> Result<Geometry<f64>> {
    let shape = build_geometry(kind, coordinates).map_err(Flaw::Invalid);
    shape
        .and_then(|shape| check_query_geometry(&shape).map(|()| shape))
        .and_then(|shape| match evaluable(&shape) {
            Ok(Cow::Borrowed(_)) => Ok(shape),
            Ok(Cow::Owned(repaired)) => Ok(repaired),
            Err(flaw) => Err(flaw),
        })
        .map_err(|flaw| match flaw {
            Flaw::Invalid(why) => invalid(format!("coordinates of the {}: {why}", kind.name())),
            Flaw::TooComplex => NgsiError::new(
                ErrorKind::TooComplexQuery,
                format!("the {} of the geo-query is too complex to check", kind.name()),
            ),
        })
}

fn invalid(detail: impl Into<String>) -> NgsiError {
    NgsiError::bad_request(format!("invalid geo-query: {}", detail.into()))
}

fn required_string<'a>(members: &'a Map<String, Value>, name: &str) -> Result<&'a str> {
    match members.get(name) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(invalid(format!("geoQ '{name}' must be a string"))),
        None => Err(invalid(format!("geoQ has no '{name}' member"))),
    }
}

// ---------------------------------------------------------------- georel

/// `georel` per the ABNF of clause 4.10: a bare relation name, or
/// `near;maxDistance==N` / `near;minDistance==N` (exactly one distance, a
/// PositiveNumber: "excluding the number 0").
fn parse_relation(georel: &str) -> Result<Relation, String> {
    let predicate = match georel {
        "within" => Predicate::Within,
        "contains" => Predicate::Contains,
        "intersects" => Predicate::Intersects,
        "equals" => Predicate::Equals,
        "disjoint" => Predicate::Disjoint,
        "overlaps" => Predicate::Overlaps,
        "near" => return Err("'near' needs ';maxDistance==<meters>' or ';minDistance==<meters>'".into()),
        _ => return parse_near(georel).map(Relation::Near),
    };
    Ok(Relation::Topological(predicate))
}

fn parse_near(georel: &str) -> Result<Bound, String> {
    let unknown = || format!("unknown georel '{georel}'");
    let modifier = georel.strip_prefix("near;").ok_or_else(unknown)?;
    let (name, number) = modifier.split_once("==").ok_or_else(|| {
        format!("'near' modifier '{modifier}' is not 'maxDistance==<meters>' or 'minDistance==<meters>'")
    })?;
    let distance = parse_distance(number).ok_or_else(|| format!("distance '{number}' is not a positive number"))?;
    match name {
        "maxDistance" => Ok(Bound::Max(distance)),
        "minDistance" => Ok(Bound::Min(distance)),
        _ => Err(format!(
            "unknown 'near' modifier '{name}'; expected maxDistance or minDistance"
        )),
    }
}

/// A JSON-style unsigned number above 0 (a literal too small for an `f64`
/// reads as 0 and is refused too). Rust's float syntax alone would also let
/// through `inf`, `NaN` and a leading `+`.
fn parse_distance(text: &str) -> Option<f64> {
    let starts_with_digit = text.bytes().next().is_some_and(|b| b.is_ascii_digit());
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !starts_with_digit || !plain {
        return None;
    }
    text.parse::<f64>().ok().filter(|d| d.is_finite() && *d > 0.0)
}

// ---------------------------------------------------------------- GeoJSON to geo

/// The coordinates as a JSON array, parsing the text form of URLs.
fn coordinates_array(coordinates: &Value) -> Result<Cow<'_, Value>, String> {
    let array = match coordinates {
        Value::Array(_) => Cow::Borrowed(coordinates),
        Value::String(text) => {
            Cow::Owned(serde_json::from_str::<Value>(text).map_err(|e| format!("coordinates are not JSON text: {e}"))?)
        }
        _ => return Err("coordinates must be a JSON array".into()),
    };
    if array.is_array() {
        Ok(array)
    } else {
        Err("coordinates must be a JSON array".into())
    }
}

/// Builds a geometry from GeoJSON coordinates, checking their nesting and
/// the minimum sizes of RFC 7946 (section 3.1). Shared by queries and
/// entities, so both read GeoJSON the same way.
fn build_geometry(kind: GeometryKind, coordinates: &Value) -> Result<Geometry<f64>, String> {
    Ok(match kind {
        GeometryKind::Point => Geometry::Point(Point(position(coordinates)?)),
        GeometryKind::MultiPoint => Geometry::MultiPoint(MultiPoint(each(coordinates, |p| position(p).map(Point))?)),
        GeometryKind::LineString => Geometry::LineString(line_string(coordinates)?),
        GeometryKind::MultiLineString => Geometry::MultiLineString(MultiLineString(each(coordinates, line_string)?)),
        GeometryKind::Polygon => Geometry::Polygon(polygon(coordinates)?),
        GeometryKind::MultiPolygon => Geometry::MultiPolygon(MultiPolygon(each(coordinates, polygon)?)),
    })
}

fn members(value: &Value) -> Result<&[Value], String> {
    value
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("expected an array, found {}", json_kind(value)))
}

fn each<T>(value: &Value, convert: impl Fn(&Value) -> Result<T, String>) -> Result<Vec<T>, String> {
    members(value)?.iter().map(convert).collect()
}

/// A position: longitude, latitude and an optional altitude, which is ignored.
fn position(value: &Value) -> Result<Coord<f64>, String> {
    let numbers = members(value)?;
    if !(2..=3).contains(&numbers.len()) {
        return Err(format!("a position has 2 or 3 numbers, not {}", numbers.len()));
    }
    let number = |v: &Value| {
        v.as_f64()
            .filter(|n| n.is_finite())
            .ok_or_else(|| format!("a position holds numbers, not {}", json_kind(v)))
    };
    Ok(Coord {
        x: number(&numbers[0])?,
        y: number(&numbers[1])?,
    })
}

fn line_string(value: &Value) -> Result<LineString<f64>, String> {
    let coords = each(value, position)?;
    if coords.len() < 2 {
        return Err("a LineString needs at least 2 positions".into());
    }
    Ok(LineString(coords))
}

fn linear_ring(value: &Value) -> Result<LineString<f64>, String> {
    let coords = each(value, position)?;
    if coords.len() < 4 {
        return Err("a linear ring needs at least 4 positions".into());
    }
    if coords.first() != coords.last() {
        return Err("a linear ring must end where it starts".into());
    }
    Ok(LineString(without_repeats(&coords)))
}

fn polygon(value: &Value) -> Result<Polygon<f64>, String> {
    let mut rings = each(value, linear_ring)?.into_iter();
    let exterior = rings.next().ok_or("a Polygon needs an exterior ring")?;
    Ok(Polygon::new(exterior, rings.collect()))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A stored GeoProperty value (any GeoJSON geometry, collections included),
/// or `None` if it cannot be read.
fn entity_geometry(value: &Value, depth: usize) -> Option<Geometry<f64>> {
    let object = value.as_object()?;
    let kind = object.get("type")?.as_str()?;
    if kind == "GeometryCollection" {
        if depth >= MAX_COLLECTION_DEPTH {
            return None;
        }
        let parts = object.get("geometries")?.as_array()?;
        let parts = parts
            .iter()
            .map(|part| entity_geometry(part, depth + 1))
            .collect::<Option<_>>()?;
        return Some(Geometry::GeometryCollection(GeometryCollection(parts)));
    }
    build_geometry(GeometryKind::from_name(kind)?, object.get("coordinates")?).ok()
}

// ---------------------------------------------------------------- validity

/// Why a geometry fails the validity checks.
#[derive(Debug)]
enum Flaw {
    Invalid(String),
    TooComplex,
}

impl From<&str> for Flaw {
    fn from(why: &str) -> Self {
        Flaw::Invalid(why.to_owned())
    }
}

/// Segment comparisons allowed when validating one geometry. The sweep below
/// is near-linear on real boundaries, but crafted shapes (stars, zigzags)
/// push it and `geo`'s own noding towards n² pairs: past this, the geometry
/// is refused rather than tie up a worker.
const VALIDATION_BUDGET: usize = 8_000_000;

struct Budget(usize);

impl Budget {
    fn new() -> Self {
        Budget(VALIDATION_BUDGET)
    }

    fn spend(&mut self, units: usize) -> Result<(), Flaw> {
        self.0 = self.0.checked_sub(units).ok_or(Flaw::TooComplex)?;
        Ok(())
    }
}

/// What a query geometry must satisfy beyond its GeoJSON shape, areas aside
/// (see [`evaluable`]). Ranges come from RFC 7946 (WGS84 degrees).
fn check_query_geometry(shape: &Geometry<f64>) -> Result<(), Flaw> {
    if let Some(c) = shape.coords_iter().find(|c| !in_range(*c)) {
        let why = format!("position [{}, {}] is not a WGS84 longitude and latitude", c.x, c.y);
        return Err(Flaw::Invalid(why));
    }
    match shape {
        Geometry::MultiPoint(points) if points.0.is_empty() => Err("a MultiPoint needs at least one point".into()),
        Geometry::LineString(line) => check_line(line),
        Geometry::MultiLineString(lines) if lines.0.is_empty() => Err("a MultiLineString needs a line".into()),
        Geometry::MultiLineString(lines) => lines.iter().try_for_each(check_line),
        Geometry::MultiPolygon(polygons) if polygons.0.is_empty() => Err("a MultiPolygon needs a polygon".into()),
        _ => Ok(()),
    }
}

fn in_range(c: Coord<f64>) -> bool {
    (-180.0..=180.0).contains(&c.x) && (-90.0..=90.0).contains(&c.y)
}

fn check_line(line: &LineString<f64>) -> Result<(), Flaw> {
    if line.0.windows(2).any(|pair| pair[0] != pair[1]) {
        Ok(())
    } else {
        Err("a LineString needs two distinct positions".into())
    }
}

/// The geometry to hand `geo`'s `Relate` for `shape`: `shape` itself when
/// its areas are valid (OGC Simple Features), else their repair. `Relate`
/// asserts on crossing rings and on overlapping polygons of one geometry
/// (georust/geo#1268), and gives wrong answers on other invalid areas.
///
/// The repair follows PostGIS' `ST_MakeValid` (method "structure"): each
/// ring encloses what the even-odd rule makes of it (a bow tie is two
/// triangles), holes are cut out of their shell, and the parts are merged.
/// It fails with `Invalid` when no area is left and with `TooComplex` when
/// checking or repairing would cost too much.
fn evaluable(shape: &Geometry<f64>) -> Result<Cow<'_, Geometry<f64>>, Flaw> {
    let polygons = polygons_of(shape);
    match check_areas(&polygons, &mut Budget::new()) {
        Ok(()) => return Ok(Cow::Borrowed(shape)),
        Err(Flaw::TooComplex) => return Err(Flaw::TooComplex),
        Err(Flaw::Invalid(_)) => {}
    }
    // The check stops at the first flaw. The overlay's work grows with the
    // segment pairs that may cross, which a full sweep counts.
    let rings: Vec<Vec<Coord<f64>>> = polygons
        .iter()
        .flat_map(|polygon| std::iter::once(polygon.exterior()).chain(polygon.interiors()))
        .map(|ring| ring.0.clone())
        .collect();
    sweep(&rings, &mut Budget::new(), |_, _| false)?;
    guarded(|| repair(shape))
        .flatten()
        .map(Cow::Owned)
        .ok_or_else(|| "the area it bounds is empty".into())
}

/// The repair of [`evaluable`], or `None` if no area is left. Points and
/// lines of a GeometryCollection are kept as they are.
fn repair(shape: &Geometry<f64>) -> Option<Geometry<f64>> {
    let area = merge(polygons_of(shape).into_iter().map(repair_polygon).collect());
    if area.0.is_empty() {
        return None;
    }
    Some(match shape {
        Geometry::GeometryCollection(_) => {
            let mut parts = Vec::new();
            non_areas(shape, &mut parts);
            parts.push(Geometry::MultiPolygon(area));
            Geometry::GeometryCollection(GeometryCollection(parts))
        }
        _ => Geometry::MultiPolygon(area),
    })
}

fn repair_polygon(polygon: &Polygon<f64>) -> MultiPolygon<f64> {
    polygon
        .interiors()
        .iter()
        .fold(fill(polygon.exterior()), |area, hole| area.difference(&fill(hole)))
}

/// The area a ring encloses by the even-odd rule, without degenerate parts.
fn fill(ring: &LineString<f64>) -> MultiPolygon<f64> {
    Polygon::new(ring.clone(), Vec::new()).union(&MultiPolygon::new(Vec::new()))
}

/// The union of valid areas, pairwise so that `n` parts cost `log n` rounds.
fn merge(mut parts: Vec<MultiPolygon<f64>>) -> MultiPolygon<f64> {
    while parts.len() > 1 {
        parts = parts
            .chunks(2)
            .map(|pair| pair[1..].iter().fold(pair[0].clone(), |area, other| area.union(other)))
            .collect();
    }
    parts.pop().unwrap_or_else(|| MultiPolygon::new(Vec::new()))
}

/// The parts of a geometry that are not areas, collections flattened.
fn non_areas(shape: &Geometry<f64>, out: &mut Vec<Geometry<f64>>) {
    match shape {
        Geometry::Polygon(_) | Geometry::MultiPolygon(_) => {}
        Geometry::GeometryCollection(parts) => parts.iter().for_each(|part| non_areas(part, out)),
        other => out.push(other.clone()),
    }
}

fn polygons_of(shape: &Geometry<f64>) -> Vec<&Polygon<f64>> {
    match shape {
        Geometry::Polygon(polygon) => vec![polygon],
        Geometry::MultiPolygon(polygons) => polygons.iter().collect(),
        Geometry::GeometryCollection(parts) => parts.iter().flat_map(polygons_of).collect(),
        _ => Vec::new(),
    }
}

/// OGC Simple Features validity of the polygons of one geometry (short of
/// interiors split by touching holes): simple rings, holes inside their
/// polygon, and polygons sharing no interior.
fn check_areas(polygons: &[&Polygon<f64>], budget: &mut Budget) -> Result<(), Flaw> {
    for polygon in polygons {
        check_polygon(polygon, budget)?;
    }
    if interiors_are_disjoint(polygons, budget)? {
        Ok(())
    } else {
        Err("the polygons of a MultiPolygon must not overlap".into())
    }
}

fn check_polygon(polygon: &Polygon<f64>, budget: &mut Budget) -> Result<(), Flaw> {
    let rings: Vec<Vec<Coord<f64>>> = std::iter::once(polygon.exterior())
        .chain(polygon.interiors())
        .map(|ring| without_repeats(&ring.0))
        .collect();
    if rings.iter().any(|ring| ring.len() < 4) {
        return Err("a linear ring needs at least 3 distinct positions".into());
    }
    if !rings_are_simple(&rings, budget)? {
        return Err("the rings of a Polygon must not cross themselves or each other".into());
    }
    if holes_fit(polygon, budget)? {
        Ok(())
    } else {
        Err("the holes of a Polygon must lie inside its exterior ring and apart".into())
    }
}

/// Whether every hole lies inside the exterior ring and no two holes
/// overlap. Each ring is simple by now, so relating rings as polygons is safe.
fn holes_fit(polygon: &Polygon<f64>, budget: &mut Budget) -> Result<bool, Flaw> {
    if polygon.interiors().is_empty() {
        return Ok(true);
    }
    let shell = Polygon::new(polygon.exterior().clone(), Vec::new());
    let holes: Vec<Polygon<f64>> = polygon
        .interiors()
        .iter()
        .map(|ring| Polygon::new(ring.clone(), Vec::new()))
        .collect();
    for hole in &holes {
        budget.spend(shell.exterior().0.len() + hole.exterior().0.len())?;
        if !guarded(|| shell.relate(hole)).is_some_and(|matrix| matrix.is_covers()) {
            return Ok(false);
        }
    }
    interiors_are_disjoint(&holes.iter().collect::<Vec<_>>(), budget)
}

/// Compares only polygons whose boxes meet; each is valid on its own by now,
/// which is what makes relating them safe.
fn interiors_are_disjoint(polygons: &[&Polygon<f64>], budget: &mut Budget) -> Result<bool, Flaw> {
    let mut boxed: Vec<(Rect<f64>, &Polygon<f64>)> = polygons
        .iter()
        .filter_map(|polygon| Some((polygon.bounding_rect()?, *polygon)))
        .collect();
    boxed.sort_by(|a, b| a.0.min().x.total_cmp(&b.0.min().x));
    for (k, (rect, polygon)) in boxed.iter().enumerate() {
        let neighbours = boxed[k + 1..]
            .iter()
            .take_while(|(other_rect, _)| other_rect.min().x <= rect.max().x);
        for (other_rect, other) in neighbours {
            budget.spend(1)?;
            if !other_rect.intersects(rect) {
                continue;
            }
            budget.spend(polygon.coords_count() + other.coords_count())?;
            let apart = guarded(|| polygon.relate(*other))
                .is_some_and(|matrix| matrix.get(CoordPos::Inside, CoordPos::Inside) == Dimensions::Empty);
            if !apart {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn without_repeats(coords: &[Coord<f64>]) -> Vec<Coord<f64>> {
    let mut kept: Vec<Coord<f64>> = Vec::with_capacity(coords.len());
    for c in coords {
        if kept.last() != Some(c) {
            kept.push(*c);
        }
    }
    kept
}

/// One segment of a ring, with where it sits, to tell a ring's consecutive
/// segments (which meet at a vertex) from a crossing.
#[derive(Clone, Copy)]
struct Edge {
    ring: usize,
    index: usize,
    ring_edges: usize,
    line: Line<f64>,
}

impl Edge {
    fn min_x(&self) -> f64 {
        self.line.start.x.min(self.line.end.x)
    }
    fn max_x(&self) -> f64 {
        self.line.start.x.max(self.line.end.x)
    }
    fn apart_in_latitude(&self, other: &Edge) -> bool {
        let (low, high) = (
            self.line.start.y.min(self.line.end.y),
            self.line.start.y.max(self.line.end.y),
        );
        (other.line.start.y < low && other.line.end.y < low) || (other.line.start.y > high && other.line.end.y > high)
    }
    fn follows(&self, other: &Edge) -> bool {
        self.ring == other.ring
            && (self.index + 1 == other.index
                || other.index + 1 == self.index
                || (self.index == 0 && other.index + 1 == other.ring_edges)
                || (other.index == 0 && self.index + 1 == self.ring_edges))
    }
}

/// Whether no ring crosses itself and rings meet at most at single points
/// (OGC Simple Features).
fn rings_are_simple(rings: &[Vec<Coord<f64>>], budget: &mut Budget) -> Result<bool, Flaw> {
    let crossing = sweep(rings, budget, |a, b| {
        line_intersection(a.line, b.line).is_some_and(|hit| !allowed_contact(a, b, hit))
    })?;
    Ok(!crossing)
}

/// Calls `stop` on the pairs of ring segments that may meet, until it
/// returns true (then so does `sweep`). Segments are swept by longitude, so
/// only pairs whose longitude spans overlap are compared.
fn sweep(
    rings: &[Vec<Coord<f64>>],
    budget: &mut Budget,
    mut stop: impl FnMut(&Edge, &Edge) -> bool,
) -> Result<bool, Flaw> {
    let mut edges: Vec<Edge> = Vec::new();
    for (ring, coords) in rings.iter().enumerate() {
        let ring_edges = coords.len().saturating_sub(1);
        edges.extend(coords.windows(2).enumerate().map(|(index, pair)| Edge {
            ring,
            index,
            ring_edges,
            line: Line::new(pair[0], pair[1]),
        }));
    }
    edges.sort_by(|a, b| a.min_x().total_cmp(&b.min_x()));
    for (k, a) in edges.iter().enumerate() {
        for b in edges[k + 1..].iter().take_while(|b| b.min_x() <= a.max_x()) {
            budget.spend(1)?;
            if !a.apart_in_latitude(b) && stop(a, b) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn allowed_contact(a: &Edge, b: &Edge, hit: LineIntersection<f64>) -> bool {
    let LineIntersection::SinglePoint {
        intersection,
        is_proper,
    } = hit
    else {
        return false;
    };
    if a.ring != b.ring {
        return !is_proper;
    }
    a.follows(b)
        && ((intersection == a.line.end && intersection == b.line.start)
            || (intersection == a.line.start && intersection == b.line.end))
}

// ---------------------------------------------------------------- measures

/// The box that the storage may pre-filter on. Every geometry E satisfying a
/// topological relation other than `disjoint` shares a point with Q, and so
/// meets Q's box.
fn prefilter(relation: Relation, shape: &Geometry<f64>) -> Option<Rect<f64>> {
    match (relation, shape) {
        (Relation::Near(Bound::Max(distance)), Geometry::Point(center)) => Some(near_box(*center, distance)),
        (Relation::Topological(Predicate::Disjoint) | Relation::Near(_), _) => None,
        (Relation::Topological(_), _) => shape.bounding_rect(),
    }
}

/// A box holding every point within `distance` meters of `center`. Reaching
/// a pole or the antimeridian widens it to all longitudes, which stays
/// conservative with one box.
fn near_box(center: Point<f64>, distance: f64) -> Rect<f64> {
    let angle = (distance / MIN_RADIUS_M * BOX_MARGIN).to_degrees();
    let (lon, lat) = (center.x(), center.y());
    let south = (lat - angle).max(-90.0);
    let north = (lat + angle).min(90.0);
    let all_longitudes = Rect::new(Coord { x: -180.0, y: south }, Coord { x: 180.0, y: north });
    if south <= -90.0 || north >= 90.0 {
        return all_longitudes;
    }
    // On a sphere, the widest longitude of a circle of angular radius `angle`
    // around latitude `lat`; below the pole test the ratio is under 1.
    let half_width = (angle.to_radians().sin() / lat.to_radians().cos()).asin().to_degrees();
    let (west, east) = (lon - half_width, lon + half_width);
    if !(west >= -180.0 && east <= 180.0) {
        return all_longitudes;
    }
    Rect::new(Coord { x: west, y: south }, Coord { x: east, y: north })
}

/// Meters between two geometries, or `None` if either is empty. Two
/// geometries apart are nearest at a position of one of them (segments are
/// arcs that do not cross), so the nearest point of each to every position
/// of the other covers all candidates; meeting is tested in the plane.
fn distance_between_m(reference: &Geometry<f64>, target: &Geometry<f64>) -> Option<f64> {
    if guarded(|| reference.intersects(target)) == Some(true) {
        return Some(0.0);
    }
    let from_reference = reference.coords_iter().filter_map(|c| distance_m(Point(c), target));
    let from_target = target.coords_iter().filter_map(|c| distance_m(Point(c), reference));
    from_reference.chain(from_target).min_by(f64::total_cmp)
}

/// Meters from `from` to the nearest point of `target`, or `None` for an
/// empty geometry.
fn distance_m(from: Point<f64>, target: &Geometry<f64>) -> Option<f64> {
    let nearest = match guarded(|| target.haversine_closest_point(&from))? {
        Closest::Intersection(_) => return Some(0.0),
        Closest::SinglePoint(point) => point,
        Closest::Indeterminate => return None,
    };
    let distance = Geodesic::distance(from, nearest);
    distance.is_finite().then_some(distance)
}

/// Runs a `geo` computation. `geo` asserts on invalid inputs
/// (georust/geo#1268); [`evaluable`] repairs the ones known, and whatever it
/// misses must fail to match rather than take the broker down.
fn guarded<T>(compute: impl FnOnce() -> T + UnwindSafe) -> Option<T> {
    panic::catch_unwind(compute).ok()
}

#[cfg(test)]
mod tests;
