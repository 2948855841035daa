//! The cache node as an operator sees it: authentication, presigned URLs, health and
//! metrics endpoints, the admin API and pinning, restart recovery and corrupted pages,
//! with both I/O engines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use lakecache_cache_node::tier::disk::IoEngineChoice;
use lakecache_testkit::*;

async fn setup_with(
    engine: IoEngineChoice,
    f: impl FnOnce(&mut lakecache_cache_node::Config),
) -> (tempfile::TempDir, Origin, Node) {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    std::fs::create_dir_all(origin.root.join("bkt")).unwrap();
    let mut cfg = node_config(&origin, &dir.path().join("node"), engine);
    f(&mut cfg);
    let node = Node::start(cfg).await;
    (dir, origin, node)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn s3_code(xml: &str) -> String {
    xml.split("<Code>").nth(1).and_then(|s| s.split("</Code>").next()).unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_presigned_urls() {
    let (_d, _origin, node) = setup_with(IoEngineChoice::Auto, |_| {}).await;
    let c = node.client();
    c.put_object()
        .bucket("bkt")
        .key("secret.txt")
        .body(ByteStream::from_static(b"top secret"))
        .send()
        .await
        .unwrap();

    let wrong_secret = client_for(&node.url(), ACCESS_KEY, "not-the-secret");
    let e = wrong_secret.get_object().bucket("bkt").key("secret.txt").send().await.unwrap_err();
    assert_eq!(err_code(&e), ("SignatureDoesNotMatch".to_string(), 403));
    let unknown = client_for(&node.url(), "nobody", "whatever");
    let e = unknown.get_object().bucket("bkt").key("secret.txt").send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 403);

    let anon = http().get(format!("{}/bkt/secret.txt", node.url())).send().await.unwrap();
    assert_eq!(anon.status(), 403);
    assert_eq!(s3_code(&anon.text().await.unwrap()), "AccessDenied");
    // Anonymous PUT must not reach the origin either.
    let anon_put = http().put(format!("{}/bkt/evil", node.url())).body("x").send().await.unwrap();
    assert_eq!(anon_put.status(), 403);

    let presigned = c
        .get_object()
        .bucket("bkt")
        .key("secret.txt")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    let r = http().get(presigned.uri()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), &b"top secret"[..]);
    let tampered = presigned.uri().replace("secret.txt", "secret.txt2");
    assert_eq!(http().get(tampered).send().await.unwrap().status(), 403);
    let presigned_put = c
        .put_object()
        .bucket("bkt")
        .key("via-presigned")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    let r = http().put(presigned_put.uri()).body("uploaded").send().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(
        body(c.get_object().bucket("bkt").key("via-presigned").send().await.unwrap()).await,
        b"uploaded"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_access_and_virtual_host_style_when_configured() {
    let (_d, origin, node) = setup_with(IoEngineChoice::Auto, |c| {
        c.auth.anonymous = true;
        c.server.virtual_host_domains = vec!["s3.lakecache.test".into()];
    })
    .await;
    origin.put_file("bkt", "open/file.txt", b"0123456789");
    let r = http()
        .get(format!("{}/bkt/open/file.txt", node.url()))
        .header("Range", "bytes=2-4")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 2-4/10");
    assert_eq!(r.bytes().await.unwrap(), &b"234"[..]);
    let r = http()
        .get(format!("{}/open/file.txt", node.url()))
        .header("Host", "bkt.s3.lakecache.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), &b"0123456789"[..]);
    // Signed requests are still checked.
    let e = client_for(&node.url(), ACCESS_KEY, "bad")
        .get_object()
        .bucket("bkt")
        .key("open/file.txt")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e).1, 403);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics() {
    let (_d, origin, node) = setup_with(IoEngineChoice::Auto, |_| {}).await;
    assert_eq!(http().get(format!("{}/healthz", node.url())).send().await.unwrap().status(), 200);
    assert_eq!(http().get(format!("{}/readyz", node.url())).send().await.unwrap().status(), 200);
    origin.put_file("bkt", "t.lance/data/m.lance", &pattern(11, 200_000));
    let c = node.client();
    for _ in 0..2 {
        body(c.get_object().bucket("bkt").key("t.lance/data/m.lance").send().await.unwrap()).await;
    }
    node.wait_disk_pages(4).await;
    let text = http().get(format!("{}/metrics", node.url())).send().await.unwrap().text().await.unwrap();
    for name in [
        "cachenode_cache_hits_total{tier=\"memory\"}",
        "cachenode_cache_misses_total{tier=\"memory\"}",
        "cachenode_cache_served_bytes_total{tier=\"origin\"}",
        "cachenode_origin_requests_total{op=\"get\"}",
        "cachenode_origin_received_bytes_total",
        "cachenode_origin_request_duration_milliseconds_bucket",
        "cachenode_pagestore_writes_total",
        "cachenode_pagestore_write_bytes_total",
        "cachenode_pagestore_used_bytes",
        "cachenode_pagestore_pinned_bytes",
        "cachenode_pagestore_io_engine{engine=",
        "cachenode_cache_inflight_requests",
        "cachenode_memory_used_bytes",
        "cachenode_memory_capacity_bytes",
        "cachenode_pagestore_write_duration_microseconds_bucket",
        "cachenode_s3_request_duration_milliseconds_bucket{method=\"GET\"",
        "cachenode_filesystem_avail_bytes{role=\"pagestore\"}",
        "cachenode_filesystem_size_bytes{role=\"multipart\"}",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
    // Histogram buckets follow the unit in the name: µs for the page store, ms elsewhere.
    let has_bucket = |metric: &str, le: &str| {
        text.lines()
            .any(|l| l.starts_with(&format!("{metric}_bucket")) && l.contains(&format!("le=\"{le}\"")))
    };
    assert!(has_bucket("cachenode_pagestore_write_duration_microseconds", "25"), "{text}");
    assert!(has_bucket("cachenode_origin_request_duration_milliseconds", "0.25"), "{text}");
    assert!(!has_bucket("cachenode_origin_request_duration_milliseconds", "102400"), "{text}");
    let free = text
        .lines()
        .find_map(|l| l.strip_prefix("cachenode_filesystem_avail_bytes{role=\"pagestore\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap();
    assert!(free > 0.0, "{text}");
    // Every name the node emits is documented, with the fleet's naming rule.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/METRICS.md")).unwrap();
    for l in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = l.split(['{', ' ']).next().unwrap();
        let base = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(base.starts_with("cachenode_"), "{name} does not follow cachenode_<subsystem>_<name>_<unit>");
        assert!(doc.contains(&format!("`{base}`")), "{base} is not documented in ops/METRICS.md");
    }
    node.stop().await;
}

async fn admin(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = http()
        .request(method, format!("{}/_lakecache/admin/{path}", node.url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinning_through_the_admin_api_survives_eviction_and_respects_the_budget() {
    let (_d, origin, node) = setup_with(IoEngineChoice::Auto, |c| {
        c.cache.memory_capacity = bytesize::ByteSize::kib(256); // memory holds 4 pages: reads must come from disk
        c.disk.capacity = bytesize::ByteSize::mib(8);
        c.pins.budget = bytesize::ByteSize::mib(2);
    })
    .await;
    let idx = pattern(12, 1024 * 1024);
    origin.put_file("bkt", "t.lance/_indices/i1/index.idx", &idx);
    origin.put_file("bkt", "t.lance/_indices/huge/index.idx", &pattern(13, 3 * 1024 * 1024));

    let r = http().get(format!("{}/_lakecache/admin/pins", node.url())).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (s, v) = admin(
        &node,
        reqwest::Method::POST,
        "pins",
        serde_json::json!({"bucket":"bkt","key":"t.lance/_indices/**"}),
    )
    .await;
    assert_eq!(s, 409, "4 MiB of indices over a 2 MiB budget: {v}");
    assert!(v["error"].as_str().unwrap().contains("budget"));
    let (s, v) = admin(
        &node,
        reqwest::Method::POST,
        "pins",
        serde_json::json!({"bucket":"bkt","key":"nope[","prewarm":false}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = admin(
        &node,
        reqwest::Method::POST,
        "pins",
        serde_json::json!({"bucket":"bkt","key":"t.lance/_indices/i1/*","prewarm":true}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["prewarmed"]["bytes"], 1024 * 1024);
    node.wait_disk_pages(16).await;
    for _ in 0..200 {
        if node.node.cache.pinned_bytes() >= 1024 * 1024 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, v) = admin(&node, reqwest::Method::GET, "pins", serde_json::Value::Null).await;
    assert_eq!(s, 200);
    assert_eq!(v["pinned_bytes"], 1024 * 1024, "{v}");

    // Push 20 MiB of other data through an 8 MiB disk: the pinned pages must stay.
    let c = node.client();
    for i in 0..20 {
        let key = format!("t.lance/data/filler-{i}.lance");
        origin.put_file("bkt", &key, &pattern(100 + i, 1024 * 1024));
        body(c.get_object().bucket("bkt").key(&key).send().await.unwrap()).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let g0 = origin.counts.gets();
    let got =
        body(c.get_object().bucket("bkt").key("t.lance/_indices/i1/index.idx").send().await.unwrap()).await;
    assert_eq!(got, idx);
    assert_eq!(origin.counts.gets(), g0, "pinned pages are served without the origin");

    let (s, _) = admin(
        &node,
        reqwest::Method::DELETE,
        "pins",
        serde_json::json!({"bucket":"bkt","key":"t.lance/_indices/i1/*"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(node.node.cache.pinned_bytes(), 0);
    let (s, _) = admin(
        &node,
        reqwest::Method::DELETE,
        "pins",
        serde_json::json!({"bucket":"bkt","key":"t.lance/_indices/i1/*"}),
    )
    .await;
    assert_eq!(s, 404);
    let (s, v) = admin(&node, reqwest::Method::GET, "stats", serde_json::Value::Null).await;
    assert_eq!(s, 200);
    assert!(v["disk"]["engine"].is_string());
    node.stop().await;
}

/// Restart with the same page file serves cached pages without an origin GET; a flipped
/// byte in the page file is detected and the page refetched, never served.
async fn restart_and_corruption(engine: IoEngineChoice) {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    let data = pattern(21, 640 * 1024); // 10 pages
    origin.put_file("bkt", "t.lance/data/r.lance", &data);
    let node_dir = dir.path().join("node");
    let node = Node::start(node_config(&origin, &node_dir, engine)).await;
    assert_eq!(
        body(node.client().get_object().bucket("bkt").key("t.lance/data/r.lance").send().await.unwrap())
            .await,
        data
    );
    node.wait_disk_pages(10).await;
    let expected_engine = match engine {
        IoEngineChoice::Pread => "pread",
        _ => "uring",
    };
    assert_eq!(node.node.cache.disk.as_ref().unwrap().engine_name(), expected_engine);
    node.stop().await;

    let node = Node::start(node_config(&origin, &node_dir, engine)).await;
    let g0 = origin.counts.gets();
    let out = node
        .client()
        .get_object()
        .bucket("bkt")
        .key("t.lance/data/r.lance")
        .range("bytes=1000-600000")
        .send()
        .await
        .unwrap();
    assert_eq!(body(out).await, &data[1000..=600000]);
    assert_eq!(origin.counts.gets(), g0, "after restart the pages come from disk");
    node.stop().await;

    // Flip one byte of page 3's data in the page file.
    let file = node_dir.join("pages.bin");
    let mut raw = std::fs::read(&file).unwrap();
    let needle = &data[3 * 65536..3 * 65536 + 64];
    let at = raw.windows(64).position(|w| w == needle).expect("page 3 is in the page file");
    raw[at + 100] ^= 0x55;
    std::fs::write(&file, &raw).unwrap();
    drop(raw);

    let node = Node::start(node_config(&origin, &node_dir, engine)).await;
    let g0 = origin.counts.gets();
    let got =
        body(node.client().get_object().bucket("bkt").key("t.lance/data/r.lance").send().await.unwrap())
            .await;
    assert!(got == data, "served bytes differ from the origin");
    assert_eq!(origin.counts.gets() - g0, 1, "only the corrupted page is refetched");
    let text = http().get(format!("{}/metrics", node.url())).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("cachenode_pagestore_checksum_failures_total"), "{text}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_corruption_with_pread() {
    restart_and_corruption(IoEngineChoice::Pread).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_corruption_with_io_uring() {
    restart_and_corruption(IoEngineChoice::Uring).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_rules_are_prewarmed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    let idx = pattern(50, 300_000);
    origin.put_file("bkt", "t.lance/_indices/a/part.idx", &idx);
    origin.put_file("bkt", "t.lance/data/not-pinned.lance", &pattern(51, 300_000));
    let mut cfg = node_config(&origin, &dir.path().join("node"), IoEngineChoice::Auto);
    cfg.pins.rules = vec![lakecache_cache_node::config::PinRule {
        bucket: "bkt".into(),
        key: "t.lance/_indices/**".into(),
    }];
    cfg.pins.prewarm_on_start = true;
    let node = Node::start(cfg).await;
    // Ready (/readyz) only once the pinned files are on disk: a rollout waits for a warm node.
    let http = reqwest::Client::new();
    let ready =
        || async { http.get(format!("{}/readyz", node.url())).send().await.unwrap().status().as_u16() };
    let mut became_ready = false;
    for _ in 0..500 {
        if ready().await == 200 {
            became_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(became_ready, "the node became ready after its prewarm");
    // Ready means the prewarm read everything; its disk writes may still be queued.
    let g_ready = origin.counts.gets();
    node.wait_disk_pages(5).await; // 300 000 bytes = 5 pages of 64 KiB
    for _ in 0..200 {
        if node.node.cache.pinned_bytes() == idx.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(origin.counts.gets(), g_ready, "nothing left to fetch once ready");
    assert_eq!(node.node.cache.pinned_bytes(), idx.len() as u64, "only the pinned index is prewarmed");
    let g0 = origin.counts.gets();
    assert_eq!(
        body(
            node.client().get_object().bucket("bkt").key("t.lance/_indices/a/part.idx").send().await.unwrap()
        )
        .await,
        idx
    );
    assert_eq!(origin.counts.gets(), g0);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_ttl_reuses_listings_until_a_write_through_the_node() {
    let (_d, origin, node) =
        setup_with(IoEngineChoice::Auto, |c| c.cache.list_ttl = Duration::from_secs(60)).await;
    let c = node.client();
    origin.put_file("bkt", "dir/a", b"a");
    let keys = |o: aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output| {
        o.contents().iter().filter_map(|o| o.key().map(String::from)).collect::<Vec<_>>()
    };
    assert_eq!(keys(c.list_objects_v2().bucket("bkt").prefix("dir/").send().await.unwrap()), ["dir/a"]);
    origin.put_file("bkt", "dir/b", b"b"); // behind the node's back: the listing is reused
    assert_eq!(keys(c.list_objects_v2().bucket("bkt").prefix("dir/").send().await.unwrap()), ["dir/a"]);
    c.put_object().bucket("bkt").key("dir/c").body(ByteStream::from_static(b"c")).send().await.unwrap();
    assert_eq!(
        keys(c.list_objects_v2().bucket("bkt").prefix("dir/").send().await.unwrap()),
        ["dir/a", "dir/b", "dir/c"]
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_object_releases_its_old_pinned_pages() {
    let (_d, origin, node) = setup_with(IoEngineChoice::Auto, |c| {
        c.pins.rules =
            vec![lakecache_cache_node::config::PinRule { bucket: "bkt".into(), key: "hot/**".into() }];
    })
    .await;
    let c = node.client();
    let v1 = pattern(95, 300_000);
    origin.put_file("bkt", "hot/obj.bin", &v1);
    assert_eq!(body(c.get_object().bucket("bkt").key("hot/obj.bin").send().await.unwrap()).await, v1);
    node.wait_disk_pages(5).await;
    let v2 = pattern(96, 100_000);
    origin.put_file("bkt", "hot/obj.bin", &v2); // behind the node's back
    tokio::time::sleep(Duration::from_millis(300)).await; // past metadata_ttl
    assert_eq!(body(c.get_object().bucket("bkt").key("hot/obj.bin").send().await.unwrap()).await, v2);
    for _ in 0..300 {
        if node.node.cache.pinned_bytes() == v2.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        node.node.cache.pinned_bytes(),
        v2.len() as u64,
        "the old version's pinned pages were released"
    );
    node.stop().await;
}

/// Metadata of a revalidated (not write-once) key is checked ahead of need: a read past half
/// the TTL is answered with what the node knows and starts the HEAD in the background, so a
/// read still inside the TTL already sees a change made at the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_revalidated_in_the_background_past_half_the_ttl() {
    let (_d, origin, node) = setup_with(IoEngineChoice::Auto, |c| {
        c.cache.metadata_ttl = Duration::from_millis(1600);
    })
    .await;
    let c = node.client();
    let get = || async { body(c.get_object().bucket("bkt").key("notes/a.txt").send().await.unwrap()).await };
    origin.put_file("bkt", "notes/a.txt", b"first");
    assert_eq!(get().await, b"first");
    let heads = origin.counts.heads();
    origin.put_file("bkt", "notes/a.txt", b"second, longer");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get().await, b"first", "inside half the TTL: no check");
    assert_eq!(origin.counts.heads(), heads);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // 1.0 s of 1.6 s: answered at once from what the node knows, the check starts...
    assert_eq!(get().await, b"first");
    tokio::time::sleep(Duration::from_millis(250)).await;
    // ...and at 1.25 s, still inside the TTL, the new version is served.
    assert!(origin.counts.heads() > heads);
    assert_eq!(get().await, b"second, longer");
    node.stop().await;
}
