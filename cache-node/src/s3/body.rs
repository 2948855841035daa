//! Request bodies of writes (PutObject, UploadPart): read with an idle timeout, counted
//! against the declared length, and checked against every digest the client sent —
//! `Content-MD5`, an `x-amz-checksum-*` header, or the checksum trailer of an aws-chunked
//! body. s3s verifies the SigV4 payload hash and decodes aws-chunked framing; it checks
//! neither the decoded length nor any of these digests, so this module does. A write is made
//! visible only after `BodyReader::finish` has accepted its body.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use http::HeaderMap;
use md5::{Digest, Md5};
use s3s::checksum::ChecksumHasher;
use s3s::{S3Error, S3ErrorCode, TrailingHeaders, s3_error};

/// The checksum algorithms of `x-amz-checksum-<name>`, with their digest lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl Algo {
    const ALL: [Algo; 5] = [Algo::Crc32, Algo::Crc32c, Algo::Crc64Nvme, Algo::Sha1, Algo::Sha256];

    pub fn header(self) -> &'static str {
        match self {
            Algo::Crc32 => "x-amz-checksum-crc32",
            Algo::Crc32c => "x-amz-checksum-crc32c",
            Algo::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algo::Sha1 => "x-amz-checksum-sha1",
            Algo::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The name S3 uses in its error messages.
    fn label(self) -> &'static str {
        match self {
            Algo::Crc32 => "CRC32",
            Algo::Crc32c => "CRC32C",
            Algo::Crc64Nvme => "CRC64NVME",
            Algo::Sha1 => "SHA1",
            Algo::Sha256 => "SHA256",
        }
    }

    fn digest_len(self) -> usize {
        match self {
            Algo::Crc32 | Algo::Crc32c => 4,
            Algo::Crc64Nvme => 8,
            Algo::Sha1 => 20,
            Algo::Sha256 => 32,
        }
    }

    fn from_header(name: &str) -> Option<Algo> {
        Algo::ALL.into_iter().find(|a| a.header().eq_ignore_ascii_case(name.trim()))
    }

    fn enable(self, h: &mut ChecksumHasher) {
        match self {
            Algo::Crc32 => h.crc32 = Some(Default::default()),
            Algo::Crc32c => h.crc32c = Some(Default::default()),
            Algo::Crc64Nvme => h.crc64nvme = Some(Default::default()),
            Algo::Sha1 => h.sha1 = Some(Default::default()),
            Algo::Sha256 => h.sha256 = Some(Default::default()),
        }
    }

    fn of(self, c: &s3s::dto::Checksum) -> Option<&str> {
        match self {
            Algo::Crc32 => c.checksum_crc32.as_deref(),
            Algo::Crc32c => c.checksum_crc32c.as_deref(),
            Algo::Crc64Nvme => c.checksum_crc64nvme.as_deref(),
            Algo::Sha1 => c.checksum_sha1.as_deref(),
            Algo::Sha256 => c.checksum_sha256.as_deref(),
        }
    }
}

/// A digest value in canonical base64, if `v` is base64 of `len` bytes.
fn canonical(v: &str, len: usize) -> Option<String> {
    let raw = B64.decode(v.trim()).ok()?;
    (raw.len() == len).then(|| B64.encode(raw))
}

/// What the client promised about a body, from the request's headers.
#[derive(Debug, Default)]
pub struct Expect {
    /// The decoded length (`Content-Length`, or `x-amz-decoded-content-length` of an
    /// aws-chunked body, which s3s puts in its place).
    len: Option<u64>,
    md5: Option<[u8; 16]>,
    /// The `x-amz-checksum-*` header, canonical base64.
    checksum: Option<(Algo, String)>,
    /// The checksum announced by `x-amz-trailer`, to be found in the trailers.
    trailer: Option<Algo>,
    trailers: Option<TrailingHeaders>,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap_or("\u{0}"))
}

impl Expect {
    /// Reads the digest headers, refusing malformed ones as S3 does (InvalidDigest for
    /// Content-MD5, InvalidRequest for checksums) before any byte of the body is read.
    pub fn from_headers(
        h: &HeaderMap,
        len: Option<i64>,
        trailers: Option<TrailingHeaders>,
    ) -> Result<Expect, S3Error> {
        let mut e = Expect { len: len.map(|l| l.max(0) as u64), trailers, ..Default::default() };
        // An aws-chunked body that s3s did not decode (it does so only for signed requests)
        // would be stored with its framing as data.
        let streaming = header(h, "x-amz-content-sha256").is_some_and(|v| v.starts_with("STREAMING-"))
            || header(h, "content-encoding").is_some_and(|v| v.split(',').any(|t| t.trim() == "aws-chunked"));
        if streaming && e.trailers.is_none() {
            return Err(s3_error!(
                InvalidRequest,
                "An aws-chunked body is accepted only on a SigV4-signed request"
            ));
        }
        if let Some(v) = header(h, "content-md5") {
            let raw = B64.decode(v.trim()).ok().filter(|r| r.len() == 16);
            let Some(raw) = raw else {
                return Err(s3_error!(InvalidDigest, "The Content-MD5 you specified is not valid."));
            };
            let mut md5 = [0u8; 16];
            md5.copy_from_slice(&raw);
            e.md5 = Some(md5);
        }
        for a in Algo::ALL {
            let Some(v) = header(h, a.header()) else { continue };
            if e.checksum.is_some() {
                return Err(s3_error!(
                    InvalidRequest,
                    "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
                ));
            }
            let Some(c) = canonical(v, a.digest_len()) else {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidRequest,
                    format!("Value for {} header is invalid.", a.header()),
                ));
            };
            e.checksum = Some((a, c));
        }
        if let Some(t) = header(h, "x-amz-trailer") {
            let Some(a) = Algo::from_header(t) else {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidRequest,
                    format!("The value specified in the x-amz-trailer header is not supported: {t}"),
                ));
            };
            if e.checksum.is_some() {
                return Err(s3_error!(
                    InvalidRequest,
                    "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
                ));
            }
            e.trailer = Some(a);
        }
        Ok(e)
    }

    pub fn declared_len(&self) -> Option<u64> {
        self.len
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    #[error("no body bytes for {0:?}")]
    Stalled(Duration),
    #[error("the body ended early or broke off: {0}")]
    Incomplete(String),
    #[error("the body is larger than {0} bytes")]
    TooLarge(u64),
}

impl BodyError {
    pub fn to_s3(&self) -> S3Error {
        match self {
            BodyError::Stalled(_) => s3_error!(
                RequestTimeout,
                "Your socket connection to the server was not read from or written to within the timeout period."
            ),
            BodyError::Incomplete(m) => S3Error::with_message(S3ErrorCode::IncompleteBody, m.clone()),
            BodyError::TooLarge(_) => {
                s3_error!(EntityTooLarge, "Your proposed upload exceeds the maximum allowed size")
            }
        }
    }
}

impl From<BodyError> for S3Error {
    fn from(e: BodyError) -> Self {
        e.to_s3()
    }
}

/// What was verified about a body: its length, and the checksum to echo back.
#[derive(Debug, Default)]
pub struct Verified {
    pub len: u64,
    pub checksum: Option<(Algo, String)>,
}

/// A request body as a stream of chunks that fails when the client sends nothing for
/// `idle` (the gap between two chunks, as nginx's `client_body_timeout`) or more than
/// `max_bytes`, hashing what passes for `finish`.
pub struct BodyReader<S> {
    body: S,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    max_bytes: u64,
    expect: Expect,
    md5: Option<Md5>,
    hasher: Option<ChecksumHasher>,
    len: u64,
    failed: Option<BodyError>,
    done: bool,
    /// Whether the timer runs for the current wait. It is re-armed on the first poll after
    /// a chunk, so time the consumer spends on a chunk (an origin applying backpressure)
    /// never counts against the client.
    armed: bool,
}

impl<S> BodyReader<S>
where
    S: Stream<Item = Result<Bytes, s3s::StdError>> + Unpin,
{
    pub fn new(body: S, expect: Expect, idle: Duration, max_bytes: u64) -> Self {
        let algo = expect.checksum.as_ref().map(|(a, _)| *a).or(expect.trailer);
        let hasher = algo.map(|a| {
            let mut h = ChecksumHasher::default();
            a.enable(&mut h);
            h
        });
        Self {
            body,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            max_bytes,
            md5: expect.md5.map(|_| Md5::new()),
            expect,
            hasher,
            len: 0,
            failed: None,
            done: false,
            armed: true,
        }
    }

    /// The error the body failed with, if it did (callers that consumed the stream
    /// through another layer use this to answer with the right code).
    pub fn failure(&self) -> Option<&BodyError> {
        self.failed.as_ref()
    }

    fn fail(&mut self, e: BodyError) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.done = true;
        self.failed = Some(e.clone());
        Poll::Ready(Some(Err(e)))
    }

    /// Checks the whole body against what the client declared; call once the stream has
    /// ended. Any mismatch is an error and the body must not be stored.
    pub fn finish(mut self) -> Result<Verified, S3Error> {
        if let Some(e) = &self.failed {
            return Err(e.to_s3());
        }
        if !self.done {
            return Err(S3Error::with_message(S3ErrorCode::InternalError, "body not read to its end"));
        }
        if self.expect.len.is_some_and(|l| l != self.len) {
            return Err(s3_error!(
                IncompleteBody,
                "You did not provide the number of bytes specified by the Content-Length HTTP header."
            ));
        }
        if let (Some(want), Some(md5)) = (self.expect.md5, self.md5.take())
            && md5.finalize().as_slice() != want
        {
            return Err(s3_error!(
                BadDigest,
                "The Content-MD5 you specified did not match what we received."
            ));
        }
        let got = self.hasher.take().map(ChecksumHasher::finalize);
        let claimed = match (self.expect.checksum.take(), self.expect.trailer) {
            (Some(c), _) => Some(c),
            (None, Some(a)) => {
                let trailers = self.expect.trailers.as_ref().and_then(TrailingHeaders::take);
                let value = trailers.as_ref().and_then(|t| t.get(a.header())).and_then(|v| v.to_str().ok());
                let Some(c) = value.and_then(|v| canonical(v, a.digest_len())) else {
                    let mut e = S3Error::with_message(
                        S3ErrorCode::Custom("MalformedTrailerError".into()),
                        "The request contained trailing data that was not well-formed or did not conform to our published schema.",
                    );
                    e.set_status_code(http::StatusCode::BAD_REQUEST);
                    return Err(e);
                };
                Some((a, c))
            }
            (None, None) => None,
        };
        if let (Some((a, want)), Some(got)) = (&claimed, &got)
            && a.of(got) != Some(want.as_str())
        {
            return Err(S3Error::with_message(
                S3ErrorCode::BadDigest,
                format!("The {} you specified did not match the calculated checksum.", a.label()),
            ));
        }
        Ok(Verified { len: self.len, checksum: claimed })
    }
}

impl<S> Stream for BodyReader<S>
where
    S: Stream<Item = Result<Bytes, s3s::StdError>> + Unpin,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.armed {
            let deadline = tokio::time::Instant::now() + this.idle;
            this.timer.as_mut().reset(deadline);
            this.armed = true;
        }
        match this.body.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(b))) => {
                this.len += b.len() as u64;
                if this.len > this.max_bytes {
                    return this.fail(BodyError::TooLarge(this.max_bytes));
                }
                if let Some(m) = &mut this.md5 {
                    m.update(&b);
                }
                if let Some(h) = &mut this.hasher {
                    h.update(&b);
                }
                this.armed = false;
                Poll::Ready(Some(Ok(b)))
            }
            // The connection's own body timeout (`server.body_timeout`, the same limit)
            // may fire first: that is a stall too, not a short body.
            Poll::Ready(Some(Err(e))) if e.downcast_ref::<crate::listener::BodyTimeout>().is_some() => {
                this.fail(BodyError::Stalled(this.idle))
            }
            Poll::Ready(Some(Err(e))) => this.fail(BodyError::Incomplete(e.to_string())),
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.poll_unpin(cx) {
                Poll::Ready(()) => this.fail(BodyError::Stalled(this.idle)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// Removes `aws-chunked` from a Content-Encoding: it describes the request's framing, not
/// the object (S3 does not store it either).
pub fn stored_content_encoding(v: Option<&str>) -> Option<String> {
    let v = v?;
    let kept: Vec<&str> =
        v.split(',').map(str::trim).filter(|t| !t.is_empty() && *t != "aws-chunked").collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_chunked_is_not_a_stored_encoding() {
        assert_eq!(stored_content_encoding(Some("aws-chunked")), None);
        assert_eq!(stored_content_encoding(Some("gzip, aws-chunked")).as_deref(), Some("gzip"));
        assert_eq!(stored_content_encoding(Some("gzip")).as_deref(), Some("gzip"));
        assert_eq!(stored_content_encoding(None), None);
    }

    #[test]
    fn digests_must_be_base64_of_the_right_length() {
        assert!(canonical("AAAAAA==", 4).is_some());
        assert!(canonical("AAAAAA==", 8).is_none());
        assert!(canonical("not base64!", 4).is_none());
        assert!(canonical("", 4).is_none());
    }
}
