//! The router: consistent-hash routing of S3 page reads over the cache fleet.
//!
//! Not built yet — see the router issue. The crate exists so the workspace has the layout
//! the design describes; it deliberately exports nothing.
