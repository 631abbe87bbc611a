//! Reading a scope's index for search, in a chat instance.
//!
//! Per request the scope's manifest is revalidated by ETag (a conditional GET: a 304 costs
//! little), so a document reported `ready`, or deleted, is seen by the very next request.
//! The segments it serves are read at most [`LOAD_PARALLELISM`] at a time when not yet in
//! memory, verified (checksum) and prepared on the blocking pool, and kept in the
//! byte-bounded [`SegmentCache`]. Which documents of a segment are live comes from the
//! manifest, tombstones included, so a deleted or replaced document is never returned even
//! while its data still sits in a segment. So does who may read each document: a caller's
//! mask leaves out, before ranking, what is restricted to groups the caller is not in, so
//! it weighs in neither the ranking nor the collection statistics.
//!
//! A damaged segment is skipped with an error log and reported to the store, so the next
//! compaction rebuilds it. A scope without a manifest has nothing indexed yet. When a scope's index needs more memory
//! than the cache holds, the segments that fit answer and an error line says so.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use moka::future::Cache;

use super::{cache::SegmentCache, lock, rank, segment::Loaded, IndexConfig};
use crate::{
    analysis::Analyzer,
    model::{Clearance, Passage, Ranking, Scope},
    store::{IndexStore, Manifest, ManifestRead, PassageSearch, PendingQuery, Segment, StoreError, StoreResult},
};

/// Segments read from the store at once, at most, when an instance loads an index.
pub const LOAD_PARALLELISM: usize = 16;

/// What a failure of the index's objects is to a caller.
fn unavailable(cause: StoreError) -> StoreError {
    StoreError::unavailable(crate::store::DOCUMENT_INDEX, cause)
}

/// A loaded segment and which of its documents are live.
#[derive(Clone)]
pub struct Part {
    pub segment: Arc<Loaded>,
    /// Per document of the segment: whether search may return it.
    pub live: Arc<Vec<bool>>,
}

/// What a scope's index looked like at its last revalidation.
struct Snapshot {
    checked: Instant,
    state: State,
}

enum State {
    /// A manifest version (kept, with what was derived from it, while it is unchanged).
    Manifest(Arc<Version>),
    /// No manifest: nothing indexed yet.
    Empty,
}

/// A manifest as read, and which documents of each of its segments are live (and, for each
/// clearance that searched it, live and readable): computed on a segment's first use at
/// this version, then reused by every request until it changes.
struct Version {
    etag: String,
    manifest: Manifest,
    live: Mutex<HashMap<String, Arc<Vec<bool>>>>,
    /// By (segment, [`Clearance::key`]); only when some document is restricted.
    readable: Mutex<Masks>,
    /// Whether any document of the scope is restricted to groups.
    restricted: bool,
}

/// Per (segment, [`Clearance::key`]): which documents of the segment the caller may be given.
type Masks = HashMap<(String, String), Arc<Vec<bool>>>;

/// Readable-document masks a version keeps at most (then it starts again).
const MAX_MASKS: usize = 4096;

impl Version {
    /// Per document of `segment` (served as `id`): whether search may return it.
    fn live(&self, id: &str, segment: &Segment) -> Arc<Vec<bool>> {
        if let Some(live) = lock(&self.live).get(id) {
            return live.clone();
        }
        let manifest = &self.manifest;
        let live: Arc<Vec<bool>> = Arc::new(
            segment
                .docs
                .iter()
                .map(|d| {
                    !manifest.is_deleted(&d.document_id)
                        && manifest.docs.get(&d.document_id).is_some_and(|e| e.segment == id)
                })
                .collect(),
        );
        lock(&self.live).insert(id.to_owned(), live.clone());
        live
    }

    /// Per document of `segment` (served as `id`): whether search may return it to a caller
    /// of `clearance` (whose [`Clearance::key`] is `key`): live, and open to the tenant or
    /// restricted to a group of the caller's.
    fn readable(&self, id: &str, segment: &Segment, clearance: Clearance<'_>, key: &str) -> Arc<Vec<bool>> {
        let live = self.live(id, segment);
        if !self.restricted || clearance.is_all() {
            return live;
        }
        let at = (id.to_owned(), key.to_owned());
        if let Some(mask) = lock(&self.readable).get(&at) {
            return mask.clone();
        }
        let ids = segment.docs.iter().map(|d| d.document_id.as_str());
        let mask = Arc::new(self.manifest.readable(ids, &live, clearance));
        let mut masks = lock(&self.readable);
        if masks.len() >= MAX_MASKS {
            masks.clear();
        }
        masks.insert(at, mask.clone());
        mask
    }
}

/// Scope names as used in cache keys and logs ([`Scope::name`]).
pub fn scope_name(scope: &Scope) -> &str {
    scope.name()
}

/// A chat instance's view of the index. Build once per cold start.
pub struct IndexReader {
    store: Arc<dyn IndexStore>,
    revalidate: Duration,
    snapshots: Cache<String, Arc<Snapshot>>,
    segments: SegmentCache,
    /// Segments found damaged (not read again by this instance), and scopes already
    /// reported too large for the cache at a manifest version.
    noted: Mutex<HashSet<String>>,
    analyzer: Analyzer,
}

impl IndexReader {
    pub fn new(store: Arc<dyn IndexStore>, config: &IndexConfig) -> Self {
        Self {
            store,
            revalidate: config.revalidate,
            snapshots: Cache::builder().max_capacity(10_000).build(),
            segments: SegmentCache::new(config.cache_bytes),
            noted: Mutex::new(HashSet::new()),
            analyzer: config.analyzer.clone(),
        }
    }

    /// Bytes of loaded segments held now.
    pub fn cached_bytes(&self) -> u64 {
        self.segments.used()
    }

    /// The searchable parts of `tenant`'s index and the shared docs' for a caller of
    /// `clearance` (each part's mask leaves out what the caller may not read): both manifests
    /// are revalidated at once, then the segments not in memory are read concurrently.
    pub async fn parts_for(&self, tenant: &str, clearance: Clearance<'_>) -> StoreResult<Vec<Part>> {
        let key = clearance.key();
        let key = key.as_str();
        let own = Scope::Tenant(tenant.to_owned());
        let (shared, own_snapshot) = tokio::try_join!(self.snapshot(&Scope::Global), self.snapshot(&own))?;
        // The shared docs first: when memory runs short, they are what every tenant shares.
        let mut wanted = self.wanted(&Scope::Global, &shared);
        wanted.extend(self.wanted(&own, &own_snapshot));
        let wanted = self.within_budget(tenant, wanted);
        let keep: Vec<(String, String)> =
            wanted.iter().map(|w| (scope_name(&w.scope).to_owned(), w.key.clone())).collect();
        let keep: Vec<(&str, &str)> = keep.iter().map(|(s, k)| (s.as_str(), k.as_str())).collect();
        let keep = &keep;
        let loads = wanted.into_iter().map(|w| async move {
            // The shared docs are every caller's.
            let clearance = if w.scope == Scope::Global { Clearance::All } else { clearance };
            self.load(&w, keep, clearance, key).await
        });
        let loaded: Vec<StoreResult<Option<Part>>> =
            futures_util::stream::iter(loads).buffered(LOAD_PARALLELISM).collect().await;
        let mut parts = Vec::new();
        for part in loaded {
            parts.extend(part?);
        }
        Ok(parts)
    }

    async fn snapshot(&self, scope: &Scope) -> StoreResult<Arc<Snapshot>> {
        let name = scope_name(scope).to_owned();
        let cached = self.snapshots.get(&name).await;
        if let Some(cached) = &cached {
            if cached.checked.elapsed() < self.revalidate {
                return Ok(cached.clone());
            }
        }
        let etag = match cached.as_deref() {
            Some(Snapshot { state: State::Manifest(version), .. }) => Some(version.etag.as_str()),
            _ => None,
        };
        let state = match self.store.manifest(scope, etag).await.map_err(unavailable)? {
            ManifestRead::NotModified => match cached.as_deref().map(|c| &c.state) {
                Some(State::Manifest(version)) => State::Manifest(version.clone()),
                _ => return Err(StoreError::internal("the index store answered 304 to an unconditional read")),
            },
            ManifestRead::Changed { etag, manifest } => State::Manifest(Arc::new(Version {
                etag,
                restricted: manifest.any_restricted(),
                manifest,
                live: Mutex::new(HashMap::new()),
                readable: Mutex::new(HashMap::new()),
            })),
            ManifestRead::Missing => State::Empty,
        };
        let snapshot = Arc::new(Snapshot { checked: Instant::now(), state });
        self.snapshots.insert(name, snapshot.clone()).await;
        Ok(snapshot)
    }

    /// The segments a snapshot serves, with their estimated memory.
    fn wanted(&self, scope: &Scope, snapshot: &Arc<Snapshot>) -> Vec<Wanted> {
        match &snapshot.state {
            State::Manifest(version) => version
                .manifest
                .segments
                .iter()
                .map(|s| Wanted { scope: scope.clone(), key: s.id.clone(), memory: s.memory, version: version.clone() })
                .collect(),
            State::Empty => Vec::new(),
        }
    }

    /// The prefix of `wanted` that fits the cache, with an error line (once per version)
    /// when not all of it does.
    fn within_budget(&self, tenant: &str, mut wanted: Vec<Wanted>) -> Vec<Wanted> {
        let budget = self.segments.budget();
        let needed: u64 = wanted.iter().map(|w| w.memory).sum();
        if needed <= budget {
            return wanted;
        }
        let mut total = 0;
        let fits = wanted.iter().take_while(|w| {
            total += w.memory;
            total <= budget
        });
        let count = fits.count();
        let version: String = wanted.iter().map(|w| w.key.as_str()).collect::<Vec<_>>().join(",");
        if self.note(format!("budget:{tenant}:{}", crate::ids::fnv1a(&version))) {
            tracing::error!(
                tenant,
                needed_bytes = needed,
                cache_bytes = budget,
                segments = wanted.len(),
                searched_segments = count,
                "the index of this tenant (with the shared docs) does not fit this function's index cache; \
                 answering from the part that fits. Raise MemorySize and COACH_INDEX_CACHE_MB, or use the \
                 Postgres index store for a tenant this large"
            );
        }
        wanted.truncate(count);
        wanted
    }

    /// Remembers `key`; true the first time. (Forgets everything past 10,000 keys: at
    /// worst a line is logged again.)
    fn note(&self, key: String) -> bool {
        let mut noted = lock(&self.noted);
        if noted.len() >= 10_000 {
            noted.clear();
        }
        noted.insert(key)
    }

    fn noted(&self, key: &str) -> bool {
        lock(&self.noted).contains(key)
    }

    async fn load(
        &self,
        wanted: &Wanted,
        keep: &[(&str, &str)],
        clearance: Clearance<'_>,
        key: &str,
    ) -> StoreResult<Option<Part>> {
        let name = scope_name(&wanted.scope);
        let segment = match self.segments.get(name, &wanted.key) {
            Some(segment) => segment,
            None => {
                let damaged_key = format!("damaged:{name}:{}", wanted.key);
                if self.noted(&damaged_key) {
                    return Ok(None);
                }
                let Some((segment, bytes)) = self.read(wanted).await? else { return Ok(None) };
                let Some(segment) = segment else {
                    self.note(damaged_key);
                    tracing::error!(scope = name, segment = %wanted.key, "skipping a damaged index segment");
                    if let Err(e) = self.store.report_damaged(&wanted.scope, &wanted.key).await {
                        tracing::warn!(problem = %e, "could not report the damaged segment");
                    }
                    return Ok(None);
                };
                let segment = Arc::new(segment);
                let memory = if wanted.memory > 0 { wanted.memory } else { super::segment::memory(&segment.segment) };
                self.segments.insert(name, &wanted.key, segment.clone(), memory.max(bytes), keep);
                segment
            }
        };
        let live = wanted.version.readable(&wanted.key, &segment.segment, clearance, key);
        Ok(Some(Part { segment, live }))
    }

    /// Reads and prepares a segment: `None` when it is gone, `Some(None)` when damaged.
    async fn read(&self, wanted: &Wanted) -> StoreResult<Option<(Option<Loaded>, u64)>> {
        let bytes = self.store.read_segment(&wanted.scope, &wanted.key).await.map_err(unavailable)?;
        let Some(bytes) = bytes else {
            tracing::warn!(scope = scope_name(&wanted.scope), segment = %wanted.key, "an index segment vanished; skipped");
            return Ok(None);
        };
        let size = bytes.len() as u64;
        let analyzer = self.analyzer.clone();
        // Checking, decoding and preparing a segment is CPU work: off the event loop.
        let loaded = tokio::task::spawn_blocking(move || {
            Segment::decode(&bytes).ok().map(|segment| Loaded::new(segment, &analyzer))
        })
        .await
        .map_err(|e| StoreError::internal_from("segment loading task failed", e))?;
        Ok(Some((loaded, size)))
    }
}

/// The S3 store's search: the tenant's and the shared docs' segments, loaded (or revalidated),
/// ranked in process by [`rank::search`] on the blocking pool (ranking a large index is CPU
/// work measured in milliseconds).
#[async_trait::async_trait]
impl PassageSearch for IndexReader {
    async fn search(
        &self,
        tenant: &str,
        clearance: Clearance<'_>,
        query: PendingQuery<'_>,
        ranking: &Ranking,
    ) -> StoreResult<Vec<Passage>> {
        // The segments load while the query is made.
        let (parts, query) = tokio::join!(self.parts_for(tenant, clearance), query);
        let parts = parts?;
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let ranking = ranking.clone();
        tokio::task::spawn_blocking(move || rank::search(&parts, &query, &ranking))
            .await
            .map_err(|e| StoreError::internal_from("search task failed", e))
    }

    /// The two manifests' versions (revalidated as a search would); `empty` for a scope
    /// with nothing indexed yet.
    async fn version(&self, tenant: &str) -> StoreResult<String> {
        let own = Scope::Tenant(tenant.to_owned());
        let (shared, own) = tokio::try_join!(self.snapshot(&Scope::Global), self.snapshot(&own))?;
        let version = |snapshot: &Snapshot| match &snapshot.state {
            State::Manifest(version) => version.etag.clone(),
            State::Empty => "empty".to_owned(),
        };
        Ok(format!("{}/{}", version(&shared), version(&own)))
    }
}

/// A segment a request needs.
struct Wanted {
    scope: Scope,
    /// Segment id.
    key: String,
    memory: u64,
    /// The manifest version that serves it.
    version: Arc<Version>,
}
