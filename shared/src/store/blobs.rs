//! Objects: the bucket's documents, uploads and prompt, as the domain asks for them
//! ([`BlobStore`], implemented by [`super::S3Bucket`]).

use std::{future::Future, pin::Pin};

use async_trait::async_trait;
use bytes::Bytes;

use super::StoreResult;

/// An object's body, read when asked for (so a caller can look at the size first).
pub struct Body(Pin<Box<dyn Future<Output = StoreResult<Bytes>> + Send>>);

impl Body {
    pub fn new(read: impl Future<Output = StoreResult<Bytes>> + Send + 'static) -> Self {
        Self(Box::pin(read))
    }

    pub async fn bytes(self) -> StoreResult<Bytes> {
        self.0.await
    }
}

/// An object as read: its version, its size and its body, not yet downloaded.
pub struct Blob {
    pub etag: String,
    pub size: u64,
    pub body: Body,
}

/// An object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub etag: String,
    pub last_modified_ms: u64,
}

/// The answer to a conditional read.
pub enum Revalidated {
    Changed { etag: Option<String>, bytes: Bytes },
    NotModified,
    Missing,
}

/// A presigned upload: the URL and the headers the uploader must send.
#[derive(Debug, Clone)]
pub struct PresignedPut {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// Objects in one bucket.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// The object, or `None` when there is no such key.
    async fn get(&self, key: &str) -> StoreResult<Option<Blob>>;
    /// The object unless its ETag is still `etag`.
    async fn get_if_changed(&self, key: &str, etag: Option<&str>) -> StoreResult<Revalidated>;
    /// Writes the object whole; returns its new ETag.
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> StoreResult<Option<String>>;
    /// Deletes the object (no error when it is already gone).
    async fn delete(&self, key: &str) -> StoreResult<()>;
    /// Deletes every version of the object and its delete markers (in a versioned bucket a
    /// plain delete only hides it), so nothing of it is left to restore.
    async fn delete_all_versions(&self, key: &str) -> StoreResult<()>;
    /// Removes every version of `key` but the first (the oldest stored), so the object is
    /// what was first written under it; the number removed.
    async fn keep_first_version(&self, key: &str) -> StoreResult<usize>;
    /// The object's version (ETag) without reading it, or `None` when there is no such key.
    async fn version(&self, key: &str) -> StoreResult<Option<String>>;
    /// Every object under `prefix`, `page_size` at a time (S3's maximum is 1000).
    async fn list(&self, prefix: &str, page_size: i32) -> StoreResult<Vec<Listed>>;
    /// A URL that lets its holder PUT exactly this object (key, type, length) for `ttl`.
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        length: u64,
        ttl: std::time::Duration,
    ) -> StoreResult<PresignedPut>;
}
