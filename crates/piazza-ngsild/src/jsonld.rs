//! JSON-LD term handling: just enough of JSON-LD 1.1 context processing for NGSI-LD.
//!
//! NGSI-LD only ever needs three operations on a context: expand a term to an
//! IRI (attribute names, entity types, vocab values), compact an IRI back to a
//! term for the requester's context, and remember which terms carry a type
//! mapping. We therefore keep an [`ActiveContext`] as a flat term table plus
//! `@vocab`, built from local context documents. The core context is compiled
//! into the binary and always applied last, so its (protected) terms win, as
//! the spec requires (GS CIM 009, clause 5.5.7).
//!
//! This crate never fetches anything: remote contexts are handed in by the
//! caller through a [`ContextLoader`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

use crate::error::{ErrorKind, NgsiError, Result};

/// The URL under which this broker serves and advertises its core context.
pub const CORE_CONTEXT_URL: &str = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld";

/// The NGSI-LD prefix every core IRI starts with.
pub const NGSI_LD: &str = "https://uri.etsi.org/ngsi-ld/";

const CORE_CONTEXT_TEXT: &str = include_str!("core-context-v1.8.jsonld");

/// Whether a URL names one of the ETSI core contexts. They are built in and
/// never fetched, whatever their version: the broker must work air-gapped.
pub fn is_core_context_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://uri.etsi.org/ngsi-ld/")
        .or_else(|| url.strip_prefix("http://uri.etsi.org/ngsi-ld/"))
    else {
        return false;
    };
    let rest = rest.strip_prefix("v1/").unwrap_or(rest);
    let Some(version) = rest
        .strip_prefix("ngsi-ld-core-context")
        .and_then(|r| r.strip_suffix(".jsonld"))
    else {
        return false;
    };
    version.is_empty()
        || version
            .strip_prefix("-v")
            .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// Supplies the documents of remote contexts. The broker pre-fetches them
/// (with timeouts, size limits and a cache) before calling into this crate.
pub trait ContextLoader {
    /// Returns the parsed document found at `url` (an object with `@context`).
    fn load(&self, url: &str) -> Result<Arc<Value>>;
}

/// A loader for callers that have no remote contexts at all.
pub struct NoRemoteContexts;

impl ContextLoader for NoRemoteContexts {
    fn load(&self, url: &str) -> Result<Arc<Value>> {
        Err(NgsiError::new(
            ErrorKind::LdContextNotAvailable,
            format!("remote @context {url} is not available"),
        ))
    }
}

/// One term definition, reduced to what NGSI-LD uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermDefinition {
    pub iri: String,
    /// `@type` of the definition: `@id`, `@vocab`, `@json` or a datatype IRI.
    pub type_mapping: Option<String>,
    /// Whether the term may be used as the prefix of a compact IRI.
    pub prefix: bool,
}

/// The term tables' maps. foldhash rather than SipHash, as for entity
/// members (`entity::Members`): rendering looks up every member name of
/// every entity it returns, and SipHash on these IRIs was most of
/// `compact_ref`'s time.
type Terms<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// A processed context: the term table that expansion and compaction use.
#[derive(Clone, Debug, Default)]
pub struct ActiveContext {
    terms: Terms<TermDefinition>,
    vocab: Option<String>,
    /// IRI → the preferred term for it (shortest, then smallest).
    reverse: Terms<String>,
}

impl ActiveContext {
    /// The core context alone (what a request with no user context gets).
    pub fn core() -> Arc<ActiveContext> {
        static CORE: OnceLock<Arc<ActiveContext>> = OnceLock::new();
        CORE.get_or_init(|| {
            let document: Value = serde_json::from_str(CORE_CONTEXT_TEXT).expect("embedded core context is valid JSON");
            let mut context = ActiveContext::default();
            context
                .merge_local(&document["@context"], &NoRemoteContexts, 0)
                .expect("embedded core context is valid");
            context.rebuild_reverse();
            Arc::new(context)
        })
        .clone()
    }

    /// The core context document, as served at [`CORE_CONTEXT_URL`].
    pub fn core_document() -> Value {
        serde_json::from_str(CORE_CONTEXT_TEXT).expect("embedded core context is valid JSON")
    }

    /// Builds the active context for a user `@context` value (a URL, an
    /// object, or an array of them); the core context is applied last.
    pub fn from_user_context(local: &Value, loader: &dyn ContextLoader) -> Result<ActiveContext> {
        let mut context = ActiveContext::default();
        context.merge_local(local, loader, 0)?;
        let core = ActiveContext::core();
        for (term, definition) in &core.terms {
            context.terms.insert(term.clone(), definition.clone());
        }
        if context.vocab.is_none() {
            context.vocab = core.vocab.clone();
        }
        context.rebuild_reverse();
        Ok(context)
    }

    fn merge_local(&mut self, local: &Value, loader: &dyn ContextLoader, depth: usize) -> Result<()> {
        if depth > 16 {
            return Err(invalid_context("@context nesting is too deep (a cycle?)"));
        }
        match local {
            Value::Null => {
                *self = ActiveContext::default();
                Ok(())
            }
            Value::String(url) => {
                if is_core_context_url(url) {
                    // The core context is applied last in any case.
                    return Ok(());
                }
                let document = loader.load(url)?;
                let inner = document
                    .get("@context")
                    .ok_or_else(|| invalid_context(format!("remote document {url} has no @context")))?;
                self.merge_local(inner, loader, depth + 1)
            }
            Value::Array(items) => {
                for item in items {
                    self.merge_local(item, loader, depth + 1)?;
                }
                Ok(())
            }
            Value::Object(definitions) => self.merge_definitions(definitions),
            other => Err(invalid_context(format!("invalid @context entry: {other}"))),
        }
    }

    fn merge_definitions(&mut self, definitions: &Map<String, Value>) -> Result<()> {
        if let Some(vocab) = definitions.get("@vocab") {
            self.vocab = match vocab {
                Value::Null => None,
                Value::String(v) => Some(self.expand_with(definitions, v, 0)?.unwrap_or_else(|| v.clone())),
                _ => return Err(invalid_context("@vocab must be a string")),
            };
        }
        for (term, definition) in definitions {
            if term.starts_with('@') {
                continue;
            }
            let parsed = match definition {
                Value::Null => {
                    self.terms.remove(term);
                    continue;
                }
                Value::String(iri) => {
                    let Some(expanded) = self.expand_with(definitions, iri, 0)? else {
                        continue;
                    };
                    TermDefinition {
                        prefix: ends_with_gen_delim(&expanded),
                        iri: expanded,
                        type_mapping: None,
                    }
                }
                Value::Object(body) => {
                    if body.contains_key("@context") {
                        // Scoped contexts would make a term's meaning depend on
                        // where it is used; NGSI-LD terms must mean one thing.
                        return Err(invalid_context(format!(
                            "term {term} has a scoped @context, which is not supported"
                        )));
                    }
                    let iri = match body.get("@id") {
                        Some(Value::String(id)) => self.expand_with(definitions, id, 0)?,
                        Some(Value::Null) => None,
                        Some(_) => return Err(invalid_context(format!("@id of term {term} must be a string"))),
                        None => Some(self.expand_with(definitions, term, 0)?.unwrap_or_else(|| term.clone())),
                    };
                    let Some(iri) = iri else { continue };
                    let type_mapping = match body.get("@type") {
                        Some(Value::String(t)) if t.starts_with('@') => Some(t.clone()),
                        Some(Value::String(t)) => {
                            Some(self.expand_with(definitions, t, 0)?.unwrap_or_else(|| t.clone()))
                        }
                        _ => None,
                    };
                    let prefix = match body.get("@prefix") {
                        Some(Value::Bool(b)) => *b,
                        _ => false,
                    };
                    TermDefinition {
                        iri,
                        type_mapping,
                        prefix,
                    }
                }
                other => return Err(invalid_context(format!("invalid definition of term {term}: {other}"))),
            };
            self.terms.insert(term.clone(), parsed);
        }
        Ok(())
    }

    /// Expands `value` while the local definitions being merged are still
    /// pending: a term may use a prefix defined in the same object.
    fn expand_with(&self, pending: &Map<String, Value>, value: &str, depth: usize) -> Result<Option<String>> {
        if depth > 8 {
            return Err(invalid_context(format!("cyclic IRI mapping for {value}")));
        }
        if value.starts_with('@') {
            return Ok(Some(value.to_owned()));
        }
        if let Some((prefix, suffix)) = value.split_once(':') {
            if prefix == "_" || suffix.starts_with("//") {
                return Ok(Some(value.to_owned()));
            }
            if let Some(pending_prefix) = pending.get(prefix) {
                let prefix_iri = match pending_prefix {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(o) => o.get("@id").and_then(Value::as_str).map(str::to_owned),
                    _ => None,
                };
                if let Some(prefix_iri) = prefix_iri {
                    if prefix_iri != value {
                        let base = self.expand_with(pending, &prefix_iri, depth + 1)?.unwrap_or(prefix_iri);
                        return Ok(Some(format!("{base}{suffix}")));
                    }
                }
            }
            if let Some(definition) = self.terms.get(prefix) {
                return Ok(Some(format!("{}{}", definition.iri, suffix)));
            }
            return Ok(Some(value.to_owned()));
        }
        if let Some(pending_term) = pending.get(value) {
            let target = match pending_term {
                Value::String(s) => Some(s.as_str()),
                Value::Object(o) => o.get("@id").and_then(Value::as_str),
                _ => None,
            };
            if let Some(target) = target {
                if target != value {
                    return self.expand_with(pending, target, depth + 1);
                }
            }
        }
        if let Some(definition) = self.terms.get(value) {
            return Ok(Some(definition.iri.clone()));
        }
        Ok(self.vocab.as_ref().map(|v| format!("{v}{value}")))
    }

    fn rebuild_reverse(&mut self) {
        let mut reverse: Terms<String> = Terms::with_capacity_and_hasher(self.terms.len(), Default::default());
        for (term, definition) in &self.terms {
            match reverse.get(&definition.iri) {
                Some(existing) if (existing.len(), existing.as_str()) <= (term.len(), term.as_str()) => {}
                _ => {
                    reverse.insert(definition.iri.clone(), term.clone());
                }
            }
        }
        self.reverse = reverse;
    }

    /// The definition of `term`, if the context has one.
    pub fn term(&self, term: &str) -> Option<&TermDefinition> {
        self.terms.get(term)
    }

    /// Expands a term or compact IRI used as a property name or type
    /// (vocabulary-relative expansion).
    pub fn expand(&self, term: &str) -> String {
        if term.starts_with('@') {
            return term.to_owned();
        }
        if let Some(definition) = self.terms.get(term) {
            return definition.iri.clone();
        }
        if let Some((prefix, suffix)) = term.split_once(':') {
            if prefix == "_" || suffix.starts_with("//") {
                return term.to_owned();
            }
            if let Some(definition) = self.terms.get(prefix) {
                return format!("{}{}", definition.iri, suffix);
            }
            // An absolute IRI with an unknown scheme (urn:, http:, ...).
            return term.to_owned();
        }
        match &self.vocab {
            Some(vocab) => format!("{vocab}{term}"),
            None => term.to_owned(),
        }
    }

    /// Compacts an IRI to the term the requester knows it by.
    pub fn compact(&self, iri: &str) -> String {
        self.compact_ref(iri).into_owned()
    }

    /// [`compact`](Self::compact) without a copy when the term is a known
    /// one or the IRI's own suffix: rendering compacts every member name of
    /// every entity it returns.
    pub fn compact_ref<'a>(&'a self, iri: &'a str) -> Cow<'a, str> {
        if let Some(term) = self.reverse.get(iri) {
            return Cow::Borrowed(term);
        }
        if let Some(vocab) = &self.vocab {
            if let Some(rest) = iri.strip_prefix(vocab.as_str()) {
                if !rest.is_empty() && !self.terms.contains_key(rest) {
                    return Cow::Borrowed(rest);
                }
            }
        }
        let mut best: Option<String> = None;
        for (term, definition) in &self.terms {
            if !(definition.prefix || ends_with_gen_delim(&definition.iri)) || definition.iri.len() >= iri.len() {
                continue;
            }
            if let Some(suffix) = iri.strip_prefix(definition.iri.as_str()) {
                let candidate = format!("{term}:{suffix}");
                if best
                    .as_ref()
                    .is_none_or(|b| (candidate.len(), &candidate) < (b.len(), b))
                {
                    best = Some(candidate);
                }
            }
        }
        best.map_or(Cow::Borrowed(iri), Cow::Owned)
    }

    /// The type mapping of the term that `iri` compacts to, if any.
    pub fn type_mapping_of(&self, iri: &str) -> Option<&str> {
        let term = self.reverse.get(iri)?;
        self.terms.get(term)?.type_mapping.as_deref()
    }
}

fn ends_with_gen_delim(iri: &str) -> bool {
    matches!(iri.chars().last(), Some(':' | '/' | '?' | '#' | '[' | ']' | '@'))
}

fn invalid_context(detail: impl Into<String>) -> NgsiError {
    NgsiError::bad_request(detail)
}

#[cfg(test)]
mod tests;
