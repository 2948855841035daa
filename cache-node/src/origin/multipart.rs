//! Multipart uploads staged on the cache node's local disk, then written to the origin as
//! one object on completion. This works for every origin (a local directory has no multipart
//! API) and keeps S3 semantics: upload ids, part ETags (MD5), ListParts, Abort, EntityTooSmall,
//! and a completed upload's result kept for a day, so that a retried CompleteMultipartUpload
//! (its answer lost) gets the same answer. A part becomes visible only once its body has been
//! read whole and verified (`write_part` then `commit_part`). Owns the staging directory; does
//! not invalidate the cache (the caller does).

use lakecache_common::auth::hex;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cache::meta::ObjectAttrs;

/// S3's minimum size of every part but the last.
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
pub const MAX_PART_NUMBER: i32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    #[error("no such upload")]
    NoSuchUpload,
    #[error("invalid part: {0}")]
    InvalidPart(String),
    #[error("parts are not in ascending order")]
    InvalidPartOrder,
    #[error("part {0} is smaller than the 5 MiB minimum")]
    EntityTooSmall(i32),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("request body: {0}")]
    Body(String),
    #[error("staging I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// How long the result of a completed upload is kept for retries of its completion.
pub const COMPLETED_KEEP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The staging directory's folder of completion records (not a UUID: never an upload).
const COMPLETED_DIR: &str = "completed";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadMeta {
    pub bucket: String,
    pub key: String,
    /// What CreateMultipartUpload said to store with the object.
    #[serde(default)]
    pub attrs: ObjectAttrs,
    pub initiated_unix_ms: u64,
    /// Uploads staged before attributes were kept recorded only this.
    #[serde(default, skip_serializing)]
    pub content_type: Option<String>,
}

/// A completed upload, as a retried completion answers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completed {
    pub bucket: String,
    pub key: String,
    pub etag: String,
}

/// A part's bytes on disk, not yet visible to ListParts or Complete; removed on drop
/// unless committed.
#[derive(Debug)]
pub struct TempPart {
    number: i32,
    tmp: Option<PathBuf>,
    etag: String,
    size: u64,
}

impl Drop for TempPart {
    fn drop(&mut self) {
        if let Some(p) = self.tmp.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[derive(Debug, Clone)]
pub struct StagedPart {
    pub number: i32,
    pub etag: String,
    pub size: u64,
    pub last_modified: std::time::SystemTime,
    pub path: PathBuf,
}

pub struct Staging {
    dir: PathBuf,
    /// Serialises the (ETag file, part file) pair of concurrent uploads of one part number,
    /// so the ETag on disk always belongs to the bytes on disk.
    part_locks: Vec<tokio::sync::Mutex<()>>,
    /// When completion records older than `COMPLETED_KEEP` were last removed.
    last_sweep: parking_lot::Mutex<std::time::Instant>,
}

impl Staging {
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join(COMPLETED_DIR))?;
        sweep(&dir.join(COMPLETED_DIR), COMPLETED_KEEP);
        Ok(Self {
            dir,
            part_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            last_sweep: parking_lot::Mutex::new(std::time::Instant::now()),
        })
    }

    fn completed_path(&self, upload_id: &str) -> Result<PathBuf, MultipartError> {
        uuid::Uuid::parse_str(upload_id).map_err(|_| MultipartError::NoSuchUpload)?;
        Ok(self.dir.join(COMPLETED_DIR).join(format!("{upload_id}.json")))
    }

    /// The result of `upload_id` if it was completed (for `bucket`/`key`) within a day.
    pub async fn completed(&self, upload_id: &str, bucket: &str, key: &str) -> Option<Completed> {
        let p = self.completed_path(upload_id).ok()?;
        let age = tokio::fs::metadata(&p).await.ok()?.modified().ok()?.elapsed().unwrap_or_default();
        if age > COMPLETED_KEEP {
            return None;
        }
        let c: Completed = serde_json::from_slice(&tokio::fs::read(&p).await.ok()?).ok()?;
        (c.bucket == bucket && c.key == key).then_some(c)
    }

    /// Records a completion, then removes the upload's parts.
    pub async fn complete(&self, upload_id: &str, done: &Completed) -> Result<(), MultipartError> {
        let p = self.completed_path(upload_id)?;
        let text = serde_json::to_vec(done).map_err(|e| MultipartError::InvalidArgument(e.to_string()))?;
        let tmp = p.with_extension("tmp");
        tokio::fs::write(&tmp, text).await?;
        tokio::fs::rename(&tmp, &p).await?;
        let sweep_due = {
            let mut last = self.last_sweep.lock();
            let due = last.elapsed() > std::time::Duration::from_secs(3600);
            if due {
                *last = std::time::Instant::now();
            }
            due
        };
        if sweep_due {
            let dir = self.dir.join(COMPLETED_DIR);
            tokio::task::spawn_blocking(move || sweep(&dir, COMPLETED_KEEP));
        }
        match self.remove(upload_id).await {
            Ok(()) | Err(MultipartError::NoSuchUpload) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn upload_dir(&self, upload_id: &str) -> Result<PathBuf, MultipartError> {
        // Only ids we minted (UUIDs) name a directory: nothing else reaches the filesystem.
        uuid::Uuid::parse_str(upload_id).map_err(|_| MultipartError::NoSuchUpload)?;
        let d = self.dir.join(upload_id);
        if d.is_dir() { Ok(d) } else { Err(MultipartError::NoSuchUpload) }
    }

    pub async fn create(&self, meta: UploadMeta) -> Result<String, MultipartError> {
        let id = uuid::Uuid::new_v4().to_string();
        let d = self.dir.join(&id);
        tokio::fs::create_dir_all(&d).await?;
        let text = serde_json::to_vec(&meta).map_err(|e| MultipartError::InvalidArgument(e.to_string()))?;
        tokio::fs::write(d.join("meta.json"), text).await?;
        Ok(id)
    }

    /// The upload's metadata, checking that it belongs to `bucket`/`key`.
    pub async fn meta(&self, upload_id: &str, bucket: &str, key: &str) -> Result<UploadMeta, MultipartError> {
        let d = self.upload_dir(upload_id)?;
        let text = tokio::fs::read(d.join("meta.json")).await.map_err(|_| MultipartError::NoSuchUpload)?;
        let mut meta: UploadMeta = serde_json::from_slice(&text).map_err(|_| MultipartError::NoSuchUpload)?;
        if meta.attrs.content_type.is_none() {
            meta.attrs.content_type = meta.content_type.take();
        }
        if meta.bucket != bucket || meta.key != key {
            return Err(MultipartError::NoSuchUpload);
        }
        Ok(meta)
    }

    /// Streams one part to a temporary file of its upload; `commit_part` makes it the part.
    pub async fn write_part<S, E>(
        &self,
        upload_id: &str,
        number: i32,
        mut body: S,
    ) -> Result<TempPart, MultipartError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if !(1..=MAX_PART_NUMBER).contains(&number) {
            return Err(MultipartError::InvalidArgument(format!(
                "part number must be between 1 and {MAX_PART_NUMBER}"
            )));
        }
        let d = self.upload_dir(upload_id)?;
        let tmp = d.join(format!("part-{number:05}.{}.tmp", uuid::Uuid::new_v4()));
        let mut f = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(&tmp).await?);
        let mut part = TempPart { number, tmp: Some(tmp), etag: String::new(), size: 0 };
        let mut md5 = Md5::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| MultipartError::Body(e.to_string()))?;
            md5.update(&chunk);
            part.size += chunk.len() as u64;
            f.write_all(&chunk).await?;
        }
        f.flush().await?;
        part.etag = hex(&md5.finalize());
        Ok(part)
    }

    /// Makes a written part the upload's part `number` (replacing an earlier one); returns
    /// its ETag (hex MD5, unquoted) and size.
    pub async fn commit_part(
        &self,
        upload_id: &str,
        mut part: TempPart,
    ) -> Result<(String, u64), MultipartError> {
        let d = self.upload_dir(upload_id)?;
        let number = part.number;
        let slot = (xxhash_rust::xxh3::xxh3_64(upload_id.as_bytes()) ^ number as u64) as usize
            % self.part_locks.len();
        let _guard = self.part_locks[slot].lock().await;
        let tmp = part
            .tmp
            .clone()
            .ok_or_else(|| MultipartError::InvalidArgument("part already committed".into()))?;
        tokio::fs::write(d.join(format!("part-{number:05}.etag")), &part.etag).await?;
        tokio::fs::rename(&tmp, d.join(format!("part-{number:05}"))).await?;
        part.tmp = None;
        Ok((part.etag.clone(), part.size))
    }

    pub async fn list_parts(&self, upload_id: &str) -> Result<Vec<StagedPart>, MultipartError> {
        let d = self.upload_dir(upload_id)?;
        let mut parts = Vec::new();
        let mut rd = tokio::fs::read_dir(&d).await?;
        while let Some(e) = rd.next_entry().await? {
            let name = e.file_name().to_string_lossy().to_string();
            // `part-00001` only: not its `.etag`, not a `.tmp` still being written.
            let Some(num) = name.strip_prefix("part-").and_then(|n| n.parse::<i32>().ok()) else { continue };
            let md = e.metadata().await?;
            let etag = tokio::fs::read_to_string(d.join(format!("{name}.etag"))).await.unwrap_or_default();
            parts.push(StagedPart {
                number: num,
                etag,
                size: md.len(),
                last_modified: md.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH),
                path: e.path(),
            });
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    /// Checks the client's part list against what was staged; returns the parts in order
    /// and the S3-style multipart ETag (MD5 of the part MD5s, `-N`).
    pub async fn resolve_complete(
        &self,
        upload_id: &str,
        requested: &[(i32, String)],
    ) -> Result<(Vec<StagedPart>, String), MultipartError> {
        if requested.is_empty() {
            return Err(MultipartError::InvalidPart("you must specify at least one part".into()));
        }
        let staged = self.list_parts(upload_id).await?;
        let mut out = Vec::with_capacity(requested.len());
        let mut prev = 0;
        for (num, etag) in requested {
            if *num <= prev {
                return Err(MultipartError::InvalidPartOrder);
            }
            prev = *num;
            let want = etag.trim_matches('"');
            let p = staged
                .iter()
                .find(|p| p.number == *num)
                .ok_or_else(|| MultipartError::InvalidPart(format!("part {num} was not uploaded")))?;
            if !want.is_empty() && p.etag != want {
                return Err(MultipartError::InvalidPart(format!("part {num}: ETag does not match")));
            }
            out.push(p.clone());
        }
        for p in &out[..out.len() - 1] {
            if p.size < MIN_PART_BYTES {
                return Err(MultipartError::EntityTooSmall(p.number));
            }
        }
        let mut md5 = Md5::new();
        for p in &out {
            let raw: Vec<u8> = (0..p.etag.len() / 2)
                .filter_map(|i| u8::from_str_radix(p.etag.get(2 * i..2 * i + 2)?, 16).ok())
                .collect();
            md5.update(&raw);
        }
        Ok((out, format!("{}-{}", hex(&md5.finalize()), requested.len())))
    }

    pub async fn remove(&self, upload_id: &str) -> Result<(), MultipartError> {
        let d = self.upload_dir(upload_id)?;
        tokio::fs::remove_dir_all(d).await?;
        Ok(())
    }
}

/// Reads staged parts back as one stream of chunks.
pub fn concat_parts(parts: Vec<StagedPart>) -> impl Stream<Item = std::io::Result<Bytes>> {
    futures::stream::iter(parts).then(|p| read_file_chunks(p.path)).flatten()
}

async fn read_file_chunks(path: PathBuf) -> impl Stream<Item = std::io::Result<Bytes>> {
    let file = tokio::fs::File::open(&path).await;
    futures::stream::unfold(Some(file), |state| async move {
        let mut f = match state? {
            Ok(f) => f,
            Err(e) => return Some((Err(e), None)),
        };
        let mut buf = vec![0u8; 4 * 1024 * 1024];
        let mut filled = 0;
        while filled < buf.len() {
            match f.read(&mut buf[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => return Some((Err(e), None)),
            }
        }
        if filled == 0 {
            return None;
        }
        buf.truncate(filled);
        Some((Ok(Bytes::from(buf)), Some(Ok(f))))
    })
}

/// Removes the staging directories of uploads older than `max_age` (abandoned uploads).
pub fn sweep(dir: &Path, max_age: std::time::Duration) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
        if old.is_some_and(|age| age > max_age) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
