//! Page arithmetic: how a byte range of an object maps onto fixed, aligned pages.
//!
//! A page is the unit of caching (memory and disk tiers) and, later, of routing. Page `i`
//! of an object covers bytes `[i * page_size, min((i + 1) * page_size, object_len))`.
//! This module owns only the arithmetic; it knows nothing of where pages live.

use std::ops::Range;

/// The slice of one page that a byte range needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSlice {
    /// Index of the page within the object.
    pub index: u64,
    /// First byte within the page.
    pub offset_in_page: usize,
    /// Number of bytes from `offset_in_page`.
    pub len: usize,
}

/// Fixed page geometry of one cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageGeometry {
    page_size_bytes: u64,
}

impl PageGeometry {
    /// `page_size_bytes` must be a non-zero multiple of 4096.
    pub fn new(page_size_bytes: u64) -> Option<Self> {
        (page_size_bytes > 0 && page_size_bytes.is_multiple_of(4096)).then_some(Self { page_size_bytes })
    }

    pub fn page_size_bytes(&self) -> u64 {
        self.page_size_bytes
    }

    /// Number of pages an object of `object_len` bytes has.
    pub fn page_count(&self, object_len: u64) -> u64 {
        object_len.div_ceil(self.page_size_bytes)
    }

    /// Byte range of page `index` within an object of `object_len` bytes (may be empty past the end).
    pub fn page_bytes(&self, index: u64, object_len: u64) -> Range<u64> {
        let start = index.saturating_mul(self.page_size_bytes).min(object_len);
        let end = start.saturating_add(self.page_size_bytes).min(object_len);
        start..end
    }

    /// The pages, in order, that the byte range `range` (end exclusive) touches, each with the
    /// part of the page it needs. `range` must lie within the object.
    pub fn slices(&self, range: Range<u64>) -> impl Iterator<Item = PageSlice> + use<> {
        let ps = self.page_size_bytes;
        let mut pos = range.start;
        let end = range.end;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let index = pos / ps;
            let page_start = index * ps;
            let page_end = page_start + ps;
            let slice_end = page_end.min(end);
            let out = PageSlice {
                index,
                offset_in_page: (pos - page_start) as usize,
                len: (slice_end - pos) as usize,
            };
            pos = slice_end;
            Some(out)
        })
    }
}

/// A resolved, satisfiable byte range of an object (end exclusive, never empty unless the
/// object is empty and the whole object was asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// A range as an HTTP client asked for it (RFC 9110 int-range / suffix-range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestedRange {
    /// `bytes=first-last` (inclusive) or `bytes=first-` when `last` is `None`.
    FromTo { first: u64, last: Option<u64> },
    /// `bytes=-n`: the last `n` bytes.
    Suffix { len: u64 },
}

/// The range cannot be satisfied for an object of this length (HTTP 416).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("range not satisfiable for an object of {object_len} bytes")]
pub struct Unsatisfiable {
    pub object_len: u64,
}

impl RequestedRange {
    /// Resolves the range against the object's length the way S3 does: a `last` past the
    /// end is clamped; a `first` at or past the end, or a zero-length suffix, is unsatisfiable;
    /// a suffix longer than the object means the whole object.
    pub fn resolve(self, object_len: u64) -> Result<ByteRange, Unsatisfiable> {
        match self {
            RequestedRange::FromTo { first, last } => {
                if first >= object_len || last.is_some_and(|l| l < first) {
                    return Err(Unsatisfiable { object_len });
                }
                let end = last.map_or(object_len, |l| l.saturating_add(1).min(object_len));
                Ok(ByteRange { start: first, end })
            }
            RequestedRange::Suffix { len } => {
                if len == 0 || object_len == 0 {
                    return Err(Unsatisfiable { object_len });
                }
                Ok(ByteRange { start: object_len.saturating_sub(len), end: object_len })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn geometry_rejects_unaligned_sizes() {
        assert!(PageGeometry::new(0).is_none());
        assert!(PageGeometry::new(1000).is_none());
        assert!(PageGeometry::new(4096).is_some());
    }

    #[test]
    fn resolve_matches_s3() {
        let r = |first, last| RequestedRange::FromTo { first, last };
        assert_eq!(r(0, Some(9)).resolve(100), Ok(ByteRange { start: 0, end: 10 }));
        assert_eq!(r(90, Some(200)).resolve(100), Ok(ByteRange { start: 90, end: 100 }));
        assert_eq!(r(99, None).resolve(100), Ok(ByteRange { start: 99, end: 100 }));
        assert!(r(100, None).resolve(100).is_err());
        assert!(r(0, None).resolve(0).is_err());
        assert_eq!(RequestedRange::Suffix { len: 10 }.resolve(100), Ok(ByteRange { start: 90, end: 100 }));
        assert_eq!(RequestedRange::Suffix { len: 1000 }.resolve(100), Ok(ByteRange { start: 0, end: 100 }));
        assert!(RequestedRange::Suffix { len: 0 }.resolve(100).is_err());
        assert!(RequestedRange::Suffix { len: 5 }.resolve(0).is_err());
    }

    proptest! {
        #[test]
        fn slices_cover_range_exactly(page_kib in 1u64..64, start in 0u64..1_000_000, len in 1u64..1_000_000) {
            let g = PageGeometry::new(page_kib * 4096).unwrap();
            let end = start + len;
            let mut pos = start;
            for s in g.slices(start..end) {
                let page = g.page_bytes(s.index, u64::MAX);
                prop_assert_eq!(page.start + s.offset_in_page as u64, pos);
                prop_assert!(s.len > 0);
                prop_assert!(s.offset_in_page as u64 + s.len as u64 <= g.page_size_bytes());
                pos += s.len as u64;
            }
            prop_assert_eq!(pos, end);
        }

        #[test]
        fn pages_partition_object(page_kib in 1u64..16, object_len in 0u64..500_000) {
            let g = PageGeometry::new(page_kib * 4096).unwrap();
            let mut next = 0;
            for i in 0..g.page_count(object_len) {
                let b = g.page_bytes(i, object_len);
                prop_assert_eq!(b.start, next);
                prop_assert!(b.end > b.start);
                next = b.end;
            }
            prop_assert_eq!(next, object_len);
        }
    }
}
