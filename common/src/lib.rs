//! What must agree between lakecache crates: page arithmetic, config loading helpers,
//! telemetry setup, the shutdown signal and the header names fleet members use between
//! themselves (`wire`). No HTTP framework and no lance here.

pub mod config;
pub mod page;
pub mod ring;
pub mod shutdown;
pub mod telemetry;
pub mod wire;
