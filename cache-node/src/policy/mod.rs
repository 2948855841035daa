//! What the cache does with a key: how its identity is checked (the fleet's key rules,
//! `lakecache_common::keys`, from `[cache]`) and whether it is pinned. Owns the pin rules (config + admin API, persisted
//! to a state file); does not own pages or the pinned-bytes accounting (the disk tier does).

use std::path::{Path, PathBuf};

use globset::GlobMatcher;
use parking_lot::RwLock;

use crate::config::{CacheConfig, PinRule};

pub use lakecache_common::keys::{KeyClass, KeyRules, compile_glob};

/// The key rules a node's `[cache]` section configures.
pub fn key_rules(cfg: &CacheConfig) -> Result<KeyRules, String> {
    KeyRules::new(&cfg.immutable, &cfg.never_cache)
}

struct CompiledRule {
    rule: PinRule,
    bucket: GlobMatcher,
    key: GlobMatcher,
    /// Config rules cannot be removed through the admin API.
    from_config: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{0}")]
    InvalidRule(String),
    #[error("rule is set in the config file and cannot be removed through the admin API")]
    FromConfig,
    #[error("no such pin rule")]
    NotFound,
    #[error("cannot save pin rules to {path}: {source}")]
    Persist { path: String, source: std::io::Error },
}

/// The pin rules in force.
pub struct PinRules {
    rules: RwLock<Vec<CompiledRule>>,
    state_file: PathBuf,
}

impl PinRules {
    /// Config rules plus the rules saved by the admin API in `state_file` (if it exists).
    pub fn load(config_rules: &[PinRule], state_file: &Path) -> Result<Self, PinError> {
        let mut rules = Vec::new();
        for r in config_rules {
            rules.push(compile_rule(r.clone(), true)?);
        }
        if let Ok(text) = std::fs::read_to_string(state_file) {
            let saved: Vec<PinRule> = serde_json::from_str(&text)
                .map_err(|e| PinError::InvalidRule(format!("{}: {e}", state_file.display())))?;
            for r in saved {
                if !rules.iter().any(|c| c.rule == r) {
                    rules.push(compile_rule(r, false)?);
                }
            }
        }
        metrics::gauge!(crate::metrics::PIN_RULES).set(rules.len() as f64);
        Ok(Self { rules: RwLock::new(rules), state_file: state_file.to_path_buf() })
    }

    pub fn is_pinned(&self, bucket: &str, key: &str) -> bool {
        self.rules.read().iter().any(|r| r.bucket.is_match(bucket) && r.key.is_match(key))
    }

    /// The rules, each with whether it came from the config file.
    pub fn list(&self) -> Vec<(PinRule, bool)> {
        self.rules.read().iter().map(|r| (r.rule.clone(), r.from_config)).collect()
    }

    /// Checks a rule without adding it.
    pub fn check(rule: &PinRule) -> Result<(), PinError> {
        compile_rule(rule.clone(), false).map(|_| ())
    }

    /// Adds a rule (no-op if present) and saves the admin rules.
    pub fn add(&self, rule: PinRule) -> Result<bool, PinError> {
        let compiled = compile_rule(rule, false)?;
        let mut rules = self.rules.write();
        if rules.iter().any(|c| c.rule == compiled.rule) {
            return Ok(false);
        }
        rules.push(compiled);
        self.persist(&rules)?;
        metrics::gauge!(crate::metrics::PIN_RULES).set(rules.len() as f64);
        Ok(true)
    }

    pub fn remove(&self, rule: &PinRule) -> Result<(), PinError> {
        let mut rules = self.rules.write();
        let pos = rules.iter().position(|c| &c.rule == rule).ok_or(PinError::NotFound)?;
        if rules[pos].from_config {
            return Err(PinError::FromConfig);
        }
        rules.remove(pos);
        self.persist(&rules)?;
        metrics::gauge!(crate::metrics::PIN_RULES).set(rules.len() as f64);
        Ok(())
    }

    fn persist(&self, rules: &[CompiledRule]) -> Result<(), PinError> {
        let admin: Vec<&PinRule> = rules.iter().filter(|r| !r.from_config).map(|r| &r.rule).collect();
        let err = |source| PinError::Persist { path: self.state_file.display().to_string(), source };
        if let Some(dir) = self.state_file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let text = serde_json::to_string_pretty(&admin).unwrap_or_else(|_| "[]".to_string());
        // Write-then-rename so a crash never leaves half a file.
        let tmp = self.state_file.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, &self.state_file).map_err(err)
    }
}

fn compile_rule(rule: PinRule, from_config: bool) -> Result<CompiledRule, PinError> {
    if rule.bucket.is_empty() || rule.key.is_empty() {
        return Err(PinError::InvalidRule("bucket and key globs must not be empty".into()));
    }
    let bucket = compile_glob(&rule.bucket).map_err(PinError::InvalidRule)?;
    let key = compile_glob(&rule.key).map_err(PinError::InvalidRule)?;
    Ok(CompiledRule { rule, bucket, key, from_config })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_rules_persist_and_protect_config_rules() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("pins.json");
        let cfg_rule = PinRule { bucket: "*".into(), key: "**/_indices/**".into() };
        let pins = PinRules::load(std::slice::from_ref(&cfg_rule), &state).unwrap();
        assert!(pins.is_pinned("b", "t.lance/_indices/x/part.idx"));
        assert!(!pins.is_pinned("b", "t.lance/data/x.lance"));
        let admin_rule = PinRule { bucket: "b".into(), key: "t.lance/data/*".into() };
        assert!(pins.add(admin_rule.clone()).unwrap());
        assert!(!pins.add(admin_rule.clone()).unwrap());
        assert!(pins.is_pinned("b", "t.lance/data/x.lance"));
        assert!(!pins.is_pinned("other", "t.lance/data/x.lance"));
        assert!(matches!(pins.remove(&cfg_rule), Err(PinError::FromConfig)));

        let reloaded = PinRules::load(std::slice::from_ref(&cfg_rule), &state).unwrap();
        assert!(reloaded.is_pinned("b", "t.lance/data/x.lance"));
        reloaded.remove(&admin_rule).unwrap();
        let again = PinRules::load(&[cfg_rule], &state).unwrap();
        assert!(!again.is_pinned("b", "t.lance/data/x.lance"));
        assert!(matches!(
            PinRules::check(&PinRule { bucket: "[".into(), key: "x".into() }),
            Err(PinError::InvalidRule(_))
        ));
    }
}
