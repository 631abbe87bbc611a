//! Document records and uploads: what the upload-url function does, and the status the
//! ingest function writes.
//!
//! A tenant's document is uploaded to `uploads/{tenant}/{document_id}/{safe filename}`
//! through a presigned PUT bound to that key, its content type and its exact size. Its record
//! lives at `pk = TENANT#{tenant}`, `sk = DOC#{document_id}` and moves through `pending` ->
//! `processing` -> `ready` or `failed` (with a reason a person can act on). Shared coaching
//! docs under `docs/` are recorded in the global scope (`pk = GLOBAL`), which every tenant
//! can retrieve from and no tenant can write to.

use std::{collections::HashMap, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::presigning::PresigningConfig;
use serde::{Deserialize, Serialize};

use crate::{
    auth::Principal,
    aws::{classify, n, s, unavailable},
    error::Error,
    history::{now_ms, parse_id, rfc3339},
};

/// The kinds of document Coach can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pdf,
    Text,
    Markdown,
    Html,
}

impl Kind {
    /// From a MIME type (parameters such as `charset` ignored).
    pub fn from_content_type(content_type: &str) -> Option<Kind> {
        match content_type.split(';').next()?.trim().to_ascii_lowercase().as_str() {
            "application/pdf" => Some(Kind::Pdf),
            "text/plain" => Some(Kind::Text),
            "text/markdown" | "text/x-markdown" => Some(Kind::Markdown),
            "text/html" => Some(Kind::Html),
            _ => None,
        }
    }

    /// From a file name's extension.
    pub fn from_filename(name: &str) -> Option<Kind> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "pdf" => Some(Kind::Pdf),
            "txt" | "text" => Some(Kind::Text),
            "md" | "markdown" => Some(Kind::Markdown),
            "html" | "htm" => Some(Kind::Html),
            _ => None,
        }
    }

    /// The canonical MIME type, as signed into upload URLs.
    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Pdf => "application/pdf",
            Kind::Text => "text/plain",
            Kind::Markdown => "text/markdown",
            Kind::Html => "text/html",
        }
    }
}

/// Where a document belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Tenant(String),
    /// Shared coaching docs under `docs/`, visible to every tenant.
    Global,
}

impl Scope {
    fn pk(&self) -> String {
        match self {
            Scope::Tenant(t) => format!("TENANT#{t}"),
            Scope::Global => "GLOBAL".to_owned(),
        }
    }

    /// Folder of this scope's index shards: `index/{tenant}/` or `index/_global/`.
    pub fn index_prefix(&self) -> String {
        match self {
            Scope::Tenant(t) => format!("index/{t}/"),
            Scope::Global => "index/_global/".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Processing,
    Ready,
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Ready => "ready",
            Status::Failed => "failed",
        }
    }
}

/// A document as callers see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Document {
    pub document_id: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: u64,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u64>,
    pub created_at: String,
    pub updated_at: String,
    /// Object key in the bucket (not sent to callers).
    #[serde(skip)]
    pub key: String,
    /// ETag of the version last indexed (not sent to callers).
    #[serde(skip)]
    pub etag: Option<String>,
}

/// Body of `POST /uploads`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    pub filename: String,
    pub content_type: String,
    pub size_bytes: u64,
}

/// Answer to `POST /uploads`.
#[derive(Debug, Clone, Serialize)]
pub struct Upload {
    pub document_id: String,
    pub upload_url: String,
    pub method: &'static str,
    pub headers: HashMap<String, String>,
    pub expires_at: String,
}

/// Upload limits (`COACH_MAX_UPLOAD_BYTES`, `COACH_UPLOAD_URL_TTL_SECS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadConfig {
    pub max_bytes: u64,
    pub url_ttl: Duration,
}

/// Longest file name kept, in characters.
const MAX_FILENAME_CHARS: usize = 120;

/// A file name safe as the last segment of an S3 key and in a header: no path, no control
/// characters, no characters outside letters, digits, space, `.`, `-`, `_`, `(`, `)`.
pub fn safe_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .map(|c| if c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ' | '(' | ')') { c } else { '_' })
        .collect();
    let collapsed = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    let trimmed = collapsed.trim_matches(|c: char| c == '.' || c == ' ' || c == '_');
    let cut: String = trimmed.chars().rev().take(MAX_FILENAME_CHARS).collect::<Vec<_>>().into_iter().rev().collect();
    if cut.is_empty() || cut.starts_with('.') {
        format!("document{cut}")
    } else {
        cut
    }
}

/// Records and uploads for one bucket and table. Build once per cold start.
pub struct Documents {
    s3: aws_sdk_s3::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    bucket: String,
    table: String,
    uploads: UploadConfig,
}

impl Documents {
    pub fn new(
        s3: aws_sdk_s3::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        bucket: String,
        table: String,
        uploads: UploadConfig,
    ) -> Self {
        Self { s3, dynamodb, bucket, table, uploads }
    }

    /// Validates the request, records the document as `pending`, and presigns its upload.
    pub async fn create_upload(&self, who: &Principal, id: &str, req: &UploadRequest) -> Result<Upload, Error> {
        let kind = Kind::from_content_type(&req.content_type).ok_or_else(|| {
            Error::UnsupportedMediaType(format!(
                "content_type {:?} is not accepted; use application/pdf, text/plain, text/markdown or text/html",
                req.content_type.chars().take(100).collect::<String>()
            ))
        })?;
        let filename = safe_filename(&req.filename);
        if Kind::from_filename(&filename).is_some_and(|k| k != kind) {
            return Err(Error::BadRequest("the file extension does not match content_type".into()));
        }
        if req.size_bytes == 0 {
            return Err(Error::BadRequest("size_bytes must be at least 1".into()));
        }
        if req.size_bytes > self.uploads.max_bytes {
            return Err(Error::PayloadTooLarge(format!(
                "size_bytes {} is over the limit of {} bytes",
                req.size_bytes, self.uploads.max_bytes
            )));
        }
        let key = format!("uploads/{}/{id}/{filename}", who.tenant);
        let now = now_ms();
        self.dynamodb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&Scope::Tenant(who.tenant.clone()).pk()))
            .item("sk", s(&format!("DOC#{id}")))
            .item("type", s("document"))
            .item("document_id", s(id))
            .item("filename", s(&filename))
            .item("content_type", s(kind.content_type()))
            .item("size_bytes", n(req.size_bytes))
            .item("key", s(&key))
            .item("status", s(Status::Pending.as_str()))
            .item("uploaded_by", s(&who.user_id))
            .item("created_at", n(now))
            .item("updated_at", n(now))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| unavailable("create document", classify(&e)))?;

        let presigning =
            PresigningConfig::expires_in(self.uploads.url_ttl).map_err(|e| Error::Internal(e.to_string()))?;
        let request = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(kind.content_type())
            .content_length(i64::try_from(req.size_bytes).unwrap_or(i64::MAX))
            .presigned(presigning)
            .await
            .map_err(|e| Error::Internal(format!("presign: {e}")))?;
        let headers = request
            .headers()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect();
        Ok(Upload {
            document_id: id.to_owned(),
            upload_url: request.uri().to_owned(),
            method: "PUT",
            headers,
            expires_at: rfc3339(now + self.uploads.url_ttl.as_millis() as u64),
        })
    }

    /// The caller's tenant's documents, newest first.
    pub async fn list(
        &self,
        who: &Principal,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Document>, Option<String>), Error> {
        let pk = Scope::Tenant(who.tenant.clone()).pk();
        let mut query = self
            .dynamodb
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :doc)")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":doc", s("DOC#"))
            .scan_index_forward(false)
            .limit(limit);
        if let Some(cursor) = cursor {
            let id = parse_id(cursor, "cursor")?;
            query = query.exclusive_start_key("pk", s(&pk)).exclusive_start_key("sk", s(&format!("DOC#{id}")));
        }
        let output = query.send().await.map_err(|e| unavailable("list documents", classify(&e)))?;
        let documents = output.items().iter().map(document_from).collect::<Result<Vec<_>, _>>()?;
        let next = output
            .last_evaluated_key()
            .and_then(|k| k.get("sk")?.as_s().ok())
            .map(|sk| sk.trim_start_matches("DOC#").to_owned());
        Ok((documents, next))
    }

    /// One document of the caller's tenant, or 404.
    pub async fn get(&self, who: &Principal, id: &str) -> Result<Document, Error> {
        let id = parse_id(id, "document")?;
        self.record(&Scope::Tenant(who.tenant.clone()), &id.to_string())
            .await?
            .ok_or_else(|| Error::NotFound("no such document".into()))
    }

    /// Deletes a document of the caller's tenant: the object, its index shard, then the
    /// record (so a half-done delete can be repeated).
    pub async fn delete(&self, who: &Principal, id: &str) -> Result<(), Error> {
        let doc = self.get(who, id).await?;
        let scope = Scope::Tenant(who.tenant.clone());
        for key in [doc.key.clone(), format!("{}{}", scope.index_prefix(), doc.document_id)] {
            self.s3
                .delete_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| unavailable("delete object", classify(&e)))?;
        }
        self.delete_record(&scope, &doc.document_id).await
    }

    /// A record by scope and id, consistently read.
    pub async fn record(&self, scope: &Scope, id: &str) -> Result<Option<Document>, Error> {
        let output = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&scope.pk()))
            .key("sk", s(&format!("DOC#{id}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("read document", classify(&e)))?;
        output.item.as_ref().map(document_from).transpose()
    }

    /// Creates or replaces the record of a shared doc (global scope), as `pending`.
    pub async fn put_global_record(
        &self,
        id: &str,
        key: &str,
        filename: &str,
        kind: Kind,
        size: u64,
    ) -> Result<(), Error> {
        let now = now_ms();
        self.dynamodb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&Scope::Global.pk()))
            .key("sk", s(&format!("DOC#{id}")))
            .update_expression(
                "SET #type = :type, document_id = :id, filename = :filename, content_type = :ct, size_bytes = :size, \
                 #key = :key, created_at = if_not_exists(created_at, :now), updated_at = :now, #status = if_not_exists(#status, :pending)",
            )
            .expression_attribute_names("#type", "type")
            .expression_attribute_names("#key", "key")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":type", s("document"))
            .expression_attribute_values(":id", s(id))
            .expression_attribute_values(":filename", s(filename))
            .expression_attribute_values(":ct", s(kind.content_type()))
            .expression_attribute_values(":size", n(size))
            .expression_attribute_values(":key", s(key))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":pending", s(Status::Pending.as_str()))
            .send()
            .await
            .map_err(|e| unavailable("record shared doc", classify(&e)))?;
        Ok(())
    }

    /// Marks a document `processing` unless this exact version (`etag`) is already `ready`.
    /// `Ok(false)`: nothing to do (already indexed, or no record).
    pub async fn start_processing(&self, scope: &Scope, id: &str, etag: &str) -> Result<bool, Error> {
        let result = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&scope.pk()))
            .key("sk", s(&format!("DOC#{id}")))
            .update_expression("SET #status = :processing, updated_at = :now REMOVE #error")
            .condition_expression("attribute_exists(pk) AND NOT (#status = :ready AND etag = :etag)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":processing", s(Status::Processing.as_str()))
            .expression_attribute_values(":ready", s(Status::Ready.as_str()))
            .expression_attribute_values(":etag", s(etag))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(unavailable("mark processing", classify(&e))),
        }
    }

    /// Marks a document `ready` with its chunk count and indexed version.
    pub async fn mark_ready(&self, scope: &Scope, id: &str, chunks: u64, etag: &str, size: u64) -> Result<(), Error> {
        self.finish(scope, id, Status::Ready, |u| {
            u.update_expression("SET #status = :status, chunks = :chunks, etag = :etag, size_bytes = :size, updated_at = :now REMOVE #error")
                .expression_attribute_values(":chunks", n(chunks))
                .expression_attribute_values(":etag", s(etag))
                .expression_attribute_values(":size", n(size))
                .expression_attribute_names("#error", "error")
        })
        .await
    }

    /// Marks a document `failed` with a reason a person can act on.
    pub async fn mark_failed(&self, scope: &Scope, id: &str, reason: &str) -> Result<(), Error> {
        self.finish(scope, id, Status::Failed, |u| {
            u.update_expression("SET #status = :status, #error = :error, updated_at = :now REMOVE chunks, etag")
                .expression_attribute_names("#error", "error")
                .expression_attribute_values(":error", s(reason))
        })
        .await
    }

    async fn finish(
        &self,
        scope: &Scope,
        id: &str,
        status: Status,
        shape: impl FnOnce(
            aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
        ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    ) -> Result<(), Error> {
        let update = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&scope.pk()))
            .key("sk", s(&format!("DOC#{id}")))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":now", n(now_ms()));
        match shape(update).send().await {
            Ok(_) => Ok(()),
            // Deleted meanwhile: nothing to record.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(unavailable("update document status", classify(&e))),
        }
    }

    /// Deletes a record (no error when it is already gone).
    pub async fn delete_record(&self, scope: &Scope, id: &str) -> Result<(), Error> {
        self.dynamodb
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&scope.pk()))
            .key("sk", s(&format!("DOC#{id}")))
            .send()
            .await
            .map_err(|e| unavailable("delete document record", classify(&e)))?;
        Ok(())
    }
}

fn document_from(item: &HashMap<String, AttributeValue>) -> Result<Document, Error> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let number = |name: &str| item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
    let corrupt = || Error::Internal("stored document item is missing attributes".into());
    let status = match text("status").as_deref() {
        Some("pending") => Status::Pending,
        Some("processing") => Status::Processing,
        Some("ready") => Status::Ready,
        Some("failed") => Status::Failed,
        _ => return Err(corrupt()),
    };
    Ok(Document {
        document_id: text("document_id").ok_or_else(corrupt)?,
        filename: text("filename").unwrap_or_default(),
        content_type: text("content_type").unwrap_or_default(),
        size_bytes: number("size_bytes").unwrap_or(0),
        status,
        error: text("error"),
        chunks: number("chunks"),
        created_at: rfc3339(number("created_at").unwrap_or(0)),
        updated_at: rfc3339(number("updated_at").unwrap_or(0)),
        key: text("key").unwrap_or_default(),
        etag: text("etag"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_lose_paths_and_control_characters() {
        assert_eq!(safe_filename("../../etc/passwd"), "passwd");
        assert_eq!(safe_filename("C:\\Users\\me\\Team handbook.pdf"), "Team handbook.pdf");
        assert_eq!(safe_filename("evil\u{0}\n\r.md"), "evil___.md");
        assert_eq!(safe_filename("a/.."), "document");
        assert_eq!(safe_filename(".hidden.md"), "hidden.md");
        assert_eq!(safe_filename("   "), "document");
        assert_eq!(safe_filename("x%2F..%2F.md"), "x_2F.._2F.md");
        let long = format!("{}.md", "a".repeat(500));
        assert_eq!(safe_filename(&long).chars().count(), MAX_FILENAME_CHARS);
        assert!(safe_filename(&long).ends_with(".md"));
    }

    #[test]
    fn kinds_from_types_and_names() {
        assert_eq!(Kind::from_content_type("text/markdown; charset=utf-8"), Some(Kind::Markdown));
        assert_eq!(Kind::from_content_type("application/zip"), None);
        assert_eq!(Kind::from_filename("Guide.HTM"), Some(Kind::Html));
        assert_eq!(Kind::from_filename("noext"), None);
    }
}
