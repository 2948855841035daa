//! The internal page protocol against a real node over a real S3 origin (s3s-fs): fleet
//! credentials (missing, wrong, expired, none configured) are refused with 401/403 and
//! counted; several ranges come back in one answer, byte-exact, with the object's metadata
//! in headers; a read that names a version gets that version's bytes or 412 — never
//! another version's; the separate `[fleet] listen` listener serves it too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lakecache_common::wire;
use lakecache_testkit::*;

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

struct Ask<'a> {
    method: &'a str,
    ranges: &'a str,
    version: &'a str,
    secret: Option<&'a str>,
    budget: Option<&'a str>,
}

impl Default for Ask<'_> {
    fn default() -> Self {
        Ask { method: "GET", ranges: "", version: "", secret: Some(FLEET_SECRET), budget: None }
    }
}

async fn ask(base: &str, key: &str, a: Ask<'_>) -> reqwest::Response {
    let path = format!("{}bkt/{key}", wire::PAGE_PATH);
    let method = reqwest::Method::from_bytes(a.method.as_bytes()).unwrap();
    let mut r = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(s) = a.secret {
        r = r.header(
            wire::FLEET_AUTH,
            wire::FleetKey::new(s).auth_value(a.method, &path, a.ranges, a.version),
        );
    }
    if !a.ranges.is_empty() {
        r = r.header(wire::RANGES, a.ranges);
    }
    if !a.version.is_empty() {
        r = r.header(wire::READ_VERSION, a.version);
    }
    if let Some(b) = a.budget {
        r = r.header(wire::ORIGIN_BUDGET, b);
    }
    r.send().await.unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

async fn metric(base: &str, line_prefix: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no {line_prefix} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fleet_credentials_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    origin.put_file("bkt", "obj", &data(1000, 1));
    let node = Node::start(node_config(&origin, &dir.path().join("n"), Default::default())).await;
    let base = node.url();
    let refused = |reason: &str| format!("cachenode_fleet_auth_refused_total{{reason=\"{reason}\"}} ");

    let ok = ask(&base, "obj", Ask::default()).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.bytes().await.unwrap(), data(1000, 1));

    let missing = ask(&base, "obj", Ask { secret: None, ..Default::default() }).await;
    assert_eq!(missing.status(), 401);
    assert!(missing.text().await.unwrap().contains("x-lakecache-fleet-auth"));

    let wrong = ask(&base, "obj", Ask { secret: Some("not-the-fleet-secret"), ..Default::default() }).await;
    assert_eq!(wrong.status(), 403);
    assert_eq!(header(&wrong, wire::ERROR_CODE), "SignatureDoesNotMatch");
    assert!(wrong.bytes().await.unwrap().len() < 100, "no object bytes");

    // A signature from 10 minutes ago, otherwise right.
    let path = format!("{}bkt/obj", wire::PAGE_PATH);
    let old = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 600;
    let sig = wire::FleetKey::new(FLEET_SECRET).signature("GET", &path, old, "", "");
    let expired = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header(wire::FLEET_AUTH, format!("v1 {old} {sig}"))
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 403);
    assert_eq!(header(&expired, wire::ERROR_CODE), "RequestTimeTooSkewed");

    // A signature for other ranges than those sent.
    let path_sig = wire::FleetKey::new(FLEET_SECRET).auth_value("GET", &path, "0-9", "");
    let swapped = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header(wire::FLEET_AUTH, path_sig)
        .header(wire::RANGES, "0-999")
        .send()
        .await
        .unwrap();
    assert_eq!(swapped.status(), 403);

    assert_eq!(metric(&base, &refused("missing")).await, 1.0);
    assert_eq!(metric(&base, &refused("wrong")).await, 2.0);
    assert_eq!(metric(&base, &refused("expired")).await, 1.0);
    // The S3 port still speaks SigV4 only: the fleet secret is no S3 credential.
    let s3 = node.client().get_object().bucket("bkt").key("obj").send().await.unwrap();
    assert_eq!(s3.content_length(), Some(1000));
    node.stop().await;

    // A node without a fleet secret refuses every internal request.
    let mut c = node_config(&origin, &dir.path().join("n2"), Default::default());
    c.fleet.secret = None;
    let off = Node::start(c).await;
    let r = ask(&off.url(), "obj", Ask::default()).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("fleet.secret"));
    assert_eq!(metric(&off.url(), &refused("off")).await, 1.0);
    off.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ranges_come_back_in_one_answer_with_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    let body = data(300_000, 7);
    origin.put_file("bkt", "a/b.lance", &body);
    let node = Node::start(node_config(&origin, &dir.path().join("n"), Default::default())).await;
    let base = node.url();

    // Pages of 64 KiB: ranges inside one page, across pages, repeated, out of order.
    let r = ask(
        &base,
        "a/b.lance",
        Ask { ranges: "0-4095,65530-131080,10-19,299990-299999,10-19", ..Default::default() },
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, wire::OBJECT_SIZE), "300000");
    let version = header(&r, wire::OBJECT_VERSION);
    assert!(!version.is_empty());
    assert_eq!(header(&r, "etag").trim_matches('"'), version);
    assert!(!header(&r, "last-modified").is_empty());
    let mut want = Vec::new();
    for (a, b) in [(0, 4096), (65530, 131081), (10, 20), (299990, 300000), (10, 20)] {
        want.extend_from_slice(&body[a..b]);
    }
    assert_eq!(header(&r, "content-length"), want.len().to_string());
    assert_eq!(r.bytes().await.unwrap(), want);

    // HEAD: metadata only.
    let h = ask(&base, "a/b.lance", Ask { method: "HEAD", ..Default::default() }).await;
    assert_eq!(h.status(), 200);
    assert_eq!(header(&h, wire::OBJECT_SIZE), "300000");

    // A range past the end is cut at it, as S3 cuts a Range.
    let cut = ask(&base, "a/b.lance", Ask { ranges: "299990-400000", ..Default::default() }).await;
    assert_eq!(cut.status(), 200);
    assert_eq!(header(&cut, "content-length"), "10");
    assert_eq!(cut.bytes().await.unwrap(), body[299990..]);

    // Bad requests are the reader's: 416 from the end on, 400 for a malformed or too long
    // list, 404 for a missing key — with the S3 code in a header.
    let past = ask(&base, "a/b.lance", Ask { ranges: "0-9,300000-300001", ..Default::default() }).await;
    assert_eq!(past.status(), 416);
    assert_eq!(header(&past, wire::ERROR_CODE), "InvalidRange");
    for bad in ["5-2", "x", &vec!["0-0"; wire::MAX_RANGES + 1].join(",")] {
        let r = ask(&base, "a/b.lance", Ask { ranges: bad, ..Default::default() }).await;
        assert_eq!(r.status(), 400, "{bad}");
    }
    let missing = ask(&base, "nope", Ask::default()).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(header(&missing, wire::ERROR_CODE), "NoSuchKey");
    assert!(header(&missing, wire::ERROR_SOURCE).is_empty(), "a missing key is nobody's fault");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_version_gets_its_own_bytes_or_412() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    let v1 = data(100_000, 1);
    origin.put_file("bkt", "ptr.json", &v1);
    let mut c = node_config(&origin, &dir.path().join("n"), Default::default());
    c.cache.metadata_ttl = std::time::Duration::from_millis(100);
    let node = Node::start(c).await;
    let base = node.url();

    let first = ask(&base, "ptr.json", Ask { ranges: "0-99", ..Default::default() }).await;
    let version1 = header(&first, wire::OBJECT_VERSION);
    assert_eq!(first.bytes().await.unwrap(), &v1[..100]);

    // Replaced behind the node's back, with other bytes of the same size.
    let v2 = data(100_000, 2);
    origin.put_file("bkt", "ptr.json", &v2);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Naming version 1: version 1's bytes (held here) or 412 — never version 2's.
    for ranges in ["0-99", "70000-70099"] {
        let r = ask(&base, "ptr.json", Ask { ranges, version: &version1, ..Default::default() }).await;
        let status = r.status().as_u16();
        let (a, b) = wire::parse_ranges(ranges).unwrap()[0];
        match status {
            200 => {
                assert_eq!(header(&r, wire::OBJECT_VERSION), version1);
                assert_eq!(r.bytes().await.unwrap(), &v1[a as usize..b as usize]);
            }
            412 => assert_eq!(header(&r, wire::ERROR_CODE), "PreconditionFailed"),
            s => panic!("unexpected {s}"),
        }
    }
    // No version named: the current one, and its description says so.
    let now = ask(&base, "ptr.json", Ask { ranges: "0-99", ..Default::default() }).await;
    let version2 = header(&now, wire::OBJECT_VERSION);
    assert_ne!(version2, version1);
    assert_eq!(now.bytes().await.unwrap(), &v2[..100]);
    // A version that never existed is 412 with no bytes of any version.
    let bogus =
        ask(&base, "ptr.json", Ask { ranges: "0-99", version: "\"no-such-version\"", ..Default::default() })
            .await;
    assert_eq!(bogus.status(), 412);
    let b = bogus.bytes().await.unwrap();
    assert!(!b.windows(100).any(|w| w == &v1[..100] || w == &v2[..100]));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_listener_serves_only_the_internal_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    origin.put_file("bkt", "obj", &data(5000, 3));
    let node = Node::start(node_config(&origin, &dir.path().join("n"), Default::default())).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fleet_base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(lakecache_cache_node::serve_fleet(listener, node.node.clone(), async {
        let _ = rx.await;
    }));
    let r = ask(&fleet_base, "obj", Ask { ranges: "100-199", ..Default::default() }).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), &data(5000, 3)[100..200]);
    assert_eq!(reqwest::get(format!("{fleet_base}/healthz")).await.unwrap().status(), 200);
    // No S3 and no admin API there.
    assert_eq!(reqwest::get(format!("{fleet_base}/bkt/obj")).await.unwrap().status(), 404);
    assert_eq!(reqwest::get(format!("{fleet_base}/_lakecache/admin/stats")).await.unwrap().status(), 404);
    let _ = tx.send(());
    task.await.unwrap();
    node.stop().await;
}

/// Sends a batch of `text` signed with `secret` over `signed` (the list the signature covers).
async fn ask_batch(base: &str, text: &str, signed: &str, secret: &str) -> reqwest::Response {
    use wire::batch::{BATCH, BATCH_PATH};
    reqwest::Client::new()
        .get(format!("{base}{BATCH_PATH}"))
        .header(wire::FLEET_AUTH, wire::FleetKey::new(secret).auth_value("GET", BATCH_PATH, signed, ""))
        .header(BATCH, text)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_from_memory_defers_the_rest_and_never_mixes_versions() {
    use wire::batch::{Part, parse_parts, push_item};
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    let a = data(200_000, 3);
    let b = data(5_000, 4);
    origin.put_file("bkt", "d/a.lance", &a);
    origin.put_file("bkt", "d/b.lance", &b);
    origin.put_file("bkt", "d/cold.lance", &data(1000, 5));
    let node = Node::start(node_config(&origin, &dir.path().join("n"), Default::default())).await;
    let base = node.url();
    let item = |out: &mut String, key: &str, version: &str, s: u64, e: u64| {
        push_item(out, "bkt", key, version, s, e)
    };

    // Warm a's first two pages and b; learn their versions.
    let wa = ask(&base, "d/a.lance", Ask { ranges: "0-131071", ..Default::default() }).await;
    let va = header(&wa, wire::OBJECT_VERSION);
    wa.bytes().await.unwrap();
    let wb = ask(&base, "d/b.lance", Ask::default()).await;
    let vb = header(&wb, wire::OBJECT_VERSION);
    wb.bytes().await.unwrap();
    let cold = ask(&base, "d/cold.lance", Ask { method: "HEAD", ..Default::default() }).await;
    let vcold = header(&cold, wire::OBJECT_VERSION);

    let mut text = String::new();
    item(&mut text, "d/a.lance", &va, 100, 4196); // in memory
    item(&mut text, "d/b.lance", &vb, 4000, 9000); // cut at the end (5000)
    item(&mut text, "d/a.lance", &va, 65000, 70000); // across two cached pages
    item(&mut text, "d/a.lance", &va, 150_000, 150_100); // page 2: not in memory
    item(&mut text, "d/a.lance", "\"never-was\"", 0, 100); // a version this node never saw
    item(&mut text, "d/cold.lance", &vcold, 0, 10); // described but never read
    item(&mut text, "d/b.lance", &vb, 5000, 5001); // from the end on
    let r = ask_batch(&base, &text, &text, FLEET_SECRET).await;
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    let parts = parse_parts(&body, 7).unwrap();
    assert_eq!(parts[0], Part::Data(bytes::Bytes::copy_from_slice(&a[100..4196])));
    assert_eq!(parts[1], Part::Data(bytes::Bytes::copy_from_slice(&b[4000..])));
    assert_eq!(parts[2], Part::Data(bytes::Bytes::copy_from_slice(&a[65000..70000])));
    assert_eq!(parts[3], Part::Defer, "a page the node would have to fetch is deferred");
    assert_eq!(parts[4], Part::Defer, "an unknown version is deferred, never served");
    assert_eq!(parts[5], Part::Defer);
    assert!(
        matches!(&parts[6], Part::Error { status: 416, code, .. } if code == "InvalidRange"),
        "{:?}",
        parts[6]
    );
    let items = |o: &str| format!("cachenode_fleet_batch_items_total{{outcome=\"{o}\"}} ");
    assert_eq!(metric(&base, &items("served")).await, 3.0);
    assert_eq!(metric(&base, &items("deferred")).await, 3.0);
    assert_eq!(metric(&base, &items("error")).await, 1.0);
    assert_eq!(metric(&base, "cachenode_fleet_requests_total{op=\"batch\",status=\"200\"} ").await, 1.0);

    // Replaced at the origin with other bytes; once the node knows, a batch naming the old
    // version gets the old version's bytes from memory or a deferral — never the new bytes.
    let a2 = data(200_000, 9);
    origin.put_file("bkt", "d/a.lance", &a2);
    let mut c = node_config(&origin, &dir.path().join("n2"), Default::default());
    c.cache.metadata_ttl = std::time::Duration::from_millis(50);
    let node2 = Node::start(c).await;
    let base2 = node2.url();
    let w2 = ask(&base2, "d/a.lance", Ask { ranges: "0-65535", ..Default::default() }).await;
    let va2 = header(&w2, wire::OBJECT_VERSION);
    w2.bytes().await.unwrap();
    assert_ne!(va2, va);
    let mut text = String::new();
    item(&mut text, "d/a.lance", &va, 0, 100);
    item(&mut text, "d/a.lance", &va2, 0, 100);
    let parts =
        parse_parts(&ask_batch(&base2, &text, &text, FLEET_SECRET).await.bytes().await.unwrap(), 2).unwrap();
    assert_eq!(parts[0], Part::Defer, "node 2 never held the old version");
    assert_eq!(parts[1], Part::Data(bytes::Bytes::copy_from_slice(&a2[..100])));
    // Node 1 holds the old version's pages and has not seen the new one: the new version is
    // deferred (its single read resolves it), the old one served as asked.
    let mut text = String::new();
    item(&mut text, "d/a.lance", &va2, 0, 100);
    item(&mut text, "d/a.lance", &va, 0, 100);
    let parts =
        parse_parts(&ask_batch(&base, &text, &text, FLEET_SECRET).await.bytes().await.unwrap(), 2).unwrap();
    assert_eq!(parts[0], Part::Defer, "never the old bytes under the new version");
    assert_eq!(parts[1], Part::Data(bytes::Bytes::copy_from_slice(&a[..100])));

    // Refusals: a wrong secret, a list other than the one signed, no signature, a bad list.
    let refused = |reason: &str| format!("cachenode_fleet_auth_refused_total{{reason=\"{reason}\"}} ");
    let wrong = ask_batch(&base, &text, &text, "not-the-fleet-secret").await;
    assert_eq!(wrong.status(), 403);
    let mut other = String::new();
    item(&mut other, "d/a.lance", &va, 0, 200_000);
    let swapped = ask_batch(&base, &other, &text, FLEET_SECRET).await;
    assert_eq!(swapped.status(), 403, "the signature covers the item list");
    assert!(swapped.bytes().await.unwrap().len() < 100, "no object bytes");
    assert_eq!(metric(&base, &refused("wrong")).await, 2.0);
    assert_eq!(metric(&base, "cachenode_fleet_requests_total{op=\"batch\",status=\"403\"} ").await, 2.0);
    let unsigned = reqwest::Client::new()
        .get(format!("{base}{}", wire::batch::BATCH_PATH))
        .header(wire::batch::BATCH, &text)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    for bad in ["", "bkt d/a.lance", "bkt d/a.lance v 0-1,5-6", "bkt d/a.lance v 0-300000"] {
        let r = ask_batch(&base, bad, bad, FLEET_SECRET).await;
        assert_eq!(r.status(), 400, "{bad:?}");
        assert_eq!(header(&r, wire::ERROR_CODE), "InvalidArgument");
    }
    node.stop().await;
    node2.stop().await;
}

/// Every read says what it cost at the origin (`x-lakecache-origin-requests`, `-bytes`), and
/// a read with a budget (`x-lakecache-origin-budget`) that it cannot keep is refused with 409
/// OriginBudgetExceeded before the origin is asked for more — checked against the origin's
/// own request count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_says_what_it_cost_at_the_origin_and_keeps_to_its_budget() {
    const PAGE: usize = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    // Immutable by the default key rules: no revalidation HEADs in the background.
    let (key, other) = ("t.lance/data/a.lance", "t.lance/data/b.lance");
    origin.put_file("bkt", key, &data(3 * PAGE, 7));
    origin.put_file("bkt", other, &data(PAGE, 9));
    let node = Node::start(node_config(&origin, &dir.path().join("n"), Default::default())).await;
    let base = node.url();
    let counts = origin.counts.clone();
    let seen = move || {
        use std::sync::atomic::Ordering::SeqCst;
        counts.gets() + counts.heads() + counts.other.load(SeqCst)
    };
    let cost = |r: &reqwest::Response| {
        (
            header(r, wire::ORIGIN_REQUESTS).parse::<u64>().unwrap(),
            header(r, wire::ORIGIN_BYTES).parse::<u64>().unwrap(),
        )
    };
    let all = format!("0-{}", 3 * PAGE - 1);
    let page1 = format!("{}-{}", PAGE, 2 * PAGE - 1);
    let get = |ranges: &str, budget: Option<&str>| {
        let (base, ranges, budget) = (base.clone(), ranges.to_string(), budget.map(str::to_string));
        async move {
            ask(&base, key, Ask { ranges: &ranges, budget: budget.as_deref(), ..Default::default() }).await
        }
    };

    // Cold, cache-only: refused, and the origin was asked nothing (not even a HEAD).
    let r = get(&all, Some("0")).await;
    assert_eq!(r.status(), 409);
    assert_eq!(header(&r, wire::ERROR_CODE), "OriginBudgetExceeded");
    assert_eq!(cost(&r), (0, 0));
    assert_eq!(seen(), 0);

    // The middle page alone, cold: one ranged GET, which also tells the node what the
    // object is (no HEAD first).
    let r = get(&page1, Some("1")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(cost(&r), (1, PAGE as u64));
    assert_eq!(r.bytes().await.unwrap(), data(3 * PAGE, 7)[PAGE..2 * PAGE]);
    assert_eq!(seen(), 1);

    // All three pages now need two GETs (page 0 and page 2; page 1 is held): a budget of
    // 1 is refused before either starts, 2 is enough.
    let r = get(&all, Some("1")).await;
    assert_eq!((r.status().as_u16(), cost(&r).0), (409, 0));
    assert_eq!(seen(), 1);
    let r = get(&all, Some("2")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(cost(&r), (2, 2 * PAGE as u64));
    assert_eq!(r.bytes().await.unwrap(), data(3 * PAGE, 7));
    assert_eq!(seen(), 3);

    // Warm: cache-only is served, at no cost.
    let r = get(&all, Some("0")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(cost(&r), (0, 0));
    assert_eq!(r.bytes().await.unwrap(), data(3 * PAGE, 7));
    assert_eq!(seen(), 3);
    assert!(metric(&base, "cachenode_origin_requests_avoided_total{surface=\"fleet\"} ").await >= 1.0);

    // Without a budget the cost is still told: one GET for a whole cold object, and the
    // bytes counted are the object's, not the most the first read asked for.
    let r = ask(&base, other, Ask::default()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(cost(&r), (1, PAGE as u64));
    assert_eq!(r.bytes().await.unwrap(), data(PAGE, 9));
    assert_eq!(seen(), 4);
    assert_eq!(origin.counts.heads(), 0, "no read needed a HEAD");
    // A HEAD of an object the node does not know is the origin's HEAD.
    let third = "t.lance/data/c.lance";
    origin.put_file("bkt", third, &data(10, 1));
    let r = ask(&base, third, Ask { method: "HEAD", ..Default::default() }).await;
    assert_eq!((r.status().as_u16(), cost(&r)), (200, (1, 0)));
    assert_eq!(header(&r, wire::OBJECT_SIZE), "10");
    assert_eq!(origin.counts.heads(), 1);

    let r = get(&all, Some("lots")).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("whole number"));
}

/// A small Lance index file is fetched whole at its first miss — a search reads many
/// scattered pieces of it at once — in runs of `max_fetch`, started together: the read that
/// starts them pays for them (and says so), later reads of any piece cost nothing. A read
/// whose budget cannot pay for the whole file gets only its own pages. Data files are read
/// page by page as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_index_file_is_fetched_whole_in_a_few_gets() {
    const PAGE: usize = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    let index = "t.lance/_indices/9c1e/auxiliary.idx";
    let other = "t.lance/_indices/77ab/auxiliary.idx";
    let third = "t.lance/_indices/5d2f/index.idx";
    let data_file = "t.lance/data/d.lance";
    let data_two = "t.lance/data/e.lance";
    let body = data(16 * PAGE + 1000, 3); // 17 pages
    for k in [index, other, third, data_file, data_two] {
        origin.put_file("bkt", k, &body);
    }
    let mut cfg = node_config(&origin, &dir.path().join("n"), Default::default());
    cfg.cache.max_fetch = bytesize::ByteSize::b(4 * PAGE as u64); // runs of 4 pages
    let node = Node::start(cfg).await;
    let base = node.url();
    let counts = origin.counts.clone();
    let seen = move || counts.gets() + counts.heads();
    let cost = |r: &reqwest::Response| header(r, wire::ORIGIN_REQUESTS).parse::<u64>().unwrap();
    let piece = |p: usize| format!("{}-{}", p * PAGE + 10, p * PAGE + 99);

    // Cold, a piece of page 6: the first read is the aligned run around it (pages 4-7),
    // and the other runs (0-3, 8-11, 12-15, 16) start with it: 5 GETs, no HEAD, all told.
    let r = ask(&base, index, Ask { ranges: &piece(6), ..Default::default() }).await;
    assert_eq!(r.status(), 200);
    assert_eq!(cost(&r), 5);
    assert_eq!(r.bytes().await.unwrap(), body[6 * PAGE + 10..6 * PAGE + 100]);
    // Scattered pieces after it cost nothing more (they were fetched, or join the fetches).
    for p in [0, 16, 9, 3, 12, 1] {
        let r = ask(&base, index, Ask { ranges: &piece(p), ..Default::default() }).await;
        assert_eq!(r.status(), 200);
        assert_eq!(cost(&r), 0, "page {p}");
        assert_eq!(r.bytes().await.unwrap(), body[p * PAGE + 10..p * PAGE + 100]);
    }
    let all = format!("0-{}", body.len() - 1);
    let r = ask(&base, index, Ask { ranges: &all, budget: Some("0"), ..Default::default() }).await;
    assert_eq!((r.status().as_u16(), cost(&r)), (200, 0));
    assert_eq!(r.bytes().await.unwrap(), body);
    assert_eq!(seen(), 5);
    assert_eq!(origin.counts.heads(), 0);

    // A HEAD of an index file is answered by the GET of its first run (Lance asks an index
    // file's size right before reading it), and the rest of a small one follows as after
    // a first read: 5 GETs, no HEAD, and the reads after it cost nothing.
    let r = ask(&base, third, Ask { method: "HEAD", ..Default::default() }).await;
    assert_eq!((r.status().as_u16(), cost(&r)), (200, 5));
    assert_eq!(header(&r, wire::OBJECT_SIZE), body.len().to_string());
    let r = ask(&base, third, Ask { ranges: &all, budget: Some("0"), ..Default::default() }).await;
    assert_eq!((r.status().as_u16(), cost(&r)), (200, 0));
    assert_eq!(r.bytes().await.unwrap(), body);
    assert_eq!((seen(), origin.counts.heads()), (10, 0));

    // The same HEAD with a budget of 1: its first run only (pages 0-3). A read with a budget
    // of 1 then gets its own page only, and one without a budget the rest: runs 4-7, 8,
    // 10-13, 14-16.
    let r = ask(&base, other, Ask { method: "HEAD", budget: Some("1"), ..Default::default() }).await;
    assert_eq!((r.status().as_u16(), cost(&r)), (200, 1));
    let r = ask(&base, other, Ask { ranges: &piece(9), budget: Some("1"), ..Default::default() }).await;
    assert_eq!((r.status().as_u16(), cost(&r)), (200, 1));
    assert_eq!(r.bytes().await.unwrap(), body[9 * PAGE + 10..9 * PAGE + 100]);
    let r = ask(&base, other, Ask { ranges: &piece(2), budget: Some("0"), ..Default::default() }).await;
    assert_eq!((r.status().as_u16(), cost(&r)), (200, 0));
    assert_eq!(r.bytes().await.unwrap(), body[2 * PAGE + 10..2 * PAGE + 100]);
    assert_eq!(seen(), 12);
    let r = ask(&base, other, Ask { ranges: &piece(5), ..Default::default() }).await;
    assert_eq!((r.status().as_u16(), cost(&r)), (200, 4));
    assert_eq!(r.bytes().await.unwrap(), body[5 * PAGE + 10..5 * PAGE + 100]);
    assert_eq!((seen(), origin.counts.heads()), (16, 0));

    // A data file: the page read, nothing more.
    let r = ask(&base, data_file, Ask { ranges: &piece(6), ..Default::default() }).await;
    assert_eq!((r.status().as_u16(), cost(&r)), (200, 1));
    let r = ask(&base, data_file, Ask { ranges: &piece(9), ..Default::default() }).await;
    assert_eq!((r.status().as_u16(), cost(&r)), (200, 1));
    assert_eq!(seen(), 18);
    // A data file's HEAD stays a HEAD.
    let r = ask(&base, data_two, Ask { method: "HEAD", ..Default::default() }).await;
    assert_eq!((r.status().as_u16(), cost(&r)), (200, 1));
    assert_eq!((seen(), origin.counts.heads()), (19, 1));
}
