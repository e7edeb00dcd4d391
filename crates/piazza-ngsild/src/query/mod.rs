//! Entity selection (clause 4.9 onwards): which entities a query, a
//! subscription or a batch operation is about, and which of their
//! attributes it returns.

pub mod geo;
pub mod order;
pub mod q;
pub mod scope;
pub mod types;

use regex::Regex;

use crate::entity::Entity;
pub use geo::GeoQuery;
pub use order::{Collation, OrderBy};
pub use q::Query;
pub use scope::ScopeQuery;
pub use types::TypeSelector;

/// Everything that filters entities. An empty query matches every entity.
#[derive(Clone, Debug, Default)]
pub struct EntityQuery {
    /// Entity ids (any of).
    pub ids: Vec<String>,
    pub id_pattern: Option<Regex>,
    pub types: Option<TypeSelector>,
    /// Expanded attribute names: an entity matches if it has any of them.
    pub attrs: Vec<String>,
    pub q: Option<Query>,
    pub geo: Option<GeoQuery>,
    pub scope: Option<ScopeQuery>,
    /// Entity selectors of which at least one must match (the `entities` of
    /// a POST query): each pairs its own ids, pattern and types.
    pub alternatives: Vec<Selector>,
}

/// One entity selector (`EntitySelector`, clause 5.2.33).
#[derive(Clone, Debug, Default)]
pub struct Selector {
    pub ids: Vec<String>,
    pub id_pattern: Option<Regex>,
    pub types: Option<TypeSelector>,
}

impl Selector {
    pub fn matches(&self, entity: &Entity) -> bool {
        (self.ids.is_empty() || self.ids.contains(&entity.id))
            && self.id_pattern.as_ref().is_none_or(|p| p.is_match(&entity.id))
            && self.types.as_ref().is_none_or(|t| t.matches(&entity.types))
    }
}

impl EntityQuery {
    /// Whether `entity` is selected.
    pub fn matches(&self, entity: &Entity) -> bool {
        (self.ids.is_empty() || self.ids.contains(&entity.id))
            && self.id_pattern.as_ref().is_none_or(|p| p.is_match(&entity.id))
            && self.types.as_ref().is_none_or(|t| t.matches(&entity.types))
            && (self.attrs.is_empty() || self.attrs.iter().any(|a| entity.attributes.contains_key(a)))
            && self.q.as_ref().is_none_or(|q| q.matches(entity))
            && self.scope.as_ref().is_none_or(|s| s.matches(&entity.scope))
            && self.geo.as_ref().is_none_or(|g| g.matches(entity))
            && (self.alternatives.is_empty() || self.alternatives.iter().any(|s| s.matches(entity)))
    }

    /// The expanded names of the attributes [`matches`](Self::matches)
    /// reads (besides id, types and scope): an entity keeping only these
    /// matches exactly when the whole entity does.
    pub fn attributes_read(&self) -> Vec<String> {
        let mut names = self.attrs.clone();
        names.extend(self.q.iter().flat_map(Query::attribute_names));
        names.extend(self.geo.iter().map(|g| g.geoproperty().to_owned()));
        names
    }

    /// Whether only ids, id patterns and types are used, i.e. the storage
    /// can answer without looking inside entities.
    pub fn is_structural(&self) -> bool {
        self.attrs.is_empty()
            && self.q.is_none()
            && self.geo.is_none()
            && self.scope.is_none()
            && self.alternatives.is_empty()
    }
}

/// Which members of the selected entities are returned (`attrs`, `pick`, `omit`).
#[derive(Clone, Debug, Default)]
pub struct Projection {
    /// Expanded names to keep (`@id`, `@type` and the scope IRI included);
    /// `None` keeps all.
    pub pick: Option<Vec<String>>,
    /// Expanded names to drop.
    pub omit: Vec<String>,
    /// Whether `id`, `type` and `scope` are kept whatever `pick` says (`attrs`
    /// only selects attributes).
    pub keep_core: bool,
}

const CORE_MEMBERS: [&str; 3] = ["@id", "@type", "https://uri.etsi.org/ngsi-ld/scope"];

impl Projection {
    pub fn is_identity(&self) -> bool {
        self.pick.is_none() && self.omit.is_empty()
    }

    /// Whether the member with this expanded name is returned.
    pub fn keeps(&self, member: &str) -> bool {
        let core = CORE_MEMBERS.contains(&member);
        let picked = match &self.pick {
            None => true,
            Some(_) if core && self.keep_core => true,
            Some(pick) => pick.iter().any(|p| p == member),
        };
        picked && !self.omit.iter().any(|o| o == member)
    }

    /// Drops the attributes the projection does not return.
    pub fn apply(&self, entity: &mut Entity) {
        entity.attributes.retain(|name, _| self.keeps(name));
    }
}
