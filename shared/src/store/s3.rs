//! The S3 bucket: shared docs (`docs/`), the generated prompt (`prompt/`), uploads
//! (`uploads/{tenant}/{document_id}/{file}`) and the index: per scope (`index/{tenant}/`, or
//! `index/_global/` for the shared docs) a `manifest` (replaced by conditional writes),
//! immutable segments `seg/{id}` and damage reports `damaged/{id}` (the layout is
//! [`super::keys`]'s). Each object is written whole.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::{presigning::PresigningConfig, primitives::ByteStream};
use bytes::Bytes;

use super::records::Manifest;
use super::{
    aws::{classify, service_error},
    keys::{damaged_key, manifest_key, segment_key},
    Blob, BlobStore, Body, Failure, IndexStore, Listed, ManifestRead, PresignedPut, Probe, Revalidated, StoreError,
    StoreResult,
};
use crate::model::Scope;

/// One S3 bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct S3Bucket {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Bucket {
    pub fn new(client: aws_sdk_s3::Client, bucket: String) -> Self {
        Self { client, bucket }
    }
}

fn broke_off(action: &'static str, cause: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Service { action, failure: Failure::Failed, cause: Box::new(cause) }
}

impl S3Bucket {
    /// Every version of exactly `key` (the prefix also lists longer keys) and its delete
    /// markers, newest first: (version id, whether a delete marker).
    async fn versions_of(&self, key: &str) -> StoreResult<Vec<(Option<String>, bool)>> {
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        let mut all = Vec::new();
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| service_error("list object versions", e))?;
            let versions = page.versions().iter().map(|v| (v.key(), v.version_id(), false));
            let markers = page.delete_markers().iter().map(|m| (m.key(), m.version_id(), true));
            all.extend(
                versions
                    .chain(markers)
                    .filter(|(k, _, _)| *k == Some(key))
                    .map(|(_, version, marker)| (version.map(str::to_owned), marker)),
            );
            if !page.is_truncated().unwrap_or(false) {
                return Ok(all);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
        }
    }

    /// Deletes these versions of `key`, a thousand (S3's most) at a time.
    async fn delete_versions(&self, key: &str, versions: Vec<Option<String>>) -> StoreResult<()> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        for batch in versions.chunks(1000) {
            let doomed = batch
                .iter()
                .map(|version| ObjectIdentifier::builder().key(key).set_version_id(version.clone()).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::build("delete object versions", e))?;
            let delete = Delete::builder()
                .set_objects(Some(doomed))
                .quiet(true)
                .build()
                .map_err(|e| StoreError::build("delete object versions", e))?;
            let output = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| service_error("delete object versions", e))?;
            if let Some(failed) = output.errors().first() {
                let code = failed.code().unwrap_or("error").to_owned();
                let failure = if code == "AccessDenied" { Failure::AccessDenied } else { Failure::Failed };
                let cause = Box::new(std::io::Error::other(code));
                return Err(StoreError::Service { action: "delete object versions", failure, cause });
            }
        }
        Ok(())
    }
}

#[async_trait]
impl BlobStore for S3Bucket {
    async fn get(&self, key: &str) -> StoreResult<Option<Blob>> {
        let object = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(service_error("read object", e)),
        };
        let etag = object.e_tag().unwrap_or_default().to_owned();
        let size = u64::try_from(object.content_length().unwrap_or(0)).unwrap_or(0);
        let body = object.body;
        let body = Body::new(async move {
            body.collect().await.map(|b| b.into_bytes()).map_err(|e| broke_off("object download", e))
        });
        Ok(Some(Blob { etag, size, body }))
    }

    async fn get_if_changed(&self, key: &str, etag: Option<&str>) -> StoreResult<Revalidated> {
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_if_none_match(etag.map(str::to_owned))
            .send()
            .await;
        match result {
            Ok(object) => {
                let etag = object.e_tag().map(str::to_owned);
                let bytes = object.body.collect().await.map_err(|e| broke_off("object download", e))?.into_bytes();
                Ok(Revalidated::Changed { etag, bytes })
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 304) => Ok(Revalidated::NotModified),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(Revalidated::Missing),
            Err(e) => Err(service_error("read object", e)),
        }
    }

    async fn version(&self, key: &str) -> StoreResult<Option<String>> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(head) => Ok(Some(head.e_tag().unwrap_or_default().to_owned())),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(service_error("read object version", e)),
        }
    }

    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> StoreResult<Option<String>> {
        let output = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| service_error("write object", e))?;
        Ok(output.e_tag().map(str::to_owned))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| service_error("delete object", e))?;
        Ok(())
    }

    async fn delete_all_versions(&self, key: &str) -> StoreResult<()> {
        let all = self.versions_of(key).await?;
        self.delete_versions(key, all.into_iter().map(|(version, _)| version).collect()).await
    }

    async fn keep_first_version(&self, key: &str) -> StoreResult<usize> {
        // An unversioned bucket (the local stack's) keeps one version by itself: a HEAD says
        // so without listing (listing versions is slow on the emulator under load).
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(head) if head.version_id().is_none_or(|v| v == "null") => return Ok(0),
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => return Ok(0),
            Err(e) => return Err(service_error("read object version", e)),
        }
        // Versions of a key are listed newest first: the last one listed is the first written.
        let versions: Vec<Option<String>> =
            self.versions_of(key).await?.into_iter().filter(|(_, marker)| !marker).map(|(v, _)| v).collect();
        let Some((_first, later)) = versions.split_last() else { return Ok(0) };
        self.delete_versions(key, later.to_vec()).await?;
        Ok(later.len())
    }

    async fn list(&self, prefix: &str, page_size: i32) -> StoreResult<Vec<Listed>> {
        let mut listed = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(page_size)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| service_error("list objects", e))?;
            for object in page.contents() {
                if let (Some(key), Some(etag)) = (object.key(), object.e_tag()) {
                    let last_modified_ms = object.last_modified().and_then(|t| t.to_millis().ok()).unwrap_or(0);
                    listed.push(Listed {
                        key: key.to_owned(),
                        etag: etag.to_owned(),
                        last_modified_ms: u64::try_from(last_modified_ms).unwrap_or(0),
                    });
                }
            }
        }
        Ok(listed)
    }

    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        length: u64,
        ttl: Duration,
    ) -> StoreResult<PresignedPut> {
        let presigning = PresigningConfig::expires_in(ttl).map_err(|e| broke_off("presign upload", e))?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(i64::try_from(length).unwrap_or(i64::MAX))
            .presigned(presigning)
            .await
            .map_err(|e| service_error("presign upload", e))?;
        let headers = request
            .headers()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect();
        Ok(PresignedPut { url: request.uri().to_owned(), headers })
    }
}

#[async_trait]
impl IndexStore for S3Bucket {
    async fn manifest(&self, scope: &Scope, etag: Option<&str>) -> StoreResult<ManifestRead> {
        let key = manifest_key(scope);
        match BlobStore::get_if_changed(self, &key, etag).await? {
            Revalidated::NotModified => Ok(ManifestRead::NotModified),
            Revalidated::Missing => Ok(ManifestRead::Missing),
            Revalidated::Changed { etag, bytes } => {
                let manifest = Manifest::decode(&bytes).map_err(|_| StoreError::Corrupt("index manifest"))?;
                Ok(ManifestRead::Changed { etag: etag.unwrap_or_default(), manifest })
            }
        }
    }

    async fn put_manifest(&self, scope: &Scope, manifest: &Manifest, expected: Option<&str>) -> StoreResult<String> {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(manifest_key(scope))
            .content_type("application/octet-stream")
            .body(ByteStream::from(manifest.encode()));
        // S3 conditional writes: replace only the version read, or create only if absent.
        let request = match expected {
            Some(etag) => request.if_match(etag),
            None => request.if_none_match("*"),
        };
        match request.send().await {
            Ok(output) => Ok(output.e_tag().unwrap_or_default().to_owned()),
            Err(e) if e.raw_response().is_some_and(|r| matches!(r.status().as_u16(), 409 | 412)) => {
                Err(StoreError::ConditionFailed { action: "write index manifest" })
            }
            // If-Match on a manifest deleted meanwhile.
            Err(e) if expected.is_some() && e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                Err(StoreError::ConditionFailed { action: "write index manifest" })
            }
            Err(e) => Err(service_error("write index manifest", e)),
        }
    }

    async fn read_segment(&self, scope: &Scope, id: &str) -> StoreResult<Option<Bytes>> {
        let Some(blob) = BlobStore::get(self, &segment_key(scope, id)).await? else { return Ok(None) };
        Ok(Some(blob.body.bytes().await?))
    }

    async fn write_segment(&self, scope: &Scope, id: &str, bytes: Bytes) -> StoreResult<()> {
        BlobStore::put(self, &segment_key(scope, id), bytes, "application/octet-stream").await?;
        Ok(())
    }

    async fn delete_segment(&self, scope: &Scope, id: &str) -> StoreResult<()> {
        // Every version: in the versioned bucket a plain delete keeps the data, hidden.
        BlobStore::delete_all_versions(self, &segment_key(scope, id)).await
    }

    async fn segments(&self, scope: &Scope) -> StoreResult<Vec<(String, u64)>> {
        let prefix = segment_key(scope, "");
        let listed = BlobStore::list(self, &prefix, 1000).await?;
        Ok(listed
            .into_iter()
            .filter_map(|o| Some((o.key.strip_prefix(&prefix)?.to_owned(), o.last_modified_ms)))
            .collect())
    }

    async fn report_damaged(&self, scope: &Scope, id: &str) -> StoreResult<()> {
        BlobStore::put(self, &damaged_key(scope, id), Bytes::new(), "application/octet-stream").await?;
        Ok(())
    }

    async fn damaged(&self, scope: &Scope) -> StoreResult<Vec<String>> {
        let prefix = damaged_key(scope, "");
        let listed = BlobStore::list(self, &prefix, 1000).await?;
        Ok(listed.into_iter().filter_map(|o| Some(o.key.strip_prefix(&prefix)?.to_owned())).collect())
    }

    async fn clear_damaged(&self, scope: &Scope, id: &str) -> StoreResult<()> {
        BlobStore::delete(self, &damaged_key(scope, id)).await
    }
}

#[async_trait]
impl Probe for S3Bucket {
    fn component(&self) -> &'static str {
        "s3"
    }

    async fn check(&self) -> Result<(), Failure> {
        self.client.head_bucket().bucket(&self.bucket).send().await.map(|_| ()).map_err(|e| classify(&e))
    }
}
