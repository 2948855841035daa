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

pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

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
