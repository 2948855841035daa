//! Percent-encoding as S3 paths and SigV4 use it: everything but `A-Z a-z 0-9 - _ . ~` is
//! escaped (upper-case hex), `/` too unless it is kept (paths keep it, query parts do not).

/// Appends `s` to `out`, percent-encoded. Runs of bytes that stay as they are are copied
/// whole (object keys are mostly such runs).
pub fn encode_into(s: &str, keep_slash: bool, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let kept = |b: u8| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/')
    };
    out.reserve(s.len());
    let mut run = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if kept(b) {
            continue;
        }
        // A kept byte is ASCII, so a non-empty run starts and ends on character boundaries.
        if i > run {
            out.push_str(&s[run..i]);
        }
        out.push('%');
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
        run = i + 1;
    }
    if run < s.len() {
        out.push_str(&s[run..]);
    }
}

/// `s`, percent-encoded.
pub fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    encode_into(s, keep_slash, &mut out);
    out
}

/// `s` with every `%XX` decoded; `None` if an escape is malformed or the result is not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_escapes() {
        let s = "a b/ü%;~x";
        assert_eq!(encode(s, true), "a%20b/%C3%BC%25%3B~x");
        assert_eq!(encode(s, false), "a%20b%2F%C3%BC%25%3B~x");
        assert_eq!(decode(&encode(s, false)).as_deref(), Some(s));
        // Escapes at the start, the end, back to back and between runs.
        for (raw, want) in [
            ("ü", "%C3%BC"),
            ("üa", "%C3%BCa"),
            ("aü", "a%C3%BC"),
            ("a  b", "a%20%20b"),
            ("data/part-0.lance", "data%2Fpart-0.lance"),
            ("", ""),
        ] {
            assert_eq!(encode(raw, false), want, "{raw:?}");
            assert_eq!(decode(want).as_deref(), Some(raw));
        }
        for bad in ["%", "%4", "%zz", "%C3"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
