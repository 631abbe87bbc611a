//! A large document's vectors, computed in steps after it was indexed by its words.
//!
//! A 20 MiB text is some 24,000 chunks: more than one invocation can embed. Such a document
//! (more than `COACH_EMBED_INLINE_CHUNKS` chunks, with a job queue configured) is indexed by
//! its words at once and marked `ready` with `embedded_chunks: 0`; ingest queues an
//! [`EmbedJob`] for it. Each job:
//!
//! 1. checks the record is still `ready` at the job's version (a delete or a new upload
//!    ends the chain, and drops what it stored);
//! 2. reads the document's chunks from the index and embeds from `done` on, for at most
//!    `COACH_EMBED_JOB_SECS`, in steps of [`STEP`] chunks;
//! 3. stores those vectors as a *part* (`index/{scope}/work/{id}/{version}/{from}-{to}`, a
//!    shard of those chunks), records `embedded_chunks`, and queues the next job, which
//!    carries the list of parts so far;
//! 4. the last job reads the parts back, checks they cover the document's chunks exactly,
//!    adds the whole document with its vectors to the index (replacing the words-only
//!    entry, as any re-ingest does, refused if the source object changed), records
//!    `embedded_chunks = chunks` and deletes the parts.
//!
//! A job that fails is retried by the queue (its part is simply written again); jobs are
//! idempotent. Until the last one commits, search finds the document by its words.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{embedding_text, target, Ingestor, Outcome};
use crate::{
    embeddings::EmbedError,
    error::Error,
    ids::{fnv1a, now_ms},
    index::Added,
    model::{Scope, Shard, Status},
    store::StoreError,
};

/// Chunks embedded per call to the model within a job (the time limit is checked between).
pub const STEP: usize = 64;

/// One step of a large document's embedding: a queue message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedJob {
    /// Always `"embed"`: tells a job from an S3 event in the ingest queue.
    pub job: String,
    /// The document's object key.
    pub key: String,
    /// The version (ETag) being embedded.
    pub etag: String,
    /// Chunks embedded so far.
    pub done: usize,
    /// Keys of the parts stored so far, in chunk order.
    pub parts: Vec<String>,
}

impl EmbedJob {
    pub const KIND: &'static str = "embed";

    /// The first job for version `etag` of `key`.
    pub fn first(key: &str, etag: &str) -> Self {
        Self { job: Self::KIND.into(), key: key.into(), etag: etag.into(), done: 0, parts: Vec::new() }
    }

    /// A queue message body that is a job, if it is one.
    pub fn parse(body: &serde_json::Value) -> Option<Self> {
        if body.get("job")?.as_str()? != Self::KIND {
            return None;
        }
        serde_json::from_value(body.clone()).ok()
    }
}

/// Where a part of document `id` (version `etag`) covering chunks `from..to` is stored.
fn part_key(scope: &Scope, id: &str, etag: &str, from: usize, to: usize) -> String {
    let folder = match scope {
        Scope::Tenant(t) => t.as_str(),
        Scope::Global => "_global",
    };
    format!("index/{folder}/work/{id}/{:016x}/{from:08}-{to:08}", fnv1a(etag))
}

impl Ingestor {
    /// Runs one embedding job; see the module's description. Errors are transient.
    pub async fn embed_job(&self, job: &EmbedJob) -> Result<Outcome, Error> {
        let Some(target) = target(&job.key) else {
            return Ok(Outcome::Skipped("not a document key"));
        };
        let (scope, id) = (&target.scope, &target.id);
        let record = self.records.get(scope, id).await?;
        let current = record.as_ref().is_some_and(|r| {
            r.status == Status::Ready
                && r.etag.as_deref() == Some(job.etag.as_str())
                && (r.key == job.key || *scope == Scope::Global)
        });
        let Some(doc) = (if current { self.index.document(scope, id).await? } else { None }) else {
            self.drop_parts(&job.parts).await;
            return Ok(Outcome::Skipped("the document changed or was deleted while it was embedded"));
        };
        let total = doc.chunks.len();
        if doc.embedding_model.is_some() || job.done > total || job.parts.is_empty() != (job.done == 0) {
            self.drop_parts(&job.parts).await;
            return Ok(Outcome::Skipped("nothing left to embed for this document"));
        }

        // This job's share: at least one step, then steps while time is left.
        let started = Instant::now();
        let (from, mut to) = (job.done, job.done);
        let mut vectors: Vec<f32> = Vec::new();
        let mut dims = 0;
        while to < total && (to == from || started.elapsed() < self.job_time) {
            let end = (to + STEP).min(total);
            let texts: Vec<String> = doc.chunks[to..end].iter().map(embedding_text).collect();
            let embedded = match self.embedder.embed(&texts).await {
                Ok(embedded) => embedded,
                Err(EmbedError::Unavailable(reason)) => return Err(Error::upstream(reason)),
                Err(EmbedError::Refused(reason)) => {
                    // The document stays searchable by its words; nothing to retry.
                    tracing::warn!(document_id = %id, reason, "embedding refused; the document keeps words-only search");
                    self.drop_parts(&job.parts).await;
                    return Ok(Outcome::Skipped("the embedding provider refused the document's chunks"));
                }
            };
            dims = embedded.first().map_or(0, Vec::len);
            vectors.extend(embedded.into_iter().flatten());
            to = end;
        }
        let part = Shard {
            document_id: id.clone(),
            title: String::new(),
            chunks: doc.chunks[from..to].to_vec(),
            embedding_model: Some(self.embedder.model().to_owned()),
            dims: dims as u32,
            vectors,
        };
        let key = part_key(scope, id, &job.etag, from, to);
        self.blobs.put(&key, part.encode().into(), "application/octet-stream").await?;
        let mut parts = job.parts.clone();
        parts.push(key);

        if to < total {
            match self.records.embedding_progress(scope, id, &job.etag, to as u64, now_ms()).await {
                Ok(()) => {}
                Err(StoreError::ConditionFailed { .. }) => {
                    self.drop_parts(&parts).await;
                    return Ok(Outcome::Skipped("the document changed or was deleted while it was embedded"));
                }
                Err(e) => return Err(e.into()),
            }
            let next = EmbedJob { done: to, parts, ..job.clone() };
            self.queue_job(&next).await?;
            return Ok(Outcome::Embedding { done: to, total });
        }

        // The last step: the whole document, with its vectors, replaces the words-only entry.
        let Some(vectors) = self.assemble(&doc, &parts).await? else {
            // Parts that do not fit together (another model meanwhile, a damaged object):
            // start over rather than index something wrong.
            tracing::warn!(document_id = %id, "embedding parts do not match the document; starting over");
            self.drop_parts(&parts).await;
            self.records.embedding_progress(scope, id, &job.etag, 0, now_ms()).await.ok();
            self.queue_job(&EmbedJob::first(&job.key, &job.etag)).await?;
            return Ok(Outcome::Embedding { done: 0, total });
        };
        let shard =
            Shard { embedding_model: Some(self.embedder.model().to_owned()), dims: dims as u32, vectors, ..doc };
        let added = self.index.add(scope, shard, &job.key, &job.etag).await?;
        self.drop_parts(&parts).await;
        if added != Added::Indexed {
            return Ok(Outcome::Skipped("the document changed or was deleted while it was embedded"));
        }
        // As after any commit: a record deleted meanwhile must not leave the document searchable.
        match self.records.embedding_progress(scope, id, &job.etag, total as u64, now_ms()).await {
            Ok(()) => Ok(Outcome::Indexed { chunks: total }),
            Err(StoreError::ConditionFailed { .. }) => {
                if self.records.get(scope, id).await?.is_none() {
                    self.index.remove(scope, id).await?;
                }
                Ok(Outcome::Skipped("the document changed or was deleted while it was embedded"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The vectors of every chunk of `doc`, from its parts; `None` when the parts do not
    /// cover its chunks exactly, in order, with vectors of the current model.
    async fn assemble(&self, doc: &Shard, parts: &[String]) -> Result<Option<Vec<f32>>, Error> {
        let model = self.embedder.model();
        let mut vectors = Vec::new();
        let mut at = 0;
        let mut dims = None;
        for key in parts {
            let Some(blob) = self.blobs.get(key).await? else { return Ok(None) };
            let Ok(part) = Shard::decode(&blob.body.bytes().await?) else { return Ok(None) };
            let end = at + part.chunks.len();
            let fits = part.embedding_model.as_deref() == Some(model)
                && *dims.get_or_insert(part.dims) == part.dims
                && doc.chunks.get(at..end) == Some(part.chunks.as_slice());
            if !fits {
                return Ok(None);
            }
            vectors.extend(part.vectors);
            at = end;
        }
        Ok((at == doc.chunks.len()).then_some(vectors))
    }

    /// Deletes stored parts (best effort: a part left behind is never read again).
    async fn drop_parts(&self, parts: &[String]) {
        for key in parts {
            if let Err(e) = self.blobs.delete(key).await {
                tracing::warn!(error = %e, "could not delete an embedding part");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jobs_are_told_from_other_messages() {
        let job = EmbedJob::first("uploads/acme/01JD3QA1B2C3D4E5F6G7H8J9KM/big.txt", "\"e1\"");
        let body = serde_json::to_value(&job).unwrap();
        assert_eq!(EmbedJob::parse(&body), Some(job));
        assert_eq!(EmbedJob::parse(&json!({"Records": []})), None);
        assert_eq!(EmbedJob::parse(&json!({"job": "other", "key": "k"})), None);
        assert_eq!(EmbedJob::parse(&json!({"job": "embed"})), None);
    }

    #[test]
    fn parts_are_kept_apart_by_scope_document_and_version() {
        let tenant = Scope::Tenant("acme".into());
        let a = part_key(&tenant, "D1", "\"v1\"", 0, 64);
        assert!(a.starts_with("index/acme/work/D1/"), "{a}");
        assert!(a.ends_with("/00000000-00000064"), "{a}");
        assert_ne!(a, part_key(&tenant, "D1", "\"v2\"", 0, 64));
        assert!(part_key(&Scope::Global, "D1", "\"v1\"", 0, 64).starts_with("index/_global/work/"));
    }
}
