//! Entities and attributes: the one in-memory shape of context information.
//!
//! Everything is kept with **expanded** names (attribute names, types and
//! vocab values are IRIs), so that two requests using different @contexts
//! see the same data. Parsing accepts the normalized and the concise
//! representations (GS CIM 009, clause 4.5); [`crate::render`] turns an entity
//! back into any representation for a given context.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{NgsiError, Result};
use crate::jsonld::ActiveContext;
use crate::time::{self, Timestamp};

/// The kinds of attribute of NGSI-LD (clause 4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttributeKind {
    Property,
    Relationship,
    GeoProperty,
    LanguageProperty,
    VocabProperty,
    ListProperty,
    ListRelationship,
    JsonProperty,
}

impl AttributeKind {
    pub const ALL: [AttributeKind; 8] = [
        Self::Property,
        Self::Relationship,
        Self::GeoProperty,
        Self::LanguageProperty,
        Self::VocabProperty,
        Self::ListProperty,
        Self::ListRelationship,
        Self::JsonProperty,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Property => "Property",
            Self::Relationship => "Relationship",
            Self::GeoProperty => "GeoProperty",
            Self::LanguageProperty => "LanguageProperty",
            Self::VocabProperty => "VocabProperty",
            Self::ListProperty => "ListProperty",
            Self::ListRelationship => "ListRelationship",
            Self::JsonProperty => "JsonProperty",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.strip_prefix("https://uri.etsi.org/ngsi-ld/").unwrap_or(name);
        let name = name.strip_prefix("ngsi-ld:").unwrap_or(name);
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The member that holds the attribute's value in the normalized form.
    pub fn value_key(self) -> &'static str {
        match self {
            Self::Property | Self::GeoProperty => "value",
            Self::Relationship => "object",
            Self::LanguageProperty => "languageMap",
            Self::VocabProperty => "vocab",
            Self::ListProperty => "valueList",
            Self::ListRelationship => "objectList",
            Self::JsonProperty => "json",
        }
    }

    fn from_value_key(key: &str) -> Option<Self> {
        Some(match key {
            "value" => Self::Property,
            "object" => Self::Relationship,
            "languageMap" => Self::LanguageProperty,
            "vocab" => Self::VocabProperty,
            "valueList" => Self::ListProperty,
            "objectList" => Self::ListRelationship,
            "json" => Self::JsonProperty,
            _ => return None,
        })
    }
}

/// Members of an attribute that are not sub-attributes.
pub const ATTRIBUTE_MEMBERS: &[&str] = &[
    "type",
    "value",
    "object",
    "languageMap",
    "vocab",
    "valueList",
    "objectList",
    "json",
    "datasetId",
    "observedAt",
    "unitCode",
    "objectType",
    "createdAt",
    "modifiedAt",
    "deletedAt",
    "expiresAt",
    "instanceId",
    "lang",
    "previousValue",
    "previousObject",
    "previousLanguageMap",
    "previousVocab",
    "previousValueList",
    "previousObjectList",
    "previousJson",
    "@context",
];

/// Members by expanded name, in the order they came: an entity's
/// attributes, an attribute's sub-attributes. Hashed with foldhash rather
/// than SipHash: decoding a stored entity inserts every attribute name, and
/// SipHash was a visible share of a query's time.
pub type Members<V> = IndexMap<String, V, foldhash::fast::RandomState>;

/// One instance of an attribute (an attribute with several `datasetId`s has
/// several instances).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub kind: AttributeKind,
    /// The content of the kind's value member (`value`, `object`, `languageMap`...).
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_code: Option<String>,
    /// Relationship `objectType`, expanded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_type: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde_opt")]
    pub created_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde_opt")]
    pub modified_at: Option<Timestamp>,
    /// When this instance stops existing (transient attributes, clause 4.22), as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Sub-attributes by expanded name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub sub: Members<Attribute>,
}

impl Attribute {
    pub fn new(kind: AttributeKind, value: Value) -> Self {
        Self {
            kind,
            value,
            dataset_id: None,
            observed_at: None,
            unit_code: None,
            object_type: None,
            created_at: None,
            modified_at: None,
            expires_at: None,
            sub: Members::default(),
        }
    }

    /// Whether this instance carries an NGSI-LD Null, i.e. asks for deletion
    /// in a merge.
    pub fn is_null(&self) -> bool {
        // The parser turns every NGSI-LD Null into a JSON null.
        self.value.is_null()
    }

    /// Stamps system attributes: `createdAt` is kept from `previous` when
    /// the instance replaces an existing one.
    pub fn stamp(&mut self, now: Timestamp, previous_created: Option<Timestamp>) {
        self.created_at = Some(previous_created.unwrap_or(now));
        self.modified_at = Some(now);
        for sub in self.sub.values_mut() {
            sub.stamp(now, None);
        }
    }

    /// Merges `patch` into this instance: members present in the patch
    /// replace ours, sub-attributes are merged one level down, and
    /// NGSI-LD Nulls delete sub-attributes.
    pub fn merge_from(&mut self, patch: Attribute, now: Timestamp) {
        self.kind = patch.kind;
        self.value = match (std::mem::take(&mut self.value), patch.value) {
            // Compound values merge as JSON merge patches (RFC 7396).
            (Value::Object(mut old), Value::Object(new)) if self.kind == AttributeKind::Property => {
                merge_patch(&mut old, new);
                Value::Object(old)
            }
            // No value in the patch: the instance keeps its own.
            (old, Value::Null) => old,
            (_, new) => new,
        };
        if patch.observed_at.is_some() {
            self.observed_at = patch.observed_at;
        }
        if patch.unit_code.is_some() {
            self.unit_code = patch.unit_code;
        }
        if patch.object_type.is_some() {
            self.object_type = patch.object_type;
        }
        if patch.expires_at.is_some() {
            self.expires_at = patch.expires_at;
        }
        for (name, mut sub) in patch.sub {
            if sub.is_null() {
                self.sub.shift_remove(&name);
                continue;
            }
            let created = self.sub.get(&name).and_then(|s| s.created_at);
            sub.stamp(now, created);
            self.sub.insert(name, sub);
        }
        self.modified_at = Some(now);
    }
}

fn merge_patch(target: &mut serde_json::Map<String, Value>, patch: serde_json::Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(&key);
            }
            Value::String(s) if s == NGSI_NULL => {
                target.remove(&key);
            }
            Value::Object(inner) => match target.get_mut(&key) {
                Some(Value::Object(existing)) => merge_patch(existing, inner),
                _ => {
                    let mut fresh = serde_json::Map::new();
                    merge_patch(&mut fresh, inner);
                    target.insert(key, Value::Object(fresh));
                }
            },
            other => {
                target.insert(key, other);
            }
        }
    }
}

/// The NGSI-LD Null (clause 4.5.x): the marker that deletes in a merge or
/// an update. A JSON `null` is never one: it is invalid as an attribute value.
pub fn is_ngsi_null(value: &Value) -> bool {
    match value {
        Value::String(s) => s == NGSI_NULL,
        Value::Object(map) => map.len() == 1 && map.values().next().is_some_and(is_ngsi_null),
        Value::Array(items) => items.len() == 1 && is_ngsi_null(&items[0]),
        _ => false,
    }
}

/// The NGSI-LD Null string.
pub const NGSI_NULL: &str = "urn:ngsi-ld:null";

/// Whether a JSON value holds a JSON `null` or an NGSI-LD Null anywhere.
fn contains_null(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s == NGSI_NULL,
        Value::Array(items) => items.iter().any(contains_null),
        Value::Object(map) => map.values().any(contains_null),
        _ => false,
    }
}

/// An entity: id, types, scopes and attributes (expanded names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub id: String,
    pub types: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<String>,
    #[serde(default, deserialize_with = "stored::attributes")]
    pub attributes: Members<Vec<Attribute>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde_opt")]
    pub created_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde_opt")]
    pub modified_at: Option<Timestamp>,
    /// When the whole entity stops existing (transient entities, clause 4.22), as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl Entity {
    pub fn new(id: impl Into<String>, types: Vec<String>) -> Self {
        Self {
            id: id.into(),
            types,
            scope: Vec::new(),
            attributes: Members::default(),
            created_at: None,
            modified_at: None,
            expires_at: None,
        }
    }

    /// Drops what has expired by `now`; returns `None` when the entity itself has.
    pub fn live(mut self, now: Timestamp) -> Option<Entity> {
        if is_expired(self.expires_at.as_deref(), now) {
            return None;
        }
        for instances in self.attributes.values_mut() {
            instances.retain(|i| !is_expired(i.expires_at.as_deref(), now));
            for instance in instances.iter_mut() {
                instance
                    .sub
                    .retain(|_, sub| !is_expired(sub.expires_at.as_deref(), now));
            }
        }
        self.attributes.retain(|_, instances| !instances.is_empty());
        Some(self)
    }

    /// The instance of `name` with the given dataset id.
    pub fn instance(&self, name: &str, dataset_id: Option<&str>) -> Option<&Attribute> {
        self.attributes
            .get(name)?
            .iter()
            .find(|a| a.dataset_id.as_deref() == dataset_id)
    }

    /// Stamps every system attribute of a freshly created entity.
    pub fn stamp_new(&mut self, now: Timestamp) {
        self.created_at = Some(now);
        self.modified_at = Some(now);
        for instances in self.attributes.values_mut() {
            for instance in instances {
                instance.stamp(now, None);
            }
        }
    }
}

fn is_expired(expires_at: Option<&str>, now: Timestamp) -> bool {
    expires_at.and_then(time::parse).is_some_and(|at| at <= now)
}

/// What a request body must contain to be read as an entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntityShape {
    /// A whole entity: `id` and `type` are mandatory.
    Complete,
    /// A fragment (attributes to append, update or merge): `id` and `type`
    /// are optional.
    Fragment,
}

/// Options of the parser.
#[derive(Clone, Copy, Debug)]
pub struct ParseOptions {
    pub shape: EntityShape,
    /// Whether NGSI-LD Nulls are accepted (merges and updates), to mean deletion.
    pub allow_null: bool,
    /// Whether nulls inside compound values are accepted: they delete keys in
    /// a merge (RFC 7396), and are invalid anywhere else.
    pub nested_null: bool,
}

impl ParseOptions {
    pub const CREATE: ParseOptions = ParseOptions {
        shape: EntityShape::Complete,
        allow_null: false,
        nested_null: false,
    };
    pub const FRAGMENT: ParseOptions = ParseOptions {
        shape: EntityShape::Fragment,
        allow_null: false,
        nested_null: false,
    };
    /// Update Entity Attributes: an NGSI-LD Null deletes an instance.
    pub const UPDATE: ParseOptions = ParseOptions {
        shape: EntityShape::Fragment,
        allow_null: true,
        nested_null: false,
    };
    pub const MERGE: ParseOptions = ParseOptions {
        shape: EntityShape::Fragment,
        allow_null: true,
        nested_null: true,
    };
}

/// Characters that make an identifier look like something it is not
/// (bidi overrides, invisible and filler characters, noncharacters).
fn is_deceptive(c: char) -> bool {
    matches!(c as u32,
        0x00A0 | 0x115F | 0x1160 | 0x180E | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2069
        | 0x2800 | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFDD0..=0xFDEF | 0xE0100..=0xE01EF)
        || (c as u32 & 0xFFFE) == 0xFFFE
}

/// Whether `text` is an absolute URI, as entity ids and relationship objects must be.
pub fn is_uri(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !has_forbidden_char(text)
}

/// Whether `text` holds a character no URI may: whitespace, controls,
/// invisible look-alikes, or the delimiters RFC 3986 excludes. ASCII text
/// (nearly every id) is checked byte by byte: decoding each character and
/// testing it against the Unicode tables was 2 % of a create.
fn has_forbidden_char(text: &str) -> bool {
    let excluded = |c: char| matches!(c, '<' | '>' | '"' | '{' | '}' | '|' | '\\' | '^' | '`');
    if text.is_ascii() {
        // ASCII whitespace and controls are exactly the bytes up to space, and DEL.
        return text.bytes().any(|b| b <= b' ' || b == 0x7F || excluded(char::from(b)));
    }
    text.chars()
        .any(|c| c.is_whitespace() || c.is_control() || is_deceptive(c) || excluded(c))
}

/// Whether a term is acceptable as an attribute or type name (clause 4.6.2:
/// no characters that the query languages reserve). Full IRIs are allowed.
pub fn is_valid_name(name: &str) -> bool {
    let Some(first) = name.chars().next() else {
        return false;
    };
    if is_uri(name) && name.contains("://") {
        return true;
    }
    (first.is_alphabetic() || first == '_')
        && !name.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || is_deceptive(c)
                || matches!(
                    c,
                    '<' | '>'
                        | '"'
                        | '\''
                        | '='
                        | ';'
                        | '('
                        | ')'
                        | '['
                        | ']'
                        | '{'
                        | '}'
                        | '|'
                        | '\\'
                        | '^'
                        | '`'
                        | '!'
                        | '~'
                        | ','
                        | '@'
                        | '&'
                        | '?'
                        | '*'
                )
        })
}

/// Entity members that are not attributes; an attribute may not be named
/// like an attribute member either (it would be ambiguous in concise form).
const RESERVED_ATTRIBUTE_NAMES: &[&str] = &["datasetId", "instanceId", "observedAt", "unitCode"];

/// The core GeoProperties: they can only be GeoProperties.
const GEO_NAMES: &[&str] = &["location", "observationSpace", "operationSpace"];

/// Parses an entity (or fragment) in the normalized or concise representation.
pub fn parse_entity(body: &Value, context: &ActiveContext, options: ParseOptions) -> Result<Entity> {
    let Value::Object(members) = body else {
        return Err(NgsiError::bad_request("an entity must be a JSON object"));
    };
    let id = match members.get("id").or_else(|| members.get("@id")) {
        Some(Value::String(id)) if is_uri(id) && id != NGSI_NULL => id.clone(),
        Some(Value::String(id)) => return Err(NgsiError::bad_request(format!("entity id '{id}' is not a URI"))),
        Some(_) => return Err(NgsiError::bad_request("entity id must be a string")),
        None if options.shape == EntityShape::Complete => return Err(NgsiError::bad_request("entity id is missing")),
        None => String::new(),
    };
    let types = match members.get("type").or_else(|| members.get("@type")) {
        Some(value) => parse_types(value, context)?,
        None if options.shape == EntityShape::Complete => return Err(NgsiError::bad_request("entity type is missing")),
        None => Vec::new(),
    };
    let mut entity = Entity::new(id, types);
    for (key, value) in members {
        match key.as_str() {
            "id" | "@id" | "type" | "@type" | "@context" | "createdAt" | "modifiedAt" | "deletedAt" => {}
            "expiresAt" => entity.expires_at = Some(parse_expires_at(value)?),
            "scope" => {
                if options.allow_null && is_ngsi_null(value) {
                    continue;
                }
                entity.scope = parse_scope(value)?
            }
            name => {
                if !is_valid_name(name) || RESERVED_ATTRIBUTE_NAMES.contains(&name) {
                    return Err(NgsiError::bad_request(format!("invalid attribute name '{name}'")));
                }
                let expanded = context.expand(name);
                if expanded.starts_with('@') {
                    return Err(NgsiError::bad_request(format!(
                        "attribute name '{name}' is a JSON-LD keyword"
                    )));
                }
                let mode = Mode {
                    allow_null: options.allow_null,
                    nested_null: options.nested_null,
                    partial: false,
                };
                let instances = parse_instances(name, value, context, mode)?;
                if GEO_NAMES.contains(&name)
                    && instances
                        .iter()
                        .any(|i| i.kind != AttributeKind::GeoProperty && !i.is_null())
                {
                    return Err(NgsiError::bad_request(format!("'{name}' must be a GeoProperty")));
                }
                entity.attributes.insert(expanded, instances);
            }
        }
    }
    Ok(entity)
}

/// Parses the `type` member of an entity: a type name or an array of them.
pub fn parse_types(value: &Value, context: &ActiveContext) -> Result<Vec<String>> {
    let names: Vec<&str> = match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str()
                    .ok_or_else(|| NgsiError::bad_request("entity types must be strings"))
            })
            .collect::<Result<_>>()?,
        _ => {
            return Err(NgsiError::bad_request(
                "entity type must be a string or a non-empty array of strings",
            ))
        }
    };
    let mut types = Vec::with_capacity(names.len());
    for name in names {
        if !is_valid_name(name) {
            return Err(NgsiError::bad_request(format!("invalid entity type '{name}'")));
        }
        let expanded = context.expand(name);
        if expanded.starts_with('@') {
            return Err(NgsiError::bad_request(format!(
                "entity type '{name}' is a JSON-LD keyword"
            )));
        }
        if !types.contains(&expanded) {
            types.push(expanded);
        }
    }
    Ok(types)
}

/// Parses `scope`: one scope or an array (clause 4.18).
pub fn parse_scope(value: &Value) -> Result<Vec<String>> {
    let scopes: Vec<String> = match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| NgsiError::bad_request("scopes must be strings"))
            })
            .collect::<Result<_>>()?,
        _ => return Err(NgsiError::bad_request("scope must be a string or an array of strings")),
    };
    for scope in &scopes {
        let valid = scope.starts_with('/')
            && scope.len() > 1
            && !scope.ends_with('/')
            && scope[1..]
                .split('/')
                .all(|level| !level.is_empty() && is_valid_name(level) && !level.contains(['#', '+', '-', '/', ':']));
        if !valid {
            return Err(NgsiError::bad_request(format!("invalid scope '{scope}'")));
        }
    }
    Ok(scopes)
}

/// Parses one attribute's JSON (normalized or concise; one instance or an
/// array of instances) into its instances.
pub fn parse_attribute(name: &str, value: &Value, context: &ActiveContext, allow_null: bool) -> Result<Vec<Attribute>> {
    parse_instances(
        name,
        value,
        context,
        Mode {
            allow_null,
            nested_null: false,
            partial: false,
        },
    )
}

fn parse_instances(name: &str, value: &Value, context: &ActiveContext, mode: Mode) -> Result<Vec<Attribute>> {
    if let Value::Array(items) = value {
        if !items.is_empty() && items.iter().all(looks_like_attribute) {
            let mut instances: Vec<Attribute> = Vec::with_capacity(items.len());
            for item in items {
                let instance = parse_instance(name, item, context, mode)?.attribute;
                if instances.iter().any(|i| i.dataset_id == instance.dataset_id) {
                    return Err(NgsiError::bad_request(format!(
                        "attribute '{name}' has two instances with the same datasetId"
                    )));
                }
                instances.push(instance);
            }
            return Ok(instances);
        }
    }
    Ok(vec![parse_instance(name, value, context, mode)?.attribute])
}

/// A fragment for a Partial Attribute Update (clause 5.6.4): any subset of
/// an attribute's members.
#[derive(Clone, Debug)]
pub struct AttributePatch {
    pub attribute: Attribute,
    /// Whether the fragment named the attribute's type.
    pub has_kind: bool,
    /// Whether the fragment carried a value member.
    pub has_value: bool,
}

/// Parses a Partial Attribute Update fragment: one instance or several (by datasetId).
pub fn parse_attribute_patch(name: &str, value: &Value, context: &ActiveContext) -> Result<Vec<AttributePatch>> {
    let mode = Mode {
        allow_null: true,
        nested_null: false,
        partial: true,
    };
    let items: Vec<&Value> = match value {
        Value::Array(items) if !items.is_empty() => items.iter().collect(),
        Value::Object(map) if !map.keys().any(|k| k != "@context") => {
            return Err(NgsiError::bad_request("an attribute fragment must not be empty"))
        }
        Value::Object(_) => vec![value],
        _ => return Err(NgsiError::bad_request("an attribute fragment must be a JSON object")),
    };
    items
        .into_iter()
        .map(|item| parse_instance(name, item, context, mode))
        .collect()
}

#[derive(Clone, Copy)]
struct Mode {
    allow_null: bool,
    nested_null: bool,
    partial: bool,
}

/// Whether a JSON value is an attribute in the normalized or the concise
/// object form (as opposed to a plain value).
fn looks_like_attribute(value: &Value) -> bool {
    let Value::Object(map) = value else {
        return false;
    };
    if let Some(Value::String(t)) = map.get("type") {
        if AttributeKind::from_name(t).is_some() {
            return true;
        }
    }
    map.keys().any(|k| AttributeKind::from_value_key(k).is_some())
}

/// Value members that the given kind must not carry.
fn prohibited_members(kind: AttributeKind) -> impl Iterator<Item = &'static str> {
    let own = kind.value_key();
    let extra: &[&str] = match kind {
        AttributeKind::Relationship | AttributeKind::ListRelationship | AttributeKind::JsonProperty => &["unitCode"],
        _ => &[],
    };
    [
        "value",
        "object",
        "languageMap",
        "vocab",
        "valueList",
        "objectList",
        "json",
    ]
    .into_iter()
    .filter(move |k| *k != own)
    .chain(extra.iter().copied())
    .chain([
        "previousValue",
        "previousObject",
        "previousLanguageMap",
        "previousVocab",
        "previousValueList",
        "previousObjectList",
        "previousJson",
        "entityIdSealed",
        "entityTypeSealed",
    ])
}

fn parse_instance(name: &str, value: &Value, context: &ActiveContext, mode: Mode) -> Result<AttributePatch> {
    let bare = |attribute| {
        Ok(AttributePatch {
            attribute,
            has_kind: false,
            has_value: true,
        })
    };
    let members = match value {
        Value::Object(map) => map,
        Value::Null => return Err(NgsiError::bad_request(format!("attribute '{name}' has a null value"))),
        plain if is_ngsi_null(plain) && mode.allow_null => {
            return bare(Attribute::new(AttributeKind::Property, Value::Null))
        }
        plain if contains_null(plain) => {
            return Err(NgsiError::bad_request(format!("attribute '{name}' has a null value")))
        }
        // Concise form: a plain value is a Property.
        plain => return bare(Attribute::new(AttributeKind::Property, plain.clone())),
    };
    if member(members, "@context").is_some() {
        return Err(NgsiError::bad_request(format!(
            "attribute '{name}' must not embed an @context"
        )));
    }
    let declared_type = member(members, "type");
    let declared_kind = match declared_type {
        Some(Value::String(t)) => AttributeKind::from_name(t),
        _ => None,
    };
    let has_kind = declared_kind.is_some();
    let kind = match declared_kind {
        Some(kind) => kind,
        None if is_geometry(value) => return bare(Attribute::new(AttributeKind::GeoProperty, value.clone())),
        None if let Some(declared) = declared_type => {
            return Err(NgsiError::bad_request(format!(
                "attribute '{name}' has an unknown type {declared}"
            )))
        }
        None => match members.keys().find_map(|k| AttributeKind::from_value_key(k)) {
            Some(AttributeKind::Property) if member(members, "value").is_some_and(is_geometry) => {
                AttributeKind::GeoProperty
            }
            Some(kind) => kind,
            None if mode.partial => AttributeKind::Property,
            // Concise form: a JSON object with no attribute members is a compound value.
            None if contains_null(value) => {
                return Err(NgsiError::bad_request(format!("attribute '{name}' has a null value")))
            }
            None => return bare(Attribute::new(AttributeKind::Property, value.clone())),
        },
    };
    if let Some(bad) = prohibited_members(kind).find(|m| member(members, m).is_some()) {
        return Err(NgsiError::bad_request(format!(
            "a {} must not have a '{bad}' member ('{name}')",
            kind.name()
        )));
    }
    let raw = member(members, kind.value_key());
    let mut attribute = Attribute::new(kind, Value::Null);
    let has_value = raw.is_some();
    attribute.value = match raw {
        None if mode.partial => Value::Null,
        None => {
            return Err(NgsiError::bad_request(format!(
                "attribute '{name}' of type {} has no '{}' member",
                kind.name(),
                kind.value_key()
            )))
        }
        Some(Value::Null) => return Err(NgsiError::bad_request(format!("attribute '{name}' has a null value"))),
        Some(v) if is_ngsi_null(v) => {
            if !mode.allow_null {
                return Err(NgsiError::bad_request(format!(
                    "attribute '{name}' has an NGSI-LD Null value"
                )));
            }
            Value::Null
        }
        Some(v) => validate_value(name, kind, v, context, mode)?,
    };
    for (key, member) in members {
        parse_member(name, &mut attribute, key, member, context, mode)?;
    }
    Ok(AttributePatch {
        attribute,
        has_kind,
        has_value,
    })
}

/// A member of an attribute's object. An attribute has a handful of
/// members, and comparing them is cheaper than hashing the key (the map
/// hashes with SipHash): lookups were 5 % of a create's instructions.
fn member<'a>(members: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    const SCANNED: usize = 12;
    if members.len() > SCANNED {
        return members.get(key);
    }
    members.iter().find_map(|(k, v)| (k == key).then_some(v))
}

fn parse_member(
    name: &str,
    attribute: &mut Attribute,
    key: &str,
    member: &Value,
    context: &ActiveContext,
    mode: Mode,
) -> Result<()> {
    match key {
        "datasetId" => match member {
            Value::String(s) if s == "@none" => attribute.dataset_id = None,
            Value::String(s) if is_uri(s) && s != NGSI_NULL => attribute.dataset_id = Some(s.clone()),
            _ => return Err(NgsiError::bad_request(format!("datasetId of '{name}' must be a URI"))),
        },
        "observedAt" => match member.as_str().filter(|s| is_utc_datetime(s)) {
            Some(s) => attribute.observed_at = Some(s.to_owned()),
            None => {
                return Err(NgsiError::bad_request(format!(
                    "observedAt of '{name}' must be a UTC DateTime"
                )))
            }
        },
        "unitCode" => match member {
            Value::String(s) => attribute.unit_code = Some(s.clone()),
            _ => return Err(NgsiError::bad_request(format!("unitCode of '{name}' must be a string"))),
        },
        "objectType" => attribute.object_type = Some(expand_vocab(member, context)?),
        "expiresAt" => attribute.expires_at = Some(parse_expires_at(member)?),
        "valueType" if attribute.kind == AttributeKind::LanguageProperty => {
            if member.as_str() != Some("langString") && member.as_str() != Some("rdf:langString") {
                return Err(NgsiError::bad_request(format!(
                    "valueType of LanguageProperty '{name}' must be langString"
                )));
            }
        }
        "valueType" => {}
        key if ATTRIBUTE_MEMBERS.contains(&key) => {}
        sub_name => {
            if !is_valid_name(sub_name) || RESERVED_ATTRIBUTE_NAMES.contains(&sub_name) {
                return Err(NgsiError::bad_request(format!(
                    "invalid sub-attribute name '{sub_name}'"
                )));
            }
            let expanded = context.expand(sub_name);
            let sub = parse_instance(sub_name, member, context, Mode { partial: false, ..mode })?.attribute;
            attribute.sub.insert(expanded, sub);
        }
    }
    Ok(())
}

fn parse_expires_at(value: &Value) -> Result<String> {
    match value.as_str().filter(|s| is_utc_datetime(s)) {
        Some(text) => Ok(text.to_owned()),
        None => Err(NgsiError::bad_request("expiresAt must be a UTC DateTime")),
    }
}

/// observedAt and friends: RFC 3339 in UTC, with a `Z`.
pub fn is_utc_datetime(text: &str) -> bool {
    text.ends_with('Z') && time::parse(text).is_some()
}

fn validate_value(
    name: &str,
    kind: AttributeKind,
    value: &Value,
    context: &ActiveContext,
    mode: Mode,
) -> Result<Value> {
    let bad = |why: &str| NgsiError::bad_request(format!("attribute '{name}': {why}"));
    match kind {
        AttributeKind::Property => {
            if !mode.nested_null && contains_null(value) {
                return Err(bad("a value must not contain null"));
            }
            Ok(value.clone())
        }
        AttributeKind::JsonProperty => match value {
            Value::Object(_) | Value::Array(_) => Ok(value.clone()),
            _ => Err(bad("a JsonProperty's json must be an object or an array")),
        },
        AttributeKind::GeoProperty => {
            // A geometry may arrive serialised as a JSON string.
            let parsed = match value {
                Value::String(text) => serde_json::from_str::<Value>(text).unwrap_or(Value::Null),
                other => other.clone(),
            };
            if is_geometry(&parsed) {
                Ok(parsed)
            } else {
                Err(bad("a GeoProperty value must be a valid GeoJSON geometry"))
            }
        }
        AttributeKind::Relationship => match value {
            Value::String(s) if is_uri(s) => Ok(value.clone()),
            Value::Array(items) if !items.is_empty() && items.iter().all(|i| i.as_str().is_some_and(is_uri)) => {
                Ok(value.clone())
            }
            _ => Err(bad("a Relationship object must be a URI")),
        },
        AttributeKind::LanguageProperty => match value {
            Value::Object(map)
                if !map.is_empty()
                    && map.keys().all(|k| !k.is_empty())
                    && map.values().all(|v| {
                        (v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
                            && !contains_null(v)
                    }) =>
            {
                Ok(value.clone())
            }
            _ => Err(bad("a languageMap must map non-empty language tags to strings")),
        },
        AttributeKind::VocabProperty => expand_vocab(value, context),
        AttributeKind::ListProperty => match value {
            Value::Array(_) => Ok(value.clone()),
            Value::Object(map) if map.get("@list").is_some_and(Value::is_array) => Ok(map["@list"].clone()),
            _ => Err(bad("a valueList must be an array")),
        },
        AttributeKind::ListRelationship => {
            let items = match value {
                Value::Array(items) => items,
                Value::Object(map) => match map.get("@list") {
                    Some(Value::Array(items)) => items,
                    _ => return Err(bad("an objectList must be an array")),
                },
                _ => return Err(bad("an objectList must be an array")),
            };
            // Stored (and served) in the normalized `{"object": uri}` form.
            let objects: Vec<Value> = items
                .iter()
                .map(|item| match item {
                    Value::String(s) if is_uri(s) => Ok(serde_json::json!({ "object": s })),
                    Value::Object(o) => match o.get("object") {
                        Some(Value::String(s)) if is_uri(s) => Ok(serde_json::json!({ "object": s })),
                        _ => Err(bad("objectList members must be URIs")),
                    },
                    _ => Err(bad("objectList members must be URIs")),
                })
                .collect::<Result<_>>()?;
            Ok(Value::Array(objects))
        }
    }
}

fn expand_vocab(value: &Value, context: &ActiveContext) -> Result<Value> {
    match value {
        Value::String(s) => Ok(Value::String(context.expand(s))),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(Value::String(context.expand(s))),
                _ => Err(NgsiError::bad_request("vocab values must be strings")),
            })
            .collect::<Result<Vec<_>>>()
            .map(Value::Array),
        _ => Err(NgsiError::bad_request("vocab must be a string or an array of strings")),
    }
}

/// Whether `value` is a valid GeoJSON geometry (RFC 7946, section 3.1).
pub fn is_geometry(value: &Value) -> bool {
    let Value::Object(map) = value else {
        return false;
    };
    let Some(Value::String(kind)) = map.get("type") else {
        return false;
    };
    // GeometryCollection is not a valid GeoProperty value in NGSI-LD.
    let Some(coordinates) = map.get("coordinates") else {
        return false;
    };
    match kind.as_str() {
        "Point" => is_position(coordinates),
        "MultiPoint" => all_of(coordinates, 0, is_position),
        "LineString" => all_of(coordinates, 2, is_position),
        "MultiLineString" => all_of(coordinates, 0, |l| all_of(l, 2, is_position)),
        "Polygon" => all_of(coordinates, 1, is_linear_ring),
        "MultiPolygon" => all_of(coordinates, 0, |p| all_of(p, 1, is_linear_ring)),
        _ => false,
    }
}

fn all_of(value: &Value, minimum: usize, check: impl Fn(&Value) -> bool) -> bool {
    value
        .as_array()
        .is_some_and(|items| items.len() >= minimum && items.iter().all(check))
}

fn is_position(value: &Value) -> bool {
    value
        .as_array()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.iter().all(|c| c.as_f64().is_some_and(f64::is_finite)))
}

fn is_linear_ring(value: &Value) -> bool {
    all_of(value, 4, is_position) && value.as_array().is_some_and(|ring| ring.first() == ring.last())
}

mod stored;
pub use stored::{decode, decode_keeping, encode, encode_instance};

#[cfg(test)]
mod tests;
