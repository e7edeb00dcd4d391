//! The data the benchmark writes and the requests it sends: pure functions of
//! an entity number, so every run (and every query's selectivity) is the same.

use serde_json::{json, Value};

/// The NGSI-LD core context, sent as a `Link` header with plain terms, as a
/// client without a context of its own would do.
pub const CORE_CONTEXT_LINK: &str = "<https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld>; \
     rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"";

/// Type of every benchmark entity.
pub const ENTITY_TYPE: &str = "BeeHive";

/// Values of the string property `status`; each entity gets one of them.
pub const STATUSES: [&str; 4] = ["healthy", "swarming", "queenless", "alert"];

/// Number of distinct relationship objects (`belongs` → Apiary): with 100k
/// entities each apiary has about 100 hives.
pub const APIARIES: u64 = 1000;

/// Bounding box of the `location` points (Tuscany): lon, lat of the south-west
/// corner and the extent in degrees.
pub const AREA: (f64, f64, f64, f64) = (10.0, 43.0, 2.0, 1.0);

/// The SplitMix64 step: a good, dependency-free mix so that attribute values
/// are uniform and uncorrelated with the entity number (a query on them must
/// look at candidates spread over the whole table, not a contiguous prefix).
pub fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic random source for the load generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant at these sizes.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Id of entity number `n` of a set (`prefix` keeps sets apart).
pub fn entity_id(prefix: &str, n: u64) -> String {
    format!("urn:ngsi-ld:{ENTITY_TYPE}:{prefix}{n:08}")
}

/// Temperature of one instance: uniform in 10.00..=39.99 °C.
pub fn temperature(n: u64, instance: u64) -> f64 {
    10.0 + (mix(n ^ (instance << 40)) % 3000) as f64 / 100.0
}

pub fn status(n: u64) -> &'static str {
    STATUSES[(mix(n.wrapping_mul(7)) % STATUSES.len() as u64) as usize]
}

pub fn apiary(n: u64) -> u64 {
    mix(n.wrapping_mul(13)) % APIARIES
}

pub fn apiary_id(k: u64) -> String {
    format!("urn:ngsi-ld:Apiary:{k:04}")
}

/// [lon, lat] of entity `n`, uniform over [`AREA`].
pub fn point(n: u64) -> [f64; 2] {
    let (lon0, lat0, dlon, dlat) = AREA;
    let a = (mix(n.wrapping_mul(17)) % 1_000_000) as f64 / 1_000_000.0;
    let b = (mix(n.wrapping_mul(19)) % 1_000_000) as f64 / 1_000_000.0;
    [round6(lon0 + a * dlon), round6(lat0 + b * dlat)]
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// An observation time that varies with `n` (within one day).
pub fn observed_at(n: u64) -> String {
    let s = n % 86_400;
    format!("2024-05-01T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

/// The template entity, modelled on Stellio's benchmark entity: 6 properties
/// (two multi-instance with `datasetId`, one with a sub-property, all with
/// `observedAt` and `unitCode`), 1 relationship, 1 GeoProperty point; plain
/// terms, to be sent with [`CORE_CONTEXT_LINK`].
pub fn template_entity(id: &str, n: u64) -> Value {
    let at = observed_at(n);
    let [lon, lat] = point(n);
    let h = mix(n.wrapping_mul(23));
    json!({
        "id": id,
        "type": ENTITY_TYPE,
        "temperature": [
            {"type": "Property", "value": temperature(n, 0), "unitCode": "CEL", "observedAt": at,
             "datasetId": "urn:ngsi-ld:Dataset:temperature:inside"},
            {"type": "Property", "value": temperature(n, 1), "unitCode": "CEL", "observedAt": at,
             "datasetId": "urn:ngsi-ld:Dataset:temperature:outside"}
        ],
        "humidity": [
            {"type": "Property", "value": 40 + h % 50, "unitCode": "P1", "observedAt": at,
             "datasetId": "urn:ngsi-ld:Dataset:humidity:inside"},
            {"type": "Property", "value": 30 + h / 64 % 60, "unitCode": "P1", "observedAt": at,
             "datasetId": "urn:ngsi-ld:Dataset:humidity:outside"}
        ],
        "incomingBees": {
            "type": "Property", "value": h % 2000, "unitCode": "C62", "observedAt": at,
            "accuracy": {"type": "Property", "value": 0.95, "unitCode": "C62", "observedAt": at}
        },
        "outgoingBees": {"type": "Property", "value": h / 4096 % 2000, "unitCode": "C62", "observedAt": at},
        "weight": {"type": "Property", "value": 20.0 + (h % 4000) as f64 / 100.0, "unitCode": "KGM", "observedAt": at},
        "status": {"type": "Property", "value": status(n), "unitCode": "C62", "observedAt": at},
        "belongs": {"type": "Relationship", "object": apiary_id(apiary(n)), "observedAt": at},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}
    })
}

/// Body of a partial attribute update of `weight` (a single-instance property,
/// so no `datasetId` is needed).
pub fn partial_update_body(value: f64, n: u64) -> Value {
    json!({"type": "Property", "value": value, "unitCode": "KGM", "observedAt": observed_at(n)})
}

/// Body of an update of three attributes at once.
pub fn update_attrs_body(rng: &mut Rng, n: u64) -> Value {
    let at = observed_at(n);
    json!({
        "weight": {"type": "Property", "value": 20.0 + rng.below(4000) as f64 / 100.0, "unitCode": "KGM", "observedAt": at},
        "outgoingBees": {"type": "Property", "value": rng.below(2000), "unitCode": "C62", "observedAt": at},
        "status": {"type": "Property", "value": STATUSES[rng.below(4) as usize], "unitCode": "C62", "observedAt": at}
    })
}

/// A `q` on the numeric multi-instance attribute and a string equality. The
/// threshold is drawn in 39.70..39.90 so that about 0.2–0.5 % of the entities
/// match: a page of 20 needs a few thousand candidates looked at.
pub fn q_property(rng: &mut Rng) -> String {
    let threshold = 39.70 + rng.below(21) as f64 / 100.0;
    format!(
        "temperature>{threshold:.2};status==\"{}\"",
        STATUSES[rng.below(4) as usize]
    )
}

/// A `q` on the relationship object.
pub fn q_relationship(rng: &mut Rng) -> String {
    format!("belongs==\"{}\"", apiary_id(rng.below(APIARIES)))
}

/// Percent-encodes a query-string value (everything but unreserved characters).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 2);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_has_the_stated_shape() {
        let entity = template_entity(&entity_id("d", 42), 42);
        let text = serde_json::to_string(&entity).unwrap();
        let entity: Value = serde_json::from_str(&text).unwrap();
        let object = entity.as_object().unwrap();
        let attrs: Vec<(&String, &Value)> = object.iter().filter(|(k, _)| *k != "id" && *k != "type").collect();
        let kind = |v: &Value| {
            let first = if v.is_array() { &v[0] } else { v };
            first["type"].as_str().unwrap().to_owned()
        };
        assert_eq!(attrs.iter().filter(|(_, v)| kind(v) == "Property").count(), 6);
        assert_eq!(attrs.iter().filter(|(_, v)| kind(v) == "Relationship").count(), 1);
        assert_eq!(attrs.iter().filter(|(_, v)| kind(v) == "GeoProperty").count(), 1);
        // Two multi-instance properties, each instance with its own datasetId.
        let multi: Vec<_> = attrs.iter().filter(|(_, v)| v.is_array()).collect();
        assert_eq!(multi.len(), 2);
        for (_, instances) in &multi {
            let ids: Vec<_> = instances.as_array().unwrap().iter().map(|i| &i["datasetId"]).collect();
            assert_eq!(ids.len(), 2);
            assert!(ids.iter().all(|d| d.is_string()));
            assert_ne!(ids[0], ids[1]);
        }
        // Every property instance has observedAt and unitCode.
        for (_, v) in attrs.iter().filter(|(_, v)| kind(v) == "Property") {
            let instances = v.as_array().cloned().unwrap_or_else(|| vec![(*v).clone()]);
            for i in instances {
                assert!(i["observedAt"].is_string() && i["unitCode"].is_string(), "{i}");
            }
        }
        // Exactly one sub-property.
        assert_eq!(entity["incomingBees"]["accuracy"]["type"], "Property");
        assert_eq!(entity["location"]["value"]["type"], "Point");
        assert!(entity["belongs"]["object"]
            .as_str()
            .unwrap()
            .starts_with("urn:ngsi-ld:Apiary:"));
    }

    #[test]
    fn values_stay_in_their_ranges() {
        for n in 0..10_000 {
            let t = temperature(n, n % 2);
            assert!((10.0..40.0).contains(&t));
            let [lon, lat] = point(n);
            assert!((10.0..=12.0).contains(&lon) && (43.0..=44.0).contains(&lat));
            assert!(apiary(n) < APIARIES);
        }
        assert_eq!(observed_at(3661), "2024-05-01T01:01:01Z");
    }

    #[test]
    fn encode_escapes_query_syntax() {
        assert_eq!(
            encode("temperature>39.70;status==\"alert\""),
            "temperature%3E39.70%3Bstatus%3D%3D%22alert%22"
        );
    }
}
