//! What identifies an object and what a client stored with it: size, ETag, Last-Modified,
//! the version string the fleet keys pages by, and the attributes returned as headers
//! (Content-Type and friends, `x-amz-meta-*`). Shared by cache nodes (which persist it with
//! the page store), the router and search nodes (which read it from nodes' answers).

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use object_store::{Attribute, Attributes};
use serde::{Deserialize, Serialize};

/// A response body in the making.
pub type ByteStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static>>;

/// What a client stored with an object besides its bytes, returned on GET and HEAD as
/// the headers of the same names. Plain data: it is persisted with the page store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectAttrs {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    /// The `Expires` header as an HTTP date.
    pub expires: Option<String>,
    /// `x-amz-meta-<name>` entries: names lower-case and without the prefix, sorted by name.
    pub user: Vec<(String, String)>,
}

/// The user-metadata name under which `Expires` is kept at an S3 origin: object_store can
/// neither send nor read that header, so it travels as `x-amz-meta-lakecache-expires`.
pub const EXPIRES_METADATA: &str = "lakecache-expires";

impl ObjectAttrs {
    pub fn is_empty(&self) -> bool {
        *self == ObjectAttrs::default()
    }

    /// From what an object_store origin reports with an object.
    pub fn from_store(a: &Attributes) -> Self {
        let mut out = ObjectAttrs::default();
        for (k, v) in a {
            let v = v.to_string();
            match k {
                Attribute::ContentType => out.content_type = Some(v),
                Attribute::ContentEncoding => out.content_encoding = Some(v),
                Attribute::ContentDisposition => out.content_disposition = Some(v),
                Attribute::ContentLanguage => out.content_language = Some(v),
                Attribute::CacheControl => out.cache_control = Some(v),
                Attribute::Metadata(name) if name.eq_ignore_ascii_case(EXPIRES_METADATA) => {
                    out.expires = Some(v)
                }
                Attribute::Metadata(name) => out.user.push((name.to_ascii_lowercase(), v)),
                _ => {}
            }
        }
        out.user.sort();
        out
    }

    /// What to hand an object_store origin when writing the object.
    pub fn to_store(&self) -> Attributes {
        let mut a = Attributes::new();
        let mut put = |k: Attribute, v: &Option<String>| {
            if let Some(v) = v {
                a.insert(k, v.clone().into());
            }
        };
        put(Attribute::ContentType, &self.content_type);
        put(Attribute::ContentEncoding, &self.content_encoding);
        put(Attribute::ContentDisposition, &self.content_disposition);
        put(Attribute::ContentLanguage, &self.content_language);
        put(Attribute::CacheControl, &self.cache_control);
        put(Attribute::Metadata(EXPIRES_METADATA.into()), &self.expires);
        for (k, v) in &self.user {
            a.insert(Attribute::Metadata(k.clone().into()), v.clone().into());
        }
        a
    }
}

#[derive(Debug, Clone)]
pub struct ObjectMeta {
    pub size: u64,
    /// ETag without quotes (what clients see).
    pub etag: Option<String>,
    /// ETag exactly as the origin reported it (quoted or not), for conditional origin reads.
    pub origin_etag: Option<String>,
    pub last_modified: SystemTime,
    pub attrs: ObjectAttrs,
    /// What identifies this content: the ETag, else size and modification time.
    pub version: String,
    pub checked_at: Instant,
    /// The headers that describe this version on every answer about it (ETag,
    /// Last-Modified, the attributes, …), rendered once on first use by the S3 layer
    /// (`lakecache_s3::response::object_headers`).
    pub rendered: OnceLock<http::HeaderMap>,
}

impl ObjectMeta {
    pub fn from_store(m: &object_store::ObjectMeta, attrs: ObjectAttrs) -> Self {
        let secs = m.last_modified.timestamp();
        let nanos = m.last_modified.timestamp_subsec_nanos();
        let last_modified = if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nanos)
        } else {
            SystemTime::UNIX_EPOCH
        };
        let etag = m.e_tag.as_ref().map(|e| e.trim_matches('"').to_string());
        let version = match &etag {
            Some(e) => e.clone(),
            None => format!("{}-{}.{}", m.size, secs, nanos),
        };
        Self {
            size: m.size,
            etag,
            origin_etag: m.e_tag.clone(),
            last_modified,
            attrs,
            version,
            checked_at: Instant::now(),
            rendered: OnceLock::new(),
        }
    }
}
