//! Conditional request headers on GET and HEAD, evaluated as RFC 9110 §13.2.2 orders them
//! (and as S3 does): If-Match, else If-Unmodified-Since → 412; If-None-Match, else
//! If-Modified-Since → 304. Dates compare at one-second resolution, as HTTP dates carry.

use std::time::{SystemTime, UNIX_EPOCH};

use s3s::dto::{ETagCondition, Timestamp};
use s3s::{S3Error, s3_error};

use lakecache_common::object::ObjectMeta;

pub struct Conditions<'a> {
    pub if_match: Option<&'a ETagCondition>,
    pub if_none_match: Option<&'a ETagCondition>,
    pub if_modified_since: Option<&'a Timestamp>,
    pub if_unmodified_since: Option<&'a Timestamp>,
}

fn secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

fn ts_secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

fn matches(cond: &ETagCondition, etag: Option<&str>) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => etag.is_some_and(|have| e.value().trim_matches('"') == have),
    }
}

/// A request that carries the four conditional headers.
pub trait Conditional {
    fn conditions(&self) -> Conditions<'_>;
}

macro_rules! conditional {
    ($($t:ty),*) => {$(
        impl Conditional for $t {
            fn conditions(&self) -> Conditions<'_> {
                Conditions {
                    if_match: self.if_match.as_ref(),
                    if_none_match: self.if_none_match.as_ref(),
                    if_modified_since: self.if_modified_since.as_ref(),
                    if_unmodified_since: self.if_unmodified_since.as_ref(),
                }
            }
        }
    )*};
}
conditional!(s3s::dto::GetObjectInput, s3s::dto::HeadObjectInput);

/// A copy request, whose `x-amz-copy-source-if-*` headers condition its source.
pub trait CopySourceConditional {
    fn source_conditions(&self) -> Conditions<'_>;
}

macro_rules! copy_source_conditional {
    ($($t:ty),*) => {$(
        impl CopySourceConditional for $t {
            fn source_conditions(&self) -> Conditions<'_> {
                Conditions {
                    if_match: self.copy_source_if_match.as_ref(),
                    if_none_match: self.copy_source_if_none_match.as_ref(),
                    if_modified_since: self.copy_source_if_modified_since.as_ref(),
                    if_unmodified_since: self.copy_source_if_unmodified_since.as_ref(),
                }
            }
        }
    )*};
}
copy_source_conditional!(s3s::dto::CopyObjectInput, s3s::dto::UploadPartCopyInput);

impl<'a> Conditions<'a> {
    pub fn of(req: &'a impl Conditional) -> Conditions<'a> {
        req.conditions()
    }
}

/// 304 Not Modified, with the validators S3 (and RFC 9110 §15.4.5) send on it: the ETag
/// and Last-Modified of the current version, so a client can keep using its copy.
fn not_modified(meta: &ObjectMeta) -> S3Error {
    let mut e = s3_error!(NotModified);
    let mut h = http::HeaderMap::new();
    if let Some(etag) = &meta.etag
        && let Ok(v) = http::HeaderValue::from_str(&format!("\"{etag}\""))
    {
        h.insert(http::header::ETAG, v);
    }
    let mut date = Vec::new();
    if Timestamp::from(meta.last_modified).format(s3s::dto::TimestampFormat::HttpDate, &mut date).is_ok()
        && let Ok(v) = http::HeaderValue::from_bytes(&date)
    {
        h.insert(http::header::LAST_MODIFIED, v);
    }
    e.set_headers(h);
    e
}

impl Conditions<'_> {
    /// Whether the request has any condition at all.
    pub fn any(&self) -> bool {
        self.if_match.is_some()
            || self.if_none_match.is_some()
            || self.if_modified_since.is_some()
            || self.if_unmodified_since.is_some()
    }

    pub fn check(&self, meta: &ObjectMeta) -> Result<(), S3Error> {
        let etag = meta.etag.as_deref();
        let modified = secs(meta.last_modified);
        if let Some(c) = self.if_match {
            if !matches(c, etag) {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
        } else if let Some(t) = self.if_unmodified_since
            && modified > ts_secs(t)
        {
            return Err(s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            ));
        }
        if let Some(c) = self.if_none_match {
            if matches(c, etag) {
                return Err(not_modified(meta));
            }
        } else if let Some(t) = self.if_modified_since
            && modified <= ts_secs(t)
        {
            return Err(not_modified(meta));
        }
        Ok(())
    }
}
