//! How fleet members (the router, search nodes) find and read pages on the cache nodes:
//! membership and health (`membership`), placement on the ring and page reads with
//! failover, hedging, replicas and a retry budget (`routing`), the node client that sorts
//! every failure by whose fault it is (`upstream`) over its own HTTP/1.1 connections
//! (`conn`), the metadata cache, `FleetStore` (the
//! fleet as an `object_store::ObjectStore`, `client`), pin and prewarm fan-out (`pins`),
//! and the SigV4 signer for requests to nodes (`sign`), and the I/O account of the work
//! reading (`account`). No S3 surface of its own.

pub mod account;
pub mod batch;
pub mod client;
pub mod config;
pub mod conn;
pub mod membership;
pub mod metrics;
pub mod pins;
pub mod routing;
pub mod sign;
pub mod upstream;
