//! One set of key rules for the whole fleet: a router that states none adopts what the
//! cache nodes apply (and treats keys by it); one that states others, nodes that disagree
//! among themselves, a page size other than the nodes', or a wrong fleet secret are refused
//! at start with a message that says what differs. The real router binary refuses to
//! start the same way.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_sdk_s3::primitives::ByteStream;
use lakecache_common::keys::KeyClass;
use lakecache_testkit::fleet::*;

fn custom_rules(c: &mut lakecache_cache_node::config::Config) {
    c.cache.immutable = vec!["**/*.frozen".into()];
    c.cache.never_cache = vec!["**/live.json".into()];
}

async fn adopt(
    f: &Fleet,
    adjust: impl FnOnce(&mut lakecache_router::config::RouterConfig),
) -> anyhow::Result<()> {
    let mut cfg = f.router_cfg.clone();
    cfg.fleet.startup_wait = std::time::Duration::from_secs(2);
    adjust(&mut cfg);
    let r = lakecache_router::server::RouterNode::build(cfg)?;
    r.fleet.adopt_node_rules().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_applies_the_nodes_rules_not_its_defaults() {
    let f = fleet_custom(custom_rules, |_| {}).await;
    let rules = f.router.fleet.meta.rules();
    assert_eq!(rules.classify("t/x.frozen"), KeyClass::Immutable);
    assert_eq!(rules.classify("t/live.json"), KeyClass::NeverCache);
    // A Lance default the nodes do not apply here.
    assert_eq!(rules.classify("t/_versions/1.manifest"), KeyClass::Revalidated);
    assert_eq!(rules.classify("t/data/a.lance"), KeyClass::Revalidated);

    // Behaviour follows: a never-cached key is read afresh after a change behind the fleet.
    let c = f.client();
    c.put_object()
        .bucket("bkt")
        .key("t/live.json")
        .body(ByteStream::from_static(b"one"))
        .send()
        .await
        .unwrap();
    let get = |k: &'static str| {
        let c = c.clone();
        async move {
            c.get_object()
                .bucket("bkt")
                .key(k)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes()
        }
    };
    assert_eq!(get("t/live.json").await, "one");
    f.origin.put_file("bkt", "t/live.json", b"two");
    assert_eq!(get("t/live.json").await, "two");

    // Stating the same rules (in another order) is accepted.
    adopt(&f, |c| {
        c.fleet.immutable = Some(vec!["**/*.frozen".into(), "**/*.frozen".into()]);
        c.fleet.never_cache = Some(vec!["**/live.json".into()]);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_or_page_size_other_than_the_nodes_are_refused() {
    let f = fleet_custom(custom_rules, |_| {}).await;
    let e = adopt(&f, |c| {
        c.fleet.immutable = Some(lakecache_common::keys::default_immutable());
        c.fleet.never_cache = Some(lakecache_common::keys::default_never_cache());
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("differ from the key rules cache node"), "{e}");
    assert!(e.contains("*.frozen"), "the message shows the nodes' rules: {e}");

    let e = adopt(&f, |c| c.fleet.page_size = bytesize::ByteSize::mib(1)).await.unwrap_err().to_string();
    assert!(e.contains("cache.page_size 65536 but fleet.page_size is 1048576"), "{e}");

    let e = adopt(&f, |c| c.fleet.secret = "another-fleet-secret".into()).await.unwrap_err().to_string();
    assert!(e.contains("refused") && e.contains("403"), "{e}");

    // The real binary: refuses to start, says why, and exits non-zero.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = f.router_cfg.clone();
    cfg.fleet.immutable = Some(vec!["**/*.other".into()]);
    cfg.fleet.never_cache = Some(vec![]);
    let nodes: String =
        cfg.nodes.iter().map(|n| format!("[[nodes]]\nid = \"{}\"\nurl = \"{}\"\n", n.id, n.url)).collect();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\nanonymous = true\n[fleet]\npage_size = \"64 KiB\"\nsecret = \"{}\"\nimmutable = [\"**/*.other\"]\nnever_cache = []\nstartup_wait = \"2s\"\n{nodes}",
        lakecache_testkit::FLEET_SECRET
    );
    let p = dir.path().join("router.toml");
    std::fs::write(&p, toml).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_router"))
        .arg("--config")
        .arg(&p)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("differ from the key rules cache node"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_different_rules_are_refused() {
    let f = fleet().await;
    // A fourth node with other rules joins the configured membership.
    let dir = tempfile::tempdir().unwrap();
    let mut c = lakecache_testkit::node_config(&f.origin, dir.path(), Default::default());
    custom_rules(&mut c);
    let odd = lakecache_testkit::Node::start(c).await;
    let e = adopt(&f, |c| {
        c.nodes.push(lakecache_router::config::NodeConfig { id: "odd".into(), url: odd.url(), weight: 1.0 })
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("apply different key rules"), "{e}");
    odd.stop().await;

    // With no node answering, a router does not start on rules of its own.
    let e = adopt(&f, |c| {
        c.nodes = vec![lakecache_router::config::NodeConfig {
            id: "gone".into(),
            url: "http://127.0.0.1:9".into(),
            weight: 1.0,
        }]
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("no cache node told its key rules"), "{e}");
}

/// Two nodes outside the fleet's membership: one with other key rules, one with the fleet's.
async fn odd_and_same(
    f: &Fleet,
    dir: &std::path::Path,
) -> (lakecache_testkit::Node, lakecache_testkit::Node) {
    let mut c = lakecache_testkit::node_config(&f.origin, &dir.join("odd"), Default::default());
    custom_rules(&mut c);
    let odd = lakecache_testkit::Node::start(c).await;
    let same = lakecache_testkit::Node::start(lakecache_testkit::node_config(
        &f.origin,
        &dir.join("same"),
        Default::default(),
    ))
    .await;
    (odd, same)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_router_refuses_a_new_node_with_other_rules() {
    let f = fleet_with(|cfg| cfg.admin.token = Some(lakecache_testkit::ADMIN_TOKEN.into())).await;
    let dir = tempfile::tempdir().unwrap();
    let (odd, same) = odd_and_same(&f, dir.path()).await;
    let put = |extra: Vec<(String, String)>| {
        let mut nodes: Vec<serde_json::Value> = f
            .router_cfg
            .nodes
            .iter()
            .map(|n| serde_json::json!({"id": n.id, "url": n.url, "weight": 1.0}))
            .collect();
        for (id, url) in extra {
            nodes.push(serde_json::json!({"id": id, "url": url, "weight": 1.0}));
        }
        let addr = f.router_addr;
        async move {
            let r = reqwest::Client::new()
                .put(format!("http://{addr}/_lakecache/admin/nodes"))
                .bearer_auth(lakecache_testkit::ADMIN_TOKEN)
                .json(&nodes)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = put(vec![("odd".into(), odd.url())]).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("cache node odd applies other key rules"), "{body}");
    assert_eq!(f.router.fleet.members().len(), 3, "the membership is unchanged");
    // A node with the fleet's rules joins; one that cannot be reached joins unchecked.
    let (status, body) =
        put(vec![("same".into(), same.url()), ("later".into(), "http://127.0.0.1:9".into())]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nodes"], 5);
    assert_eq!(body["unchecked"], serde_json::json!(["later"]));
    odd.stop().await;
    same.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_reload_refuses_a_node_with_other_rules() {
    let f = fleet().await;
    let dir = tempfile::tempdir().unwrap();
    let (odd, same) = odd_and_same(&f, dir.path()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("router.toml");
    let write = |extra: &[(&str, String)]| {
        let mut nodes: Vec<(String, String)> =
            f.router_cfg.nodes.iter().map(|n| (n.id.clone(), n.url.clone())).collect();
        nodes.extend(extra.iter().map(|(id, url)| (id.to_string(), url.clone())));
        let nodes: String =
            nodes.iter().map(|(id, url)| format!("[[nodes]]\nid = \"{id}\"\nurl = \"{url}\"\n")).collect();
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[auth]\nanonymous = true\n[admin]\ntoken = \"{}\"\n[fleet]\npage_size = \"64 KiB\"\nsecret = \"{}\"\nstartup_wait = \"5s\"\n{nodes}",
            lakecache_testkit::ADMIN_TOKEN,
            lakecache_testkit::FLEET_SECRET
        );
        std::fs::write(&config, toml).unwrap();
    };
    write(&[]);
    let log = dir.path().join("router.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut router = tokio::process::Command::new(env!("CARGO_BIN_EXE_router"))
        .arg("--config")
        .arg(&config)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let members = || async {
        let r = http
            .get(format!("http://127.0.0.1:{port}/_lakecache/admin/nodes"))
            .bearer_auth(lakecache_testkit::ADMIN_TOKEN)
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        Some(v["nodes"].as_array()?.len())
    };
    // Whether the wait is over, from the membership size and the router's log so far.
    type Done = Box<dyn Fn(Option<usize>, &str) -> bool + Send>;
    let until = |what: &'static str, done: Done| {
        let log = log.clone();
        let members = &members;
        async move {
            for _ in 0..100 {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if done(members().await, &text) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("{what}: not within 10 s; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
    };
    until("router up", Box::new(|n, _| n == Some(3))).await;
    let hup = || {
        let pid = router.id().unwrap().to_string();
        async move {
            assert!(
                tokio::process::Command::new("kill").args(["-HUP", &pid]).status().await.unwrap().success()
            );
        }
    };
    write(&[("odd", odd.url())]);
    hup().await;
    until(
        "refused reload",
        Box::new(|n, log| n == Some(3) && log.contains("cache node odd applies other key rules")),
    )
    .await;
    write(&[("same", same.url())]);
    hup().await;
    until("accepted reload", Box::new(|n, _| n == Some(4))).await;
    router.kill().await.unwrap();
    odd.stop().await;
    same.stop().await;
}

/// A member behind the router (a search node in router mode) learns the fleet's rules from
/// the router, which answers with what it adopted from the nodes, in the nodes' own shape;
/// only to a request signed with the fleet secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_tells_members_behind_it_the_rules_it_adopted() {
    use lakecache_common::wire::{FLEET_AUTH, FleetKey, RULES_PATH};
    let f = fleet_custom(custom_rules, |_| {}).await;
    let url = format!("http://{}", f.router_addr);
    let secret = f.router_cfg.fleet.secret.clone();
    let timeout = std::time::Duration::from_secs(5);
    let told = lakecache_fleet::upstream::fetch_rules(&url, &secret, timeout).await.unwrap();
    assert_eq!(told.page_size, f.router_cfg.fleet.page_size.as_u64());
    assert_eq!(told.rules.immutable, vec!["**/*.frozen".to_string()]);
    assert_eq!(told.rules.never_cache, vec!["**/live.json".to_string()]);
    let rules =
        lakecache_fleet::membership::agreed_rules(&f.router_cfg.fleet, &[("router".into(), told)]).unwrap();
    assert_eq!(rules.classify("t/live.json"), KeyClass::NeverCache);

    // A member stating other rules than the router's is refused, saying what differs.
    let mut other = f.router_cfg.fleet.clone();
    other.immutable = Some(vec!["**".into()]);
    other.never_cache = Some(vec![]);
    let told = lakecache_fleet::upstream::fetch_rules(&url, &secret, timeout).await.unwrap();
    let Err(e) = lakecache_fleet::membership::agreed_rules(&other, &[("router".into(), told)]) else {
        panic!("other rules were taken");
    };
    assert!(e.to_string().contains("differ from the key rules"), "{e}");

    let wrong =
        lakecache_fleet::upstream::fetch_rules(&url, "not-the-fleet-secret", timeout).await.unwrap_err();
    assert_eq!(wrong.status(), Some(http::StatusCode::FORBIDDEN), "{wrong}");
    let http = reqwest::Client::new();
    let missing = http.get(format!("{url}{RULES_PATH}")).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let stale = FleetKey::new(&secret).signature("GET", RULES_PATH, 1, "", "");
    let old = http
        .get(format!("{url}{RULES_PATH}"))
        .header(FLEET_AUTH, format!("v1 1 {stale}"))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 403, "a signature from 1970 has expired");
}
