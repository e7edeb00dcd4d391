//! The scope query language (clause 4.19). Placeholder until the parser lands.

use crate::error::{ErrorKind, NgsiError, Result};

#[derive(Clone, Debug)]
pub struct ScopeQuery;

impl ScopeQuery {
    pub fn parse(_text: &str) -> Result<ScopeQuery> {
        Err(NgsiError::new(
            ErrorKind::OperationNotSupported,
            "scopeQ is not supported yet",
        ))
    }
    pub fn matches(&self, _scopes: &[String]) -> bool {
        false
    }
}
