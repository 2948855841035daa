//! What identifies each object whose pages are on disk, kept beside the page file
//! (`<page file>.objects`): bucket, key, version and the metadata a GET answers with. With
//! it a restarted node knows what its recovered pages belong to, so it serves Lance's
//! immutable files it holds without asking the origin — with the origin down, too.
//!
//! One JSON record per line, appended (before the page itself is written) the first time an
//! object's page goes to disk; rewritten at start with just the objects that still have
//! pages. A torn last line (a `kill -9` mid-append) is skipped. Owns the file; does not own
//! when metadata may be trusted (`meta`) or the pages (`tier::disk`).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::meta::{ObjectAttrs, ObjectMeta};
use crate::tier::disk::ObjectId;

/// One object as persisted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub bucket: String,
    pub key: String,
    pub version: String,
    pub size: u64,
    pub etag: Option<String>,
    pub origin_etag: Option<String>,
    /// Nanoseconds since the Unix epoch.
    pub last_modified_unix_ns: u128,
    /// What a GET answers besides the bytes (content type, encoding, `x-amz-meta-*`, …).
    #[serde(default)]
    pub attrs: ObjectAttrs,
}

impl Record {
    pub fn of(id: &ObjectId, m: &ObjectMeta) -> Record {
        Record {
            bucket: id.bucket.clone(),
            key: id.key.clone(),
            version: m.version.clone(),
            size: m.size,
            etag: m.etag.clone(),
            origin_etag: m.origin_etag.clone(),
            last_modified_unix_ns: m
                .last_modified
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            attrs: m.attrs.clone(),
        }
    }

    pub fn object(&self) -> ObjectId {
        ObjectId::new(self.bucket.clone(), self.key.clone(), self.version.clone())
    }

    /// The metadata, as fresh as if just read from the origin.
    pub fn meta(&self) -> ObjectMeta {
        let ns = self.last_modified_unix_ns;
        let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
        ObjectMeta {
            size: self.size,
            etag: self.etag.clone(),
            origin_etag: self.origin_etag.clone(),
            last_modified: SystemTime::UNIX_EPOCH + Duration::new(secs, (ns % 1_000_000_000) as u32),
            attrs: self.attrs.clone(),
            version: self.version.clone(),
            checked_at: Instant::now(),
            rendered: Default::default(),
        }
    }
}

/// The journal file of a page store.
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    /// Objects recorded in the file (by their page hash).
    recorded: Mutex<HashSet<u128>>,
}

impl Journal {
    pub fn path_for(page_file: &Path) -> PathBuf {
        let mut p = page_file.as_os_str().to_owned();
        p.push(".objects");
        PathBuf::from(p)
    }

    /// Opens (creating) the journal of `page_file`, keeping the records of objects `holds`
    /// says still have pages; returns them.
    pub fn open(page_file: &Path, holds: impl Fn(u128) -> bool) -> std::io::Result<(Journal, Vec<Record>)> {
        let path = Self::path_for(page_file);
        let mut live: HashMap<u128, Record> = HashMap::new();
        match File::open(&path) {
            Ok(f) => {
                for line in BufReader::new(f).split(b'\n') {
                    let Ok(line) = line else { break };
                    // A torn or foreign line is skipped, never fatal.
                    let Ok(r) = serde_json::from_slice::<Record>(&line) else { continue };
                    let h = r.object().hash();
                    if holds(h) {
                        live.insert(h, r);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Compact: write the live records to a new file and move it over the old one.
        let tmp = path.with_extension("objects.tmp");
        {
            let mut w = std::io::BufWriter::new(File::create(&tmp)?);
            for r in live.values() {
                serde_json::to_writer(&mut w, r).map_err(std::io::Error::other)?;
                w.write_all(b"\n")?;
            }
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        let file = OpenOptions::new().append(true).open(&path)?;
        let recorded = live.keys().copied().collect();
        let records = live.into_values().collect();
        Ok((Journal { path, file: Mutex::new(file), recorded: Mutex::new(recorded) }, records))
    }

    /// Records `id` once (before its first page is written).
    pub fn record(&self, id: &ObjectId, meta: &ObjectMeta) -> std::io::Result<()> {
        if !self.recorded.lock().insert(id.hash()) {
            return Ok(());
        }
        let mut line = serde_json::to_vec(&Record::of(id, meta)).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let res = self.file.lock().write_all(&line);
        if res.is_err() {
            self.recorded.lock().remove(&id.hash());
        }
        res
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn meta(etag: &str) -> ObjectMeta {
        ObjectMeta {
            size: 123,
            etag: Some(etag.into()),
            origin_etag: Some(format!("\"{etag}\"")),
            last_modified: SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5),
            attrs: ObjectAttrs {
                content_type: Some("application/x-lance".into()),
                cache_control: Some("max-age=60".into()),
                user: vec![("camera".into(), "Zürich 3".into())],
                ..Default::default()
            },
            version: etag.into(),
            checked_at: Instant::now(),
            rendered: Default::default(),
        }
    }

    #[test]
    fn records_survive_reopen_and_dead_objects_and_torn_lines_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let pages = dir.path().join("pages.bin");
        let a = ObjectId::new("b", "t.lance/data/a.lance", "e1");
        let gone = ObjectId::new("b", "t.lance/data/gone.lance", "e2");
        {
            let (j, recs) = Journal::open(&pages, |_| true).unwrap();
            assert!(recs.is_empty());
            j.record(&a, &meta("e1")).unwrap();
            j.record(&a, &meta("e1")).unwrap(); // once only
            j.record(&gone, &meta("e2")).unwrap();
        }
        // A torn append after a crash.
        let mut f = OpenOptions::new().append(true).open(Journal::path_for(&pages)).unwrap();
        f.write_all(b"{\"bucket\":\"b\",\"ke").unwrap();
        drop(f);
        let (_j, recs) = Journal::open(&pages, |h| h == a.hash()).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0], Record::of(&a, &meta("e1")));
        let m = recs[0].meta();
        assert_eq!(m.last_modified, meta("e1").last_modified);
        assert_eq!(m.origin_etag.as_deref(), Some("\"e1\""));
        let text = std::fs::read_to_string(Journal::path_for(&pages)).unwrap();
        assert_eq!(text.lines().count(), 1, "compacted to the live record: {text}");
    }
}
