//! Percent-encoding as S3 paths and SigV4 use it: everything but `A-Z a-z 0-9 - _ . ~` is
//! escaped (upper-case hex), `/` too unless it is kept (paths keep it, query parts do not).

/// Appends `s` to `out`, percent-encoded.
pub fn encode_into(s: &str, keep_slash: bool, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
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
        for bad in ["%", "%4", "%zz", "%C3"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
