//! The router's configuration (`config/router.toml` documents every key).

use lakecache_common::config::{ConfigError, Validate};
pub use lakecache_fleet::config::{FleetConfig, NodeConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// The same keys as a cache node's [server].
    pub server: lakecache_s3::config::ServerConfig,
    pub auth: lakecache_s3::config::AuthConfig,
    /// Bearer token of the router's admin API (`/_lakecache/admin/nodes`); off when unset.
    pub admin: lakecache_s3::config::AdminConfig,
    pub fleet: FleetConfig,
    pub nodes: Vec<NodeConfig>,
}

impl Validate for RouterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate_limits()?;
        if self.auth.keys.is_empty() && !self.auth.anonymous {
            return Err(ConfigError::Invalid("auth: no access keys and anonymous access off".into()));
        }
        self.fleet.validate_with(&self.nodes)
    }
}
