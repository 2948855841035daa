//! Every example config in config/ parses and validates, and the documented defaults are
//! the ones the code uses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lakecache_cache_node::Config;
use lakecache_common::config::{Validate, load_toml};

#[test]
fn every_config_file_parses_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.extension().is_some_and(|x| x == "toml") && name.starts_with("cache-node") {
            let cfg: Config = load_toml(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            n += 1;
        }
    }
    assert!(n >= 1, "no cache-node config found in {}", dir.display());
}

#[test]
fn documented_defaults_match_the_code() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/cache-node.toml");
    let file: Config = load_toml(&p).unwrap();
    let d = Config::default();
    assert_eq!(file.cache.page_size, d.cache.page_size);
    assert_eq!(file.cache.memory_capacity, d.cache.memory_capacity);
    assert_eq!(file.cache.max_fetch, d.cache.max_fetch);
    assert_eq!(file.cache.metadata_ttl, d.cache.metadata_ttl);
    assert_eq!(file.cache.origin_timeout, d.cache.origin_timeout);
    assert_eq!(file.cache.immutable, d.cache.immutable);
    assert_eq!(file.cache.never_cache, d.cache.never_cache);
    assert_eq!(file.disk.capacity, d.disk.capacity);
    assert_eq!(file.disk.queue_depth, d.disk.queue_depth);
    assert_eq!(file.pins.budget, d.pins.budget);
    assert_eq!(file.server.header_timeout, d.server.header_timeout);
    assert_eq!(file.server.body_timeout, d.server.body_timeout);
    assert_eq!(file.server.send_timeout, d.server.send_timeout);
    assert_eq!(file.server.max_connections, d.server.max_connections);
}

#[test]
fn unknown_keys_and_bad_values_are_refused() {
    let bad_key = "[cache]\npage_sise = \"1 MiB\"\n";
    assert!(lakecache_common::config::parse_toml::<Config>(bad_key, "t").is_err());
    let mut c: Config = lakecache_common::config::parse_toml(
        "[auth]\nanonymous = true\n[[origins]]\nbucket = \"*\"\nkind = \"local\"\nroot = \"/tmp\"\n[cache]\npage_size = \"5000 B\"\n",
        "t",
    )
    .unwrap();
    assert!(c.validate().unwrap_err().to_string().contains("page_size"));
    c.cache.page_size = bytesize::ByteSize::kib(64);
    c.validate().unwrap();
    c.origins.clear();
    assert!(c.validate().is_err());
}
