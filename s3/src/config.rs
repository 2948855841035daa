//! The config sections every S3 server of the fleet has: `[server]` (listen address,
//! virtual hosts, region, connection limits), `[auth]` (SigV4 keys, anonymous access) and
//! `[admin]` (the admin API's token).

use std::net::SocketAddr;
use std::time::Duration;

use lakecache_common::config::ConfigError;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the S3 endpoint (also serves /healthz, /readyz, /metrics and the admin API).
    pub listen: SocketAddr,
    /// Base domains for virtual-host style requests (`bucket.<domain>`); path style always works.
    pub virtual_host_domains: Vec<String>,
    /// Region this endpoint reports (GetBucketLocation); clients sign with it.
    pub region: String,
    /// A connection must send a complete request head within this long after it opens or
    /// after its previous response; so it is also how long an idle keep-alive connection
    /// stays open.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Longest pause between two pieces of a request body: a stalled write (PutObject,
    /// UploadPart) is refused with 400 RequestTimeout and stores nothing.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Longest a response may wait for the client to take bytes.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Open connections at most on this listener; one more is answered 503 and closed.
    pub max_connections: usize,
}

impl ServerConfig {
    /// The connection limits must leave a server usable.
    pub fn validate_limits(&self) -> Result<(), ConfigError> {
        self.conn_limits().validate().map_err(ConfigError::Invalid)
    }

    pub fn conn_limits(&self) -> crate::listener::ConnLimits {
        crate::listener::ConnLimits {
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            send_timeout: self.send_timeout,
            max_connections: self.max_connections,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            virtual_host_domains: Vec::new(),
            region: "us-east-1".to_string(),
            header_timeout: crate::listener::ConnLimits::default().header_timeout,
            body_timeout: crate::listener::ConnLimits::default().body_timeout,
            send_timeout: crate::listener::ConnLimits::default().send_timeout,
            max_connections: crate::listener::ConnLimits::default().max_connections,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accept unsigned requests. Signed requests are still verified against `keys`.
    pub anonymous: bool,
    /// Access keys accepted for SigV4 (header and presigned URLs).
    pub keys: Vec<AccessKey>,
}

impl AuthConfig {
    /// Whether an unsigned request is let in: `anonymous`, or no keys at all (then
    /// nothing is checked; see `service::configure_s3`).
    pub fn allows_anonymous(&self) -> bool {
        self.anonymous || self.keys.is_empty()
    }
}

pub use lakecache_common::config::AccessKey;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token for `/_lakecache/admin/*`; the admin API is off when unset.
    pub token: Option<String>,
}
