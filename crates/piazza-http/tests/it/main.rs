//! Integration tests: the real server on an ephemeral port, spoken to over
//! HTTP. One server per test binary; every test uses its own tenant, so the
//! tests also exercise tenant isolation all the time.
//!
//! The same files are a second test binary, `it_postgres`
//! (`tests/it_postgres.rs`), whose server runs on PostgreSQL: one suite,
//! both backends (see `support::Backend`).

mod bad_input;
mod batch;
mod contexts;
mod entities;
mod mqtt;
mod notifications;
mod query;
mod subscriptions;
pub(crate) mod support;
mod temporal;
mod tenancy;
