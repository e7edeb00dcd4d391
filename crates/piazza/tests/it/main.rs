//! Tests of the real `piazza` binary: start-up, shutdown, durability, CLI errors, the MQTT bridge.

mod durability;
mod import;
mod mqtt;
mod outbox;
mod postgres;
mod process;
