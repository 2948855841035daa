//! Crash safety of the disk tier with the real binary: `kill -9` while pages are being
//! written, restart on the same page file, and every byte served must still be right.
//! Also: a large range streams (its first bytes leave before later pages exist).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lakecache_testkit::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn_node(dir: &std::path::Path, origin_root: &std::path::Path, port: u16) -> Child {
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[auth]
anonymous = true
[cache]
page_size = "64 KiB"
memory_capacity = "1 MiB"
multipart_dir = "{d}/multipart"
[disk]
path = "{d}/pages.bin"
capacity = "16 MiB"
[pins]
budget = "1 MiB"
state_file = "{d}/pins.json"
[[origins]]
bucket = "*"
kind = "local"
root = "{o}"
"#,
        d = dir.display(),
        o = origin_root.display()
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("node on {port} did not come up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_never_serves_torn_pages() {
    let dir = tempfile::tempdir().unwrap();
    let origin_root = dir.path().join("origin");
    let objects: Vec<Vec<u8>> = (0..24).map(|i| pattern(500 + i, 1024 * 1024)).collect();
    for (i, o) in objects.iter().enumerate() {
        let p = origin_root.join(format!("bkt/t.lance/data/{i}.lance"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, o).unwrap();
    }
    let node_dir = dir.path().join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..6 {
        let port = free_port();
        let mut child = spawn_node(&node_dir, &origin_root, port);
        wait_up(port).await;
        // Read everything (24 MiB through a 16 MiB disk: constant writes and evictions),
        // checking every byte, and kill -9 at a random moment of this loop.
        let kill_after = 5 + (next() % 40) as usize;
        for n in 0..kill_after {
            let i = (next() % objects.len() as u64) as usize;
            let a = next() % (1024 * 1024 - 200_000);
            let b = a + (next() % 200_000);
            let r = http
                .get(format!("http://127.0.0.1:{port}/bkt/t.lance/data/{i}.lance"))
                .header("Range", format!("bytes={a}-{b}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 206, "round {round} request {n}");
            let got = r.bytes().await.unwrap();
            assert!(got[..] == objects[i][a as usize..=b as usize], "round {round} request {n}: wrong bytes");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    // After the last crash: a full read of every object is exact.
    let port = free_port();
    let mut child = spawn_node(&node_dir, &origin_root, port);
    wait_up(port).await;
    for (i, o) in objects.iter().enumerate() {
        let got = http
            .get(format!("http://127.0.0.1:{port}/bkt/t.lance/data/{i}.lance"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(got[..] == o[..], "object {i} differs after crashes");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_range_streams_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    let data = pattern(40, 2 * 1024 * 1024);
    origin.put_file("bkt", "t.lance/data/s.lance", &data);
    let mut cfg = node_config(
        &origin,
        &dir.path().join("node"),
        lakecache_cache_node::tier::disk::IoEngineChoice::Auto,
    );
    cfg.auth.anonymous = true;
    cfg.cache.max_fetch = bytesize::ByteSize::kib(64); // one page per origin GET
    cfg.cache.readahead = bytesize::ByteSize::kib(64);
    let node = Node::start(cfg).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // Cache the first page only.
    let r = http
        .get(format!("{}/bkt/t.lance/data/s.lance", node.url()))
        .header("Range", "bytes=0-100")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), &data[..101]);
    // With the origin down, the whole-object GET still starts: headers and the first page
    // leave before the rest exists, then the body fails (never wrong bytes).
    origin.counts.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut r = http.get(format!("{}/bkt/t.lance/data/s.lance", node.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_length(), Some(data.len() as u64));
    let mut got = Vec::new();
    let mut failed = false;
    loop {
        match r.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body must fail, not end short and silently");
    assert!(got.len() >= 65536 && got.len() < data.len(), "got {} bytes", got.len());
    assert_eq!(got[..], data[..got.len()]);
    node.stop().await;
}
