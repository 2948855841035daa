//! On-disk format of the page file: where each slot lives and what its 4 KiB header sector
//! and the file's superblock contain, byte for byte.
//!
//! Owns: offsets and sizes (superblock, slots, data blocks), encoding and validation of the
//! superblock and of slot headers, per-block CRC computation. Does not own: I/O, buffers,
//! the in-memory index — callers hand in byte slices.
//!
//! ```text
//! file   = superblock (4 KiB) | slot 0 | slot 1 | ...            (slot_count slots)
//! slot   = header sector (4 KiB) | data (page_size bytes, 4 KiB blocks)
//! header = fixed fields | one crc32c per 4 KiB data block | bucket key version | crc32c(header)
//! ```
//!
//! A slot whose header fails any check (magic, format version, header crc, slot number,
//! page size, lengths) is free. Every data block carries its own crc32c so a read of a few
//! sectors verifies exactly what it read; a torn or stale data block fails its crc and the
//! page is a miss, never wrong bytes.

use std::fmt;

/// Sector size: the unit of alignment for offsets, lengths and buffers (O_DIRECT).
pub(crate) const SECTOR_BYTES: usize = 4096;
/// Data is checksummed per block of this size (the same as a sector: a small read reads and
/// verifies whole blocks).
pub(crate) const BLOCK_BYTES: usize = 4096;
/// Largest page a slot may hold.
pub(crate) const MAX_PAGE_BYTES: u64 = 2 * 1024 * 1024;
/// Identity limits (S3's own bucket limit; the key limit of S3; a generous ETag/version).
pub(crate) const MAX_BUCKET_BYTES: usize = 63;
pub(crate) const MAX_KEY_BYTES: usize = 1024;
pub(crate) const MAX_VERSION_BYTES: usize = 200;

const MAX_BLOCKS: usize = (MAX_PAGE_BYTES as usize) / BLOCK_BYTES;

const SUPER_MAGIC: &[u8; 8] = b"LKCPAGES";
const SLOT_MAGIC: &[u8; 8] = b"LKCSLOT\x01";
const FORMAT_VERSION: u32 = 1;

// Header field offsets.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 8;
const H_FLAGS: usize = 12;
const H_GENERATION: usize = 16;
const H_SLOT: usize = 24;
const H_PAGE_SIZE: usize = 32;
const H_PAGE_INDEX: usize = 40;
const H_DATA_LEN: usize = 48;
const H_BUCKET_LEN: usize = 52;
const H_KEY_LEN: usize = 54;
const H_VERSION_LEN: usize = 56;
const H_BLOCKS: usize = 58;
const H_CRCS: usize = 64;
const H_IDENTITY: usize = H_CRCS + 4 * MAX_BLOCKS;
const H_CRC: usize = SECTOR_BYTES - 4;

const FLAG_PINNED: u32 = 1;

// Superblock field offsets.
const S_MAGIC: usize = 0;
const S_VERSION: usize = 8;
const S_PAGE_SIZE: usize = 16;
const S_SLOT_COUNT: usize = 24;
const S_CRC: usize = SECTOR_BYTES - 4;

const _: () = assert!(H_IDENTITY + MAX_BUCKET_BYTES + MAX_KEY_BYTES + MAX_VERSION_BYTES <= H_CRC);

/// Geometry of one page file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub page_size_bytes: u64,
    pub slot_count: u64,
}

impl Layout {
    /// The largest layout that fits in `capacity_bytes` (superblock included).
    pub fn for_capacity(capacity_bytes: u64, page_size_bytes: u64) -> Layout {
        let slot_bytes = SECTOR_BYTES as u64 + page_size_bytes;
        let slot_count = capacity_bytes.saturating_sub(SECTOR_BYTES as u64) / slot_bytes;
        Layout { page_size_bytes, slot_count }
    }

    pub fn slot_bytes(&self) -> u64 {
        SECTOR_BYTES as u64 + self.page_size_bytes
    }

    /// Length the file must have.
    pub fn file_bytes(&self) -> u64 {
        SECTOR_BYTES as u64 + self.slot_count * self.slot_bytes()
    }

    /// File offset of a slot's header sector.
    pub fn header_offset(&self, slot: u32) -> u64 {
        SECTOR_BYTES as u64 + u64::from(slot) * self.slot_bytes()
    }

    /// File offset of a slot's first data byte.
    pub fn data_offset(&self, slot: u32) -> u64 {
        self.header_offset(slot) + SECTOR_BYTES as u64
    }
}

/// Rounds up to a multiple of the sector size.
pub(crate) fn align_up(len: usize) -> usize {
    len.div_ceil(SECTOR_BYTES) * SECTOR_BYTES
}

/// Number of crc blocks a page of `len` bytes has.
pub(crate) fn block_count(len: usize) -> usize {
    len.div_ceil(BLOCK_BYTES)
}

/// One crc32c per 4 KiB block of `data` (the last block may be short).
pub(crate) fn block_crcs(data: &[u8]) -> Box<[u32]> {
    data.chunks(BLOCK_BYTES).map(crc32c::crc32c).collect()
}

/// Fields of a slot header, borrowed for encoding.
pub(crate) struct HeaderFields<'a> {
    pub generation: u64,
    pub slot: u32,
    pub page_size_bytes: u64,
    pub page_index: u64,
    pub len: u32,
    pub pinned: bool,
    pub bucket: &'a str,
    pub key: &'a str,
    pub version: &'a str,
    pub crcs: &'a [u32],
}

/// A slot header that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodedHeader {
    pub generation: u64,
    pub page_index: u64,
    pub len: u32,
    pub pinned: bool,
    pub bucket: String,
    pub key: String,
    pub version: String,
    pub crcs: Box<[u32]>,
}

/// Why a sector is not a valid slot header (kept for tests and debug logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderInvalid {
    Empty,
    Magic,
    FormatVersion,
    Checksum,
    WrongSlot,
    WrongPageSize,
    Length,
    Identity,
}

impl fmt::Display for HeaderInvalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Checks identity lengths against the header's limits; the message names the offender.
pub(crate) fn check_identity(bucket: &str, key: &str, version: &str) -> Result<(), String> {
    if bucket.len() > MAX_BUCKET_BYTES {
        return Err(format!("bucket name is {} bytes, the limit is {MAX_BUCKET_BYTES}", bucket.len()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("key is {} bytes, the limit is {MAX_KEY_BYTES}", key.len()));
    }
    if version.len() > MAX_VERSION_BYTES {
        return Err(format!("version is {} bytes, the limit is {MAX_VERSION_BYTES}", version.len()));
    }
    Ok(())
}

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u16(buf: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(&buf[at..at + 2]);
    u16::from_le_bytes(b)
}
fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}
fn get_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Writes a complete header sector into `out` (exactly [`SECTOR_BYTES`] long; every byte is
/// overwritten, so a recycled buffer leaks nothing). Identity lengths must already have been
/// checked with [`check_identity`]; longer fields are refused with `Err`.
pub(crate) fn encode_header(out: &mut [u8], h: &HeaderFields<'_>) -> Result<(), String> {
    if out.len() != SECTOR_BYTES {
        return Err(format!("header buffer is {} bytes, expected {SECTOR_BYTES}", out.len()));
    }
    check_identity(h.bucket, h.key, h.version)?;
    if h.crcs.len() != block_count(h.len as usize) || h.crcs.len() > MAX_BLOCKS {
        return Err(format!("{} crcs for a page of {} bytes", h.crcs.len(), h.len));
    }
    out.fill(0);
    out[H_MAGIC..H_MAGIC + 8].copy_from_slice(SLOT_MAGIC);
    put_u32(out, H_VERSION, FORMAT_VERSION);
    put_u32(out, H_FLAGS, if h.pinned { FLAG_PINNED } else { 0 });
    put_u64(out, H_GENERATION, h.generation);
    put_u64(out, H_SLOT, u64::from(h.slot));
    put_u64(out, H_PAGE_SIZE, h.page_size_bytes);
    put_u64(out, H_PAGE_INDEX, h.page_index);
    put_u32(out, H_DATA_LEN, h.len);
    // Lengths fit: checked above against limits far below u16::MAX.
    put_u16(out, H_BUCKET_LEN, h.bucket.len() as u16);
    put_u16(out, H_KEY_LEN, h.key.len() as u16);
    put_u16(out, H_VERSION_LEN, h.version.len() as u16);
    put_u16(out, H_BLOCKS, h.crcs.len() as u16);
    for (i, crc) in h.crcs.iter().enumerate() {
        put_u32(out, H_CRCS + 4 * i, *crc);
    }
    let mut at = H_IDENTITY;
    for field in [h.bucket, h.key, h.version] {
        out[at..at + field.len()].copy_from_slice(field.as_bytes());
        at += field.len();
    }
    let crc = crc32c::crc32c(&out[..H_CRC]);
    put_u32(out, H_CRC, crc);
    Ok(())
}

/// Validates and decodes the header sector read from `slot` of a file with pages of
/// `page_size_bytes`.
pub(crate) fn decode_header(
    sector: &[u8],
    slot: u32,
    page_size_bytes: u64,
) -> Result<DecodedHeader, HeaderInvalid> {
    if sector.len() < SECTOR_BYTES {
        return Err(HeaderInvalid::Length);
    }
    let sector = &sector[..SECTOR_BYTES];
    if &sector[H_MAGIC..H_MAGIC + 8] != SLOT_MAGIC {
        return Err(if sector.iter().all(|b| *b == 0) { HeaderInvalid::Empty } else { HeaderInvalid::Magic });
    }
    if get_u32(sector, H_VERSION) != FORMAT_VERSION {
        return Err(HeaderInvalid::FormatVersion);
    }
    if crc32c::crc32c(&sector[..H_CRC]) != get_u32(sector, H_CRC) {
        return Err(HeaderInvalid::Checksum);
    }
    if get_u64(sector, H_SLOT) != u64::from(slot) {
        return Err(HeaderInvalid::WrongSlot);
    }
    if get_u64(sector, H_PAGE_SIZE) != page_size_bytes {
        return Err(HeaderInvalid::WrongPageSize);
    }
    let len = get_u32(sector, H_DATA_LEN);
    let blocks = get_u16(sector, H_BLOCKS) as usize;
    if u64::from(len) > page_size_bytes || blocks != block_count(len as usize) || blocks > MAX_BLOCKS {
        return Err(HeaderInvalid::Length);
    }
    let bucket_len = get_u16(sector, H_BUCKET_LEN) as usize;
    let key_len = get_u16(sector, H_KEY_LEN) as usize;
    let version_len = get_u16(sector, H_VERSION_LEN) as usize;
    if bucket_len > MAX_BUCKET_BYTES || key_len > MAX_KEY_BYTES || version_len > MAX_VERSION_BYTES {
        return Err(HeaderInvalid::Length);
    }
    let mut at = H_IDENTITY;
    let mut field = |n: usize| -> Result<String, HeaderInvalid> {
        let s = std::str::from_utf8(&sector[at..at + n]).map_err(|_| HeaderInvalid::Identity)?;
        at += n;
        Ok(s.to_owned())
    };
    let bucket = field(bucket_len)?;
    let key = field(key_len)?;
    let version = field(version_len)?;
    let crcs = (0..blocks).map(|i| get_u32(sector, H_CRCS + 4 * i)).collect();
    Ok(DecodedHeader {
        generation: get_u64(sector, H_GENERATION),
        page_index: get_u64(sector, H_PAGE_INDEX),
        len,
        pinned: get_u32(sector, H_FLAGS) & FLAG_PINNED != 0,
        bucket,
        key,
        version,
        crcs,
    })
}

/// What the first sector of an existing file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Superblock {
    /// All zeros: a file we created but never finished initialising, or a fresh device.
    Blank,
    /// Ours, with the geometry it was written with.
    Valid { page_size_bytes: u64, slot_count: u64 },
    /// Something else: not a page file (or a damaged superblock).
    Foreign,
}

pub(crate) fn encode_superblock(out: &mut [u8], layout: &Layout) -> Result<(), String> {
    if out.len() != SECTOR_BYTES {
        return Err(format!("superblock buffer is {} bytes, expected {SECTOR_BYTES}", out.len()));
    }
    out.fill(0);
    out[S_MAGIC..S_MAGIC + 8].copy_from_slice(SUPER_MAGIC);
    put_u32(out, S_VERSION, FORMAT_VERSION);
    put_u64(out, S_PAGE_SIZE, layout.page_size_bytes);
    put_u64(out, S_SLOT_COUNT, layout.slot_count);
    let crc = crc32c::crc32c(&out[..S_CRC]);
    put_u32(out, S_CRC, crc);
    Ok(())
}

pub(crate) fn decode_superblock(sector: &[u8]) -> Superblock {
    if sector.iter().all(|b| *b == 0) {
        return Superblock::Blank;
    }
    if sector.len() < SECTOR_BYTES
        || &sector[S_MAGIC..S_MAGIC + 8] != SUPER_MAGIC
        || get_u32(sector, S_VERSION) != FORMAT_VERSION
        || crc32c::crc32c(&sector[..S_CRC]) != get_u32(sector, S_CRC)
    {
        return Superblock::Foreign;
    }
    Superblock::Valid {
        page_size_bytes: get_u64(sector, S_PAGE_SIZE),
        slot_count: get_u64(sector, S_SLOT_COUNT),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn fields<'a>(crcs: &'a [u32], len: u32) -> HeaderFields<'a> {
        HeaderFields {
            generation: 42,
            slot: 7,
            page_size_bytes: 1 << 20,
            page_index: 3,
            len,
            pinned: true,
            bucket: "bucket",
            key: "a/b/c.lance",
            version: "\"etag-1\"",
            crcs,
        }
    }

    #[test]
    fn layout_arithmetic() {
        let l = Layout::for_capacity(4096 + 3 * (4096 + 8192) + 100, 8192);
        assert_eq!(l.slot_count, 3);
        assert_eq!(l.slot_bytes(), 12288);
        assert_eq!(l.header_offset(0), 4096);
        assert_eq!(l.data_offset(1), 4096 + 12288 + 4096);
        assert_eq!(l.file_bytes(), 4096 + 3 * 12288);
        assert_eq!(align_up(1), 4096);
        assert_eq!(align_up(4096), 4096);
        assert_eq!(block_count(0), 0);
        assert_eq!(block_count(4097), 2);
    }

    #[test]
    fn header_round_trip_and_rejections() {
        let data = vec![7u8; 10_000];
        let crcs = block_crcs(&data);
        assert_eq!(crcs.len(), 3);
        let mut sector = vec![0xAAu8; SECTOR_BYTES];
        encode_header(&mut sector, &fields(&crcs, 10_000)).unwrap();
        let h = decode_header(&sector, 7, 1 << 20).unwrap();
        assert_eq!(h.generation, 42);
        assert_eq!(h.page_index, 3);
        assert_eq!(h.len, 10_000);
        assert!(h.pinned);
        assert_eq!(
            (h.bucket.as_str(), h.key.as_str(), h.version.as_str()),
            ("bucket", "a/b/c.lance", "\"etag-1\"")
        );
        assert_eq!(&*h.crcs, &*crcs);

        assert_eq!(decode_header(&sector, 8, 1 << 20), Err(HeaderInvalid::WrongSlot));
        assert_eq!(decode_header(&sector, 7, 1 << 21), Err(HeaderInvalid::WrongPageSize));
        let mut bad = sector.clone();
        bad[H_IDENTITY] ^= 1;
        assert_eq!(decode_header(&bad, 7, 1 << 20), Err(HeaderInvalid::Checksum));
        assert_eq!(decode_header(&vec![0u8; SECTOR_BYTES], 7, 1 << 20), Err(HeaderInvalid::Empty));
        let mut bad = sector.clone();
        bad[0] = b'X';
        assert_eq!(decode_header(&bad, 7, 1 << 20), Err(HeaderInvalid::Magic));
    }

    #[test]
    fn identity_limits() {
        assert!(check_identity(&"b".repeat(63), &"k".repeat(1024), &"v".repeat(200)).is_ok());
        assert!(check_identity(&"b".repeat(64), "k", "v").is_err());
        assert!(check_identity("b", &"k".repeat(1025), "v").is_err());
        assert!(check_identity("b", "k", &"v".repeat(201)).is_err());
        // Largest identity and largest page still fit one sector.
        let crcs = vec![0u32; MAX_BLOCKS];
        let mut sector = vec![0u8; SECTOR_BYTES];
        let big_b = "b".repeat(63);
        let big_k = "k".repeat(1024);
        let big_v = "v".repeat(200);
        let h = HeaderFields {
            bucket: &big_b,
            key: &big_k,
            version: &big_v,
            page_size_bytes: MAX_PAGE_BYTES,
            ..fields(&crcs, MAX_PAGE_BYTES as u32)
        };
        encode_header(&mut sector, &h).unwrap();
        let d = decode_header(&sector, 7, MAX_PAGE_BYTES).unwrap();
        assert_eq!(d.key.len(), 1024);
    }

    #[test]
    fn superblock_round_trip() {
        let l = Layout { page_size_bytes: 1 << 20, slot_count: 99 };
        let mut s = vec![0u8; SECTOR_BYTES];
        assert_eq!(decode_superblock(&s), Superblock::Blank);
        encode_superblock(&mut s, &l).unwrap();
        assert_eq!(decode_superblock(&s), Superblock::Valid { page_size_bytes: 1 << 20, slot_count: 99 });
        s[100] = 1;
        assert_eq!(decode_superblock(&s), Superblock::Foreign);
    }
}
