//! The router in front of three real cache nodes in front of a real S3 server (s3s-fs),
//! driven by the real aws-sdk-s3 client: cross-node ranges byte-exact, writes invalidated
//! everywhere, a cache node stopped under a read loop with no failed or wrong read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use lakecache_cache_node::tier::disk::IoEngineChoice;
use lakecache_router::config::NodeConfig;
use lakecache_testkit::fleet::*;
use lakecache_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_across_nodes_are_byte_exact_and_pages_live_on_their_owners() {
    let f = fleet().await;
    let c = f.client();
    let data = pattern(60, 2 * 1024 * 1024 + 777); // 33 pages over 3 nodes
    f.origin.put_file("bkt", "t.lance/data/big.lance", &data);
    let all = body(c.get_object().bucket("bkt").key("t.lance/data/big.lance").send().await.unwrap()).await;
    assert!(all == data, "whole object through the router differs");
    for (a, b) in
        [(0u64, 0u64), (65530, 65545), (100_000, 1_500_000), (2 * 1024 * 1024, 2 * 1024 * 1024 + 776)]
    {
        let out = c
            .get_object()
            .bucket("bkt")
            .key("t.lance/data/big.lance")
            .range(format!("bytes={a}-{b}"))
            .send()
            .await
            .unwrap();
        assert_eq!(out.content_range(), Some(format!("bytes {a}-{b}/{}", data.len()).as_str()));
        assert!(body(out).await[..] == data[a as usize..=b as usize], "range {a}-{b}");
    }
    // Each node holds only the pages the ring gives it: the fleet's disks add up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts: Vec<usize> =
        f.nodes.iter().map(|n| n.as_ref().unwrap().node.cache.disk.as_ref().unwrap().page_count()).collect();
    assert_eq!(
        counts.iter().sum::<usize>(),
        33,
        "every page cached exactly once across the fleet: {counts:?}"
    );
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    let e = c.get_object().bucket("bkt").key("missing").send().await.unwrap_err();
    assert_eq!(err_code(&e), ("NoSuchKey".to_string(), 404));

    // No read sent a HEAD upstream: the first read of an object learns its size and version
    // from the answer for its first page, and an immutable Lance file's metadata is reused.
    let heads = || async {
        let text =
            reqwest::get(format!("http://{}/metrics", f.router_addr)).await.unwrap().text().await.unwrap();
        let series: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("router_upstream_requests_total") && l.contains("op=\"head\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect();
        assert_eq!(series.len(), 3, "one HEAD series per node:\n{text}");
        series.iter().sum::<f64>()
    };
    let h0 = heads().await;
    assert_eq!(h0, 0.0, "reads of an object need no HEAD");
    for a in [0u64, 70_000, 1_000_000] {
        let out = c
            .get_object()
            .bucket("bkt")
            .key("t.lance/data/big.lance")
            .range(format!("bytes={a}-{}", a + 999))
            .send()
            .await
            .unwrap();
        assert!(body(out).await[..] == data[a as usize..(a + 1000) as usize]);
    }
    assert_eq!(heads().await, h0, "no HEAD for an immutable key once known");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_router_are_seen_by_every_node() {
    let f = fleet().await;
    let c = f.client();
    for round in 0..4u64 {
        let data = pattern(70 + round, 500_000 + round as usize * 1000);
        c.put_object()
            .bucket("bkt")
            .key("t.lance/data/w.lance")
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        let got = body(c.get_object().bucket("bkt").key("t.lance/data/w.lance").send().await.unwrap()).await;
        assert!(got == data, "round {round}: stale or wrong bytes");
    }
    c.put_object()
        .bucket("bkt")
        .key("t.lance/_versions/1.manifest")
        .if_none_match("*")
        .body(ByteStream::from_static(b"v1"))
        .send()
        .await
        .unwrap();
    let e = c
        .put_object()
        .bucket("bkt")
        .key("t.lance/_versions/1.manifest")
        .if_none_match("*")
        .body(ByteStream::from_static(b"v1'"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e).1, 412);
    c.delete_object().bucket("bkt").key("t.lance/data/w.lance").send().await.unwrap();
    let e = c.get_object().bucket("bkt").key("t.lance/data/w.lance").send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_fails_no_read_is_ejected_and_rejoins() {
    let mut f = fleet().await;
    let data = pattern(80, 1024 * 1024);
    f.origin.put_file("bkt", "t.lance/data/k.lance", &data);
    let c = f.client();
    assert!(
        body(c.get_object().bucket("bkt").key("t.lance/data/k.lance").send().await.unwrap()).await == data
    );
    let reader = {
        let c = c.clone();
        let data = data.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            while tokio::time::Instant::now() < deadline && n < 2000 {
                let a = (n * 7919) % (1024 * 1024 - 200_000);
                let out = c
                    .get_object()
                    .bucket("bkt")
                    .key("t.lance/data/k.lance")
                    .range(format!("bytes={a}-{}", a + 150_000))
                    .send()
                    .await;
                let out = out.unwrap_or_else(|e| panic!("read {n} failed: {e:?}"));
                assert!(
                    body(out).await[..] == data[a as usize..=(a + 150_000) as usize],
                    "read {n}: wrong bytes"
                );
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.nodes[1].take().unwrap().stop().await;
    let reads = reader.await.unwrap();
    assert!(reads > 10, "only {reads} reads");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = f.router.fleet.member("cache-1").unwrap();
    assert!(!m.healthy(), "the stopped node is ejected");
    assert!(f.router.fleet.member("cache-0").unwrap().healthy());

    // Restarted on its address with its page file: it rejoins and owns its pages again.
    let node_dir = f._dir.path().join("node1");
    let back = Node::start_on(node_config(&f.origin, &node_dir, IoEngineChoice::Auto), f.addrs[1]).await;
    for _ in 0..100 {
        if m.healthy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(m.healthy(), "the node rejoins after good health checks");
    let before = back.node.cache.disk.as_ref().unwrap().page_count();
    let g0 = f.origin.counts.gets();
    assert!(
        body(c.get_object().bucket("bkt").key("t.lance/data/k.lance").send().await.unwrap()).await == data
    );
    assert_eq!(f.origin.counts.gets(), g0, "its pages were recovered from its page file, not refetched");
    assert!(before > 0, "the restarted node recovered its pages");
    f.nodes[1] = Some(back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_multipart_copy_and_batch_delete_through_the_router() {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
    let f = fleet().await;
    let c = f.client();
    for k in ["a/1", "a/2", "a/b/3", "ab", "c"] {
        c.put_object().bucket("bkt").key(k).body(ByteStream::from_static(b"x")).send().await.unwrap();
    }
    let keys = |o: &aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output| {
        o.contents().iter().filter_map(|o| o.key().map(String::from)).collect::<Vec<_>>()
    };
    let all = c.list_objects_v2().bucket("bkt").send().await.unwrap();
    assert_eq!(keys(&all), ["a/1", "a/2", "a/b/3", "ab", "c"]);
    let d = c.list_objects_v2().bucket("bkt").prefix("a/").delimiter("/").send().await.unwrap();
    assert_eq!(keys(&d), ["a/1", "a/2"]);
    assert_eq!(d.common_prefixes().iter().filter_map(|p| p.prefix()).collect::<Vec<_>>(), ["a/b/"]);
    let p1 = c.list_objects_v2().bucket("bkt").max_keys(2).send().await.unwrap();
    let p2 = c
        .list_objects_v2()
        .bucket("bkt")
        .max_keys(10)
        .continuation_token(p1.next_continuation_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!([keys(&p1), keys(&p2)].concat(), ["a/1", "a/2", "a/b/3", "ab", "c"]);

    let part1 = pattern(90, 5 * 1024 * 1024);
    let part2 = pattern(91, 100_000);
    let id = c
        .create_multipart_upload()
        .bucket("bkt")
        .key("t.lance/data/mp.lance")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let e1 = c
        .upload_part()
        .bucket("bkt")
        .key("t.lance/data/mp.lance")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(part1.clone()))
        .send()
        .await
        .unwrap();
    let e2 = c
        .upload_part()
        .bucket("bkt")
        .key("t.lance/data/mp.lance")
        .upload_id(&id)
        .part_number(2)
        .body(ByteStream::from(part2.clone()))
        .send()
        .await
        .unwrap();
    let done = CompletedMultipartUpload::builder()
        .parts(CompletedPart::builder().part_number(1).e_tag(e1.e_tag().unwrap()).build())
        .parts(CompletedPart::builder().part_number(2).e_tag(e2.e_tag().unwrap()).build())
        .build();
    c.complete_multipart_upload()
        .bucket("bkt")
        .key("t.lance/data/mp.lance")
        .upload_id(&id)
        .multipart_upload(done)
        .send()
        .await
        .unwrap();
    let got = body(c.get_object().bucket("bkt").key("t.lance/data/mp.lance").send().await.unwrap()).await;
    assert!(got == [part1, part2].concat(), "multipart object differs");

    c.copy_object().bucket("bkt").key("copy").copy_source("bkt/t.lance/data/mp.lance").send().await.unwrap();
    assert_eq!(body(c.get_object().bucket("bkt").key("copy").send().await.unwrap()).await, got);

    let del = Delete::builder()
        .objects(ObjectIdentifier::builder().key("copy").build().unwrap())
        .objects(ObjectIdentifier::builder().key("ab").build().unwrap())
        .build()
        .unwrap();
    let out = c.delete_objects().bucket("bkt").delete(del).send().await.unwrap();
    assert_eq!(out.deleted().len(), 2);
    assert_eq!(err_code(&c.get_object().bucket("bkt").key("copy").send().await.unwrap_err()).1, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_client_reads_the_fleet_without_the_router() {
    use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart, path::Path};
    let mut f = fleet().await;
    // A fleet client of its own, as a search node would build it: no router involved.
    let cfg = test_fleet_config();
    let nodes = f
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| NodeConfig { id: format!("cache-{i}"), url: n.as_ref().unwrap().url(), weight: 1.0 })
        .collect();
    let fleet = lakecache_fleet::membership::Fleet::new(nodes, cfg, "us-east-1".into()).unwrap();
    fleet.spawn_health_checks();
    let store = lakecache_fleet::client::FleetStore::new(fleet.clone(), "bkt").unwrap();

    let data = pattern(99, 1_500_000);
    let path = Path::from("t.lance/data/client.lance");
    store.put(&path, data.clone().into()).await.unwrap();
    assert_eq!(store.head(&path).await.unwrap().size, data.len() as u64);
    let got = store.get_range(&path, 60_000..1_400_000).await.unwrap();
    assert!(got[..] == data[60_000..1_400_000]);
    let ranges = store.get_ranges(&path, &[0..10, 70_000..70_100, 1_499_990..1_500_000]).await.unwrap();
    assert_eq!(ranges[1][..], data[70_000..70_100]);
    assert_eq!(store.get(&path).await.unwrap().bytes().await.unwrap()[..], data[..]);
    let listed: Vec<_> =
        futures::TryStreamExt::try_collect::<Vec<_>>(store.list(Some(&Path::from("t.lance")))).await.unwrap();
    assert_eq!(listed.len(), 1);

    let big = pattern(98, 6 * 1024 * 1024);
    let up = store.put_multipart(&Path::from("t.lance/data/mp2.lance")).await.unwrap();
    let mut w = WriteMultipart::new_with_chunk_size(up, 5 * 1024 * 1024);
    w.put(big.clone().into());
    w.finish().await.unwrap();
    assert!(
        store.get(&Path::from("t.lance/data/mp2.lance")).await.unwrap().bytes().await.unwrap()[..] == big[..]
    );

    // The router's own view (another process's, in production) sees the same bytes.
    assert!(
        body(f.client().get_object().bucket("bkt").key("t.lance/data/client.lance").send().await.unwrap())
            .await
            == data
    );

    f.nodes[2].take().unwrap().stop().await;
    for i in 0..20u64 {
        let a = i * 60_000;
        let got = store.get_range(&path, a..a + 100_000).await.unwrap();
        assert!(got[..] == data[a as usize..(a + 100_000) as usize], "read {i} after a node stopped");
    }
    store.delete(&path).await.unwrap();
    assert!(matches!(store.head(&path).await, Err(object_store::Error::NotFound { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_is_replaced_through_the_admin_api_without_failing_reads() {
    let f = fleet_with(|cfg| {
        cfg.admin.token = Some("router-admin-token".into());
        cfg.nodes.truncate(2); // the third node runs but is not a member yet
    })
    .await;
    let data = pattern(120, 2 * 1024 * 1024);
    f.origin.put_file("bkt", "t.lance/data/m.lance", &data);
    let c = f.client();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}/_lakecache/admin/nodes", f.router_addr);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let listed: serde_json::Value =
        http.get(&url).bearer_auth("router-admin-token").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["nodes"].as_array().unwrap().len(), 2);

    let reader = {
        let c = c.clone();
        let data = data.clone();
        tokio::spawn(async move {
            for n in 0..60u64 {
                let a = (n * 31_337) % (2 * 1024 * 1024 - 300_000);
                let out = c
                    .get_object()
                    .bucket("bkt")
                    .key("t.lance/data/m.lance")
                    .range(format!("bytes={a}-{}", a + 250_000))
                    .send()
                    .await;
                let got = body(out.unwrap_or_else(|e| panic!("read {n} failed: {e:?}"))).await;
                assert!(got[..] == data[a as usize..=(a + 250_000) as usize], "read {n}: wrong bytes");
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let three: Vec<serde_json::Value> = f
        .addrs
        .iter()
        .enumerate()
        .map(|(i, a)| serde_json::json!({"id": format!("cache-{i}"), "url": format!("http://{a}"), "weight": 1.0}))
        .collect();
    let dup = serde_json::json!([three[0], three[0]]);
    assert_eq!(
        http.put(&url).bearer_auth("router-admin-token").json(&dup).send().await.unwrap().status(),
        400
    );
    let r = http.put(&url).bearer_auth("router-admin-token").json(&three).send().await.unwrap();
    assert_eq!(r.status(), 200);
    reader.await.unwrap();
    assert_eq!(f.router.fleet.members().len(), 3);
    // The new member now owns its share: a full read caches pages on it.
    assert!(
        body(c.get_object().bucket("bkt").key("t.lance/data/m.lance").send().await.unwrap()).await == data
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        f.nodes[2].as_ref().unwrap().node.cache.disk.as_ref().unwrap().page_count() > 0,
        "the added node holds pages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_keys_are_replicated_and_reads_spread_over_replicas() {
    // replicas = 2 for Lance indices by default; spread after 4 reads here.
    let f = fleet_with(|cfg| cfg.fleet.replicate_after_reads = 4).await;
    let idx = pattern(130, 4 * 65536);
    f.origin.put_file("bkt", "t.lance/_indices/u/part.idx", &idx);
    let c = f.client();
    let pages = |f: &Fleet| -> Vec<usize> {
        f.nodes.iter().map(|n| n.as_ref().unwrap().node.cache.disk.as_ref().unwrap().page_count()).collect()
    };
    let read = || async {
        body(c.get_object().bucket("bkt").key("t.lance/_indices/u/part.idx").send().await.unwrap()).await
    };
    // While the key is cold for this router, every read goes to its first owner: one copy,
    // fetched from the origin once.
    assert!(read().await == idx);
    let g1 = f.origin.counts.gets();
    for _ in 0..3 {
        assert!(read().await == idx);
    }
    assert_eq!(f.origin.counts.gets(), g1, "reads of a cold replicated key fetch it once");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cold = pages(&f);
    assert_eq!(cold.iter().sum::<usize>(), 4, "one copy of each page: {cold:?}");
    // Hot now: reads spread, and the second owner caches its copy.
    for _ in 0..6 {
        assert!(read().await == idx);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = pages(&f);
    assert_eq!(counts.iter().sum::<usize>(), 8, "each of 4 pages on exactly 2 nodes: {counts:?}");
    // A data file is not replicated: one copy per page.
    let data = pattern(131, 4 * 65536);
    f.origin.put_file("bkt", "t.lance/data/d.lance", &data);
    for _ in 0..6 {
        assert!(
            body(c.get_object().bucket("bkt").key("t.lance/data/d.lance").send().await.unwrap()).await
                == data
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: usize =
        f.nodes.iter().map(|n| n.as_ref().unwrap().node.cache.disk.as_ref().unwrap().page_count()).sum();
    assert_eq!(after, 12, "4 more pages, one copy each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_owner_is_hedged_around() {
    // A "node" that accepts connections and never answers, first in the membership.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
        }
    });
    let f = fleet_with(|cfg| {
        cfg.fleet.hedge_after = Some(Duration::from_millis(50));
        cfg.fleet.health_interval = Duration::from_secs(3600); // no ejection: hedging alone must cope
        cfg.nodes
            .insert(0, NodeConfig { id: "silent".into(), url: format!("http://{hole_addr}"), weight: 1.0 });
    })
    .await;
    let data = pattern(140, 16 * 65536);
    // Objects whose first page (and so whose metadata) the silent node owns.
    let silent_heads: Vec<String> = (0..40)
        .map(|n| format!("t.lance/data/h{n}.lance"))
        .filter(|k| f.router.fleet.owners("bkt", k, 0, 1)[0].cfg.id == "silent")
        .take(4)
        .collect();
    assert!(!silent_heads.is_empty(), "the test needs the silent node to own some metadata");
    for k in &silent_heads {
        f.origin.put_file("bkt", k, &data);
    }
    f.origin.put_file("bkt", "t.lance/data/h.lance", &data);
    let c = f.client();
    let t0 = std::time::Instant::now();
    for k in &silent_heads {
        let got = body(c.get_object().bucket("bkt").key(k).range("bytes=0-99").send().await.unwrap()).await;
        assert_eq!(got[..], data[..100]);
    }
    let silent_pages = (0..16)
        .filter(|&p| f.router.fleet.owners("bkt", "t.lance/data/h.lance", p, 1)[0].cfg.id == "silent")
        .count();
    assert!(silent_pages > 0, "the test needs the silent node to own some pages");
    for i in 0..16u64 {
        // One page per read, so the silent node owns some of them.
        let a = i * 65536;
        let out = c
            .get_object()
            .bucket("bkt")
            .key("t.lance/data/h.lance")
            .range(format!("bytes={a}-{}", a + 65535))
            .send()
            .await;
        let out = out.unwrap_or_else(|e| panic!("page {i}: {e:?}"));
        assert!(body(out).await[..] == data[a as usize..(a + 65536) as usize]);
    }
    // Without hedging each page the silent node owns would wait for request_timeout (5 s).
    assert!(t0.elapsed() < Duration::from_secs(4), "took {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_and_prewarm_through_the_router_reach_the_owners() {
    let f = fleet_with(|cfg| cfg.admin.token = Some("router-admin-token".into())).await;
    let data = pattern(150, 10 * 65536 + 100);
    f.origin.put_file("bkt", "hot/table/blob.bin", &data);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}/_lakecache/admin/pins", f.router_addr);
    let r = http
        .post(&url)
        .bearer_auth("router-admin-token")
        .json(&serde_json::json!({"bucket": "bkt", "key": "hot/**", "prewarm": true}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["prewarmed"]["bytes"], data.len());
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3);
    let pinned = || f.nodes.iter().map(|n| n.as_ref().unwrap().node.cache.pinned_bytes()).sum::<u64>();
    for _ in 0..200 {
        if pinned() == data.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pinned(), data.len() as u64, "every page pinned once, on its owner");
    let g0 = f.origin.counts.gets();
    assert!(
        body(f.client().get_object().bucket("bkt").key("hot/table/blob.bin").send().await.unwrap()).await
            == data
    );
    assert_eq!(f.origin.counts.gets(), g0, "prewarmed: no origin read");
    let listed: serde_json::Value =
        http.get(&url).bearer_auth("router-admin-token").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(http.post(&url).json(&serde_json::json!({})).send().await.unwrap().status(), 401);
}

/// ListBuckets, ListObjects v1, HeadBucket and the whole multipart API (part numbers with
/// gaps, ListParts, UploadPartCopy, Abort) are passed to a node as they came, re-signed;
/// a completed upload is invalidated on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_the_router_does_not_model_reach_a_node() {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let f = fleet().await;
    let c = f.client();
    // The nodes' wildcard S3 origin cannot enumerate buckets: the router answers what a
    // node answers (the Python tests list a local origin's buckets through the router).
    let names = |o: aws_sdk_s3::operation::list_buckets::ListBucketsOutput| {
        o.buckets().iter().filter_map(|b| b.name().map(String::from)).collect::<Vec<_>>()
    };
    let via_router = names(c.list_buckets().send().await.unwrap());
    let direct = names(f.nodes[0].as_ref().unwrap().client().list_buckets().send().await.unwrap());
    assert_eq!(via_router, direct);
    c.head_bucket().bucket("bkt").send().await.unwrap();
    assert_eq!(err_code(&c.head_bucket().bucket("nope").send().await.unwrap_err()).1, 404);

    for k in ["l/1", "l/2", "l/d/3", "l/é x+y"] {
        c.put_object().bucket("bkt").key(k).body(ByteStream::from_static(b"x")).send().await.unwrap();
    }
    let v1 = c.list_objects().bucket("bkt").prefix("l/").delimiter("/").send().await.unwrap();
    let keys: Vec<_> = v1.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["l/1", "l/2", "l/é x+y"]);
    assert_eq!(v1.common_prefixes().iter().filter_map(|p| p.prefix()).collect::<Vec<_>>(), ["l/d/"]);
    let after = c.list_objects().bucket("bkt").prefix("l/").marker("l/2").send().await.unwrap();
    assert_eq!(after.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), ["l/d/3", "l/é x+y"]);

    // The key is read (and cached on its owners) before a multipart upload replaces it.
    let key = "t.lance/data/parts.lance";
    let old = pattern(70, 300_000);
    c.put_object().bucket("bkt").key(key).body(ByteStream::from(old.clone())).send().await.unwrap();
    assert!(body(c.get_object().bucket("bkt").key(key).send().await.unwrap()).await == old);
    let src = pattern(71, 6 * 1024 * 1024);
    c.put_object().bucket("bkt").key("src.bin").body(ByteStream::from(src.clone())).send().await.unwrap();

    let id = c
        .create_multipart_upload()
        .bucket("bkt")
        .key(key)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let p3 = pattern(72, 5 * 1024 * 1024);
    let p9 = pattern(73, 12_345);
    let e3 = c
        .upload_part()
        .bucket("bkt")
        .key(key)
        .upload_id(&id)
        .part_number(3)
        .body(ByteStream::from(p3.clone()))
        .send()
        .await
        .unwrap();
    let e7 = c
        .upload_part_copy()
        .bucket("bkt")
        .key(key)
        .upload_id(&id)
        .part_number(7)
        .copy_source("bkt/src.bin")
        .copy_source_range("bytes=1000-5243879")
        .send()
        .await
        .unwrap();
    let e9 = c
        .upload_part()
        .bucket("bkt")
        .key(key)
        .upload_id(&id)
        .part_number(9)
        .body(ByteStream::from(p9.clone()))
        .send()
        .await
        .unwrap();
    let parts = c.list_parts().bucket("bkt").key(key).upload_id(&id).send().await.unwrap();
    let listed: Vec<_> =
        parts.parts().iter().map(|p| (p.part_number().unwrap(), p.size().unwrap())).collect();
    assert_eq!(listed, [(3, p3.len() as i64), (7, 5_242_880), (9, p9.len() as i64)]);
    let e7 = e7.copy_part_result().unwrap().e_tag().unwrap().to_string();
    let done = CompletedMultipartUpload::builder()
        .parts(CompletedPart::builder().part_number(3).e_tag(e3.e_tag().unwrap()).build())
        .parts(CompletedPart::builder().part_number(7).e_tag(e7).build())
        .parts(CompletedPart::builder().part_number(9).e_tag(e9.e_tag().unwrap()).build())
        .build();
    c.complete_multipart_upload()
        .bucket("bkt")
        .key(key)
        .upload_id(&id)
        .multipart_upload(done)
        .send()
        .await
        .unwrap();
    let want = [&p3[..], &src[1000..=5_243_879], &p9[..]].concat();
    let got = body(c.get_object().bucket("bkt").key(key).send().await.unwrap()).await;
    assert!(got == want, "the completed upload replaced the cached object on every node");
    let r = c.get_object().bucket("bkt").key(key).range("bytes=5242000-5243000").send().await.unwrap();
    assert!(body(r).await[..] == want[5_242_000..=5_243_000]);

    let id = c
        .create_multipart_upload()
        .bucket("bkt")
        .key("aborted")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    c.abort_multipart_upload().bucket("bkt").key("aborted").upload_id(&id).send().await.unwrap();
    let e = c.list_parts().bucket("bkt").key("aborted").upload_id(&id).send().await.unwrap_err();
    assert_eq!(err_code(&e), ("NoSuchUpload".to_string(), 404));

    // PUT and COPY pass through whole: content type, conditional headers, other buckets.
    std::fs::create_dir_all(f.origin.root.join("other")).unwrap();
    let put = c
        .put_object()
        .bucket("other")
        .key("img.png")
        .content_type("image/png")
        .body(ByteStream::from(pattern(80, 70_000)))
        .send()
        .await
        .unwrap();
    let head = c.head_object().bucket("other").key("img.png").send().await.unwrap();
    assert_eq!(head.content_type(), Some("image/png"));
    c.copy_object().bucket("bkt").key("copied.png").copy_source("other/img.png").send().await.unwrap();
    assert!(
        body(c.get_object().bucket("bkt").key("copied.png").send().await.unwrap()).await
            == pattern(80, 70_000)
    );
    let e = c
        .put_object()
        .bucket("other")
        .key("img.png")
        .if_match("\"not-the-etag\"")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e).1, 412);
    c.put_object()
        .bucket("other")
        .key("img.png")
        .if_match(put.e_tag().unwrap())
        .body(ByteStream::from_static(b"replaced"))
        .send()
        .await
        .unwrap();
    assert_eq!(body(c.get_object().bucket("other").key("img.png").send().await.unwrap()).await, b"replaced");

    // Forwarded calls are authenticated by the router like every other.
    let stranger = client_for(&format!("http://{}", f.router_addr), ACCESS_KEY, "wrong-secret");
    let e = stranger.list_buckets().send().await.unwrap_err();
    assert_eq!(err_code(&e).1, 403);
}

/// The fleet's total of the node metric series starting with `prefix`. The nodes run in
/// this process and share its metrics recorder, so one node's /metrics has every node's
/// counts.
async fn nodes_metric(f: &Fleet, prefix: &str) -> f64 {
    let n = f.nodes.iter().flatten().next().unwrap();
    let text = reqwest::get(format!("{}/metrics", n.url())).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
}

/// `readers` tasks, each making `each` reads of 4 KiB (some across a page boundary) of the
/// objects, every byte checked. Returns how many reads were made.
async fn read_concurrently(
    c: &aws_sdk_s3::Client,
    objects: &[(String, Vec<u8>)],
    readers: u64,
    each: u64,
) -> u64 {
    let mut tasks = Vec::new();
    for r in 0..readers {
        let (c, objects) = (c.clone(), objects.to_vec());
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                let (key, data) = &objects[((r + i) as usize) % objects.len()];
                let a = (r * 7919 + i * 104_729) % (data.len() as u64 - 4096);
                let out = c
                    .get_object()
                    .bucket("bkt")
                    .key(key)
                    .range(format!("bytes={a}-{}", a + 4095))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("read {r}/{i} of {key} failed: {e:?}"));
                assert!(
                    body(out).await[..] == data[a as usize..(a + 4096) as usize],
                    "read {r}/{i} of {key}: wrong bytes"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    readers * each
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_small_reads_reach_the_nodes_in_batches_byte_exact() {
    // One exchange per node before reads queue: 24 concurrent readers must batch.
    let mut f = fleet_with(|c| c.fleet.batch_in_flight = 1).await;
    let c = f.client();
    let objects: Vec<(String, Vec<u8>)> =
        (0..4).map(|i| (format!("t.lance/data/b{i}.lance"), pattern(90 + i, 512 * 1024 + 333))).collect();
    for (k, d) in &objects {
        f.origin.put_file("bkt", k, d);
    }
    // Cold: the router knows the objects (one small read each) but the nodes hold almost no
    // page: batched reads are deferred by the nodes and read singly, bytes still exact.
    for (k, _) in &objects {
        c.get_object().bucket("bkt").key(k).range("bytes=0-0").send().await.unwrap();
    }
    read_concurrently(&c, &objects, 24, 5).await;
    assert!(nodes_metric(&f, "cachenode_fleet_batch_items_total{outcome=\"deferred\"}").await > 0.0);

    // Warm (every page in the nodes' memory): batches answer from memory.
    for (k, d) in &objects {
        assert!(body(c.get_object().bucket("bkt").key(k).send().await.unwrap()).await == *d);
    }
    let served0 = nodes_metric(&f, "cachenode_fleet_batch_items_total{outcome=\"served\"}").await;
    let requests0 = nodes_metric(&f, "cachenode_fleet_requests_total{op=\"get\"").await
        + nodes_metric(&f, "cachenode_fleet_requests_total{op=\"batch\"").await;
    let reads = read_concurrently(&c, &objects, 24, 20).await;
    let served = nodes_metric(&f, "cachenode_fleet_batch_items_total{outcome=\"served\"}").await - served0;
    let requests = nodes_metric(&f, "cachenode_fleet_requests_total{op=\"get\"").await
        + nodes_metric(&f, "cachenode_fleet_requests_total{op=\"batch\"").await
        - requests0;
    assert!(served > 0.0, "no read was served in a batch");
    // Batches of several reads: well under one node request per read (a read across a page
    // boundary makes two, a deferred one a batch and a single read).
    assert!(requests < 0.8 * reads as f64, "{requests} node requests for {reads} reads");
    assert_eq!(nodes_metric(&f, "cachenode_fleet_batch_items_total{outcome=\"error\"}").await, 0.0);

    // A node stopped while batches are in flight: every read still completes, byte-exact.
    let readers = {
        let (c, objects) = (c.clone(), objects.clone());
        tokio::spawn(async move { read_concurrently(&c, &objects, 24, 20).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.nodes[2].take().unwrap().stop().await;
    readers.await.unwrap();
    read_concurrently(&c, &objects, 24, 5).await;
}
