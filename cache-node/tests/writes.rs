//! Writes under stress and with bad input: stalled bodies, digests that do not match,
//! aws-chunked bodies cut short, retried completions, conditional writes of missing keys,
//! copies onto themselves. Real aws-sdk-s3 and raw sockets against a real node in front of
//! a real S3 server (s3s-fs) on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use lakecache_cache_node::tier::disk::IoEngineChoice;
use lakecache_testkit::*;

const BODY_TIMEOUT: Duration = Duration::from_secs(2);

async fn setup() -> (tempfile::TempDir, Origin, Node) {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(&dir.path().join("origin")).await;
    std::fs::create_dir_all(origin.root.join("bkt")).unwrap();
    let mut cfg = node_config(&origin, &dir.path().join("node"), IoEngineChoice::Pread);
    // Raw requests below are unsigned.
    cfg.auth.anonymous = true;
    cfg.server.body_timeout = BODY_TIMEOUT;
    let node = Node::start(cfg).await;
    (dir, origin, node)
}

async fn get_string(c: &aws_sdk_s3::Client, key: &str) -> String {
    String::from_utf8(body(c.get_object().bucket("bkt").key(key).send().await.unwrap()).await).unwrap()
}

/// The stripe of the node's per-key write lock (the node hashes "bucket/key" with xxh3 into
/// 1024 stripes): another key that shares `key`'s stripe.
fn same_stripe_key(key: &str) -> String {
    let stripe = |k: &str| xxhash_rust::xxh3::xxh3_64(format!("bkt/{k}").as_bytes()) % 1024;
    (0..).map(|i| format!("stall/other-{i}")).find(|k| stripe(k) == stripe(key)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_blocks_no_other_write_and_is_answered_after_the_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_d, _origin, node) = setup().await;
    let c = node.client();
    let key = "stall/key";
    let neighbour = same_stripe_key(key);
    // Half a body, then silence with the connection open.
    let mut s = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let head = format!("PUT /bkt/{key} HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\n\r\n", node.addr);
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[b'x'; 500]).await.unwrap();
    let stalled_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;

    for k in [key, neighbour.as_str()] {
        let put = c.put_object().bucket("bkt").key(k).body(ByteStream::from_static(b"second writer")).send();
        let r = tokio::time::timeout(Duration::from_millis(1500), put).await;
        assert!(r.is_ok(), "a PUT of {k} waited for the stalled PUT of {key}");
        r.unwrap().unwrap();
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(BODY_TIMEOUT * 3, s.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the stalled PUT was neither answered nor closed");
    let waited = stalled_at.elapsed();
    assert!(waited >= BODY_TIMEOUT - Duration::from_millis(100), "answered after {waited:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("<Code>RequestTimeout</Code>"), "{text}");
    // The stalled body stored nothing.
    assert_eq!(get_string(&c, key).await, "second writer");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_part_body_is_answered_after_the_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_d, _origin, node) = setup().await;
    let c = node.client();
    let id = c.create_multipart_upload().bucket("bkt").key("mp").send().await.unwrap();
    let id = id.upload_id().unwrap();
    let mut s = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let head = format!(
        "PUT /bkt/mp?partNumber=1&uploadId={id} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n",
        node.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[b'y'; 10]).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(BODY_TIMEOUT * 3, s.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the stalled UploadPart was neither answered nor closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("<Code>RequestTimeout</Code>"), "{text}");
    let parts = c.list_parts().bucket("bkt").key("mp").upload_id(id).send().await.unwrap();
    assert!(parts.parts().is_empty(), "a stalled part was staged");
    node.stop().await;
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn md5_b64(data: &[u8]) -> String {
    use md5::Digest;
    b64(&md5::Md5::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_that_do_not_match_store_nothing() {
    let (_d, _origin, node) = setup().await;
    let c = node.client();
    c.put_object().bucket("bkt").key("k").body(ByteStream::from_static(b"original")).send().await.unwrap();
    let new = b"replacement".to_vec();

    // Content-MD5: of other bytes, malformed, empty.
    let cases: Vec<(&str, String, &str)> = vec![
        ("content-md5", md5_b64(b"other bytes"), "BadDigest"),
        ("content-md5", "not base64!".into(), "InvalidDigest"),
        ("content-md5", b64(b"short"), "InvalidDigest"),
        ("content-md5", String::new(), "InvalidDigest"),
        ("x-amz-checksum-crc32", b64(&[0, 0, 0, 0]), "BadDigest"),
        ("x-amz-checksum-crc32c", b64(&[1, 2, 3, 4]), "BadDigest"),
        ("x-amz-checksum-sha1", b64(&[7; 20]), "BadDigest"),
        ("x-amz-checksum-sha256", b64(&[9; 32]), "BadDigest"),
        ("x-amz-checksum-crc32", b64(&[0; 5]), "InvalidRequest"),
        ("x-amz-checksum-sha256", "%%%".into(), "InvalidRequest"),
    ];
    let http = reqwest::Client::new();
    for (name, value, want) in &cases {
        for key in ["k", "fresh"] {
            let r = http
                .put(format!("{}/bkt/{key}", node.url()))
                .header(*name, value.as_str())
                .body(new.clone())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_eq!(status, 400, "{name}: {value:?}: {text}");
            assert!(text.contains(&format!("<Code>{want}</Code>")), "{name}: {value:?}: {text}");
        }
        assert_eq!(get_string(&c, "k").await, "original", "{name}: {value:?} replaced the object");
        let e = c.head_object().bucket("bkt").key("fresh").send().await.unwrap_err();
        assert_eq!(err_code(&e).1, 404, "{name}: {value:?} created the object");
    }
    // The same checks through the SDK, which sends the header it is given.
    let e = c
        .put_object()
        .bucket("bkt")
        .key("k")
        .checksum_crc32(b64(&[0, 0, 0, 0]))
        .body(ByteStream::from(new.clone()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), ("BadDigest".to_string(), 400));
    assert_eq!(get_string(&c, "k").await, "original");

    // Right digests are accepted, and the checksum is echoed.
    let crc = b64(&crc32c::crc32c(&new).to_be_bytes());
    let r = http
        .put(format!("{}/bkt/k", node.url()))
        .header("content-md5", md5_b64(&new))
        .header("x-amz-checksum-crc32c", crc.as_str())
        .body(new.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers().get("x-amz-checksum-crc32c").and_then(|v| v.to_str().ok()), Some(crc.as_str()));
    assert_eq!(get_string(&c, "k").await, "replacement");

    // A part whose digest does not match is not staged.
    let id = c.create_multipart_upload().bucket("bkt").key("mp").send().await.unwrap();
    let id = id.upload_id().unwrap();
    let r = http
        .put(format!("{}/bkt/mp?partNumber=1&uploadId={id}", node.url()))
        .header("content-md5", md5_b64(b"other"))
        .body(new.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("<Code>BadDigest</Code>"));
    let parts = c.list_parts().bucket("bkt").key("mp").upload_id(id).send().await.unwrap();
    assert!(parts.parts().is_empty(), "a part that failed its digest was staged");
    node.stop().await;
}

/// Replaces the aws-chunked body the SDK is about to send with one chunk of the data the
/// closure gives and a trailer holding the checksum value it gives, both signed as SigV4
/// streaming requires (chained on the SDK's seed signature), padded to the length the SDK
/// signed (s3s trims blanks after a trailer value).
struct RewriteChunked<F>(F);

impl<F> std::fmt::Debug for RewriteChunked<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RewriteChunked")
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// One aws-chunked body: a signed chunk of `data`, the signed final chunk, and the signed
/// trailer `name:value`.
fn signed_chunked(data: &[u8], name: &str, value: &str, seed: &str, amz_date: &str, pad: usize) -> Vec<u8> {
    let day = &amz_date[..8];
    let scope = format!("{day}/us-east-1/s3/aws4_request");
    let mut key = hmac(format!("AWS4{SECRET_KEY}").as_bytes(), day.as_bytes());
    for part in ["us-east-1", "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let sign = |kind: &str, prev: &str, hashes: &str| {
        hex(&hmac(&key, format!("{kind}\n{amz_date}\n{scope}\n{prev}\n{hashes}").as_bytes()))
    };
    let empty = sha256_hex(b"");
    let s1 = sign("AWS4-HMAC-SHA256-PAYLOAD", seed, &format!("{empty}\n{}", sha256_hex(data)));
    let s2 = sign("AWS4-HMAC-SHA256-PAYLOAD", &s1, &format!("{empty}\n{empty}"));
    let st = sign("AWS4-HMAC-SHA256-TRAILER", &s2, &sha256_hex(format!("{name}:{value}\n").as_bytes()));
    let mut b = format!("{:x};chunk-signature={s1}\r\n", data.len()).into_bytes();
    b.extend_from_slice(data);
    b.extend_from_slice(format!("\r\n0;chunk-signature={s2}\r\n{name}:{value}").as_bytes());
    b.extend(std::iter::repeat_n(b' ', pad));
    b.extend_from_slice(format!("\r\nx-amz-trailer-signature:{st}\r\n\r\n").as_bytes());
    b
}

impl<F> aws_sdk_s3::config::Intercept for RewriteChunked<F>
where
    F: Fn(&str) -> (Vec<u8>, String) + Send + Sync,
{
    fn name(&self) -> &'static str {
        "RewriteChunked"
    }

    fn modify_before_transmit(
        &self,
        ctx: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _rc: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let req = ctx.request_mut();
        let h = req.headers();
        assert_eq!(
            h.get("x-amz-content-sha256"),
            Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
            "{h:?}"
        );
        let trailer = h.get("x-amz-trailer").expect("a checksum trailer").to_string();
        let len: usize = h.get("content-length").expect("content-length").parse().unwrap();
        let date = h.get("x-amz-date").unwrap().to_string();
        let seed = h.get("authorization").unwrap().rsplit("Signature=").next().unwrap().to_string();
        let (data, value) = (self.0)(&trailer);
        let unpadded = signed_chunked(&data, &trailer, &value, &seed, &date, 0).len();
        assert!(unpadded <= len, "replacement body longer than the signed one");
        let b = signed_chunked(&data, &trailer, &value, &seed, &date, len - unpadded);
        *req.body_mut() = aws_sdk_s3::primitives::SdkBody::from(b);
        Ok(())
    }
}

/// The SDK's checksum of `data` for the trailer `t`.
fn checksum_for(t: &str, data: &[u8]) -> String {
    let crc = if t.ends_with("crc32c") { crc32c::crc32c(data) } else { crc32(data) };
    b64(&crc.to_be_bytes())
}

/// A streaming body (a file): the SDK sends it aws-chunked with a checksum trailer.
async fn file_body(dir: &std::path::Path, data: &[u8]) -> ByteStream {
    let p = dir.join(format!("body-{}", data.len()));
    std::fs::write(&p, data).unwrap();
    ByteStream::from_path(&p).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_chunked_trailers_and_decoded_length_are_verified() {
    let (d, _origin, node) = setup().await;
    let c = node.client();
    // What the SDK sends by default for a streaming body is accepted (and it is aws-chunked
    // with a trailer: the interceptor below checks).
    c.put_object()
        .bucket("bkt")
        .key("k")
        .body(file_body(d.path(), b"0123456789abcdef").await)
        .customize()
        .interceptor(RewriteChunked(|t: &str| {
            (b"0123456789abcdef".to_vec(), checksum_for(t, b"0123456789abcdef"))
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(get_string(&c, "k").await, "0123456789abcdef");
    c.put_object().bucket("bkt").key("plain").body(file_body(d.path(), b"abc").await).send().await.unwrap();
    assert_eq!(get_string(&c, "plain").await, "abc");

    // The trailer's checksum is of other bytes.
    let e = c
        .put_object()
        .bucket("bkt")
        .key("k")
        .body(file_body(d.path(), b"ABCDEFGHIJKLMNOP").await)
        .customize()
        .interceptor(RewriteChunked(|_: &str| (b"ABCDEFGHIJKLMNOP".to_vec(), b64(&[0, 0, 0, 0]))))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), ("BadDigest".to_string(), 400), "{e:?}");
    assert_eq!(get_string(&c, "k").await, "0123456789abcdef");

    // Fewer bytes than x-amz-decoded-content-length, with a checksum that matches them.
    let e = c
        .put_object()
        .bucket("bkt")
        .key("k")
        .body(file_body(d.path(), b"ABCDEFGHIJKLMNOP").await)
        .customize()
        .interceptor(RewriteChunked(|t: &str| (b"ABCDEFGH".to_vec(), checksum_for(t, b"ABCDEFGH"))))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), ("IncompleteBody".to_string(), 400), "{e:?}");
    assert_eq!(get_string(&c, "k").await, "0123456789abcdef");
    node.stop().await;
}

/// CRC-32 (IEEE), as the SDK's default checksum.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_completion_gets_the_same_answer() {
    let (_d, _origin, node) = setup().await;
    let c = node.client();
    let id = c.create_multipart_upload().bucket("bkt").key("done").send().await.unwrap();
    let id = id.upload_id().unwrap().to_string();
    let p = c
        .upload_part()
        .bucket("bkt")
        .key("done")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from_static(b"only part"))
        .send()
        .await
        .unwrap();
    let parts = || {
        CompletedMultipartUpload::builder()
            .parts(CompletedPart::builder().part_number(1).e_tag(p.e_tag().unwrap()).build())
            .build()
    };
    let first = c
        .complete_multipart_upload()
        .bucket("bkt")
        .key("done")
        .upload_id(&id)
        .multipart_upload(parts())
        .send()
        .await
        .unwrap();
    let again = c
        .complete_multipart_upload()
        .bucket("bkt")
        .key("done")
        .upload_id(&id)
        .multipart_upload(parts())
        .send()
        .await
        .unwrap();
    assert_eq!(first.e_tag(), again.e_tag());
    assert!(first.e_tag().is_some());
    assert_eq!(get_string(&c, "done").await, "only part");
    // The upload itself is gone, and its id does not complete another key.
    let e = c.list_parts().bucket("bkt").key("done").upload_id(&id).send().await.unwrap_err();
    assert_eq!(err_code(&e), ("NoSuchUpload".to_string(), 404));
    let e = c
        .complete_multipart_upload()
        .bucket("bkt")
        .key("other")
        .upload_id(&id)
        .multipart_upload(parts())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), ("NoSuchUpload".to_string(), 404));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_on_a_missing_key_is_no_such_key() {
    let (_d, _origin, node) = setup().await;
    let c = node.client();
    for cond in ["\"0123456789abcdef0123456789abcdef\"", "*"] {
        let e = c
            .put_object()
            .bucket("bkt")
            .key("absent")
            .if_match(cond)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(err_code(&e), ("NoSuchKey".to_string(), 404), "If-Match: {cond}");
    }
    // …but 412 where the key exists with another ETag.
    c.put_object().bucket("bkt").key("present").body(ByteStream::from_static(b"x")).send().await.unwrap();
    let e = c
        .put_object()
        .bucket("bkt")
        .key("present")
        .if_match("\"0123456789abcdef0123456789abcdef\"")
        .body(ByteStream::from_static(b"y"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), ("PreconditionFailed".to_string(), 412));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copying_an_object_onto_itself_needs_a_change() {
    let (_d, _origin, node) = setup().await;
    let c = node.client();
    c.put_object()
        .bucket("bkt")
        .key("self")
        .content_type("text/plain")
        .body(ByteStream::from_static(b"same"))
        .send()
        .await
        .unwrap();
    let e = c.copy_object().bucket("bkt").key("self").copy_source("bkt/self").send().await.unwrap_err();
    assert_eq!(err_code(&e), ("InvalidRequest".to_string(), 400));
    // Replacing the metadata is a change.
    c.copy_object()
        .bucket("bkt")
        .key("self")
        .copy_source("bkt/self")
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .content_type("application/json")
        .send()
        .await
        .unwrap();
    let head = c.head_object().bucket("bkt").key("self").send().await.unwrap();
    assert_eq!(head.content_type(), Some("application/json"));
    assert_eq!(get_string(&c, "self").await, "same");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_that_fails_its_digest_leaves_the_object_untouched() {
    let (_d, origin, node) = setup().await;
    let c = node.client();
    c.put_object().bucket("bkt").key("big").body(ByteStream::from_static(b"original")).send().await.unwrap();
    // Over 16 MiB: the body streams into an origin upload that is never completed.
    let data = pattern(77, 17 * 1024 * 1024 + 5);
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/bkt/big", node.url()))
        .header("content-md5", md5_b64(b"not these bytes"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("<Code>BadDigest</Code>"));
    assert_eq!(get_string(&c, "big").await, "original");
    assert_eq!(std::fs::read(origin.root.join("bkt/big")).unwrap(), b"original");
    let r = http
        .put(format!("{}/bkt/big", node.url()))
        .header("content-md5", md5_b64(&data))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(body(c.get_object().bucket("bkt").key("big").send().await.unwrap()).await == data);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_aws_chunked_body_is_refused_not_stored_with_its_framing() {
    let (_d, origin, node) = setup().await;
    // s3s decodes aws-chunked framing only on signed requests; unsigned, the framing would
    // be the object.
    let framed = "5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n";
    let req = format!(
        "PUT /bkt/framed HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nContent-Encoding: aws-chunked\r\n\
         x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER\r\nx-amz-decoded-content-length: 5\r\n\
         x-amz-trailer: x-amz-checksum-crc32\r\nConnection: close\r\n\r\n{framed}",
        node.addr,
        framed.len()
    );
    let (status, text) = raw_request(node.addr, req.as_bytes()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("<Code>InvalidRequest</Code>"), "{text}");
    assert!(!origin.root.join("bkt/framed").exists(), "the framed body was stored");
    node.stop().await;
}
