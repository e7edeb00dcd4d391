//! Geo-queries (clause 4.10). Placeholder until the evaluator lands.

use serde_json::Value;

use crate::entity::Entity;
use crate::error::{ErrorKind, NgsiError, Result};
use crate::jsonld::ActiveContext;

#[derive(Clone, Debug)]
pub struct GeoQuery;

impl GeoQuery {
    pub fn parse(
        _georel: &str,
        _geometry: &str,
        _coordinates: &Value,
        _geoproperty: Option<&str>,
        _context: &ActiveContext,
    ) -> Result<GeoQuery> {
        Err(NgsiError::new(
            ErrorKind::OperationNotSupported,
            "geo-queries are not supported yet",
        ))
    }
    pub fn from_json(_value: &Value, _context: &ActiveContext) -> Result<GeoQuery> {
        Err(NgsiError::new(ErrorKind::OperationNotSupported, "geo-queries are not supported yet"))
    }
    pub fn matches(&self, _entity: &Entity) -> bool {
        false
    }
}
