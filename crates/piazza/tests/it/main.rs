//! Tests of the real `piazza` binary: start-up, shutdown, durability, several processes over PostgreSQL, CLI errors, the MQTT bridge, moving a data dir between backends.

mod cluster;
mod durability;
mod import;
mod migrate;
mod mqtt;
mod outbox;
mod postgres;
mod process;
