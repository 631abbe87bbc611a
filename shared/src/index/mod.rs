//! The search index's two stores, side by side: `COACH_INDEX_STORE=s3` (the default) and
//! `postgres` ([`PgIndex`], in [`postgres`]). Both are [`DocumentIndex`] and [`PassageSearch`]
//! and rank the same way; [`Index`] is the one a function uses.
//!
//! In S3, the index of each scope (a tenant, or the shared docs) is a manifest
//! and immutable segments, so a cold chat instance loads a tenant with one request for the
//! manifest plus one per segment (concurrently), whatever the number of documents.
//!
//! - Ingest writes each document as a one-document segment (its *delta*) and adds it to
//!   the manifest with a conditional write ([`IndexWriter::add`]); a delete adds a tombstone
//!   ([`IndexWriter::remove`]). After each add, small segments are merged into larger ones
//!   by tiers ([`MERGE_FACTOR`] at a time, up to `COACH_INDEX_SEGMENT_MB`), segments holding
//!   deleted or replaced documents are rewritten, damaged ones rebuilt from deltas, and
//!   unreferenced objects collected.
//! - Chat revalidates the manifest by ETag on each request and loads the segments it does
//!   not hold yet into a byte-bounded cache ([`IndexReader`]), then ranks them in process
//!   ([`rank`]).
//!
//! [`IndexWriter`] and [`IndexReader`] are the S3 store's [`DocumentIndex`] and
//! [`PassageSearch`]; the Postgres store is the other ([`PgIndex`]).
//!
//! The rules of a manifest change are pure functions in [`manifest`]; building and taking
//! apart segments is [`segment`]; the stored format belongs to [`crate::store`].

mod cache;
pub mod manifest;
pub mod postgres;
pub mod rank;
mod reader;
pub mod segment;
mod writer;

use std::{sync::Arc, time::Duration};

pub use cache::SegmentCache;
pub use manifest::MERGE_FACTOR;
pub use postgres::{PgConfig, PgIndex, PgSecret, SecretReader};
pub use reader::{scope_name, IndexReader, Part, LOAD_PARALLELISM};
pub use writer::IndexWriter;

use crate::{
    analysis::Analyzer,
    config::{ConfigError, Env},
    secrets::Secrets,
    store::{AwsClients, DocumentIndex, PassageSearch, Probe, StoreError, DOCUMENT_INDEX},
};

/// Fields of the Coach secret the Postgres index store reads.
pub const PG_PASSWORD_FIELD: &str = "postgres_password";
pub const PG_CA_FIELD: &str = "postgres_ca_pem";

/// The index store `COACH_INDEX_STORE` names, as a function uses it. Build once per cold
/// start.
pub enum Index {
    /// Segments in the bucket, read and written in process (the default).
    S3(IndexConfig),
    /// PostgreSQL with pgvector; connects on first use.
    Postgres(Arc<PgIndex>),
}

/// Which index store a function uses, with its settings.
#[derive(Debug, Clone)]
pub enum IndexStoreConfig {
    S3(IndexConfig),
    Postgres(PgConfig),
}

impl IndexStoreConfig {
    /// `COACH_INDEX_STORE` (`s3` or `postgres`) with its settings (`COACH_INDEX_*` or
    /// `COACH_PG_*`).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(match PgConfig::from_env(env)? {
            Some(config) => Self::Postgres(config),
            None => Self::S3(IndexConfig::from_env(env)?),
        })
    }
}

impl Index {
    /// The store `config` names. `secrets` is the Coach secret, read (for the database's
    /// password and CA) only by the Postgres store, when it connects.
    pub fn new(config: IndexStoreConfig, aws: &AwsClients, secrets: &Secrets) -> Self {
        let config = match config {
            IndexStoreConfig::S3(config) => return Index::S3(config),
            IndexStoreConfig::Postgres(config) => config,
        };
        let secrets = secrets.clone();
        let reader: SecretReader = Arc::new(move || {
            let secrets = secrets.clone();
            Box::pin(async move {
                let unreadable = |e| StoreError::unavailable(DOCUMENT_INDEX, e);
                Ok(PgSecret {
                    password: secrets.field(PG_PASSWORD_FIELD).await.map_err(unreadable)?,
                    ca_pem: secrets.field(PG_CA_FIELD).await.map_err(unreadable)?,
                })
            })
        });
        Index::Postgres(Arc::new(PgIndex::new(config, reader, Arc::new(aws.bucket()))))
    }

    /// What chat searches.
    pub fn search(&self, aws: &AwsClients) -> Arc<dyn PassageSearch> {
        match self {
            Index::S3(config) => Arc::new(IndexReader::new(Arc::new(aws.bucket()), config)),
            Index::Postgres(pg) => pg.clone(),
        }
    }

    /// What ingest and deletes write.
    pub fn writer(&self, aws: &AwsClients) -> Arc<dyn DocumentIndex> {
        match self {
            Index::S3(config) => {
                let bucket = Arc::new(aws.bucket());
                Arc::new(IndexWriter::new(bucket.clone(), bucket, config.clone()))
            }
            Index::Postgres(pg) => pg.clone(),
        }
    }

    /// The database, for `GET /health`, when the store is one (the bucket is checked anyway).
    pub fn probe(&self) -> Option<Arc<dyn Probe>> {
        match self {
            Index::S3(_) => None,
            Index::Postgres(pg) => Some(pg.clone()),
        }
    }
}

/// Locks a std mutex, still using it after a panic elsewhere: every map behind these locks
/// is changed by single inserts and removes, so a poisoned one is still consistent.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Index settings (`COACH_INDEX_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexConfig {
    /// Size compaction aims for (segments at half of it are not merged further).
    pub segment_bytes: u64,
    /// How long an object nobody references any more is kept for readers still using it.
    pub gc_grace: Duration,
    /// Age after which an object no manifest ever named (left by a writer that crashed) is
    /// deleted; longer than any ingest runs.
    pub orphan_age: Duration,
    /// Least time between revalidations of a scope's manifest (0: every request).
    pub revalidate: Duration,
    /// Bytes of loaded segments a chat instance keeps.
    pub cache_bytes: u64,
    /// How text becomes terms (`COACH_SEARCH_LANGUAGE`), for writing and searching alike.
    pub analyzer: Analyzer,
}

impl IndexConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        // By default half of the function's memory (Lambda sets its size), else 1 GiB.
        let memory_mb = env.number("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")?;
        Ok(Self {
            segment_bytes: env.number("COACH_INDEX_SEGMENT_MB")? << 20,
            gc_grace: Duration::from_secs(env.number("COACH_INDEX_GC_GRACE_SECS")?),
            orphan_age: Duration::from_secs(env.number("COACH_INDEX_ORPHAN_SECS")?),
            revalidate: Duration::from_secs(env.number("COACH_INDEX_REVALIDATE_SECS")?),
            cache_bytes: env.number_or("COACH_INDEX_CACHE_MB", memory_mb / 2)? << 20,
            analyzer: Analyzer::from_env(env)?,
        })
    }
}
