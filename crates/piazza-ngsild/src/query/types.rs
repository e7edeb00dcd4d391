//! The entity type selection language (clause 4.17).
//!
//! ```text
//! selection := disjunct ( ( '|' | ',' ) disjunct )*
//! disjunct  := term ( ';' term )*
//! term      := TYPE-NAME | '(' selection ')'
//! ```
//! `,` and `|` mean OR, `;` means AND; an entity matches a type name if that
//! (expanded) name is among its types.

use crate::entity::is_valid_name;
use crate::error::{NgsiError, Result};
use crate::jsonld::ActiveContext;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeSelector {
    Type(String),
    And(Vec<TypeSelector>),
    Or(Vec<TypeSelector>),
}

impl TypeSelector {
    /// Parses a selection, expanding every type name with `context`.
    pub fn parse(text: &str, context: &ActiveContext) -> Result<TypeSelector> {
        let mut parser = Parser {
            text,
            position: 0,
            context,
            depth: 0,
        };
        let selector = parser.selection()?;
        if parser.position != text.len() {
            return Err(NgsiError::bad_request(format!("invalid type selection '{text}'")));
        }
        Ok(selector)
    }

    /// A selection of any of the given (already expanded) types.
    pub fn any_of(types: Vec<String>) -> TypeSelector {
        TypeSelector::Or(types.into_iter().map(TypeSelector::Type).collect())
    }

    pub fn matches(&self, entity_types: &[String]) -> bool {
        match self {
            Self::Type(t) => entity_types.iter().any(|e| e == t),
            Self::And(all) => all.iter().all(|s| s.matches(entity_types)),
            Self::Or(any) => any.iter().any(|s| s.matches(entity_types)),
        }
    }

    /// The type names a selection could match, when it is a plain list of
    /// alternatives (what storage indexes can use).
    pub fn alternatives(&self) -> Option<Vec<&str>> {
        match self {
            Self::Type(t) => Some(vec![t.as_str()]),
            Self::Or(any) => any
                .iter()
                .map(|s| match s {
                    Self::Type(t) => Some(t.as_str()),
                    _ => None,
                })
                .collect(),
            Self::And(_) => None,
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    position: usize,
    context: &'a ActiveContext,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.position..].chars().next()
    }

    fn selection(&mut self) -> Result<TypeSelector> {
        self.depth += 1;
        if self.depth > 32 {
            return Err(NgsiError::bad_request("type selection is nested too deeply"));
        }
        let mut alternatives = vec![self.conjunction()?];
        while matches!(self.peek(), Some('|' | ',')) {
            self.position += 1;
            alternatives.push(self.conjunction()?);
        }
        self.depth -= 1;
        Ok(if alternatives.len() == 1 {
            alternatives.remove(0)
        } else {
            TypeSelector::Or(alternatives)
        })
    }

    fn conjunction(&mut self) -> Result<TypeSelector> {
        let mut all = vec![self.term()?];
        while self.peek() == Some(';') {
            self.position += 1;
            all.push(self.term()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            TypeSelector::And(all)
        })
    }

    fn term(&mut self) -> Result<TypeSelector> {
        if self.peek() == Some('(') {
            self.position += 1;
            let inner = self.selection()?;
            if self.peek() != Some(')') {
                return Err(NgsiError::bad_request(format!(
                    "unbalanced parenthesis in type selection '{}'",
                    self.text
                )));
            }
            self.position += 1;
            return Ok(inner);
        }
        let rest = &self.text[self.position..];
        let end = rest.find(['|', ',', ';', '(', ')']).unwrap_or(rest.len());
        let name = rest[..end].trim();
        if !is_valid_name(name) {
            return Err(NgsiError::bad_request(format!(
                "invalid type name '{name}' in '{}'",
                self.text
            )));
        }
        self.position += end;
        Ok(TypeSelector::Type(self.context.expand(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(name: &str) -> String {
        ActiveContext::core().expand(name)
    }

    #[test]
    fn or_and_parentheses() {
        let core = ActiveContext::core();
        let selector = TypeSelector::parse("(A;B)|C", &core).unwrap();
        assert!(selector.matches(&[expanded("A"), expanded("B")]));
        assert!(!selector.matches(&[expanded("A")]));
        assert!(selector.matches(&[expanded("C")]));
        let list = TypeSelector::parse("A,B", &core).unwrap();
        assert!(list.matches(&[expanded("B")]));
        assert_eq!(list.alternatives().unwrap().len(), 2);
    }

    #[test]
    fn rejects_garbage() {
        let core = ActiveContext::core();
        for bad in ["", "(A", "A;", "A)", "A|<b>"] {
            assert!(TypeSelector::parse(bad, &core).is_err(), "{bad}");
        }
    }
}
