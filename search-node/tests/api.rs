//! The search node's REST API end to end: a real S3 origin (s3s-fs), two real cache nodes,
//! and the search node reading through them with the in-process ring client; requests over
//! HTTP with the bodies LanceDB clients send, Arrow IPC answers decoded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use lakecache_cache_node::tier::disk::IoEngineChoice;
use lakecache_router::config::NodeConfig;
use lakecache_search_node::config::{NamespaceConfig, SearchConfig};
use lakecache_testkit::*;
use serde_json::{Value, json};

const KEY: &str = "search-test-key";
const DIM: i32 = 8;

struct Stack {
    _dir: tempfile::TempDir,
    origin: Origin,
    nodes: Vec<Node>,
    api: Api,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A search node's URL and a client for it.
struct Api {
    url: String,
    http: reqwest::Client,
}

impl std::ops::Deref for Stack {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

fn search_config(nodes: &[Node]) -> SearchConfig {
    let mut cfg = SearchConfig::default();
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.server.read_consistency_interval = Duration::from_millis(500);
    cfg.auth.api_keys = vec![KEY.into()];
    cfg.namespaces = vec![
        NamespaceConfig { name: String::new(), uri: "s3://bkt/tables".into() },
        NamespaceConfig { name: "media".into(), uri: "s3://bkt/media".into() },
    ];
    cfg.fleet.page_size = bytesize::ByteSize::kib(64);
    cfg.fleet.secret = FLEET_SECRET.into();
    cfg.fleet.node_key = lakecache_cache_node::config::AccessKey {
        access_key: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
    };
    cfg.fleet.node_admin_token = ADMIN_TOKEN.into();
    cfg.fleet.health_interval = Duration::from_millis(100);
    cfg.nodes = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| NodeConfig { id: format!("cache-{i}"), url: n.url(), weight: 1.0 })
        .collect();
    cfg
}

async fn serve(cfg: SearchConfig) -> (String, tokio::sync::oneshot::Sender<()>) {
    let node = lakecache_search_node::SearchNode::build(cfg).unwrap();
    node.join_fleet().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(node.serve(listener, async {
        let _ = rx.await;
    }));
    (url, tx)
}

async fn stack() -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    std::fs::create_dir_all(origin.root.join("bkt")).unwrap();
    let mut nodes = Vec::new();
    for i in 0..2 {
        nodes.push(
            Node::start(node_config(&origin, &dir.path().join(format!("node{i}")), IoEngineChoice::Auto))
                .await,
        );
    }
    let (url, stop) = serve(search_config(&nodes)).await;
    Stack { _dir: dir, origin, nodes, api: Api { url, http: reqwest::Client::new() }, _stop: stop }
}

/// Rows `start..start+n`: id, an 8-d vector in four clusters, text, category.
fn rows(start: i64, n: usize) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let mut v = Vec::with_capacity(n * DIM as usize);
    for &id in &ids {
        let c = (id % 4) as f32 * 10.0;
        for d in 0..DIM {
            v.push(c + ((id * 31 + i64::from(d) * 7) % 13) as f32 / 13.0);
        }
    }
    let words = ["harbor", "sunset", "mountain", "river", "city"];
    let text: Vec<String> = ids.iter().map(|i| format!("{} view {}", words[(*i % 5) as usize], i)).collect();
    let cat: Vec<&str> = ids.iter().map(|i| ["a", "b", "c"][(*i % 3) as usize]).collect();
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let vector =
        FixedSizeListArray::try_new(item.clone(), DIM, Arc::new(Float32Array::from(v)), None).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("vector", DataType::FixedSizeList(item, DIM), true),
        Field::new("text", DataType::Utf8, true),
        Field::new("category", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(vector),
            Arc::new(StringArray::from(text)),
            Arc::new(StringArray::from(cat)),
        ],
    )
    .unwrap()
}

/// An Arrow IPC stream with LZ4-compressed buffers, as LanceDB clients send.
fn ipc(batch: &RecordBatch) -> Vec<u8> {
    let opts = arrow_ipc::writer::IpcWriteOptions::default()
        .try_with_compression(Some(arrow_ipc::CompressionType::LZ4_FRAME))
        .unwrap();
    let mut w =
        arrow_ipc::writer::StreamWriter::try_new_with_options(Vec::new(), &batch.schema(), opts).unwrap();
    w.write(batch).unwrap();
    w.finish().unwrap();
    w.into_inner().unwrap()
}

fn read_ipc_file(b: &[u8]) -> RecordBatch {
    let r = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(b.to_vec()), None).unwrap();
    let schema = r.schema();
    let batches: Vec<RecordBatch> = r.map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

fn ids(b: &RecordBatch) -> Vec<i64> {
    b.column_by_name("id").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec()
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .header("x-api-key", KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
    async fn json(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.post(path, body).await;
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    async fn query(&self, table: &str, body: Value) -> RecordBatch {
        let r = self.post(&format!("/v1/table/{table}/query/"), body).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/vnd.apache.arrow.file");
        read_ipc_file(&r.bytes().await.unwrap())
    }
    /// POSTs `body` as it is (malformed bodies).
    async fn post_raw(&self, path: &str, body: &'static str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .header("x-api-key", KEY)
            .body(body)
            .send()
            .await
            .unwrap()
    }
    /// Appends `batch` (Arrow IPC, as LanceDB clients send it).
    async fn insert(&self, table: &str, batch: &RecordBatch) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/table/{table}/insert/", self.url))
            .header("x-api-key", KEY)
            .header("content-type", "application/vnd.apache.arrow.stream")
            .body(ipc(batch))
            .send()
            .await
            .unwrap()
    }
    async fn create(&self, table: &str, batch: &RecordBatch) -> u16 {
        self.http
            .post(format!("{}/v1/table/{table}/create/", self.url))
            .header("x-api-key", KEY)
            .header("content-type", "application/vnd.apache.arrow.stream")
            .body(ipc(batch))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_created_listed_described_counted_and_appended() {
    let s = stack().await;
    assert_eq!(s.create("items", &rows(0, 600)).await, 200);
    assert_eq!(s.create("media$clips", &rows(0, 10)).await, 200);
    // Created through the fleet: the files are in the origin.
    assert!(s.origin.root.join("bkt/tables/items.lance/_versions").is_dir());
    assert!(s.origin.root.join("bkt/media/clips.lance/_versions").is_dir());
    let r = s.http.get(format!("{}/v1/table/", s.url)).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(r.headers()["phalanx-version"], "0.3.0");
    assert_eq!(r.json::<Value>().await.unwrap()["tables"], json!(["items"]));
    let r = s
        .http
        .get(format!("{}/v1/namespace/media/table/list", s.url))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["tables"], json!(["clips"]));

    let r = s.post("/v1/table/items/describe/", json!({})).await;
    assert_eq!(r.headers()["x-lancedb-version"], "1");
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["version"], 1);
    let fields: Vec<&str> =
        d["schema"]["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(fields, ["id", "vector", "text", "category"]);
    assert_eq!(d["schema"]["fields"][1]["type"]["type"], "fixed_size_list");
    assert_eq!(d["schema"]["fields"][1]["type"]["length"], DIM);

    assert_eq!(s.json("/v1/table/items/count_rows/", json!({"version": null})).await, (200, json!(600)));
    assert_eq!(
        s.json("/v1/table/items/count_rows/", json!({"predicate": "category = 'a'"})).await,
        (200, json!(200))
    );

    let r = s.insert("items", &rows(600, 150)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);
    assert_eq!(s.json("/v1/table/items/count_rows/", json!({})).await, (200, json!(750)));
    // The old version stays readable.
    assert_eq!(s.json("/v1/table/items/count_rows/", json!({"version": 1})).await, (200, json!(600)));
    let (_, v) = s.json("/v1/table/items/version/list/", json!(null)).await;
    let versions: Vec<u64> =
        v["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [1, 2]);

    // Creating again is refused the way LanceDB clients recognise; exist_ok opens it.
    let r = s
        .http
        .post(format!("{}/v1/table/items/create/", s.url))
        .header("x-api-key", KEY)
        .body(ipc(&rows(0, 5)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("already exists"));
    let post_ipc = |path: String, batch: RecordBatch| {
        let req = s.http.post(format!("{}{path}", s.url)).header("x-api-key", KEY).body(ipc(&batch));
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (st, b) = post_ipc("/v1/table/items/create/?mode=exist_ok".into(), rows(0, 5)).await;
    assert_eq!((st, &b["version"]), (200, &json!(2)), "exist_ok opens the table as it is");
    assert_eq!(s.json("/v1/table/items/count_rows/", json!({})).await.1, json!(750));
    let (st, _) = post_ipc("/v1/table/media$clips/insert/?mode=overwrite".into(), rows(100, 3)).await;
    assert_eq!(st, 200);
    assert_eq!(s.json("/v1/table/media$clips/count_rows/", json!({})).await.1, json!(3));
    let (st, _) = post_ipc("/v1/table/media$clips/create/?mode=overwrite".into(), rows(0, 7)).await;
    assert_eq!(st, 200);
    assert_eq!(s.json("/v1/table/media$clips/count_rows/", json!({})).await.1, json!(7));
    assert_eq!(post_ipc("/v1/table/media$clips/create/?mode=sideways".into(), rows(0, 1)).await.0, 400);
    assert_eq!(post_ipc("/v1/table/never_made/insert/".into(), rows(0, 1)).await.0, 404);

    // The plan a query would run.
    let (st, plan) = s
        .json(
            "/v1/table/items/explain_plan/",
            json!({"verbose": false, "query": {"vector": [], "k": 3, "filter": "id < 5"}}),
        )
        .await;
    assert_eq!(st, 200);
    assert!(
        plan.as_str().unwrap().contains("id < Int64(5)") || plan.as_str().unwrap().contains("id < 5"),
        "{plan}"
    );

    assert_eq!(s.json("/v1/table/media$clips/drop/", json!(null)).await.0, 200);
    let (st, b) = s.json("/v1/table/media$clips/describe/", json!(null)).await;
    assert_eq!(st, 404, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_full_text_and_filtered_queries() {
    let s = stack().await;
    assert_eq!(s.create("items", &rows(0, 1000)).await, 200);
    let (st, b) = s
        .json(
            "/v1/table/items/create_index/",
            json!({"column": "vector", "index_type": "IVF_PQ", "metric_type": "l2", "num_partitions": 4, "num_sub_vectors": 2}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s
        .json(
            "/v1/table/items/create_index/",
            json!({"column": "text", "index_type": "FTS", "with_position": false}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let q: Vec<f32> = (0..DIM).map(|d| 20.0 + d as f32 / 20.0).collect(); // cluster of id % 4 == 2

    // LanceDB's vector query body, as the Python client sends it.
    let got = s
        .query(
            "items",
            json!({"vector": q, "k": 5, "nprobes": 4, "minimum_nprobes": 4, "maximum_nprobes": 4, "refine_factor": null,
                   "ef": null, "lower_bound": null, "upper_bound": null, "prefilter": true, "version": null}),
        )
        .await;
    assert_eq!(got.num_rows(), 5);
    assert!(ids(&got).iter().all(|i| i % 4 == 2), "{:?}", ids(&got));
    let d = got.column_by_name("_distance").unwrap().as_any().downcast_ref::<Float32Array>().unwrap();
    assert!(d.values().windows(2).all(|w| w[0] <= w[1]), "sorted by distance");

    // Filter, projection, row ids, offset, exact search.
    let got = s
        .query(
            "items",
            json!({"vector": q, "k": 4, "offset": 2, "filter": "category = 'a'", "prefilter": true, "columns": ["id", "category"],
                   "with_row_id": true, "bypass_vector_index": true, "refine_factor": 2}),
        )
        .await;
    assert_eq!(got.num_rows(), 4);
    assert!(got.column_by_name("_rowid").is_some());
    assert!(got.column_by_name("vector").is_none());
    let exact = s
        .query("items", json!({"vector": q, "k": 6, "filter": "category = 'a'", "bypass_vector_index": true}))
        .await;
    assert_eq!(ids(&got), ids(&exact)[2..6].to_vec(), "offset skips the first results");
    assert!(ids(&exact).iter().all(|i| i % 3 == 0));

    // Distance bounds: the upper bound is exclusive, the lower inclusive (many rows tie:
    // the generator repeats offsets).
    let d5: Vec<f32> = d.values().to_vec();
    let none = s.query("items", json!({"vector": q, "k": 5, "nprobes": 4, "upper_bound": d5[0]})).await;
    assert_eq!(none.num_rows(), 0);
    let lower = d5[4] + 1e-3;
    let far = s.query("items", json!({"vector": q, "k": 5, "nprobes": 4, "lower_bound": lower})).await;
    let fd = far.column_by_name("_distance").unwrap().as_any().downcast_ref::<Float32Array>().unwrap();
    assert_eq!(far.num_rows(), 5);
    assert!(fd.values().iter().all(|&x| x >= lower), "{:?}", fd.values());
    let fast = s.query("items", json!({"vector": q, "k": 5, "nprobes": 4, "fast_search": true})).await;
    assert_eq!(fast.num_rows(), 5);

    // A batch of two query vectors answers with query_index.
    let q2: Vec<f32> = (0..DIM).map(|d| d as f32 / 20.0).collect();
    let got = s.query("items", json!({"vector": [q, q2], "k": 3, "nprobes": 4})).await;
    assert_eq!(got.num_rows(), 6);
    assert!(got.column_by_name("query_index").is_some());

    // Full-text search: the legacy body and the structured one.
    let got = s
        .query("items", json!({"vector": [], "k": 10, "full_text_query": {"columns": [], "query": "harbor"}}))
        .await;
    assert_eq!(got.num_rows(), 10);
    assert!(got.column_by_name("_score").is_some());
    assert!(ids(&got).iter().all(|i| i % 5 == 0));
    let got = s
        .query(
            "items",
            json!({"vector": [], "k": 5, "filter": "category = 'b'", "full_text_query": {"query": {"match": {"column": "text",
                   "terms": "sunset", "boost": 1.0, "fuzziness": 0, "max_expansions": 50, "operator": "Or", "prefix_length": 0}}}}),
        )
        .await;
    assert_eq!(got.num_rows(), 5);
    assert!(ids(&got).iter().all(|i| i % 5 == 1 && i % 3 == 1));

    // Hybrid in one request: vector and full-text results fused by reciprocal rank (k = 60).
    let v5 = ids(&s.query("items", json!({"vector": q, "k": 5, "nprobes": 4})).await);
    let f5 = ids(&s
        .query("items", json!({"vector": [], "k": 5, "full_text_query": {"columns": [], "query": "city"}}))
        .await);
    let got = s
        .query(
            "items",
            json!({"vector": q, "k": 5, "nprobes": 4, "full_text_query": {"columns": [], "query": "city"}}),
        )
        .await;
    assert_eq!(got.num_rows(), 5);
    assert!(got.column_by_name("_rowid").is_none());
    let rel =
        got.column_by_name("_relevance_score").unwrap().as_any().downcast_ref::<Float32Array>().unwrap();
    assert!(rel.values().windows(2).all(|w| w[0] >= w[1]), "best fused score first");
    // The same fusion computed here from the two separate answers: each list contributes
    // 1 / (60 + rank) (rank from 1); ties keep first appearance, vector results first.
    let mut expect: Vec<(i64, f32)> = Vec::new();
    for list in [&v5, &f5] {
        for (r, id) in list.iter().enumerate() {
            let add = 1.0 / (60.0 + r as f32 + 1.0);
            match expect.iter_mut().find(|e| e.0 == *id) {
                Some(e) => e.1 += add,
                None => expect.push((*id, add)),
            }
        }
    }
    expect.sort_by(|a, b| b.1.total_cmp(&a.1));
    assert_eq!(ids(&got), expect.iter().take(5).map(|e| e.0).collect::<Vec<_>>());
    assert!((rel.value(0) - expect[0].1).abs() < 1e-6);

    // A filtered scan with order and limit (LanceDB sends i64::MAX as no limit).
    let got = s
        .query(
            "items",
            json!({"vector": [], "k": 3, "filter": "id < 100", "order_by": [{"column_name": "id", "ascending": false}]}),
        )
        .await;
    assert_eq!(ids(&got), [99, 98, 97]);
    let got =
        s.query("items", json!({"vector": [], "k": 9223372036854775807_i64, "filter": "id >= 990"})).await;
    assert_eq!(got.num_rows(), 10);

    // curl users: JSON rows.
    let r = s
        .http
        .post(format!("{}/v1/table/items/query/", s.url))
        .header("x-api-key", KEY)
        .header("accept", "application/json")
        .json(&json!({"vector": [], "k": 2, "filter": "id < 2", "columns": ["id", "category"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!([{"id": 0, "category": "a"}, {"id": 1, "category": "b"}])
    );

    // Index list, stats, drop.
    let (_, l) = s.json("/v1/table/items/index/list/", json!({})).await;
    let mut names: Vec<(String, String)> = l["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["index_name"].as_str().unwrap().into(), i["index_type"].as_str().unwrap().into()))
        .collect();
    names.sort();
    assert_eq!(names, [("text_idx".into(), "FTS".into()), ("vector_idx".into(), "IVF_PQ".into())]);
    let (st, stats) = s.json("/v1/table/items/index/vector_idx/stats/", json!({})).await;
    assert_eq!(st, 200);
    assert_eq!(stats["num_indexed_rows"], 1000);
    assert_eq!(stats["num_unindexed_rows"], 0);
    assert_eq!(stats["distance_type"], "l2");
    assert_eq!(s.json("/v1/table/items/index/text_idx/drop/", json!(null)).await.0, 200);
    assert_eq!(s.json("/v1/table/items/index/text_idx/stats/", json!({})).await.0, 404);
    assert_eq!(s.json("/v1/table/items/index/nope/drop/", json!(null)).await.0, 404);
    let (st, b) =
        s.json("/v1/table/items/create_index/", json!({"column": "category", "index_type": "BITMAP"})).await;
    assert_eq!(st, 200, "{b}");
    let (st, b) =
        s.json("/v1/table/items/create_index/", json!({"column": "id", "index_type": "BTREE"})).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        s.json("/v1/table/items/count_rows/", json!({"predicate": "category = 'c' AND id < 30"})).await.1,
        json!(10)
    );

    // The other vector index families: HNSW over IVF (with ef), flat IVF, scalar-quantised IVF.
    for (table, kind, extra) in [
        ("hnsw", "IVF_HNSW_SQ", json!({"m": 8, "ef_construction": 60})),
        ("flat", "IVF_FLAT", json!({})),
        ("sq", "IVF_SQ", json!({})),
    ] {
        assert_eq!(s.create(table, &rows(0, 600)).await, 200);
        let mut body =
            json!({"column": "vector", "index_type": kind, "num_partitions": 2, "metric_type": "dot"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (st, b) = s.json(&format!("/v1/table/{table}/create_index/"), body).await;
        assert_eq!(st, 200, "{kind}: {b}");
        let (_, st) = s.json(&format!("/v1/table/{table}/index/vector_idx/stats/"), json!({})).await;
        assert_eq!(st["index_type"], kind);
        assert_eq!(st["distance_type"], "dot");
        // Dot product favours the largest vectors: the cluster of id % 4 == 3 (around 30).
        let got = s
            .query(table, json!({"vector": q, "k": 5, "ef": 40, "nprobes": 2, "distance_type": "dot"}))
            .await;
        assert_eq!(got.num_rows(), 5, "{kind}");
        assert!(ids(&got).iter().all(|i| i % 4 == 3), "{kind}: {:?}", ids(&got));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_with_the_right_status() {
    let s = stack().await;
    assert_eq!(s.create("items", &rows(0, 300)).await, 200);
    let msg = |v: &Value| v["message"].as_str().unwrap_or("").to_string();

    let (st, b) = s.json("/v1/table/missing/describe/", json!(null)).await;
    assert_eq!((st, msg(&b).contains("missing")), (404, true), "{b}");
    assert_eq!(s.json("/v1/table/missing/query/", json!({"vector": [], "k": 1})).await.0, 404);
    assert_eq!(s.json("/v1/table/nons$items/describe/", json!(null)).await.0, 404);
    let (st, b) = s.json("/v1/table/items/query/", json!({"vector": [1.0, 2.0, 3.0], "k": 3})).await;
    assert_eq!(st, 400);
    assert!(msg(&b).contains("dimension 3") && msg(&b).contains("dimension 8"), "{b}");
    let (st, b) = s.json("/v1/table/items/query/", json!({"vector": [], "k": 3, "filter": "id >>> 2"})).await;
    assert_eq!(st, 400, "{b}");
    assert!(!msg(&b).is_empty());
    let (st, b) = s.json("/v1/table/items/count_rows/", json!({"predicate": "no_such_column = 1"})).await;
    assert_eq!(st, 400, "{b}");
    let (st, _) = s.json("/v1/table/items/query/", json!({"vector": [], "k": 3, "columns": ["nope"]})).await;
    assert_eq!(st, 400);
    let (st, b) =
        s.json("/v1/table/items/query/", json!({"vector": vec![1.0f32; 8], "k": 1_000_000_000_000u64})).await;
    assert_eq!(st, 400, "{b}");
    let (st, _) = s
        .json("/v1/table/items/query/", json!({"vector": vec![1.0f32; 8], "k": 5, "offset": u64::MAX}))
        .await;
    assert_eq!(st, 400);
    let (st, _) = s.json("/v1/table/items/query/", json!({"vector": "x"})).await;
    assert_eq!(st, 400);
    let (st, _) = s
        .json("/v1/table/items/query/", json!({"vector": vec![1.0f32; 8], "distance_type": "manhattan"}))
        .await;
    assert_eq!(st, 400);
    let r = s.post_raw("/v1/table/items/query/", "{not json").await;
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("Invalid query body"));
    let (st, b) =
        s.json("/v1/table/items/create_index/", json!({"column": "vector", "index_type": "IVF_NOPE"})).await;
    assert_eq!((st, msg(&b).contains("IVF_NOPE")), (400, true));
    let (st, _) =
        s.json("/v1/table/items/create_index/", json!({"column": "nope", "index_type": "BTREE"})).await;
    assert_eq!(st, 400);
    assert_eq!(s.post_raw("/v1/table/items/insert/", "garbage").await.status(), 400);
    let (st, _) = s.json("/v1/table/bad%20name/describe/", json!(null)).await;
    assert_eq!(st, 400);

    // API keys.
    let r = s.http.post(format!("{}/v1/table/items/describe/", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("API key"));
    let r = s
        .http
        .post(format!("{}/v1/table/items/describe/", s.url))
        .header("x-api-key", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s.http.get(format!("{}/healthz", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200, "health needs no key");

    // A client's deadline: 408 when its x-request-timeout-ms passes.
    let r = s
        .http
        .post(format!("{}/v1/table/items/query/", s.url))
        .header("x-api-key", KEY)
        .header("x-request-timeout-ms", "1")
        .json(&json!({"vector": vec![1.0f32; 8], "k": 300, "bypass_vector_index": true, "filter": "text LIKE '%view%'"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 408);
    assert!(r.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("x-request-timeout-ms"));
    let r = s.http.get(format!("{}/v1/nothing", s.url)).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // The server's own limit: 504.
    let mut cfg = search_config(&s.nodes);
    cfg.server.request_timeout = Duration::from_millis(1);
    let (strict, _stop) = serve(cfg).await;
    let r = s
        .http
        .post(format!("{strict}/v1/table/items/query/"))
        .header("x-api-key", KEY)
        .json(&json!({"vector": vec![1.0f32; 8], "k": 300, "bypass_vector_index": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(r.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("server's limit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_joins_tables_of_a_namespace() {
    let s = stack().await;
    assert_eq!(s.create("items", &rows(0, 90)).await, 200);
    let cats = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("category", DataType::Utf8, false),
            Field::new("label", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["a", "b", "c"])),
            Arc::new(StringArray::from(vec!["Alpha", "Beta", "Gamma"])),
        ],
    )
    .unwrap();
    assert_eq!(s.create("categories", &cats).await, 200);
    let r = s
        .http
        .post(format!("{}/v1/sql", s.url))
        .header("x-api-key", KEY)
        .header("accept", "application/json")
        .json(&json!({"sql": "SELECT c.label, count(*) AS n, max(i.id) AS top FROM items i JOIN categories c ON i.category = c.category \
                      WHERE i.id < 60 GROUP BY c.label ORDER BY c.label LIMIT 2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!([{"label": "Alpha", "n": 20, "top": 57}, {"label": "Beta", "n": 20, "top": 58}])
    );
    // Arrow by default.
    let r = s.post("/v1/sql", json!({"sql": "SELECT id FROM items ORDER BY id DESC LIMIT 1"})).await;
    assert_eq!(ids(&read_ipc_file(&r.bytes().await.unwrap())), [89]);
    let (st, b) = s.json("/v1/sql", json!({"sql": "SELEC nonsense"})).await;
    assert_eq!(st, 400, "{b}");
    let (st, b) = s.json("/v1/sql", json!({"sql": "SELECT * FROM nowhere"})).await;
    assert_eq!(st, 400, "{b}");
    let (st, b) = s.json("/v1/sql", json!({"sql": "DROP TABLE items"})).await;
    assert_eq!(st, 400, "{b}");
    assert_eq!(s.json("/v1/table/items/count_rows/", json!({})).await.1, json!(90));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prewarm_pins_the_tables_pages_and_versions_follow_writes_elsewhere() {
    let s = stack().await;
    assert_eq!(s.create("items", &rows(0, 400)).await, 200);
    let (st, b) = s
        .json(
            "/v1/table/items/create_index/",
            json!({"column": "vector", "index_type": "IVF_PQ", "num_partitions": 2, "num_sub_vectors": 2}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s.json("/v1/table/items/page_cache/prewarm/", json!({"columns": []})).await;
    assert_eq!(st, 200, "{b}");
    assert!(b["pinned_bytes"].as_u64().unwrap() > 0, "{b}");
    let (st, b) = s.json("/v1/table/items/index/vector_idx/prewarm/", json!(null)).await;
    assert_eq!(st, 200, "{b}");
    assert!(b["pinned_objects"].as_u64().unwrap() >= 1, "{b}");
    let pinned: u64 = s.nodes.iter().map(|n| n.node.cache.disk.as_ref().unwrap().pinned_bytes()).sum();
    assert!(pinned > 0, "the fleet holds pinned pages of the table");
    assert_eq!(s.json("/v1/table/items/index/nope/prewarm/", json!(null)).await.0, 404);

    // A second search node writes; the first sees the rows within its consistency interval
    // (500 ms), or at once when a request asks for the newer version.
    let (other, _stop) = serve(search_config(&s.nodes)).await;
    let r = s
        .http
        .post(format!("{other}/v1/table/items/insert/"))
        .header("x-api-key", KEY)
        .body(ipc(&rows(400, 100)))
        .send()
        .await
        .unwrap();
    let v = r.json::<Value>().await.unwrap()["version"].as_u64().unwrap();
    let r = s
        .http
        .post(format!("{}/v1/table/items/count_rows/", s.url))
        .header("x-api-key", KEY)
        .header("x-lancedb-min-version", v.to_string())
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-lancedb-version"], v.to_string().as_str());
    assert_eq!(r.json::<Value>().await.unwrap(), json!(500));
    let r = s
        .http
        .post(format!("{other}/v1/table/items/delete/"))
        .header("x-api-key", KEY)
        .json(&json!({"predicate": "id >= 450"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["num_deleted_rows"], 50);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(s.json("/v1/table/items/count_rows/", json!({})).await.1, json!(450));
}

/// The search node can also read through the router instead of the ring client: tables
/// created, queried and prewarmed (through the router's admin API) that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_router() {
    let s = stack().await;
    let mut rcfg = lakecache_router::config::RouterConfig::default();
    rcfg.auth.keys = vec![lakecache_cache_node::config::AccessKey {
        access_key: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
    }];
    rcfg.admin.token = Some("router-admin".into());
    let fleet = search_config(&s.nodes);
    rcfg.fleet = fleet.fleet.clone();
    rcfg.nodes = fleet.nodes.clone();
    let router = lakecache_router::server::RouterNode::build(rcfg).unwrap();
    router.fleet.adopt_node_rules().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router_url = format!("http://{}", listener.local_addr().unwrap());
    let (rtx, rrx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(lakecache_router::server::serve(listener, router, async {
        let _ = rrx.await;
    }));

    let via_router = router_url.clone();
    let mut cfg = search_config(&s.nodes);
    cfg.nodes.clear();
    cfg.router = Some(lakecache_search_node::config::RouterAccess {
        url: router_url,
        admin_token: Some("router-admin".into()),
    });
    let (url, _stop) = serve(cfg).await;
    let via = Stack { api: Api { url, http: reqwest::Client::new() }, ..s };
    assert_eq!(via.create("routed", &rows(0, 300)).await, 200);
    assert!(via.origin.root.join("bkt/tables/routed.lance/_versions").is_dir());
    assert_eq!(
        via.json("/v1/table/routed/count_rows/", json!({"predicate": "id < 10"})).await,
        (200, json!(10))
    );
    let got = via.query("routed", json!({"vector": vec![0.5f32; 8], "k": 3, "columns": ["id"]})).await;
    assert_eq!(got.num_rows(), 3);
    assert!(ids(&got).iter().all(|i| i % 4 == 0), "{:?}", ids(&got));
    let (st, b) = via.json("/v1/table/routed/page_cache/prewarm/", json!(null)).await;
    assert_eq!(st, 200, "{b}");
    assert!(b["pinned_bytes"].as_u64().unwrap() > 0, "{b}");

    // Through the router too, the search node applies the fleet's rules (learned from the
    // router, which adopted the nodes'): other stated rules or a wrong secret stop it.
    let router_cfg = |adjust: &dyn Fn(&mut SearchConfig)| {
        let mut c = search_config(&via.nodes);
        c.nodes.clear();
        c.router =
            Some(lakecache_search_node::config::RouterAccess { url: via_router.clone(), admin_token: None });
        c.fleet.startup_wait = Duration::from_secs(2);
        adjust(&mut c);
        lakecache_search_node::SearchNode::build(c).unwrap()
    };
    let other = router_cfg(&|c| {
        c.fleet.immutable = Some(vec!["**/*.other".into()]);
        c.fleet.never_cache = Some(vec![]);
    });
    let e = other.join_fleet().await.unwrap_err().to_string();
    assert!(e.contains("differ from the key rules") && e.contains("behind the router"), "{e}");
    let wrong = router_cfg(&|c| c.fleet.secret = "not-the-fleet-secret".into());
    let e = wrong.join_fleet().await.unwrap_err().to_string();
    assert!(e.contains("refused to tell"), "{e}");
    drop(rtx);
}

/// The search node's own page cache: a warm query needs nothing from the fleet (with every
/// cache node stopped the same query still answers the same rows), and a table dropped and
/// recreated under the same name elsewhere is read anew, never from blocks of the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_queries_are_served_from_the_page_cache() {
    let mut s = stack().await;
    assert_eq!(s.create("items", &rows(0, 400)).await, 200);
    let (st, b) = s
        .json(
            "/v1/table/items/create_index/",
            json!({"column": "vector", "index_type": "IVF_PQ", "num_partitions": 2, "num_sub_vectors": 2}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let q = json!({"vector": vec![10.5f32; 8], "k": 5, "nprobes": 2, "refine_factor": 3, "columns": ["id", "text"]});
    let first = s.query("items", q.clone()).await;
    assert_eq!(first.num_rows(), 5);
    assert!(ids(&first).iter().all(|i| i % 4 == 1), "{:?}", ids(&first));

    // Dropped and recreated through another search node: the first one reads the new rows.
    let (other, other_stop) = serve(search_config(&s.nodes)).await;
    let other = Api { url: other, http: reqwest::Client::new() };
    assert_eq!(other.json("/v1/table/items/drop/", json!({})).await.0, 200);
    assert_eq!(other.create("items", &rows(1000, 60)).await, 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(s.json("/v1/table/items/count_rows/", json!({})).await, (200, json!(60)));
    let got = s.query("items", q.clone()).await;
    assert!(ids(&got).iter().all(|i| (1000..1060).contains(i) && i % 4 == 1), "{:?}", ids(&got));
    drop(other_stop);

    // A reader that checks for new versions once an hour: once warm, it answers with the
    // whole fleet gone.
    let mut cfg = search_config(&s.nodes);
    cfg.server.read_consistency_interval = Duration::from_secs(3600);
    let (reader, _stop) = serve(cfg).await;
    let reader = Api { url: reader, http: reqwest::Client::new() };
    let warm = reader.query("items", q.clone()).await;
    assert_eq!(ids(&warm), ids(&got));
    let metrics = s.http.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    let hits = metric_value(&metrics, "searchnode_pagecache_reads_total{result=\"hit\"}");
    assert!(hits > 0.0, "no page cache hits:\n{metrics}");
    for n in s.nodes.drain(..) {
        n.stop().await;
    }
    let again = reader.query("items", q).await;
    assert_eq!(ids(&again), ids(&warm));
    assert_eq!(
        again.column_by_name("text").unwrap().as_any().downcast_ref::<StringArray>().unwrap(),
        warm.column_by_name("text").unwrap().as_any().downcast_ref::<StringArray>().unwrap()
    );
}

fn metric_value(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// Version checks run ahead: past half the consistency interval a request starts a check in
/// the background and is answered from the version it has; the next request, still inside the
/// interval, sees the newer version without having waited for a check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_checks_run_ahead_in_the_background() {
    let s = stack().await;
    let mut cfg = search_config(&s.nodes);
    cfg.server.read_consistency_interval = Duration::from_secs(4);
    let (reader, _stop) = serve(cfg).await;
    let reader = Api { url: reader, http: reqwest::Client::new() };
    assert_eq!(s.create("items", &rows(0, 100)).await, 200);
    assert_eq!(reader.json("/v1/table/items/count_rows/", json!({})).await, (200, json!(100)));
    assert_eq!(s.insert("items", &rows(100, 50)).await.status(), 200);
    // Before half the interval: the held version, no check.
    assert_eq!(reader.json("/v1/table/items/count_rows/", json!({})).await, (200, json!(100)));
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // Past half: still the held version, and a check starts in the background...
    assert_eq!(reader.json("/v1/table/items/count_rows/", json!({})).await, (200, json!(100)));
    tokio::time::sleep(Duration::from_millis(600)).await;
    // ...so before the interval is over (2.8 s of 4 s) the new rows are visible.
    assert_eq!(reader.json("/v1/table/items/count_rows/", json!({})).await, (200, json!(150)));
}

fn message(v: &Value) -> String {
    v["message"].as_str().unwrap_or("").to_string()
}

/// Requests that overflowed a worker's stack or asked for a 68 GB allocation (either aborts
/// the process, and with it this test) are refused with a 400 naming the limit; expressions
/// deep but within the limit are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_deep_expressions_and_huge_sizes_are_refused() {
    let s = stack().await;
    assert_eq!(s.create("items", &rows(0, 300)).await, 200);
    let (st, b) = s
        .json(
            "/v1/table/items/create_index/",
            json!({"column": "vector", "index_type": "IVF_PQ", "num_partitions": 2, "num_sub_vectors": 2}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    // A scalar index too: lance plans the index part of a filter by walking it once more.
    let (st, b) =
        s.json("/v1/table/items/create_index/", json!({"column": "id", "index_type": "BTREE"})).await;
    assert_eq!(st, 200, "{b}");
    let chain = |term: &str, op: &str, n: usize| vec![term; n].join(op);
    let ctes = |n: usize| {
        let chain: Vec<String> = (1..n).map(|i| format!("a{i} AS (SELECT x FROM a{})", i - 1)).collect();
        format!("WITH a0 AS (SELECT 1 AS x), {} SELECT x FROM a{}", chain.join(", "), n - 1)
    };
    let joins = |n: usize| {
        let j: Vec<String> =
            (1..n).map(|i| format!("JOIN generate_series(1, 2) t{i} ON t{i}.value = t0.value")).collect();
        format!("SELECT count(*) AS n FROM generate_series(1, 2) t0 {}", j.join(" "))
    };
    let refused = [
        ("/v1/sql", json!({"sql": format!("SELECT {}", chain("1", "+", 1000))}), "256 levels"),
        ("/v1/sql", json!({"sql": ctes(1300)}), "128 SELECTs and table references"),
        ("/v1/sql", json!({"sql": joins(400)}), "128 SELECTs and table references"),
        (
            "/v1/table/items/count_rows/",
            json!({"predicate": chain("id = 1", " OR ", 60_000)}),
            "4096 operators",
        ),
        (
            "/v1/table/items/query/",
            json!({"vector": [], "k": 3, "filter": chain("id = 1", " OR ", 1000)}),
            "256 levels",
        ),
        ("/v1/table/items/delete/", json!({"predicate": chain("id = 1", " OR ", 1000)}), "256 levels"),
        (
            "/v1/table/items/query/",
            json!({"vector": [], "k": 3, "columns": {"x": chain("id", " + ", 1000)}}),
            "256 levels",
        ),
        (
            "/v1/table/items/query/",
            json!({"vector": vec![1.0f32; 8], "k": 1, "refine_factor": u32::MAX}),
            "refine_factor",
        ),
        (
            "/v1/table/items/query/",
            json!({"vector": vec![1.0f32; 8], "k": 100_000, "refine_factor": 100_000}),
            "refine_factor",
        ),
        ("/v1/table/items/query/", json!({"vector": vec![1.0f32; 8], "k": 5, "ef": 1u64 << 62}), "ef"),
        (
            "/v1/table/items/query/",
            json!({"vector": vec![1.0f32; 8], "k": 5, "nprobes": 1u64 << 62}),
            "nprobes",
        ),
        (
            "/v1/table/items/query/",
            json!({"vector": [vec![1.0f32; 8], vec![1.0f32; 8]], "k": 60_000}),
            "query vectors",
        ),
        (
            "/v1/table/items/query/",
            json!({"vector": vec![Vec::<f32>::new(); 200_000], "k": 1}),
            "query vectors",
        ),
        (
            "/v1/table/items/create_index/",
            json!({"column": "vector", "index_type": "IVF_PQ", "num_partitions": 1u64 << 40}),
            "num_partitions may be at most",
        ),
        (
            "/v1/table/items/create_index/",
            json!({"column": "vector", "index_type": "IVF_PQ", "num_partitions": 2, "num_bits": 40}),
            "num_bits may be at most",
        ),
        (
            "/v1/table/items/create_index/",
            json!({"column": "vector", "index_type": "IVF_HNSW_SQ", "num_partitions": 2, "m": 1u64 << 40}),
            "m may be at most",
        ),
    ];
    for (path, body, limit) in refused {
        let (st, b) = s.json(path, body).await;
        assert_eq!(st, 400, "{path}: {b}");
        assert!(message(&b).contains(limit), "{path}: {b} should name {limit}");
    }
    assert_eq!(s.json("/v1/table/items/count_rows/", json!({})).await, (200, json!(300)));
    // Deep, but within the limit, on a test thread's 2 MiB stack.
    let (st, n) =
        s.json("/v1/table/items/count_rows/", json!({"predicate": chain("id = 7", " OR ", 250)})).await;
    assert_eq!((st, n), (200, json!(1)));
    let got = s
        .query("items", json!({"vector": vec![1.0f32; 8], "k": 3, "filter": chain("id < 50", " AND ", 250)}))
        .await;
    assert!(ids(&got).iter().all(|i| *i < 50), "{:?}", ids(&got));
    let deep_or = (0..250).map(|i| format!("id = {i}")).collect::<Vec<_>>().join(" OR ");
    let got = s.query("items", json!({"vector": [], "k": 300, "filter": deep_or, "columns": ["id"]})).await;
    assert_eq!(got.num_rows(), 250);
    let nested = format!("{}id >= 0{}", "(".repeat(40), ")".repeat(40));
    assert_eq!(s.json("/v1/table/items/count_rows/", json!({"predicate": nested})).await, (200, json!(300)));
    let r = s
        .http
        .post(format!("{}/v1/sql", s.url))
        .header("x-api-key", KEY)
        .header("accept", "application/json")
        .json(&json!({"sql": format!("SELECT {} AS s", chain("1", "+", 250))}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!([{"s": 250}]));
    for (sql, want) in [(ctes(60), json!([{"x": 1}])), (joins(100), json!([{"n": 2}]))] {
        let r = s
            .http
            .post(format!("{}/v1/sql", s.url))
            .header("x-api-key", KEY)
            .header("accept", "application/json")
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap(), want);
    }
}

/// lance parses a filter as the prefix that parses: `id >= 0) AND (id > 100` deleted every
/// row. Every expression must parse to its end, or nothing happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_expressions_with_trailing_text_are_refused_and_change_nothing() {
    let s = stack().await;
    assert_eq!(s.create("items", &rows(0, 300)).await, 200);
    let refused = [
        ("/v1/table/items/delete/", json!({"predicate": "id >= 0) AND (id > 100"})),
        ("/v1/table/items/delete/", json!({"predicate": "id < 10 garbage"})),
        ("/v1/table/items/count_rows/", json!({"predicate": "id < 10 garbage"})),
        ("/v1/table/items/count_rows/", json!({"predicate": "id < 10) OR (id >= 0"})),
        ("/v1/table/items/query/", json!({"vector": [], "k": 400, "filter": "id < 10) OR (id >= 0"})),
        ("/v1/table/items/query/", json!({"vector": vec![1.0f32; 8], "k": 3, "filter": "id < 10 garbage"})),
        ("/v1/table/items/query/", json!({"vector": [], "k": 3, "columns": [["x", "id + 1 garbage"]]})),
        ("/v1/table/items/query/", json!({"vector": [], "k": 3, "columns": {"x": "id + 1) AS y, (id"}})),
    ];
    for (path, body) in refused {
        let (st, b) = s.json(path, body.clone()).await;
        assert_eq!(st, 400, "{path} {body}: {b}");
        assert!(message(&b).contains("Expected: EOF"), "{path} {body}: {b}");
    }
    let (_, v) = s.json("/v1/table/items/version/list/", json!(null)).await;
    assert_eq!(v["versions"].as_array().unwrap().len(), 1, "nothing was written: {v}");
    assert_eq!(s.json("/v1/table/items/count_rows/", json!({})).await, (200, json!(300)));
    // Whole expressions (lance's `==` too, and odd column names) still work.
    assert_eq!(
        s.json("/v1/table/items/count_rows/", json!({"predicate": "id == 3 OR (id > 297)"})).await.1,
        json!(3)
    );
    let got = s
        .query(
            "items",
            json!({"vector": [], "k": 2, "filter": "id < 2", "columns": {"twice": "id * 2", "id": "id"}}),
        )
        .await;
    assert_eq!(ids(&got), [0, 1]);
    let (st, b) = s.json("/v1/table/items/delete/", json!({"predicate": "id >= 0 AND (id > 100)"})).await;
    assert_eq!((st, &b["num_deleted_rows"]), (200, &json!(199)), "{b}");
}

/// Answers are bounded in rows and bytes as they stream, SQL in memory; a plain scan's k is
/// bounded like the vector path's, and "no limit" still works within the limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_answers_are_bounded_in_rows_bytes_and_memory() {
    let s = stack().await;
    let mut cfg = search_config(&s.nodes);
    cfg.limits.max_result_rows = 500;
    cfg.limits.max_result_bytes = bytesize::ByteSize::kib(256);
    cfg.limits.sql_memory = bytesize::ByteSize::mib(16);
    let (url, _stop) = serve(cfg).await;
    let l = Api { url, http: reqwest::Client::new() };
    assert_eq!(l.create("items", &rows(0, 400)).await, 200);
    assert_eq!(l.create("wide", &rows(0, 501)).await, 200);
    let started = std::time::Instant::now();
    let (st, b) =
        l.json("/v1/sql", json!({"sql": "SELECT value AS v FROM generate_series(1, 20000000)"})).await;
    assert_eq!(st, 400, "{b}");
    assert!(message(&b).contains("limits.max_result_rows"), "{b}");
    assert!(started.elapsed() < Duration::from_secs(10), "refused once past the limit, not at the end");
    let (st, b) =
        l.json("/v1/sql", json!({"sql": "SELECT repeat('x', 1000) AS s FROM generate_series(1, 400)"})).await;
    assert_eq!(st, 400, "{b}");
    assert!(message(&b).contains("limits.max_result_bytes"), "{b}");
    let (st, b) = l
        .json(
            "/v1/sql",
            json!({"sql": "SELECT count(*) AS n FROM generate_series(1, 2000000) a JOIN generate_series(1, 2000000) b ON a.value = b.value"}),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    assert!(message(&b).contains("limits.sql_memory"), "{b}");
    let (st, b) = l.json("/v1/sql", json!({"sql": "EXPLAIN SELECT id FROM items WHERE id < 3"})).await;
    assert_eq!(st, 200, "{b}");
    let r = l.post("/v1/sql", json!({"sql": "SELECT id FROM items ORDER BY id DESC LIMIT 500"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(read_ipc_file(&r.bytes().await.unwrap()).num_rows(), 400);

    let (st, b) = l.json("/v1/table/items/query/", json!({"vector": [], "k": 1_000_000_000u64})).await;
    assert_eq!(st, 400, "{b}");
    assert!(message(&b).contains("limits.max_result_rows"), "{b}");
    let all = l.query("items", json!({"vector": [], "k": i64::MAX, "columns": ["id"]})).await;
    assert_eq!(all.num_rows(), 400);
    let all = l.query("items", json!({"vector": [], "columns": ["id"]})).await;
    assert_eq!(all.num_rows(), 400);
    let (st, b) =
        l.json("/v1/table/wide/query/", json!({"vector": [], "k": i64::MAX, "columns": ["id"]})).await;
    assert_eq!(st, 400, "{b}");
    assert!(message(&b).contains("limits.max_result_rows"), "{b}");
    let page = l.query("wide", json!({"vector": [], "k": 500, "offset": 1, "columns": ["id"]})).await;
    assert_eq!(page.num_rows(), 500);
    // Bytes: 400 rows of 1.5 KiB of text are more than 256 KiB.
    let r = l
        .http
        .post(format!("{}/v1/table/items/query/", l.url))
        .header("x-api-key", KEY)
        .header("accept", "application/json")
        .json(&json!({"vector": [], "k": i64::MAX, "columns": {"t": "repeat(text, 100)"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(message(&r.json().await.unwrap()).contains("limits.max_result_bytes"));
}

/// Errors are the caller's 400 where the caller is at fault (full-text search on a column
/// that does not exist answered 500), and no message holds a path of the build machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_errors_are_400_without_internal_paths() {
    let s = stack().await;
    assert_eq!(s.create("items", &rows(0, 300)).await, 200);
    let (st, b) =
        s.json("/v1/table/items/create_index/", json!({"column": "text", "index_type": "FTS"})).await;
    assert_eq!(st, 200, "{b}");
    let cases = [
        (
            "/v1/table/items/query/",
            json!({"vector": [], "k": 5, "full_text_query": {"columns": ["nope"], "query": "harbor"}}),
        ),
        (
            "/v1/table/items/query/",
            json!({"vector": [], "k": 5, "full_text_query": {"query": {"match": {"column": "nope", "terms": "harbor"}}}}),
        ),
        ("/v1/table/items/query/", json!({"vector": [], "k": 5, "filter": "nope = 1"})),
        ("/v1/table/items/query/", json!({"vector": [], "k": 5, "filter": "id >>> 2"})),
        ("/v1/table/items/query/", json!({"vector": [], "k": 5, "columns": ["nope"]})),
        ("/v1/table/items/query/", json!({"vector": [], "k": 5, "order_by": [{"column_name": "nope"}]})),
        ("/v1/table/items/count_rows/", json!({"predicate": "no_such_column = 1"})),
        ("/v1/table/items/delete/", json!({"predicate": "nope = 1"})),
        ("/v1/sql", json!({"sql": "SELECT nope FROM items"})),
        ("/v1/table/items/create_index/", json!({"column": "nope", "index_type": "BTREE"})),
    ];
    for (path, body) in cases {
        let (st, b) = s.json(path, body.clone()).await;
        assert_eq!(st, 400, "{path} {body}: {b}");
        let m = message(&b);
        assert!(!m.is_empty(), "{path} {body}: {b}");
        for internal in [".rs:", "/src/", ".cargo", "/root/"] {
            assert!(!m.contains(internal), "{path} {body}: {m}");
        }
    }
}

/// The search node applies the cache nodes' key rules: it refuses to start with others
/// stated in its `[fleet]`, and accepts the same ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rules_other_than_the_nodes_are_refused() {
    let s = stack().await;
    let mut cfg = search_config(&s.nodes);
    cfg.fleet.immutable = Some(vec!["**/*.other".into()]);
    cfg.fleet.never_cache = Some(vec![]);
    cfg.fleet.startup_wait = Duration::from_secs(2);
    let node = lakecache_search_node::SearchNode::build(cfg).unwrap();
    let e = node.join_fleet().await.unwrap_err().to_string();
    assert!(e.contains("differ from the key rules cache node"), "{e}");

    let mut cfg = search_config(&s.nodes);
    cfg.fleet.immutable = Some(lakecache_common::keys::default_immutable());
    cfg.fleet.never_cache = Some(lakecache_common::keys::default_never_cache());
    let node = lakecache_search_node::SearchNode::build(cfg).unwrap();
    node.join_fleet().await.unwrap();
}

impl Api {
    /// POSTs an Arrow IPC stream of `batch` to `path`.
    async fn post_ipc(&self, path: &str, batch: &RecordBatch) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("x-api-key", KEY)
            .header("content-type", "application/vnd.apache.arrow.stream")
            .body(ipc(batch))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }
}

/// update, merge_insert, the column changes, restore, tags, stats and analyze_plan: each
/// refuses an unknown table (404), a bad expression, a bad column and a type mismatch (400
/// with a message naming the cause), never a 5xx; a refused change leaves the table as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutation_endpoints_refuse_bad_input() {
    let s = stack().await;
    assert_eq!(s.create("items", &rows(0, 100)).await, 200);
    let expect = |(st, b): (u16, Value), want: u16, needle: &str| {
        assert_eq!(st, want, "{b}");
        assert!(message(&b).contains(needle), "{needle:?} not in {b}");
    };
    let count = || async { s.json("/v1/table/items/count_rows/", json!({})).await.1 };

    // update
    let up = "/v1/table/items/update/";
    expect(s.json("/v1/table/gone/update/", json!({"updates": [["text", "'x'"]]})).await, 404, "gone");
    expect(s.json(up, json!({"updates": [["nope", "1"]]})).await, 400, "nope");
    expect(s.json(up, json!({"updates": [["text", "no_such_col + 1"]]})).await, 400, "no_such_col");
    expect(s.json(up, json!({"updates": [["id", "'abc'"]]})).await, 400, "");
    expect(s.json(up, json!({"updates": []})).await, 400, "at least one column");
    expect(
        s.json(up, json!({"predicate": "id < 3) OR (true", "updates": [["category", "'z'"]]})).await,
        400,
        "predicate",
    );
    assert_eq!(
        s.json("/v1/table/items/count_rows/", json!({"predicate": "category = 'z'"})).await.1,
        json!(0)
    );
    let (st, b) = s.json(up, json!({"predicate": "id < 10", "updates": [["category", "'z'"]]})).await;
    assert_eq!((st, b["rows_updated"].clone(), b["version"].clone()), (200, json!(10), json!(2)), "{b}");

    // merge_insert
    let mi =
        "/v1/table/items/merge_insert/?on=id&when_matched_update_all=true&when_not_matched_insert_all=true";
    expect(
        s.post_ipc("/v1/table/gone/merge_insert/?on=id&when_matched_update_all=true", &rows(0, 3)).await,
        404,
        "gone",
    );
    expect(
        s.post_ipc("/v1/table/items/merge_insert/?on=nope&when_matched_update_all=true", &rows(0, 3)).await,
        400,
        "nope",
    );
    expect(
        s.post_ipc(&format!("{mi}&when_matched_update_all_filt=target.id+%3E+1)+OR+(true"), &rows(0, 3))
            .await,
        400,
        "when_matched_update_all_filt",
    );
    let r = s.post_raw(mi, "not arrow").await;
    assert_eq!(r.status(), 400);
    // The key typed differently from the table's.
    let wrong = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)])),
        vec![Arc::new(StringArray::from(vec!["1"]))],
    )
    .unwrap();
    let (st, b) = s.post_ipc(mi, &wrong).await;
    assert!(st == 400, "{st} {b}");
    assert_eq!(count().await, json!(100));
    let (st, b) = s.post_ipc(mi, &rows(95, 10)).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        (b["num_updated_rows"].clone(), b["num_inserted_rows"].clone(), b["num_rows"].clone()),
        (json!(5), json!(5), json!(10))
    );
    assert_eq!(count().await, json!(105));

    // add / alter / drop columns
    expect(
        s.json("/v1/table/gone/add_columns/", json!({"new_columns": [{"name": "z", "expression": "id"}]}))
            .await,
        404,
        "gone",
    );
    expect(
        s.json(
            "/v1/table/items/add_columns/",
            json!({"new_columns": [{"name": "z", "expression": "nope * 2"}]}),
        )
        .await,
        400,
        "nope",
    );
    expect(
        s.json(
            "/v1/table/items/add_columns/",
            json!({"new_columns": [{"name": "z", "expression": "id * (2"}]}),
        )
        .await,
        400,
        "",
    );
    expect(
        s.json(
            "/v1/table/items/add_columns/",
            json!({"new_columns": [{"name": "text", "expression": "'x'"}]}),
        )
        .await,
        400,
        "",
    );
    expect(
        s.json("/v1/table/items/alter_columns/", json!({"alterations": [{"path": "nope", "rename": "n"}]}))
            .await,
        400,
        "nope",
    );
    expect(
        s.json(
            "/v1/table/items/alter_columns/",
            json!({"alterations": [{"path": "text", "data_type": {"type": "int32"}}]}),
        )
        .await,
        400,
        "",
    );
    expect(s.json("/v1/table/items/drop_columns/", json!({"columns": ["nope"]})).await, 400, "nope");
    expect(s.json("/v1/table/items/drop_columns/", json!({"columns": []})).await, 400, "at least one");
    let (st, b) = s
        .json(
            "/v1/table/items/add_columns/",
            json!({"new_columns": [{"name": "twice", "expression": "id * 2"}]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let v = b["version"].as_u64().unwrap();
    let r = s.query("items", json!({"vector": [], "filter": "id = 7", "columns": ["twice"], "k": 5})).await;
    let twice = r.column_by_name("twice").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().value(0);
    assert_eq!(twice, 14);

    // restore and tags
    expect(s.json("/v1/table/items/restore/", json!({"version": 99})).await, 400, "99");
    expect(s.json("/v1/table/items/restore/", json!({"version": null})).await, 400, "version");
    expect(s.json("/v1/table/gone/restore/", json!({"version": 1})).await, 404, "gone");
    expect(s.json("/v1/table/items/tags/create/", json!({"tag": "t1", "version": 99})).await, 400, "99");
    expect(s.json("/v1/table/items/tags/create/", json!({"tag": "bad tag!", "version": 1})).await, 400, "");
    expect(s.json("/v1/table/items/tags/version/", json!({"tag": "none"})).await, 400, "none");
    expect(s.json("/v1/table/items/tags/delete/", json!({"tag": "none"})).await, 400, "none");
    assert_eq!(s.json("/v1/table/items/tags/create/", json!({"tag": "t1", "version": 1})).await.0, 200);
    expect(
        s.json("/v1/table/items/tags/create/", json!({"tag": "t1", "version": 1})).await,
        400,
        "already exists",
    );
    assert_eq!(
        s.json("/v1/table/items/tags/version/", json!({"tag": "t1"})).await,
        (200, json!({"version": 1}))
    );
    let (st, tags) = s.json("/v1/table/items/tags/list/", json!(null)).await;
    assert_eq!((st, tags["t1"]["version"].clone()), (200, json!(1)), "{tags}");
    assert!(tags["t1"]["manifestSize"].as_u64().unwrap() > 0);
    let (st, b) = s.json("/v1/table/items/restore/", json!({"version": 1})).await;
    assert_eq!((st, b["version"].as_u64()), (200, Some(v + 1)), "{b}");
    assert_eq!(count().await, json!(100));

    // stats, analyze_plan, rename, routes this server lacks
    expect(s.json("/v1/table/gone/stats/", json!(null)).await, 404, "gone");
    let (st, b) = s.json("/v1/table/items/stats/", json!(null)).await;
    assert_eq!(
        (st, b["num_rows"].clone(), b["fragment_stats"]["num_fragments"].clone()),
        (200, json!(100), json!(1)),
        "{b}"
    );
    expect(
        s.json("/v1/table/items/analyze_plan/", json!({"vector": [], "filter": "id >>> 1", "k": 3})).await,
        400,
        "",
    );
    expect(
        s.json("/v1/table/items/analyze_plan/?distributed_metrics=some", json!({"vector": []})).await,
        400,
        "distributed_metrics",
    );
    let (st, plan) =
        s.json("/v1/table/items/analyze_plan/", json!({"vector": [], "filter": "id < 5", "k": 3})).await;
    assert!(st == 200 && plan.as_str().unwrap().contains("output_rows"), "{plan}");
    expect(s.json("/v1/table/items/rename/", json!({"new_table_name": "other"})).await, 501, "not supported");
    expect(s.json("/v1/table/items/optimize/", json!({})).await, 501, "not implemented");
    assert_eq!(s.json("/v1/nothing/at/all", json!({})).await.0, 404);
}

/// Flight SQL on its own listener, for `cfg`'s tables: its address and the server's stop.
async fn serve_flight(cfg: SearchConfig) -> (String, tokio::sync::oneshot::Sender<()>) {
    let node = lakecache_search_node::SearchNode::build(cfg).unwrap();
    node.join_fleet().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(node.flight().serve(listener, async {
        let _ = rx.await;
    }));
    (url, tx)
}

async fn flight_client(
    url: &str,
    key: Option<&str>,
) -> arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string()).unwrap().connect().await.unwrap();
    let mut c = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    if let Some(k) = key {
        c.set_header("x-api-key", k);
    }
    c
}

/// Rows of a statement over Flight SQL, or the status it failed with.
async fn flight_rows(
    c: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, arrow_flight::error::FlightError> {
    use futures::TryStreamExt;
    let info = c.execute(sql.to_string(), None).await?;
    let mut out = Vec::new();
    for ep in info.endpoint {
        let stream = c.do_get(ep.ticket.unwrap()).await?;
        out.extend(stream.try_collect::<Vec<_>>().await?);
    }
    Ok(out)
}

fn flight_code(r: Result<Vec<RecordBatch>, arrow_flight::error::FlightError>) -> (tonic::Code, String) {
    match r {
        Err(arrow_flight::error::FlightError::Tonic(s)) => (s.code(), s.message().to_string()),
        Err(other) => panic!("not a status: {other}"),
        Ok(b) => panic!("answered {} batches", b.len()),
    }
}

/// Flight SQL: the same tables and keys as the REST API; a missing or wrong key, statements
/// that are not queries, bad SQL, a forged ticket and an answer over the row limit are each
/// refused with the matching gRPC status and a message, and the server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_queries_and_refusals() {
    use tonic::Code;
    let s = stack().await;
    assert_eq!(s.create("items", &rows(0, 120)).await, 200);
    let mut cfg = search_config(&s.nodes);
    cfg.limits.max_result_rows = 100;
    let (url, _stop) = serve_flight(cfg).await;

    let mut c = flight_client(&url, Some(KEY)).await;
    let got =
        flight_rows(&mut c, "SELECT category, count(*) AS n FROM items GROUP BY category ORDER BY category")
            .await
            .unwrap();
    let b = arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
    let n = b.column_by_name("n").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(n.values(), &[40, 40, 40]);

    let (code, msg) = flight_code(flight_rows(&mut flight_client(&url, None).await, "SELECT 1").await);
    assert_eq!(code, Code::Unauthenticated, "{msg}");
    assert!(msg.contains("API key"), "{msg}");
    let (code, _) = flight_code(flight_rows(&mut flight_client(&url, Some("wrong")).await, "SELECT 1").await);
    assert_eq!(code, Code::Unauthenticated);

    for sql in ["DELETE FROM items WHERE id < 3", "DROP TABLE items", "CREATE TABLE t AS SELECT 1"] {
        let (code, msg) = flight_code(flight_rows(&mut c, sql).await);
        assert_eq!(code, Code::InvalidArgument, "{sql}: {msg}");
        assert!(msg.contains("read-only"), "{sql}: {msg}");
    }
    let (code, msg) = flight_code(flight_rows(&mut c, "SELECT nope FROM items").await);
    assert!(code == Code::InvalidArgument && msg.contains("nope"), "{code:?} {msg}");
    let (code, _) = flight_code(flight_rows(&mut c, "SELEC 1").await);
    assert_eq!(code, Code::InvalidArgument);
    let (code, msg) = flight_code(flight_rows(&mut c, "SELECT * FROM items").await);
    assert!(code == Code::InvalidArgument && msg.contains("max_result_rows"), "{code:?} {msg}");
    // The 120 rows are still there.
    assert_eq!(s.json("/v1/table/items/count_rows/", json!({})).await, (200, json!(120)));

    // A ticket this server did not make.
    let r = c.do_get(arrow_flight::Ticket::new(b"forged".to_vec())).await;
    let Err(arrow_flight::error::FlightError::Tonic(st)) = r else { panic!("forged ticket accepted") };
    assert_eq!(st.code(), Code::InvalidArgument);
    // Updates through the update command are refused too.
    let r = c.execute_update("DELETE FROM items".into(), None).await;
    let Err(arrow_flight::error::FlightError::Tonic(st)) = r else { panic!("update accepted") };
    assert_eq!(st.code(), Code::InvalidArgument, "{st}");
    // And the server still answers.
    assert!(flight_rows(&mut c, "SELECT count(*) FROM items").await.is_ok());
}

/// An LZ4 IPC body whose buffers claim a decompressed length of 2^62 bytes (4 KiB on the
/// wire) aborted the process in the allocator; it is refused with a 400 naming the limit,
/// on every route that decodes Arrow, and the node keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_compressed_bodies_that_lie_about_their_size_are_refused() {
    let s = stack().await;
    assert_eq!(s.create("items", &rows(0, 50)).await, 200);
    let ids = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from_iter_values(50..100))],
    )
    .unwrap();
    let mut body = ipc(&ids);
    // The id column's values: 50 × 8 bytes, the length prefix of its compressed buffer.
    let at = body.windows(8).position(|w| w == 400i64.to_le_bytes()).expect("length prefix");
    body[at..at + 8].copy_from_slice(&(1i64 << 62).to_le_bytes());
    for path in [
        "/v1/table/items/insert/",
        "/v1/table/items/merge_insert/?on=id&when_matched_update_all=true",
        "/v1/table/fresh/create/",
    ] {
        let r = s
            .http
            .post(format!("{}{path}", s.url))
            .header("x-api-key", KEY)
            .header("content-type", "application/vnd.apache.arrow.stream")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let m = message(&r.json().await.unwrap());
        assert!(m.contains("max_decoded_body"), "{path}: {m}");
    }
    assert_eq!(s.json("/v1/table/items/count_rows/", json!({})).await, (200, json!(50)));
}

/// `x-lancedb-min-timestamp`: RFC 3339 in either offset form is taken; one that does not
/// parse is refused (ignoring it would serve staler data than the client asked for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_timestamp_is_parsed_or_refused() {
    let s = stack().await;
    assert_eq!(s.create("items", &rows(0, 10)).await, 200);
    for (ts, want) in [
        ("2026-12-02T11:00:00.123456+00:00", 200),
        ("2026-12-02T11:00:00Z", 200),
        ("2999-01-01T00:00:00Z", 200),
        ("yesterday", 400),
    ] {
        let r = s
            .http
            .post(format!("{}/v1/table/items/count_rows/", s.url))
            .header("x-api-key", KEY)
            .header("x-lancedb-min-timestamp", ts)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{ts}");
        let body: Value = r.json().await.unwrap();
        if want == 400 {
            assert!(message(&body).contains("x-lancedb-min-timestamp"), "{body}");
        } else {
            assert_eq!(body, json!(10));
        }
    }
}

/// A Flight client that stops reading an answer does not hold the query past the request
/// timeout: once it reads again it gets DeadlineExceeded, never an answer cut short in silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_answers_not_read_in_time_end_in_an_error() {
    use futures::StreamExt;
    let s = stack().await;
    assert_eq!(s.create("items", &rows(0, 20_000)).await, 200);
    let mut cfg = search_config(&s.nodes);
    cfg.server.request_timeout = Duration::from_millis(1500);
    let (url, _stop) = serve_flight(cfg).await;
    let mut c = flight_client(&url, Some(KEY)).await;
    // Read in full when read at once.
    let all = flight_rows(&mut c, "SELECT id, text, vector FROM items").await.unwrap();
    assert_eq!(all.iter().map(|b| b.num_rows()).sum::<usize>(), 20_000);

    // Far more than the connection's buffers hold: 800,000 rows.
    let big = "SELECT a.id, a.text, b.id AS other FROM items a, items b WHERE b.id < 40";
    let info = c.execute(big.into(), None).await.unwrap();
    let mut stream = c.do_get(info.endpoint[0].ticket.clone().unwrap()).await.unwrap();
    let first = stream.next().await.expect("a first batch").unwrap();
    assert!(first.num_rows() > 0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut rows = first.num_rows();
    let mut ended_in = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => rows += b.num_rows(),
            Err(e) => {
                ended_in = Some(e.to_string());
                break;
            }
        }
    }
    let e = ended_in.unwrap_or_else(|| panic!("the answer ended without an error after {rows} rows"));
    assert!(e.contains("request timeout"), "{e}");
    assert!(rows < 800_000);
}

/// Everything the origin served since the stack started (GET, HEAD, list, writes).
fn origin_total(s: &Stack) -> u64 {
    use std::sync::atomic::Ordering::SeqCst;
    s.origin.counts.gets() + s.origin.counts.heads() + s.origin.counts.other.load(SeqCst)
}

fn io_header(r: &reqwest::Response, name: &str) -> u64 {
    r.headers().get(name).unwrap_or_else(|| panic!("no {name}")).to_str().unwrap().parse().unwrap()
}

/// Every query answer accounts for its own I/O, and the account is what the origin saw: a
/// cold query through cold cache nodes says how many origin requests it caused, and the
/// origin's own counter moved by exactly that; warm, it costs the origin nothing. A budget
/// (`x-lakecache-cache-only`, `x-lakecache-max-origin-requests`) that a query cannot keep
/// is a 412 before the origin is asked for more than the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_account_for_their_own_io_and_keep_to_their_budget() {
    let s = stack().await;
    assert_eq!(s.create("items", &rows(0, 2000)).await, 200);
    let (st, b) = s
        .json(
            "/v1/table/items/create_index/",
            json!({"column": "vector", "index_type": "IVF_PQ", "num_partitions": 4, "num_sub_vectors": 2}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(s.create("cold", &rows(0, 300)).await, 200);

    // A reader with cold cache nodes of its own (and no version checks during the test).
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for i in 0..2 {
        let c = node_config(&s.origin, &dir.path().join(format!("cold{i}")), IoEngineChoice::Auto);
        nodes.push(Node::start(c).await);
    }
    let mut cfg = search_config(&nodes);
    cfg.server.read_consistency_interval = Duration::from_secs(3600);
    let (url, _stop) = serve(cfg).await;
    let reader = Api { url, http: reqwest::Client::new() };
    let q = json!({"vector": vec![10.5f32; 8], "k": 5, "nprobes": 2, "refine_factor": 2, "columns": ["id", "text"]});
    let ask = |table: &str, body: Value, extra: &[(&'static str, &'static str)]| {
        let mut r = reader
            .http
            .post(format!("{}/v1/table/{table}/query/", reader.url))
            .header("x-api-key", KEY)
            .json(&body);
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        r.send()
    };

    // Cold: the answer's count is the origin's.
    let before = origin_total(&s);
    let heads_before = s.origin.counts.heads();
    let r = ask("items", q.clone(), &[]).await.unwrap();
    assert_eq!(r.status(), 200);
    let cold = io_header(&r, "x-lakecache-origin-requests");
    let cold_bytes = io_header(&r, "x-lakecache-origin-bytes");
    let fleet = io_header(&r, "x-lakecache-fleet-requests");
    let account: Value = serde_json::from_str(r.headers()["x-lakecache-io"].to_str().unwrap()).unwrap();
    let got = read_ipc_file(&r.bytes().await.unwrap());
    assert_eq!(got.num_rows(), 5);
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!(
        "cold query's x-lakecache-io: {account}; origin HEADs {}",
        s.origin.counts.heads() - heads_before
    );
    assert!(cold > 0, "a cold query that cost the origin nothing? {account}");
    assert_eq!(origin_total(&s) - before, cold, "the account is the origin's count: {account}");
    assert!(cold_bytes > 0 && fleet > 0, "{account}");
    let k = &account["origin_requests_by_kind"];
    let by_kind: u64 = ["manifest", "index", "data", "other"].iter().map(|n| k[*n].as_u64().unwrap()).sum();
    assert_eq!(by_kind, cold, "{account}");
    assert!(k["index"].as_u64().unwrap() > 0 && k["data"].as_u64().unwrap() > 0, "{account}");
    assert!(
        account["requests"].as_u64().unwrap() > 0 && account["io_wait_us"].as_u64().unwrap() > 0,
        "{account}"
    );

    // Warm: nothing from the origin, and cache-only is served.
    let before = origin_total(&s);
    let r = ask("items", q.clone(), &[("x-lakecache-cache-only", "true")]).await.unwrap();
    assert_eq!(r.status(), 200);
    eprintln!("warm query's x-lakecache-io: {}", r.headers()["x-lakecache-io"].to_str().unwrap());
    assert_eq!(io_header(&r, "x-lakecache-origin-requests"), 0);
    assert!(io_header(&r, "x-lakecache-page-cache-hits") > 0, "a warm query misses the page cache");
    assert_eq!(ids(&read_ipc_file(&r.bytes().await.unwrap())), ids(&got));
    // JSON answers carry the account beside the rows when asked.
    let mut jq = q.clone();
    jq["with_io"] = json!(true);
    let r = ask("items", jq, &[("accept", "application/json")]).await.unwrap();
    assert_eq!(r.status(), 200);
    let header_count = io_header(&r, "x-lakecache-origin-requests");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["rows"].as_array().unwrap().len(), 5, "{body}");
    assert_eq!(body["io"]["origin_requests"].as_u64(), Some(header_count), "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin_total(&s) - before, 0);

    // A cold table, cache-only: refused, and the origin was asked nothing at all.
    let before = origin_total(&s);
    let r =
        ask("cold", json!({"k": 3, "columns": ["id"]}), &[("x-lakecache-cache-only", "true")]).await.unwrap();
    assert_eq!(r.status(), 412);
    assert_eq!(io_header(&r, "x-lakecache-origin-requests"), 0);
    let m = r.json::<Value>().await.unwrap()["message"].as_str().unwrap().to_string();
    assert!(m.contains("cache-only") && m.contains("cold"), "{m}");
    // The body's field works as the header does.
    let r = ask("cold", json!({"k": 3, "columns": ["id"], "cache_only": true}), &[]).await.unwrap();
    assert_eq!(r.status(), 412);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin_total(&s) - before, 0, "a refused query must not reach the origin");

    // A budget of 2 cannot open and scan it either: refused having spent at most 2, as it says.
    let before = origin_total(&s);
    let r = ask("cold", json!({"k": 3, "columns": ["id"]}), &[("x-lakecache-max-origin-requests", "2")])
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let spent = io_header(&r, "x-lakecache-origin-requests");
    assert!(spent <= 2, "spent {spent} of a budget of 2");
    assert!(r.text().await.unwrap().contains("more than its 2 origin request"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin_total(&s) - before, spent);

    // Without a budget it is answered, and its account is again the origin's count.
    let before = origin_total(&s);
    let r = ask("cold", json!({"k": 3, "columns": ["id"]}), &[]).await.unwrap();
    assert_eq!(r.status(), 200);
    let n = io_header(&r, "x-lakecache-origin-requests");
    assert!(n > 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin_total(&s) - before, n);

    // A bad budget is a 400, and the per-table counters add up the answers.
    let r = ask("items", q, &[("x-lakecache-max-origin-requests", "many")]).await.unwrap();
    assert_eq!(r.status(), 400);
    let metrics =
        reader.http.get(format!("{}/metrics", reader.url)).send().await.unwrap().text().await.unwrap();
    assert_eq!(
        metric_value(&metrics, "searchnode_query_origin_requests_total{table=\"items\"}"),
        cold as f64,
        "{metrics}"
    );
    assert_eq!(metric_value(&metrics, "searchnode_query_budget_refusals_total{table=\"cold\"}"), 3.0);
}
