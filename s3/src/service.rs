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
