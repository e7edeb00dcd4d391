//! The HTTP integration suite (`tests/it`) on PostgreSQL: the same test
//! files, compiled a second time; `support` sees this binary's name and
//! starts its server on a fresh database.

#[path = "it/main.rs"]
mod it;

// The suite's files name their helpers `crate::support`.
use it::support;
