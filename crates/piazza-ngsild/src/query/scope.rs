//! The scope query language (GS CIM 009, clause 4.19): the `scopeQ` parameter.
//!
//! ```text
//! query       := disjunction
//! disjunction := conjunction ( ( '|' | ',' ) conjunction )*
//! conjunction := primary ( ';' primary )*
//! primary     := '(' disjunction ')' | scope
//! scope       := '/#' | ( '/' level )+ [ '/#' ]
//! level       := '+' | scope-name
//! ```
//!
//! `/a/b` matches exactly that scope, `+` matches exactly one level, and a
//! trailing `/#` matches the scope before it and everything below it (`/#`
//! alone matches any scope). `;` (AND) binds tighter than `|` and `,` (OR).
//! A term holds if any of the entity's scopes matches it, so entities
//! without scopes never match.

use crate::entity::is_valid_name;
use crate::error::{NgsiError, Result};

/// Deep enough for any hand-written query, shallow enough for the stack.
const MAX_DEPTH: usize = 64;

#[derive(Clone, Debug)]
pub struct ScopeQuery {
    expr: Expr,
}

impl ScopeQuery {
    pub fn parse(text: &str) -> Result<ScopeQuery> {
        let mut parser = Parser {
            text,
            position: 0,
            depth: 0,
        };
        let expr = parser.disjunction()?;
        parser.skip_whitespace();
        if parser.position != text.len() {
            return Err(parser.error("unexpected text"));
        }
        Ok(ScopeQuery { expr })
    }

    /// Whether an entity with these scopes is selected.
    pub fn matches(&self, scopes: &[String]) -> bool {
        self.expr.eval(scopes)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Scope(Pattern),
}

impl Expr {
    fn eval(&self, scopes: &[String]) -> bool {
        match self {
            Self::And(all) => all.iter().all(|e| e.eval(scopes)),
            Self::Or(any) => any.iter().any(|e| e.eval(scopes)),
            Self::Scope(pattern) => scopes.iter().any(|s| pattern.matches(s)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern {
    levels: Vec<Level>,
    /// A trailing `/#`: deeper scopes match too.
    descendants: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Name(String),
    /// `+`: any single level.
    Any,
}

impl Pattern {
    fn parse(text: &str) -> Option<Pattern> {
        let mut segments: Vec<&str> = text.strip_prefix('/')?.split('/').collect();
        let descendants = segments.last() == Some(&"#");
        if descendants {
            segments.pop();
        }
        let levels = segments
            .into_iter()
            .map(|segment| match segment {
                "+" => Some(Level::Any),
                name if is_scope_name(name) => Some(Level::Name(name.to_owned())),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        (descendants || !levels.is_empty()).then_some(Pattern { levels, descendants })
    }

    fn matches(&self, scope: &str) -> bool {
        let Some(rest) = scope.strip_prefix('/') else {
            return false;
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let deep_enough = if self.descendants {
            segments.len() >= self.levels.len()
        } else {
            segments.len() == self.levels.len()
        };
        deep_enough
            && self.levels.iter().zip(&segments).all(|(level, segment)| match level {
                Level::Any => !segment.is_empty(),
                Level::Name(name) => name == segment,
            })
    }
}

/// The same rule that entity scopes are validated with.
fn is_scope_name(name: &str) -> bool {
    is_valid_name(name) && !name.contains(['#', '+', '/'])
}

struct Parser<'a> {
    text: &'a str,
    position: usize,
    depth: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        self.text.get(self.position..).unwrap_or_default()
    }

    fn error(&self, what: &str) -> NgsiError {
        NgsiError::bad_request(format!("invalid scopeQ: {what} at position {}", self.position))
    }

    fn skip_whitespace(&mut self) {
        let rest = self.rest();
        self.position += rest.len() - rest.trim_start().len();
    }

    /// Consumes the first of `tokens` (after optional whitespace) that comes next.
    fn eat(&mut self, tokens: &[char]) -> bool {
        self.skip_whitespace();
        if self.rest().starts_with(tokens) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    fn disjunction(&mut self) -> Result<Expr> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("expression nested too deeply"));
        }
        let mut any = vec![self.conjunction()?];
        while self.eat(&['|', ',']) {
            any.push(self.conjunction()?);
        }
        self.depth -= 1;
        Ok(if any.len() == 1 { any.remove(0) } else { Expr::Or(any) })
    }

    fn conjunction(&mut self) -> Result<Expr> {
        let mut all = vec![self.primary()?];
        while self.eat(&[';']) {
            all.push(self.primary()?);
        }
        Ok(if all.len() == 1 { all.remove(0) } else { Expr::And(all) })
    }

    fn primary(&mut self) -> Result<Expr> {
        if !self.eat(&['(']) {
            return self.scope();
        }
        let inner = self.disjunction()?;
        if !self.eat(&[')']) {
            return Err(self.error("missing ')'"));
        }
        Ok(inner)
    }

    fn scope(&mut self) -> Result<Expr> {
        let rest = self.rest();
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, ';' | ',' | '|' | '(' | ')'))
            .unwrap_or(rest.len());
        let pattern = Pattern::parse(&rest[..end]).ok_or_else(|| self.error("scope expected"))?;
        self.position += end;
        Ok(Expr::Scope(pattern))
    }
}

#[cfg(test)]
mod tests;
