//! How an s3s service is set up the same way on the cache node and the router: SigV4
//! against the configured keys, anonymous access when allowed, virtual-host parsing.

use http::Method;
use s3s::S3Result;
use s3s::auth::SimpleAuth;
use s3s::host::{S3Host, VirtualHost};
use s3s::service::S3ServiceBuilder;

use crate::request::host_bucket;

/// Authentication (SigV4 against the configured keys, anonymous access if allowed) and
/// host parsing, shared by the cache node and the router.
pub fn configure_s3(
    b: &mut S3ServiceBuilder,
    auth: &crate::config::AuthConfig,
    server: &crate::config::ServerConfig,
) {
    if !auth.keys.is_empty() {
        let mut simple = SimpleAuth::new();
        for k in &auth.keys {
            simple.register(k.access_key.clone(), k.secret_key.clone().into());
        }
        b.set_auth(simple);
        if auth.anonymous {
            b.set_access(AllowAnonymous);
        }
    }
    b.set_host(Hosts { domains: server.virtual_host_domains.clone() });
}

/// Anonymous requests are allowed (signed ones were still verified by s3s).
pub struct AllowAnonymous;

#[async_trait::async_trait]
impl s3s::access::S3Access for AllowAnonymous {
    async fn check(&self, _cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        Ok(())
    }
}

/// Virtual-host style for `<bucket>.<domain>`; any other Host is path style.
pub struct Hosts {
    pub domains: Vec<String>,
}

impl S3Host for Hosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        Ok(match host_bucket(&self.domains, host) {
            Some(b) => VirtualHost::new(host).with_bucket(b),
            None => VirtualHost::new(host),
        })
    }
}

/// A method as a metric label: a fixed set, since the token comes from the client.
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// A server's S3 requests counted by method and status, with the series of the commonest
/// answers registered at start (a lookup by label costs more than a memory hit's reply).
pub struct RequestStats {
    requests: &'static str,
    latency: &'static str,
    get_200: metrics::Counter,
    get_206: metrics::Counter,
    head_200: metrics::Counter,
    get_latency: metrics::Histogram,
    head_latency: metrics::Histogram,
}

impl RequestStats {
    /// `requests`: a counter labelled by method and status; `latency`: a histogram in
    /// milliseconds labelled by method.
    pub fn new(requests: &'static str, latency: &'static str) -> Self {
        let count =
            |m: &'static str, s: &'static str| metrics::counter!(requests, "method" => m, "status" => s);
        Self {
            requests,
            latency,
            get_200: count("GET", "200"),
            get_206: count("GET", "206"),
            head_200: count("HEAD", "200"),
            get_latency: metrics::histogram!(latency, "method" => "GET"),
            head_latency: metrics::histogram!(latency, "method" => "HEAD"),
        }
    }

    pub fn record(&self, method: &'static str, status: http::StatusCode, started: std::time::Instant) {
        let ms = lakecache_common::metrics::ms_since(started);
        match (method, status.as_u16()) {
            ("GET", 200) => self.get_200.increment(1),
            ("GET", 206) => self.get_206.increment(1),
            ("HEAD", 200) => self.head_200.increment(1),
            _ => {
                metrics::counter!(self.requests, "method" => method, "status" => status.as_str().to_string())
                    .increment(1)
            }
        }
        match method {
            "GET" => self.get_latency.record(ms),
            "HEAD" => self.head_latency.record(ms),
            _ => metrics::histogram!(self.latency, "method" => method).record(ms),
        }
    }
}
