//! What a client stores with an object besides its bytes — Content-Type, Content-Encoding,
//! Cache-Control, Content-Disposition, Content-Language, Expires, `x-amz-meta-*` — kept
//! through PUT, copy and multipart and returned on GET and HEAD, for an S3 origin (passed
//! through both ways) and a local-directory origin (a sidecar file); and the headers of a
//! 304. Real aws-sdk-s3 against a real node.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use lakecache_cache_node::config::OriginConfig;
use lakecache_cache_node::tier::disk::IoEngineChoice;
use lakecache_testkit::*;

async fn s3_origin_node() -> (tempfile::TempDir, Origin, Node) {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    std::fs::create_dir_all(origin.root.join("bkt")).unwrap();
    let node = Node::start(node_config(&origin, &dir.path().join("node"), IoEngineChoice::Pread)).await;
    (dir, origin, node)
}

async fn local_origin_node() -> (tempfile::TempDir, std::path::PathBuf, Node) {
    let dir = tempfile::tempdir().unwrap();
    let unused = Origin::start(&dir.path().join("unused")).await;
    let root = dir.path().join("local");
    std::fs::create_dir_all(root.join("bkt")).unwrap();
    let mut cfg = node_config(&unused, &dir.path().join("node"), IoEngineChoice::Pread);
    cfg.origins = vec![OriginConfig::local("*", root.clone())];
    let node = Node::start(cfg).await;
    (dir, root, node)
}

fn expires() -> DateTime {
    DateTime::from_secs(2_000_000_000)
}

async fn put_with_everything(c: &aws_sdk_s3::Client, key: &str, data: &'static [u8]) {
    c.put_object()
        .bucket("bkt")
        .key(key)
        .content_type("text/csv")
        .content_encoding("gzip")
        .cache_control("max-age=60")
        .content_disposition("attachment; filename=\"a.csv\"")
        .content_language("de")
        .expires(expires())
        .metadata("Owner", "team-a")
        .metadata("run", "42")
        .body(ByteStream::from_static(data))
        .send()
        .await
        .unwrap();
}

/// Every attribute `put_with_everything` stores, as HEAD and GET of `key` return them.
async fn assert_everything(c: &aws_sdk_s3::Client, key: &str, full: bool) {
    let h = c.head_object().bucket("bkt").key(key).send().await.unwrap();
    let g = c.get_object().bucket("bkt").key(key).send().await.unwrap();
    for (what, ct, ce, meta) in [
        ("HEAD", h.content_type(), h.content_encoding(), h.metadata()),
        ("GET", g.content_type(), g.content_encoding(), g.metadata()),
    ] {
        assert_eq!(ct, Some("text/csv"), "{what} {key}");
        assert_eq!(ce, Some("gzip"), "{what} {key}");
        let meta = meta.cloned().unwrap_or_default();
        assert_eq!(meta.get("owner").map(String::as_str), Some("team-a"), "{what} {key}: {meta:?}");
        assert_eq!(meta.get("run").map(String::as_str), Some("42"), "{what} {key}: {meta:?}");
        assert_eq!(meta.len(), 2, "{what} {key}: {meta:?}");
    }
    if full {
        for (what, cc, cd, cl, ex) in [
            ("HEAD", h.cache_control(), h.content_disposition(), h.content_language(), h.expires_string()),
            ("GET", g.cache_control(), g.content_disposition(), g.content_language(), g.expires_string()),
        ] {
            assert_eq!(cc, Some("max-age=60"), "{what} {key}");
            assert_eq!(cd, Some("attachment; filename=\"a.csv\""), "{what} {key}");
            assert_eq!(cl, Some("de"), "{what} {key}");
            assert_eq!(ex, Some("Wed, 18 May 2033 03:33:20 GMT"), "{what} {key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_origin_attributes_pass_through_both_ways() {
    let (_d, origin, node) = s3_origin_node().await;
    let c = node.client();
    put_with_everything(&c, "a.csv.gz", b"gzipped bytes").await;
    // What the node sent to the origin (s3s-fs keeps only some of it).
    let sent = origin.counts.last_put.lock().clone().unwrap();
    for (h, v) in [
        ("content-type", "text/csv"),
        ("content-encoding", "gzip"),
        ("cache-control", "max-age=60"),
        ("content-disposition", "attachment; filename=\"a.csv\""),
        ("content-language", "de"),
        ("x-amz-meta-owner", "team-a"),
        ("x-amz-meta-run", "42"),
        ("x-amz-meta-lakecache-expires", "Wed, 18 May 2033 03:33:20 GMT"),
    ] {
        assert_eq!(sent.get(h).and_then(|x| x.to_str().ok()), Some(v), "{h} sent to the origin: {sent:?}");
    }
    assert_everything(&c, "a.csv.gz", false).await;

    // An object written at the origin with attributes (here: headers the origin adds) is
    // served with them.
    origin.put_file("bkt", "from-origin.gz", b"\x1f\x8b not really gzip");
    origin.counts.extra_headers.lock().extend([
        ("content-encoding", "gzip"),
        ("cache-control", "no-cache"),
        ("content-disposition", "inline"),
        ("content-language", "fr"),
        ("x-amz-meta-source", "origin"),
    ]);
    let g = c.get_object().bucket("bkt").key("from-origin.gz").send().await.unwrap();
    assert_eq!(g.content_encoding(), Some("gzip"));
    assert_eq!(g.cache_control(), Some("no-cache"));
    assert_eq!(g.content_disposition(), Some("inline"));
    assert_eq!(g.content_language(), Some("fr"));
    assert_eq!(g.metadata().and_then(|m| m.get("source")).map(String::as_str), Some("origin"));
    origin.counts.extra_headers.lock().clear();

    // response-* parameters still win.
    let g = c
        .get_object()
        .bucket("bkt")
        .key("a.csv.gz")
        .response_content_type("application/octet-stream")
        .response_content_encoding("identity")
        .send()
        .await
        .unwrap();
    assert_eq!(g.content_type(), Some("application/octet-stream"));
    assert_eq!(g.content_encoding(), Some("identity"));

    // Copy keeps them (same bucket: the origin copies), REPLACE replaces them.
    c.copy_object().bucket("bkt").key("copy").copy_source("bkt/a.csv.gz").send().await.unwrap();
    assert_everything(&c, "copy", false).await;
    c.copy_object()
        .bucket("bkt")
        .key("copy")
        .copy_source("bkt/a.csv.gz")
        .metadata_directive(MetadataDirective::Replace)
        .content_type("application/gzip")
        .metadata("fresh", "yes")
        .send()
        .await
        .unwrap();
    let h = c.head_object().bucket("bkt").key("copy").send().await.unwrap();
    assert_eq!(h.content_type(), Some("application/gzip"));
    assert_eq!(h.content_encoding(), None);
    assert_eq!(
        h.metadata().cloned().unwrap_or_default().into_iter().collect::<Vec<_>>(),
        [("fresh".to_string(), "yes".to_string())]
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_origin_keeps_attributes_in_a_sidecar() {
    let (_d, root, node) = local_origin_node().await;
    let c = node.client();
    put_with_everything(&c, "dir/a.csv.gz", b"gzipped bytes").await;
    assert_everything(&c, "dir/a.csv.gz", true).await;
    assert_eq!(std::fs::read(root.join("bkt/dir/a.csv.gz")).unwrap(), b"gzipped bytes");

    // A copy keeps them (and so does a cross-bucket one); REPLACE replaces them.
    std::fs::create_dir_all(root.join("other")).unwrap();
    c.copy_object().bucket("bkt").key("dir/copy").copy_source("bkt/dir/a.csv.gz").send().await.unwrap();
    assert_everything(&c, "dir/copy", true).await;
    c.copy_object().bucket("other").key("x").copy_source("bkt/dir/a.csv.gz").send().await.unwrap();
    let h = c.head_object().bucket("other").key("x").send().await.unwrap();
    assert_eq!(h.content_type(), Some("text/csv"));
    assert_eq!(h.cache_control(), Some("max-age=60"));

    // Listing shows objects only, never a sidecar; and no key names one.
    let l = c.list_objects_v2().bucket("bkt").send().await.unwrap();
    let keys: Vec<_> = l.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["dir/a.csv.gz", "dir/copy"]);
    let l = c.list_objects_v2().bucket("bkt").prefix("dir/").delimiter("/").send().await.unwrap();
    assert_eq!(l.contents().len(), 2);
    let sidecars: Vec<_> = std::fs::read_dir(root.join("bkt/dir"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert_eq!(sidecars.len(), 2, "{sidecars:?}");
    for s in &sidecars {
        let e = c.get_object().bucket("bkt").key(format!("dir/{s}")).send().await.unwrap_err();
        assert_eq!(err_code(&e), ("NoSuchKey".to_string(), 404), "{s}");
        let e = c
            .put_object()
            .bucket("bkt")
            .key(format!("dir/{s}"))
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(err_code(&e).1, 400, "{s}");
    }

    // A plain overwrite drops them; a file changed behind the node's back loses them.
    c.put_object()
        .bucket("bkt")
        .key("dir/copy")
        .body(ByteStream::from_static(b"plain"))
        .send()
        .await
        .unwrap();
    let h = c.head_object().bucket("bkt").key("dir/copy").send().await.unwrap();
    assert_eq!(h.content_type(), Some("application/octet-stream"));
    assert!(h.metadata().is_none_or(|m| m.is_empty()));
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(root.join("bkt/dir/a.csv.gz"), b"changed behind our back").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // metadata_ttl
    let h = c.head_object().bucket("bkt").key("dir/a.csv.gz").send().await.unwrap();
    assert_eq!(h.content_encoding(), None, "attributes of another version were served");

    // Deleting the object deletes its sidecar and its directory.
    c.delete_object().bucket("bkt").key("dir/a.csv.gz").send().await.unwrap();
    c.delete_object().bucket("bkt").key("dir/copy").send().await.unwrap();
    assert!(
        !root.join("bkt/dir").exists(),
        "{:?}",
        std::fs::read_dir(root.join("bkt/dir")).map(|d| d.count())
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_keep_the_attributes_given_at_creation() {
    for local in [false, true] {
        let (_d, _o, node) = if local {
            let (d, _root, n) = local_origin_node().await;
            (d, None, n)
        } else {
            let (d, o, n) = s3_origin_node().await;
            (d, Some(o), n)
        };
        let c = node.client();
        let up = c
            .create_multipart_upload()
            .bucket("bkt")
            .key("mp.csv.gz")
            .content_type("text/csv")
            .content_encoding("gzip")
            .metadata("owner", "team-a")
            .metadata("run", "42")
            .send()
            .await
            .unwrap();
        let id = up.upload_id().unwrap();
        let p = c
            .upload_part()
            .bucket("bkt")
            .key("mp.csv.gz")
            .upload_id(id)
            .part_number(1)
            .body(ByteStream::from_static(b"one part"))
            .send()
            .await
            .unwrap();
        let done = CompletedMultipartUpload::builder()
            .parts(CompletedPart::builder().part_number(1).e_tag(p.e_tag().unwrap()).build())
            .build();
        c.complete_multipart_upload()
            .bucket("bkt")
            .key("mp.csv.gz")
            .upload_id(id)
            .multipart_upload(done)
            .send()
            .await
            .unwrap();
        assert_everything(&c, "mp.csv.gz", false).await;
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_modified_carries_etag_and_last_modified() {
    let (_d, _origin, node) = s3_origin_node().await;
    c_put(&node).await;
    let head = node.client().head_object().bucket("bkt").key("k").send().await.unwrap();
    let etag = head.e_tag().unwrap().to_string();
    let http = reqwest::Client::new();
    // Signed requests would need SigV4; a presigned URL carries the signature instead.
    let cfg =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(std::time::Duration::from_secs(60)).unwrap();
    let url = node.client().get_object().bucket("bkt").key("k").presigned(cfg).await.unwrap();
    for (name, value) in
        [("if-none-match", etag.clone()), ("if-modified-since", "Wed, 18 May 2033 03:33:20 GMT".into())]
    {
        let r = http.get(url.uri()).header(name, value.as_str()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 304, "{name}");
        assert_eq!(r.headers().get("etag").and_then(|v| v.to_str().ok()), Some(etag.as_str()), "{name}");
        assert!(r.headers().get("last-modified").is_some(), "{name}");
    }
    node.stop().await;
}

async fn c_put(node: &Node) {
    node.client()
        .put_object()
        .bucket("bkt")
        .key("k")
        .body(ByteStream::from_static(b"v"))
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_metadata_over_two_kilobytes_is_refused() {
    let (_d, _origin, node) = s3_origin_node().await;
    let c = node.client();
    let e = c
        .put_object()
        .bucket("bkt")
        .key("meta")
        .metadata("big", "x".repeat(2100))
        .body(ByteStream::from_static(b"v"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), ("MetadataTooLarge".to_string(), 400));
    let e = c.head_object().bucket("bkt").key("meta").send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 404);
    node.stop().await;
}
