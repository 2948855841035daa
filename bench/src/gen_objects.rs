//! `gen-objects`: writes the hot set as plain files under an `s3s-fs` root, with the
//! deterministic content of [`crate::content`], so every server under test reads the same
//! bytes and the load generator can check them.
//!
//! Next to each object it writes the `s3s-fs` 0.14 sidecar `.bucket-<b64>.object-<b64>.internal.json`
//! holding the object's MD5 ETag: without it `s3s-fs` hashes the whole file on every GET,
//! which would make the origin, not the server under test, the cost of a miss. If a later
//! `s3s-fs` ignores the sidecar it computes the same ETag itself; nothing else changes.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use md5::{Digest, Md5};

use crate::content;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Root directory served by `origin` (the bucket is a folder under it).
    #[arg(long)]
    root: PathBuf,
    /// Bucket name.
    #[arg(long, default_value = "bench")]
    bucket: String,
    /// Number of objects (`obj-00000` …).
    #[arg(long)]
    count: u64,
    /// Size of each object in bytes.
    #[arg(long)]
    size: u64,
    /// Seed of the content; the load generator must be given the same one.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

const WRITE_CHUNK_BYTES: usize = 1 << 20;

pub fn run(args: Args) -> anyhow::Result<()> {
    let bucket_dir = args.root.join(&args.bucket);
    fs::create_dir_all(&bucket_dir).with_context(|| format!("creating {}", bucket_dir.display()))?;
    let mut buf = vec![0u8; WRITE_CHUNK_BYTES];
    for index in 0..args.count {
        let key = content::object_key(index);
        let path = bucket_dir.join(&key);
        let e_tag = write_object(&path, args.seed, index, args.size, &mut buf)
            .with_context(|| format!("writing {}", path.display()))?;
        let sidecar = args.root.join(format!(
            ".bucket-{}.object-{}.internal.json",
            URL_SAFE_NO_PAD.encode(&args.bucket),
            URL_SAFE_NO_PAD.encode(&key)
        ));
        let info = serde_json::json!({ "e_tag": e_tag });
        fs::write(&sidecar, serde_json::to_vec(&info)?)
            .with_context(|| format!("writing {}", sidecar.display()))?;
    }
    tracing::info!(
        root = %args.root.display(),
        bucket = %args.bucket,
        count = args.count,
        size_bytes = args.size,
        seed = args.seed,
        "objects written"
    );
    Ok(())
}

/// Writes one object and returns its MD5 as lowercase hex (the S3 ETag of a single-part PUT).
fn write_object(
    path: &std::path::Path,
    seed: u64,
    index: u64,
    size_bytes: u64,
    buf: &mut [u8],
) -> anyhow::Result<String> {
    let mut out = BufWriter::new(File::create(path)?);
    let mut md5 = Md5::new();
    let mut offset = 0u64;
    while offset < size_bytes {
        let n = usize::try_from((size_bytes - offset).min(buf.len() as u64))?;
        let chunk = &mut buf[..n];
        content::fill(seed, index, offset, chunk);
        md5.update(&*chunk);
        out.write_all(chunk)?;
        offset += n as u64;
    }
    out.flush()?;
    Ok(md5.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
