//! Errors the node answers because of its origin: each gets the S3 code and status that
//! fits it (a key the origin cannot hold is missing, a full origin is 507, a refusal is the
//! origin's 4xx) rather than a blanket 503, and every answer that is the origin's fault says
//! so with `x-lakecache-error-source: origin`, so that a router neither fails over nor holds
//! it against the node. Real clients against a real node.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use lakecache_cache_node::config::{OriginConfig, OriginKind};
use lakecache_cache_node::tier::disk::IoEngineChoice;
use lakecache_common::wire::{ERROR_SOURCE, ERROR_SOURCE_ORIGIN};
use lakecache_testkit::*;

fn source(r: &reqwest::Response) -> Option<String> {
    r.headers().get(ERROR_SOURCE).and_then(|v| v.to_str().ok()).map(String::from)
}

fn code(text: &str) -> String {
    text.split("<Code>").nth(1).and_then(|r| r.split("</Code>").next()).unwrap_or("").to_string()
}

async fn local_node(root: &std::path::Path, dir: &std::path::Path) -> Node {
    let unused = Origin::start(&dir.join("unused")).await;
    let mut cfg = node_config(&unused, &dir.join("node"), IoEngineChoice::Pread);
    cfg.auth.anonymous = true;
    cfg.origins = vec![OriginConfig::local("*", root)];
    Node::start(cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_a_local_origin_cannot_hold_are_missing_not_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("local");
    std::fs::create_dir_all(root.join("bkt")).unwrap();
    std::fs::write(root.join("bkt/file"), b"an object").unwrap();
    let node = local_node(&root, dir.path()).await;
    let c = client_no_retry(&node.url());
    let long = "x".repeat(300);
    for key in ["file/under", "file/under/deeper", long.as_str(), &format!("dir/{long}")] {
        let e = c.get_object().bucket("bkt").key(key).send().await.unwrap_err();
        assert_eq!(err_code(&e), ("NoSuchKey".to_string(), 404), "GET {key}");
        let e = c.head_object().bucket("bkt").key(key).send().await.unwrap_err();
        assert_eq!(err_code(&e).1, 404, "HEAD {key}");
    }
    // Writing them is the client's mistake for this origin: 400, not a retryable 503.
    let e = c
        .put_object()
        .bucket("bkt")
        .key("file/under")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), ("InvalidArgument".to_string(), 400));
    let e =
        c.put_object().bucket("bkt").key(&long).body(ByteStream::from_static(b"x")).send().await.unwrap_err();
    assert_eq!(err_code(&e), ("KeyTooLongError".to_string(), 400));
    assert_eq!(std::fs::read(root.join("bkt/file")).unwrap(), b"an object");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_local_origin_is_507_from_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("local");
    std::fs::create_dir_all(&root).unwrap();
    // A small file system of its own: needs the right to mount (root in the test container).
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&root)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here; the 507 mapping is covered by origin::tests");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(root.clone());
    std::fs::create_dir_all(root.join("bkt")).unwrap();
    let node = local_node(&root, dir.path()).await;
    let r = reqwest::Client::new()
        .put(format!("{}/bkt/big", node.url()))
        .body(vec![7u8; 1024 * 1024])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let src = source(&r);
    let text = r.text().await.unwrap();
    assert_eq!(status, 507, "{text}");
    assert_eq!(code(&text), "InsufficientStorage");
    assert_eq!(src.as_deref(), Some(ERROR_SOURCE_ORIGIN));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_origin_errors_keep_their_meaning() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    std::fs::create_dir_all(origin.root.join("bkt")).unwrap();
    let mut cfg = node_config(&origin, &dir.path().join("node"), IoEngineChoice::Pread);
    cfg.auth.anonymous = true;
    let node = Node::start(cfg).await;
    let http = reqwest::Client::new();

    // A bucket the origin does not have.
    let r = http.get(format!("{}/no-such-bucket/k", node.url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(source(&r), None);
    assert_eq!(code(&r.text().await.unwrap()), "NoSuchBucket");
    // (s3s-fs creates a bucket that a PUT names; S3 answers NoSuchBucket, as injected here.)
    *origin.counts.fail_with.lock() = Some((404, "NoSuchBucket"));
    let r = http.put(format!("{}/gone/k", node.url())).body("x").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(code(&r.text().await.unwrap()), "NoSuchBucket");
    let r = http.get(format!("{}/gone/?list-type=2", node.url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(code(&r.text().await.unwrap()), "NoSuchBucket");
    *origin.counts.fail_with.lock() = None;

    // The origin refuses a request (4xx): the client gets that refusal, not "retry".
    *origin.counts.fail_with.lock() = Some((400, "InvalidArgument"));
    let r = http.get(format!("{}/bkt/k", node.url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(source(&r).as_deref(), Some(ERROR_SOURCE_ORIGIN));
    // (The origin's code travels where its answer has a body: not on a HEAD.)
    let r = http.put(format!("{}/bkt/k", node.url())).body("x").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(source(&r).as_deref(), Some(ERROR_SOURCE_ORIGIN));
    assert_eq!(code(&r.text().await.unwrap()), "InvalidArgument");
    // The origin fails (5xx): 503 (worth a retry), marked as the origin's fault.
    *origin.counts.fail_with.lock() = Some((500, "InternalError"));
    let r = http.get(format!("{}/bkt/k2", node.url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(source(&r).as_deref(), Some(ERROR_SOURCE_ORIGIN));
    let r = http.put(format!("{}/bkt/k2", node.url())).body("x").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(source(&r).as_deref(), Some(ERROR_SOURCE_ORIGIN));
    *origin.counts.fail_with.lock() = None;

    // A client error is no fault of the origin's.
    let r = http.get(format!("{}/bkt/missing", node.url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(source(&r), None);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_never_answers_costs_one_timeout_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (hole, _task) = black_hole().await;
    let origin = Origin::start(&dir.path().join("unused")).await;
    let mut cfg = node_config(&origin, &dir.path().join("node"), IoEngineChoice::Pread);
    cfg.auth.anonymous = true;
    let timeout = Duration::from_millis(1500);
    cfg.cache.origin_timeout = timeout;
    cfg.origins = vec![OriginConfig {
        bucket: "*".into(),
        kind: OriginKind::S3,
        root: None,
        endpoint: Some(format!("http://{hole}")),
        region: Some("us-east-1".into()),
        origin_bucket: None,
        access_key_id: Some(ORIGIN_KEY.into()),
        secret_access_key: Some(ORIGIN_SECRET.into()),
        allow_http: true,
        anonymous: false,
    }];
    let node = Node::start(cfg).await;
    let http = reqwest::Client::new();
    for (method, path) in [("GET", "/bkt/k"), ("HEAD", "/bkt/k"), ("PUT", "/bkt/w")] {
        let t0 = Instant::now();
        let req = match method {
            "GET" => http.get(format!("{}{path}", node.url())),
            "HEAD" => http.head(format!("{}{path}", node.url())),
            _ => http.put(format!("{}{path}", node.url())).body("x"),
        };
        let r = req.send().await.unwrap();
        let took = t0.elapsed();
        assert_eq!(r.status().as_u16(), 503, "{method}");
        assert_eq!(source(&r).as_deref(), Some(ERROR_SOURCE_ORIGIN), "{method}");
        assert!(
            took >= timeout && took < timeout * 2,
            "{method} took {took:?} for a {timeout:?} origin timeout"
        );
        if method != "HEAD" {
            let text = r.text().await.unwrap();
            assert_eq!(code(&text), "ServiceUnavailable", "{method}");
            assert!(
                text.contains("The origin did not answer within 1s 500ms; please retry."),
                "{method}: {text}"
            );
        }
    }
    node.stop().await;
}
