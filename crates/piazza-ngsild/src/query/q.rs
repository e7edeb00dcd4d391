//! The NGSI-LD query language (clause 4.9). Placeholder until the parser lands.

use crate::entity::Entity;
use crate::error::{ErrorKind, NgsiError, Result};
use crate::jsonld::ActiveContext;

#[derive(Clone, Debug)]
pub struct Query;

impl Query {
    pub fn parse(_text: &str, _context: &ActiveContext) -> Result<Query> {
        Err(NgsiError::new(
            ErrorKind::OperationNotSupported,
            "q is not supported yet",
        ))
    }
    pub fn matches(&self, _entity: &Entity) -> bool {
        false
    }
}
