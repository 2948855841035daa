//! Config loading helpers: a TOML file into a `serde` struct with unknown keys refused,
//! followed by the struct's own validation. Env and flag overrides are the binary's job.

use std::path::Path;

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// A SigV4 key pair (a node's accepted keys, the key fleet members sign with).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    pub access_key: String,
    pub secret_key: String,
}

/// A config struct that can check itself after loading.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Reads and parses `path`; the caller validates after applying overrides.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    parse_toml(&text, &path.display().to_string())
}

/// Parses TOML text; `origin` names the text in error messages.
pub fn parse_toml<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse { path: origin.to_string(), message: e.to_string() })
}
