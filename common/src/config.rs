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

/// Config field names whose values are secrets: `--check-config` shows them as `"<redacted>"`.
const SECRET_FIELDS: &[&str] = &[
    "secret",
    "secret_key",
    "secret_access_key",
    "session_token",
    "token",
    "admin_token",
    "node_admin_token",
    "api_key",
    "api_keys",
    "password",
];

/// A config's pretty `Debug` text (`{:#?}`) with the value of every secret field — a string,
/// an `Option` of one, a list of them, however nested — replaced by `"<redacted>"`, so a
/// checked config can be printed to a terminal or a CI log.
pub fn redacted_debug(cfg: &impl std::fmt::Debug) -> String {
    let text = format!("{cfg:#?}");
    let mut out = String::with_capacity(text.len());
    // Open brackets of the secret value being redacted; 0 when outside one.
    let mut depth: i64 = 0;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let starts_secret =
            depth == 0 && trimmed.split_once(": ").is_some_and(|(name, _)| SECRET_FIELDS.contains(&name));
        if starts_secret || depth > 0 {
            let (head, value) = if starts_secret {
                let at = line.len() - trimmed.len() + trimmed.find(": ").map_or(0, |i| i + 2);
                line.split_at(at)
            } else {
                ("", line)
            };
            // Brackets are counted outside string literals only.
            let value = redact_strings(value);
            out.push_str(head);
            out.push_str(&value);
            depth += value
                .chars()
                .map(|c| match c {
                    '(' | '[' | '{' => 1,
                    ')' | ']' | '}' => -1,
                    _ => 0,
                })
                .sum::<i64>();
            depth = depth.max(0);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// `text` with every `"..."` literal (Debug-escaped) replaced by `"<redacted>"`.
fn redact_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        out.push_str("\"<redacted>\"");
        let mut escaped = false;
        for c in chars.by_ref() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => break,
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[derive(Debug)]
    #[allow(dead_code)]
    struct Key {
        access_key: String,
        secret_key: String,
    }

    #[derive(Debug)]
    #[allow(dead_code)]
    struct Cfg {
        listen: String,
        secret: String,
        token: Option<String>,
        none: Option<String>,
        api_keys: Vec<String>,
        keys: Vec<Key>,
        name: String,
    }

    #[test]
    fn secrets_are_redacted_and_the_rest_kept() {
        let cfg = Cfg {
            listen: "127.0.0.1:9000".into(),
            secret: "fleet-s3cret \"quoted\" ( [".into(),
            token: Some("adm1n-token".into()),
            none: None,
            api_keys: vec!["k-one".into(), "k-two".into()],
            keys: vec![Key { access_key: "AKIDPUBLIC".into(), secret_key: "wJalrXUtnFEMI".into() }],
            name: "token: \"not-a-field\"".into(),
        };
        let text = redacted_debug(&cfg);
        for s in ["fleet-s3cret", "quoted", "adm1n-token", "k-one", "k-two", "wJalrXUtnFEMI"] {
            assert!(!text.contains(s), "{s} printed:\n{text}");
        }
        for s in ["127.0.0.1:9000", "AKIDPUBLIC", "not-a-field", "none: None"] {
            assert!(text.contains(s), "{s} missing:\n{text}");
        }
        assert_eq!(text.matches("<redacted>").count(), 5, "{text}");
    }
}
