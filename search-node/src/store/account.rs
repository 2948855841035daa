//! One answer's own I/O: the object store a query's dataset reads through is wrapped
//! (`Dataset::with_object_store_wrappers`, per query) so that every request lance makes for
//! it — from whatever task lance runs it on — is counted in the query's
//! [`IoAccount`](lakecache_fleet::account::IoAccount) and runs inside its scope, where the
//! layers below (the page cache, the fleet client) find it.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use lakecache_fleet::account::{self, IoAccount};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// The wrapper lance applies to a query's dataset.
#[derive(Debug)]
pub struct Accounted(pub Arc<IoAccount>);

impl lance_io::object_store::WrappingObjectStore for Accounted {
    fn wrap(&self, _prefix: &str, original: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        Arc::new(AccountedStore { inner: original, account: self.0.clone() })
    }

    /// No pushed-down listings: every listing goes through the wrapped store, so it is
    /// counted and runs in the query's scope (the fleet's stores have no paginated lister
    /// to lose anyway).
    fn wrap_paginated(
        &self,
        _prefix: &str,
        _lister: Arc<dyn object_store::list::PaginatedListStore>,
    ) -> Option<Arc<dyn object_store::list::PaginatedListStore>> {
        None
    }
}

struct AccountedStore {
    inner: Arc<dyn ObjectStore>,
    account: Arc<IoAccount>,
}

/// One request outstanding on the account's clock, until dropped.
struct Outstanding(Arc<IoAccount>);

impl Outstanding {
    fn start(a: &Arc<IoAccount>) -> Self {
        a.requests.fetch_add(1, Relaxed);
        a.io_started();
        Self(a.clone())
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.io_ended();
    }
}

/// A body read inside the account's scope, counted, with its request outstanding until
/// it ends or is dropped.
struct Body {
    inner: BoxStream<'static, Result<bytes::Bytes>>,
    account: Arc<IoAccount>,
    outstanding: Option<Outstanding>,
}

impl Stream for Body {
    type Item = Result<bytes::Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let polled = account::sync_scope(&this.account, || this.inner.poll_next_unpin(cx));
        match &polled {
            Poll::Ready(Some(Ok(b))) => {
                this.account.bytes.fetch_add(b.len() as u64, Relaxed);
            }
            Poll::Ready(None | Some(Err(_))) => this.outstanding = None,
            Poll::Pending => {}
        }
        polled
    }
}

impl AccountedStore {
    async fn run<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        let _o = Outstanding::start(&self.account);
        account::scope(self.account.clone(), f).await
    }
}

impl fmt::Debug for AccountedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Display for AccountedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for AccountedStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.run(self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.run(self.inner.put_multipart_opts(location, opts)).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let outstanding = Outstanding::start(&self.account);
        let mut r = account::scope(self.account.clone(), self.inner.get_opts(location, options)).await?;
        r.payload = match r.payload {
            GetResultPayload::Stream(s) => GetResultPayload::Stream(
                Body { inner: s, account: self.account.clone(), outstanding: Some(outstanding) }.boxed(),
            ),
            other => other,
        };
        Ok(r)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let inner = account::sync_scope(&self.account, || self.inner.delete_stream(locations));
        Scoped { inner, account: self.account.clone() }.boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.account.requests.fetch_add(1, Relaxed);
        let inner = account::sync_scope(&self.account, || self.inner.list(prefix));
        Scoped { inner, account: self.account.clone() }.boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.account.requests.fetch_add(1, Relaxed);
        let inner = account::sync_scope(&self.account, || self.inner.list_with_offset(prefix, offset));
        Scoped { inner, account: self.account.clone() }.boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.run(self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.run(self.inner.copy_opts(from, to, options)).await
    }
}

/// A stream polled inside the account's scope.
struct Scoped<T> {
    inner: BoxStream<'static, T>,
    account: Arc<IoAccount>,
}

impl<T> Stream for Scoped<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        account::sync_scope(&this.account, || this.inner.poll_next_unpin(cx))
    }
}
