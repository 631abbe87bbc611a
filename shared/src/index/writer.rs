//! Writing a scope's index, on the ingest side (and the tombstone of a delete).
//!
//! Every change reads the manifest, applies one of the operations of [`super::manifest`]
//! and writes it back only if nobody else wrote meanwhile (S3 `If-Match`); on a conflict
//! it reads again and re-applies, after a jittered, growing pause. Segment objects are
//! written before the manifest that names them and deleted only once no manifest has named
//! them for the grace period, so a crash at any point leaves the previous manifest valid.
//!
//! Adding a document checks, inside the commit loop, that its source object still exists
//! at the version indexed: a document deleted (object first, then tombstone) or replaced
//! (a second PUT) while it was being indexed is never committed over the newer state.
//!
//! After each add, maintenance runs under a lease held in the manifest: compaction (see
//! [`Manifest::plan_compaction`]), rebuilding segments readers reported damaged from the
//! documents' deltas, and deleting objects nothing references any more (every version of
//! them: the bucket is versioned). After a remove, ingest purges the scope
//! ([`DocumentIndex::purge`]): the segments holding the document's data are rewritten at
//! once, and what they leave is deleted past the grace period, so a deleted document's text
//! leaves the bucket within `COACH_INDEX_GC_GRACE_SECS` even if the scope is never written
//! again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::{
    lock,
    reader::scope_name,
    segment::{build, documents, memory, split},
    IndexConfig,
};
use crate::{
    ids::{now_ms, Ids},
    model::{Scope, Shard},
    store::{
        Added, BlobStore, DocumentIndex, IndexStore, Manifest, ManifestRead, Segment, SegmentInfo, StoreError,
        StoreResult,
    },
};

/// How long a change keeps retrying conflicting manifest writes before giving up (a
/// transient error: the event is retried later). Well inside the ingest timeout.
const COMMIT_BUDGET: Duration = Duration::from_secs(120);
/// Attempts at the final write of a compaction (it holds the lease, so it rarely conflicts).
const MAX_ATTEMPTS: u32 = 60;
/// Compactions one maintenance runs back to back at most.
const MAX_ROUNDS: usize = 8;
/// How long a compaction may hold a scope.
const LEASE_MS: u64 = 10 * 60 * 1000;
/// How long a tombstone is kept: far longer than any ingest can run.
const TOMBSTONE_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Objects read from the store at once during compaction.
const READ_PARALLELISM: usize = 8;

fn index_error(cause: StoreError) -> StoreError {
    StoreError::unavailable(crate::store::DOCUMENT_INDEX, cause)
}

fn task_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::internal_from("index task failed", e)
}

/// A manifest as read (`etag`: `None` for a scope without one yet).
struct Current {
    etag: Option<String>,
    manifest: Manifest,
}

/// An add waiting for its scope's next manifest write.
struct Pending {
    document_id: String,
    info: SegmentInfo,
    source_key: String,
    source_etag: String,
    done: oneshot::Sender<StoreResult<Added>>,
}

/// Writes the index of any scope. Build once per cold start.
pub struct IndexWriter {
    store: Arc<dyn IndexStore>,
    blobs: Arc<dyn BlobStore>,
    config: IndexConfig,
    ids: Ids,
    /// Per scope: adds waiting for a manifest write.
    queues: Mutex<HashMap<String, Vec<Pending>>>,
    /// Per scope: held by the add writing the manifest for everyone queued.
    committers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl IndexWriter {
    pub fn new(store: Arc<dyn IndexStore>, blobs: Arc<dyn BlobStore>, config: IndexConfig) -> Self {
        Self {
            store,
            blobs,
            config,
            ids: Ids::new(),
            queues: Mutex::new(HashMap::new()),
            committers: Mutex::new(HashMap::new()),
        }
    }

    /// Indexes one document (a one-document delta segment, then the manifest), provided
    /// its source object `source_key` is still at version `source_etag`; then runs
    /// maintenance. Replaces any earlier version of the document. Adds of one scope running
    /// at once in this process share one manifest write (group commit), so a batch of
    /// events costs one conditional write, not one each racing the others.
    async fn add_document(
        &self,
        scope: &Scope,
        shard: Shard,
        source_key: &str,
        source_etag: &str,
    ) -> StoreResult<Added> {
        let document_id = shard.document_id.clone();
        let (info, bytes) = self.encode(vec![shard]).await?;
        self.store.write_segment(scope, &info.id, bytes).await.map_err(index_error)?;
        let (done, outcome) = oneshot::channel();
        let name = scope_name(scope).to_owned();
        let pending =
            Pending { document_id, info, source_key: source_key.to_owned(), source_etag: source_etag.to_owned(), done };
        lock(&self.queues).entry(name.clone()).or_default().push(pending);
        let committer = lock(&self.committers).entry(name.clone()).or_default().clone();
        let written = {
            let _turn = committer.lock().await;
            let batch = lock(&self.queues).remove(&name).unwrap_or_default();
            // Empty when an earlier committer took this add along.
            if batch.is_empty() {
                None
            } else {
                self.commit_adds(scope, batch).await
            }
        };
        // The committer's invocation ended before it answered (it was cancelled): transient.
        let outcome = outcome.await.map_err(|_| StoreError::Busy("the index write was interrupted; try again"))?;
        if let (Ok(Added::Indexed), Some(written)) = (&outcome, written) {
            self.maintain(scope, Some(written)).await;
        }
        outcome
    }

    /// Commits a batch of adds in one manifest write, retrying on conflicts within
    /// [`COMMIT_BUDGET`]; answers each add. Returns the manifest written, if one was.
    async fn commit_adds(&self, scope: &Scope, batch: Vec<Pending>) -> Option<Current> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let mut current = match self.current(scope).await {
                Ok(current) => current,
                Err(e) => {
                    let e = Arc::new(e);
                    return self.answer(scope, batch, false, |_| Err(StoreError::Shared(e.clone()))).await;
                }
            };
            // Each source object's version, read after the manifest: a delete or a newer
            // upload that happened before this read is seen here, and one that happens after
            // it changes the manifest (tombstone, newer commit), so the write below fails.
            let versions =
                futures_util::future::join_all(batch.iter().map(|p| self.blobs.version(&p.source_key))).await;
            let mut outcomes = Vec::with_capacity(batch.len());
            let now = now_ms();
            for (pending, version) in batch.iter().zip(versions) {
                outcomes.push(match version {
                    Ok(Some(version)) if version == pending.source_etag => {
                        current.manifest.add(&pending.document_id, pending.info.clone(), &pending.source_etag, now);
                        Ok(Added::Indexed)
                    }
                    Ok(Some(_)) => Ok(Added::Superseded),
                    Ok(None) => Ok(Added::Gone),
                    Err(e) => Err(e),
                });
            }
            if !outcomes.iter().any(|o| matches!(o, Ok(Added::Indexed))) {
                let mut outcomes = outcomes.into_iter();
                return self.answer(scope, batch, true, |_| outcomes.next().unwrap_or_else(|| Err(busy()))).await;
            }
            match self.put(scope, &mut current).await {
                Ok(Some(etag)) => {
                    let mut outcomes = outcomes.into_iter();
                    self.answer(scope, batch, true, |_| outcomes.next().unwrap_or_else(|| Err(busy()))).await;
                    return Some(Current { etag: Some(etag), manifest: current.manifest });
                }
                Ok(None) if started.elapsed() < COMMIT_BUDGET => {
                    pause(attempt).await;
                    attempt += 1;
                }
                Ok(None) => return self.answer(scope, batch, true, |_| Err(busy())).await,
                // The write may have happened (a timeout, say): keep the deltas; if no
                // manifest names them, collection deletes them later.
                Err(e) => {
                    let e = Arc::new(e);
                    return self.answer(scope, batch, false, |_| Err(StoreError::Shared(e.clone()))).await;
                }
            }
        }
    }

    /// Sends each add its outcome. With `certain` (no manifest write can have named them),
    /// deletes the deltas of those not indexed. Returns `None`, for the callers' convenience.
    async fn answer(
        &self,
        scope: &Scope,
        batch: Vec<Pending>,
        certain: bool,
        mut outcome: impl FnMut(&Pending) -> StoreResult<Added>,
    ) -> Option<Current> {
        for pending in batch {
            let result = outcome(&pending);
            if certain && !matches!(result, Ok(Added::Indexed)) {
                self.discard(scope, &pending.info.id).await;
            }
            // The add may have stopped waiting (its invocation ended): nothing to tell.
            let _ = pending.done.send(result);
        }
        None
    }

    /// Deletes document `id` from the index: a tombstone at once, so no search returns it
    /// again; its data leaves the segments at the next compaction. Returns whether it was live.
    async fn remove_document(&self, scope: &Scope, id: &str) -> StoreResult<bool> {
        let started = Instant::now();
        for attempt in 0.. {
            if started.elapsed() > COMMIT_BUDGET {
                break;
            }
            let mut current = self.current(scope).await?;
            if current.manifest.is_deleted(id) && !current.manifest.docs.contains_key(id) && current.etag.is_some() {
                return Ok(false);
            }
            let was_live = current.manifest.remove(id, now_ms());
            if self.put(scope, &mut current).await?.is_some() {
                return Ok(was_live);
            }
            pause(attempt).await;
        }
        Err(busy())
    }

    /// Sets who may read document `id` in the manifest (see [`Manifest::set_access`]).
    async fn set_document_access(
        &self,
        scope: &Scope,
        id: &str,
        access: Option<&[String]>,
        rev: u64,
    ) -> StoreResult<()> {
        let started = Instant::now();
        for attempt in 0.. {
            if started.elapsed() > COMMIT_BUDGET {
                break;
            }
            let mut current = self.current(scope).await?;
            if !current.manifest.set_access(id, access, rev) {
                return Ok(());
            }
            if self.put(scope, &mut current).await?.is_some() {
                return Ok(());
            }
            pause(attempt).await;
        }
        Err(busy())
    }

    /// The scope's manifest; for a scope without one, an empty first one.
    async fn current(&self, scope: &Scope) -> StoreResult<Current> {
        match self.store.manifest(scope, None).await.map_err(index_error)? {
            ManifestRead::Changed { etag, manifest } => Ok(Current { etag: Some(etag), manifest }),
            ManifestRead::Missing => Ok(Current { etag: None, manifest: Manifest::default() }),
            ManifestRead::NotModified => {
                Err(StoreError::internal("the index store answered 304 to an unconditional read"))
            }
        }
    }

    /// Writes `current` if the stored manifest is still the one it was read from; `None`
    /// on a conflict.
    async fn put(&self, scope: &Scope, current: &mut Current) -> StoreResult<Option<String>> {
        current.manifest.generation += 1;
        match self.store.put_manifest(scope, &current.manifest, current.etag.as_deref()).await {
            Ok(etag) => Ok(Some(etag)),
            Err(StoreError::ConditionFailed { .. }) => Ok(None),
            Err(e) => Err(index_error(e)),
        }
    }

    /// Encodes a new segment of `docs` (CPU work, on the blocking pool).
    async fn encode(&self, docs: Vec<Shard>) -> StoreResult<(SegmentInfo, Bytes)> {
        let id = self.ids.next().to_string();
        let analyzer = self.config.analyzer.clone();
        tokio::task::spawn_blocking(move || {
            let segment = build(docs, &analyzer);
            let bytes = segment.encode();
            let info = SegmentInfo {
                id,
                bytes: bytes.len() as u64,
                memory: memory(&segment),
                docs: segment.docs.len() as u32,
                chunks: segment.chunks.len() as u32,
            };
            (info, Bytes::from(bytes))
        })
        .await
        .map_err(task_failed)
    }

    async fn discard(&self, scope: &Scope, id: &str) {
        if let Err(e) = self.store.delete_segment(scope, id).await {
            tracing::warn!(problem = %e, segment = id, "could not delete an unused index segment; collected later");
        }
    }

    /// Compaction, repair and collection, when due, from `current` (else the stored
    /// manifest); a failure is logged (the next write tries again), never the caller's.
    async fn maintain(&self, scope: &Scope, current: Option<Current>) {
        if let Err(e) = self.try_maintain(scope, current).await {
            tracing::warn!(problem = %e, "index maintenance did not finish; the next write retries it");
        }
    }

    /// Rounds of maintenance until nothing is left to do: a burst of adds can queue more
    /// segments than one compaction takes, while its lease keeps other writers out.
    async fn try_maintain(&self, scope: &Scope, mut current: Option<Current>) -> StoreResult<()> {
        self.maintain_rounds(scope, current.take(), false).await
    }

    /// Up to [`MAX_ROUNDS`] rounds of maintenance, the first collecting unreferenced objects
    /// whether or not it is due when `collect_now`.
    async fn maintain_rounds(&self, scope: &Scope, mut current: Option<Current>, collect_now: bool) -> StoreResult<()> {
        let mut collect_now = collect_now;
        for _ in 0..MAX_ROUNDS {
            let round = self.maintain_once(scope, current.take(), std::mem::take(&mut collect_now)).await?;
            match round {
                Some(written) => current = Some(written),
                None => break,
            }
        }
        Ok(())
    }

    /// One round: returns the manifest written when it compacted something. Unreferenced
    /// objects are collected every few minutes, or now with `collect_now`.
    async fn maintain_once(
        &self,
        scope: &Scope,
        current: Option<Current>,
        collect_now: bool,
    ) -> StoreResult<Option<Current>> {
        let damaged = self.store.damaged(scope).await.map_err(index_error)?;
        let mut current = match current {
            Some(current) => current,
            None => self.current(scope).await?,
        };
        let now = now_ms();
        let plan = current.manifest.plan_compaction(self.config.segment_bytes, &damaged);
        let collect_every = self.config.gc_grace.min(Duration::from_secs(600)).as_millis() as u64;
        let collect = collect_now || now.saturating_sub(current.manifest.collected_ms) >= collect_every;
        let stale_reports: Vec<&String> =
            damaged.iter().filter(|id| !current.manifest.segments.iter().any(|s| &s.id == *id)).collect();
        for id in stale_reports {
            // The segment is no longer served (already rebuilt or compacted).
            let _ = self.store.clear_damaged(scope, id).await;
        }
        if (plan.is_none() && !collect) || current.manifest.compacting_until_ms > now {
            return Ok(None);
        }
        // Take the lease; losing the race means another writer is at it.
        current.manifest.compacting_until_ms = now + LEASE_MS;
        let Some(mut etag) = self.put(scope, &mut current).await? else { return Ok(None) };
        let leased = current.manifest;

        let (outputs, inputs) = match &plan {
            Some(inputs) => (self.compact(scope, &leased, inputs).await?, inputs.clone()),
            None => (Vec::new(), Vec::new()),
        };
        let fresh: Vec<String> = outputs.iter().map(|(info, _)| info.id.clone()).collect();
        let collected = if collect { self.collect(scope, &leased, &fresh, now).await? } else { Vec::new() };

        let mut manifest = leased;
        for attempt in 0..MAX_ATTEMPTS {
            let now = now_ms();
            let (unused, lost) = manifest.apply_compaction(&inputs, outputs.clone(), now);
            manifest.retired.retain(|r| !collected.contains(&r.id));
            manifest.expire_tombstones(now, TOMBSTONE_TTL_MS);
            if collect {
                manifest.collected_ms = now;
            }
            manifest.compacting_until_ms = 0;
            let mut next = Current { etag: Some(etag.clone()), manifest };
            if let Some(written) = self.put(scope, &mut next).await? {
                for id in &unused {
                    self.discard(scope, id).await;
                }
                for id in &lost {
                    tracing::error!(document = %id, "a document's index data was damaged and could not be rebuilt; upload it again");
                }
                for id in damaged.iter().filter(|id| inputs.contains(id)) {
                    let _ = self.store.clear_damaged(scope, id).await;
                }
                if inputs.is_empty() {
                    return Ok(None);
                }
                tracing::info!(inputs = inputs.len(), outputs = outputs.len(), "compacted index segments");
                return Ok(Some(Current { etag: Some(written), manifest: next.manifest }));
            }
            pause(attempt).await;
            let fresh = self.current(scope).await?;
            etag = fresh.etag.unwrap_or_default();
            manifest = fresh.manifest;
        }
        Err(busy())
    }

    /// Reads the `inputs` and writes their documents that are live in them (per `manifest`)
    /// into new segments of about the target size. A damaged input is rebuilt from its
    /// documents' deltas. Returns each new segment with the documents written into it.
    async fn compact(
        &self,
        scope: &Scope,
        manifest: &Manifest,
        inputs: &[String],
    ) -> StoreResult<Vec<(SegmentInfo, Vec<String>)>> {
        let reads = inputs.iter().cloned().map(|id| async move {
            let segment = self.read(scope, &id).await;
            (id, segment)
        });
        let read: Vec<_> = futures_util::stream::iter(reads).buffered(READ_PARALLELISM).collect().await;
        let mut docs = Vec::new();
        for (input, segment) in read {
            let input = &input;
            let live_here = |doc_id: &str| manifest.docs.get(doc_id).is_some_and(|e| &e.segment == input);
            match segment? {
                Some(segment) => docs.extend(documents(segment, |d| live_here(&d.document_id))),
                None => {
                    tracing::error!(segment = %input, "rebuilding a damaged index segment from its documents' deltas");
                    for (doc_id, entry) in manifest.docs.iter().filter(|(_, e)| &e.segment == input) {
                        if &entry.delta == input {
                            continue;
                        }
                        if let Some(delta) = self.read(scope, &entry.delta).await? {
                            docs.extend(documents(delta, |d| &d.document_id == doc_id));
                        }
                    }
                }
            }
        }
        let mut outputs = Vec::new();
        for part in split(docs, self.config.segment_bytes) {
            let ids = part.iter().map(|s| s.document_id.clone()).collect();
            let (info, bytes) = self.encode(part).await?;
            self.store.write_segment(scope, &info.id, bytes).await.map_err(index_error)?;
            outputs.push((info, ids));
        }
        Ok(outputs)
    }

    /// A live document as the index holds it (chunks and vectors), from the segment that
    /// serves it; `None` when the scope has no such document.
    async fn read_document(&self, scope: &Scope, id: &str) -> StoreResult<Option<Shard>> {
        let manifest = match self.store.manifest(scope, None).await.map_err(index_error)? {
            ManifestRead::Changed { manifest, .. } => manifest,
            ManifestRead::Missing | ManifestRead::NotModified => return Ok(None),
        };
        let Some(entry) = manifest.docs.get(id) else { return Ok(None) };
        let Some(segment) = self.read(scope, &entry.segment).await? else { return Ok(None) };
        Ok(documents(segment, |d| d.document_id == id).pop())
    }

    /// A segment, decoded; `None` when it is missing or damaged.
    async fn read(&self, scope: &Scope, id: &str) -> StoreResult<Option<Segment>> {
        let Some(bytes) = self.store.read_segment(scope, id).await.map_err(index_error)? else { return Ok(None) };
        let decoded = tokio::task::spawn_blocking(move || Segment::decode(&bytes)).await.map_err(task_failed)?;
        Ok(decoded.ok())
    }

    /// Deletes objects nothing references (retired ones past the grace period, orphans of
    /// crashed writers past the orphan age), except `fresh` ones this compaction just wrote;
    /// returns the ids deleted.
    async fn collect(
        &self,
        scope: &Scope,
        manifest: &Manifest,
        fresh: &[String],
        now: u64,
    ) -> StoreResult<Vec<String>> {
        let mut stored = self.store.segments(scope).await.map_err(index_error)?;
        stored.retain(|(id, _)| !fresh.contains(id));
        let grace = self.config.gc_grace.as_millis() as u64;
        let orphan = self.config.orphan_age.as_millis() as u64;
        let doomed = manifest.collectable(&stored, now, grace, orphan);
        for id in &doomed {
            self.store.delete_segment(scope, id).await.map_err(index_error)?;
        }
        if !doomed.is_empty() {
            tracing::info!(objects = doomed.len(), "deleted unreferenced index segments");
        }
        Ok(doomed)
    }
}

#[async_trait::async_trait]
impl DocumentIndex for IndexWriter {
    async fn add(&self, scope: &Scope, doc: Shard, source_key: &str, source_etag: &str) -> StoreResult<Added> {
        self.add_document(scope, doc, source_key, source_etag).await
    }

    async fn remove(&self, scope: &Scope, id: &str) -> StoreResult<bool> {
        self.remove_document(scope, id).await
    }

    async fn set_access(&self, scope: &Scope, id: &str, access: Option<&[String]>, rev: u64) -> StoreResult<()> {
        self.set_document_access(scope, id, access, rev).await
    }

    async fn document(&self, scope: &Scope, id: &str) -> StoreResult<Option<Shard>> {
        self.read_document(scope, id).await
    }

    async fn purge(&self, scope: &Scope) -> StoreResult<Option<Duration>> {
        // Compaction rewrites the segments holding removed documents' data (they are stale);
        // the objects they leave are retired, and deleted once past the grace period.
        self.maintain_rounds(scope, None, true).await?;
        let manifest = self.current(scope).await?.manifest;
        let now = now_ms();
        let grace = self.config.gc_grace.as_millis() as u64;
        // The oldest retired object's time left, or a compaction of another writer's.
        let waits = manifest.retired.iter().map(|r| (r.since_ms + grace).saturating_sub(now));
        let lease = (manifest.compacting_until_ms > now).then(|| manifest.compacting_until_ms - now);
        Ok(waits.chain(lease).min().map(|ms| Duration::from_millis(ms.max(1000))))
    }
}

fn busy() -> StoreError {
    StoreError::Busy("the document index is busy with other writes; try again")
}

/// A jittered pause growing from about 10 ms to about 1 s.
async fn pause(attempt: u32) {
    let ceiling = (10u64 << attempt.min(7)).min(1000);
    tokio::time::sleep(Duration::from_millis(fastrand::u64(ceiling / 2..=ceiling))).await;
}
