//! What a client or a failing origin must never do to the fleet through the router: eject
//! a healthy node, cost more than one origin timeout, or get a 200 whose body is short or
//! of another version. Plus S3's range semantics, non-ASCII metadata and the fleet-wide
//! admin calls. Real cache nodes, real router, the real aws-sdk-s3 client, and raw sockets
//! where the SDK cannot produce the request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use lakecache_cache_node::config::{OriginConfig, OriginKind};
use lakecache_testkit::fleet::*;
use lakecache_testkit::*;

/// Nodes whose origin is the fleet's origin directory read as a local directory (the
/// origin kind that cannot represent every key).
fn local_origin(c: &mut lakecache_cache_node::config::Config) {
    let root = c.cache.multipart_dir.parent().unwrap().parent().unwrap().join("origin");
    c.origins = vec![OriginConfig {
        bucket: "*".into(),
        kind: OriginKind::Local,
        root: Some(root),
        endpoint: None,
        region: None,
        origin_bucket: None,
        access_key_id: None,
        secret_access_key: None,
        allow_http: false,
        anonymous: false,
    }];
}

fn all_healthy(f: &Fleet) -> bool {
    f.router.fleet.members().iter().all(|m| m.healthy())
}

async fn router_ready(f: &Fleet) -> u16 {
    reqwest::get(format!("http://{}/readyz", f.router_addr)).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_never_eject_a_healthy_node() {
    let f = fleet_custom(local_origin, |_| {}).await;
    let c = f.client();
    let data = pattern(1, 200_000);
    f.origin.put_file("bkt", "plain/file.bin", &data);
    let long = "x".repeat(300);
    for round in 0..4 {
        // Keys the local origin cannot hold: one under a file, one with a 300-byte segment.
        for key in ["plain/file.bin/below".to_string(), format!("plain/{long}/obj")] {
            let e = c.get_object().bucket("bkt").key(&key).send().await.unwrap_err();
            assert_eq!(err_code(&e), ("NoSuchKey".to_string(), 404), "round {round}: GET {key}");
        }
        // A body that does not hash to its x-amz-content-sha256.
        let path = "/bkt/plain/put-sha";
        let head =
            signed_head(f.router_addr, "PUT", path, &[("content-length", "5".into())], &sha256_hex(b"world"));
        let a = raw(f.router_addr, head, b"hello", false).await;
        assert_eq!(a.status, 400, "round {round}: bad payload hash: {}", a.head);
        // Fewer bytes than Content-Length, then the client half-closes.
        let head = signed_head(
            f.router_addr,
            "PUT",
            "/bkt/plain/put-short",
            &[("content-length", "100".into())],
            "UNSIGNED-PAYLOAD",
        );
        let a = raw(f.router_addr, head, &[7u8; 10], true).await;
        assert_eq!(
            a.status,
            400,
            "round {round}: short body: {} {:?}",
            a.head,
            String::from_utf8_lossy(&a.body)
        );
        // An aws-chunked body cut after its first chunk.
        let chunk = vec![9u8; 1024];
        let mut full = format!("{:x}\r\n", chunk.len()).into_bytes();
        full.extend_from_slice(&chunk);
        full.extend_from_slice(b"\r\n");
        let complete_len =
            full.len() + b"400\r\n".len() + 1024 + 2 + b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n".len();
        let head = signed_head(
            f.router_addr,
            "PUT",
            "/bkt/plain/put-chunked",
            &[
                ("content-length", complete_len.to_string()),
                ("content-encoding", "aws-chunked".into()),
                ("x-amz-decoded-content-length", "2048".into()),
                ("x-amz-trailer", "x-amz-checksum-crc32".into()),
            ],
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        );
        let a = raw(f.router_addr, head, &full, true).await;
        assert_eq!(a.status, 400, "round {round}: cut aws-chunked body: {}", a.head);
    }
    assert!(all_healthy(&f), "a client's mistakes ejected a node");
    assert_eq!(router_ready(&f).await, 200);
    for k in ["plain/put-sha", "plain/put-short", "plain/put-chunked"] {
        assert!(!f.origin.root.join("bkt").join(k).exists(), "{k} was stored");
    }
    let got = body(c.get_object().bucket("bkt").key("plain/file.bin").send().await.unwrap()).await;
    assert!(got == data);
}

/// A TCP listener that accepts and never answers.
async fn black_hole() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_origin_costs_one_origin_timeout_and_ejects_no_node() {
    let hole = black_hole().await;
    let origin_timeout = Duration::from_secs(1);
    let f = fleet_custom(
        |c| {
            c.cache.origin_timeout = origin_timeout;
            c.origins[0].endpoint = Some(format!("http://{hole}"));
        },
        |r| r.fleet.request_timeout = Duration::from_secs(10),
    )
    .await;
    // One attempt per request (SDKs retry a 503 on their own; each attempt is measured).
    let c = aws_sdk_s3::Client::from_conf(
        f.client()
            .config()
            .to_builder()
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build(),
    );
    for i in 0..4 {
        let t0 = Instant::now();
        let e = c.get_object().bucket("bkt").key(format!("plain/miss-{i}.bin")).send().await.unwrap_err();
        let took = t0.elapsed();
        let (code, status) = err_code(&e);
        assert_eq!(status, 503, "{code}");
        assert!(
            took >= origin_timeout && took < origin_timeout * 2,
            "one origin timeout per request, took {took:?}"
        );
        let raw = e.raw_response().unwrap();
        assert_eq!(
            raw.headers().get(lakecache_common::wire::ERROR_SOURCE),
            Some(lakecache_common::wire::ERROR_SOURCE_ORIGIN),
            "the answer says the origin is at fault"
        );
        let msg = e.as_service_error().and_then(|s| aws_sdk_s3::error::ProvideErrorMetadata::message(s));
        assert!(msg.unwrap_or("").to_lowercase().contains("origin"), "{msg:?}");
    }
    assert!(all_healthy(&f), "a slow origin ejected a node");
    assert_eq!(router_ready(&f).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwrite_through_another_router_never_gives_a_short_or_mixed_200() {
    let f = fleet().await;
    let (_r2, r2_addr, _stop2) = start_router(f.router_cfg.clone()).await;
    let c1 = f.client();
    let c2 = client_for(&format!("http://{r2_addr}"), ACCESS_KEY, SECRET_KEY);
    let put = |c: &aws_sdk_s3::Client, key: &'static str, data: Vec<u8>| {
        let c = c.clone();
        async move { c.put_object().bucket("bkt").key(key).body(ByteStream::from(data)).send().await.unwrap() }
    };
    // Held pages: the second router read v1 fully, so its nodes hold v1's pages; after the
    // overwrite through the first router it may still answer v1 (whole) or v2 (whole).
    let (v1, v2) = (pattern(10, 700_000), pattern(11, 300_000));
    put(&c1, "plain/held.bin", v1.clone()).await;
    assert!(body(c2.get_object().bucket("bkt").key("plain/held.bin").send().await.unwrap()).await == v1);
    put(&c1, "plain/held.bin", v2.clone()).await;
    let out = c2.get_object().bucket("bkt").key("plain/held.bin").send().await.unwrap();
    let len = out.content_length().unwrap() as usize;
    let got = body(out).await;
    assert_eq!(got.len(), len, "a 200 with a short body");
    assert!(got == v1 || got == v2, "bytes of neither version");

    // Pages not held: the second router knows only v1's metadata (a HEAD), so after the
    // overwrite the first page cannot be of v1 and the read goes to v2, before any header.
    let (w1, w2) = (pattern(12, 500_000), pattern(13, 123_456));
    put(&c1, "plain/cold.bin", w1.clone()).await;
    let h = c2.head_object().bucket("bkt").key("plain/cold.bin").send().await.unwrap();
    assert_eq!(h.content_length(), Some(w1.len() as i64));
    put(&c1, "plain/cold.bin", w2.clone()).await;
    let out = c2.get_object().bucket("bkt").key("plain/cold.bin").send().await.unwrap();
    assert_eq!(out.content_length(), Some(w2.len() as i64), "the old Content-Length was sent");
    assert!(body(out).await == w2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_in_flight_complete_with_their_version_while_a_large_object_is_overwritten() {
    let f = fleet().await;
    let c = f.client();
    let (v1, v2) = (pattern(20, 6 * 1024 * 1024 + 17), pattern(21, 5 * 1024 * 1024 + 3));
    c.put_object()
        .bucket("bkt")
        .key("plain/large.bin")
        .body(ByteStream::from(v1.clone()))
        .send()
        .await
        .unwrap();
    // Warm: every page of v1 is held by its owner.
    assert!(body(c.get_object().bucket("bkt").key("plain/large.bin").send().await.unwrap()).await == v1);
    // Slow readers take the body a piece at a time while the object is replaced.
    let mut readers = Vec::new();
    for i in 0..3 {
        let c = c.clone();
        readers.push(tokio::spawn(async move {
            let out = c.get_object().bucket("bkt").key("plain/large.bin").send().await.unwrap();
            let len = out.content_length().unwrap() as usize;
            let mut body = out.body;
            let mut got = Vec::new();
            while let Some(chunk) = body.try_next().await.unwrap() {
                got.extend_from_slice(&chunk);
                if got.len() < 2 * 1024 * 1024 {
                    tokio::time::sleep(Duration::from_millis(20 + i * 5)).await;
                }
            }
            (len, got)
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    c.put_object()
        .bucket("bkt")
        .key("plain/large.bin")
        .body(ByteStream::from(v2.clone()))
        .send()
        .await
        .unwrap();
    for r in readers {
        let (len, got) = r.await.unwrap();
        assert_eq!(got.len(), len, "cut mid-body");
        assert!(got == v1, "a read that started on v1 must end on v1");
    }
    assert!(body(c.get_object().bucket("bkt").key("plain/large.bin").send().await.unwrap()).await == v2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_s3_ignores_are_answered_as_the_node_answers_them() {
    let f = fleet().await;
    let data = pattern(30, 100_000);
    f.origin.put_file("bkt", "plain/r.bin", &data);
    let node = f.nodes[0].as_ref().unwrap().client();
    let router = f.client();
    let cases = [
        "bytes=5-2",
        "bytes=0-0,1-1",
        "bytes=abc",
        "items=0-9",
        "bytes=99999999999999999999-",
        "bytes=-99999999999999999999",
        "bytes=0-99999999999999999999",
        "bytes=200000-",
        "bytes=10-19",
        "bytes=-5",
    ];
    for r in cases {
        let answer = |c: aws_sdk_s3::Client| async move {
            match c.get_object().bucket("bkt").key("plain/r.bin").range(r).send().await {
                Ok(out) => {
                    let status = out.content_range().map_or(200, |_| 206);
                    (status, out.content_range().map(str::to_string), body(out).await)
                }
                Err(e) => (err_code(&e).1, None, Vec::new()),
            }
        };
        let (n, r_) = (answer(node.clone()).await, answer(router.clone()).await);
        assert_eq!(n.0, r_.0, "{r}: status node {} router {}", n.0, r_.0);
        assert_eq!(n.1, r_.1, "{r}: Content-Range");
        assert!(n.2 == r_.2, "{r}: bodies differ");
        if ["bytes=5-2", "bytes=0-0,1-1", "bytes=abc", "items=0-9"].contains(&r) {
            assert_eq!(r_.0, 200, "{r} is ignored, as S3 does");
            assert!(r_.2 == data, "{r}: the whole object");
        }
    }
    let e =
        router.get_object().bucket("bkt").key("plain/r.bin").range("bytes=200000-").send().await.unwrap_err();
    assert_eq!(err_code(&e), ("InvalidRange".to_string(), 416));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_metadata_passes_the_routers_signature() {
    let f = fleet().await;
    let c = f.client();
    c.put_object()
        .bucket("bkt")
        .key("plain/meta.bin")
        .metadata("city", "Zürich – 東京")
        .cache_control("max-age=60")
        .content_disposition("attachment; filename=\"m.bin\"")
        .body(ByteStream::from_static(b"unicode"))
        .send()
        .await
        .unwrap();
    let out = c.get_object().bucket("bkt").key("plain/meta.bin").send().await.unwrap();
    // The object's metadata comes back through the router as the node answers it (non-ASCII
    // values as RFC 2047 encoded words, as S3 answers them).
    let city = out.metadata().and_then(|m| m.get("city")).cloned().unwrap_or_default();
    let direct = f.nodes[0]
        .as_ref()
        .unwrap()
        .client()
        .head_object()
        .bucket("bkt")
        .key("plain/meta.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(Some(&city), direct.metadata().and_then(|m| m.get("city")));
    let decoded = match city.strip_prefix("=?UTF-8?B?").and_then(|c| c.strip_suffix("?=")) {
        Some(b64) => String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap(),
        )
        .unwrap(),
        None => city.clone(),
    };
    assert_eq!(decoded, "Zürich – 東京");
    assert_eq!(out.cache_control(), Some("max-age=60"));
    assert_eq!(out.content_disposition(), Some("attachment; filename=\"m.bin\""));
    assert_eq!(body(out).await, b"unicode");
    let h = c.head_object().bucket("bkt").key("plain/meta.bin").send().await.unwrap();
    assert_eq!(h.metadata().and_then(|m| m.get("city")), Some(&city));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routers_admin_api_has_fleet_wide_stats_and_prewarm() {
    let f = fleet_with(|r| r.admin.token = Some("router-admin-token".into())).await;
    for i in 0..5 {
        f.origin.put_file("bkt", &format!("t.lance/data/{i}.lance"), &pattern(40 + i, 150_000));
    }
    f.origin.put_file("bkt", "other/x.bin", &pattern(49, 10_000));
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{}/_lakecache/admin/{p}", f.router_addr);
    let r = http
        .post(url("prewarm"))
        .bearer_auth("router-admin-token")
        .body(r#"{"bucket":"bkt","prefix":"t.lance/"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["objects"], 5, "{v}");
    assert_eq!(v["bytes"], 5 * 150_000, "{v}");
    // The pages landed on their owners' disks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v: serde_json::Value =
        http.get(url("stats")).bearer_auth("router-admin-token").send().await.unwrap().json().await.unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{v}");
    let pages: u64 = nodes.iter().map(|n| n["stats"]["disk"]["pages"].as_u64().unwrap()).sum();
    assert_eq!(v["total"]["disk_pages"].as_u64(), Some(pages), "{v}");
    assert_eq!(pages, 5 * 3, "5 objects of 3 pages each: {v}");
    assert_eq!(v["total"]["nodes_healthy"], 3);
    // Refused without the token; a bad body is a 400.
    assert_eq!(http.get(url("stats")).send().await.unwrap().status(), 401);
    let r = http.post(url("prewarm")).bearer_auth("router-admin-token").body("{").send().await.unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_reads_are_answered_as_the_s3_layer_answers_them() {
    // Unsigned reads take the router's own path (no s3s); signed ones go through s3s. Both
    // must give the same answer for every read a client can send.
    let f = fleet_with(|r| r.auth.anonymous = true).await;
    let data = pattern(31, 100_000);
    f.origin.put_file("bkt", "plain/p.bin", &data);
    f.origin.put_file("bkt", "plain/a b.bin", b"spaced out");
    let etag = f.client().head_object().bucket("bkt").key("plain/p.bin").send().await.unwrap();
    let etag = etag.e_tag().unwrap().to_string();
    let later = lakecache_s3::response::httpdate(std::time::SystemTime::now() + Duration::from_secs(3600));
    let earlier =
        lakecache_s3::response::httpdate(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1000));
    let cases: Vec<ReadCase> = vec![
        ("GET", "/bkt/plain/p.bin", vec![]),
        ("GET", "/bkt/plain/p.bin", vec![("range", "bytes=10-19".into())]),
        ("GET", "/bkt/plain/p.bin", vec![("range", "bytes=-5".into())]),
        ("GET", "/bkt/plain/p.bin?x-id=GetObject", vec![("range", "bytes=10-19".into())]),
        ("GET", "/bkt/plain/p.bin", vec![("range", "bytes=99990-".into())]),
        ("GET", "/bkt/plain/p.bin", vec![("range", "bytes=0-99999999".into())]),
        ("GET", "/bkt/plain/p.bin", vec![("range", "bytes=200000-".into())]),
        ("GET", "/bkt/plain/p.bin", vec![("if-none-match", etag.clone())]),
        ("GET", "/bkt/plain/p.bin", vec![("if-match", "\"other\"".into())]),
        ("GET", "/bkt/plain/p.bin", vec![("if-match", etag.clone()), ("range", "bytes=5-9".into())]),
        ("GET", "/bkt/plain/p.bin", vec![("if-modified-since", later.clone())]),
        ("GET", "/bkt/plain/p.bin", vec![("if-unmodified-since", earlier.clone())]),
        ("GET", "/bkt/plain/a%20b.bin", vec![("range", "bytes=3-4".into())]),
        ("GET", "/bkt/plain/missing.bin", vec![]),
        ("GET", "/no-such-bucket-here/k", vec![]),
        ("HEAD", "/bkt/plain/p.bin", vec![]),
        ("HEAD", "/bkt/plain/p.bin", vec![("range", "bytes=0-9".into())]),
        ("HEAD", "/bkt/plain/p.bin", vec![("if-none-match", etag.clone())]),
        ("HEAD", "/bkt/plain/missing.bin", vec![]),
    ];
    assert_unsigned_reads_answer_as_signed(f.router_addr, &cases, &[]).await;
    // The bytes themselves, for the two read shapes.
    let get = |range: Option<&str>| {
        let mut h = format!("GET /bkt/plain/p.bin HTTP/1.1\r\nhost: {}\r\n", f.router_addr);
        if let Some(r) = range {
            h.push_str(&format!("range: {r}\r\n"));
        }
        h.push_str("\r\n");
        raw(f.router_addr, h, b"", false)
    };
    assert!(get(None).await.body == data);
    assert!(get(Some("bytes=1000-70000")).await.body == data[1000..=70000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_reads_without_a_head_answer_as_a_node_does() {
    // Every read here is the router's first of its object (a new key each time): the
    // answer for the first page describes the object, with no HEAD — and what the client
    // gets is what the node itself answers.
    let f = fleet().await;
    let node = f.nodes[0].as_ref().unwrap().client();
    let router = f.client();
    let big = pattern(32, 200_000); // pages are 64 KiB: four of them
    let small = pattern(33, 10);
    let cases: [(&[u8], Option<&str>, Option<&str>); 12] = [
        (&big, None, None),
        (&big, Some("bytes=100-70000"), None),
        (&big, Some("bytes=199990-"), None),
        (&big, Some("bytes=0-999999"), None),
        (&big, Some("bytes=-5"), None),
        (&big, Some("bytes=200000-"), None),
        (&small, None, None),
        (&small, Some("bytes=0-99999"), None),
        (&small, Some("bytes=10-20"), None),
        (&[], None, None),
        (&big, Some("bytes=0-9"), Some("\"not-it\"")),
        (&big, Some("bytes=5-9"), Some("*")),
    ];
    for (i, (data, range, if_match)) in cases.iter().enumerate() {
        let key = format!("first/{i}.bin");
        f.origin.put_file("bkt", &key, data);
        let answer = |c: aws_sdk_s3::Client| {
            let key = key.clone();
            async move {
                let mut g = c.get_object().bucket("bkt").key(&key);
                if let Some(r) = range {
                    g = g.range(*r);
                }
                if let Some(m) = if_match {
                    g = g.if_match(*m);
                }
                match g.send().await {
                    Ok(out) => {
                        let cr = out.content_range().map(str::to_string);
                        let status = cr.as_ref().map_or(200, |_| 206);
                        (status, cr, out.e_tag().map(str::to_string), body(out).await)
                    }
                    Err(e) => (err_code(&e).1, None, None, Vec::new()),
                }
            }
        };
        // The router first (its metadata is cold), then the node.
        let r = answer(router.clone()).await;
        let n = answer(node.clone()).await;
        let what = format!("case {i}: {} bytes, range {range:?}, if-match {if_match:?}", data.len());
        assert_eq!(r.0, n.0, "{what}: status");
        assert_eq!(r.1, n.1, "{what}: Content-Range");
        assert_eq!(r.2, n.2, "{what}: ETag");
        assert!(r.3 == n.3, "{what}: bodies differ");
    }
    let missing = router.get_object().bucket("bkt").key("first/none").send().await.unwrap_err();
    assert_eq!(err_code(&missing), ("NoSuchKey".to_string(), 404));
    let text = reqwest::get(format!("http://{}/metrics", f.router_addr)).await.unwrap().text().await.unwrap();
    let heads: f64 = text
        .lines()
        .filter(|l| l.starts_with("router_upstream_requests_total") && l.contains("op=\"head\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    // Only where the first byte depends on the size or lies past the end is the object
    // resolved with a HEAD: the suffix (case 4), the starts at or past the end (5, 8) and
    // the empty object (9), whose first read the node answers 416.
    assert_eq!(heads, 4.0, "HEADs sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_mixes_fast_reads_with_requests_hyper_serves() {
    // Plain reads are answered by the router's own HTTP/1.1 path; the first request it does not
    // take (here /healthz, then a signed read) hands the connection to hyper, which answers it
    // and every later request — pipelined ones included — and still closes the idle connection.
    let f = fleet_with(|r| {
        r.auth.anonymous = true;
        r.server.header_timeout = Duration::from_millis(600);
    })
    .await;
    let data = pattern(41, 150_000);
    f.origin.put_file("bkt", "mix/m.bin", &data);
    let host = f.router_addr;
    let get =
        |range: &str| format!("GET /bkt/mix/m.bin HTTP/1.1\r\nhost: {host}\r\nrange: bytes={range}\r\n\r\n");
    let signed =
        signed_head(host, "GET", "/bkt/mix/m.bin", &[("range", "bytes=7-9".to_string())], &sha256_hex(b""));
    let batches = vec![
        (get("0-99"), 1, false),
        (format!("{}{}", get("100-199"), get("70000-140000")), 2, false),
        (format!("HEAD /bkt/mix/m.bin HTTP/1.1\r\nhost: {host}\r\n\r\n"), 1, true),
        (format!("GET /healthz HTTP/1.1\r\nhost: {host}\r\n\r\n"), 1, false),
        (get("5-5"), 1, false),
        (signed, 1, false),
        (format!("{}{}", get("0-0"), get("149999-")), 2, false),
    ];
    let c = converse(host, &batches, Duration::from_secs(3)).await;
    let a = &c.answers;
    assert_eq!(a.len(), 9);
    let expect = [(0, 99), (100, 199), (70000, 140000)];
    for (answer, (s, e)) in a[..3].iter().zip(expect) {
        assert_eq!(answer.status, 206, "{}", answer.head);
        assert!(answer.body == data[s..=e], "bytes {s}-{e}");
    }
    assert_eq!(a[3].status, 200);
    assert!(a[3].head.to_ascii_lowercase().contains("content-length: 150000"), "{}", a[3].head);
    assert_eq!((a[4].status, a[4].body.as_slice()), (200, &b"ok\n"[..]));
    assert!(a[5].status == 206 && a[5].body == data[5..=5]);
    assert!(a[6].status == 206 && a[6].body == data[7..=9], "{}", a[6].head);
    assert!(a[7].status == 206 && a[7].body == data[0..=0]);
    assert!(a[8].status == 206 && a[8].body == data[149999..]);
    assert!(c.closed_when_idle, "the idle keep-alive connection stayed open");
    // Idle on the fast path alone: closed after the header timeout as well.
    let c = converse(host, &[(get("1-2"), 1, false)], Duration::from_secs(3)).await;
    assert!(c.answers[0].body == data[1..=2] && c.closed_when_idle);
}
