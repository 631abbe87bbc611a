//! Ingestion: from an S3 object event to an indexed document with a status.
//!
//! ObjectCreated under `uploads/{tenant}/{document_id}/{file}` or `docs/{file}`: read the
//! object, mark the record `processing`, extract text, chunk it, embed the chunks when an
//! embedding provider is configured, write the index shard, mark the record `ready` with its
//! chunk count. A document that cannot be read is marked `failed` with a reason. ObjectRemoved
//! deletes the shard and the record. Re-delivery of an event for a version already `ready` is
//! skipped, and every write is a whole-object put, so retries are idempotent.
//!
//! Errors returned from [`handle`] are transient (S3, DynamoDB, embedding provider): the
//! caller reports them so the event is retried. Everything else ends in a status.

pub mod chunk;
pub mod extract;
pub mod index;

use aws_sdk_s3::primitives::ByteStream;

use crate::{
    aws::{classify, unavailable},
    documents::{safe_filename, Kind, Scope},
    embeddings::EmbedError,
    error::Error,
    services::Services,
};
use chunk::{chunk_markdown, chunk_text};
use index::Shard;

/// An S3 event notification, as S3 sends it to Lambda or SQS. Only what ingest reads is
/// modelled, and every field may be absent, so notifications from S3-compatible emulators
/// (which leave out identity and request fields) parse too.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct S3Notification {
    #[serde(rename = "Records")]
    pub records: Vec<S3Record>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct S3Record {
    pub event_source: Option<String>,
    pub event_name: Option<String>,
    pub s3: S3Entity,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct S3Entity {
    pub object: S3Object,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct S3Object {
    pub key: Option<String>,
}

/// What an S3 record asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub created: bool,
    /// The object key, decoded (S3 sends keys URL-encoded, spaces as `+`).
    pub key: String,
}

impl ObjectEvent {
    /// From an S3 notification record; `None` when it has no event name or key.
    pub fn from_record(record: &S3Record) -> Option<ObjectEvent> {
        let name = record.event_name.as_deref()?;
        let raw_key = record.s3.object.key.as_deref()?;
        let created = if name.starts_with("ObjectCreated") {
            true
        } else if name.starts_with("ObjectRemoved") {
            false
        } else {
            return None;
        };
        Some(ObjectEvent { created, key: decode_key(raw_key) })
    }
}

/// Decodes an S3 event key: `+` is a space, `%XX` an escaped byte.
pub fn decode_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// What happened to an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Indexed {
        chunks: usize,
    },
    Failed(String),
    Removed,
    /// Nothing to do, and why.
    Skipped(&'static str),
}

struct Target {
    scope: Scope,
    id: String,
    filename: String,
}

/// Which document a key belongs to; `None` for keys ingest does not own.
fn target(key: &str) -> Option<Target> {
    if let Some(rest) = key.strip_prefix("uploads/") {
        let mut parts = rest.splitn(3, '/');
        let (tenant, id, filename) = (parts.next()?, parts.next()?, parts.next()?);
        crate::auth::validate_tenant(tenant).ok()?;
        let id = ulid::Ulid::from_string(id).ok()?.to_string();
        return Some(Target { scope: Scope::Tenant(tenant.to_owned()), id, filename: filename.to_owned() });
    }
    let name = key.strip_prefix("docs/").filter(|n| !n.is_empty() && !n.ends_with('/'))?;
    Some(Target { scope: Scope::Global, id: global_id(key), filename: safe_filename(name) })
}

/// A stable id for a shared doc, from its key (FNV-1a, 64 bits, hex).
fn global_id(key: &str) -> String {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("doc-{hash:016x}")
}

/// Handles one object event.
pub async fn handle(services: &Services, event: &ObjectEvent) -> Result<Outcome, Error> {
    let Some(target) = target(&event.key) else {
        return Ok(Outcome::Skipped("not a document key"));
    };
    let docs = &services.documents;
    if !event.created {
        let shard_key = format!("{}{}", target.scope.index_prefix(), target.id);
        delete_object(services, &shard_key).await?;
        match docs.record(&target.scope, &target.id).await? {
            Some(record) if record.key == event.key || target.scope == Scope::Global => {
                docs.delete_record(&target.scope, &target.id).await?
            }
            _ => {}
        }
        return Ok(Outcome::Removed);
    }

    let kind = match &target.scope {
        Scope::Tenant(_) => match docs.record(&target.scope, &target.id).await? {
            Some(record) if record.key == event.key => Kind::from_content_type(&record.content_type),
            _ => return Ok(Outcome::Skipped("no upload record for this key")),
        },
        Scope::Global => Kind::from_filename(&target.filename),
    };
    let Some(kind) = kind else {
        if target.scope == Scope::Global {
            return Ok(Outcome::Skipped("not a document type Coach reads"));
        }
        docs.mark_failed(&target.scope, &target.id, "unsupported file type").await?;
        return Ok(Outcome::Failed("unsupported file type".into()));
    };

    let object = match services.aws.s3.get_object().bucket(&services.config.bucket).key(&event.key).send().await {
        Ok(object) => object,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
            return Ok(Outcome::Skipped("object no longer exists"))
        }
        Err(e) => return Err(unavailable("read object", classify(&e))),
    };
    let etag = object.e_tag().unwrap_or_default().to_owned();
    let size = u64::try_from(object.content_length().unwrap_or(0)).unwrap_or(0);
    if target.scope == Scope::Global {
        docs.put_global_record(&target.id, &event.key, &target.filename, kind, size).await?;
    }
    if !docs.start_processing(&target.scope, &target.id, &etag).await? {
        return Ok(Outcome::Skipped("this version is already indexed"));
    }
    let max = services.config.uploads.max_bytes;
    if size > max {
        let reason = format!("the file is {size} bytes; the limit is {max}");
        docs.mark_failed(&target.scope, &target.id, &reason).await?;
        return Ok(Outcome::Failed(reason));
    }
    let bytes =
        object.body.collect().await.map_err(|_| Error::Unavailable("object download broke off".into()))?.into_bytes();

    let text = match extract::extract(kind, &bytes) {
        Ok(text) => text,
        Err(reason) => {
            let reason = reason.to_string();
            docs.mark_failed(&target.scope, &target.id, &reason).await?;
            return Ok(Outcome::Failed(reason));
        }
    };
    let chunks = match kind {
        Kind::Markdown => chunk_markdown(&text, services.config.chunks),
        _ => chunk_text(&text, services.config.chunks),
    };
    let (embedding_model, dims, vectors) = if services.embedder.enabled() && !chunks.is_empty() {
        let texts: Vec<String> = chunks
            .iter()
            .map(|c| match &c.heading {
                Some(h) => format!("{h}\n\n{}", c.text),
                None => c.text.clone(),
            })
            .collect();
        match services.embedder.embed(&texts).await {
            Ok(vectors) => {
                let dims = vectors[0].len();
                (Some(services.embedder.model().to_owned()), dims as u32, vectors.into_iter().flatten().collect())
            }
            Err(EmbedError::Refused(reason)) => {
                docs.mark_failed(&target.scope, &target.id, &reason).await?;
                return Ok(Outcome::Failed(reason));
            }
            // Transient: leave the document `processing` and let the event be retried.
            Err(EmbedError::Unavailable(reason)) => return Err(Error::Upstream(reason)),
        }
    } else {
        (None, 0, Vec::new())
    };
    let shard = Shard {
        document_id: target.id.clone(),
        title: target.filename.clone(),
        chunks,
        embedding_model,
        dims,
        vectors,
    };
    let count = shard.chunks.len();
    let shard_key = format!("{}{}", target.scope.index_prefix(), target.id);
    services
        .aws
        .s3
        .put_object()
        .bucket(&services.config.bucket)
        .key(&shard_key)
        .content_type("application/octet-stream")
        .body(ByteStream::from(shard.encode()))
        .send()
        .await
        .map_err(|e| unavailable("write index shard", classify(&e)))?;
    docs.mark_ready(&target.scope, &target.id, count as u64, &etag, size).await?;
    Ok(Outcome::Indexed { chunks: count })
}

async fn delete_object(services: &Services, key: &str) -> Result<(), Error> {
    services
        .aws
        .s3
        .delete_object()
        .bucket(&services.config.bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| unavailable("delete object", classify(&e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_decoded_as_s3_sends_them() {
        assert_eq!(decode_key("uploads/acme/01J/Team+handbook%281%29.pdf"), "uploads/acme/01J/Team handbook(1).pdf");
        assert_eq!(decode_key("docs/caf%C3%A9.md"), "docs/café.md");
    }

    #[test]
    fn targets_are_recognised_and_validated() {
        let t = target("uploads/acme/01JD3QA1B2C3D4E5F6G7H8J9KM/Team handbook.pdf").unwrap();
        assert_eq!(t.scope, Scope::Tenant("acme".into()));
        assert_eq!(t.filename, "Team handbook.pdf");
        assert!(target("uploads/acme/not-a-ulid/x.pdf").is_none());
        assert!(target("uploads/../01JD3QA1B2C3D4E5F6G7H8J9KM/x.pdf").is_none());
        assert!(target("prompt/system_prompt.md").is_none());
        assert!(target("docs/").is_none());
        let g = target("docs/giving-feedback.md").unwrap();
        assert_eq!(g.scope, Scope::Global);
        assert_eq!(g.id, global_id("docs/giving-feedback.md"));
        assert_ne!(g.id, global_id("docs/other.md"));
    }
}
