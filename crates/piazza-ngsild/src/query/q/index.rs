//! What a value index needs from `q`: the values a comparison on a whole
//! attribute looks at ([`indexed_values`]), and the conditions every match
//! of a query meets on them ([`Query::value_bounds`]).
//!
//! Both come from the same leaf extraction the matcher uses, so a store
//! that keeps `indexed_values` of every entity and narrows a query to the
//! entities meeting its bounds never loses a match; `Query::matches` still
//! decides. Bounds are deliberately loose (inclusive, as doubles): an index
//! may return too much, never too little.

use std::collections::HashSet;

use crate::{Attribute, Entity};

use super::{Check, Expr, Path, Query, Scalar};

/// Longer strings are not indexed; a query for a longer string is not narrowed.
pub const MAX_INDEXED_TEXT: usize = 256;

/// One value of an attribute, as an index keeps it. Numbers are equal
/// when their bits are (zero is made positive), so values can be hashed.
#[derive(Clone, Debug)]
pub enum IndexedValue {
    Number(f64),
    Text(String),
}

impl IndexedValue {
    fn key(&self) -> (u64, &str) {
        match self {
            // `+ 0.0` turns -0.0 into 0.0; JSON has no NaN.
            Self::Number(n) => ((n + 0.0).to_bits(), ""),
            Self::Text(t) => (u64::MAX, t),
        }
    }
}

impl PartialEq for IndexedValue {
    fn eq(&self, other: &Self) -> bool {
        matches!(self, Self::Number(_)) == matches!(other, Self::Number(_)) && self.key() == other.key()
    }
}

impl Eq for IndexedValue {}

impl std::hash::Hash for IndexedValue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        matches!(self, Self::Number(_)).hash(state);
        self.key().hash(state);
    }
}

/// A condition every entity matching a query meets: some instance of the
/// top-level `attribute` has a value passing `test`.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueBound {
    /// The expanded attribute name.
    pub attribute: String,
    pub test: ValueTest,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ValueTest {
    /// A number equal to one of these.
    Numbers(Vec<f64>),
    /// A string equal to one of these (none longer than [`MAX_INDEXED_TEXT`]).
    Texts(Vec<String>),
    /// A number within the bounds, both inclusive; `None` is unbounded.
    Between { low: Option<f64>, high: Option<f64> },
}

/// Every attribute value of `entity` a comparison can match with a number
/// or string literal, by attribute name, without repeats.
pub fn indexed_values(entity: &Entity) -> Vec<(&str, IndexedValue)> {
    let mut values = Vec::new();
    for (name, instances) in &entity.attributes {
        attribute_indexed_values(name, instances, &mut values);
    }
    values
}

/// Appends the indexed values of one attribute (all its instances) to
/// `values`, without repeats: what [`indexed_values`] holds for `name`.
pub fn attribute_indexed_values<'a>(
    name: &'a str,
    instances: &'a [Attribute],
    values: &mut Vec<(&'a str, IndexedValue)>,
) {
    let mut seen: HashSet<IndexedValue> = HashSet::new();
    let path = Path::whole(name);
    for instance in instances {
        for leaf in path.leaves(instance) {
            let value = if let Some(number) = leaf.number().and_then(serde_json::Number::as_f64) {
                IndexedValue::Number(number)
            } else if let Some(text) = leaf.text().filter(|t| t.len() <= MAX_INDEXED_TEXT) {
                IndexedValue::Text(text.to_owned())
            } else {
                continue;
            };
            if seen.insert(value.clone()) {
                values.push((name, value));
            }
        }
    }
}

impl Query {
    /// Conditions every entity this query matches meets, for narrowing
    /// with a value index; empty when none can be stated (`|`, `!=`,
    /// patterns, metadata, sub-attributes, linked entities...).
    pub fn value_bounds(&self) -> Vec<ValueBound> {
        let mut bounds = Vec::new();
        self.expr.value_bounds(&mut bounds);
        bounds
    }
}

impl Expr {
    fn value_bounds(&self, bounds: &mut Vec<ValueBound>) {
        match self {
            // Every conjunct holds for a match, so each one's bounds do.
            Self::And(all) => all.iter().for_each(|e| e.value_bounds(bounds)),
            Self::Compare(path, test) if !test.negated && !test.expand && path.is_whole() => {
                if let (Some(attribute), Some(test)) = (path.attributes.first(), bound(&test.check)) {
                    bounds.push(ValueBound {
                        attribute: attribute.clone(),
                        test,
                    });
                }
            }
            Self::Or(_) | Self::Exists(_) | Self::Absent(_) | Self::Compare(..) => {}
        }
    }
}

impl Path {
    /// The path of a comparison on a whole top-level attribute.
    fn whole(name: &str) -> Path {
        Path {
            hops: Vec::new(),
            attributes: vec![name.to_owned()],
            members: Vec::new(),
            metadata: None,
        }
    }

    fn is_whole(&self) -> bool {
        self.hops.is_empty() && self.attributes.len() == 1 && self.members.is_empty() && self.metadata.is_none()
    }
}

fn number(scalar: &Scalar) -> Option<f64> {
    match scalar {
        Scalar::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn bound(check: &Check) -> Option<ValueTest> {
    match check {
        Check::Equal(values) => {
            if let Some(numbers) = values.iter().map(number).collect::<Option<Vec<f64>>>() {
                return Some(ValueTest::Numbers(numbers));
            }
            values
                .iter()
                .map(|v| match v {
                    Scalar::Text { text, .. } if text.len() <= MAX_INDEXED_TEXT => Some(text.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<String>>>()
                .map(ValueTest::Texts)
        }
        Check::Range(low, high) => Some(ValueTest::Between {
            low: Some(number(low)?),
            high: Some(number(high)?),
        }),
        Check::Order(relation, value) => {
            let value = number(value)?;
            // Strict relations are loosened: doubles may round two distinct
            // integers to one value.
            Some(match relation {
                super::Relation::Greater | super::Relation::GreaterOrEqual => ValueTest::Between {
                    low: Some(value),
                    high: None,
                },
                super::Relation::Less | super::Relation::LessOrEqual => ValueTest::Between {
                    low: None,
                    high: Some(value),
                },
            })
        }
        Check::Pattern(_) => None,
    }
}

impl ValueTest {
    /// Whether an indexed value passes (what the index's SQL computes).
    pub fn passes(&self, value: &IndexedValue) -> bool {
        match (self, value) {
            (Self::Numbers(numbers), IndexedValue::Number(n)) => numbers.contains(n),
            (Self::Texts(texts), IndexedValue::Text(t)) => texts.contains(t),
            (Self::Between { low, high }, IndexedValue::Number(n)) => {
                low.is_none_or(|low| *n >= low) && high.is_none_or(|high| *n <= high)
            }
            _ => false,
        }
    }
}
