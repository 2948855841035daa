//! Arrow IPC request bodies (create, insert, merge_insert, add_columns), decoded only once
//! their size is known to be bounded.
//!
//! Why: in a compressed IPC stream every buffer starts with its decompressed length, eight
//! bytes the sender chooses, and the decoder allocates that much before it decompresses
//! anything. A 4 KiB body claiming 2^62 bytes aborted the process (the allocation fails,
//! which Rust cannot unwind from); one claiming a terabyte reserves it. So the stream's
//! message headers are walked first and every claimed length summed; a body that would
//! decode to more than `[limits] max_decoded_body` is refused before a byte is decompressed.
//!
//! Does not own: the decoding itself (arrow-ipc's `StreamReader`), which reports every
//! malformation this walk lets through.

use arrow_array::RecordBatch;
use arrow_ipc::MessageHeader;
use axum::body::Bytes;

use crate::error::{ApiError, ApiResult};

/// The decompressed bytes a stream's buffers claim, message by message; stops (leaving the
/// error to the decoder) at the first thing that does not parse. Err once `limit` is passed.
fn claimed_bytes(b: &[u8], limit: u64) -> ApiResult<u64> {
    let too_big = || {
        ApiError::bad_request(format!(
            "The Arrow IPC body would decompress to more than {limit} bytes (limits.max_decoded_body)"
        ))
    };
    let word = |at: usize| -> Option<u32> {
        b.get(at..at + 4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
    };
    let mut total = 0u64;
    let mut pos = 0usize;
    loop {
        // [0xFFFFFFFF][metadata length] (the legacy form has no marker), metadata, body.
        let Some(mut len) = word(pos) else { return Ok(total) };
        pos += 4;
        if len == u32::MAX {
            let Some(l) = word(pos) else { return Ok(total) };
            len = l;
            pos += 4;
        }
        let meta_len = len as usize;
        if meta_len == 0 || i32::try_from(len).is_err() {
            return Ok(total);
        }
        let Some(meta) = b.get(pos..pos + meta_len) else { return Ok(total) };
        pos += meta_len;
        let Ok(msg) = arrow_ipc::root_as_message(meta) else { return Ok(total) };
        let Ok(body_len) = usize::try_from(msg.bodyLength()) else { return Ok(total) };
        let Some(body) = b.get(pos..pos.saturating_add(body_len)) else { return Ok(total) };
        pos += body_len;
        let batch = match msg.header_type() {
            MessageHeader::RecordBatch => msg.header_as_record_batch(),
            MessageHeader::DictionaryBatch => msg.header_as_dictionary_batch().and_then(|d| d.data()),
            _ => None,
        };
        let Some(batch) = batch else { continue };
        let compressed = batch.compression().is_some();
        for buf in batch.buffers().into_iter().flatten() {
            let (Ok(off), Ok(blen)) = (usize::try_from(buf.offset()), u64::try_from(buf.length())) else {
                return Ok(total);
            };
            // Uncompressed buffers are as long as they are; compressed ones as they claim
            // (-1: stored as they are, after the prefix).
            let claimed = match body.get(off..off + 8).filter(|_| compressed && blen >= 8) {
                Some(p) => match i64::from_le_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]) {
                    -1 => blen - 8,
                    n => u64::try_from(n).unwrap_or(u64::MAX),
                },
                None => blen,
            };
            total = total.saturating_add(claimed);
            if total > limit {
                return Err(too_big());
            }
        }
    }
}

/// The schema and batches of an Arrow IPC stream body (LanceDB compresses its buffers with
/// LZ4), if it decodes to at most `max_decoded` bytes.
pub fn batches(b: &Bytes, max_decoded: u64) -> ApiResult<(arrow_schema::SchemaRef, Vec<RecordBatch>)> {
    claimed_bytes(b, max_decoded)?;
    let bad = |e: arrow_schema::ArrowError| {
        ApiError::bad_request(format!("The body is not an Arrow IPC stream: {e}"))
    };
    let r = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(b.clone()), None).map_err(bad)?;
    let schema = r.schema();
    let batches = r.collect::<Result<Vec<_>, _>>().map_err(bad)?;
    Ok((schema, batches))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;

    use arrow_array::Int64Array;

    use super::*;

    fn stream(n: i64, compression: Option<arrow_ipc::CompressionType>) -> Vec<u8> {
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "id",
            arrow_schema::DataType::Int64,
            false,
        )]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from_iter_values(0..n))]).unwrap();
        let opts = arrow_ipc::writer::IpcWriteOptions::default().try_with_compression(compression).unwrap();
        let mut w = arrow_ipc::writer::StreamWriter::try_new_with_options(Vec::new(), &schema, opts).unwrap();
        w.write(&batch).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        w.into_inner().unwrap()
    }

    #[test]
    fn honest_streams_decode_and_count_what_they_hold() {
        for c in [None, Some(arrow_ipc::CompressionType::LZ4_FRAME)] {
            let s = stream(1000, c);
            // Two batches of 8,000 bytes of values.
            assert_eq!(claimed_bytes(&s, u64::MAX).unwrap(), 16_000, "{c:?}");
            let (_, b) = batches(&Bytes::from(s), 16_000).unwrap();
            assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 2000);
        }
        assert!(batches(&Bytes::from(stream(1000, None)), 15_999).is_err());
    }

    #[test]
    fn a_lying_length_prefix_is_refused_before_decompression() {
        let mut s = stream(1000, Some(arrow_ipc::CompressionType::LZ4_FRAME));
        let at = s.windows(8).position(|w| w == 8000i64.to_le_bytes()).unwrap();
        for claim in [1i64 << 62, 1 << 40, i64::MAX] {
            s[at..at + 8].copy_from_slice(&claim.to_le_bytes());
            let e = batches(&Bytes::from(s.clone()), 1 << 30).expect_err("refused");
            assert!(e.message.contains("max_decoded_body"), "{}", e.message);
        }
        // A negative claim other than -1 is refused too (it reads as unbounded).
        s[at..at + 8].copy_from_slice(&(-5i64).to_le_bytes());
        assert!(batches(&Bytes::from(s), 1 << 30).is_err());
    }

    #[test]
    fn garbage_is_left_to_the_decoder() {
        for g in
            [&b""[..], b"garbage", &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f][..], &[0xff; 64][..]]
        {
            let e = batches(&Bytes::from(g.to_vec()), 1 << 30).expect_err("refused");
            assert!(
                e.message.contains("Arrow IPC") || e.message.contains("max_decoded_body"),
                "{}",
                e.message
            );
        }
    }
}
