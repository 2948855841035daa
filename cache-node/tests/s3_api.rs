//! Every S3 operation of the cache node, driven by the real aws-sdk-s3 client against a
//! real cache node in front of a real S3 server (s3s-fs) on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use lakecache_cache_node::tier::disk::IoEngineChoice;
use lakecache_testkit::*;

async fn setup() -> (tempfile::TempDir, Origin, Node) {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    std::fs::create_dir_all(origin.root.join("bkt")).unwrap();
    let node = Node::start(node_config(&origin, &dir.path().join("node"), IoEngineChoice::Auto)).await;
    (dir, origin, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_head_and_ranges_are_byte_exact() {
    let (_d, _origin, node) = setup().await;
    let c = node.client();
    let data = pattern(1, 1024 * 1024 + 12345); // 17 pages of 64 KiB, the last one short
    c.put_object()
        .bucket("bkt")
        .key("t.lance/data/a.lance")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();

    let full = c.get_object().bucket("bkt").key("t.lance/data/a.lance").send().await.unwrap();
    assert_eq!(full.content_length(), Some(data.len() as i64));
    assert!(full.e_tag().is_some());
    assert_eq!(full.accept_ranges(), Some("bytes"));
    assert!(full.last_modified().is_some());
    assert_eq!(body(full).await, data);

    let len = data.len() as u64;
    let cases: Vec<(String, u64, u64)> = vec![
        ("bytes=0-0".into(), 0, 0),
        ("bytes=100-65635".into(), 100, 65635), // crosses one page boundary
        ("bytes=65535-65536".into(), 65535, 65536), // two bytes on two pages
        ("bytes=1000-500000".into(), 1000, 500000), // many pages
        (format!("bytes={}-", len - 10), len - 10, len - 1),
        ("bytes=-777".into(), len - 777, len - 1),
        (format!("bytes=5-{}", len + 1000), 5, len - 1), // end past the object is clamped
        (format!("bytes=-{}", len + 5), 0, len - 1),     // suffix longer than the object
    ];
    for (range, a, b) in cases {
        let out =
            c.get_object().bucket("bkt").key("t.lance/data/a.lance").range(&range).send().await.unwrap();
        assert_eq!(out.content_range(), Some(format!("bytes {a}-{b}/{len}").as_str()), "{range}");
        assert_eq!(out.content_length(), Some((b - a + 1) as i64), "{range}");
        assert_eq!(body(out).await, &data[a as usize..=b as usize], "{range}");
    }

    let head = c.head_object().bucket("bkt").key("t.lance/data/a.lance").send().await.unwrap();
    assert_eq!(head.content_length(), Some(len as i64));

    for bad in [format!("bytes={len}-"), format!("bytes={}-{}", len + 1, len + 5), "bytes=-0".to_string()] {
        let e =
            c.get_object().bucket("bkt").key("t.lance/data/a.lance").range(&bad).send().await.unwrap_err();
        assert_eq!(err_code(&e), ("InvalidRange".to_string(), 416), "{bad}");
    }
    // Several ranges, or an invalid one: S3 ignores the header and sends the whole object.
    // …and the conditional headers still hold there.
    let etag = c
        .head_object()
        .bucket("bkt")
        .key("t.lance/data/a.lance")
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_string();
    let e = c
        .get_object()
        .bucket("bkt")
        .key("t.lance/data/a.lance")
        .range("bytes=0-1,5-6")
        .if_none_match(&etag)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e).1, 304);
    let e = c
        .get_object()
        .bucket("bkt")
        .key("t.lance/data/a.lance")
        .range("bytes=0-1,5-6")
        .if_match("\"other\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e).1, 412);
    for ignored in ["bytes=0-1,5-6", "bytes=500-100", "items=0-5"] {
        let out =
            c.get_object().bucket("bkt").key("t.lance/data/a.lance").range(ignored).send().await.unwrap();
        assert_eq!(out.content_range(), None, "{ignored}");
        assert_eq!(body(out).await, data, "{ignored}");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_object_and_missing_keys() {
    let (_d, _origin, node) = setup().await;
    let c = node.client();
    c.put_object().bucket("bkt").key("empty").body(ByteStream::from(Vec::new())).send().await.unwrap();
    let out = c.get_object().bucket("bkt").key("empty").send().await.unwrap();
    assert_eq!(out.content_length(), Some(0));
    assert!(body(out).await.is_empty());
    let e = c.get_object().bucket("bkt").key("empty").range("bytes=0-0").send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 416);

    let e = c.get_object().bucket("bkt").key("nope").send().await.unwrap_err();
    assert_eq!(err_code(&e), ("NoSuchKey".to_string(), 404));
    let e = c.head_object().bucket("bkt").key("nope").send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 404);
    let e = c.get_object().bucket("no-such-bucket").key("k").send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 404);
    c.head_bucket().bucket("bkt").send().await.unwrap();
    let e = c.head_bucket().bucket("no-such-bucket").send().await.unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(404));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_read_does_not_reach_the_origin() {
    let (_d, origin, node) = setup().await;
    let c = node.client();
    let data = pattern(2, 700_000);
    origin.put_file("bkt", "t.lance/data/b.lance", &data);
    let g0 = origin.counts.gets();
    assert_eq!(
        body(c.get_object().bucket("bkt").key("t.lance/data/b.lance").send().await.unwrap()).await,
        data
    );
    let g1 = origin.counts.gets();
    // 11 pages of 64 KiB, all missing and adjacent: one ranged GET.
    assert_eq!(g1 - g0, 1, "adjacent missing pages are fetched with one GET");
    let h1 = origin.counts.heads();
    for _ in 0..3 {
        let out = c
            .get_object()
            .bucket("bkt")
            .key("t.lance/data/b.lance")
            .range("bytes=1000-300000")
            .send()
            .await
            .unwrap();
        assert_eq!(body(out).await, &data[1000..=300000]);
    }
    assert_eq!(origin.counts.gets(), g1, "no origin GET once cached");
    assert_eq!(origin.counts.heads(), h1, "an immutable key is not revalidated");
    node.stop().await;
}

/// A GET of an object the node knows nothing about asks the origin once: the ranged GET of
/// its first pages says what the object is (size, ETag, attributes), as a HEAD would have.
/// What cannot be read that way (an empty object, a range past the end, a suffix range)
/// still gets the right answer, through a HEAD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_read_needs_no_head() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    std::fs::create_dir_all(origin.root.join("bkt")).unwrap();
    let mut cfg = node_config(&origin, &dir.path().join("node"), IoEngineChoice::Auto);
    cfg.auth.anonymous = true; // for the unsigned GET below
    let node = Node::start(cfg).await;
    let c = node.client();
    let data = pattern(5, 700_000);
    let key = "t.lance/data/first.lance";
    c.put_object()
        .bucket("bkt")
        .key(key)
        .content_type("image/png")
        .metadata("origin", "camera-7")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    // The node forgets what it knew of the object on a write; it reads it anew.
    let (g0, h0) = (origin.counts.gets(), origin.counts.heads());
    let out = c.get_object().bucket("bkt").key(key).range("bytes=70000-70099").send().await.unwrap();
    assert_eq!(out.content_type(), Some("image/png"));
    assert_eq!(out.metadata().and_then(|m| m.get("origin")).map(String::as_str), Some("camera-7"));
    assert_eq!(out.content_range(), Some("bytes 70000-70099/700000"));
    let etag = out.e_tag().map(str::to_string);
    assert_eq!(body(out).await, &data[70000..70100]);
    assert_eq!((origin.counts.gets() - g0, origin.counts.heads() - h0), (1, 0), "one GET, no HEAD");
    // The page it read (page 1 of 64 KiB pages) is held; the rest of the object comes with
    // two more GETs, one for page 0 and one for the pages after it.
    let out = c.get_object().bucket("bkt").key(key).send().await.unwrap();
    assert_eq!(out.e_tag().map(str::to_string), etag);
    assert_eq!(body(out).await, data);
    assert_eq!((origin.counts.gets() - g0, origin.counts.heads() - h0), (3, 0));

    // A whole cold object, with an unsigned (plain) GET as well as a signed one.
    let small = "t.lance/data/small.lance";
    origin.put_file("bkt", small, &data[..1000]);
    let (g0, h0) = (origin.counts.gets(), origin.counts.heads());
    let r = reqwest::get(format!("{}/bkt/{small}", node.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), &data[..1000]);
    assert_eq!((origin.counts.gets() - g0, origin.counts.heads() - h0), (1, 0));

    // Empty, past the end, suffix: answered as S3 does.
    origin.put_file("bkt", "t.lance/data/empty.lance", b"");
    let out = c.get_object().bucket("bkt").key("t.lance/data/empty.lance").send().await.unwrap();
    assert_eq!(body(out).await, b"");
    origin.put_file("bkt", "t.lance/data/short.lance", &data[..100]);
    let e = c
        .get_object()
        .bucket("bkt")
        .key("t.lance/data/short.lance")
        .range("bytes=500-600")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), ("InvalidRange".to_string(), 416));
    origin.put_file("bkt", "t.lance/data/tail.lance", &data[..5000]);
    let out =
        c.get_object().bucket("bkt").key("t.lance/data/tail.lance").range("bytes=-100").send().await.unwrap();
    assert_eq!(body(out).await, &data[4900..5000]);
    let e = c.get_object().bucket("bkt").key("t.lance/data/none.lance").send().await.unwrap_err();
    assert_eq!(err_code(&e), ("NoSuchKey".to_string(), 404));
    node.stop().await;
}

/// The same first reads at a local-directory origin (the default one), whose ranged reads
/// skip the attribute sidecar unless they stand in for a HEAD, and which reports a range
/// past the end in its own way: attributes kept, edges answered as S3 does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_read_at_a_local_origin_keeps_attributes_and_answers_edges() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("unused")).await;
    let root = dir.path().join("local");
    std::fs::create_dir_all(root.join("bkt")).unwrap();
    let mut cfg = node_config(&origin, &dir.path().join("node"), IoEngineChoice::Auto);
    cfg.origins = vec![lakecache_cache_node::config::OriginConfig::local("*", root.clone())];
    let node = Node::start(cfg).await;
    let c = node.client();
    let data = pattern(6, 300_000);
    let key = "t.lance/data/attrs.lance";
    c.put_object()
        .bucket("bkt")
        .key(key)
        .content_type("video/mp4")
        .metadata("take", "3")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let out = c.get_object().bucket("bkt").key(key).range("bytes=100-199").send().await.unwrap();
    assert_eq!(out.content_type(), Some("video/mp4"));
    assert_eq!(out.metadata().and_then(|m| m.get("take")).map(String::as_str), Some("3"));
    assert_eq!(body(out).await, &data[100..200]);
    let head = c.head_object().bucket("bkt").key(key).send().await.unwrap();
    assert_eq!(head.content_type(), Some("video/mp4"), "the metadata the first read cached");

    std::fs::create_dir_all(root.join("bkt/t.lance/data")).unwrap();
    std::fs::write(root.join("bkt/t.lance/data/empty.lance"), b"").unwrap();
    let out = c.get_object().bucket("bkt").key("t.lance/data/empty.lance").send().await.unwrap();
    assert_eq!(out.content_length(), Some(0));
    assert_eq!(body(out).await, b"");
    std::fs::write(root.join("bkt/t.lance/data/short.lance"), &data[..100]).unwrap();
    let e = c
        .get_object()
        .bucket("bkt")
        .key("t.lance/data/short.lance")
        .range("bytes=200000-200100")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), ("InvalidRange".to_string(), 416));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_origin_fetch() {
    let (_d, origin, node) = setup().await;
    let data = pattern(3, 64 * 1024 * 4);
    origin.put_file("bkt", "t.lance/data/c.lance", &data);
    let g0 = origin.counts.gets();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let c = node.client();
        tasks.push(tokio::spawn(async move {
            body(
                c.get_object()
                    .bucket("bkt")
                    .key("t.lance/data/c.lance")
                    .range("bytes=70000-70100")
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), &data[70000..=70100]);
    }
    assert_eq!(origin.counts.gets() - g0, 1, "16 concurrent misses of one page: one origin GET");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_through_the_endpoint_never_serves_old_bytes() {
    let (_d, _origin, node) = setup().await;
    let c = node.client();
    for key in ["mutable/obj.bin", "t.lance/data/rewritten.lance"] {
        for round in 0..5u64 {
            let data = pattern(100 + round, 200_000 + round as usize);
            c.put_object().bucket("bkt").key(key).body(ByteStream::from(data.clone())).send().await.unwrap();
            let got = body(c.get_object().bucket("bkt").key(key).send().await.unwrap()).await;
            assert_eq!(got, data, "{key} round {round}");
            let part = c.get_object().bucket("bkt").key(key).range("bytes=70000-70010").send().await.unwrap();
            assert_eq!(body(part).await, &data[70000..=70010]);
        }
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_at_the_origin_are_seen_after_the_ttl() {
    let (_d, origin, node) = setup().await;
    let c = node.client();
    origin.put_file("bkt", "notes/readme.txt", b"first version");
    assert_eq!(
        body(c.get_object().bucket("bkt").key("notes/readme.txt").send().await.unwrap()).await,
        b"first version"
    );
    origin.put_file("bkt", "notes/readme.txt", b"second version, longer");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // metadata_ttl is 200 ms in tests
    assert_eq!(
        body(c.get_object().bucket("bkt").key("notes/readme.txt").send().await.unwrap()).await,
        b"second version, longer"
    );
    // A version hint is never cached: every read sees the origin.
    origin.put_file("bkt", "t.lance/_versions/latest_version_hint.json", b"{\"v\":1}");
    assert_eq!(
        body(
            c.get_object()
                .bucket("bkt")
                .key("t.lance/_versions/latest_version_hint.json")
                .send()
                .await
                .unwrap()
        )
        .await,
        b"{\"v\":1}"
    );
    origin.put_file("bkt", "t.lance/_versions/latest_version_hint.json", b"{\"v\":22}");
    assert_eq!(
        body(
            c.get_object()
                .bucket("bkt")
                .key("t.lance/_versions/latest_version_hint.json")
                .send()
                .await
                .unwrap()
        )
        .await,
        b"{\"v\":22}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_get_and_head() {
    let (_d, _origin, node) = setup().await;
    let c = node.client();
    c.put_object().bucket("bkt").key("k").body(ByteStream::from_static(b"hello")).send().await.unwrap();
    let etag = c.head_object().bucket("bkt").key("k").send().await.unwrap().e_tag().unwrap().to_string();

    assert_eq!(
        body(c.get_object().bucket("bkt").key("k").if_match(&etag).send().await.unwrap()).await,
        b"hello"
    );
    let e = c.get_object().bucket("bkt").key("k").if_match("\"not-it\"").send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 412);
    let e = c.get_object().bucket("bkt").key("k").if_none_match(&etag).send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 304);
    assert!(c.get_object().bucket("bkt").key("k").if_none_match("\"other\"").send().await.is_ok());

    let past = aws_sdk_s3::primitives::DateTime::from_secs(1_000_000_000);
    let future = aws_sdk_s3::primitives::DateTime::from_secs(4_000_000_000);
    let e = c.get_object().bucket("bkt").key("k").if_modified_since(future).send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 304);
    assert!(c.get_object().bucket("bkt").key("k").if_modified_since(past).send().await.is_ok());
    let e = c.get_object().bucket("bkt").key("k").if_unmodified_since(past).send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 412);
    // If-Match that holds wins over a failing If-Unmodified-Since, as in S3.
    assert!(
        c.get_object().bucket("bkt").key("k").if_match(&etag).if_unmodified_since(past).send().await.is_ok()
    );
    let e = c.head_object().bucket("bkt").key("k").if_match("\"nope\"").send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 412);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_put_lets_exactly_one_writer_win() {
    let (_d, _origin, node) = setup().await;
    let c = node.client();
    c.put_object().bucket("bkt").key("exists").body(ByteStream::from_static(b"a")).send().await.unwrap();
    let e = c
        .put_object()
        .bucket("bkt")
        .key("exists")
        .if_none_match("*")
        .body(ByteStream::from_static(b"b"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), ("PreconditionFailed".to_string(), 412));
    assert_eq!(body(c.get_object().bucket("bkt").key("exists").send().await.unwrap()).await, b"a");

    // Two commits of the same Lance version: exactly one may succeed.
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let c = node.client();
        tasks.push(tokio::spawn(async move {
            c.put_object()
                .bucket("bkt")
                .key("t.lance/_versions/5.manifest")
                .if_none_match("*")
                .body(ByteStream::from(vec![i; 100]))
                .send()
                .await
                .map(|_| i)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(i) => winners.push(i),
            Err(e) => assert_eq!(err_code(&e).1, 412),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one conditional PUT succeeds");
    let got =
        body(c.get_object().bucket("bkt").key("t.lance/_versions/5.manifest").send().await.unwrap()).await;
    assert_eq!(got, vec![winners[0]; 100]);

    // If-Match on PUT: compare-and-swap on the ETag.
    let etag = c.head_object().bucket("bkt").key("exists").send().await.unwrap().e_tag().unwrap().to_string();
    let e = c
        .put_object()
        .bucket("bkt")
        .key("exists")
        .if_match("\"stale\"")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e).1, 412);
    c.put_object()
        .bucket("bkt")
        .key("exists")
        .if_match(&etag)
        .body(ByteStream::from_static(b"swapped"))
        .send()
        .await
        .unwrap();
    assert_eq!(body(c.get_object().bucket("bkt").key("exists").send().await.unwrap()).await, b"swapped");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_objects_v2_prefix_delimiter_and_pages() {
    let (_d, _origin, node) = setup().await;
    let c = node.client();
    let keys = ["a/1", "a/2", "a/b/3", "ab", "b/4", "c"];
    for k in keys {
        c.put_object().bucket("bkt").key(k).body(ByteStream::from_static(b"x")).send().await.unwrap();
    }
    let all = c.list_objects_v2().bucket("bkt").send().await.unwrap();
    let got: Vec<_> = all.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(got, keys);
    assert_eq!(all.contents()[0].size(), Some(1));

    let d = c.list_objects_v2().bucket("bkt").delimiter("/").send().await.unwrap();
    let objs: Vec<_> = d.contents().iter().filter_map(|o| o.key()).collect();
    let pfx: Vec<_> = d.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!(objs, ["ab", "c"]);
    assert_eq!(pfx, ["a/", "b/"]);

    let p = c.list_objects_v2().bucket("bkt").prefix("a").send().await.unwrap();
    assert_eq!(
        p.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(),
        ["a/1", "a/2", "a/b/3", "ab"]
    );
    let p = c.list_objects_v2().bucket("bkt").prefix("a/").delimiter("/").send().await.unwrap();
    assert_eq!(p.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), ["a/1", "a/2"]);
    assert_eq!(p.common_prefixes().iter().filter_map(|p| p.prefix()).collect::<Vec<_>>(), ["a/b/"]);

    // Pages of two, following continuation tokens.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let mut req = c.list_objects_v2().bucket("bkt").max_keys(2);
        if let Some(t) = token.take() {
            req = req.continuation_token(t);
        }
        let out = req.send().await.unwrap();
        seen.extend(out.contents().iter().filter_map(|o| o.key().map(String::from)));
        assert!(out.key_count().unwrap() <= 2);
        if out.is_truncated() == Some(true) {
            token = out.next_continuation_token().map(String::from);
        } else {
            break;
        }
    }
    assert_eq!(seen, keys);
    let sa = c.list_objects_v2().bucket("bkt").start_after("a/b/3").send().await.unwrap();
    assert_eq!(sa.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), ["ab", "b/4", "c"]);
    let e = c.list_objects_v2().bucket("bkt").continuation_token("garbage").send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 400);
    let e = c.list_objects_v2().bucket("nobucket").send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 404);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_list_complete_abort() {
    let (_d, _origin, node) = setup().await;
    let c = node.client();
    let part1 = pattern(7, 5 * 1024 * 1024);
    let part2 = pattern(8, 300_000);
    let up = c.create_multipart_upload().bucket("bkt").key("big/obj").send().await.unwrap();
    let id = up.upload_id().unwrap().to_string();
    let e1 = c
        .upload_part()
        .bucket("bkt")
        .key("big/obj")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(part1.clone()))
        .send()
        .await
        .unwrap();
    let e2 = c
        .upload_part()
        .bucket("bkt")
        .key("big/obj")
        .upload_id(&id)
        .part_number(2)
        .body(ByteStream::from(part2.clone()))
        .send()
        .await
        .unwrap();
    let parts = c.list_parts().bucket("bkt").key("big/obj").upload_id(&id).send().await.unwrap();
    assert_eq!(parts.parts().len(), 2);
    assert_eq!(parts.parts()[1].size(), Some(300_000));
    let done = CompletedMultipartUpload::builder()
        .parts(CompletedPart::builder().part_number(1).e_tag(e1.e_tag().unwrap()).build())
        .parts(CompletedPart::builder().part_number(2).e_tag(e2.e_tag().unwrap()).build())
        .build();
    c.complete_multipart_upload()
        .bucket("bkt")
        .key("big/obj")
        .upload_id(&id)
        .multipart_upload(done)
        .send()
        .await
        .unwrap();
    let got = body(c.get_object().bucket("bkt").key("big/obj").send().await.unwrap()).await;
    assert_eq!(got.len(), part1.len() + part2.len());
    assert!(got[..part1.len()] == part1[..] && got[part1.len()..] == part2[..]);
    let e = c.list_parts().bucket("bkt").key("big/obj").upload_id(&id).send().await.unwrap_err();
    assert_eq!(err_code(&e), ("NoSuchUpload".to_string(), 404));

    // A part under 5 MiB that is not the last: EntityTooSmall.
    let id = c
        .create_multipart_upload()
        .bucket("bkt")
        .key("small")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let a = c
        .upload_part()
        .bucket("bkt")
        .key("small")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from_static(b"tiny"))
        .send()
        .await
        .unwrap();
    let b = c
        .upload_part()
        .bucket("bkt")
        .key("small")
        .upload_id(&id)
        .part_number(2)
        .body(ByteStream::from_static(b"end"))
        .send()
        .await
        .unwrap();
    let done = CompletedMultipartUpload::builder()
        .parts(CompletedPart::builder().part_number(1).e_tag(a.e_tag().unwrap()).build())
        .parts(CompletedPart::builder().part_number(2).e_tag(b.e_tag().unwrap()).build())
        .build();
    let e = c
        .complete_multipart_upload()
        .bucket("bkt")
        .key("small")
        .upload_id(&id)
        .multipart_upload(done)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), ("EntityTooSmall".to_string(), 400));
    c.abort_multipart_upload().bucket("bkt").key("small").upload_id(&id).send().await.unwrap();
    let e = c
        .upload_part()
        .bucket("bkt")
        .key("small")
        .upload_id(&id)
        .part_number(3)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e).0, "NoSuchUpload");
    let e = c.head_object().bucket("bkt").key("small").send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 404);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_delete_objects_and_copy() {
    let (_d, _origin, node) = setup().await;
    let c = node.client();
    let data = pattern(9, 150_000);
    c.put_object().bucket("bkt").key("src").body(ByteStream::from(data.clone())).send().await.unwrap();
    assert_eq!(body(c.get_object().bucket("bkt").key("src").send().await.unwrap()).await, data); // now cached
    let out = c.copy_object().bucket("bkt").key("dst").copy_source("bkt/src").send().await.unwrap();
    assert!(out.copy_object_result().and_then(|r| r.e_tag()).is_some());
    assert_eq!(body(c.get_object().bucket("bkt").key("dst").send().await.unwrap()).await, data);

    // Copy over a cached object: the old bytes must not be served.
    c.put_object()
        .bucket("bkt")
        .key("other")
        .body(ByteStream::from_static(b"other bytes"))
        .send()
        .await
        .unwrap();
    assert_eq!(body(c.get_object().bucket("bkt").key("other").send().await.unwrap()).await, b"other bytes");
    c.copy_object().bucket("bkt").key("other").copy_source("bkt/src").send().await.unwrap();
    assert_eq!(body(c.get_object().bucket("bkt").key("other").send().await.unwrap()).await, data);

    c.delete_object().bucket("bkt").key("src").send().await.unwrap();
    let e = c.get_object().bucket("bkt").key("src").send().await.unwrap_err();
    assert_eq!(err_code(&e).0, "NoSuchKey");
    c.delete_object().bucket("bkt").key("never-existed").send().await.unwrap();

    let del = Delete::builder()
        .objects(ObjectIdentifier::builder().key("dst").build().unwrap())
        .objects(ObjectIdentifier::builder().key("other").build().unwrap())
        .objects(ObjectIdentifier::builder().key("missing").build().unwrap())
        .build()
        .unwrap();
    let out = c.delete_objects().bucket("bkt").delete(del).send().await.unwrap();
    assert_eq!(out.deleted().len(), 3);
    assert!(out.errors().is_empty());
    let left = c.list_objects_v2().bucket("bkt").send().await.unwrap();
    assert!(left.contents().is_empty(), "{:?}", left.contents());
    let e = c.copy_object().bucket("bkt").key("x").copy_source("bkt/missing").send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 404);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_down_gives_503_but_cached_pages_are_served() {
    let (_d, origin, node) = setup().await;
    let c = node.client();
    let data = pattern(10, 100_000);
    origin.put_file("bkt", "t.lance/data/up.lance", &data);
    origin.put_file("bkt", "t.lance/data/cold.lance", &data);
    assert_eq!(
        body(c.get_object().bucket("bkt").key("t.lance/data/up.lance").send().await.unwrap()).await,
        data
    );
    origin.counts.down.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        body(c.get_object().bucket("bkt").key("t.lance/data/up.lance").send().await.unwrap()).await,
        data
    );
    // The SDK retries 503s; it still ends in ServiceUnavailable.
    let e = c.get_object().bucket("bkt").key("t.lance/data/cold.lance").send().await.unwrap_err();
    assert_eq!(err_code(&e), ("ServiceUnavailable".to_string(), 503));
    origin.counts.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        body(c.get_object().bucket("bkt").key("t.lance/data/cold.lance").send().await.unwrap()).await,
        data
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory_origin_reads_writes_and_caches() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("unused")).await;
    let root = dir.path().join("local");
    std::fs::create_dir_all(root.join("bkt/t.lance/data")).unwrap();
    let data = pattern(30, 400_000);
    std::fs::write(root.join("bkt/t.lance/data/x.lance"), &data).unwrap();
    let mut cfg = node_config(&origin, &dir.path().join("node"), IoEngineChoice::Auto);
    cfg.origins = vec![lakecache_cache_node::config::OriginConfig::local("*", root.clone())];
    let node = Node::start(cfg).await;
    let c = node.client();
    let out = c
        .get_object()
        .bucket("bkt")
        .key("t.lance/data/x.lance")
        .range("bytes=65000-200000")
        .send()
        .await
        .unwrap();
    assert_eq!(body(out).await, &data[65000..=200000]);
    // Overwrite through the endpoint, read the new bytes (conditional origin reads use the
    // local store's own ETag format).
    let new = pattern(31, 123_456);
    c.put_object()
        .bucket("bkt")
        .key("t.lance/data/x.lance")
        .body(ByteStream::from(new.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        body(c.get_object().bucket("bkt").key("t.lance/data/x.lance").send().await.unwrap()).await,
        new
    );
    assert_eq!(std::fs::read(root.join("bkt/t.lance/data/x.lance")).unwrap(), new);
    let e = c.get_object().bucket("nobkt").key("k").send().await.unwrap_err();
    assert_eq!(err_code(&e), ("NoSuchBucket".to_string(), 404));
    let listed = c.list_buckets().send().await.unwrap();
    assert_eq!(listed.buckets().iter().filter_map(|b| b.name()).collect::<Vec<_>>(), ["bkt"]);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_markers_and_double_slashes_are_keys_of_their_own_at_an_s3_origin() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start_memory().await;
    let node = Node::start(node_config(&origin, &dir.path().join("node"), IoEngineChoice::Auto)).await;
    let c = node.client();
    let put = |key: &'static str, data: &'static [u8]| {
        c.put_object().bucket("bkt").key(key).body(ByteStream::from_static(data)).send()
    };
    put("dir", b"the real object").await.unwrap();
    put("dir/", b"").await.unwrap();
    put("dir/a", b"a").await.unwrap();
    put("a//b", b"double").await.unwrap();
    put("a/b", b"single").await.unwrap();
    // None aliases another.
    for (key, want) in
        [("dir", &b"the real object"[..]), ("dir/", b""), ("a//b", b"double"), ("a/b", b"single")]
    {
        let out = c.get_object().bucket("bkt").key(key).send().await.unwrap();
        assert_eq!(body(out).await, want, "{key}");
        let h = c.head_object().bucket("bkt").key(key).send().await.unwrap();
        assert_eq!(h.content_length(), Some(want.len() as i64), "{key}");
    }
    let r = c.get_object().bucket("bkt").key("a//b").range("bytes=1-3").send().await.unwrap();
    assert_eq!(body(r).await, b"oub");
    // Listed as they are.
    let all = c.list_objects_v2().bucket("bkt").send().await.unwrap();
    let keys: Vec<_> = all.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["a//b", "a/b", "dir", "dir/", "dir/a"]);
    let d = c.list_objects_v2().bucket("bkt").prefix("dir/").delimiter("/").send().await.unwrap();
    assert_eq!(d.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), ["dir/", "dir/a"]);
    let d = c.list_objects_v2().bucket("bkt").prefix("a/").delimiter("/").send().await.unwrap();
    assert_eq!(d.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), ["a/b"]);
    assert_eq!(d.common_prefixes().iter().filter_map(|p| p.prefix()).collect::<Vec<_>>(), ["a//"]);
    let d = c.list_objects_v2().bucket("bkt").prefix("a//").send().await.unwrap();
    assert_eq!(d.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), ["a//b"]);
    // Copied and deleted as themselves.
    c.copy_object().bucket("bkt").key("copy//of").copy_source("bkt/a//b").send().await.unwrap();
    assert_eq!(body(c.get_object().bucket("bkt").key("copy//of").send().await.unwrap()).await, b"double");
    c.delete_object().bucket("bkt").key("dir/").send().await.unwrap();
    let e = c.head_object().bucket("bkt").key("dir/").send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 404);
    assert_eq!(body(c.get_object().bucket("bkt").key("dir").send().await.unwrap()).await, b"the real object");
    node.stop().await;

    // A local directory has no file for them: refused, never aliased.
    let root = dir.path().join("local");
    std::fs::create_dir_all(root.join("bkt")).unwrap();
    std::fs::write(root.join("bkt/dir"), b"the real object").unwrap();
    let mut cfg = node_config(&origin, &dir.path().join("node2"), IoEngineChoice::Auto);
    cfg.origins = vec![lakecache_cache_node::config::OriginConfig::local("*", root.clone())];
    let node = Node::start(cfg).await;
    let c = node.client();
    for key in ["dir/", "a//b"] {
        let e = c
            .put_object()
            .bucket("bkt")
            .key(key)
            .body(ByteStream::from_static(b""))
            .send()
            .await
            .unwrap_err();
        assert_eq!(err_code(&e), ("InvalidArgument".to_string(), 400), "{key}");
        let e = c.get_object().bucket("bkt").key(key).send().await.unwrap_err();
        assert_eq!(err_code(&e), ("NoSuchKey".to_string(), 404), "{key}");
    }
    assert_eq!(std::fs::read(root.join("bkt/dir")).unwrap(), b"the real object");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_part_copy_builds_an_object_from_ranges_of_another() {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let (_d, origin, node) = setup().await;
    let c = node.client();
    let src = pattern(160, 7 * 1024 * 1024);
    origin.put_file("bkt", "big/src.bin", &src);
    let id = c
        .create_multipart_upload()
        .bucket("bkt")
        .key("big/dst.bin")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let split = 5 * 1024 * 1024;
    let p1 = c
        .upload_part_copy()
        .bucket("bkt")
        .key("big/dst.bin")
        .upload_id(&id)
        .part_number(1)
        .copy_source("bkt/big/src.bin")
        .copy_source_range(format!("bytes=0-{}", split - 1))
        .send()
        .await
        .unwrap();
    let p2 = c
        .upload_part_copy()
        .bucket("bkt")
        .key("big/dst.bin")
        .upload_id(&id)
        .part_number(2)
        .copy_source("bkt/big/src.bin")
        .copy_source_range(format!("bytes={split}-{}", src.len() - 1))
        .send()
        .await
        .unwrap();
    let e = c
        .upload_part_copy()
        .bucket("bkt")
        .key("big/dst.bin")
        .upload_id(&id)
        .part_number(3)
        .copy_source("bkt/big/src.bin")
        .copy_source_range(format!("bytes=0-{}", src.len()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e).1, 416);
    let done = CompletedMultipartUpload::builder()
        .parts(
            CompletedPart::builder()
                .part_number(1)
                .e_tag(p1.copy_part_result().unwrap().e_tag().unwrap())
                .build(),
        )
        .parts(
            CompletedPart::builder()
                .part_number(2)
                .e_tag(p2.copy_part_result().unwrap().e_tag().unwrap())
                .build(),
        )
        .build();
    c.complete_multipart_upload()
        .bucket("bkt")
        .key("big/dst.bin")
        .upload_id(&id)
        .multipart_upload(done)
        .send()
        .await
        .unwrap();
    assert!(body(c.get_object().bucket("bkt").key("big/dst.bin").send().await.unwrap()).await == src);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_reads_are_answered_as_the_s3_layer_answers_them() {
    // Unsigned reads take the node's own path (no s3s); signed ones go through s3s. Both
    // must answer alike — attributes included, and for objects whose attributes only s3s
    // renders (non-ASCII metadata, Expires), the plain path hands over to it.
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    std::fs::create_dir_all(origin.root.join("bkt")).unwrap();
    let mut cfg = node_config(&origin, &dir.path().join("node"), IoEngineChoice::Auto);
    cfg.auth.anonymous = true;
    let node = Node::start(cfg).await;
    let c = node.client();
    let data = pattern(41, 150_000); // three pages of 64 KiB, the last one short
    c.put_object()
        .bucket("bkt")
        .key("p/attrs.bin")
        .body(ByteStream::from(data.clone()))
        .content_type("image/webp")
        .cache_control("max-age=60")
        .content_disposition("inline")
        .metadata("camera", "cam-7")
        .send()
        .await
        .unwrap();
    c.put_object()
        .bucket("bkt")
        .key("p/unicode.bin")
        .body(ByteStream::from(data.clone()))
        .metadata("caption", "café ☕")
        .send()
        .await
        .unwrap();
    origin.put_file("bkt", "p/plain.bin", &data);
    let etag =
        c.head_object().bucket("bkt").key("p/plain.bin").send().await.unwrap().e_tag().unwrap().to_string();
    let cases: Vec<ReadCase> = vec![
        ("GET", "/bkt/p/plain.bin", vec![]),
        ("GET", "/bkt/p/plain.bin", vec![("range", "bytes=65530-131080".into())]),
        ("GET", "/bkt/p/plain.bin", vec![("range", "bytes=-7".into())]),
        ("GET", "/bkt/p/plain.bin?x-id=GetObject", vec![("range", "bytes=10-19".into())]),
        ("GET", "/bkt/p/plain.bin", vec![("range", "bytes=149999-".into())]),
        ("GET", "/bkt/p/plain.bin", vec![("range", "bytes=150000-".into())]),
        ("GET", "/bkt/p/plain.bin", vec![("if-none-match", etag.clone())]),
        ("GET", "/bkt/p/plain.bin", vec![("if-match", "\"nope\"".into())]),
        ("GET", "/bkt/p/attrs.bin", vec![("range", "bytes=0-99".into())]),
        ("GET", "/bkt/p/unicode.bin", vec![("range", "bytes=0-99".into())]),
        ("GET", "/bkt/p/missing.bin", vec![]),
        ("HEAD", "/bkt/p/attrs.bin", vec![]),
        ("HEAD", "/bkt/p/unicode.bin", vec![]),
        ("HEAD", "/bkt/p/plain.bin", vec![("range", "bytes=0-9".into())]),
        ("HEAD", "/bkt/p/missing.bin", vec![]),
    ];
    let more = ["cache-control", "content-disposition", "x-amz-meta-camera", "x-amz-meta-caption"];
    assert_unsigned_reads_answer_as_signed(node.addr, &cases, &more).await;
    // A warm plain read is bytes exact and served from the cache.
    let gets = origin.counts.gets();
    let r =
        raw(node.addr, format!("GET /bkt/p/plain.bin HTTP/1.1\r\nhost: {}\r\n\r\n", node.addr), b"", false)
            .await;
    assert!(r.status == 200 && r.body == data);
    assert_eq!(origin.counts.gets(), gets, "served from the cache");
    node.stop().await;
}
