//! An S3 origin that can name every S3 key. object_store's paths cannot hold a key that
//! ends in `/` (a folder marker, which consoles and many tools create) or contains `//`:
//! its `Path` drops empty segments, so such keys either fail or alias another object.
//! `object_path` maps those keys to an escaped path (see there); this store sends requests
//! for escaped paths itself — signed with object_store's own SigV4 signer, over its own HTTP
//! client — and passes every other request to object_store's `AmazonS3` unchanged. Listings
//! are always its own (ListObjectsV2), because object_store would report `dir/` as `dir`.
//!
//! Not covered for escaped keys: streamed (multipart) uploads, i.e. bodies over 16 MiB.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use http::{HeaderMap, Method, StatusCode};
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequest, HttpResponse, ReqwestConnector};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ClientOptions, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload,
    ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions,
    PutPayload, PutResult, Result,
};

use super::{object_path, path_key, raw_key};

const STORE: &str = "S3";

/// An origin answer that was not 2xx, worded as object_store words its own (so that
/// `OriginError::from_store` reads both alike).
#[derive(Debug)]
struct Status {
    status: StatusCode,
    body: String,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Server returned non-2xx status code: {}: {}", self.status, self.body)
    }
}

impl std::error::Error for Status {}

fn generic(source: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic { store: STORE, source: Box::new(source) }
}

fn status_error(path: &str, status: StatusCode, body: String) -> object_store::Error {
    let source = Box::new(Status { status, body });
    let path = path.to_string();
    match status {
        StatusCode::NOT_FOUND => object_store::Error::NotFound { path, source },
        StatusCode::NOT_MODIFIED => object_store::Error::NotModified { path, source },
        StatusCode::PRECONDITION_FAILED => object_store::Error::Precondition { path, source },
        StatusCode::CONFLICT => object_store::Error::AlreadyExists { path, source },
        StatusCode::FORBIDDEN => object_store::Error::PermissionDenied { path, source },
        StatusCode::UNAUTHORIZED => object_store::Error::Unauthenticated { path, source },
        _ => object_store::Error::Generic { store: STORE, source },
    }
}

/// How S3 wants a key in a URL path: every byte but unreserved ones and `/` escaped.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn encode_query(v: &str) -> String {
    encode_key(v).replace('/', "%2F")
}

fn http_date(t: SystemTime) -> String {
    let mut buf = Vec::new();
    let _ = s3s::dto::Timestamp::from(t).format(s3s::dto::TimestampFormat::HttpDate, &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

fn parse_time(s: &str, format: s3s::dto::TimestampFormat) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = s3s::dto::Timestamp::parse(format, s.trim()).ok()?;
    let odt = time::OffsetDateTime::from(t);
    chrono::DateTime::from_timestamp(odt.unix_timestamp(), odt.nanosecond())
}

/// The parts of object_store's S3 client this store needs for its own requests.
#[derive(Debug)]
struct Raw {
    store: Arc<AmazonS3>,
    http: HttpClient,
    /// `<endpoint>/<bucket>`, path style as object_store addresses it.
    base: String,
    bucket: String,
    region: String,
    anonymous: bool,
}

impl Raw {
    async fn send(
        &self,
        method: Method,
        key: &str,
        query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<HttpResponse> {
        let mut url = format!("{}/{}", self.base, encode_key(key));
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        let mut req: HttpRequest =
            http::Request::builder().method(method).uri(url.as_str()).body(body.into()).map_err(generic)?;
        *req.headers_mut() = headers;
        if !self.anonymous {
            let cred = self.store.credentials().get_credential().await?;
            AwsAuthorizer::new(&cred, "s3", &self.region).try_authorize(&mut req, None)?;
        }
        let resp = self.store_request(req).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = text(resp).await.unwrap_or_default();
        Err(status_error(key, status, body))
    }

    async fn store_request(&self, req: HttpRequest) -> Result<HttpResponse> {
        self.http.execute(req).await.map_err(generic)
    }

    fn meta_of(&self, key: &str, h: &HeaderMap, len: u64) -> Result<(ObjectMeta, std::ops::Range<u64>)> {
        let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
        // `Content-Range: bytes a-b/size` on a 206, else the whole body.
        let (range, size) = match header("content-range").and_then(|v| v.strip_prefix("bytes ")) {
            Some(cr) => {
                let bad =
                    || generic(Status { status: StatusCode::OK, body: format!("bad Content-Range {cr}") });
                let (span, total) = cr.split_once('/').ok_or_else(bad)?;
                let (a, b) = span.split_once('-').ok_or_else(bad)?;
                let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                (a..b + 1, total.parse().map_err(|_| bad())?)
            }
            None => (0..len, len),
        };
        let last_modified = header("last-modified")
            .and_then(|v| parse_time(v, s3s::dto::TimestampFormat::HttpDate))
            .unwrap_or_default();
        let meta = ObjectMeta {
            location: object_path(key).map_err(|e| generic(std::io::Error::other(e.to_string())))?,
            last_modified,
            size,
            e_tag: header("etag").map(str::to_string),
            version: None,
        };
        Ok((meta, range))
    }

    async fn get(&self, key: &str, o: GetOptions) -> Result<GetResult> {
        let mut h = HeaderMap::new();
        let mut set = |name: &'static str, v: String| {
            if let Ok(v) = http::HeaderValue::from_str(&v) {
                h.insert(name, v);
            }
        };
        if let Some(r) = &o.range {
            set(
                "range",
                match r {
                    GetRange::Bounded(r) => format!("bytes={}-{}", r.start, r.end.saturating_sub(1)),
                    GetRange::Offset(n) => format!("bytes={n}-"),
                    GetRange::Suffix(n) => format!("bytes=-{n}"),
                },
            );
        }
        if let Some(e) = &o.if_match {
            set("if-match", e.clone());
        }
        if let Some(e) = &o.if_none_match {
            set("if-none-match", e.clone());
        }
        if let Some(t) = o.if_modified_since {
            set("if-modified-since", http_date(t.into()));
        }
        if let Some(t) = o.if_unmodified_since {
            set("if-unmodified-since", http_date(t.into()));
        }
        let method = if o.head { Method::HEAD } else { Method::GET };
        let resp = self.send(method, key, "", h, Bytes::new()).await?;
        let len = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (meta, range) = self.meta_of(key, resp.headers(), len)?;
        let attributes = attributes_of(resp.headers());
        let payload = if o.head {
            GetResultPayload::Stream(futures::stream::empty().boxed())
        } else {
            GetResultPayload::Stream(resp.into_body().bytes_stream().map_err(generic).boxed())
        };
        Ok(GetResult { payload, meta, range, attributes, extensions: Default::default() })
    }

    async fn put(&self, key: &str, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let mut h = attribute_headers(&opts.attributes);
        match &opts.mode {
            PutMode::Overwrite => {}
            PutMode::Create => {
                h.insert("if-none-match", http::HeaderValue::from_static("*"));
            }
            PutMode::Update(v) => {
                let e = v.e_tag.clone().unwrap_or_default();
                if let Ok(v) = http::HeaderValue::from_str(&e) {
                    h.insert("if-match", v);
                }
            }
        }
        let resp = self.send(Method::PUT, key, "", h, Bytes::from(payload)).await?;
        let e_tag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok(PutResult { e_tag, version: None, extensions: Default::default() })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.send(Method::DELETE, key, "", HeaderMap::new(), Bytes::new()).await.map(|_| ())
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        let mut h = HeaderMap::new();
        let source = format!("{}/{}", self.bucket, encode_key(from));
        h.insert("x-amz-copy-source", http::HeaderValue::from_str(&source).map_err(generic)?);
        let resp = self.send(Method::PUT, to, "", h, Bytes::new()).await?;
        // A copy can fail after S3 has answered 200: the error is then in the body.
        let body = text(resp).await?;
        if body.contains("<Error>") {
            return Err(generic(Status { status: StatusCode::INTERNAL_SERVER_ERROR, body }));
        }
        Ok(())
    }

    /// One ListObjectsV2 page.
    async fn list_page(&self, prefix: &str, delimiter: bool, token: Option<&str>) -> Result<ListPage> {
        let mut q = format!("list-type=2&prefix={}", encode_query(prefix));
        if delimiter {
            q.push_str("&delimiter=%2F");
        }
        if let Some(t) = token {
            q.push_str(&format!("&continuation-token={}", encode_query(t)));
        }
        let url = format!("{}?{q}", self.base);
        let mut req: HttpRequest = http::Request::builder()
            .method(Method::GET)
            .uri(url.as_str())
            .body(Bytes::new().into())
            .map_err(generic)?;
        if !self.anonymous {
            let cred = self.store.credentials().get_credential().await?;
            AwsAuthorizer::new(&cred, "s3", &self.region).try_authorize(&mut req, None)?;
        }
        let resp = self.store_request(req).await?;
        let status = resp.status();
        let body = text(resp).await?;
        if !status.is_success() {
            return Err(status_error(prefix, status, body));
        }
        parse_list(&body)
    }

    fn list(self: Arc<Self>, prefix: String, delimiter: bool) -> BoxStream<'static, Result<ListPage>> {
        futures::stream::try_unfold((self, Some(None::<String>)), move |(raw, next)| {
            let prefix = prefix.clone();
            async move {
                let Some(token) = next else { return Ok(None) };
                let page = raw.list_page(&prefix, delimiter, token.as_deref()).await?;
                let next = page.next.clone().map(Some);
                Ok(Some((page, (raw, next))))
            }
        })
        .boxed()
    }
}

async fn text(resp: HttpResponse) -> Result<String> {
    let b = resp.into_body().bytes().await.map_err(generic)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

#[derive(Debug, Default)]
struct ListPage {
    objects: Vec<ObjectMeta>,
    prefixes: Vec<Path>,
    next: Option<String>,
}

fn unescape_xml(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16).ok().and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The contents of every `<tag>…</tag>` in `xml`, in order (no nesting of one tag in itself).
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

fn element(xml: &str, tag: &str) -> Option<String> {
    elements(xml, tag).first().map(|v| unescape_xml(v))
}

fn parse_list(xml: &str) -> Result<ListPage> {
    let bad =
        |what: &str| generic(Status { status: StatusCode::OK, body: format!("listing without {what}") });
    let mut page = ListPage::default();
    for c in elements(xml, "Contents") {
        let key = element(c, "Key").ok_or_else(|| bad("Key"))?;
        page.objects.push(ObjectMeta {
            location: object_path(&key).map_err(|e| generic(std::io::Error::other(e.to_string())))?,
            last_modified: element(c, "LastModified")
                .and_then(|t| parse_time(&t, s3s::dto::TimestampFormat::DateTime))
                .unwrap_or_default(),
            size: element(c, "Size").and_then(|s| s.parse().ok()).ok_or_else(|| bad("Size"))?,
            e_tag: element(c, "ETag"),
            version: None,
        });
    }
    for p in elements(xml, "CommonPrefixes") {
        let prefix = element(p, "Prefix").ok_or_else(|| bad("Prefix"))?;
        // A common prefix is reported as the directory path, without its delimiter.
        let dir = prefix.strip_suffix('/').unwrap_or(&prefix);
        page.prefixes.push(object_path(dir).map_err(|e| generic(std::io::Error::other(e.to_string())))?);
    }
    if element(xml, "IsTruncated").as_deref() == Some("true") {
        page.next = Some(element(xml, "NextContinuationToken").ok_or_else(|| bad("NextContinuationToken"))?);
    }
    Ok(page)
}

/// Object attributes from answer headers, as object_store reads them.
fn attributes_of(h: &HeaderMap) -> Attributes {
    let mut a = Attributes::new();
    for (name, value) in h {
        let Ok(v) = value.to_str() else { continue };
        let k = match name.as_str() {
            "content-type" => Attribute::ContentType,
            "content-encoding" => Attribute::ContentEncoding,
            "content-disposition" => Attribute::ContentDisposition,
            "content-language" => Attribute::ContentLanguage,
            "cache-control" => Attribute::CacheControl,
            n => match n.strip_prefix("x-amz-meta-") {
                Some(m) => Attribute::Metadata(m.to_string().into()),
                None => continue,
            },
        };
        a.insert(k, v.to_string().into());
    }
    a
}

fn attribute_headers(a: &Attributes) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in a {
        let name = match k {
            Attribute::ContentType => "content-type".to_string(),
            Attribute::ContentEncoding => "content-encoding".to_string(),
            Attribute::ContentDisposition => "content-disposition".to_string(),
            Attribute::ContentLanguage => "content-language".to_string(),
            Attribute::CacheControl => "cache-control".to_string(),
            Attribute::StorageClass => "x-amz-storage-class".to_string(),
            Attribute::Metadata(m) => format!("x-amz-meta-{m}"),
            _ => continue,
        };
        if let (Ok(n), Ok(v)) =
            (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(v))
        {
            h.insert(n, v);
        }
    }
    h
}

/// The prefix a listing of the directory `p` asks S3 for.
fn list_prefix(p: Option<&Path>) -> String {
    match p {
        Some(p) if !p.as_ref().is_empty() => format!("{}/", path_key(p)),
        _ => String::new(),
    }
}

#[derive(Debug)]
pub struct S3Store {
    raw: Arc<Raw>,
}

impl S3Store {
    pub fn new(
        store: AmazonS3,
        endpoint: &str,
        bucket: &str,
        region: &str,
        anonymous: bool,
        options: &ClientOptions,
    ) -> Result<Self> {
        let http = ReqwestConnector::default().connect(options)?;
        Ok(Self {
            raw: Arc::new(Raw {
                store: Arc::new(store),
                http,
                base: format!("{}/{}", endpoint.trim_end_matches('/'), encode_key(bucket)),
                bucket: bucket.to_string(),
                region: region.to_string(),
                anonymous,
            }),
        })
    }
}

impl fmt::Display for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Store({})", self.raw.store)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        match raw_key(location) {
            Some(key) => self.raw.put(&key, payload, opts).await,
            None => self.raw.store.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        match raw_key(location) {
            Some(_) => Err(object_store::Error::NotImplemented {
                operation: "a streamed upload (over 16 MiB) of a key ending in / or holding //".into(),
                implementer: self.to_string(),
            }),
            None => self.raw.store.put_multipart_opts(location, opts).await,
        }
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        match raw_key(location) {
            Some(key) => self.raw.get(&key, options).await,
            None => self.raw.store.get_opts(location, options).await,
        }
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let raw = self.raw.clone();
        locations
            .then(move |p| {
                let raw = raw.clone();
                async move {
                    let p = p?;
                    match raw_key(&p) {
                        Some(key) => raw.delete(&key).await.map(|()| p),
                        None => {
                            object_store::ObjectStoreExt::delete(raw.store.as_ref(), &p).await.map(|()| p)
                        }
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.raw
            .clone()
            .list(list_prefix(prefix), false)
            .map_ok(|page| futures::stream::iter(page.objects.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let pages: Vec<ListPage> = self.raw.clone().list(list_prefix(prefix), true).try_collect().await?;
        let mut out =
            ListResult { common_prefixes: Vec::new(), objects: Vec::new(), extensions: Default::default() };
        for p in pages {
            out.objects.extend(p.objects);
            out.common_prefixes.extend(p.prefixes);
        }
        Ok(out)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        match (raw_key(from), raw_key(to)) {
            (None, None) => self.raw.store.copy_opts(from, to, options).await,
            _ => self.raw.copy(&path_key(from), &path_key(to)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_read_with_their_raw_keys() {
        let xml = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>dir/</Key>\
            <LastModified>2024-01-02T03:04:05.000Z</LastModified><ETag>&quot;abc&quot;</ETag><Size>0</Size></Contents>\
            <Contents><Key>a//b &amp; c</Key><Size>3</Size></Contents>\
            <CommonPrefixes><Prefix>x//</Prefix></CommonPrefixes>\
            <NextContinuationToken>t1</NextContinuationToken></ListBucketResult>";
        let p = parse_list(xml).unwrap();
        let keys: Vec<String> = p.objects.iter().map(|m| path_key(&m.location)).collect();
        assert_eq!(keys, ["dir/", "a//b & c"]);
        assert_eq!(p.objects[0].e_tag.as_deref(), Some("\"abc\""));
        assert_eq!(p.objects[0].last_modified.timestamp(), 1_704_164_645);
        assert_eq!(p.prefixes.iter().map(path_key).collect::<Vec<_>>(), ["x/"]);
        assert_eq!(p.next.as_deref(), Some("t1"));
        assert_eq!(encode_key("a b/c+d//é"), "a%20b/c%2Bd//%C3%A9");
    }
}
