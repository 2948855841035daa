//! Where the bytes live: the one preallocated page file (or block device).
//!
//! Owns: opening with O_DIRECT (falling back to buffered I/O where the filesystem refuses it),
//! creating, preallocating and resizing the file, and reading/writing the superblock that
//! records the geometry. Does not own: slot contents or any I/O after open (engines do that).
//!
//! Everything here is blocking and runs once at open, on tokio's blocking pool.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use tracing::{info, warn};

use super::DiskError;
use super::buffer::AlignedBuf;
use super::layout::{Layout, SECTOR_BYTES, Superblock, decode_superblock, encode_superblock};

/// The opened page file.
pub(crate) struct Device {
    pub file: File,
    /// Whether the file is open with O_DIRECT.
    pub direct: bool,
    /// The superblock was (re)written: no slot from before can be trusted to match.
    pub initialised: bool,
}

fn open_file(path: &Path, direct: bool) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).mode(0o600);
    let mut flags = libc::O_CLOEXEC;
    if direct {
        flags |= libc::O_DIRECT;
    }
    opts.custom_flags(flags);
    opts.open(path)
}

fn is_einval(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// Extends a regular file to `len` bytes with allocated (not sparse) extents where the
/// filesystem supports it.
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let off_len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large"))?;
    // SAFETY: fallocate on a valid, open fd with plain integer arguments; no memory involved.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, off_len) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
            // Filesystems without fallocate (some network/overlay ones): a sparse file works,
            // only with less predictable latency on first write.
            warn!(error = %err, "fallocate unsupported; page file will be sparse");
            file.set_len(len)
        }
        _ => Err(err),
    }
}

fn read_first_sector(file: &File) -> io::Result<AlignedBuf> {
    let mut buf = AlignedBuf::zeroed(SECTOR_BYTES)?;
    // One aligned read: a file shorter than a sector reads short (EOF) and the rest stays
    // zero; a retry at the unaligned remainder would be refused under O_DIRECT anyway.
    file.read_at(buf.as_mut_slice(), 0)?;
    Ok(buf)
}

/// Opens (creating or resizing as needed) the page file for `layout`. `try_direct = false`
/// skips O_DIRECT (tests use it to exercise the buffered fallback on any filesystem).
pub(crate) fn open(path: &Path, layout: Layout, try_direct: bool) -> Result<Device, DiskError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let (mut file, mut direct) = match open_file(path, try_direct) {
        Ok(f) => (f, try_direct),
        Err(e) if try_direct && is_einval(&e) => (open_file(path, false)?, false),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    let is_block = meta.file_type().is_block_device();
    if !is_block && !meta.file_type().is_file() {
        return Err(DiskError::Config(format!(
            "{} is neither a regular file nor a block device",
            path.display()
        )));
    }
    let current_len = if is_block {
        use std::io::Seek;
        (&file).seek(io::SeekFrom::End(0))?
    } else {
        meta.len()
    };
    if is_block && current_len < layout.file_bytes() {
        return Err(DiskError::Config(format!(
            "block device {} has {current_len} bytes, capacity needs {}",
            path.display(),
            layout.file_bytes()
        )));
    }
    if !is_block && current_len == 0 {
        preallocate(&file, layout.file_bytes())?;
    }

    // Some filesystems accept O_DIRECT at open and refuse it at the first read.
    let first = match read_first_sector(&file) {
        Err(e) if direct && is_einval(&e) => {
            file = open_file(path, false)?;
            direct = false;
            read_first_sector(&file)?
        }
        other => other?,
    };
    if try_direct && !direct {
        warn!(path = %path.display(), "filesystem refuses O_DIRECT; page file uses buffered I/O");
    }

    let mut initialised = false;
    match decode_superblock(first.as_slice()) {
        Superblock::Valid { page_size_bytes, slot_count } => {
            if page_size_bytes != layout.page_size_bytes || slot_count != layout.slot_count {
                info!(
                    old_page_size = page_size_bytes,
                    new_page_size = layout.page_size_bytes,
                    old_slots = slot_count,
                    new_slots = layout.slot_count,
                    "page file geometry changed"
                );
                // A changed page size invalidates every slot (headers record the page size,
                // so none will validate); a changed slot count only drops the tail.
                initialised = page_size_bytes != layout.page_size_bytes;
            }
        }
        Superblock::Blank => initialised = true,
        Superblock::Foreign => {
            return Err(DiskError::Config(format!(
                "{} exists but is not a lakecache page file (bad superblock); refusing to overwrite it",
                path.display()
            )));
        }
    }

    if !is_block {
        let want = layout.file_bytes();
        let now = file.metadata()?.len();
        if now < want {
            preallocate(&file, want)?;
        } else if now > want {
            file.set_len(want)?;
        }
    }

    let mut sb = AlignedBuf::zeroed(SECTOR_BYTES)?;
    encode_superblock(sb.as_mut_slice(), &layout).map_err(DiskError::Config)?;
    if sb.as_slice() != first.as_slice() {
        file.write_all_at(sb.as_slice(), 0)?;
    }
    Ok(Device { file, direct, initialised })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn creates_resizes_and_refuses_foreign_files() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("sub/pages.bin");
        let l = Layout::for_capacity(4096 + 4 * (4096 + 8192), 8192);
        let d = open(&path, l, true).unwrap();
        assert!(d.initialised);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), l.file_bytes());
        drop(d);

        let d = open(&path, l, true).unwrap();
        assert!(!d.initialised);
        drop(d);

        let bigger = Layout::for_capacity(4096 + 6 * (4096 + 8192), 8192);
        let d = open(&path, bigger, true).unwrap();
        assert!(!d.initialised);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), bigger.file_bytes());
        drop(d);

        let other_page = Layout::for_capacity(4096 + 6 * (4096 + 4096), 4096);
        assert!(open(&path, other_page, true).unwrap().initialised);

        let foreign = dir.path().join("foreign.txt");
        std::fs::write(&foreign, b"precious data").unwrap();
        assert!(matches!(open(&foreign, l, true), Err(DiskError::Config(_))));
        assert_eq!(std::fs::read(&foreign).unwrap(), b"precious data");
    }
}
