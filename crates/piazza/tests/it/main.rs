//! Tests of the real `piazza` binary: start-up, shutdown, durability, CLI errors.

mod durability;
mod import;
mod outbox;
mod process;
