//! config/router.toml parses, validates, and documents the code's defaults.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lakecache_common::config::{Validate, load_toml, parse_toml};
use lakecache_router::config::RouterConfig;

#[test]
fn router_config_parses_validates_and_matches_defaults() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/router.toml");
    let cfg: RouterConfig = load_toml(&p).unwrap();
    cfg.validate().unwrap();
    let d = RouterConfig::default();
    assert_eq!(cfg.fleet.page_size, d.fleet.page_size);
    assert_eq!(cfg.fleet.failover_attempts, d.fleet.failover_attempts);
    assert_eq!(cfg.fleet.health_interval, d.fleet.health_interval);
    assert_eq!(cfg.fleet.fail_threshold, d.fleet.fail_threshold);
    assert_eq!(cfg.fleet.replicas, d.fleet.replicas);
    assert_eq!(cfg.fleet.replicate_after_reads, d.fleet.replicate_after_reads);
    assert_eq!(cfg.fleet.replicate, d.fleet.replicate);
    assert_eq!(cfg.fleet.hedge_after, d.fleet.hedge_after);
    assert_eq!(cfg.fleet.retry_budget_percent, d.fleet.retry_budget_percent);
    assert_eq!(cfg.fleet.retry_budget_min, d.fleet.retry_budget_min);
    assert_eq!(cfg.fleet.request_timeout, d.fleet.request_timeout);
    assert_eq!(cfg.server.header_timeout, d.server.header_timeout);
    assert_eq!(cfg.server.body_timeout, d.server.body_timeout);
    assert_eq!(cfg.server.send_timeout, d.server.send_timeout);
    assert_eq!(cfg.server.max_connections, d.server.max_connections);
    assert_eq!(cfg.nodes.len(), 2);
}

#[test]
fn bad_router_configs_are_refused() {
    let base = "[auth]\nanonymous = true\n[fleet]\nsecret = \"a-fleet-secret-16\"\n";
    let dup = format!(
        "{base}[[nodes]]\nid = \"a\"\nurl = \"http://x:1\"\n[[nodes]]\nid = \"a\"\nurl = \"http://y:1\"\n"
    );
    let c: RouterConfig = parse_toml(&dup, "t").unwrap();
    assert!(c.validate().unwrap_err().to_string().contains("twice"));
    let bad_url = format!("{base}[[nodes]]\nid = \"a\"\nurl = \"x:1\"\n");
    assert!(parse_toml::<RouterConfig>(&bad_url, "t").unwrap().validate().is_err());
    // The page protocol has no TLS: an https node is refused at start, not at the first read.
    let tls = format!("{base}[[nodes]]\nid = \"a\"\nurl = \"https://x:1\"\n");
    let e = parse_toml::<RouterConfig>(&tls, "t").unwrap().validate().unwrap_err().to_string();
    assert!(e.contains("expected http://host:port"), "{e}");
    let no_secret: RouterConfig =
        parse_toml("[auth]\nanonymous = true\n[[nodes]]\nid = \"a\"\nurl = \"http://x:1\"\n", "t").unwrap();
    assert!(no_secret.validate().unwrap_err().to_string().contains("fleet.secret"));
    let no_nodes: RouterConfig = parse_toml(base, "t").unwrap();
    assert!(no_nodes.validate().is_err());
    assert!(parse_toml::<RouterConfig>("[fleet]\nunknown = 1\n", "t").is_err());
}
