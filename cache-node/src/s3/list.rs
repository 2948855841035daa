//! ListObjectsV2 / ListObjects / ListBuckets over the origin. S3's listing semantics
//! (string prefixes, any delimiter, start-after, continuation tokens, max-keys, URL
//! encoding) are rebuilt on top of object_store's path-based listing. An optional short
//! TTL reuses a listing; a write through this node drops the bucket's cached listings.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::ObjectStore;
use parking_lot::Mutex;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::{LakeS3, origin_err};
use crate::origin::OriginError;

#[derive(Debug, Clone)]
pub struct Entry {
    key: String,
    size: u64,
    etag: Option<String>,
    last_modified: std::time::SystemTime,
}

impl Entry {
    fn from_store(m: object_store::ObjectMeta) -> Entry {
        let meta = crate::cache::ObjectMeta::from_store(&m, Default::default());
        Entry {
            key: crate::origin::path_key(&m.location),
            size: m.size,
            etag: meta.etag,
            last_modified: meta.last_modified,
        }
    }
}

type Listing = Arc<Vec<Entry>>;
/// (bucket, directory, one level only)
type ListKey = (String, String, bool);

pub struct ListCache {
    ttl: Duration,
    map: Mutex<HashMap<ListKey, (Instant, Listing)>>,
}

impl ListCache {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, map: Mutex::new(HashMap::new()) }
    }

    pub fn invalidate_bucket(&self, bucket: &str) {
        if !self.ttl.is_zero() {
            self.map.lock().retain(|(b, _, _), _| b != bucket);
        }
    }
}

/// Every object under the directory part of `prefix` (only its direct children and
/// sub-directories when `delimited`), sorted by key, filtered by `prefix`.
async fn listing(s3: &LakeS3, bucket: &str, prefix: &str, delimited: bool) -> S3Result<Listing> {
    let dir = prefix_dir(prefix);
    let ck = (bucket.to_string(), dir.to_string(), delimited);
    if !s3.lists.ttl.is_zero()
        && let Some((t, l)) = s3.lists.map.lock().get(&ck)
        && t.elapsed() < s3.lists.ttl
    {
        return Ok(filter(l, prefix));
    }
    let store = s3.cache.origins.store(bucket).map_err(origin_err)?;
    let all = s3
        .cache
        .origins
        .call("list", fetch_listing(&store, dir, delimited))
        .await
        .or_else(|e| match e {
            OriginError::NotFound => Ok(Vec::new()),
            e => Err(e),
        })
        .map_err(origin_err)?;
    let all = Arc::new(all);
    if !s3.lists.ttl.is_zero() {
        let mut map = s3.lists.map.lock();
        map.retain(|_, (t, _)| t.elapsed() < s3.lists.ttl);
        map.insert(ck, (Instant::now(), all.clone()));
    }
    Ok(filter(&all, prefix))
}

/// Every object under the directory `dir` of `store`, sorted by key. A directory no
/// store path can name holds nothing. `delimited`: one level only — direct children, and
/// each sub-directory as an entry `dir/sub/` (which `/`-delimited paging turns into a
/// common prefix) — so `aws s3 ls` of a huge bucket does not walk all of it.
pub async fn fetch_listing(
    store: &Arc<dyn ObjectStore>,
    dir: &str,
    delimited: bool,
) -> object_store::Result<Vec<Entry>> {
    let dir_path = if dir.is_empty() {
        None
    } else {
        match crate::origin::object_path(dir) {
            Ok(p) => Some(p),
            Err(_) => return Ok(Vec::new()),
        }
    };
    if delimited {
        let r = store.list_with_delimiter(dir_path.as_ref()).await?;
        let mut all: Vec<Entry> = r
            .objects
            .into_iter()
            .map(Entry::from_store)
            .chain(r.common_prefixes.into_iter().map(|p| Entry {
                key: format!("{}/", crate::origin::path_key(&p)),
                size: 0,
                etag: None,
                last_modified: std::time::SystemTime::UNIX_EPOCH,
            }))
            .collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        return Ok(all);
    }
    let metas: Vec<object_store::ObjectMeta> = store.list(dir_path.as_ref()).try_collect().await?;
    let mut all: Vec<Entry> = metas.into_iter().map(Entry::from_store).collect();
    all.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(all)
}

/// Whether one directory level answers the request: `/` as delimiter and a prefix that is
/// a whole directory (or empty).
pub fn one_level(prefix: &str, delimiter: Option<&str>) -> bool {
    delimiter == Some("/") && (prefix.is_empty() || prefix.ends_with('/'))
}

/// The directory part of a prefix: what a path-based listing must cover.
pub fn prefix_dir(prefix: &str) -> &str {
    prefix.rfind('/').map_or("", |i| &prefix[..i])
}

fn filter(all: &Listing, prefix: &str) -> Listing {
    if prefix.is_empty() {
        return all.clone();
    }
    Arc::new(all.iter().filter(|e| e.key.starts_with(prefix)).cloned().collect())
}

enum Item<'a> {
    Object(&'a Entry),
    Prefix(String),
}

impl Item<'_> {
    fn key(&self) -> &str {
        match self {
            Item::Object(e) => &e.key,
            Item::Prefix(p) => p,
        }
    }
}

struct Page<'a> {
    items: Vec<Item<'a>>,
    truncated: bool,
}

/// Groups by delimiter, skips everything at or before `marker`, takes `max_keys` (with
/// `max_keys` 0 nothing is taken and nothing counts as left out, as S3 answers).
fn page<'a>(
    entries: &'a [Entry],
    prefix: &str,
    delimiter: Option<&str>,
    marker: Option<&str>,
    max_keys: usize,
) -> Page<'a> {
    let mut items: Vec<Item<'a>> = Vec::new();
    let mut truncated = false;
    if max_keys == 0 {
        return Page { items, truncated };
    }
    let mut last_prefix: Option<String> = None;
    for e in entries {
        let item = match delimiter.filter(|d| !d.is_empty()) {
            Some(d) => match e.key[prefix.len()..].find(d) {
                Some(i) => Item::Prefix(e.key[..prefix.len() + i + d.len()].to_string()),
                None => Item::Object(e),
            },
            None => Item::Object(e),
        };
        if let Item::Prefix(p) = &item {
            if last_prefix.as_deref() == Some(p.as_str()) {
                continue;
            }
            last_prefix = Some(p.clone());
        }
        if marker.is_some_and(|m| item.key() <= m) {
            continue;
        }
        if items.len() == max_keys {
            truncated = true;
            break;
        }
        items.push(item);
    }
    Page { items, truncated }
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn token_encode(key: &str) -> String {
    format!("lc1{}", lakecache_common::auth::hex(key.as_bytes()))
}

fn token_decode(t: &str) -> S3Result<String> {
    let hex = t
        .strip_prefix("lc1")
        .ok_or_else(|| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))?;
    let bytes: Option<Vec<u8>> =
        (0..hex.len() / 2).map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()).collect();
    bytes
        .filter(|_| hex.len() % 2 == 0)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))
}

fn max_keys(m: Option<i32>) -> S3Result<usize> {
    match m {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must be non-negative")),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

struct Rendered {
    contents: Vec<Object>,
    prefixes: Vec<CommonPrefix>,
    last_key: Option<String>,
}

/// The owner S3 lists with each object (v1 always, v2 with `fetch-owner=true`): objects
/// belong to the account the origin is reached with, which a cache cannot name, so the
/// requester stands in for it.
fn owner_of(credentials: Option<&s3s::auth::Credentials>) -> Owner {
    let id = credentials.map_or_else(|| "anonymous".to_string(), |c| c.access_key.clone());
    Owner { display_name: Some(id.clone()), id: Some(id) }
}

fn render(p: &Page<'_>, encode: bool, owner: Option<&Owner>) -> Rendered {
    let enc = |s: &str| if encode { url_encode(s) } else { s.to_string() };
    let mut contents = Vec::new();
    let mut prefixes = Vec::new();
    for it in &p.items {
        match it {
            Item::Object(e) => contents.push(Object {
                key: Some(enc(&e.key)),
                size: Some(e.size as i64),
                e_tag: e.etag.clone().map(ETag::Strong),
                last_modified: Some(Timestamp::from(e.last_modified)),
                storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                owner: owner.cloned(),
                ..Default::default()
            }),
            Item::Prefix(pfx) => prefixes.push(CommonPrefix { prefix: Some(enc(pfx)) }),
        }
    }
    Rendered { contents, prefixes, last_key: p.items.last().map(|i| i.key().to_string()) }
}

pub async fn list_objects_v2(
    s3: &LakeS3,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let prefix = req.input.prefix.clone().unwrap_or_default();
    let delimited = one_level(&prefix, req.input.delimiter.as_deref());
    let entries = listing(s3, &req.input.bucket, &prefix, delimited).await?;
    let owner = owner_of(req.credentials.as_ref());
    render_v2_as(&entries, req.input, &owner).map(S3Response::new)
}

/// A ListObjectsV2 answer from a sorted listing that covers the prefix.
pub fn render_v2(entries: &[Entry], i: ListObjectsV2Input) -> S3Result<ListObjectsV2Output> {
    render_v2_as(entries, i, &owner_of(None))
}

fn render_v2_as(
    entries: &[Entry],
    mut i: ListObjectsV2Input,
    owner: &Owner,
) -> S3Result<ListObjectsV2Output> {
    // Empty parameters are absent ones (clients send `continuation-token=` on a first page).
    i.delimiter = i.delimiter.filter(|d| !d.is_empty());
    i.continuation_token = i.continuation_token.filter(|t| !t.is_empty());
    let prefix = i.prefix.clone().unwrap_or_default();
    let max = max_keys(i.max_keys)?;
    let token_key = i.continuation_token.as_deref().map(token_decode).transpose()?;
    let marker = match (token_key, i.start_after.clone()) {
        (Some(t), Some(s)) => Some(t.max(s)),
        (t, s) => t.or(s),
    };
    let start = entries.partition_point(|e| e.key.as_str() < prefix.as_str());
    let end = start + entries[start..].iter().take_while(|e| e.key.starts_with(&prefix)).count();
    let p = page(&entries[start..end], &prefix, i.delimiter.as_deref(), marker.as_deref(), max);
    let encode = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
    let r = render(&p, encode, i.fetch_owner.unwrap_or(false).then_some(owner));
    let enc = |s: String| if encode { url_encode(&s) } else { s };
    Ok(ListObjectsV2Output {
        name: Some(i.bucket),
        prefix: Some(enc(prefix)),
        delimiter: i.delimiter.map(enc),
        max_keys: Some(max as i32),
        key_count: Some((r.contents.len() + r.prefixes.len()) as i32),
        continuation_token: i.continuation_token,
        next_continuation_token: if p.truncated { r.last_key.as_deref().map(token_encode) } else { None },
        is_truncated: Some(p.truncated),
        start_after: i.start_after.map(enc),
        encoding_type: i.encoding_type,
        contents: (!r.contents.is_empty()).then_some(r.contents),
        common_prefixes: (!r.prefixes.is_empty()).then_some(r.prefixes),
        ..Default::default()
    })
}

pub async fn list_objects_v1(
    s3: &LakeS3,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let owner = owner_of(req.credentials.as_ref());
    let mut i = req.input;
    i.delimiter = i.delimiter.filter(|d| !d.is_empty());
    let prefix = i.prefix.clone().unwrap_or_default();
    let max = max_keys(i.max_keys)?;
    let entries = listing(s3, &i.bucket, &prefix, one_level(&prefix, i.delimiter.as_deref())).await?;
    let p = page(&entries, &prefix, i.delimiter.as_deref(), i.marker.as_deref(), max);
    let encode = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
    let r = render(&p, encode, Some(&owner));
    let enc = |s: String| if encode { url_encode(&s) } else { s };
    let next_marker = (p.truncated && i.delimiter.is_some()).then(|| r.last_key.clone().map(enc)).flatten();
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(i.bucket),
        // S3 encodes v1's keys, markers and delimiter, but not its top-level Prefix.
        prefix: Some(prefix),
        delimiter: i.delimiter.map(enc),
        // v1 always names the marker, empty when none was given.
        marker: Some(enc(i.marker.unwrap_or_default())),
        next_marker,
        max_keys: Some(max as i32),
        is_truncated: Some(p.truncated),
        encoding_type: i.encoding_type,
        contents: (!r.contents.is_empty()).then_some(r.contents),
        common_prefixes: (!r.prefixes.is_empty()).then_some(r.prefixes),
        ..Default::default()
    }))
}

pub async fn list_buckets(s3: &LakeS3) -> S3Result<S3Response<ListBucketsOutput>> {
    let buckets: BTreeMap<String, std::time::SystemTime> =
        s3.cache.origins.bucket_names().into_iter().collect();
    let buckets = buckets
        .into_iter()
        .map(|(name, created)| Bucket {
            name: Some(name),
            creation_date: Some(Timestamp::from(created)),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), ..Default::default() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(keys: &[&str]) -> Vec<Entry> {
        keys.iter()
            .map(|k| Entry {
                key: k.to_string(),
                size: 1,
                etag: None,
                last_modified: std::time::SystemTime::UNIX_EPOCH,
            })
            .collect()
    }

    fn keys(p: &Page<'_>) -> Vec<String> {
        p.items.iter().map(|i| i.key().to_string()).collect()
    }

    #[test]
    fn delimiter_groups_and_pages() {
        let e = entries(&["a/1", "a/2", "b", "c/x/1", "c/y", "d"]);
        let p = page(&e, "", Some("/"), None, 1000);
        assert_eq!(keys(&p), ["a/", "b", "c/", "d"]);
        let p = page(&e, "", Some("/"), None, 2);
        assert_eq!(keys(&p), ["a/", "b"]);
        assert!(p.truncated);
        let p2 = page(&e, "", Some("/"), Some("b"), 2);
        assert_eq!(keys(&p2), ["c/", "d"]);
        assert!(!p2.truncated);
        let e2 = entries(&["c/x/1", "c/x/2", "c/y"]);
        assert_eq!(keys(&page(&e2, "c/", Some("/"), None, 10)), ["c/x/", "c/y"]);
    }

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        assert_eq!(token_decode(&token_encode("a/é b")).unwrap(), "a/é b");
        assert!(token_decode("nope").is_err());
        assert!(token_decode("lc1zz").is_err());
        assert_eq!(url_encode("a b+c/d"), "a%20b%2Bc/d");
    }
}
