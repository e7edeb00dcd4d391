//! Tests of the real `piazza` binary: start-up, shutdown, durability, several processes over PostgreSQL, CLI errors, the MQTT bridge.

mod cluster;
mod durability;
mod import;
mod mqtt;
mod outbox;
mod postgres;
mod process;
