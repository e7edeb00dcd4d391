//! Integration tests: the real server on an ephemeral port, spoken to over
//! HTTP. One server per test binary; every test uses its own tenant, so the
//! tests also exercise tenant isolation all the time.

mod bad_input;
mod batch;
mod contexts;
mod entities;
mod mqtt;
mod notifications;
mod query;
mod subscriptions;
mod support;
mod temporal;
mod tenancy;
