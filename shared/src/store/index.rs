//! The search index as the domain asks for it: written ([`DocumentIndex`]) and searched
//! ([`PassageSearch`]) by either index store, and the S3 store's manifests and segments
//! ([`IndexStore`]).

use std::{future::Future, pin::Pin};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Manifest, StoreResult};
use crate::model::{Clearance, Passage, Query, Ranking, Scope, Shard};

/// The answer to a conditional read of a scope's manifest.
pub enum ManifestRead {
    Changed { etag: String, manifest: Manifest },
    NotModified,
    Missing,
}

/// A scope's index: one manifest, immutable segments named by id, reports of damaged
/// segments. Segments travel as
/// bytes; encoding and decoding them ([`Segment::encode`], [`Segment::decode`]) is CPU work
/// the caller schedules.
#[async_trait]
pub trait IndexStore: Send + Sync {
    /// The manifest unless its version is still `etag`.
    async fn manifest(&self, scope: &Scope, etag: Option<&str>) -> StoreResult<ManifestRead>;
    /// Replaces the manifest if it is still at version `expected` (`None`: only if there is
    /// none yet); `ConditionFailed` when another writer got there first. Returns the new version.
    async fn put_manifest(&self, scope: &Scope, manifest: &Manifest, expected: Option<&str>) -> StoreResult<String>;
    /// A segment's bytes; `None` when there is no such segment.
    async fn read_segment(&self, scope: &Scope, id: &str) -> StoreResult<Option<Bytes>>;
    /// Writes a new segment.
    async fn write_segment(&self, scope: &Scope, id: &str, bytes: Bytes) -> StoreResult<()>;
    /// Deletes a segment (no error when it is already gone).
    async fn delete_segment(&self, scope: &Scope, id: &str) -> StoreResult<()>;
    /// Every stored segment with when it was written: (id, epoch ms).
    async fn segments(&self, scope: &Scope) -> StoreResult<Vec<(String, u64)>>;
    /// Records that a reader found segment `id` damaged.
    async fn report_damaged(&self, scope: &Scope, id: &str) -> StoreResult<()>;
    /// Segments reported damaged.
    async fn damaged(&self, scope: &Scope) -> StoreResult<Vec<String>>;
    /// Removes a damage report (once the segment is repaired).
    async fn clear_damaged(&self, scope: &Scope, id: &str) -> StoreResult<()>;
}

// ------------------------------------------------------------------ the search index

/// What became of a document handed to [`DocumentIndex::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Committed: the next search of its scope finds it.
    Indexed,
    /// Its source object changed meanwhile; the newer version is what must be indexed.
    Superseded,
    /// Its source object was deleted meanwhile; nothing was committed.
    Gone,
}

/// The search index as ingest (and a delete) writes it: whole documents, per scope. Two
/// stores implement it: segments in S3 ([`crate::index::IndexWriter`], the default) and
/// PostgreSQL with pgvector ([`PgIndex`], `COACH_INDEX_STORE=postgres`).
///
/// Every change is atomic per document: a search sees a document's previous version or its
/// new one, never part of either.
#[async_trait]
pub trait DocumentIndex: Send + Sync {
    /// Indexes `doc` in `scope`, replacing any earlier version, provided its source object
    /// `source_key` is still at version `source_etag` when the change commits (a delete or
    /// a newer upload meanwhile is never overwritten).
    async fn add(&self, scope: &Scope, doc: Shard, source_key: &str, source_etag: &str) -> StoreResult<Added>;
    /// Removes document `id`: no search returns it once this returns. Returns whether it was
    /// indexed. Its access entry goes with it.
    async fn remove(&self, scope: &Scope, id: &str) -> StoreResult<bool>;
    /// Sets who may read document `id` (`None`: the whole tenant): no search by a caller
    /// outside `access` returns it once this returns. Applies only if `rev` (the record's
    /// access revision) is at least the one the index holds, so an older change arriving
    /// late never undoes a newer one. May come before the document is indexed (an upload's
    /// access is set before its content exists); a document with no entry is open.
    async fn set_access(&self, scope: &Scope, id: &str, access: Option<&[String]>, rev: u64) -> StoreResult<()>;
    /// Document `id` as indexed (chunks and vectors); `None` when the scope has no such document.
    async fn document(&self, scope: &Scope, id: &str) -> StoreResult<Option<Shard>>;
    /// Erases what removed documents left in the scope's stored objects: rewrites now what
    /// still holds their data, and deletes (every version of) what nothing references once
    /// readers may no longer need it. `Some(wait)` when some is left to delete after that
    /// grace period: call again after `wait`.
    async fn purge(&self, scope: &Scope) -> StoreResult<Option<std::time::Duration>>;
}

/// The document index, as its failures name it ("the document index is unavailable").
pub const DOCUMENT_INDEX: &str = "the document index";

/// A query while it is made (the conversation read, the query embedded): a future, so a
/// store can load what it needs meanwhile.
pub type PendingQuery<'a> = Pin<Box<dyn Future<Output = Query> + Send + 'a>>;

/// The search index as chat reads it: the best passages of a tenant's documents and the
/// shared docs for a [`Query`], ranked by its weighted terms (BM25) and (given its vector) by
/// vectors of the same model, the two rankings fused (a weighted mean of each one's scores
/// as shares of its best) and cut by
/// `ranking`. No other scope is ever read. Both stores rank alike: same terms
/// ([`crate::analysis`]), same BM25, same fusion.
#[async_trait]
pub trait PassageSearch: Send + Sync {
    /// Only documents `clearance` may read take part: the others are left out before
    /// ranking (from the collection statistics too), so `top_k` readable passages come back
    /// whenever there are that many.
    async fn search(
        &self,
        tenant: &str,
        clearance: Clearance<'_>,
        query: PendingQuery<'_>,
        ranking: &Ranking,
    ) -> StoreResult<Vec<Passage>>;

    /// A token that changes whenever what [`PassageSearch::search`] may return for `tenant`
    /// changes: a document of the tenant or of the shared docs indexed, replaced or removed,
    /// or its access changed.
    /// Caches of answers grounded in the index key on it.
    async fn version(&self, tenant: &str) -> StoreResult<String>;
}
