//! Linked entity retrieval (clause 4.5.23): `join`, `joinLevel` and the
//! `rel{...}` syntax of `pick`/`omit` (clause 4.21) that shapes the linked
//! entities.
//!
//! ```text
//! members := member ( ( ',' | '|' ) member )*
//! member  := name ( '{' members '}' )?
//! ```
//! In `pick`, `rel{a,b}` keeps `rel` and, of the entity it links to, `a`
//! and `b`; in `omit`, `rel{a}` keeps `rel` and drops `a` from the linked
//! entity. A linked entity without a nested selection is returned whole.

use std::collections::{HashMap, HashSet};

use piazza_ngsild::query::Projection;
use piazza_ngsild::{ActiveContext, Entity};
use piazza_store::Tenant;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// The deepest join accepted: every hop is a storage read per entity.
pub const MAX_JOIN_LEVEL: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    /// Linked entities are embedded in their relationship (`entity`).
    Inline,
    /// Linked entities are returned next to the linking ones.
    Flat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Join {
    pub kind: JoinKind,
    pub level: usize,
}

impl Join {
    /// Reads `join` and `joinLevel` (default 1, at most [`MAX_JOIN_LEVEL`]).
    pub fn parse(join: Option<&str>, level: Option<i64>) -> ApiResult<Option<Join>> {
        let level = match level {
            None => 1,
            Some(n) if (1..=MAX_JOIN_LEVEL as i64).contains(&n) => n as usize,
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "joinLevel must be between 1 and {MAX_JOIN_LEVEL}, not {n}"
                )))
            }
        };
        let kind = match join {
            None | Some("@none") => return Ok(None),
            Some("inline") => JoinKind::Inline,
            Some("flat") => JoinKind::Flat,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "join must be inline, flat or @none, not '{other}'"
                )))
            }
        };
        Ok(Some(Join { kind, level }))
    }
}

/// One member of a `pick`/`omit` list, with its nested selection.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub name: String,
    pub nested: Option<Vec<Member>>,
}

/// Parses a `pick`/`omit` list; `what` names the parameter in errors.
pub fn parse_members(text: &str, what: &str) -> ApiResult<Vec<Member>> {
    let mut parser = MemberParser {
        text,
        position: 0,
        what,
    };
    let members = parser.list(0)?;
    if parser.position != text.len() {
        return Err(parser.error());
    }
    Ok(members)
}

/// How many linked entities deep a selection reaches.
pub fn depth(members: &[Member]) -> usize {
    members
        .iter()
        .filter_map(|m| m.nested.as_deref())
        .map(|n| 1 + depth(n))
        .max()
        .unwrap_or(0)
}

struct MemberParser<'a> {
    text: &'a str,
    position: usize,
    what: &'a str,
}

impl MemberParser<'_> {
    fn error(&self) -> ApiError {
        ApiError::bad_request(format!(
            "invalid {} '{}' at position {}",
            self.what, self.text, self.position
        ))
    }

    fn list(&mut self, depth: usize) -> ApiResult<Vec<Member>> {
        // One more than the join ceiling, so that the too-deep case is reported as such.
        if depth > MAX_JOIN_LEVEL {
            return Err(ApiError::bad_request(format!(
                "{} addresses linked entities more than {MAX_JOIN_LEVEL} levels deep",
                self.what
            )));
        }
        let mut members = vec![self.member(depth)?];
        while self.text[self.position..].starts_with([',', '|']) {
            self.position += 1;
            members.push(self.member(depth)?);
        }
        Ok(members)
    }

    fn member(&mut self, depth: usize) -> ApiResult<Member> {
        let rest = &self.text[self.position..];
        let end = rest.find([',', '|', '{', '}']).unwrap_or(rest.len());
        let name = rest[..end].trim();
        let valid = matches!(name, "id" | "type" | "scope") || piazza_ngsild::entity::is_valid_name(name);
        if name.is_empty() || !valid {
            return Err(self.error());
        }
        self.position += end;
        let mut member = Member {
            name: name.to_owned(),
            nested: None,
        };
        if self.text[self.position..].starts_with('{') {
            self.position += 1;
            member.nested = Some(self.list(depth + 1)?);
            if !self.text[self.position..].starts_with('}') {
                return Err(self.error());
            }
            self.position += 1;
        }
        Ok(member)
    }
}

/// What to return of an entity, and of the entities its relationships
/// (by expanded name) link to.
#[derive(Clone, Debug, Default)]
pub struct Shape {
    pub projection: Projection,
    pub links: Vec<(String, Shape)>,
}

/// Linked entities without a nested selection are returned whole.
static WHOLE: Shape = Shape {
    projection: Projection {
        pick: None,
        omit: Vec::new(),
        keep_core: false,
    },
    links: Vec::new(),
};

impl Shape {
    /// The shape of the entities linked through `relationship`.
    pub fn link(&self, relationship: &str) -> &Shape {
        self.links
            .iter()
            .find(|(name, _)| name == relationship)
            .map_or(&WHOLE, |(_, shape)| shape)
    }

    /// Builds a shape from parsed `pick` and `omit` lists.
    pub fn build(pick: Option<&[Member]>, omit: Option<&[Member]>, context: &ActiveContext) -> ApiResult<Shape> {
        let expand = |m: &Member| -> ApiResult<String> {
            match m.name.as_str() {
                "id" | "type" | "scope" => Ok(context.expand(&m.name)),
                _ => crate::params::expand_names(std::slice::from_ref(&m.name), context).map(|mut v| v.remove(0)),
            }
        };
        let mut shape = Shape::default();
        if let Some(pick) = pick {
            shape.projection.pick = Some(pick.iter().map(expand).collect::<ApiResult<_>>()?);
        }
        // `omit=rel{a}` drops `a` from the linked entity, not `rel` itself.
        for member in omit.unwrap_or_default().iter().filter(|m| m.nested.is_none()) {
            shape.projection.omit.push(expand(member)?);
        }
        if let Some(picked) = &shape.projection.pick {
            if picked.iter().any(|p| shape.projection.omit.contains(p)) {
                return Err(ApiError::bad_request(
                    "the same member cannot be both picked and omitted",
                ));
            }
        }
        let nested = |list: Option<&[Member]>, name: &str| -> Option<Vec<Member>> {
            let found: Vec<Member> = list
                .unwrap_or_default()
                .iter()
                .filter(|m| m.name == name)
                .filter_map(|m| m.nested.clone())
                .flatten()
                .collect();
            (!found.is_empty()).then_some(found)
        };
        let mut linked_names: Vec<&str> = Vec::new();
        for member in pick.unwrap_or_default().iter().chain(omit.unwrap_or_default()) {
            if member.nested.is_some() && !linked_names.contains(&member.name.as_str()) {
                linked_names.push(&member.name);
            }
        }
        for name in linked_names {
            let inner_pick = nested(pick, name);
            let inner_omit = nested(omit, name);
            let inner = Shape::build(inner_pick.as_deref(), inner_omit.as_deref(), context)?;
            shape.links.push((
                expand(&Member {
                    name: name.to_owned(),
                    nested: None,
                })?,
                inner,
            ));
        }
        Ok(shape)
    }
}

/// The linked entities of a response, as read for a join.
#[derive(Default)]
pub struct Linked {
    /// By id; `None` when the target does not exist.
    pub entities: HashMap<String, Option<Entity>>,
    /// Every linked entity reached, first reach first, with the shape it
    /// was reached with (for `join=flat`).
    pub reached: Vec<(String, Shape)>,
}

impl Linked {
    pub fn get(&self, id: &str) -> Option<&Entity> {
        self.entities.get(id).and_then(Option::as_ref)
    }

    /// Reads the entities linked from `roots` (already projected with
    /// `shape`), `join.level` hops deep, bounded by the broker's limit.
    pub async fn resolve(
        state: &AppState,
        tenant: &Tenant,
        roots: &[Entity],
        shape: &Shape,
        join: Join,
    ) -> ApiResult<Linked> {
        let limit = state.broker.limits().max_linked_entities;
        let mut linked = Linked::default();
        let mut seen: HashSet<String> = roots.iter().map(|e| e.id.clone()).collect();
        let mut frontier: Vec<(Entity, &Shape)> = roots.iter().map(|e| (e.clone(), shape)).collect();
        for _ in 0..join.level {
            let mut next: Vec<(Entity, &Shape)> = Vec::new();
            for (source, source_shape) in &frontier {
                for (name, _) in &source.attributes {
                    let child_shape = source_shape.link(name);
                    for id in piazza_broker::relationship_objects(source, std::slice::from_ref(name)) {
                        if !linked.entities.contains_key(&id) {
                            if linked.entities.len() >= limit {
                                return Err(ApiError::new(
                                    piazza_ngsild::ErrorKind::TooManyResults,
                                    format!("a join may read at most {limit} linked entities; lower joinLevel"),
                                ));
                            }
                            let target = state
                                .broker
                                .store()
                                .get(tenant, &id)
                                .await
                                .map_err(piazza_broker::BrokerError::from)?;
                            linked.entities.insert(id.clone(), target);
                        }
                        let Some(target) = linked.get(&id).cloned() else {
                            continue;
                        };
                        // Each entity is followed once: cycles end here.
                        if seen.insert(id.clone()) {
                            linked.reached.push((id.clone(), child_shape.clone()));
                            let mut projected = target;
                            child_shape.projection.apply(&mut projected);
                            next.push((projected, child_shape));
                        }
                    }
                }
            }
            frontier = next;
        }
        Ok(linked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(members: &[Member]) -> Vec<String> {
        members.iter().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn parses_nested_selections() {
        let members = parse_members("id,locatedAt{id,name,isInCountry{id|description}}", "pick").unwrap();
        assert_eq!(names(&members), ["id", "locatedAt"]);
        let nested = members[1].nested.as_ref().unwrap();
        assert_eq!(names(nested), ["id", "name", "isInCountry"]);
        assert_eq!(depth(&members), 2);
        assert_eq!(depth(&parse_members("a|b", "pick").unwrap()), 0);
    }

    #[test]
    fn rejects_bad_grammar_and_depth() {
        for bad in [
            "",
            "id;name",
            "id,locatedAt{name",
            "id,locatedAt{{name}",
            "id,,name",
            "id,locatedAt{,name}",
            "id,locatedAt{}",
            "name||airQualityLevel",
            "a}",
            "a{b}c",
        ] {
            assert!(parse_members(bad, "pick").is_err(), "{bad}");
        }
        let eleven = format!("{}x{}", "r{".repeat(11), "}".repeat(11));
        assert!(parse_members(&eleven, "pick").is_err());
        let ten = format!("{}x{}", "r{".repeat(10), "}".repeat(10));
        assert_eq!(depth(&parse_members(&ten, "pick").unwrap()), 10);
        let hostile = "r{".repeat(100_000);
        assert!(parse_members(&hostile, "pick").is_err());
    }

    #[test]
    fn shapes_per_level() {
        let context = ActiveContext::core();
        let pick = parse_members("id,locatedAt{id,name}", "pick").unwrap();
        let omit = parse_members("type,locatedAt{name}", "omit").unwrap();
        let picked = Shape::build(Some(&pick), None, &context).unwrap();
        let located = context.expand("locatedAt");
        assert!(picked.projection.keeps(&located));
        assert!(!picked.projection.keeps("@type"));
        assert!(picked.link(&located).projection.keeps(&context.expand("name")));
        assert!(!picked.link(&located).projection.keeps(&context.expand("description")));
        let omitted = Shape::build(None, Some(&omit), &context).unwrap();
        assert!(omitted.projection.keeps(&located));
        assert!(!omitted.projection.keeps("@type"));
        assert!(!omitted.link(&located).projection.keeps(&context.expand("name")));
        // Other relationships' entities come whole.
        assert!(omitted.link("other").projection.is_identity());
    }

    #[test]
    fn join_parameters() {
        assert_eq!(Join::parse(None, None).unwrap(), None);
        assert_eq!(
            Join::parse(Some("flat"), None).unwrap(),
            Some(Join {
                kind: JoinKind::Flat,
                level: 1
            })
        );
        assert!(Join::parse(Some("inline"), Some(0)).is_err());
        assert!(Join::parse(Some("inline"), Some(11)).is_err());
        assert!(Join::parse(Some("sideways"), None).is_err());
    }
}
