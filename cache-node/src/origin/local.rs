//! A local-directory origin that keeps what a client stored with an object (Content-Type
//! and the other attributes, `x-amz-meta-*`) in a sidecar file next to it, since a file
//! system has nowhere else to put them. Wraps object_store's `LocalFileSystem`; everything
//! about bytes, paths and listing is its, this adds only the sidecars.
//!
//! The sidecar of `dir/name` is `dir/.name.lcattrs`: a small JSON document naming the
//! ETag of the object version it describes, written (atomically, by rename) right after
//! the object and deleted before it. A sidecar whose ETag is not the object's current one
//! (a crash between the two writes, a file changed behind the node's back) is ignored, so
//! attributes can never be attached to the wrong version. Sidecars are never listed and no
//! key can name one.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};
use serde::{Deserialize, Serialize};

use crate::cache::meta::ObjectAttrs;

const SIDECAR_SUFFIX: &str = ".lcattrs";

#[derive(Serialize, Deserialize)]
struct Sidecar {
    /// ETag of the object version these attributes belong to.
    etag: String,
    attrs: ObjectAttrs,
}

/// Whether `p` names a sidecar, or a key no file can stand for (escaped by
/// `origin::object_path`: `dir/`, `a//b`): keys a client may not use with this origin.
pub fn is_sidecar(p: &Path) -> bool {
    crate::origin::is_escaped(p)
        || p.filename().is_some_and(|f| f.starts_with('.') && f.ends_with(SIDECAR_SUFFIX) && f.len() > 1)
}

fn sidecar_of(p: &Path) -> Option<Path> {
    let name = p.filename()?;
    let side = format!(".{name}{SIDECAR_SUFFIX}");
    Some(match p.parent() {
        Some(parent) if !parent.is_root() => parent.clone().join(side.as_str()),
        _ => Path::from_iter([side.as_str()]),
    })
}

fn reserved(p: &Path) -> object_store::Error {
    object_store::Error::InvalidPath {
        source: object_store::path::Error::InvalidPath {
            path: format!("{p} (names ending in {SIDECAR_SUFFIX} and starting with a dot are reserved)")
                .into(),
        },
    }
}

fn not_found(p: &Path) -> object_store::Error {
    object_store::Error::NotFound {
        path: p.to_string(),
        source: format!("{p} is a sidecar, not an object").into(),
    }
}

#[derive(Debug)]
pub struct LocalStore {
    inner: Arc<LocalFileSystem>,
}

impl LocalStore {
    pub fn new(inner: LocalFileSystem) -> Self {
        Self { inner: Arc::new(inner) }
    }
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalStore({})", self.inner)
    }
}

/// Writes the sidecar of `p` for the version `etag` (or removes it when there is nothing
/// to keep).
async fn write_sidecar(
    inner: &LocalFileSystem,
    p: &Path,
    etag: Option<&str>,
    attrs: ObjectAttrs,
) -> Result<()> {
    let Some(side) = sidecar_of(p) else { return Ok(()) };
    match etag {
        Some(etag) if !attrs.is_empty() => {
            let doc = Sidecar { etag: etag.to_string(), attrs };
            let text = serde_json::to_vec(&doc)
                .map_err(|e| object_store::Error::Generic { store: "LocalStore", source: Box::new(e) })?;
            inner.put(&side, text.into()).await.map(|_| ())
        }
        _ => match inner.delete(&side).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        },
    }
}

/// The attributes of `p` if its sidecar describes the version `etag`.
async fn read_sidecar(inner: &LocalFileSystem, p: &Path, etag: Option<&str>) -> Result<Attributes> {
    let (Some(side), Some(etag)) = (sidecar_of(p), etag) else { return Ok(Attributes::new()) };
    let bytes = match inner.get(&side).await {
        Ok(r) => r.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(Attributes::new()),
        Err(e) => return Err(e),
    };
    match serde_json::from_slice::<Sidecar>(&bytes) {
        Ok(doc) if doc.etag == etag => Ok(doc.attrs.to_store()),
        Ok(_) => Ok(Attributes::new()),
        Err(e) => {
            tracing::warn!(path = %side, error = %e, "unreadable attribute sidecar ignored");
            Ok(Attributes::new())
        }
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> Result<PutResult> {
        if is_sidecar(location) {
            return Err(reserved(location));
        }
        let attrs = ObjectAttrs::from_store(&opts.attributes);
        opts.attributes = Attributes::new();
        let r = self.inner.put_opts(location, payload, opts).await?;
        write_sidecar(&self.inner, location, r.e_tag.as_deref(), attrs).await?;
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        mut opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        if is_sidecar(location) {
            return Err(reserved(location));
        }
        let attrs = ObjectAttrs::from_store(&opts.attributes);
        opts.attributes = Attributes::new();
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(LocalUpload { upload, inner: self.inner.clone(), location: location.clone(), attrs }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if is_sidecar(location) {
            return Err(not_found(location));
        }
        // Ranged reads are page fetches, which want bytes only: they skip the sidecar, unless
        // one stands in for a HEAD (a first read).
        let want_attrs = options.head
            || options.range.is_none()
            || options.extensions.get::<crate::origin::WantAttributes>().is_some();
        let mut r = self.inner.get_opts(location, options).await?;
        if want_attrs {
            r.attributes = read_sidecar(&self.inner, location, r.meta.e_tag.as_deref()).await?;
        }
        Ok(r)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let inner = self.inner.clone();
        locations
            .then(move |p| {
                let inner = inner.clone();
                async move {
                    let p = p?;
                    if is_sidecar(&p) {
                        return Err(not_found(&p));
                    }
                    // The sidecar goes first: an object is never left with another's attributes,
                    // and the directory is empty (and cleaned up) once the object goes.
                    if let Some(side) = sidecar_of(&p) {
                        match inner.delete(&side).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    inner.delete(&p).await.map(|()| p)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        if prefix.is_some_and(crate::origin::is_escaped) {
            return futures::stream::empty().boxed();
        }
        self.inner.list(prefix).try_filter(|m| futures::future::ready(!is_sidecar(&m.location))).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        if prefix.is_some_and(crate::origin::is_escaped) {
            return Ok(ListResult {
                common_prefixes: Vec::new(),
                objects: Vec::new(),
                extensions: Default::default(),
            });
        }
        let mut r = self.inner.list_with_delimiter(prefix).await?;
        r.objects.retain(|m| !is_sidecar(&m.location));
        Ok(r)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        if is_sidecar(from) {
            return Err(not_found(from));
        }
        if is_sidecar(to) {
            return Err(reserved(to));
        }
        let src = self.inner.head(from).await?;
        let attrs = ObjectAttrs::from_store(&read_sidecar(&self.inner, from, src.e_tag.as_deref()).await?);
        self.inner.copy_opts(from, to, options).await?;
        let dst = self.inner.head(to).await?;
        write_sidecar(&self.inner, to, dst.e_tag.as_deref(), attrs).await
    }
}

/// A streamed upload whose sidecar is written once the object is in place.
#[derive(Debug)]
struct LocalUpload {
    upload: Box<dyn MultipartUpload>,
    inner: Arc<LocalFileSystem>,
    location: Path,
    attrs: ObjectAttrs,
}

#[async_trait]
impl MultipartUpload for LocalUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.upload.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let r = self.upload.complete().await?;
        write_sidecar(&self.inner, &self.location, r.e_tag.as_deref(), std::mem::take(&mut self.attrs))
            .await?;
        Ok(r)
    }

    async fn abort(&mut self) -> Result<()> {
        self.upload.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_names_are_reserved_and_sit_next_to_the_object() {
        let p = Path::parse("a/b/obj.bin").unwrap();
        let s = sidecar_of(&p).unwrap();
        assert_eq!(s.as_ref(), "a/b/.obj.bin.lcattrs");
        assert!(is_sidecar(&s));
        assert!(!is_sidecar(&p));
        assert_eq!(sidecar_of(&Path::parse("top").unwrap()).unwrap().as_ref(), ".top.lcattrs");
        assert!(!is_sidecar(&Path::parse("a/x.lcattrs").unwrap()));
    }
}
