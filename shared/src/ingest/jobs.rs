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
//! A [`ReembedJob`] (`POST /documents/reembed`) queues a first step for each `ready` document
//! of a tenant: documents indexed before embeddings were on, or by another model, gain the
//! current model's vectors; documents indexed before chunks recorded where they are (their
//! character range and pages) are read again and their chunks found in the text
//! ([`Ingestor::relocate`]); the others are skipped by their job.
//!
//! A job that fails is retried by the queue (its part is simply written again); jobs are
//! idempotent. Until the last one commits, search finds the document by its words.

use std::time::Instant;

use super::{embedding_text, keyed, Ingestor, ObjectEvent, Outcome};
use crate::{
    deadline::Deadline,
    error::Error,
    ids::now_ms,
    model::{EmbedJob, Job, Kind, ReembedJob, Scope, Shard, Status},
    store::keys::embedding_part_key as part_key,
    store::{Added, StoreError},
};

/// Why a job stops: a delete or a newer version of its document.
const SUPERSEDED: &str = "the document changed or was deleted while it was embedded";

/// Documents listed per re-embedding job (each gets an embedding job of its own).
const REEMBED_PAGE: i32 = 100;

/// Chunks embedded per call to the model within a job (the time limit is checked between).
pub const STEP: usize = 64;

impl Ingestor {
    /// Runs one job, in an invocation that ends at `deadline`; see the module's description.
    /// Errors are transient.
    pub async fn job(&self, job: &Job, deadline: Deadline) -> Result<Outcome, Error> {
        match job {
            Job::Embed(job) => self.embed_job(job, deadline).await,
            Job::Reembed(job) => self.reembed(job).await,
            Job::Object(job) => self.handle(&ObjectEvent { created: true, key: job.key.clone() }, deadline).await,
            // The titler's (the ingest function hands it there).
            Job::Title(_) => Ok(Outcome::Skipped("a title job is not an ingest job")),
            Job::Purge(job) => {
                let scope = match &job.tenant {
                    Some(tenant) if crate::auth::validate_tenant(tenant).is_ok() => Scope::Tenant(tenant.clone()),
                    Some(_) => return Ok(Outcome::Skipped("not a tenant")),
                    None => Scope::Global,
                };
                self.purge(&scope).await?;
                Ok(Outcome::Purged)
            }
        }
    }

    /// A document indexed before chunks recorded their spans: its object read again, its
    /// chunks found in the text ([`super::chunk::relocate`]) and the document indexed again
    /// with them, its chunks and vectors as they were. Then, if it lacks the current model's
    /// vectors, the embedding job that follows gives it them.
    async fn relocate(
        &self,
        scope: &Scope,
        key: &str,
        etag: &str,
        kind: Kind,
        mut doc: Shard,
        deadline: Deadline,
    ) -> Result<Outcome, Error> {
        let budget = self.extraction_budget(deadline)?;
        let Some(object) = self.blobs.get(key).await? else { return Ok(Outcome::Skipped(SUPERSEDED)) };
        if object.etag != etag {
            return Ok(Outcome::Skipped(SUPERSEDED));
        }
        let bytes = object.body.bytes().await?;
        let Ok(text) = self.extract(kind, &bytes, budget).await? else {
            return Ok(Outcome::Skipped("the document can no longer be read"));
        };
        let located = super::chunk::relocate(kind, &text, &mut doc.chunks);
        let embedded = doc.embedding_model.as_deref() == Some(self.embedder.model());
        match self.index.add(scope, doc, key, etag).await? {
            Added::Indexed => {}
            Added::Superseded | Added::Gone => return Ok(Outcome::Skipped(SUPERSEDED)),
        }
        tracing::info!(located, "chunks of a document indexed before spans were found again");
        if !embedded && self.embedder.enabled() {
            self.queue_job(&Job::Embed(EmbedJob::first(key, etag))).await?;
        }
        Ok(Outcome::Located { chunks: located })
    }

    /// Queues an embedding job for each `ready` document of a page of the tenant's, then a
    /// job for the next page. A document whose vectors are already the current model's is
    /// skipped by its job; others are embedded in steps like a large document.
    async fn reembed(&self, job: &ReembedJob) -> Result<Outcome, Error> {
        if crate::auth::validate_tenant(&job.tenant).is_err() {
            return Ok(Outcome::Skipped("not a tenant"));
        }
        // Without an embedding provider the jobs still find the spans of older documents.
        let scope = Scope::Tenant(job.tenant.clone());
        let page = self.records.list(&scope, REEMBED_PAGE, job.cursor.as_deref()).await?;
        let mut queued = 0;
        for doc in &page.items {
            if let (Status::Ready, Some(etag)) = (doc.status, &doc.etag) {
                self.queue_job(&Job::Embed(EmbedJob::first(&doc.key, etag))).await?;
                queued += 1;
            }
        }
        if let Some(cursor) = page.next_cursor {
            self.queue_job(&Job::Reembed(ReembedJob { tenant: job.tenant.clone(), cursor: Some(cursor) })).await?;
        }
        Ok(Outcome::Queued(queued))
    }

    /// Runs one embedding job; see the module's description.
    async fn embed_job(&self, job: &EmbedJob, deadline: Deadline) -> Result<Outcome, Error> {
        let Some(target) = keyed(&job.key) else {
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
            return Ok(Outcome::Skipped(SUPERSEDED));
        };
        // Indexed before chunks recorded where they are: found again in the document's text.
        if job.done == 0 && doc.chunks.iter().any(|c| c.span.is_none()) {
            let kind = match (scope, &record) {
                (Scope::Tenant(_), Some(record)) => Kind::from_content_type(&record.content_type),
                _ => Kind::from_filename(&target.filename),
            };
            if let Some(kind) = kind {
                return self.relocate(scope, &job.key, &job.etag, kind, doc, deadline).await;
            }
        }
        let total = doc.chunks.len();
        // Vectors of the current model already (a repeated job), or a job that makes no sense.
        let embedded = doc.embedding_model.as_deref() == Some(self.embedder.model());
        let senseless = total == 0 || job.done >= total || job.parts.is_empty() != (job.done == 0);
        if embedded || !self.embedder.enabled() || senseless {
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
                Err(e) if !e.is_permanent() => return Err(e.into()),
                Err(e) => {
                    // The document stays searchable by its words; nothing to retry.
                    tracing::warn!(document_id = %id, reason = %e, "embedding refused; the document keeps words-only search");
                    self.drop_parts(&job.parts).await;
                    return Ok(Outcome::Skipped("the embedding provider refused the document's chunks"));
                }
            };
            self.meter(scope, embedded.used.as_ref()).await;
            dims = embedded.vectors.first().map_or(0, Vec::len);
            vectors.extend(embedded.vectors.into_iter().flatten());
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
                    return Ok(Outcome::Skipped(SUPERSEDED));
                }
                Err(e) => return Err(e.into()),
            }
            let next = EmbedJob { done: to, parts, ..job.clone() };
            self.queue_job(&Job::Embed(next)).await?;
            return Ok(Outcome::Embedding { done: to, total });
        }

        // The last step: the whole document, with its vectors, replaces the words-only entry.
        let Some(vectors) = self.assemble(&doc, &parts).await? else {
            // Parts that do not fit together (another model meanwhile, a damaged object):
            // start over rather than index something wrong.
            tracing::warn!(document_id = %id, "embedding parts do not match the document; starting over");
            self.drop_parts(&parts).await;
            self.records.embedding_progress(scope, id, &job.etag, 0, now_ms()).await.ok();
            self.queue_job(&Job::Embed(EmbedJob::first(&job.key, &job.etag))).await?;
            return Ok(Outcome::Embedding { done: 0, total });
        };
        let shard =
            Shard { embedding_model: Some(self.embedder.model().to_owned()), dims: dims as u32, vectors, ..doc };
        let added = self.index.add(scope, shard, &job.key, &job.etag).await?;
        self.drop_parts(&parts).await;
        if added != Added::Indexed {
            return Ok(Outcome::Skipped(SUPERSEDED));
        }
        // As after any commit: a record deleted meanwhile must not leave the document searchable.
        match self.records.embedding_progress(scope, id, &job.etag, total as u64, now_ms()).await {
            Ok(()) => Ok(Outcome::Indexed { chunks: total }),
            Err(StoreError::ConditionFailed { .. }) => {
                if self.records.get(scope, id).await?.is_none() {
                    self.index.remove(scope, id).await?;
                }
                Ok(Outcome::Skipped(SUPERSEDED))
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
    fn jobs_are_told_apart_by_their_tag() {
        let job = Job::Embed(EmbedJob::first("uploads/acme/01JD3QA1B2C3D4E5F6G7H8J9KM/big.txt", "\"e1\""));
        let body = serde_json::to_value(&job).unwrap();
        assert_eq!(body["job"], "embed");
        assert_eq!(serde_json::from_value::<Job>(body).ok(), Some(job));
        let reembed: Job = serde_json::from_value(json!({"job": "reembed", "tenant": "acme"})).unwrap();
        assert_eq!(reembed, Job::Reembed(ReembedJob { tenant: "acme".into(), cursor: None }));
        assert!(serde_json::from_value::<Job>(json!({"job": "other", "key": "k"})).is_err());
        assert!(serde_json::from_value::<Job>(json!({"job": "embed"})).is_err());
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
