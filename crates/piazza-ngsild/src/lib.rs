//! Pure NGSI-LD: the data model, JSON-LD term handling and the query
//! languages of ETSI GS CIM 009. No I/O, no async, and no panics on input:
//! every function here takes untrusted text or JSON and returns a `Result`.
//!
//! Layout:
//! - [`error`]: the spec's problem types.
//! - [`jsonld`]: @context processing, term expansion and compaction.
//! - [`entity`]: entities and attributes, parsed from the wire forms.
//! - [`update`]: the update semantics (append, update, merge, replace, delete).
//! - [`render`]: entities back to normalized, concise, keyValues or GeoJSON.
//! - [`notification`]: which change owes a subscription a notification, and its content.
//! - [`query`]: entity selection: ids, types, `q`, `scopeQ`, geo-queries, projection.
//! - [`time`]: DateTime handling.

pub mod entity;
pub mod error;
pub mod jsonld;
pub mod notification;
pub mod query;
pub mod render;
pub mod temporal;
pub mod time;
pub mod update;

pub use entity::{Attribute, AttributeKind, Entity, Members};
pub use error::{ErrorKind, NgsiError, Result};
pub use jsonld::ActiveContext;

/// A JSON string borrowed from the document being decoded, copied only when
/// it has escapes: for decoding stored documents without a `String` per
/// member name or timestamp.
#[derive(serde::Deserialize)]
pub(crate) struct BorrowedStr<'a>(#[serde(borrow)] pub(crate) std::borrow::Cow<'a, str>);
