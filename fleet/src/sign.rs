//! AWS Signature Version 4 for requests the router sends to cache nodes itself. The
//! payload is sent unsigned (`UNSIGNED-PAYLOAD`: the nodes are on the fleet's network and
//! the body may be streamed), and the derived signing key is kept for the day it belongs
//! to, so a request costs one SHA-256 and two HMACs.

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Method};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

pub struct Signer {
    access_key: String,
    secret_key: String,
    region: String,
    /// (yyyymmdd, signing key of that day).
    key: Mutex<Option<(String, [u8; 32])>>,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    let mut m = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(data);
    m.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    lakecache_common::auth::hex(bytes)
}

/// URI-encodes `s` as SigV4 wants: everything but `A-Z a-z 0-9 - _ . ~` is escaped, and
/// `/` too when `slash` (query names and values) but not in paths.
pub fn s3_encode(s: &str, slash: bool) -> String {
    lakecache_common::percent::encode(s, !slash)
}

/// A header value as SigV4 canonicalises it: trimmed, whitespace runs collapsed to one space.
fn canonical_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Signer {
    pub fn new(access_key: &str, secret_key: &str, region: &str) -> Self {
        Self {
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            region: region.to_string(),
            key: Mutex::new(None),
        }
    }

    fn signing_key(&self, date: &str) -> [u8; 32] {
        let mut cached = self.key.lock();
        if let Some((d, k)) = cached.as_ref()
            && d == date
        {
            return *k;
        }
        let k = hmac(format!("AWS4{}", self.secret_key).as_bytes(), date.as_bytes());
        let k = hmac(&k, self.region.as_bytes());
        let k = hmac(&k, b"s3");
        let k = hmac(&k, b"aws4_request");
        *cached = Some((date.to_string(), k));
        k
    }

    /// Signs a request: adds `host`, `x-amz-date`, `x-amz-content-sha256` and
    /// `authorization`, signing those and every `x-amz-*`, `content-*` and `if-*` header
    /// already in `headers`. `path` is already encoded; `query` holds decoded pairs, sorted.
    pub fn sign(
        &self,
        method: &Method,
        host: &str,
        path: &str,
        query: &[(String, String)],
        headers: &mut HeaderMap,
    ) {
        self.sign_at(time::OffsetDateTime::now_utc(), method, host, path, query, headers);
    }

    /// Signs with `payload` as `x-amz-content-sha256` (a hex SHA-256 of the body, or one of
    /// the `STREAMING-*` values): for tests and tools that send such requests themselves.
    pub fn sign_with_payload(
        &self,
        method: &Method,
        host: &str,
        path: &str,
        query: &[(String, String)],
        headers: &mut HeaderMap,
        payload: &str,
    ) {
        self.sign_payload_at(time::OffsetDateTime::now_utc(), method, host, path, query, headers, payload);
    }

    fn sign_at(
        &self,
        now: time::OffsetDateTime,
        method: &Method,
        host: &str,
        path: &str,
        query: &[(String, String)],
        headers: &mut HeaderMap,
    ) {
        self.sign_payload_at(now, method, host, path, query, headers, "UNSIGNED-PAYLOAD");
    }

    #[allow(clippy::too_many_arguments)]
    fn sign_payload_at(
        &self,
        now: time::OffsetDateTime,
        method: &Method,
        host: &str,
        path: &str,
        query: &[(String, String)],
        headers: &mut HeaderMap,
        payload: &str,
    ) {
        let date = format!("{:04}{:02}{:02}", now.year(), u8::from(now.month()), now.day());
        let stamp = format!("{date}T{:02}{:02}{:02}Z", now.hour(), now.minute(), now.second());
        let put = |h: &mut HeaderMap, k: &'static str, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(k, v);
            }
        };
        put(headers, "host", host);
        put(headers, "x-amz-date", &stamp);
        put(headers, "x-amz-content-sha256", payload);
        headers.remove(http::header::AUTHORIZATION);

        let mut signed: Vec<(String, String)> = Vec::new();
        for name in headers.keys() {
            let n = name.as_str();
            if n == "host" || n.starts_with("x-amz-") || n.starts_with("content-") || n.starts_with("if-") {
                // Values are signed as the node's verifier reads them: UTF-8 text (not only
                // ASCII: `x-amz-meta-*` may hold any), trimmed, inner runs of whitespace as
                // one space. A value that is not UTF-8 cannot be verified, so it travels
                // unsigned rather than making the whole request fail.
                let values: Option<Vec<String>> = headers
                    .get_all(name)
                    .iter()
                    .map(|v| std::str::from_utf8(v.as_bytes()).ok().map(canonical_value))
                    .collect();
                if let Some(values) = values {
                    signed.push((n.to_string(), values.join(",")));
                }
            }
        }
        signed.sort();
        let names: Vec<&str> = signed.iter().map(|(n, _)| n.as_str()).collect();
        let signed_names = names.join(";");

        let mut canonical = String::with_capacity(256);
        canonical.push_str(method.as_str());
        canonical.push('\n');
        canonical.push_str(path);
        canonical.push('\n');
        let q: Vec<String> =
            query.iter().map(|(k, v)| format!("{}={}", s3_encode(k, true), s3_encode(v, true))).collect();
        canonical.push_str(&q.join("&"));
        canonical.push('\n');
        for (n, v) in &signed {
            canonical.push_str(n);
            canonical.push(':');
            canonical.push_str(v);
            canonical.push('\n');
        }
        canonical.push('\n');
        canonical.push_str(&signed_names);
        canonical.push('\n');
        canonical.push_str(payload);

        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let to_sign =
            format!("AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
        let signature = hex(&hmac(&self.signing_key(&date), to_sign.as_bytes()));
        put(
            headers,
            "authorization",
            &format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_names}, Signature={signature}",
                self.access_key
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signing key is derived once per day; the header names what was signed. (That a
    /// node accepts the signature is shown by the router's integration tests, where every
    /// forwarded request is verified by the node's s3s.)
    #[test]
    fn signs_host_date_and_amz_headers() {
        let s = Signer::new("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1");
        let k = s.signing_key("20130524");
        let expect = {
            let k = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", b"20130524");
            let k = hmac(&k, b"us-east-1");
            let k = hmac(&k, b"s3");
            hmac(&k, b"aws4_request")
        };
        assert_eq!(k, expect);
        assert_eq!(s.signing_key("20130524"), expect, "cached");
        assert_ne!(s.signing_key("20130525"), expect, "a new day, a new key");

        let mut h = HeaderMap::new();
        h.insert("x-amz-copy-source", HeaderValue::from_static("b/k"));
        h.insert("range", HeaderValue::from_static("bytes=0-9"));
        let now = time::OffsetDateTime::from_unix_timestamp(1_369_353_600)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        s.sign_at(now, &Method::GET, "127.0.0.1:9001", "/b/test.txt", &[], &mut h);
        let auth = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"
            ),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-copy-source;x-amz-date,"),
            "{auth}"
        );
        assert_eq!(h.get("x-amz-date").map(|v| v.as_bytes()), Some(&b"20130524T000000Z"[..]));
    }

    #[test]
    fn non_ascii_values_are_signed_as_utf8_text() {
        let s = Signer::new("AKIDEXAMPLE", "secret", "us-east-1");
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-meta-city",
            HeaderValue::from_bytes("  Zürich   Nord ".as_bytes()).unwrap_or(HeaderValue::from_static("")),
        );
        h.insert(
            "x-amz-meta-raw",
            HeaderValue::from_bytes(&[0xff, 0xfe]).unwrap_or(HeaderValue::from_static("")),
        );
        let now = time::OffsetDateTime::UNIX_EPOCH;
        s.sign_at(now, &Method::PUT, "h", "/b/k", &[], &mut h);
        let auth = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(auth.contains("x-amz-meta-city"), "{auth}");
        assert!(!auth.contains("x-amz-meta-raw"), "a non-UTF-8 value is not signed: {auth}");
        assert_eq!(canonical_value("  Zürich   Nord "), "Zürich Nord");
    }

    #[test]
    fn encoding_follows_sigv4() {
        assert_eq!(s3_encode("a b/c~d+e", false), "a%20b/c~d%2Be");
        assert_eq!(s3_encode("a b/c", true), "a%20b%2Fc");
        assert_eq!(s3_encode("ü", true), "%C3%BC");
    }
}
