//! What a spatial index (PostGIS, on the PostgreSQL store) may test to
//! narrow the candidates of a geo-query, in terms that never drop a match.
//!
//! The index sees two shapes of each stored GeoProperty value
//! ([`ValueShape`]) and one or two of the query ([`SpatialFilter`]), as OGC
//! WKB (2D, longitude then latitude). It only narrows: [`GeoQuery::matches`]
//! decides, as everywhere. Why each test is a necessary condition of a match:
//!
//! - Every topological relation but `disjoint` makes the value share a
//!   point with the query geometry in the lon/lat plane, which is where
//!   `geo`'s `Relate` works. So the value's *planar* shape comes within a
//!   small tolerance of the query's (the tolerance absorbs the index's own
//!   rounding). The query is given as the matching uses it, repaired. A
//!   value is given only when the matching relates it as it is, i.e. when
//!   its areas are valid: then the interior of each polygon is the same
//!   for every point-in-polygon rule, `geo`'s and PostGIS' alike. Values
//!   the matching repairs are always candidates.
//! - `within`, `contains` and `equals` bound the value's box too: a value
//!   within Q has its box inside Q's, one containing Q has Q's box inside
//!   its own, and topologically equal shapes have one box.
//! - `near;maxDistance==d` from a Point or MultiPoint, to a value made of
//!   points only, holds when a pair of their points is at most `d` meters
//!   apart on the WGS84 ellipsoid. No path on the ellipsoid is shorter
//!   than `MIN_RADIUS_M` times the angle it spans on the unit sphere (both
//!   the meridional and the prime-vertical radii of curvature are at least
//!   that), so the points are within `d / MIN_RADIUS_M` radians of each
//!   other on the unit sphere, taking longitude and latitude as spherical
//!   coordinates. The sphere handles the antimeridian and the poles, which
//!   a lon/lat box cannot.
//! - Lines and areas are candidates of every `near` query, and a `near`
//!   reference with lines or areas is not narrowed: `geo`'s nearest point
//!   on a great-circle arc tests whether the foot of the perpendicular lies
//!   on the arc with the bearing at one end taken as the reverse of the
//!   other's, which drifts with the arc's length and latitude (meridian
//!   convergence). The foot can then land beyond the arc, nearer than the
//!   arc is: a point 23 km from a 120°-long line near the pole is within
//!   20 km of it for the matching. A test of true arc distances would drop
//!   such matches.
//! - `near;minDistance` and `disjoint` hold for values far from the query:
//!   no index test excludes candidates for them. Not narrowed.

use std::borrow::Cow;

use geo::{Coord, CoordsIter, Geometry, LineString, MultiPoint, Point, Polygon, Rect};
use serde_json::Value;

use super::{entity_geometry, evaluable, Bound, GeoQuery, Predicate, Relation, BOX_MARGIN, MIN_RADIUS_M};

/// The planar tolerance, in degrees, of [`SpatialFilter`] tests: far
/// above the rounding of an index's distance arithmetic on coordinates up
/// to 180 (about 1e-14), and about a centimetre on the ground.
pub const PLANAR_TOLERANCE_DEG: f64 = 1e-7;

/// Extra angle (radians, about 6 m) on `near` sphere tests, for the
/// rounding of an index's spherical arithmetic near zero distance.
const SPHERE_SLACK_RAD: f64 = 1e-6;

/// How a stored GeoProperty value is indexed. `None` members make the value
/// a candidate of every query that would test them.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueShape {
    /// The value as the topological relations see it (WKB), or `None`
    /// when the matching repairs its areas first (or finds them too complex
    /// to check).
    pub planar: Option<Vec<u8>>,
    /// The value's points (a MultiPoint, WKB) when it is made of points
    /// only, all in the WGS84 range: what `near` measures to. `None` for
    /// values with lines or areas, or positions out of range.
    pub sphere: Option<Vec<u8>>,
}

/// What an index may test for a geo-query: a value of the GeoProperty can
/// only match if the test holds for it.
#[derive(Clone, Debug, PartialEq)]
pub enum SpatialFilter {
    /// The value's `planar` shape is `None`, or it comes within
    /// [`PLANAR_TOLERANCE_DEG`] of `shape` in the lon/lat plane, its box
    /// (`GeoQuery::value_bounds`) lies inside `inside` when given, and
    /// holds `around` when given (boxes `[min_lon, min_lat, max_lon,
    /// max_lat]`, boundaries included).
    Meets {
        shape: Vec<u8>,
        inside: Option<[f64; 4]>,
        around: Option<[f64; 4]>,
    },
    /// The value's `sphere` points are `None`, or one of them is within
    /// `angle` radians of one of the `sphere` points (the reference's, a
    /// MultiPoint) on the unit sphere, longitude and latitude taken as
    /// spherical coordinates.
    Near { sphere: Vec<u8>, angle: f64 },
}

impl GeoQuery {
    /// How a spatial index may narrow this query's candidates, or `None`
    /// when it cannot (`disjoint`, `near;minDistance`, a `near` reference
    /// other than points).
    pub fn spatial_filter(&self) -> Option<SpatialFilter> {
        match self.relation {
            Relation::Near(Bound::Max(distance)) => Some(SpatialFilter::Near {
                sphere: wkb(&Geometry::MultiPoint(points_only(&self.shape)?)),
                angle: distance / MIN_RADIUS_M * BOX_MARGIN + SPHERE_SLACK_RAD,
            }),
            Relation::Near(Bound::Min(_)) | Relation::Topological(Predicate::Disjoint) => None,
            Relation::Topological(predicate) => {
                let inside = Some(expanded(self.extent, PLANAR_TOLERANCE_DEG));
                let around = Some(shrunk(self.extent, PLANAR_TOLERANCE_DEG));
                let (inside, around) = match predicate {
                    Predicate::Within => (inside, None),
                    Predicate::Contains => (None, around),
                    Predicate::Equals => (inside, around),
                    _ => (None, None),
                };
                Some(SpatialFilter::Meets {
                    shape: wkb(&self.shape),
                    inside,
                    around,
                })
            }
        }
    }

    /// The shapes a spatial index keeps of a stored GeoProperty value, or
    /// `None` when the value is no geometry the matching reads (it then
    /// never matches a query a spatial index narrows).
    pub fn value_shape(value: &Value) -> Option<ValueShape> {
        let geometry = entity_geometry(value, 0)?;
        let planar = match evaluable(&geometry) {
            Ok(Cow::Borrowed(_)) => Some(wkb(&geometry)),
            Ok(Cow::Owned(_)) | Err(_) => None,
        };
        let sphere = points_only(&geometry)
            .filter(|points| points.coords_iter().all(super::in_range))
            .map(|points| wkb(&Geometry::MultiPoint(points)));
        Some(ValueShape { planar, sphere })
    }
}

fn expanded(rect: Rect<f64>, by: f64) -> [f64; 4] {
    [
        rect.min().x - by,
        rect.min().y - by,
        rect.max().x + by,
        rect.max().y + by,
    ]
}

/// `rect` less `by` on every side; a side shorter than `2 * by` shrinks to
/// its middle. A box that holds `rect` less `by` on every side after
/// growing by `by` holds this one.
fn shrunk(rect: Rect<f64>, by: f64) -> [f64; 4] {
    let side = |low: f64, high: f64| {
        if high - low > 2.0 * by {
            (low + by, high - by)
        } else {
            let middle = low + (high - low) / 2.0;
            (middle, middle)
        }
    };
    let (west, east) = side(rect.min().x, rect.max().x);
    let (south, north) = side(rect.min().y, rect.max().y);
    [west, south, east, north]
}

/// The points of a geometry made of points only (collections flattened),
/// or `None` if it has a line or an area.
fn points_only(shape: &Geometry<f64>) -> Option<MultiPoint<f64>> {
    fn collect(shape: &Geometry<f64>, out: &mut Vec<Point<f64>>) -> Option<()> {
        match shape {
            Geometry::Point(point) => out.push(*point),
            Geometry::MultiPoint(points) => out.extend(points.iter().copied()),
            Geometry::GeometryCollection(parts) => parts.iter().try_for_each(|part| collect(part, out))?,
            _ => return None,
        }
        Some(())
    }
    let mut points = Vec::new();
    collect(shape, &mut points)?;
    Some(MultiPoint(points))
}

// ---------------------------------------------------------------- WKB

/// OGC well-known binary (little endian, 2D) of `shape`.
fn wkb(shape: &Geometry<f64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * shape.coords_count() + 16);
    write_geometry(shape, &mut out);
    out
}

const WKB_POINT: u32 = 1;
const WKB_LINESTRING: u32 = 2;
const WKB_POLYGON: u32 = 3;
const WKB_MULTIPOINT: u32 = 4;
const WKB_MULTILINESTRING: u32 = 5;
const WKB_MULTIPOLYGON: u32 = 6;
const WKB_COLLECTION: u32 = 7;

fn header(kind: u32, out: &mut Vec<u8>) {
    out.push(1); // little endian
    out.extend_from_slice(&kind.to_le_bytes());
}

fn count(n: usize, out: &mut Vec<u8>) {
    // Geometries large enough to overflow a u32 never get here (body
    // size limits), but saturating keeps this total.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn coord(c: Coord<f64>, out: &mut Vec<u8>) {
    out.extend_from_slice(&c.x.to_le_bytes());
    out.extend_from_slice(&c.y.to_le_bytes());
}

fn point(p: Point<f64>, out: &mut Vec<u8>) {
    header(WKB_POINT, out);
    coord(p.0, out);
}

fn coords(line: &LineString<f64>, out: &mut Vec<u8>) {
    count(line.0.len(), out);
    line.0.iter().for_each(|c| coord(*c, out));
}

fn line_string(line: &LineString<f64>, out: &mut Vec<u8>) {
    header(WKB_LINESTRING, out);
    coords(line, out);
}

fn polygon(polygon: &Polygon<f64>, out: &mut Vec<u8>) {
    header(WKB_POLYGON, out);
    count(1 + polygon.interiors().len(), out);
    coords(polygon.exterior(), out);
    polygon.interiors().iter().for_each(|ring| coords(ring, out));
}

fn write_geometry(shape: &Geometry<f64>, out: &mut Vec<u8>) {
    match shape {
        Geometry::Point(p) => point(*p, out),
        Geometry::MultiPoint(points) => {
            header(WKB_MULTIPOINT, out);
            count(points.0.len(), out);
            points.iter().for_each(|p| point(*p, out));
        }
        Geometry::Line(line) => line_string(&LineString(vec![line.start, line.end]), out),
        Geometry::LineString(line) => line_string(line, out),
        Geometry::MultiLineString(lines) => {
            header(WKB_MULTILINESTRING, out);
            count(lines.0.len(), out);
            lines.iter().for_each(|line| line_string(line, out));
        }
        Geometry::Polygon(p) => polygon(p, out),
        Geometry::MultiPolygon(polygons) => {
            header(WKB_MULTIPOLYGON, out);
            count(polygons.0.len(), out);
            polygons.iter().for_each(|p| polygon(p, out));
        }
        Geometry::Rect(rect) => polygon(&rect.to_polygon(), out),
        Geometry::Triangle(triangle) => polygon(&triangle.to_polygon(), out),
        Geometry::GeometryCollection(parts) => {
            header(WKB_COLLECTION, out);
            count(parts.0.len(), out);
            parts.iter().for_each(|part| write_geometry(part, out));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ActiveContext;

    fn query(georel: &str, geometry: &str, coordinates: Value) -> GeoQuery {
        GeoQuery::parse(georel, geometry, &coordinates, None, &ActiveContext::core()).expect("query")
    }

    #[test]
    fn wkb_of_a_point_is_the_standard_encoding() {
        let shape = GeoQuery::value_shape(&json!({"type": "Point", "coordinates": [1.0, 2.0]})).expect("shape");
        let mut expected = vec![1, 1, 0, 0, 0];
        expected.extend_from_slice(&1.0f64.to_le_bytes());
        expected.extend_from_slice(&2.0f64.to_le_bytes());
        assert_eq!(shape.planar.as_deref(), Some(expected.as_slice()));
        // The sphere points are a MultiPoint holding the point.
        let sphere = shape.sphere.expect("sphere");
        assert_eq!(&sphere[..9], &[1, 4, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&sphere[9..], expected.as_slice());
    }

    #[test]
    fn lines_and_areas_have_no_sphere_points() {
        let ring = json!([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]);
        let shape = GeoQuery::value_shape(&json!({"type": "Polygon", "coordinates": [ring]})).expect("shape");
        let planar = shape.planar.expect("valid");
        assert_eq!(&planar[..9], &[1, 3, 0, 0, 0, 1, 0, 0, 0], "a polygon of one ring");
        assert!(shape.sphere.is_none());
        let line = json!({"type": "LineString", "coordinates": [[0.0, 0.0], [1.0, 1.0]]});
        assert!(GeoQuery::value_shape(&line).expect("shape").sphere.is_none());
        let points = json!({"type": "MultiPoint", "coordinates": [[0.0, 0.0], [1.0, 1.0]]});
        let sphere = GeoQuery::value_shape(&points).expect("shape").sphere.expect("points");
        assert_eq!(&sphere[..9], &[1, 4, 0, 0, 0, 2, 0, 0, 0]);
    }

    #[test]
    fn values_the_matching_repairs_are_always_candidates() {
        let bow_tie = json!([[[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]);
        let shape = GeoQuery::value_shape(&json!({"type": "Polygon", "coordinates": bow_tie})).expect("shape");
        assert_eq!(
            shape,
            ValueShape {
                planar: None,
                sphere: None
            }
        );
    }

    #[test]
    fn positions_outside_wgs84_have_no_sphere_set() {
        let shape = GeoQuery::value_shape(&json!({"type": "Point", "coordinates": [200.0, 10.0]})).expect("shape");
        assert!(shape.planar.is_some());
        assert!(shape.sphere.is_none());
        assert!(GeoQuery::value_shape(&json!({"type": "Point"})).is_none());
    }

    #[test]
    fn filters_follow_the_relation() {
        let square = json!([[[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0], [0.0, 0.0]]]);
        let t = PLANAR_TOLERANCE_DEG;
        match query("within", "Polygon", square.clone()).spatial_filter() {
            Some(SpatialFilter::Meets {
                inside: Some(inside),
                around: None,
                ..
            }) => assert_eq!(inside, [-t, -t, 2.0 + t, 2.0 + t]),
            other => panic!("within: {other:?}"),
        }
        match query("contains", "Point", json!([1.0, 1.0])).spatial_filter() {
            Some(SpatialFilter::Meets {
                inside: None,
                around: Some(around),
                ..
            }) => assert_eq!(around, [1.0, 1.0, 1.0, 1.0]),
            other => panic!("contains: {other:?}"),
        }
        assert!(matches!(
            query("intersects", "Polygon", square.clone()).spatial_filter(),
            Some(SpatialFilter::Meets {
                inside: None,
                around: None,
                ..
            })
        ));
        assert!(query("disjoint", "Polygon", square).spatial_filter().is_none());
        assert!(query("near;minDistance==10", "Point", json!([1.0, 1.0]))
            .spatial_filter()
            .is_none());
        assert!(
            query("near;maxDistance==10", "LineString", json!([[1.0, 1.0], [2.0, 2.0]]))
                .spatial_filter()
                .is_none()
        );
        match query("near;maxDistance==6335439", "Point", json!([1.0, 1.0])).spatial_filter() {
            Some(SpatialFilter::Near { angle, .. }) => assert!((angle - 1.01).abs() < 1e-5, "{angle}"),
            other => panic!("near: {other:?}"),
        }
    }
}
