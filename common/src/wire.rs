//! Headers and paths fleet members use between themselves (on top of S3, and the internal
//! page protocol below), so that each side can tell
//! who is at fault for an error and which version of an object a read is about. A client
//! may send or see these too; they never widen what a request may do.

/// On an error answer of a cache node: where the fault lies. `origin` means the node is
/// healthy but the origin failed, was slow, or refused (the router passes the answer on
/// and neither fails over nor counts it against the node). Absent on client errors (4xx
/// speak for themselves) and on the node's own faults.
pub const ERROR_SOURCE: &str = "x-lakecache-error-source";
/// Value of [`ERROR_SOURCE`] for faults of the origin behind a node.
pub const ERROR_SOURCE_ORIGIN: &str = "origin";

/// On a GET from a fleet member to a node: the version (the quoted ETag) the bytes must be
/// of. The node serves that version from what it still holds even after the object was
/// replaced — so a read that spans several nodes completes with the version it started on —
/// and answers 412 when it can neither find that version's pages nor read it from the origin.
pub const READ_VERSION: &str = "x-lakecache-read-version";

// ---- The internal page protocol (fleet members -> cache nodes) -------------------------
//
// `GET|HEAD {PAGE_PATH}{bucket}/{key}` (both percent-encoded as S3 paths are) on a node's
// S3 port or its `[fleet] listen` address, authenticated by [`FLEET_AUTH`] instead of
// SigV4. GET names the bytes in [`RANGES`] (absent: the whole object) and optionally the
// version in [`READ_VERSION`]; the answer carries the object's metadata in headers
// ([`OBJECT_SIZE`], [`OBJECT_VERSION`], ETag, Last-Modified, Content-Type and the stored
// attributes) and the bytes of the ranges, concatenated in the order asked. A version the
// node cannot serve is 412, never other bytes. Errors carry [`ERROR_CODE`] (an S3 error
// code), [`ERROR_SOURCE`] where the origin is at fault, and a short plain-text message.

pub mod batch;

/// Path prefix of object reads on the internal protocol.
pub const PAGE_PATH: &str = "/_lakecache/fleet/v1/o/";
/// The fleet's key rules as a node applies them (JSON), for members to adopt or check.
pub const RULES_PATH: &str = "/_lakecache/fleet/v1/rules";
/// `v1 <unix seconds> <hex HMAC-SHA256>`; see [`FleetKey`].
pub const FLEET_AUTH: &str = "x-lakecache-fleet-auth";
/// Comma-separated inclusive byte ranges `first-last`. A range running past the object's
/// end is cut at it; one starting at or past the end is 416. (A reader that knows the size
/// asks exactly; one that does not yet — its first read — learns it from the answer.)
pub const RANGES: &str = "x-lakecache-ranges";
/// The object's size, on every successful answer (Content-Length is the bytes sent).
pub const OBJECT_SIZE: &str = "x-lakecache-object-size";
/// The identity pages are kept under: the ETag, else size and modification time.
pub const OBJECT_VERSION: &str = "x-lakecache-object-version";
/// The S3 error code of an error answer.
pub const ERROR_CODE: &str = "x-lakecache-error-code";

// ---- What a read cost at the origin ----------------------------------------------------
//
// A GET or HEAD of the page protocol may name the most origin requests it may cause
// ([`ORIGIN_BUDGET`]; `0`: served from what the node holds, or refused). The node refuses a
// read it cannot serve within that budget with [`BUDGET_STATUS`] and [`BUDGET_CODE`] before
// it has asked the origin for anything, and a successful answer says what the read cost
// ([`ORIGIN_REQUESTS`], [`ORIGIN_BYTES`]): the origin requests this read started, counted
// when started — a page another read is already fetching is that read's cost. A read of at
// most [`MAX_ACCOUNTED_READ`] bytes has every fetch it needs started before its answer's
// head leaves, so the count is whole; readers that want exact accounts ask no more at once.

/// The most origin requests this read may cause (a decimal count).
pub const ORIGIN_BUDGET: &str = "x-lakecache-origin-budget";
/// Origin requests this read started (a decimal count), on a successful answer.
pub const ORIGIN_REQUESTS: &str = "x-lakecache-origin-requests";
/// Bytes asked of the origin by the requests this read started.
pub const ORIGIN_BYTES: &str = "x-lakecache-origin-bytes";
/// The status of a read refused for its budget: the reader's own limit, not the node's fault.
pub const BUDGET_STATUS: http::StatusCode = http::StatusCode::CONFLICT;
/// The S3-style error code of a read refused for its budget.
pub const BUDGET_CODE: &str = "OriginBudgetExceeded";
/// The longest read whose account is whole when its answer's head leaves.
pub const MAX_ACCOUNTED_READ: u64 = 64 << 20;
/// Most ranges one request may name.
pub const MAX_RANGES: usize = 256;
/// How far a signature's time may be from the node's clock.
pub const FLEET_AUTH_WINDOW_SECS: u64 = 300;
/// A fleet secret shorter than this is refused at start.
pub const FLEET_SECRET_MIN_LEN: usize = 16;

/// The fleet secret, keyed once. A request's signature is HMAC-SHA256 under the secret
/// over the method, the path as sent, the time, the ranges and the version asked for —
/// everything that decides which bytes come back — each followed by a newline. Keying here
/// (the secret's two padding blocks) leaves only the message to hash per request.
#[derive(Clone)]
pub struct FleetKey {
    mac: hmac::Hmac<sha2::Sha256>,
}

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetKey(..)")
    }
}

impl FleetKey {
    pub fn new(secret: &str) -> Self {
        use hmac::Mac;
        // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
        let mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        Self { mac }
    }

    fn mac(&self, method: &str, path: &str, secs: u64, ranges: &str, version: &str) -> [u8; 32] {
        use hmac::Mac;
        let mut mac = self.mac.clone();
        let mut digits = [0u8; 20];
        for part in [
            method.as_bytes(),
            path.as_bytes(),
            decimal(secs, &mut digits),
            ranges.as_bytes(),
            version.as_bytes(),
        ] {
            mac.update(part);
            mac.update(b"\n");
        }
        mac.finalize().into_bytes().into()
    }

    /// The signature of one request signed at `secs`, in hex.
    pub fn signature(&self, method: &str, path: &str, secs: u64, ranges: &str, version: &str) -> String {
        crate::auth::hex(&self.mac(method, path, secs, ranges, version))
    }

    /// The [`FLEET_AUTH`] value for a request signed now.
    pub fn auth_value(&self, method: &str, path: &str, ranges: &str, version: &str) -> String {
        let secs = unix_now();
        let mut digits = [0u8; 20];
        let mut out = String::with_capacity(3 + 20 + 1 + 64);
        out.push_str("v1 ");
        out.push_str(std::str::from_utf8(decimal(secs, &mut digits)).unwrap_or("0"));
        out.push(' ');
        out.push_str(&crate::auth::hex(&self.mac(method, path, secs, ranges, version)));
        out
    }

    /// Checks a request's [`FLEET_AUTH`] header.
    pub fn verify(
        &self,
        header: Option<&[u8]>,
        method: &str,
        path: &str,
        ranges: &str,
        version: &str,
    ) -> Result<(), FleetAuthError> {
        let h = header.and_then(|h| std::str::from_utf8(h).ok()).ok_or(FleetAuthError::Missing)?;
        let mut parts = h.split(' ');
        let (Some("v1"), Some(secs), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(FleetAuthError::Missing);
        };
        let secs: u64 = secs.parse().map_err(|_| FleetAuthError::Missing)?;
        let presented = crate::auth::unhex::<32>(sig.as_bytes()).ok_or(FleetAuthError::Wrong)?;
        let expected = self.mac(method, path, secs, ranges, version);
        if !crate::auth::constant_time_eq(&expected, &presented) {
            return Err(FleetAuthError::Wrong);
        }
        if unix_now().abs_diff(secs) > FLEET_AUTH_WINDOW_SECS {
            return Err(FleetAuthError::Expired);
        }
        Ok(())
    }
}

/// `n` in decimal, written into the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Why a request's fleet credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetAuthError {
    /// No [`FLEET_AUTH`] header, or one that is not `v1 <secs> <hex>` (401).
    Missing,
    /// The signature does not match (403).
    Wrong,
    /// Signed too long ago or too far ahead (403).
    Expired,
}

impl FleetAuthError {
    pub fn label(self) -> &'static str {
        match self {
            FleetAuthError::Missing => "missing",
            FleetAuthError::Wrong => "wrong",
            FleetAuthError::Expired => "expired",
        }
    }

    /// The refusal every fleet member answers: status, S3-style code, message.
    pub fn answer(self) -> (http::StatusCode, &'static str, &'static str) {
        match self {
            FleetAuthError::Missing => (
                http::StatusCode::UNAUTHORIZED,
                "AccessDenied",
                "The fleet endpoint needs an x-lakecache-fleet-auth signature",
            ),
            FleetAuthError::Wrong => {
                (http::StatusCode::FORBIDDEN, "SignatureDoesNotMatch", "The fleet signature does not match")
            }
            FleetAuthError::Expired => {
                (http::StatusCode::FORBIDDEN, "RequestTimeTooSkewed", "The fleet signature has expired")
            }
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Parses [`RANGES`]: at most [`MAX_RANGES`] inclusive `first-last` ranges, each
/// `first <= last`, as half-open `(start, end)`.
pub fn parse_ranges(s: &str) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for r in s.split(',') {
        let (a, b) = r.trim().split_once('-')?;
        let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
        if a > b || out.len() == MAX_RANGES {
            return None;
        }
        out.push((a, b.checked_add(1)?));
    }
    Some(out)
}

/// Writes half-open ranges as [`RANGES`] expects them.
pub fn format_ranges(ranges: &[(u64, u64)]) -> String {
    let mut s = Vec::with_capacity(ranges.len() * 16);
    let mut buf = [0u8; 20];
    for (i, (a, b)) in ranges.iter().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        s.extend_from_slice(decimal(*a, &mut buf));
        s.push(b'-');
        s.extend_from_slice(decimal(b - 1, &mut buf));
    }
    String::from_utf8(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_what_decides_the_bytes() {
        let key = FleetKey::new("0123456789abcdef");
        let v = key.auth_value("GET", "/_lakecache/fleet/v1/o/b/k", "0-9", "e1");
        let ok = |m, p, r, ver| key.verify(Some(v.as_bytes()), m, p, r, ver);
        assert_eq!(ok("GET", "/_lakecache/fleet/v1/o/b/k", "0-9", "e1"), Ok(()));
        assert_eq!(ok("GET", "/_lakecache/fleet/v1/o/b/k2", "0-9", "e1"), Err(FleetAuthError::Wrong));
        assert_eq!(ok("GET", "/_lakecache/fleet/v1/o/b/k", "0-10", "e1"), Err(FleetAuthError::Wrong));
        assert_eq!(ok("GET", "/_lakecache/fleet/v1/o/b/k", "0-9", "e2"), Err(FleetAuthError::Wrong));
        assert_eq!(ok("HEAD", "/_lakecache/fleet/v1/o/b/k", "0-9", "e1"), Err(FleetAuthError::Wrong));
        let other = FleetKey::new("another-secret-16").verify(
            Some(v.as_bytes()),
            "GET",
            "/_lakecache/fleet/v1/o/b/k",
            "0-9",
            "e1",
        );
        assert_eq!(other, Err(FleetAuthError::Wrong));
        assert_eq!(key.verify(None, "GET", "/", "", ""), Err(FleetAuthError::Missing));
        assert_eq!(key.verify(Some(b"v2 1 ab"), "GET", "/", "", ""), Err(FleetAuthError::Missing));
        let now = unix_now();
        let short = format!("v1 {now} {}", &key.signature("GET", "/", now, "", "")[..63]);
        assert_eq!(key.verify(Some(short.as_bytes()), "GET", "/", "", ""), Err(FleetAuthError::Wrong));
        let upper = format!("v1 {now} {}", key.signature("GET", "/", now, "", "").to_uppercase());
        assert_eq!(key.verify(Some(upper.as_bytes()), "GET", "/", "", ""), Ok(()));
        let old = now - FLEET_AUTH_WINDOW_SECS - 5;
        let stale = format!("v1 {old} {}", key.signature("GET", "/", old, "", ""));
        assert_eq!(key.verify(Some(stale.as_bytes()), "GET", "/", "", ""), Err(FleetAuthError::Expired));
    }

    #[test]
    fn decimals_are_written_as_to_string_writes_them() {
        let mut buf = [0u8; 20];
        for n in [0, 7, 10, 1_764_590_000, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn ranges_are_bounded_and_round_trip() {
        assert_eq!(parse_ranges("0-4095,8192-8192"), Some(vec![(0, 4096), (8192, 8193)]));
        assert_eq!(format_ranges(&[(0, 4096), (8192, 8193)]), "0-4095,8192-8192");
        for bad in ["", "5-2", "a-b", "1-", "-5", "0-18446744073709551615", "1-2-3"] {
            assert_eq!(parse_ranges(bad), None, "{bad}");
        }
        let many = vec!["0-0"; MAX_RANGES + 1].join(",");
        assert_eq!(parse_ranges(&many), None);
        assert!(parse_ranges(&vec!["0-0"; MAX_RANGES].join(",")).is_some());
    }
}
