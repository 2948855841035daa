//! What must agree between lakecache crates: page arithmetic, config loading helpers,
//! telemetry setup and the shutdown signal. No HTTP framework and no lance here.

pub mod config;
pub mod page;
pub mod ring;
pub mod shutdown;
pub mod telemetry;
