//! Answers built outside s3s (health endpoints, a GET whose Range S3 ignores, the router's
//! own answers): plain text, the headers of a whole-object 200, the stored attributes.

use http::{Response, StatusCode};
use lakecache_common::object::{ObjectAttrs, ObjectMeta};

pub fn text(status: StatusCode, body: impl Into<String>) -> Response<s3s::Body> {
    let mut r = Response::new(s3s::Body::from(body.into()));
    *r.status_mut() = status;
    r
}

/// The headers of a 200 answer with the whole object.
pub fn whole_object_headers(
    size: u64,
    etag: Option<&str>,
    last_modified: std::time::SystemTime,
    content_type: Option<&str>,
) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    let mut put = |k: http::header::HeaderName, v: String| {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    };
    put(http::header::CONTENT_LENGTH, size.to_string());
    put(http::header::ACCEPT_RANGES, "bytes".into());
    put(http::header::CONTENT_TYPE, content_type.unwrap_or("application/octet-stream").to_string());
    if let Some(e) = etag {
        put(http::header::ETAG, format!("\"{e}\""));
    }
    put(http::header::LAST_MODIFIED, httpdate(last_modified));
    headers
}

/// The stored attributes as response headers, for answers built outside s3s (a GET whose
/// Range header is ignored).
pub fn attr_headers(a: &ObjectAttrs, headers: &mut http::HeaderMap) {
    let mut put = |name: &str, v: &Option<String>| {
        if let (Some(v), Ok(name)) = (v, http::HeaderName::from_bytes(name.as_bytes()))
            && let Ok(v) = http::HeaderValue::from_str(v)
        {
            headers.insert(name, v);
        }
    };
    put("content-type", &Some(a.content_type.clone().unwrap_or_else(|| "application/octet-stream".into())));
    put("content-encoding", &a.content_encoding);
    put("content-disposition", &a.content_disposition);
    put("content-language", &a.content_language);
    put("cache-control", &a.cache_control);
    put("expires", &a.expires);
    for (k, v) in &a.user {
        put(&format!("x-amz-meta-{k}"), &Some(v.clone()));
    }
}

/// What describes this version of the object on every answer of the internal page
/// protocol: the stored attributes, ETag, Last-Modified, [`wire::OBJECT_SIZE`] and
/// [`wire::OBJECT_VERSION`] (not Content-Length, which depends on the ranges). Rendered once
/// per version and kept with its metadata.
///
/// [`wire::OBJECT_SIZE`]: lakecache_common::wire::OBJECT_SIZE
/// [`wire::OBJECT_VERSION`]: lakecache_common::wire::OBJECT_VERSION
pub fn object_headers(meta: &ObjectMeta) -> &http::HeaderMap {
    use lakecache_common::wire;
    meta.rendered.get_or_init(|| {
        let mut h = http::HeaderMap::new();
        attr_headers(&meta.attrs, &mut h);
        let mut put = |name: &'static str, v: String| {
            if let Ok(v) = http::HeaderValue::from_str(&v) {
                h.insert(http::HeaderName::from_static(name), v);
            }
        };
        put(wire::OBJECT_SIZE, meta.size.to_string());
        put(wire::OBJECT_VERSION, meta.version.clone());
        put("last-modified", httpdate(meta.last_modified));
        if let Some(e) = &meta.etag {
            put("etag", format!("\"{e}\""));
        }
        h
    })
}

/// `t` as an HTTP date (`Last-Modified`).
pub fn httpdate(t: std::time::SystemTime) -> String {
    let ts = s3s::dto::Timestamp::from(t);
    let mut buf = Vec::new();
    let _ = ts.format(s3s::dto::TimestampFormat::HttpDate, &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
