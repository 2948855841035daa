//! A small in-memory S3 server for tests, for what s3s-fs cannot show because it keeps
//! objects as files: keys ending in `/` (folder markers) and keys holding `//`, stored and
//! listed exactly as S3 does. PutObject, GetObject (ranges, If-Match/If-None-Match),
//! HeadObject, DeleteObject, CopyObject, ListObjectsV2 (prefix, `/` delimiter, pages).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

#[derive(Clone)]
struct Obj {
    data: Bytes,
    etag: String,
    modified: SystemTime,
    content_type: Option<String>,
    metadata: Option<Metadata>,
}

#[derive(Clone, Default)]
pub struct MemS3 {
    buckets: Arc<Mutex<BTreeMap<String, BTreeMap<String, Obj>>>>,
}

impl MemS3 {
    pub fn new(buckets: &[&str]) -> Self {
        let m = MemS3::default();
        for b in buckets {
            m.buckets.lock().insert(b.to_string(), BTreeMap::new());
        }
        m
    }

    fn with<T>(
        &self,
        bucket: &str,
        f: impl FnOnce(&mut BTreeMap<String, Obj>) -> S3Result<T>,
    ) -> S3Result<T> {
        let mut all = self.buckets.lock();
        let b = all.get_mut(bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        f(b)
    }
}

fn etag_matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value().trim_matches('"') == etag,
    }
}

#[async_trait::async_trait]
impl S3 for MemS3 {
    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let i = req.input;
        let mut data = Vec::new();
        if let Some(mut b) = i.body {
            while let Some(c) = b.next().await {
                data.extend_from_slice(&c.map_err(|_| s3_error!(IncompleteBody))?);
            }
        }
        let etag = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            data.hash(&mut h);
            format!("{:016x}{:016x}", h.finish(), data.len())
        };
        let obj = Obj {
            data: data.into(),
            etag: etag.clone(),
            modified: SystemTime::now(),
            content_type: i.content_type,
            metadata: i.metadata,
        };
        self.with(&i.bucket, |b| {
            let cur = b.get(&i.key);
            if i.if_none_match.is_some() && cur.is_some() {
                return Err(s3_error!(PreconditionFailed));
            }
            if let Some(c) = &i.if_match {
                match cur {
                    None => return Err(s3_error!(NoSuchKey)),
                    Some(o) if !etag_matches(c, &o.etag) => return Err(s3_error!(PreconditionFailed)),
                    _ => {}
                }
            }
            b.insert(i.key.clone(), obj);
            Ok(())
        })?;
        Ok(S3Response::new(PutObjectOutput { e_tag: Some(ETag::Strong(etag)), ..Default::default() }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let i = req.input;
        let o = self.with(&i.bucket, |b| b.get(&i.key).cloned().ok_or_else(|| s3_error!(NoSuchKey)))?;
        if i.if_match.as_ref().is_some_and(|c| !etag_matches(c, &o.etag)) {
            return Err(s3_error!(PreconditionFailed));
        }
        if i.if_none_match.as_ref().is_some_and(|c| etag_matches(c, &o.etag)) {
            return Err(s3_error!(NotModified));
        }
        let size = o.data.len() as u64;
        let (range, partial) = match &i.range {
            Some(r) => (r.check(size).map_err(|_| s3_error!(InvalidRange))?, true),
            None => (0..size, false),
        };
        let body = o.data.slice(range.start as usize..range.end as usize);
        Ok(S3Response::new(GetObjectOutput {
            content_length: Some(body.len() as i64),
            content_range: partial.then(|| format!("bytes {}-{}/{size}", range.start, range.end - 1)),
            body: Some(StreamingBlob::from(s3s::Body::from(body))),
            e_tag: Some(ETag::Strong(o.etag)),
            last_modified: Some(Timestamp::from(o.modified)),
            content_type: o.content_type,
            metadata: o.metadata,
            ..Default::default()
        }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = req.input;
        let o = self.with(&i.bucket, |b| b.get(&i.key).cloned().ok_or_else(|| s3_error!(NoSuchKey)))?;
        if i.if_match.as_ref().is_some_and(|c| !etag_matches(c, &o.etag)) {
            return Err(s3_error!(PreconditionFailed));
        }
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(o.data.len() as i64),
            e_tag: Some(ETag::Strong(o.etag)),
            last_modified: Some(Timestamp::from(o.modified)),
            content_type: o.content_type,
            metadata: o.metadata,
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let i = req.input;
        self.with(&i.bucket, |b| {
            b.remove(&i.key);
            Ok(())
        })?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = req.input;
        let CopySource::Bucket { bucket, key, .. } = &i.copy_source else {
            return Err(s3_error!(NotImplemented));
        };
        let mut o =
            self.with(bucket, |b| b.get(key.as_ref()).cloned().ok_or_else(|| s3_error!(NoSuchKey)))?;
        o.modified = SystemTime::now();
        let etag = o.etag.clone();
        self.with(&i.bucket, |b| {
            b.insert(i.key.clone(), o);
            Ok(())
        })?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(etag)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        let prefix = i.prefix.clone().unwrap_or_default();
        let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
        let max = i.max_keys.unwrap_or(1000).clamp(1, 1000) as usize;
        let after = i.continuation_token.clone().or(i.start_after.clone()).unwrap_or_default();
        let entries: Vec<(String, Obj)> = self.with(&i.bucket, |b| {
            Ok(b.range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, o)| (k.clone(), o.clone()))
                .collect())
        })?;
        let mut contents = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut last = None;
        let mut truncated = false;
        for (k, o) in entries {
            let item = match &delimiter {
                Some(d) => match k[prefix.len()..].find(d.as_str()) {
                    Some(p) => Err(k[..prefix.len() + p + d.len()].to_string()),
                    None => Ok(k.clone()),
                },
                None => Ok(k.clone()),
            };
            let name = match &item {
                Ok(k) | Err(k) => k.clone(),
            };
            if name.as_str() <= after.as_str() || prefixes.last() == Some(&name) {
                continue;
            }
            if contents.len() + prefixes.len() == max {
                truncated = true;
                break;
            }
            last = Some(name.clone());
            match item {
                Ok(key) => contents.push(Object {
                    key: Some(key),
                    size: Some(o.data.len() as i64),
                    e_tag: Some(ETag::Strong(o.etag)),
                    last_modified: Some(Timestamp::from(o.modified)),
                    ..Default::default()
                }),
                Err(p) => prefixes.push(p),
            }
        }
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: Some(prefix),
            key_count: Some((contents.len() + prefixes.len()) as i32),
            is_truncated: Some(truncated),
            next_continuation_token: if truncated { last } else { None },
            contents: Some(contents),
            common_prefixes: Some(prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect()),
            ..Default::default()
        }))
    }
}
