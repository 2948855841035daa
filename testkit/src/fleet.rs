//! The router in front of three real cache nodes in front of a real S3 server (s3s-fs),
//! all on 127.0.0.1, shared by the router's integration tests.

use std::sync::Arc;
use std::time::Duration;

use lakecache_cache_node::config::Config;
use lakecache_cache_node::tier::disk::IoEngineChoice;
use lakecache_router::config::{FleetConfig, NodeConfig, RouterConfig};

use crate::*;

pub struct Fleet {
    pub _dir: tempfile::TempDir,
    pub origin: Origin,
    pub nodes: Vec<Option<Node>>,
    pub addrs: Vec<std::net::SocketAddr>,
    pub router_addr: std::net::SocketAddr,
    pub router: Arc<lakecache_router::server::RouterNode>,
    pub router_cfg: RouterConfig,
    pub _stop: tokio::sync::oneshot::Sender<()>,
}

/// Fleet settings for tests: 64 KiB pages (as the nodes' test config), fast health checks.
pub fn test_fleet_config() -> FleetConfig {
    FleetConfig {
        page_size: bytesize::ByteSize::kib(64),
        secret: FLEET_SECRET.into(),
        node_key: lakecache_cache_node::config::AccessKey {
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
        },
        node_admin_token: ADMIN_TOKEN.into(),
        health_interval: Duration::from_millis(100),
        health_timeout: Duration::from_millis(200),
        request_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

pub async fn fleet() -> Fleet {
    fleet_with(|_| {}).await
}

pub async fn fleet_with(adjust: impl FnOnce(&mut RouterConfig)) -> Fleet {
    fleet_custom(|_| {}, adjust).await
}

/// A fleet whose nodes' configs pass through `node` and the router's through `router`.
pub async fn fleet_custom(node: impl Fn(&mut Config), adjust: impl FnOnce(&mut RouterConfig)) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    std::fs::create_dir_all(origin.root.join("bkt")).unwrap();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut c = node_config(&origin, &dir.path().join(format!("node{i}")), IoEngineChoice::Auto);
        node(&mut c);
        nodes.push(Some(Node::start(c).await));
    }
    let mut cfg = RouterConfig::default();
    cfg.auth.keys = vec![lakecache_cache_node::config::AccessKey {
        access_key: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
    }];
    cfg.fleet = test_fleet_config();
    cfg.nodes = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| NodeConfig { id: format!("cache-{i}"), url: n.as_ref().unwrap().url(), weight: 1.0 })
        .collect();
    adjust(&mut cfg);
    let (router, router_addr, tx) = start_router(cfg.clone()).await;
    let addrs = nodes.iter().map(|n| n.as_ref().unwrap().addr).collect();
    Fleet { _dir: dir, origin, nodes, addrs, router_addr, router, router_cfg: cfg, _stop: tx }
}

/// A router serving on a free port until the returned sender is dropped.
pub async fn start_router(
    cfg: RouterConfig,
) -> (Arc<lakecache_router::server::RouterNode>, std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let router = lakecache_router::server::RouterNode::build(cfg).unwrap();
    router.fleet.adopt_node_rules().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router_addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let r2 = router.clone();
    tokio::spawn(lakecache_router::server::serve(listener, r2, async {
        let _ = rx.await;
    }));
    (router, router_addr, tx)
}

impl Fleet {
    pub fn client(&self) -> aws_sdk_s3::Client {
        client_for(&format!("http://{}", self.router_addr), ACCESS_KEY, SECRET_KEY)
    }
}
