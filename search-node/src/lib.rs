//! The search node: LanceDB-protocol search over Lance tables read through the fleet.
//!
//! Not built yet — see the search-node issue. It will be the only crate that depends on
//! lance, so that the cache node and router stay quick to build.
