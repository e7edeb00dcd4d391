//! The NGSI-LD query language (GS CIM 009, clause 4.9): the `q` parameter.
//!
//! ```text
//! query       := disjunction
//! disjunction := conjunction ( '|' conjunction )*
//! conjunction := primary ( ';' primary )*
//! primary     := '(' disjunction ')' | term
//! term        := '!' path                                  ; the attribute does not exist
//!              | path                                      ; the attribute exists
//!              | path ( '==' | '!=' ) equality
//!              | path ( '>' | '>=' | '<' | '<=' ) comparable
//!              | path ( '~=' | '!~=' ) pattern
//! path        := name ( '.' name )* ( '.' metadata | member* )
//! member      := '[' key ( '.' key )* ']'                  ; keys are JSON members, not expanded
//! metadata    := 'observedAt' | 'createdAt' | 'modifiedAt' | 'unitCode' | 'datasetId'
//! equality    := value | value '..' value | value ( ',' value )+
//! value       := comparable | 'true' | 'false'
//! comparable  := number | string | datetime | date | time | uri
//! string      := '"' ( '\"' | '\\' | any other character )* '"'
//! pattern     := string | a bare regex, up to the first ';', '|' or ')' outside its own brackets
//! ```
//!
//! `;` (AND) binds tighter than `|` (OR). Whitespace between tokens is
//! ignored. The first name of a path is an attribute, the following ones
//! sub-attributes, all expanded with the request's @context; a trailing
//! metadata name refers to the instance's metadata instead.
//!
//! An attribute matches if any of its instances (one per datasetId) does, and
//! an instance matches if any of its values does: every element of an array
//! value or ListProperty, every object of a Relationship, every string of a
//! LanguageProperty (`name[it]` picks one language). VocabProperty values are
//! compared both with the query string as written and with its expansion.
//! GeoProperties can only be tested for existence. Values of different types
//! never compare (a string is neither equal to nor greater than a number).
//! `!=` and `!~=` require the attribute to exist: they hold when it has values
//! and none of them passes the positive test.
//!
//! Not supported: full IRIs containing `.` as names (the dot is the
//! sub-attribute separator), and a bare regex with a top-level `|` (write it
//! as `(a|b)` or quote it).

use std::cmp::Ordering;

use chrono::{NaiveDate, NaiveTime};
use regex::{Regex, RegexBuilder};
use serde_json::{Number, Value};

use crate::entity::{is_uri, is_valid_name, Attribute, AttributeKind, Entity};
use crate::error::{NgsiError, Result};
use crate::jsonld::ActiveContext;
use crate::time::{self, Timestamp};

/// Deep enough for any hand-written query, shallow enough for the stack.
const MAX_DEPTH: usize = 64;
/// The most relationships a linked-entity term may follow (`a{b{c}}` is 2),
/// the same ceiling as `joinLevel`.
pub const MAX_HOPS: usize = 10;
/// Bounds the memory a hostile pattern can make the regex engine use.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const REGEX_NEST_LIMIT: u32 = 64;

/// A parsed `q` expression, with attribute names already expanded.
#[derive(Clone, Debug)]
pub struct Query {
    expr: Expr,
}

impl Query {
    /// Parses `text` (already URL-decoded), expanding names with `context`.
    pub fn parse(text: &str, context: &ActiveContext) -> Result<Query> {
        let mut parser = Parser {
            text,
            position: 0,
            context,
            depth: 0,
        };
        let expr = parser.disjunction()?;
        parser.skip_whitespace();
        if parser.position != text.len() {
            return Err(parser.error("unexpected text"));
        }
        Ok(Query { expr })
    }

    /// Whether `entity` matches; linked-entity terms (`rel{attr}`) never
    /// match here, as no linked entity is known.
    pub fn matches(&self, entity: &Entity) -> bool {
        self.expr.eval(entity, &|_| None)
    }

    /// Whether `entity` matches, with `linked` finding the entities its
    /// relationships point at (by id), for linked-entity terms.
    pub fn matches_linked<'a>(&self, entity: &'a Entity, linked: &dyn Fn(&str) -> Option<&'a Entity>) -> bool {
        self.expr.eval(entity, linked)
    }

    /// How many relationships the deepest linked-entity term follows (0: none).
    pub fn link_depth(&self) -> usize {
        let mut depth = 0;
        self.expr.visit_paths(&mut |p| depth = depth.max(p.hops.len()));
        depth
    }

    /// The expanded names of the relationships linked-entity terms follow.
    pub fn link_relationships(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        self.expr.visit_paths(&mut |p| {
            for hop in &p.hops {
                if !names.contains(&hop.relationship) {
                    names.push(hop.relationship.clone());
                }
            }
        });
        names
    }

    /// `expandValues` (clause 4.9): values compared with these attributes
    /// (expanded names) are also expanded with the @context of the query.
    pub fn expand_values(&mut self, attributes: &[String]) {
        self.expr.expand_values(attributes);
    }

    /// The expanded top-level attribute names the query refers to, each once.
    pub fn attribute_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.expr.collect_names(&mut names);
        names
    }
}

#[derive(Clone, Debug)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Exists(Path),
    Absent(Path),
    Compare(Path, Test),
}

impl Expr {
    fn eval<'a>(&self, entity: &'a Entity, linked: &dyn Fn(&str) -> Option<&'a Entity>) -> bool {
        match self {
            Self::And(all) => all.iter().all(|e| e.eval(entity, linked)),
            Self::Or(any) => any.iter().any(|e| e.eval(entity, linked)),
            Self::Exists(path) => path.targets(entity, linked).into_iter().any(|t| path.exists(t)),
            Self::Absent(path) => !path.targets(entity, linked).into_iter().any(|t| path.exists(t)),
            Self::Compare(path, test) => path.targets(entity, linked).into_iter().any(|target| {
                path.instances(target)
                    .into_iter()
                    .any(|instance| test.holds(&path.leaves(instance)))
            }),
        }
    }

    fn visit_paths(&self, visit: &mut dyn FnMut(&Path)) {
        match self {
            Self::And(all) | Self::Or(all) => all.iter().for_each(|e| e.visit_paths(visit)),
            Self::Exists(path) | Self::Absent(path) | Self::Compare(path, _) => visit(path),
        }
    }

    fn expand_values(&mut self, attributes: &[String]) {
        match self {
            Self::And(all) | Self::Or(all) => all.iter_mut().for_each(|e| e.expand_values(attributes)),
            Self::Compare(path, test) => {
                test.expand = path.attributes.first().is_some_and(|a| attributes.contains(a));
            }
            Self::Exists(_) | Self::Absent(_) => {}
        }
    }

    fn collect_names(&self, names: &mut Vec<String>) {
        match self {
            Self::And(all) | Self::Or(all) => all.iter().for_each(|e| e.collect_names(names)),
            Self::Exists(path) | Self::Absent(path) | Self::Compare(path, _) => {
                let first = path.hops.first().map(|h| &h.relationship).or(path.attributes.first());
                if let Some(name) = first {
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
            }
        }
    }
}

/// What a query term points at inside an entity.
#[derive(Clone, Debug)]
struct Path {
    /// Relationships to follow first (`rel{Type:attr}`): the rest of the
    /// path applies to the linked entities.
    hops: Vec<Hop>,
    /// The expanded attribute name, then expanded sub-attribute names.
    attributes: Vec<String>,
    /// Members to follow inside the value (compound values, language tags).
    members: Vec<String>,
    metadata: Option<Metadata>,
}

/// One relationship of a linked-entity term, with its optional type hint.
#[derive(Clone, Debug)]
struct Hop {
    relationship: String,
    type_hint: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metadata {
    ObservedAt,
    CreatedAt,
    ModifiedAt,
    UnitCode,
    DatasetId,
}

impl Metadata {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "observedAt" => Self::ObservedAt,
            "createdAt" => Self::CreatedAt,
            "modifiedAt" => Self::ModifiedAt,
            "unitCode" => Self::UnitCode,
            "datasetId" => Self::DatasetId,
            _ => return None,
        })
    }

    fn leaf(self, instance: &Attribute) -> Option<Leaf<'_>> {
        match self {
            Self::ObservedAt => instance.observed_at.as_deref().map(Leaf::Text),
            Self::CreatedAt => instance.created_at.map(Leaf::Instant),
            Self::ModifiedAt => instance.modified_at.map(Leaf::Instant),
            Self::UnitCode => instance.unit_code.as_deref().map(Leaf::Text),
            Self::DatasetId => instance.dataset_id.as_deref().map(Leaf::Text),
        }
    }
}

impl Path {
    /// The entities the rest of the path applies to: `entity` itself, or
    /// the linked entities reached through the hops (of the hinted type).
    fn targets<'a>(&self, entity: &'a Entity, linked: &dyn Fn(&str) -> Option<&'a Entity>) -> Vec<&'a Entity> {
        let mut current = vec![entity];
        for hop in &self.hops {
            let mut next = Vec::new();
            for source in current {
                let instances = source
                    .attributes
                    .get(&hop.relationship)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for instance in instances.iter().filter(|i| i.kind == AttributeKind::Relationship) {
                    strings(&instance.value, &mut |id| {
                        if let Some(target) = linked(id) {
                            if hop.type_hint.as_ref().is_none_or(|t| target.types.contains(t)) {
                                next.push(target);
                            }
                        }
                    });
                }
            }
            current = next;
        }
        current
    }

    /// The instances the path ends at: every instance of the attribute, then
    /// the named sub-attribute of each.
    fn instances<'a>(&self, entity: &'a Entity) -> Vec<&'a Attribute> {
        let Some((first, subs)) = self.attributes.split_first() else {
            return Vec::new();
        };
        let mut current: Vec<&Attribute> = entity
            .attributes
            .get(first)
            .map(|i| i.iter().collect())
            .unwrap_or_default();
        for name in subs {
            current = current.into_iter().filter_map(|a| a.sub.get(name)).collect();
        }
        current
    }

    fn exists(&self, entity: &Entity) -> bool {
        // Metadata and members only exist if there is something at their end.
        let whole_attribute = self.metadata.is_none() && self.members.is_empty();
        self.instances(entity)
            .into_iter()
            .any(|instance| whole_attribute || !self.leaves(instance).is_empty())
    }

    /// The values of one instance a comparison looks at.
    fn leaves<'a>(&self, instance: &'a Attribute) -> Vec<Leaf<'a>> {
        if let Some(metadata) = self.metadata {
            return metadata.leaf(instance).into_iter().collect();
        }
        let mut leaves = Vec::new();
        let value = &instance.value;
        match instance.kind {
            AttributeKind::GeoProperty => {}
            AttributeKind::VocabProperty if self.members.is_empty() => {
                strings(value, &mut |s| leaves.push(Leaf::Vocab(s)))
            }
            AttributeKind::VocabProperty => {}
            AttributeKind::Relationship | AttributeKind::ListRelationship if self.members.is_empty() => {
                strings(value, &mut |s| leaves.push(Leaf::Object(s)))
            }
            AttributeKind::Relationship | AttributeKind::ListRelationship => {}
            AttributeKind::LanguageProperty => language_leaves(value, &self.members, &mut leaves),
            AttributeKind::Property | AttributeKind::ListProperty | AttributeKind::JsonProperty => {
                member_leaves(value, &self.members, &mut leaves)
            }
        }
        leaves
    }
}

/// Calls `push` for a string, or for each string of an array.
fn strings<'a>(value: &'a Value, push: &mut dyn FnMut(&'a str)) {
    match value {
        Value::String(s) => push(s),
        Value::Array(items) => items.iter().filter_map(Value::as_str).for_each(push),
        _ => {}
    }
}

fn language_leaves<'a>(value: &'a Value, members: &[String], leaves: &mut Vec<Leaf<'a>>) {
    let Value::Object(map) = value else {
        return;
    };
    let mut push = |s: &'a str| leaves.push(Leaf::Text(s));
    match members {
        [] => map.values().for_each(|v| strings(v, &mut push)),
        // `[*]`: any language (clause 4.9).
        [any] if any == "*" => map.values().for_each(|v| strings(v, &mut push)),
        [language] => map.get(language).into_iter().for_each(|v| strings(v, &mut push)),
        _ => {}
    }
}

/// Follows `members` into a compound value. Arrays are searched element by
/// element, one level at a time, so recursion is bounded by the query.
fn member_leaves<'a>(value: &'a Value, members: &[String], leaves: &mut Vec<Leaf<'a>>) {
    match (members.split_first(), value) {
        (_, Value::Null) => {}
        (None, Value::Array(items)) => leaves.extend(items.iter().filter(|i| !i.is_null()).map(Leaf::Json)),
        (None, value) => leaves.push(Leaf::Json(value)),
        (Some((first, rest)), Value::Object(map)) => {
            if let Some(inner) = map.get(first) {
                member_leaves(inner, rest, leaves);
            }
        }
        (Some(_), Value::Array(items)) => items
            .iter()
            .filter(|i| i.is_object())
            .for_each(|i| member_leaves(i, members, leaves)),
        (Some(_), _) => {}
    }
}

/// One value of an instance, as a comparison sees it.
#[derive(Clone, Copy, Debug)]
enum Leaf<'a> {
    Json(&'a Value),
    /// A plain string that is not JSON (metadata, relationship objects).
    Text(&'a str),
    /// A vocab value: an expanded IRI.
    Vocab(&'a str),
    /// A relationship object: only `==` and `!=` apply to it.
    Object(&'a str),
    Instant(Timestamp),
}

impl<'a> Leaf<'a> {
    /// Typed literals (`{"@type": "DateTime", "@value": ...}`) compare by their value.
    fn literal(&self) -> Option<&'a Value> {
        match self {
            Self::Json(Value::Object(map)) => map.get("@value"),
            Self::Json(value) => Some(value),
            _ => None,
        }
    }

    fn number(&self) -> Option<&'a Number> {
        self.literal()?.as_number()
    }

    fn boolean(&self) -> Option<bool> {
        self.literal()?.as_bool()
    }

    fn text(&self) -> Option<&'a str> {
        match self {
            Self::Text(s) | Self::Vocab(s) | Self::Object(s) => Some(s),
            Self::Json(_) => self.literal()?.as_str(),
            Self::Instant(_) => None,
        }
    }

    fn instant(&self) -> Option<Timestamp> {
        match self {
            Self::Instant(t) => Some(*t),
            _ => time::parse(self.text()?),
        }
    }

    fn date(&self) -> Option<NaiveDate> {
        if let Some(date) = self.text().and_then(parse_date) {
            return Some(date);
        }
        self.instant().map(|t| t.date_naive())
    }

    fn time(&self) -> Option<NaiveTime> {
        if let Some(time) = self.text().and_then(parse_time) {
            return Some(time);
        }
        self.instant().map(|t| t.time())
    }

    fn compare(&self, scalar: &Scalar, expanded: bool) -> Option<Ordering> {
        match scalar {
            Scalar::Number(n) => compare_numbers(self.number()?, n),
            Scalar::Text { text, expansion } => match self {
                Self::Instant(t) => Some(t.cmp(&time::parse(text)?)),
                _ => Some(self.text()?.cmp(if expanded { expansion } else { text })),
            },
            Scalar::Boolean(b) => Some(self.boolean()?.cmp(b)),
            Scalar::DateTime(t) => Some(self.instant()?.cmp(t)),
            Scalar::Date(d) => Some(self.date()?.cmp(d)),
            Scalar::Time(t) => Some(self.time()?.cmp(t)),
        }
    }

    fn matches_pattern(&self, pattern: &Regex) -> bool {
        match self {
            Self::Instant(t) => pattern.is_match(&time::format(t)),
            _ => self.text().is_some_and(|s| pattern.is_match(s)),
        }
    }
}

/// Integers compare exactly; anything else as doubles.
fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

/// Times of day are UTC; a trailing `Z` is optional.
fn parse_time(text: &str) -> Option<NaiveTime> {
    let text = text.strip_suffix('Z').unwrap_or(text);
    NaiveTime::parse_from_str(text, "%H:%M:%S%.f").ok()
}

/// A comparison applied to the values of one instance.
#[derive(Clone, Debug)]
struct Test {
    /// `!=` and `!~=`: the attribute has values and none passes `check`.
    negated: bool,
    check: Check,
    /// `expandValues` names the attribute: query values also compare in
    /// their expanded form.
    expand: bool,
}

impl Test {
    fn new(negated: bool, check: Check) -> Test {
        Test {
            negated,
            check,
            expand: false,
        }
    }

    fn holds(&self, leaves: &[Leaf]) -> bool {
        let expansions: &[bool] = if self.expand { &[false, true] } else { &[false] };
        let positive = leaves
            .iter()
            .any(|leaf| expansions.iter().any(|&expanded| self.check.passes(leaf, expanded)));
        if self.negated {
            !leaves.is_empty() && !positive
        } else {
            positive
        }
    }
}

#[derive(Clone, Debug)]
enum Check {
    /// Equal to any of the values (one value or a list).
    Equal(Vec<Scalar>),
    /// Inclusive on both ends.
    Range(Scalar, Scalar),
    Order(Relation, Scalar),
    Pattern(Regex),
}

impl Check {
    fn passes(&self, leaf: &Leaf, expanded: bool) -> bool {
        let is = |scalar: &Scalar, accepted: fn(Ordering) -> bool| leaf.compare(scalar, expanded).is_some_and(accepted);
        // Relationships only support equality (clause 4.9): ordering never matches.
        if matches!(leaf, Leaf::Object(_)) && matches!(self, Self::Range(..) | Self::Order(..)) {
            return false;
        }
        match self {
            Self::Equal(values) => values.iter().any(|v| is(v, Ordering::is_eq)),
            Self::Range(low, high) => is(low, Ordering::is_ge) && is(high, Ordering::is_le),
            Self::Order(relation, value) => is(value, relation.accepts()),
            Self::Pattern(pattern) => leaf.matches_pattern(pattern),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relation {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

impl Relation {
    fn accepts(self) -> fn(Ordering) -> bool {
        match self {
            Self::Greater => Ordering::is_gt,
            Self::GreaterOrEqual => Ordering::is_ge,
            Self::Less => Ordering::is_lt,
            Self::LessOrEqual => Ordering::is_le,
        }
    }
}

/// A value written in a query.
#[derive(Clone, Debug, PartialEq)]
enum Scalar {
    Number(Number),
    /// A quoted string or unquoted URI, with its expansion for vocab values.
    Text {
        text: String,
        expansion: String,
    },
    Boolean(bool),
    DateTime(Timestamp),
    Date(NaiveDate),
    Time(NaiveTime),
}

impl Scalar {
    fn kind(&self) -> &'static str {
        match self {
            Self::Number(_) => "number",
            Self::Text { .. } => "string",
            Self::Boolean(_) => "boolean",
            Self::DateTime(_) => "DateTime",
            Self::Date(_) => "Date",
            Self::Time(_) => "Time",
        }
    }
}

/// The operators, longest first so that `!~=` is not read as `!` + `~=`.
const OPERATORS: [(&str, Operator); 8] = [
    ("==", Operator::Equal),
    ("!~=", Operator::NotMatch),
    ("!=", Operator::NotEqual),
    (">=", Operator::Order(Relation::GreaterOrEqual)),
    (">", Operator::Order(Relation::Greater)),
    ("<=", Operator::Order(Relation::LessOrEqual)),
    ("<", Operator::Order(Relation::Less)),
    ("~=", Operator::Match),
];

#[derive(Clone, Copy, Debug)]
enum Operator {
    Equal,
    NotEqual,
    Order(Relation),
    Match,
    NotMatch,
}

/// Characters that end a name: operators, separators and brackets.
fn ends_name(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '.' | '[' | ']' | '{' | '}' | '=' | '!' | '<' | '>' | '~' | ';' | '|' | '(' | ')' | ',' | '"' | '\''
        )
}

/// Characters that end an unquoted value (besides `..`).
fn ends_value(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, ';' | '|' | '(' | ')' | ',' | '"')
}

struct Parser<'a> {
    text: &'a str,
    position: usize,
    context: &'a ActiveContext,
    depth: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        self.text.get(self.position..).unwrap_or_default()
    }

    fn error(&self, what: &str) -> NgsiError {
        NgsiError::bad_request(format!("invalid q: {what} at position {}", self.position))
    }

    fn skip_whitespace(&mut self) {
        let rest = self.rest();
        self.position += rest.len() - rest.trim_start().len();
    }

    /// Consumes `token` (after optional whitespace) if it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_whitespace();
        if self.rest().starts_with(token) {
            self.position += token.len();
            true
        } else {
            false
        }
    }

    /// Consumes the longest prefix whose characters all pass `keep`.
    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &str {
        let start = self.position;
        let rest = &self.text[start..];
        let end = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
        self.position += end;
        &self.text[start..start + end]
    }

    fn disjunction(&mut self) -> Result<Expr> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("expression nested too deeply"));
        }
        let mut any = vec![self.conjunction()?];
        while self.eat("|") {
            any.push(self.conjunction()?);
        }
        self.depth -= 1;
        Ok(if any.len() == 1 { any.remove(0) } else { Expr::Or(any) })
    }

    fn conjunction(&mut self) -> Result<Expr> {
        let mut all = vec![self.primary()?];
        while self.eat(";") {
            all.push(self.primary()?);
        }
        Ok(if all.len() == 1 { all.remove(0) } else { Expr::And(all) })
    }

    fn primary(&mut self) -> Result<Expr> {
        if !self.eat("(") {
            return self.term();
        }
        let inner = self.disjunction()?;
        if !self.eat(")") {
            return Err(self.error("missing ')'"));
        }
        Ok(inner)
    }

    fn term(&mut self) -> Result<Expr> {
        if self.eat("!") {
            return Ok(Expr::Absent(self.path()?));
        }
        let path = self.path()?;
        let Some(operator) = self.operator()? else {
            return Ok(Expr::Exists(path));
        };
        let test = match operator {
            Operator::Equal => Test::new(false, self.equality()?),
            Operator::NotEqual => Test::new(true, self.equality()?),
            Operator::Order(relation) => Test::new(false, Check::Order(relation, self.comparable()?)),
            Operator::Match => Test::new(false, Check::Pattern(self.pattern()?)),
            Operator::NotMatch => Test::new(true, Check::Pattern(self.pattern()?)),
        };
        Ok(Expr::Compare(path, test))
    }

    fn operator(&mut self) -> Result<Option<Operator>> {
        self.skip_whitespace();
        let rest = self.rest();
        if let Some((token, operator)) = OPERATORS.iter().find(|(token, _)| rest.starts_with(token)) {
            self.position += token.len();
            return Ok(Some(*operator));
        }
        if rest.starts_with(['=', '!', '~']) {
            return Err(self.error("unknown operator"));
        }
        Ok(None)
    }

    fn path(&mut self) -> Result<Path> {
        self.skip_whitespace();
        let mut hops = Vec::new();
        let mut first = self.name()?;
        // `rel{[Type:]path}`: follow the relationship, then the inner path.
        while self.rest().starts_with('{') {
            self.position += 1;
            if hops.len() == MAX_HOPS {
                return Err(self.error("linked-entity terms follow at most 10 relationships"));
            }
            let type_hint = self.type_hint()?;
            hops.push(Hop {
                relationship: self.context.expand(&first),
                type_hint,
            });
            first = self.name()?;
        }
        let mut names = vec![first];
        while self.rest().starts_with('.') {
            self.position += 1;
            names.push(self.name()?);
        }
        let metadata = match names.last() {
            Some(last) if names.len() > 1 => Metadata::from_name(last),
            _ => None,
        };
        if metadata.is_some() {
            names.pop();
        }
        let members = if metadata.is_none() {
            self.members()?
        } else {
            Vec::new()
        };
        let attributes = names.iter().map(|n| self.context.expand(n)).collect();
        for _ in &hops {
            if !self.rest().starts_with('}') {
                return Err(self.error("missing '}'"));
            }
            self.position += 1;
        }
        Ok(Path {
            hops,
            attributes,
            members,
            metadata,
        })
    }

    /// The optional `Type:` of a linked-entity term. A compact IRI (with
    /// `/`) is a name, not a hint.
    fn type_hint(&mut self) -> Result<Option<String>> {
        let rest = self.rest();
        let end = rest.find(ends_name).unwrap_or(rest.len());
        let Some((hint, _)) = rest[..end].split_once(':').filter(|_| !rest[..end].contains('/')) else {
            return Ok(None);
        };
        if !is_valid_name(hint) {
            return Err(self.error("entity type expected"));
        }
        let expanded = self.context.expand(hint);
        self.position += hint.len() + 1;
        Ok(Some(expanded))
    }

    fn name(&mut self) -> Result<String> {
        let name = self.take_while(|c| !ends_name(c));
        if !is_valid_name(name) {
            return Err(self.error("attribute name expected"));
        }
        Ok(name.to_owned())
    }

    /// `[a.b][c]`: keys of a compound value, used as they are written.
    fn members(&mut self) -> Result<Vec<String>> {
        let mut members = Vec::new();
        while self.rest().starts_with('[') {
            self.position += 1;
            loop {
                let key = self.take_while(|c| !ends_name(c));
                if key.is_empty() {
                    return Err(self.error("member name expected"));
                }
                members.push(key.to_owned());
                if !self.rest().starts_with('.') {
                    break;
                }
                self.position += 1;
            }
            if !self.rest().starts_with(']') {
                return Err(self.error("missing ']'"));
            }
            self.position += 1;
        }
        Ok(members)
    }

    /// A value, a range `low..high` or a list `a,b,c`.
    fn equality(&mut self) -> Result<Check> {
        let first = self.value()?;
        if self.eat("..") {
            let last = self.value()?;
            return range(first, last).ok_or_else(|| self.error("a range needs two numbers, strings or times"));
        }
        let mut values = vec![first];
        while self.eat(",") {
            values.push(self.value()?);
        }
        Ok(Check::Equal(values))
    }

    fn comparable(&mut self) -> Result<Scalar> {
        match self.value()? {
            Scalar::Boolean(_) => Err(self.error("booleans can only be compared with == and !=")),
            scalar => Ok(scalar),
        }
    }

    fn value(&mut self) -> Result<Scalar> {
        self.skip_whitespace();
        if self.rest().starts_with('"') {
            let text = self.quoted()?;
            return Ok(self.text_scalar(text));
        }
        let token = self.bare_token();
        if token.is_empty() {
            return Err(self.error("value expected"));
        }
        self.classify(&token)
            .ok_or_else(|| self.error(&format!("'{token}' is not a number, DateTime or URI: quote strings")))
    }

    /// An unquoted value: up to a separator or the `..` of a range.
    fn bare_token(&mut self) -> String {
        let rest = self.rest();
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            if ends_value(c) || rest[i..].starts_with("..") {
                end = i;
                break;
            }
        }
        let token = rest[..end].to_owned();
        self.position += end;
        token
    }

    fn classify(&self, token: &str) -> Option<Scalar> {
        match token {
            "true" => return Some(Scalar::Boolean(true)),
            "false" => return Some(Scalar::Boolean(false)),
            _ => {}
        }
        if token.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            if let Ok(number) = serde_json::from_str::<Number>(token) {
                return Some(Scalar::Number(number));
            }
        }
        if let Some(instant) = time::parse(token) {
            return Some(Scalar::DateTime(instant));
        }
        if let Some(date) = parse_date(token) {
            return Some(Scalar::Date(date));
        }
        if let Some(time) = parse_time(token) {
            return Some(Scalar::Time(time));
        }
        // A bare word (`category==commercial`) is a string, meant to be
        // compared with vocab values, usually through `expandValues`.
        let word = token.starts_with(|c: char| c.is_alphabetic()) && is_valid_name(token) && !token.contains(':');
        (word || is_uri(token)).then(|| self.text_scalar(token.to_owned()))
    }

    fn text_scalar(&self, text: String) -> Scalar {
        Scalar::Text {
            expansion: self.context.expand(&text),
            text,
        }
    }

    /// A double-quoted string; `\"` and `\\` are escapes, any other
    /// backslash is kept so that regex escapes survive.
    fn quoted(&mut self) -> Result<String> {
        let start = self.position;
        let mut text = String::new();
        let mut chars = self.rest().char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.position += i + 1;
                    return Ok(text);
                }
                '\\' => match chars.next() {
                    Some((_, escaped @ ('"' | '\\'))) => text.push(escaped),
                    Some((_, other)) => {
                        text.push('\\');
                        text.push(other);
                    }
                    None => break,
                },
                c => text.push(c),
            }
        }
        self.position = start;
        Err(self.error("unterminated string"))
    }

    fn pattern(&mut self) -> Result<Regex> {
        self.skip_whitespace();
        let source = if self.rest().starts_with('"') {
            self.quoted()?
        } else {
            let end = bare_pattern_end(self.rest());
            let source = self.rest()[..end].to_owned();
            self.position += end;
            source
        };
        if source.is_empty() {
            return Err(self.error("regular expression expected"));
        }
        RegexBuilder::new(&source)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()
            .map_err(|e| self.error(&format!("invalid regular expression: {e}")))
    }
}

/// Where an unquoted regex ends: at a `;`, `|` or `)` that is not inside
/// its own parentheses, a character class or an escape.
fn bare_pattern_end(text: &str) -> usize {
    let (mut depth, mut in_class, mut escaped) = (0usize, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' => in_class = true,
            ']' => in_class = false,
            _ if in_class => {}
            '(' => depth += 1,
            ')' if depth == 0 => return i,
            ')' => depth -= 1,
            ';' | '|' if depth == 0 => return i,
            _ => {}
        }
    }
    text.len()
}

/// Both ends of a range must be of the same, ordered kind.
fn range(low: Scalar, high: Scalar) -> Option<Check> {
    let ordered = !matches!(low, Scalar::Boolean(_)) && low.kind() == high.kind();
    ordered.then_some(Check::Range(low, high))
}

mod index;
pub use index::{attribute_indexed_values, indexed_values, IndexedValue, ValueBound, ValueTest, MAX_INDEXED_TEXT};

#[cfg(test)]
mod tests;
