//! config/search-node.toml parses, validates, and documents the code's defaults.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lakecache_common::config::{Validate, load_toml, parse_toml};
use lakecache_search_node::config::SearchConfig;

#[test]
fn search_config_parses_validates_and_matches_defaults() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/search-node.toml");
    let cfg: SearchConfig = load_toml(&p).unwrap();
    cfg.validate().unwrap();
    let d = SearchConfig::default();
    assert_eq!(cfg.server.listen, d.server.listen);
    assert_eq!(cfg.server.request_timeout, d.server.request_timeout);
    assert_eq!(cfg.server.read_consistency_interval, d.server.read_consistency_interval);
    assert_eq!(cfg.server.max_body, d.server.max_body);
    assert_eq!(d.server.header_timeout, std::time::Duration::from_secs(60));
    assert_eq!(d.server.body_timeout, std::time::Duration::from_secs(60));
    assert_eq!(d.server.send_timeout, std::time::Duration::from_secs(60));
    assert_eq!(d.server.max_connections, 4096);
    assert_eq!(cfg.cache.index_cache, d.cache.index_cache);
    assert_eq!(cfg.cache.metadata_cache, d.cache.metadata_cache);
    assert_eq!(cfg.region, d.region);
    assert_eq!(cfg.limits.max_result_rows, d.limits.max_result_rows);
    assert_eq!(cfg.limits.max_result_bytes, d.limits.max_result_bytes);
    assert_eq!(cfg.limits.sql_memory, d.limits.sql_memory);
    assert_eq!(cfg.fleet.failover_attempts, d.fleet.failover_attempts);
    assert_eq!(cfg.nodes.len(), 2);
    assert_eq!(cfg.namespaces[0].bucket_prefix().unwrap(), ("lakecache-sample".to_string(), String::new()));
    // The start command's fleet: the cache nodes' page size.
    let node: lakecache_cache_node::config::Config =
        load_toml(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/cache-node.toml"))
            .unwrap();
    assert_eq!(cfg.fleet.page_size, node.cache.page_size);
}

#[test]
fn bad_search_configs_are_refused() {
    let ok = "[auth]\napi_keys = [\"k\"]\n[[namespaces]]\nuri = \"s3://b/p\"\n[fleet]\nsecret = \"a-fleet-secret-16\"\n[router]\nurl = \"http://127.0.0.1:9000\"\n";
    parse_toml::<SearchConfig>(ok, "t").unwrap().validate().unwrap();
    let refused = |text: &str, needle: &str| {
        let err = match parse_toml::<SearchConfig>(text, "t") {
            Ok(c) => c.validate().unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(needle), "{err} should mention {needle}");
    };
    refused(&ok.replace("[router]\nurl = \"http://127.0.0.1:9000\"\n", ""), "nodes");
    refused(&ok.replace("s3://b/p", "b/p"), "s3://");
    refused(&ok.replace("api_keys = [\"k\"]", "api_keys = []"), "api_keys");
    refused(&ok.replace("http://127.0.0.1:9000", "127.0.0.1:9000"), "router.url");
    // Through a router too the search node must learn the fleet's key rules: no secret, no start.
    refused(&ok.replace("[fleet]\nsecret = \"a-fleet-secret-16\"\n", ""), "fleet.secret");
    let tls = "[auth]\napi_keys = [\"k\"]\n[[namespaces]]\nuri = \"s3://b/p\"\n[fleet]\nsecret = \"a-fleet-secret-16\"\n[[nodes]]\nid = \"a\"\nurl = \"https://x:1\"\n";
    refused(tls, "expected http://host:port");
    refused(&format!("{ok}[[namespaces]]\nuri = \"s3://c\"\n"), "twice");
    refused(&format!("{ok}[cache]\nbogus = 1\n"), "bogus");
    refused(&format!("{ok}[limits]\nmax_result_rows = 0\n"), "limits.max_result_rows");
    refused(&format!("{ok}[limits]\nsql_memory = \"1 KiB\"\n"), "limits.sql_memory");
    refused(&format!("{ok}[limits]\nmax_result_bytes = \"1 KiB\"\n"), "limits.max_result_bytes");
}
