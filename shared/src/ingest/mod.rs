//! Ingestion: from an S3 object event to an indexed document with a status.
//!
//! ObjectCreated under `uploads/{tenant}/{document_id}/{file}` or `docs/{file}`: read the
//! object, mark the record `processing`, extract text, chunk it, embed the chunks when an
//! embedding provider is configured, add it to the scope's index (a delta segment and a
//! conditional manifest write, see [`crate::index`]; or one transaction in PostgreSQL), check
//! the record still exists, mark it
//! `ready` with its chunk count. A document that cannot be read is marked `failed` with a
//! reason. ObjectRemoved tombstones the document in the index and deletes the record.
//! Re-delivery of an event for a version already `ready` is skipped, and index writes are
//! conditional, so retries are idempotent.
//!
//! One upload URL, one document: an upload's later versions (the same presigned URL used
//! again while it is valid) are removed before the object is read, whichever event comes
//! first, so the document is what was first uploaded, read once.
//!
//! Races with a delete or a second upload to the same key: the index refuses a document
//! whose source object is gone or has changed since it was read (checked inside its commit
//! loop); a changed object is indexed again from the top; a record deleted after the commit
//! gets its document tombstoned again. So the index ends up holding what S3 holds, and
//! never a document whose record is gone.
//!
//! Records left behind (an invocation that died, an event that was lost) are found by the
//! sweeper on a schedule ([`sweep`]).
//!
//! Large documents: with a job queue (`COACH_INGEST_QUEUE_URL`) and more than
//! `COACH_EMBED_INLINE_CHUNKS` chunks, a document is indexed by its words at once (`ready`,
//! `embedded_chunks: 0`) and its vectors follow in steps, one queued job at a time (see
//! [`jobs`]), so a document of any size gets vectors whatever one invocation can embed.
//!
//! Hostile files: extraction runs in a child process with memory and time limits
//! ([`sandbox`]); its time budget is `COACH_EXTRACT_SECS`, shortened so that
//! [`AFTER_EXTRACTION`] is left of the invocation for everything after it
//! ([`extraction_budget`]). A file past a limit is `failed` with the reason, never left
//! `processing`; a document making more than `COACH_MAX_CHUNKS` chunks too.
//!
//! Errors returned from [`Ingestor::handle`] are transient (storage, embedding provider, too
//! little time left to start): the caller reports them so the event is retried. Everything
//! else ends in a status. Chunking is CPU work and runs on the blocking pool.

pub mod chunk;
pub mod extract;
pub mod jobs;
pub mod sandbox;
pub mod sweep;

use std::{sync::Arc, time::Duration};

use crate::{
    config::{ConfigError, Env},
    deadline::Deadline,
    documents::{max_upload_bytes, safe_filename},
    embeddings::{EmbedError, Embedder},
    error::Error,
    ids::now_ms,
    model::{Chunk, EmbedJob, Finished, Job, Kind, ModelUsage, NewDocument, PurgeJob, Scope, Shard},
    store::{
        keys::{self, KeyOf},
        Added, BlobStore, DocumentIndex, DocumentStore, JobQueue, StoreError,
    },
    usage::Ledger,
};

use chunk::ChunkConfig;
use sandbox::Sandbox;

/// Times a document is indexed again because its object changed while it was indexed.
const MAX_VERSIONS: usize = 3;

/// Time kept after extraction for chunking, embedding, the index write and the status.
pub const AFTER_EXTRACTION: Duration = Duration::from_secs(30);
/// Least time an extraction is started with; with less left the event is retried.
const LEAST_EXTRACTION: Duration = Duration::from_secs(2);

/// How long an extraction may run with `remaining` of the invocation left and at most
/// `limit` (`COACH_EXTRACT_SECS`): `None` when too little is left to start one.
pub fn extraction_budget(remaining: Duration, limit: Duration) -> Option<Duration> {
    let budget = remaining.saturating_sub(AFTER_EXTRACTION).min(limit);
    (budget >= LEAST_EXTRACTION).then_some(budget)
}

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
    /// Indexed by its words; vectors for `done` of `total` chunks so far, the rest queued.
    Embedding {
        done: usize,
        total: usize,
    },
    Failed(String),
    Removed,
    /// What removed documents left in a scope's index objects erased (as far as the grace
    /// period allows; the rest is queued).
    Purged,
    /// Jobs queued (re-embedding a tenant).
    Queued(usize),
    /// A document indexed before chunks recorded their spans, indexed again with the spans
    /// of the `chunks` found in its text.
    Located {
        chunks: usize,
    },
    /// Nothing to do, and why.
    Skipped(&'static str),
}

/// One pass over an event: done, or the object changed and must be read again.
enum Pass {
    Done(Outcome),
    Again,
}

/// The document an object is: its scope, id and filename.
struct KeyedDocument {
    scope: Scope,
    id: String,
    filename: String,
}

/// Which document a key belongs to; `None` for keys ingest does not own (a key of no
/// document, a tenant or document id that is not valid).
fn keyed(key: &str) -> Option<KeyedDocument> {
    match keys::document_of(key)? {
        KeyOf::Upload { tenant, id, filename } => {
            crate::auth::validate_tenant(tenant).ok()?;
            let id = ulid::Ulid::from_string(id).ok()?.to_string();
            Some(KeyedDocument { scope: Scope::Tenant(tenant.to_owned()), id, filename: filename.to_owned() })
        }
        KeyOf::SharedDoc { path } => {
            Some(KeyedDocument { scope: Scope::Global, id: global_id(key), filename: safe_filename(path) })
        }
    }
}

/// A stable id for a shared doc, from its key (FNV-1a, 64 bits, hex).
fn global_id(key: &str) -> String {
    format!("doc-{:016x}", crate::ids::fnv1a(key))
}

/// Turns object events into indexed documents. Build once per cold start.
pub struct Ingestor {
    records: Arc<dyn DocumentStore>,
    blobs: Arc<dyn BlobStore>,
    index: Arc<dyn DocumentIndex>,
    embedder: Embedder,
    chunks: ChunkConfig,
    max_bytes: u64,
    /// Where the steps of a large document's embedding go; `None`: every document is
    /// embedded in the invocation that indexes it.
    queue: Option<Arc<dyn JobQueue>>,
    /// Most chunks embedded in the invocation that indexes a document (with a queue).
    inline_chunks: usize,
    /// How long one embedding job embeds before it queues the next.
    job_time: Duration,
    /// Most chunks one document may make (`COACH_MAX_CHUNKS`).
    max_chunks: usize,
    /// Where documents are read.
    sandbox: Sandbox,
    /// Longest one extraction may run (`COACH_EXTRACT_SECS`).
    extract_time: Duration,
    /// How long a record may stay `pending` or `processing` (`COACH_INGEST_STUCK_MINUTES`).
    stuck_after: Duration,
    /// Where calls to a paid embedding API are recorded, per tenant.
    ledger: Option<Arc<Ledger>>,
}

/// Ingest's settings.
#[derive(Debug)]
pub struct IngestConfig {
    /// `COACH_CHUNK_SIZE`, `COACH_CHUNK_OVERLAP`.
    pub chunks: ChunkConfig,
    /// `COACH_MAX_UPLOAD_BYTES`.
    pub max_bytes: u64,
    /// `COACH_MAX_CHUNKS`.
    pub max_chunks: usize,
    /// `COACH_EMBED_INLINE_CHUNKS`.
    pub inline_chunks: usize,
    /// `COACH_EMBED_JOB_SECS`.
    pub job_time: Duration,
    /// `COACH_EXTRACT_PROGRAM`, `COACH_EXTRACT_MEMORY_MB`, `COACH_EXTRACT_MAX_TEXT_MB`.
    pub sandbox: Sandbox,
    /// `COACH_EXTRACT_SECS`.
    pub extract_time: Duration,
    /// `COACH_INGEST_STUCK_MINUTES`.
    pub stuck_after: Duration,
}

impl IngestConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            chunks: ChunkConfig::from_env(env)?,
            max_bytes: max_upload_bytes(env)?,
            max_chunks: env.number("COACH_MAX_CHUNKS")? as usize,
            inline_chunks: env.number("COACH_EMBED_INLINE_CHUNKS")? as usize,
            job_time: Duration::from_secs(env.number("COACH_EMBED_JOB_SECS")?),
            sandbox: Sandbox::from_env(env)?,
            extract_time: Duration::from_secs(env.number("COACH_EXTRACT_SECS")?),
            stuck_after: sweep::stuck_after(env)?,
        })
    }
}

impl Ingestor {
    /// `index` is the configured index store's; `queue`, ingest's job queue when the
    /// deployment has one.
    pub fn new(
        config: IngestConfig,
        records: Arc<dyn DocumentStore>,
        blobs: Arc<dyn BlobStore>,
        index: Arc<dyn DocumentIndex>,
        embedder: Embedder,
        queue: Option<Arc<dyn JobQueue>>,
    ) -> Self {
        let IngestConfig { chunks, max_bytes, max_chunks, inline_chunks, job_time, sandbox, extract_time, stuck_after } =
            config;
        Self {
            queue,
            inline_chunks,
            job_time,
            max_chunks,
            sandbox,
            extract_time,
            stuck_after,
            records,
            index,
            blobs,
            embedder,
            chunks,
            max_bytes,
            ledger: None,
        }
    }

    /// Records the embedding calls of tenants' documents in `ledger` (the shared docs' are
    /// the deployment's, no tenant's).
    pub fn with_ledger(mut self, ledger: Arc<Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Records what embedding a document of `scope`'s used, when metered.
    async fn meter(&self, scope: &Scope, used: Option<&ModelUsage>) {
        if let (Some(ledger), Scope::Tenant(tenant), Some(used)) = (&self.ledger, scope, used) {
            ledger.record(tenant, None, used).await;
        }
    }

    /// Handles one object event, in an invocation that ends at `deadline`.
    pub async fn handle(&self, event: &ObjectEvent, deadline: Deadline) -> Result<Outcome, Error> {
        let Some(target) = keyed(&event.key) else {
            return Ok(Outcome::Skipped("not a document key"));
        };
        for _ in 0..MAX_VERSIONS {
            if let Pass::Done(outcome) = self.pass(&target, event, deadline).await? {
                return Ok(outcome);
            }
        }
        Err(Error::Unavailable { message: "the object kept changing while it was indexed".into(), cause: None })
    }

    async fn pass(&self, target: &KeyedDocument, event: &ObjectEvent, deadline: Deadline) -> Result<Pass, Error> {
        let done = |outcome| Ok(Pass::Done(outcome));
        if !event.created {
            if self.blobs.version(&event.key).await?.is_some() {
                // Created again since (events can arrive out of order): the object stays.
                return done(Outcome::Skipped("the object exists again"));
            }
            self.index.remove(&target.scope, &target.id).await?;
            match self.records.get(&target.scope, &target.id).await? {
                Some(record) if record.key == event.key || target.scope == Scope::Global => {
                    self.records.delete(&target.scope, &target.id).await?
                }
                _ => {}
            }
            // Its text leaves the stored index objects now, and past the grace period.
            if let Err(e) = self.purge(&target.scope).await {
                tracing::warn!(problem = %e, "could not purge a removed document's index data yet");
            }
            return done(Outcome::Removed);
        }

        // An upload's declared size (signed into its URL; S3 enforces it, emulators may not).
        let mut declared_size = None;
        // Who may read it, when its record restricts it or ever did (revision, groups).
        let mut access = None;
        let kind = match &target.scope {
            Scope::Tenant(_) => match self.records.get(&target.scope, &target.id).await? {
                Some(record) if record.key == event.key => {
                    // One upload URL, one document: what a URL still valid stores again
                    // (a new version of the key) is removed, whichever event comes first, so
                    // the document is what was first uploaded and is read once.
                    let removed = self.blobs.keep_first_version(&event.key).await?;
                    if removed > 0 {
                        tracing::info!(removed, "later uploads through the same URL removed");
                    }
                    declared_size = Some(record.size_bytes);
                    if record.access.is_some() || record.access_rev > 0 {
                        access = Some((record.access_rev, record.access.clone()));
                    }
                    Kind::from_content_type(&record.content_type)
                }
                // An upload Coach no longer knows (deleted, or its record expired) arriving
                // through a URL still valid: removed, so a delete cannot be undone by it.
                _ => {
                    self.blobs.delete_all_versions(&event.key).await?;
                    return done(Outcome::Skipped("no upload record for this key; the object was deleted"));
                }
            },
            Scope::Global => Kind::from_filename(&target.filename),
        };
        let Some(kind) = kind else {
            if target.scope == Scope::Global {
                return done(Outcome::Skipped("not a document type Coach reads"));
            }
            return self.fail(target, "unsupported file type".into()).await.map(Pass::Done);
        };
        // Checked before the record says `processing`: a retry finds it as it was.
        let budget = self.extraction_budget(deadline)?;

        let Some(object) = self.blobs.get(&event.key).await? else {
            return done(Outcome::Skipped("object no longer exists"));
        };
        if target.scope == Scope::Global {
            let record = NewDocument {
                document_id: &target.id,
                filename: &target.filename,
                kind,
                size_bytes: object.size,
                key: &event.key,
                uploaded_by: "",
                metadata: None,
                // The shared docs are every tenant's.
                access: None,
            };
            self.records.upsert(&target.scope, &record, now_ms()).await?;
        }
        match self.records.start_processing(&target.scope, &target.id, &object.etag, now_ms()).await {
            Ok(()) => {}
            Err(StoreError::ConditionFailed { .. }) => {
                return done(Outcome::Skipped("this version is already indexed"))
            }
            Err(e) => return Err(e.into()),
        }
        let size = object.size;
        if size > self.max_bytes {
            let reason = format!("the file is {size} bytes; the limit is {}", self.max_bytes);
            return self.fail(target, reason).await.map(Pass::Done);
        }
        if let Some(declared) = declared_size.filter(|&declared| declared != size) {
            let reason = format!("the uploaded file is {size} bytes, not the {declared} bytes declared for its upload");
            return self.fail(target, reason).await.map(Pass::Done);
        }
        let bytes = object.body.bytes().await?;
        let extracted = self.extract(kind, &bytes, budget).await?;
        drop(bytes);
        let text = match extracted {
            Ok(text) => text,
            Err(reason) => return self.fail(target, reason.to_string()).await.map(Pass::Done),
        };
        let config = self.chunks;
        let chunks = tokio::task::spawn_blocking(move || chunk::chunk(kind, &text, config))
            .await
            .map_err(|e| Error::Internal { detail: "chunking task failed".into(), cause: Some(Arc::new(e)) })?;
        if chunks.len() > self.max_chunks {
            let reason = format!(
                "the document makes {} chunks; the limit is {} (split it into smaller files)",
                chunks.len(),
                self.max_chunks
            );
            return self.fail(target, reason).await.map(Pass::Done);
        }
        // Too many chunks for this invocation: words now, vectors in queued steps.
        let deferred = self.queue.is_some() && self.embedder.enabled() && chunks.len() > self.inline_chunks;
        let embedded = if deferred { Ok((None, 0, Vec::new())) } else { self.embed(&target.scope, &chunks).await };
        let (embedding_model, dims, vectors) = match embedded {
            Ok(embedded) => embedded,
            Err(e) if e.is_permanent() => return self.fail(target, e.to_string()).await.map(Pass::Done),
            // Transient: leave the document `processing` and let the event be retried.
            Err(e) => return Err(e.into()),
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
        // The index holds a restricted document's access from its upload or its last change;
        // set again from the record before the document becomes searchable, in case a change
        // reached the record but not the index (an older revision never undoes a newer one).
        if let Some((rev, groups)) = &access {
            self.index.set_access(&target.scope, &target.id, groups.as_deref(), *rev).await?;
        }
        match self.index.add(&target.scope, shard, &event.key, &object.etag).await? {
            Added::Indexed => {}
            Added::Superseded => return Ok(Pass::Again),
            Added::Gone => return done(Outcome::Skipped("the object was deleted while it was indexed")),
        }
        // A delete that finished between the commit and here removed the record: the
        // document must not stay searchable.
        let record = self.records.get(&target.scope, &target.id).await?;
        if !record.is_some_and(|r| r.key == event.key || target.scope == Scope::Global) {
            self.index.remove(&target.scope, &target.id).await?;
            return done(Outcome::Skipped("the document was deleted while it was indexed"));
        }
        if deferred {
            // Queued before the record says so: a failure here retries the whole event.
            self.queue_job(&Job::Embed(EmbedJob::first(&event.key, &object.etag))).await?;
        }
        let embedded_chunks = deferred.then_some(0);
        let ready = Finished::Ready { chunks: count as u64, etag: &object.etag, size_bytes: size, embedded_chunks };
        self.finish(target, ready).await?;
        if deferred {
            return done(Outcome::Embedding { done: 0, total: count });
        }
        done(Outcome::Indexed { chunks: count })
    }

    /// The time reading a document may take in an invocation that ends at `deadline`; a
    /// transient error (the event is retried) when too little is left.
    fn extraction_budget(&self, deadline: Deadline) -> Result<Duration, Error> {
        extraction_budget(deadline.remaining(), self.extract_time).ok_or_else(|| Error::Unavailable {
            message: "too little time left in this invocation to read the document".into(),
            cause: None,
        })
    }

    /// The text of `bytes` (a document of `kind`), read in the sandbox within `budget`; the
    /// inner error says why the document cannot be read.
    async fn extract(
        &self,
        kind: Kind,
        bytes: &[u8],
        budget: Duration,
    ) -> Result<Result<String, extract::ExtractError>, Error> {
        self.sandbox
            .extract(kind, bytes, budget)
            .await
            .map_err(|e| Error::Internal { detail: "extraction could not run".into(), cause: Some(Arc::new(e)) })
    }

    /// One vector per chunk when an embedding provider is configured: (model, dims, vectors).
    async fn embed(&self, scope: &Scope, chunks: &[Chunk]) -> Result<(Option<String>, u32, Vec<f32>), EmbedError> {
        if !self.embedder.enabled() || chunks.is_empty() {
            return Ok((None, 0, Vec::new()));
        }
        let texts: Vec<String> = chunks.iter().map(embedding_text).collect();
        let embedded = self.embedder.embed(&texts).await?;
        self.meter(scope, embedded.used.as_ref()).await;
        let dims = embedded.vectors.first().map_or(0, Vec::len);
        Ok((Some(self.embedder.model().to_owned()), dims as u32, embedded.vectors.into_iter().flatten().collect()))
    }

    async fn queue_job(&self, job: &Job) -> Result<(), Error> {
        let Some(queue) = &self.queue else {
            return Err(Error::internal("an embedding job without a job queue"));
        };
        Ok(queue.send(job).await?)
    }

    /// Erases what removed documents left in `scope`'s index objects ([`DocumentIndex::purge`])
    /// and, when some must wait for the grace period, queues a purge job for then (without a
    /// queue, the next write to the scope collects it).
    async fn purge(&self, scope: &Scope) -> Result<(), Error> {
        let Some(wait) = self.index.purge(scope).await? else { return Ok(()) };
        let Some(queue) = &self.queue else { return Ok(()) };
        let tenant = match scope {
            Scope::Tenant(tenant) => Some(tenant.clone()),
            Scope::Global => None,
        };
        queue.send_later(&Job::Purge(PurgeJob { tenant }), wait).await?;
        Ok(())
    }

    /// Marks the document `failed` with `reason`.
    async fn fail(&self, target: &KeyedDocument, reason: String) -> Result<Outcome, Error> {
        self.finish(target, Finished::Failed { reason: &reason }).await?;
        Ok(Outcome::Failed(reason))
    }

    async fn finish(&self, target: &KeyedDocument, finished: Finished<'_>) -> Result<(), Error> {
        match self.records.finish(&target.scope, &target.id, finished, now_ms()).await {
            // Deleted meanwhile, or finished by a newer ingest: nothing to record.
            Ok(()) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// What is embedded for a chunk: its heading path, then its text.
fn embedding_text(chunk: &Chunk) -> String {
    match &chunk.heading {
        Some(h) => format!("{h}\n\n{}", chunk.text),
        None => chunk.text.clone(),
    }
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
    fn extraction_leaves_time_for_what_follows_it() {
        let secs = Duration::from_secs;
        // A fresh invocation of the 300 s function: the configured limit.
        assert_eq!(extraction_budget(secs(299), secs(120)), Some(secs(120)));
        // Late in an invocation: what is left after AFTER_EXTRACTION.
        assert_eq!(extraction_budget(secs(70), secs(120)), Some(secs(40)));
        // Too late to start: retried.
        assert_eq!(extraction_budget(secs(31), secs(120)), None);
        assert_eq!(extraction_budget(Duration::ZERO, secs(120)), None);
    }

    #[test]
    fn targets_are_recognised_and_validated() {
        let t = keyed("uploads/acme/01JD3QA1B2C3D4E5F6G7H8J9KM/Team handbook.pdf").unwrap();
        assert_eq!(t.scope, Scope::Tenant("acme".into()));
        assert_eq!(t.filename, "Team handbook.pdf");
        assert!(keyed("uploads/acme/not-a-ulid/x.pdf").is_none());
        assert!(keyed("uploads/../01JD3QA1B2C3D4E5F6G7H8J9KM/x.pdf").is_none());
        assert!(keyed("prompt/system_prompt.md").is_none());
        assert!(keyed("docs/").is_none());
        let g = keyed("docs/giving-feedback.md").unwrap();
        assert_eq!(g.scope, Scope::Global);
        assert_eq!(g.id, global_id("docs/giving-feedback.md"));
        assert_ne!(g.id, global_id("docs/other.md"));
    }
}
