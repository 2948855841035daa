//! Listing details clients trip over, checked in the XML the node answers (raw HTTP, so
//! that no SDK smooths them over) and with aws-sdk-s3: `max-keys=0`, an empty delimiter,
//! the v1 `Prefix` and `Marker` elements, an empty continuation token, `fetch-owner`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_sdk_s3::primitives::ByteStream;
use lakecache_cache_node::tier::disk::IoEngineChoice;
use lakecache_testkit::*;

async fn setup() -> (tempfile::TempDir, Origin, Node) {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    std::fs::create_dir_all(origin.root.join("bkt")).unwrap();
    let mut cfg = node_config(&origin, &dir.path().join("node"), IoEngineChoice::Pread);
    cfg.auth.anonymous = true;
    let node = Node::start(cfg).await;
    let c = node.client();
    for k in ["a b/1", "a b/2", "c"] {
        c.put_object().bucket("bkt").key(k).body(ByteStream::from_static(b"x")).send().await.unwrap();
    }
    (dir, origin, node)
}

async fn list_xml(node: &Node, query: &str) -> (u16, String) {
    let r = reqwest::Client::new().get(format!("{}/bkt?{query}", node.url())).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    Some(&xml[start..start + xml[start..].find(&format!("</{name}>"))?])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_answers_as_s3_does() {
    let (_d, _origin, node) = setup().await;

    // max-keys=0: nothing, and nothing left out.
    for q in ["list-type=2&max-keys=0", "max-keys=0"] {
        let (status, xml) = list_xml(&node, q).await;
        assert_eq!(status, 200, "{q}: {xml}");
        assert_eq!(element(&xml, "IsTruncated"), Some("false"), "{q}: {xml}");
        assert!(!xml.contains("<Contents>"), "{q}: {xml}");
    }

    // An empty delimiter is no delimiter, and is not echoed.
    for q in ["list-type=2&delimiter=", "delimiter="] {
        let (status, xml) = list_xml(&node, q).await;
        assert_eq!(status, 200, "{q}: {xml}");
        assert!(!xml.contains("<Delimiter"), "{q}: {xml}");
        assert_eq!(xml.matches("<Contents>").count(), 3, "{q}: {xml}");
    }

    // v1 without encoding-type: the prefix comes back as sent; Marker is always there.
    let (status, xml) = list_xml(&node, "prefix=a%20b%2F").await;
    assert_eq!(status, 200, "{xml}");
    assert_eq!(element(&xml, "Prefix"), Some("a b/"), "{xml}");
    assert_eq!(element(&xml, "Marker"), Some(""), "{xml}");
    assert_eq!(element(&xml, "Key"), Some("a b/1"), "{xml}");
    // With encoding-type=url, v1 encodes keys but not its top-level Prefix (which is why
    // botocore decodes Prefix for v2 only); v2 encodes it.
    let (_, xml) = list_xml(&node, "prefix=a%20b%2F&encoding-type=url").await;
    assert_eq!(element(&xml, "Prefix"), Some("a b/"), "{xml}");
    assert_eq!(element(&xml, "Key"), Some("a%20b/1"), "{xml}");
    let (_, xml) = list_xml(&node, "list-type=2&prefix=a%20b%2F&encoding-type=url").await;
    assert_eq!(element(&xml, "Prefix"), Some("a%20b/"), "{xml}");

    // An empty continuation token starts at the beginning.
    let (status, xml) = list_xml(&node, "list-type=2&continuation-token=").await;
    assert_eq!(status, 200, "{xml}");
    assert_eq!(xml.matches("<Contents>").count(), 3, "{xml}");

    // The owner, where asked for (v2) or always (v1).
    let (_, xml) = list_xml(&node, "list-type=2").await;
    assert!(!xml.contains("<Owner>"), "{xml}");
    for q in ["list-type=2&fetch-owner=true", ""] {
        let (_, xml) = list_xml(&node, q).await;
        assert_eq!(xml.matches("<Owner>").count(), 3, "{q}: {xml}");
        assert!(element(&xml, "ID").is_some_and(|id| !id.is_empty()), "{q}: {xml}");
    }

    // The same through the SDK.
    let c = node.client();
    let out = c.list_objects_v2().bucket("bkt").max_keys(0).send().await.unwrap();
    assert_eq!(out.is_truncated(), Some(false));
    let out = c.list_objects_v2().bucket("bkt").fetch_owner(true).send().await.unwrap();
    assert!(out.contents().iter().all(|o| o.owner().and_then(|w| w.id()).is_some()));
    let out = c.list_objects().bucket("bkt").prefix("a b/").send().await.unwrap();
    assert_eq!(out.prefix(), Some("a b/"));
    assert_eq!(out.contents().len(), 2);
    node.stop().await;
}
