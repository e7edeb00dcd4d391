//! The mapping of a CSV or GeoJSON file to entities (TOML, documented with
//! examples in docs/IMPORT.md): the entity type, an id template, attribute
//! columns with value types and units, the location, and an optional
//! `observedAt` column that makes each row an observation (time series).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveDateTime, SecondsFormat};
use piazza_ngsild::time::{self, Timestamp};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{ImportError, ImportMode, ImportResult};

/// A mapping file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The entity type (a term of `context`, or an IRI).
    #[serde(rename = "type")]
    pub entity_type: String,
    /// The id template: `{column}` is replaced by the row's value.
    pub id: String,
    /// A local @context file (relative to the mapping file) that the
    /// attribute names and the type are terms of. Without it, the core
    /// context (names expand to the default vocabulary).
    #[serde(default)]
    pub context: Option<PathBuf>,
    /// `replace` (default): the row is the whole entity; `update`: its
    /// attributes are added to the entity, the others kept.
    #[serde(default)]
    pub mode: ModeName,
    /// CSV only: the field delimiter (one character, default `,`).
    #[serde(default)]
    pub delimiter: Option<char>,
    /// Cell texts that mean "no value" besides the empty cell (e.g. `NA`).
    #[serde(default)]
    pub null_values: Vec<String>,
    /// Rows are imported only if each of these columns has this value.
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
    #[serde(default)]
    pub location: Option<LocationSpec>,
    #[serde(default)]
    pub observed_at: Option<ObservedAtSpec>,
    /// Attribute name (a term; `a.b` builds the member `b` of a compound
    /// value `a`) → where its value comes from.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeSpec>,
    /// Set when loaded: the mapping file's folder.
    #[serde(skip)]
    pub base: PathBuf,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    #[default]
    Replace,
    Update,
}

/// Where the location (a GeoProperty `location`) comes from.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationSpec {
    /// Columns of WGS84 degrees.
    #[serde(default)]
    pub latitude: Option<String>,
    #[serde(default)]
    pub longitude: Option<String>,
    /// GeoJSON: use the feature's geometry (the default for GeoJSON files).
    #[serde(default)]
    pub geometry: Option<bool>,
    /// The GeoProperty's name (default `location`), e.g. `boundary` to keep
    /// a polygon beside the point `location` of another import.
    #[serde(default)]
    pub attribute: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedAtSpec {
    pub column: String,
    /// A chrono format (`%d/%m/%Y %H:%M`); without it RFC 3339,
    /// `YYYY-MM-DDTHH:MM:SS` or `YYYY-MM-DD` (UTC; a date is its midnight).
    #[serde(default)]
    pub format: Option<String>,
}

/// One attribute: exactly one of `column`, `template` or `value`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeSpec {
    #[serde(default)]
    pub column: Option<String>,
    /// Text with `{column}` placeholders (e.g. a relationship's object).
    #[serde(default)]
    pub template: Option<String>,
    /// A constant.
    #[serde(default)]
    pub value: Option<toml::Value>,
    #[serde(rename = "type", default)]
    pub kind: ValueType,
    /// UN/CEFACT unit code (`GQ` is µg/m³).
    #[serde(default)]
    pub unit: Option<String>,
    /// A row without a value for this attribute is rejected (else the
    /// attribute is left out).
    #[serde(default)]
    pub required: bool,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    #[default]
    Text,
    Number,
    Integer,
    Boolean,
    Datetime,
    Relationship,
}

/// A row of the input: values by column name.
pub trait Row {
    /// The value of `column` (`None` when the column or the value is absent).
    fn get(&self, column: &str) -> Option<Value>;
    /// The GeoJSON geometry of the row, if it has one.
    fn geometry(&self) -> Option<&Value> {
        None
    }
}

/// What a row becomes: an entity body and, for observations, their instant.
pub type RowEntity = (Map<String, Value>, Option<Timestamp>);

impl Mapping {
    pub fn load(path: &Path) -> ImportResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ImportError::io(path, e))?;
        let invalid = |reason: String| ImportError::Mapping {
            path: path.to_owned(),
            reason,
        };
        let mut mapping: Mapping = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        mapping.base = path.parent().map(Path::to_owned).unwrap_or_default();
        mapping.check().map_err(invalid)?;
        Ok(mapping)
    }

    fn check(&self) -> Result<(), String> {
        if self.entity_type.trim().is_empty() {
            return Err("`type` is empty".into());
        }
        if placeholders(&self.id).is_empty() {
            return Err("the `id` template has no {column} placeholder: every row would be the same entity".into());
        }
        for (name, spec) in &self.attributes {
            let sources = [spec.column.is_some(), spec.template.is_some(), spec.value.is_some()];
            if sources.iter().filter(|s| **s).count() != 1 {
                return Err(format!("attribute {name}: give exactly one of column, template, value"));
            }
            if name.split('.').any(str::is_empty) {
                return Err(format!("attribute {name}: empty name part"));
            }
        }
        if let Some(location) = &self.location {
            if location.latitude.is_some() != location.longitude.is_some() {
                return Err("location: give both latitude and longitude columns".into());
            }
        }
        Ok(())
    }

    pub fn import_mode(&self) -> ImportMode {
        match self.mode {
            ModeName::Replace => ImportMode::Replace,
            ModeName::Update => ImportMode::Update,
        }
    }

    /// The local @context file, resolved against the mapping's folder.
    pub fn context_path(&self) -> Option<PathBuf> {
        self.context.as_ref().map(|c| self.base.join(c))
    }

    /// Every column the mapping reads (to check a CSV header up front).
    pub fn columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = placeholders(&self.id);
        for spec in self.attributes.values() {
            columns.extend(spec.column.clone());
            columns.extend(spec.template.iter().flat_map(|t| placeholders(t)));
        }
        if let Some(location) = &self.location {
            columns.extend(location.latitude.clone());
            columns.extend(location.longitude.clone());
        }
        columns.extend(self.observed_at.iter().map(|o| o.column.clone()));
        columns.extend(self.filter.keys().cloned());
        columns.sort();
        columns.dedup();
        columns
    }

    /// The entity of one row; `Ok(None)` when the row is filtered out or
    /// (an observation) has no value at all; `Err` says why it is rejected.
    pub fn entity(&self, row: &dyn Row) -> Result<Option<RowEntity>, String> {
        for (column, wanted) in &self.filter {
            if self.text(row, column).as_deref() != Some(wanted.as_str()) {
                return Ok(None);
            }
        }
        let id = self.render(&self.id, row, true)?;
        let observed_at = match &self.observed_at {
            Some(spec) => Some(self.instant(row, spec)?),
            None => None,
        };
        let stamp = observed_at.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        let mut body = Map::new();
        body.insert("id".into(), Value::String(id));
        body.insert("type".into(), Value::String(self.entity_type.clone()));
        let mut attributes = 0;
        for (name, spec) in &self.attributes {
            let Some(attribute) = self.attribute(name, spec, row)? else {
                continue;
            };
            insert_attribute(&mut body, name, attribute, stamp.as_deref());
            attributes += 1;
        }
        if observed_at.is_some() && attributes == 0 {
            return Ok(None);
        }
        if let Some(location) = self.location_of(row)? {
            let name = self.location.as_ref().and_then(|l| l.attribute.clone());
            body.insert(
                name.unwrap_or_else(|| "location".into()),
                json!({ "type": "GeoProperty", "value": location }),
            );
        }
        Ok(Some((body, observed_at)))
    }

    /// The cell of `column` as text, `None` when it is empty or a null value.
    fn text(&self, row: &dyn Row, column: &str) -> Option<String> {
        let text = match row.get(column)? {
            Value::String(s) => s.trim().to_owned(),
            Value::Null => return None,
            other => other.to_string(),
        };
        (!text.is_empty() && !self.null_values.contains(&text)).then_some(text)
    }

    /// Fills `{column}` placeholders; with `as_uri`, characters a URI may
    /// not hold are percent-encoded.
    fn render(&self, template: &str, row: &dyn Row, as_uri: bool) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let Some(end) = rest[start..].find('}') else {
                out.push_str(&rest[start..]);
                return Ok(out);
            };
            let column = &rest[start + 1..start + end];
            let value = self
                .text(row, column)
                .ok_or_else(|| format!("column '{column}' is empty (needed by '{template}')"))?;
            if as_uri {
                out.push_str(&uri_safe(&value));
            } else {
                out.push_str(&value);
            }
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn instant(&self, row: &dyn Row, spec: &ObservedAtSpec) -> Result<Timestamp, String> {
        let text = self
            .text(row, &spec.column)
            .ok_or_else(|| format!("column '{}' (observedAt) is empty", spec.column))?;
        parse_instant(&text, spec.format.as_deref())
            .ok_or_else(|| format!("column '{}': '{text}' is not a date-time", spec.column))
    }

    /// The attribute of one spec as NGSI-LD (normalized), or `None` when the row has no value.
    fn attribute(&self, name: &str, spec: &AttributeSpec, row: &dyn Row) -> Result<Option<Value>, String> {
        let raw = if let Some(column) = &spec.column {
            self.text(row, column)
        } else if let Some(template) = &spec.template {
            Some(self.render(template, row, spec.kind == ValueType::Relationship)?)
        } else {
            spec.value.as_ref().map(|v| match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        let Some(raw) = raw else {
            return if spec.required {
                Err(format!("attribute {name}: no value"))
            } else {
                Ok(None)
            };
        };
        let value = typed_value(&raw, spec.kind).map_err(|why| format!("attribute {name}: {why}"))?;
        let mut attribute = if spec.kind == ValueType::Relationship {
            json!({ "type": "Relationship", "object": value })
        } else {
            json!({ "type": "Property", "value": value })
        };
        if let (Some(unit), Value::Object(members)) = (&spec.unit, &mut attribute) {
            members.insert("unitCode".into(), Value::String(unit.clone()));
        }
        Ok(Some(attribute))
    }

    fn location_of(&self, row: &dyn Row) -> Result<Option<Value>, String> {
        let spec = self.location.as_ref();
        if let Some((lat, lon)) = spec.and_then(|s| s.latitude.as_ref().zip(s.longitude.as_ref())) {
            let (Some(lat_text), Some(lon_text)) = (self.text(row, lat), self.text(row, lon)) else {
                return Ok(None);
            };
            let lat =
                degrees(&lat_text, 90.0).ok_or_else(|| format!("column '{lat}': '{lat_text}' is not a latitude"))?;
            let lon =
                degrees(&lon_text, 180.0).ok_or_else(|| format!("column '{lon}': '{lon_text}' is not a longitude"))?;
            return Ok(Some(json!({ "type": "Point", "coordinates": [lon, lat] })));
        }
        let use_geometry = spec.and_then(|s| s.geometry).unwrap_or(true);
        Ok(row.geometry().filter(|_| use_geometry).cloned())
    }
}

/// Puts an attribute in the body; `a.b` becomes member `b` of the compound
/// Property `a` (its unit and observedAt are the first member's).
fn insert_attribute(body: &mut Map<String, Value>, name: &str, mut attribute: Value, observed_at: Option<&str>) {
    if let (Some(at), Value::Object(members)) = (observed_at, &mut attribute) {
        members.insert("observedAt".into(), Value::String(at.to_owned()));
    }
    let Some((head, path)) = name.split_once('.') else {
        body.insert(name.to_owned(), attribute);
        return;
    };
    let inner = attribute
        .get("value")
        .or_else(|| attribute.get("object"))
        .cloned()
        .unwrap_or(Value::Null);
    let compound = body.entry(head.to_owned()).or_insert_with(|| {
        let mut shell = attribute.clone();
        if let Value::Object(members) = &mut shell {
            members.remove("object");
            members.insert("type".into(), Value::String("Property".into()));
            members.insert("value".into(), Value::Object(Map::new()));
        }
        shell
    });
    let mut target = compound.get_mut("value");
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let Some(Value::Object(map)) = target else {
            return;
        };
        if i + 1 == parts.len() {
            map.insert((*part).to_owned(), inner);
            return;
        }
        target = Some(
            map.entry((*part).to_owned())
                .or_insert_with(|| Value::Object(Map::new())),
        );
    }
}

/// The `{column}` names of a template.
fn placeholders(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        names.push(rest[start + 1..start + end].to_owned());
        rest = &rest[start + end + 1..];
    }
    names
}

/// Percent-encodes what an IRI may not hold (spaces, quotes, brackets...).
pub(crate) fn uri_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_whitespace()
            || c.is_control()
            || matches!(c, '<' | '>' | '"' | '{' | '}' | '|' | '\\' | '^' | '`' | '%')
        {
            let mut buffer = [0u8; 4];
            for byte in c.encode_utf8(&mut buffer).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A cell as a value of the attribute's type.
fn typed_value(raw: &str, kind: ValueType) -> Result<Value, String> {
    match kind {
        ValueType::Text => Ok(Value::String(raw.to_owned())),
        ValueType::Number => number(raw)
            .and_then(|n| serde_json::Number::from_f64(n).map(Value::Number))
            .ok_or_else(|| format!("'{raw}' is not a number")),
        ValueType::Integer => raw
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("'{raw}' is not an integer")),
        ValueType::Boolean => match raw.trim().to_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "si" | "sì" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "n" => Ok(Value::Bool(false)),
            _ => Err(format!("'{raw}' is not a boolean")),
        },
        ValueType::Datetime => parse_instant(raw, None)
            .map(|t| json!({ "@type": "DateTime", "@value": t.to_rfc3339_opts(SecondsFormat::AutoSi, true) }))
            .ok_or_else(|| format!("'{raw}' is not a date-time")),
        ValueType::Relationship => {
            if piazza_ngsild::entity::is_uri(raw) {
                Ok(Value::String(raw.to_owned()))
            } else {
                Err(format!(
                    "'{raw}' is not a URI (use a template such as \"urn:ngsi-ld:Type:{{column}}\")"
                ))
            }
        }
    }
}

/// A decimal number, with a point or (Italian open data) a decimal comma.
fn number(raw: &str) -> Option<f64> {
    let text = raw.trim();
    let parsed = text.parse::<f64>().ok().or_else(|| {
        (text.matches(',').count() == 1 && !text.contains('.'))
            .then(|| text.replace(',', "."))
            .and_then(|t| t.parse().ok())
    })?;
    parsed.is_finite().then_some(parsed)
}

fn degrees(raw: &str, limit: f64) -> Option<f64> {
    number(raw).filter(|d| d.abs() <= limit)
}

/// An instant: with `format` (chrono), a date-time or a date; without,
/// RFC 3339, a date-time without offset (UTC) or a date (its midnight, UTC).
pub fn parse_instant(text: &str, format: Option<&str>) -> Option<Timestamp> {
    let text = text.trim();
    if let Some(format) = format {
        return NaiveDateTime::parse_from_str(text, format)
            .map(|t| t.and_utc())
            .or_else(|_| {
                NaiveDate::parse_from_str(text, format).map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
            })
            .ok();
    }
    time::parse(text).or_else(|| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Cells(HashMap<&'static str, &'static str>);

    impl Row for Cells {
        fn get(&self, column: &str) -> Option<Value> {
            self.0.get(column).map(|v| Value::String((*v).to_owned()))
        }
    }

    fn mapping(text: &str) -> Mapping {
        let mapping: Mapping = toml::from_str(text).expect("mapping");
        mapping.check().expect("valid mapping");
        mapping
    }

    #[test]
    fn a_row_becomes_an_entity() {
        let m = mapping(
            r#"
            type = "AirQualityObserved"
            id = "urn:ngsi-ld:AirQualityObserved:{code}"
            null_values = ["NA"]
            [location]
            latitude = "lat"
            longitude = "lon"
            [attributes]
            name = { column = "name" }
            altitude = { column = "alt", type = "number", unit = "MTR" }
            "address.addressLocality" = { column = "town" }
            "address.addressCountry" = { value = "IT" }
            note = { column = "note" }
            "#,
        );
        let row = Cells(HashMap::from([
            ("code", "IT 1"),
            ("name", " LU-CAPANNORI "),
            ("alt", "12,5"),
            ("town", "Capannori"),
            ("note", "NA"),
            ("lat", "43.84"),
            ("lon", "10.57"),
        ]));
        let (body, observed) = m.entity(&row).expect("entity").expect("not skipped");
        assert!(observed.is_none());
        assert_eq!(body["id"], "urn:ngsi-ld:AirQualityObserved:IT%201");
        assert_eq!(body["name"]["value"], "LU-CAPANNORI");
        assert_eq!(
            body["altitude"],
            json!({"type": "Property", "value": 12.5, "unitCode": "MTR"})
        );
        assert_eq!(
            body["address"]["value"],
            json!({"addressCountry": "IT", "addressLocality": "Capannori"})
        );
        assert!(!body.contains_key("note"), "NA is a null value");
        assert_eq!(body["location"]["value"]["coordinates"], json!([10.57, 43.84]));
    }

    #[test]
    fn observations_carry_observed_at_and_bad_cells_say_why() {
        let m = mapping(
            r#"
            type = "AirQualityObserved"
            id = "urn:ngsi-ld:AirQualityObserved:{station}"
            mode = "update"
            observed_at = { column = "date" }
            [attributes]
            pm10 = { column = "PM10", type = "number", unit = "GQ" }
            "#,
        );
        let row = Cells(HashMap::from([
            ("station", "A"),
            ("date", "2020-01-02"),
            ("PM10", "31"),
        ]));
        let (body, observed) = m.entity(&row).expect("entity").expect("not skipped");
        assert_eq!(observed, time::parse("2020-01-02T00:00:00Z"));
        assert_eq!(body["pm10"]["observedAt"], "2020-01-02T00:00:00Z");
        let empty = Cells(HashMap::from([("station", "A"), ("date", "2020-01-02"), ("PM10", "")]));
        assert!(m.entity(&empty).expect("no error").is_none(), "no value: skipped");
        let bad = Cells(HashMap::from([
            ("station", "A"),
            ("date", "2020-01-02"),
            ("PM10", "n/d"),
        ]));
        assert_eq!(
            m.entity(&bad).err().as_deref(),
            Some("attribute pm10: 'n/d' is not a number")
        );
        let undated = Cells(HashMap::from([("station", "A"), ("date", "ieri"), ("PM10", "3")]));
        assert!(m.entity(&undated).is_err());
    }

    #[test]
    fn a_filter_skips_rows() {
        let m = mapping(
            r#"
            type = "AirQualityObserved"
            id = "urn:ngsi-ld:AirQualityObserved:{stazione}"
            observed_at = { column = "date" }
            [filter]
            parameter = "PM10"
            [attributes]
            pm10 = { column = "value", type = "number" }
            "#,
        );
        let pm25 = Cells(HashMap::from([
            ("stazione", "FI-GRAMSCI"),
            ("parameter", "PM2.5"),
            ("date", "2015-01-01"),
            ("value", "12"),
        ]));
        assert!(m.entity(&pm25).expect("no error").is_none());
        let pm10 = Cells(HashMap::from([
            ("stazione", "FI-GRAMSCI"),
            ("parameter", "PM10"),
            ("date", "2015-01-01"),
            ("value", "31"),
        ]));
        assert!(m.entity(&pm10).expect("no error").is_some());
        assert!(m.columns().contains(&"parameter".to_owned()));
    }

    #[test]
    fn mappings_are_checked() {
        let bad: Mapping = toml::from_str("type = \"T\"\nid = \"urn:x:1\"").expect("parses");
        assert!(bad.check().is_err(), "an id without placeholder");
        let bad: Mapping =
            toml::from_str("type = \"T\"\nid = \"urn:x:{a}\"\n[attributes]\nn = { column = \"a\", value = 1 }")
                .expect("parses");
        assert!(bad.check().is_err(), "two sources");
        assert!(toml::from_str::<Mapping>("type = \"T\"\nid = \"urn:x:{a}\"\ncolour = 1").is_err());
    }
}
