//! The S3 bucket: shared docs (`docs/`), the generated prompt (`prompt/`), uploads
//! (`uploads/{tenant}/{document_id}/{file}`) and the index (`index/{tenant}/{document_id}`,
//! `index/_global/{id}` for the shared docs), each object written whole.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::{presigning::PresigningConfig, primitives::ByteStream};
use bytes::Bytes;

use super::{
    aws::{classify, service_error},
    Blob, BlobStore, Body, Failure, IndexStore, Listed, PresignedPut, Probe, Revalidated, ShardRef, StoreError,
    StoreResult,
};
use crate::model::{Scope, Shard};

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

/// Folder of a scope's index shards: `index/{tenant}/` or `index/_global/`.
fn index_prefix(scope: &Scope) -> String {
    match scope {
        Scope::Tenant(t) => format!("index/{t}/"),
        Scope::Global => "index/_global/".to_owned(),
    }
}

fn broke_off(action: &'static str, cause: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Service { action, failure: Failure::Failed, cause: Box::new(cause) }
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
    async fn list(&self, scope: &Scope) -> StoreResult<Vec<ShardRef>> {
        let listed = BlobStore::list(self, &index_prefix(scope), 1000).await?;
        Ok(listed.into_iter().map(|o| ShardRef { key: o.key, etag: o.etag }).collect())
    }

    async fn read(&self, shard: &ShardRef) -> StoreResult<Option<(String, Bytes)>> {
        let Some(blob) = BlobStore::get(self, &shard.key).await? else { return Ok(None) };
        let etag = if blob.etag.is_empty() { shard.etag.clone() } else { blob.etag };
        Ok(Some((etag, blob.body.bytes().await?)))
    }

    async fn write(&self, scope: &Scope, shard: &Shard) -> StoreResult<()> {
        let key = format!("{}{}", index_prefix(scope), shard.document_id);
        BlobStore::put(self, &key, Bytes::from(shard.encode()), "application/octet-stream").await?;
        Ok(())
    }

    async fn delete(&self, scope: &Scope, document_id: &str) -> StoreResult<()> {
        BlobStore::delete(self, &format!("{}{document_id}", index_prefix(scope))).await
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
