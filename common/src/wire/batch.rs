//! Several page reads in one request of the internal protocol (`GET` [`BATCH_PATH`]).
//!
//! A member with reads of known versions queued for one node sends them together: the
//! request's [`BATCH`] header lists the items, `bucket key version first-last` each (the
//! three names percent-encoded, so they hold no space or `;`), separated by `;`; the
//! signature covers that text as it covers a single read's ranges. The answer is one 200
//! whose body holds one part per item, in order:
//!
//! - `ok <len>\n` and the item's bytes (its range, cut at the object's end);
//! - `defer\n`: the node cannot answer the item from memory at that version without
//!   waiting (a page on disk or at the origin, a version it has not seen): the member asks
//!   for it alone, as a single read, so one slow item never holds up the others;
//! - `err <status> <code> <o|-> <len>\n` and a message of `len` bytes: the item's own error
//!   (`o`: the origin's fault, as `x-lakecache-error-source` says for a single read).
//!
//! An error of the whole request (authentication, a malformed list) is an ordinary error
//! answer of the protocol. A node that predates batches answers 404; members then read
//! singly.

use bytes::Bytes;

use crate::percent::decode;

/// Path of batched reads.
pub const BATCH_PATH: &str = "/_lakecache/fleet/v1/batch";
/// The items of a batch (see the module).
pub const BATCH: &str = "x-lakecache-batch";
/// Most items one batch may name.
pub const MAX_ITEMS: usize = 64;
/// Longest [`BATCH`] text (the node's request heads are bounded at 64 KiB).
pub const MAX_TEXT: usize = 32 * 1024;
/// Largest item a batch carries; a larger read streams on its own.
pub const MAX_ITEM_BYTES: u64 = 256 * 1024;
/// Most bytes of items one batch may ask for in all.
pub const MAX_BATCH_BYTES: u64 = 4 * 1024 * 1024;
/// Longest message of an item's error part.
pub const MAX_MESSAGE: usize = 1024;
/// Most bytes of part heads (and error messages) an answer may add per item.
pub const PART_OVERHEAD: u64 = 64 + MAX_MESSAGE as u64;

/// One read of a batch: half-open `range` of `bucket/key` at `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub bucket: String,
    pub key: String,
    pub version: String,
    pub range: (u64, u64),
}

/// Appends one item to a [`BATCH`] text.
pub fn push_item(out: &mut String, bucket: &str, key: &str, version: &str, start: u64, end: u64) {
    if !out.is_empty() {
        out.push(';');
    }
    use crate::percent::encode_into;
    encode_into(bucket, true, out);
    out.push(' ');
    encode_into(key, true, out);
    out.push(' ');
    encode_into(version, true, out);
    out.push(' ');
    out.push_str(&super::format_ranges(&[(start, end)]));
}

/// The items of a [`BATCH`] text, or why it cannot be read. Every item names a non-empty
/// bucket, key and version and one non-empty range no longer than [`MAX_ITEM_BYTES`]; at
/// most [`MAX_ITEMS`] of them, [`MAX_BATCH_BYTES`] in all.
pub fn parse_items(text: &str) -> Result<Vec<Item>, &'static str> {
    if text.len() > MAX_TEXT {
        return Err("the batch text is too long");
    }
    let mut items = Vec::new();
    let mut total = 0u64;
    for part in text.split(';') {
        if items.len() == MAX_ITEMS {
            return Err("too many items in one batch");
        }
        let mut f = part.split(' ');
        let (Some(b), Some(k), Some(v), Some(r), None) = (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            return Err("an item is not `bucket key version first-last`");
        };
        let (Some(bucket), Some(key), Some(version)) = (decode(b), decode(k), decode(v)) else {
            return Err("an item's names are not valid percent-encoded UTF-8");
        };
        if bucket.is_empty() || key.is_empty() || version.is_empty() {
            return Err("an item names no bucket, key or version");
        }
        let range = match super::parse_ranges(r).as_deref() {
            Some([one]) => *one,
            _ => return Err("an item's range is not one `first-last`"),
        };
        let len = range.1 - range.0;
        if len > MAX_ITEM_BYTES {
            return Err("an item is larger than a batch carries");
        }
        total += len;
        if total > MAX_BATCH_BYTES {
            return Err("the items ask for more bytes than one batch carries");
        }
        items.push(Item { bucket, key, version, range });
    }
    Ok(items)
}

/// What the answer says of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Data(Bytes),
    Defer,
    Error { status: u16, code: String, origin: bool, message: String },
}

/// The head of a data part of `len` bytes.
pub fn data_head(len: u64) -> Bytes {
    Bytes::from(format!("ok {len}\n"))
}

/// A deferred item's part.
pub fn defer_part() -> Bytes {
    Bytes::from_static(b"defer\n")
}

/// An item's error part, whole (the message cut to [`MAX_MESSAGE`] bytes, on a character
/// boundary; a code that is not one word is sent as `InternalError`).
pub fn error_part(status: u16, code: &str, origin: bool, message: &str) -> Bytes {
    let mut cut = message.len().min(MAX_MESSAGE);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let code = if !code.is_empty() && code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        code
    } else {
        "InternalError"
    };
    let message = &message[..cut];
    let flag = if origin { 'o' } else { '-' };
    Bytes::from(format!("err {status} {code} {flag} {}\n{message}", message.len()))
}

/// The parts of a batch answer's body, one per item asked for (`items`, in order). Any
/// deviation — a part too long or of an unknown kind, too few or too many parts, bytes
/// left over — makes the whole answer unreadable: nothing in it is trusted.
pub fn parse_parts(body: &Bytes, items: usize) -> Result<Vec<Part>, String> {
    let mut out = Vec::with_capacity(items);
    let mut pos = 0usize;
    while out.len() < items {
        let rest = &body[pos..];
        let Some(nl) = rest.iter().take(96).position(|&b| b == b'\n') else {
            return Err(format!("part {} has no head", out.len()));
        };
        let head =
            std::str::from_utf8(&rest[..nl]).map_err(|_| format!("part {} head is not text", out.len()))?;
        pos += nl + 1;
        let mut f = head.split(' ');
        let take = |len: &str, pos: &mut usize, max: u64| -> Result<Bytes, String> {
            let n: u64 = len.parse().map_err(|_| format!("bad part length {len:?}"))?;
            if n > max || n > (body.len() - *pos) as u64 {
                return Err(format!("a part of {n} bytes does not fit"));
            }
            let b = body.slice(*pos..*pos + n as usize);
            *pos += n as usize;
            Ok(b)
        };
        let part = match (f.next(), f.next(), f.next(), f.next(), f.next(), f.next()) {
            (Some("ok"), Some(len), None, ..) => Part::Data(take(len, &mut pos, MAX_ITEM_BYTES)?),
            (Some("defer"), None, ..) => Part::Defer,
            (Some("err"), Some(status), Some(code), Some(flag @ ("o" | "-")), Some(len), None) => {
                let status: u16 = status.parse().map_err(|_| format!("bad part status {status:?}"))?;
                if !(400..600).contains(&status) {
                    return Err(format!("an error part with status {status}"));
                }
                let message = take(len, &mut pos, MAX_MESSAGE as u64)?;
                Part::Error {
                    status,
                    code: code.to_string(),
                    origin: flag == "o",
                    message: String::from_utf8_lossy(&message).into_owned(),
                }
            }
            _ => return Err(format!("part {} has an unknown head {head:?}", out.len())),
        };
        out.push(part);
    }
    if pos != body.len() {
        return Err(format!("{} bytes after the last part", body.len() - pos));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_whatever_their_names_hold() {
        let mut text = String::new();
        push_item(&mut text, "b", "data/x y;z%.lance", "\"e 1\"", 0, 4096);
        push_item(&mut text, "b2", "k/ünï", "v", 10, 11);
        assert!(!text.contains('"') && text.matches(';').count() == 1, "{text}");
        let items = parse_items(&text).unwrap();
        assert_eq!(
            items,
            vec![
                Item {
                    bucket: "b".into(),
                    key: "data/x y;z%.lance".into(),
                    version: "\"e 1\"".into(),
                    range: (0, 4096)
                },
                Item { bucket: "b2".into(), key: "k/ünï".into(), version: "v".into(), range: (10, 11) },
            ]
        );
    }

    #[test]
    fn malformed_or_oversized_batches_are_refused() {
        for bad in [
            "",
            "b k v",
            "b k v 0-1 extra",
            "b  v 0-1",
            "b k v 5-2",
            "b k v 0-1,4-5",
            "b k%zz v 0-1",
            "b k v 0-262144",
            "b k v 0-1;",
        ] {
            assert!(parse_items(bad).is_err(), "{bad:?}");
        }
        let one = "b k v 0-0";
        assert!(parse_items(&vec![one; MAX_ITEMS].join(";")).is_ok());
        assert!(parse_items(&vec![one; MAX_ITEMS + 1].join(";")).is_err());
        let big = "b k v 0-262143";
        let n = (MAX_BATCH_BYTES / MAX_ITEM_BYTES) as usize;
        assert!(parse_items(&vec![big; n].join(";")).is_ok());
        assert!(parse_items(&vec![big; n + 1].join(";")).is_err());
        assert!(parse_items(&"x".repeat(MAX_TEXT + 1)).is_err());
    }

    #[test]
    fn parts_are_read_exactly_or_not_at_all() {
        let mut body = Vec::new();
        for p in [
            data_head(3),
            Bytes::from_static(b"abc"),
            defer_part(),
            error_part(412, "PreconditionFailed", false, "gone"),
        ] {
            body.extend_from_slice(&p);
        }
        body.extend_from_slice(&error_part(503, "SlowDown", true, ""));
        let body = Bytes::from(body);
        let parts = parse_parts(&body, 4).unwrap();
        assert_eq!(parts[0], Part::Data(Bytes::from_static(b"abc")));
        assert_eq!(parts[1], Part::Defer);
        assert_eq!(
            parts[2],
            Part::Error {
                status: 412,
                code: "PreconditionFailed".into(),
                origin: false,
                message: "gone".into()
            }
        );
        assert!(matches!(&parts[3], Part::Error { status: 503, origin: true, .. }));
        assert!(parse_parts(&body, 3).is_err(), "bytes left over");
        assert!(parse_parts(&body, 5).is_err(), "a part missing");
        for bad in
            ["ok 4\nabc", "ok -1\n", "okay 1\na", "err 200 X - 0\n", "err 404 X y 0\n", "ok 1 2\na", "defer"]
        {
            assert!(parse_parts(&Bytes::from(bad), 1).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_parts_stay_one_line_and_bounded() {
        let long = "é".repeat(MAX_MESSAGE);
        let p = error_part(500, "bad code\nx", false, &long);
        let parts = parse_parts(&p, 1).unwrap();
        let Part::Error { code, message, .. } = &parts[0] else { panic!("{parts:?}") };
        assert_eq!(code, "InternalError");
        assert!(message.len() <= MAX_MESSAGE && message.chars().all(|c| c == 'é'));
    }
}
