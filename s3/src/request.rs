//! What a request names, parsed the same way by every S3 server in the fleet: the bucket
//! of a virtual-host request, percent-decoded paths, Range headers S3 ignores, the
//! conditional headers, and a requested range against an object's size.

use http::Method;
use lakecache_common::page::{ByteRange, RequestedRange};
use s3s::dto::Range;
use s3s::{S3Result, s3_error};

/// The bucket a virtual-host style Host names: `<bucket>.<domain>` for a configured domain.
pub fn host_bucket<'a>(domains: &[String], host: &'a str) -> Option<&'a str> {
    let name = host.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map_or(host, |(h, _)| h);
    domains.iter().find_map(|d| {
        name.strip_suffix(d.as_str()).and_then(|b| b.strip_suffix('.')).filter(|b| !b.is_empty())
    })
}

pub use lakecache_common::percent::decode as percent_decode;

/// Whether S3 would ignore this GET's Range header and answer the whole object: a plain
/// GetObject (no sub-resource in the query) whose Range is not one satisfiable-or-not
/// byte range s3s can parse (several ranges, `bytes=5-2`, another unit, garbage, numbers
/// past 2^63). s3s would refuse such a header with 400 instead.
pub fn range_is_ignored(method: &Method, uri: &http::Uri, headers: &http::HeaderMap) -> bool {
    let plain_get = uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()).all(|p| {
        let name = p.split('=').next().unwrap_or("");
        name == "x-id" || name.starts_with("X-Amz-") || name.starts_with("response-")
    });
    if method != Method::GET || !plain_get {
        return false;
    }
    let Some(r) = headers.get(http::header::RANGE) else { return false };
    r.to_str().map_or(true, |r| s3s::dto::Range::parse(r).is_err())
}

/// The conditional headers of a request s3s did not parse itself.
pub struct HeaderConditions {
    if_match: Option<s3s::dto::ETagCondition>,
    if_none_match: Option<s3s::dto::ETagCondition>,
    if_modified_since: Option<s3s::dto::Timestamp>,
    if_unmodified_since: Option<s3s::dto::Timestamp>,
}

impl HeaderConditions {
    pub fn parse(h: &http::HeaderMap) -> S3Result<Self> {
        let header = |name: http::header::HeaderName| h.get(name).map(|v| v.as_bytes());
        let bad = |what: &str| s3_error!(InvalidArgument, "Invalid {what} header");
        let etag_cond = |name| {
            header(name)
                .map(|v| s3s::dto::ETagCondition::parse_http_header(v).map_err(|_| bad("ETag condition")))
                .transpose()
        };
        let date = |name| {
            header(name)
                .map(|v| {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|t| s3s::dto::Timestamp::parse(s3s::dto::TimestampFormat::HttpDate, t).ok())
                        .ok_or_else(|| bad("date"))
                })
                .transpose()
        };
        Ok(Self {
            if_match: etag_cond(http::header::IF_MATCH)?,
            if_none_match: etag_cond(http::header::IF_NONE_MATCH)?,
            if_modified_since: date(http::header::IF_MODIFIED_SINCE)?,
            if_unmodified_since: date(http::header::IF_UNMODIFIED_SINCE)?,
        })
    }

    pub fn as_conditions(&self) -> crate::conditional::Conditions<'_> {
        crate::conditional::Conditions {
            if_match: self.if_match.as_ref(),
            if_none_match: self.if_none_match.as_ref(),
            if_modified_since: self.if_modified_since.as_ref(),
            if_unmodified_since: self.if_unmodified_since.as_ref(),
        }
    }
}

/// A GET or HEAD of one object that s3s would hand to `get_object`/`head_object` with
/// nothing more to do: anonymous where anonymous access is allowed, no query string, a
/// path (or virtual host) that names an object by S3's rules, a Range that parses and
/// conditional headers that parse. The server answers it itself — the answer s3s would
/// build — and skips the S3 layer's request parsing and response serialisation on the
/// commonest request there is. Anything else (signed, a sub-resource, a header s3s
/// refuses or S3 ignores, a fleet member's versioned read) goes through s3s.
pub struct PlainRead {
    pub head: bool,
    pub bucket: String,
    pub key: String,
    pub range: Option<Range>,
    pub conditions: HeaderConditions,
}

impl PlainRead {
    pub fn of<B>(req: &http::Request<B>, domains: &[String], anonymous: bool) -> Option<Self> {
        let head = match *req.method() {
            http::Method::GET => false,
            http::Method::HEAD => true,
            _ => return None,
        };
        let h = req.headers();
        // `x-id=GetObject` is what aws-sdk clients add to every GetObject; S3 and s3s ignore it.
        let plain_query = match req.uri().query() {
            None => true,
            Some(q) => !head && q == "x-id=GetObject",
        };
        if !anonymous
            || !plain_query
            || h.contains_key(http::header::AUTHORIZATION)
            || h.contains_key(lakecache_common::wire::READ_VERSION)
        {
            return None;
        }
        let host = h.get(http::header::HOST)?.to_str().ok()?;
        let decoded = percent_decode(req.uri().path())?;
        let path = match host_bucket(domains, host) {
            Some(b) => s3s::path::parse_virtual_hosted_style(Some(b), &decoded),
            None => s3s::path::parse_path_style(&decoded),
        }
        .ok()?;
        let (bucket, key) = path.as_object()?;
        let range = match h.get(http::header::RANGE) {
            None => None,
            Some(v) => Some(Range::parse(v.to_str().ok()?).ok()?),
        };
        let conditions = HeaderConditions::parse(h).ok()?;
        Some(Self { head, bucket: bucket.to_string(), key: key.to_string(), range, conditions })
    }
}

fn requested(r: &Range) -> RequestedRange {
    match *r {
        Range::Int { first, last } => RequestedRange::FromTo { first, last },
        Range::Suffix { length } => RequestedRange::Suffix { len: length },
    }
}

/// The byte range a GET or HEAD asked for, resolved against the object's size; `true` when
/// a range was asked for (a 206 answer).
pub fn resolve_range(range: Option<&Range>, size: u64) -> S3Result<(ByteRange, bool)> {
    match range {
        None => Ok((ByteRange { start: 0, end: size }, false)),
        Some(r) => requested(r)
            .resolve(size)
            .map(|br| (br, true))
            .map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(method: &str, uri: &str, headers: &[(&str, &str)], anonymous: bool) -> Option<PlainRead> {
        let mut b = http::Request::builder().method(method).uri(uri).header("host", "127.0.0.1:9000");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        PlainRead::of(&b.body(()).unwrap(), &["s3.example".to_string()], anonymous)
    }

    #[test]
    fn only_unsigned_object_reads_without_a_query_are_plain() {
        let p = plain("GET", "/bkt/a/b%20c", &[("range", "bytes=1-2")], true).unwrap();
        assert_eq!((p.bucket.as_str(), p.key.as_str(), p.head), ("bkt", "a/b c", false));
        assert!(p.range.is_some());
        assert!(plain("HEAD", "/bkt/k", &[], true).is_some_and(|p| p.head));
        // Everything else is the S3 layer's.
        assert!(plain("GET", "/bkt/k", &[], false).is_none(), "anonymous access is off");
        assert!(plain("GET", "/bkt/k", &[("authorization", "AWS4-HMAC-SHA256 x")], true).is_none());
        assert!(plain("GET", "/bkt/k?partNumber=1", &[], true).is_none());
        assert!(plain("GET", "/bkt/k?x-id=GetObject", &[], true).is_some(), "the SDKs' operation marker");
        for q in [
            "x-id=GetObject&partNumber=1",
            "x-id=PutObject",
            "x-id=GetObjectAcl",
            "x-id=GetObject&x-id=GetObject",
        ] {
            assert!(plain("GET", &format!("/bkt/k?{q}"), &[], true).is_none(), "{q}");
        }
        assert!(plain("HEAD", "/bkt/k?x-id=GetObject", &[], true).is_none());
        assert!(plain("GET", "/bkt/k", &[("x-lakecache-read-version", "e1")], true).is_none(), "versioned");
        assert!(plain("GET", "/bkt/k?X-Amz-Signature=00", &[], true).is_none());
        assert!(plain("PUT", "/bkt/k", &[], true).is_none());
        assert!(plain("GET", "/bkt", &[], true).is_none(), "a bucket");
        assert!(plain("GET", "/bkt/", &[], true).is_none(), "a bucket");
        assert!(plain("GET", "/", &[], true).is_none());
        assert!(plain("GET", "/BadBucket/k", &[], true).is_none(), "not a bucket name");
        assert!(plain("GET", "/bkt/k", &[("range", "bytes=0-1,4-5")], true).is_none(), "a Range S3 ignores");
        assert!(plain("GET", "/bkt/k", &[("if-modified-since", "yesterday")], true).is_none());
        assert!(plain("GET", "/bkt/%ff", &[], true).is_none(), "not UTF-8");
        // Virtual-hosted style.
        let b = http::Request::builder().uri("/dir/k").header("host", "pics.s3.example").body(()).unwrap();
        let p = PlainRead::of(&b, &["s3.example".to_string()], true).unwrap();
        assert_eq!((p.bucket.as_str(), p.key.as_str()), ("pics", "dir/k"));
    }

    #[test]
    fn virtual_host_bucket_is_parsed_only_under_configured_domains() {
        let d = vec!["s3.local".to_string()];
        assert_eq!(host_bucket(&d, "media.s3.local:9000"), Some("media"));
        assert_eq!(host_bucket(&d, "media.s3.local"), Some("media"));
        assert_eq!(host_bucket(&d, "s3.local:9000"), None);
        assert_eq!(host_bucket(&d, "127.0.0.1:9000"), None);
        assert_eq!(host_bucket(&[], "media.s3.local"), None);
    }
}
