//! Answers built outside s3s (health endpoints, plain reads, a GET whose Range S3 ignores,
//! the page protocol): plain text, an object version's headers rendered once, a read's
//! length and range, S3 errors as s3s sends them.

use http::{Response, StatusCode};
use lakecache_common::object::{ObjectAttrs, ObjectMeta};

pub fn text(status: StatusCode, body: impl Into<String>) -> Response<s3s::Body> {
    let mut r = Response::new(s3s::Body::from(body.into()));
    *r.status_mut() = status;
    r
}

/// The stored attributes as response headers (part of [`object_headers`]).
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

/// What describes this version of the object on every successful GET or HEAD answer —
/// Content-Type (`application/octet-stream` if none), ETag, Last-Modified, Accept-Ranges
/// and the stored attributes — rendered once per version and kept with its metadata. An
/// answer adds its length (and range); the internal page protocol adds the object's size
/// and version. Where [`plain_attrs`] holds, this is what s3s renders for the object.
pub fn object_headers(meta: &ObjectMeta) -> &http::HeaderMap {
    meta.rendered.get_or_init(|| {
        let mut h = http::HeaderMap::new();
        attr_headers(&meta.attrs, &mut h);
        h.insert(http::header::ACCEPT_RANGES, http::HeaderValue::from_static("bytes"));
        if let Ok(v) = http::HeaderValue::from_str(&httpdate(meta.last_modified)) {
            h.insert(http::header::LAST_MODIFIED, v);
        }
        if let Some(e) = &meta.etag
            && let Ok(v) = http::HeaderValue::from_str(&format!("\"{e}\""))
        {
            h.insert(http::header::ETAG, v);
        }
        h
    })
}

/// `Content-Range` of an answer with `range` of an object of `size` bytes.
pub fn content_range(range: lakecache_common::page::ByteRange, size: u64) -> String {
    format!("bytes {}-{}/{}", range.start, range.end.saturating_sub(1), size)
}

/// The headers of a read's answer: the object's `object` headers, the answer's length and,
/// for a range (`partial`), its Content-Range.
pub fn read_headers(
    object: &http::HeaderMap,
    range: lakecache_common::page::ByteRange,
    size: u64,
    partial: bool,
) -> http::HeaderMap {
    let mut h = object.clone();
    h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(range.len()));
    if partial && let Ok(v) = http::HeaderValue::from_str(&content_range(range, size)) {
        h.insert(http::header::CONTENT_RANGE, v);
    }
    h
}

/// An S3 error as s3s sends it (for answers built outside s3s).
pub fn s3_error_response(e: s3s::S3Error) -> Response<s3s::Body> {
    e.to_http_response().unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"))
}

/// Whether the attributes render in [`object_headers`] exactly as s3s renders them: every
/// value printable ASCII (s3s MIME-encodes others) and no Expires (which s3s re-formats).
pub fn plain_attrs(a: &ObjectAttrs) -> bool {
    let printable = |v: &str| v.bytes().all(|b| (0x20..0x7f).contains(&b));
    a.expires.is_none()
        && [
            &a.content_type,
            &a.content_encoding,
            &a.content_disposition,
            &a.content_language,
            &a.cache_control,
        ]
        .into_iter()
        .all(|v| v.as_deref().is_none_or(printable))
        && a.user.iter().all(|(k, v)| printable(k) && printable(v))
}

/// `t` as an HTTP date (`Last-Modified`).
pub fn httpdate(t: std::time::SystemTime) -> String {
    let ts = s3s::dto::Timestamp::from(t);
    let mut buf = Vec::new();
    let _ = ts.format(s3s::dto::TimestampFormat::HttpDate, &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// An error answer of the internal page protocol: the status, the S3 code in
/// `x-lakecache-error-code` and a short message as a text body.
pub fn fleet_error(status: http::StatusCode, code: &str, message: &str) -> http::Response<s3s::Body> {
    let mut r = http::Response::new(s3s::Body::from(message.to_string()));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(code) {
        r.headers_mut().insert(http::HeaderName::from_static(lakecache_common::wire::ERROR_CODE), v);
    }
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakecache_common::page::ByteRange;

    #[test]
    fn read_headers_keep_every_object_header_and_set_length_and_range() {
        let mut object = http::HeaderMap::new();
        object.insert(http::header::ETAG, http::HeaderValue::from_static("\"e\""));
        object.append("x-amz-meta-a", http::HeaderValue::from_static("1"));
        object.append("x-amz-meta-a", http::HeaderValue::from_static("2"));
        object.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("999"));

        let h = read_headers(&object, ByteRange { start: 10, end: 20 }, 100, true);
        assert_eq!(h["etag"], "\"e\"");
        let meta: Vec<_> = h.get_all("x-amz-meta-a").iter().collect();
        assert_eq!(meta, ["1", "2"], "multi-valued headers keep every value, in order");
        let lengths: Vec<_> = h.get_all(http::header::CONTENT_LENGTH).iter().collect();
        assert_eq!(lengths, ["10"], "the answer's length replaces any the object had");
        assert_eq!(h[http::header::CONTENT_RANGE], "bytes 10-19/100");
        assert_eq!(h.len(), 5);

        let whole = read_headers(&object, ByteRange { start: 0, end: 100 }, 100, false);
        assert_eq!(whole[http::header::CONTENT_LENGTH], "100");
        assert!(whole.get(http::header::CONTENT_RANGE).is_none());
    }
}
