//! Deterministic object content shared by `gen-objects` and the load generators, so a load
//! generator checks every byte it receives without reading the object files.
//!
//! Byte `o` of object `i` (generated with seed `s`) is byte `o % 8` of the little-endian
//! encoding of `word(s, i, o / 8)`, where (wrapping arithmetic)
//!
//! ```text
//! word(s, i, w) = mix64(s + i * 0x9E37_79B9_7F4A_7C15 + (w / 512) * 0xD1B5_4A32_D192_ED03)
//!                 ^ (w * 0xC2B2_AE3D_27D4_EB4F)
//! ```
//!
//! and `mix64` is the SplitMix64 finaliser: one hash per 4 KiB block (so another object,
//! another seed or another block gives other bytes) and one odd multiply per 8 bytes (so
//! every word of a block differs and a shifted or misplaced byte shows). The per-word part
//! vectorises, which keeps checking 64 KiB responses cheap next to receiving them: the load
//! generator's core must not become the limit it measures.
//!
//! Objects are named `obj-00000`, `obj-00001`, …; this module owns the naming too.

const OBJECT_STRIDE: u64 = 0x9E37_79B9_7F4A_7C15;
const BLOCK_STRIDE: u64 = 0xD1B5_4A32_D192_ED03;
const WORD_MULTIPLIER: u64 = 0xC2B2_AE3D_27D4_EB4F;
/// Words (8 bytes) per block of one hash: 4 KiB.
const WORDS_PER_BLOCK: u64 = 512;

/// The key of object `index` in the bench bucket.
pub fn object_key(index: u64) -> String {
    format!("obj-{index:05}")
}

/// SplitMix64 finaliser: a bijective, well-mixing map on `u64`.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The hash shared by the words of block `block` (words `512 * block ..`) of `object`.
#[inline]
fn block_hash(seed: u64, object: u64, block: u64) -> u64 {
    mix64(
        seed.wrapping_add(object.wrapping_mul(OBJECT_STRIDE)).wrapping_add(block.wrapping_mul(BLOCK_STRIDE)),
    )
}

/// The 8-byte word at word index `word_index` (bytes `8 * word_index ..`) of `object`.
#[inline]
fn word(seed: u64, object: u64, word_index: u64) -> u64 {
    block_hash(seed, object, word_index / WORDS_PER_BLOCK) ^ word_index.wrapping_mul(WORD_MULTIPLIER)
}

/// Fills `buf` with the bytes of `object` starting at byte `offset`.
pub fn fill(seed: u64, object: u64, offset: u64, buf: &mut [u8]) {
    let mut word_index = offset / 8;
    let head = (offset % 8) as usize;
    let mut rest = buf;
    if head != 0 {
        let bytes = word(seed, object, word_index).to_le_bytes();
        let n = (8 - head).min(rest.len());
        rest[..n].copy_from_slice(&bytes[head..head + n]);
        rest = &mut rest[n..];
        word_index += 1;
    }
    let mut chunks = rest.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&word(seed, object, word_index).to_le_bytes());
        word_index += 1;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let bytes = word(seed, object, word_index).to_le_bytes();
        let n = tail.len();
        tail.copy_from_slice(&bytes[..n]);
    }
}

/// Checks that `data` equals the bytes of `object` starting at byte `offset`. Returns the
/// index in `data` of the first wrong byte, or `None` when every byte is right.
pub fn first_mismatch(seed: u64, object: u64, offset: u64, data: &[u8]) -> Option<usize> {
    // Fast path: compare whole words without branching per word, so the loop vectorises;
    // only a failed check pays for locating the first wrong byte.
    let head = ((8 - offset % 8) % 8) as usize;
    let head = head.min(data.len());
    if !matches_slow(seed, object, offset, &data[..head]) {
        return locate(seed, object, offset, data);
    }
    let body = &data[head..];
    let (words, tail) = body.split_at(body.len() - body.len() % 8);
    let mut word_index = (offset + head as u64) / 8;
    let mut diff = 0u64;
    let mut rest = words;
    while !rest.is_empty() {
        // One block at a time, so the block hash is computed once per 4 KiB.
        let block = word_index / WORDS_PER_BLOCK;
        let block_words = (block + 1) * WORDS_PER_BLOCK - word_index;
        let take = usize::try_from(block_words).unwrap_or(usize::MAX).min(rest.len() / 8);
        let (segment, next) = rest.split_at(take * 8);
        let hash = block_hash(seed, object, block);
        // `w * WORD_MULTIPLIER` as a running sum: additions vectorise, 64-bit multiplies
        // mostly do not.
        let mut scrambled = word_index.wrapping_mul(WORD_MULTIPLIER);
        for chunk in segment.chunks_exact(8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            diff |= u64::from_le_bytes(bytes) ^ hash ^ scrambled;
            scrambled = scrambled.wrapping_add(WORD_MULTIPLIER);
        }
        word_index += take as u64;
        rest = next;
    }
    let tail_offset = offset + (data.len() - tail.len()) as u64;
    if diff != 0 || !matches_slow(seed, object, tail_offset, tail) {
        return locate(seed, object, offset, data);
    }
    None
}

fn matches_slow(seed: u64, object: u64, offset: u64, data: &[u8]) -> bool {
    let mut expected = [0u8; 8];
    let expected = &mut expected[..data.len()];
    fill(seed, object, offset, expected);
    expected == data
}

fn locate(seed: u64, object: u64, offset: u64, data: &[u8]) -> Option<usize> {
    let mut expected = vec![0u8; data.len()];
    fill(seed, object, offset, &mut expected);
    expected.iter().zip(data).position(|(e, d)| e != d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object_bytes(seed: u64, object: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        fill(seed, object, 0, &mut buf);
        buf
    }

    #[test]
    fn fill_at_offset_is_a_slice_of_the_whole_object() {
        let whole = object_bytes(7, 3, 200);
        for offset in 0..40usize {
            for len in [0usize, 1, 3, 7, 8, 9, 15, 16, 17, 64, 100] {
                let mut part = vec![0u8; len];
                fill(7, 3, offset as u64, &mut part);
                assert_eq!(part, whole[offset..offset + len], "offset {offset} len {len}");
                assert_eq!(first_mismatch(7, 3, offset as u64, &part), None);
            }
        }
    }

    #[test]
    fn a_flipped_byte_is_found_where_it_is() {
        let whole = object_bytes(1, 0, 4096);
        for offset in [0usize, 1, 5, 8, 13] {
            for bad in [0usize, 1, 6, 7, 8, 100, 4096 - offset - 1] {
                let mut part = whole[offset..].to_vec();
                part[bad] ^= 0x40;
                assert_eq!(
                    first_mismatch(1, 0, offset as u64, &part),
                    Some(bad),
                    "offset {offset} bad {bad}"
                );
            }
        }
    }

    #[test]
    fn objects_and_seeds_differ() {
        assert_ne!(object_bytes(1, 0, 64), object_bytes(1, 1, 64));
        assert_ne!(object_bytes(1, 0, 64), object_bytes(2, 0, 64));
        assert!(first_mismatch(1, 1, 0, &object_bytes(1, 0, 64)).is_some());
    }

    #[test]
    fn keys_sort_in_index_order() {
        assert_eq!(object_key(0), "obj-00000");
        assert_eq!(object_key(42), "obj-00042");
    }
}
