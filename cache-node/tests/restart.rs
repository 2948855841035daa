//! A restarted node serves what it holds with the origin down: after `kill -9` (and after a
//! clean stop) of the real binary, Lance's immutable files it had on disk are answered —
//! bytes and metadata as before — without a single origin request, while a miss fails
//! fast with 503.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lakecache_testkit::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn_node(dir: &std::path::Path, origin: &Origin, port: u16) -> Child {
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[[auth.keys]]
access_key = "{ACCESS_KEY}"
secret_key = "{SECRET_KEY}"
[admin]
token = "{ADMIN_TOKEN}"
[cache]
page_size = "64 KiB"
memory_capacity = "1 MiB"
multipart_dir = "{d}/multipart"
origin_timeout = "2s"
[disk]
path = "{d}/pages.bin"
capacity = "32 MiB"
[pins]
budget = "1 MiB"
state_file = "{d}/pins.json"
[[origins]]
bucket = "*"
kind = "s3"
endpoint = "http://{o}"
region = "us-east-1"
access_key_id = "{ORIGIN_KEY}"
secret_access_key = "{ORIGIN_SECRET}"
allow_http = true
"#,
        d = dir.display(),
        o = origin.addr,
    );
    let path = dir.join("node.toml");
    std::fs::write(&path, cfg).unwrap();
    Command::new(env!("CARGO_BIN_EXE_cache-node"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_up(port: u16) {
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..300 {
        if c.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node on {port} did not come up");
}

async fn disk_pages(port: u16) -> u64 {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/_lakecache/admin/stats"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["disk"]["pages"].as_u64().unwrap()
}

fn origin_requests(o: &Origin) -> u64 {
    o.counts.gets() + o.counts.heads() + o.counts.other.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_serves_what_it_holds_with_the_origin_down() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    let node_dir = dir.path().join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    let files: Vec<(String, Vec<u8>)> = vec![
        ("t.lance/data/a.lance".into(), pattern(1, 300_000)),
        ("t.lance/_indices/i1/index.idx".into(), pattern(2, 70_000)),
        ("t.lance/_versions/3.manifest".into(), pattern(3, 5_000)),
    ];
    for (k, d) in &files {
        origin.put_file("bkt", k, d);
    }
    origin.put_file("bkt", "t.lance/data/cold.lance", &pattern(4, 10_000));
    let port = free_port();
    let mut child = spawn_node(&node_dir, &origin, port);
    wait_up(port).await;
    let c = client_for(&format!("http://127.0.0.1:{port}"), ACCESS_KEY, SECRET_KEY);
    let mut before = Vec::new();
    for (k, d) in &files {
        let out = c.get_object().bucket("bkt").key(k).send().await.unwrap();
        before.push((
            out.e_tag().map(str::to_string),
            out.last_modified().cloned(),
            out.content_type().map(str::to_string),
        ));
        assert!(body(out).await == *d);
    }
    // 5 + 2 + 1 pages of 64 KiB on disk.
    for _ in 0..200 {
        if disk_pages(port).await >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(disk_pages(port).await, 8);

    for (round, how) in ["kill -9", "clean stop"].into_iter().enumerate() {
        if round == 0 {
            child.kill().unwrap(); // SIGKILL: no shutdown, no flush
        } else {
            // SAFETY: sending SIGTERM to our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        child.wait().unwrap();
        origin.counts.down.store(true, Ordering::SeqCst);
        let asked = origin_requests(&origin);
        child = spawn_node(&node_dir, &origin, port);
        wait_up(port).await;
        for ((k, d), (etag, lm, ct)) in files.iter().zip(&before) {
            let out = c.get_object().bucket("bkt").key(k).send().await.unwrap_or_else(|e| {
                panic!("{how}: GET {k} with the origin down: {e:?}");
            });
            assert_eq!(out.e_tag().map(str::to_string), *etag, "{how}: {k}");
            assert_eq!(out.last_modified().cloned(), *lm, "{how}: {k}");
            assert_eq!(out.content_type().map(str::to_string), *ct, "{how}: {k}");
            assert!(body(out).await == *d, "{how}: {k} bytes");
            let h = c.head_object().bucket("bkt").key(k).send().await.unwrap();
            assert_eq!(h.content_length(), Some(d.len() as i64));
        }
        assert_eq!(origin_requests(&origin), asked, "{how}: no origin request for what the node holds");
        // A miss still fails, and fast.
        let t0 = Instant::now();
        let once = aws_sdk_s3::Client::from_conf(
            c.config().to_builder().retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()).build(),
        );
        let e = once.get_object().bucket("bkt").key("t.lance/data/cold.lance").send().await.unwrap_err();
        assert_eq!(err_code(&e).1, 503, "{how}: a miss with the origin down");
        assert!(t0.elapsed() < Duration::from_secs(3), "{how}: the miss took {:?}", t0.elapsed());
        origin.counts.down.store(false, Ordering::SeqCst);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
