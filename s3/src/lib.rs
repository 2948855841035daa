//! The S3 protocol surface shared by the cache node and the router (and the accept loop the
//! search node runs too): connection handling with limits (`listener`) and its HTTP/1.1 fast
//! path for bodiless reads (`fast`), what a request
//! names (`request`), conditional requests (`conditional`), answers built outside s3s
//! (`response`), s3s auth and host setup (`service`), and the `[server]`, `[auth]`,
//! `[admin]` config sections. It does no caching and knows no fleet.

pub mod conditional;
pub mod config;
pub mod fast;
pub mod listener;
pub mod request;
pub mod response;
pub mod service;
