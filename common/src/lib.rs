//! What must agree between lakecache crates: page arithmetic, config loading helpers,
//! telemetry setup and the metrics recorder, constant-time secret comparison, object identity and attributes, the shutdown signal and the header names fleet members use between
//! themselves (`wire`). No HTTP framework and no lance here.

pub mod auth;
pub mod config;
pub mod keys;
pub mod metrics;
pub mod object;
pub mod page;
pub mod percent;
pub mod ring;
pub mod shutdown;
pub mod telemetry;
pub mod wire;
