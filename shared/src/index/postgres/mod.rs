//! The search index in PostgreSQL with pgvector (`COACH_INDEX_STORE=postgres`): for tenants
//! larger than one function's memory, in a database that scales apart from Lambda (Aurora
//! PostgreSQL, say).
//!
//! Schema (Coach's own, applied on first write or by `coach-dev migrate`, see [`MIGRATIONS`]):
//!
//! - `coach_documents`: one row per indexed document, keyed by (scope, document_id): its
//!   title, source version, and the embedding model and dimension of its vectors.
//! - `coach_chunks`: one row per chunk, with its terms as Coach analyses them
//!   ([`crate::analysis`]: the same as the S3 store's) in a `tsvector` (each term with as
//!   many positions as it occurs) under a GIN index, and its length in terms; its unique key
//!   (scope, document_id, chunk) is the btree on the tenant. `coach_documents` records the
//!   analyser; documents indexed with another are analysed again ([`Database::reanalyse`]).
//! - `coach_index_versions`: per scope, a change counter and the chunks and terms it holds
//!   (BM25's collection statistics), kept by the transactions that change it.
//! - `coach_document_access`: who may read a document (`groups`, NULL for the whole tenant),
//!   the record's revision it came from, and the document's chunks and terms as indexed;
//!   set before the document is indexed. Each chunk and vector row carries a copy of the
//!   groups (`access`), so a search leaves out what the caller may not read in the scan
//!   itself, and takes the scope's statistics less those documents'.
//! - `coach_access_totals`: those chunks and terms summed per scope and set of groups, by a
//!   trigger on `coach_document_access`; what a search subtracts from the statistics.
//! - one vector table per embedding model and dimension ([`vector_table`]), named from the
//!   model's name and listed in `coach_vector_tables`: `vector(d)` under an HNSW index
//!   (cosine), with the chunk's scope and access. Vectors of different models never share a ranking:
//!   a query's vector is compared with the table of the model that made it.
//!
//! Every statement names the scope it reads or writes (a tenant and `_global`, the shared
//! docs), from the caller's principal: no path reads another tenant's rows.
//!
//! A document is written in one transaction (old version out, new one in), under an
//! advisory lock of its own that a delete takes too, and only if its source object is still
//! at the version read ([`DocumentIndex::add`]); readers see the whole old or the whole new.
//!
//! Search is one statement, prepared once per connection: the best [`Ranking::window`]
//! chunks by BM25 over the query's weighted terms, exactly as the S3 store scores them (the
//! same k1 and b, document frequencies counted over the scope's matching chunks, the
//! scope's chunk count and mean length; words too common to be worth their cost left out at
//! scale, see `search::QUERY_WORDS`), and the nearest as many by cosine distance (HNSW, iterative
//! scan so the scope filter cannot starve it), fused in SQL as the S3 store fuses them.
//!
//! Connections ([`Database`]): a small pool per function instance (kept across invocations), TLS verified
//! against the system's roots plus the CA in the Coach secret (`postgres_ca_pem`), the
//! password from the Coach secret (`postgres_password`), short connect and statement
//! timeouts. A failure to reach the database is [`Failure::Unreachable`] (a 503 for chat, a

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;

mod connection;
mod documents;
mod migrations;
mod search;

use connection::{failure, lock, pool_error};
use migrations::{REANALYSE_PER_WRITE, SCHEMA_LOCK};

pub use connection::{Database, PgConfig, PgSecret, SecretReader};
pub use documents::chunk_vector;
pub use migrations::MIGRATIONS;

use crate::store::{BlobStore, Failure, Probe, StoreError, StoreResult};
/// pgvector's HNSW indexes `vector` up to this dimension; above it, `halfvec` (up to 4,000).
const HNSW_MAX_VECTOR_DIMS: u32 = 2000;
pub(super) const HNSW_MAX_HALFVEC_DIMS: u32 = 4000;
/// How long a missing vector table is remembered before it is looked for again.
const MISSING_TABLE_RECHECK: Duration = Duration::from_secs(30);

/// The search index in PostgreSQL. Build once per cold start; connects on first use.
pub struct PgIndex {
    db: Database,
    /// Source objects, checked at commit.
    blobs: Arc<dyn BlobStore>,
    /// Vector tables known to exist.
    tables: Mutex<HashSet<String>>,
    /// Vector tables found missing, and when.
    missing: Mutex<HashMap<String, Instant>>,
    /// Whether no document of another analyser is left ([`Database::reanalyse`]).
    reanalysed: std::sync::atomic::AtomicBool,
}

/// A name for the vector table of `model` at `dims`: readable, unique (a hash of the model
/// name), and a valid unquoted identifier within PostgreSQL's 63 bytes.
pub fn vector_table(model: &str, dims: u32) -> String {
    let mut slug = String::new();
    for c in model.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('_') {
            slug.push('_');
        }
        if slug.len() >= 24 {
            break;
        }
    }
    let slug = slug.trim_matches('_');
    format!("coach_vectors_{slug}_{dims}_{:08x}", crate::ids::fnv1a(model) as u32)
}

/// The distance expression the HNSW index of a table of `dims` serves: `vector` directly,
/// `halfvec` above [`HNSW_MAX_VECTOR_DIMS`].
pub(super) fn distance(column: &str, param: &str, dims: u32) -> String {
    if dims <= HNSW_MAX_VECTOR_DIMS {
        format!("{column} <=> {param}::vector")
    } else {
        format!("{column}::halfvec({dims}) <=> {param}::vector::halfvec({dims})")
    }
}

impl PgIndex {
    pub fn new(config: PgConfig, secret: SecretReader, blobs: Arc<dyn BlobStore>) -> Self {
        Self {
            db: Database::new(config, secret),
            blobs,
            tables: Mutex::new(HashSet::new()),
            missing: Mutex::new(HashMap::new()),
            reanalysed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Applies Coach's schema migrations not applied yet ([`Database::migrate`]).
    pub async fn migrate(&self) -> StoreResult<()> {
        self.db.migrate().await
    }

    /// Before a write: the schema migrated, and documents of another analyser analysed
    /// again for at most [`REANALYSE_PER_WRITE`] while any are left.
    async fn prepare_write(&self) -> StoreResult<()> {
        use std::sync::atomic::Ordering;
        self.migrate().await?;
        if !self.reanalysed.load(Ordering::Relaxed) && self.db.reanalyse(REANALYSE_PER_WRITE).await? {
            self.reanalysed.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Creates the vector table of `model` at `dims` unless it exists.
    async fn ensure_vector_table(&self, model: &str, dims: u32) -> StoreResult<String> {
        let table = vector_table(model, dims);
        if lock(&self.tables).contains(&table) {
            return Ok(table);
        }
        if dims == 0 || dims > HNSW_MAX_HALFVEC_DIMS {
            return Err(StoreError::internal(format!(
                "vectors of {dims} dimensions cannot be indexed in PostgreSQL (at most {HNSW_MAX_HALFVEC_DIMS})"
            )));
        }
        let (name, model) = (table.clone(), model.to_owned());
        self.db
            .with_client("create a vector table", move |client| {
                let (table, model) = (name.clone(), model.clone());
                Box::pin(async move {
                    let tx = client.transaction().await?;
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).await?;
                    let known = tx
                        .query_opt(
                            "SELECT 1 FROM coach_vector_tables WHERE model = $1 AND dims = $2",
                            &[&model, &(dims as i32)],
                        )
                        .await?;
                    if known.is_none() {
                        let index = if dims <= HNSW_MAX_VECTOR_DIMS {
                            "embedding vector_cosine_ops".to_owned()
                        } else {
                            format!("(embedding::halfvec({dims})) halfvec_cosine_ops")
                        };
                        tx.batch_execute(&format!(
                            "CREATE TABLE {table} (
                             chunk_id bigint PRIMARY KEY REFERENCES coach_chunks (id) ON DELETE CASCADE,
                             scope text NOT NULL,
                             access text[],
                             embedding vector({dims}) NOT NULL
                         );
                         CREATE INDEX {table}_scope ON {table} (scope);
                         CREATE INDEX {table}_hnsw ON {table} USING hnsw ({index});"
                        ))
                        .await?;
                        tx.execute(
                            "INSERT INTO coach_vector_tables (model, dims, table_name) VALUES ($1, $2, $3)",
                            &[&model, &(dims as i32), &table],
                        )
                        .await?;
                        tracing::info!(table = %table, dims, "created a vector table");
                    }
                    tx.commit().await?;
                    Ok(())
                })
            })
            .await?;
        lock(&self.tables).insert(table.clone());
        lock(&self.missing).remove(&table);
        Ok(table)
    }

    /// Whether `table` was found missing recently (so a search skips it).
    fn recently_missing(&self, table: &str) -> bool {
        let mut missing = lock(&self.missing);
        match missing.get(table) {
            Some(at) if at.elapsed() < MISSING_TABLE_RECHECK => true,
            Some(_) => {
                missing.remove(table);
                false
            }
            None => false,
        }
    }
}

#[async_trait]
impl Probe for PgIndex {
    fn component(&self) -> &'static str {
        "postgres"
    }

    async fn check(&self) -> Result<(), Failure> {
        // An unreadable secret is the secret's failure, not the database's.
        let pool = self.db.pool().await.map_err(|_| Failure::Failed)?;
        let client =
            pool.get().await.map_err(|e| pool_error("check the database", e).failure().unwrap_or(Failure::Failed))?;
        client.simple_query("SELECT 1").await.map(|_| ()).map_err(|e| failure(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::{connection::usable, *};

    #[test]
    fn vector_tables_are_valid_distinct_identifiers() {
        let a = vector_table("sentence-transformers/all-MiniLM-L6-v2", 384);
        assert!(a.starts_with("coach_vectors_sentence_transformers_al_384_"), "{a}");
        assert!(a.len() <= 63 - "_scope".len(), "{a}");
        assert!(a.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{a}");
        assert_ne!(a, vector_table("sentence-transformers/all-MiniLM-L6-v3", 384), "the hash tells them apart");
        assert_ne!(a, vector_table("sentence-transformers/all-MiniLM-L6-v2", 768));
        let odd = vector_table("\"; DROP TABLE x; --", 8);
        assert!(odd.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{odd}");
        assert!(vector_table(&"x".repeat(500), 4000).len() <= 57);
    }

    #[test]
    fn configuration_is_checked() {
        let read = |vars: &[(&str, &str)]| crate::config::with(vars, PgConfig::from_env);
        assert_eq!(read(&[]), Ok(None));
        assert_eq!(read(&[("COACH_INDEX_STORE", "s3")]), Ok(None));
        assert_eq!(read(&[("COACH_INDEX_STORE", "mysql")]).unwrap_err().var, "COACH_INDEX_STORE");
        assert_eq!(read(&[("COACH_INDEX_STORE", "postgres")]).unwrap_err().var, "COACH_PG_HOST");
        let remote = [("COACH_INDEX_STORE", "postgres"), ("COACH_PG_HOST", "db.example.com")];
        let config = read(&remote).unwrap().unwrap();
        assert!(config.tls, "TLS by default");
        assert_eq!((config.port, config.database.as_str(), config.user.as_str()), (5432, "coach", "coach"));
        let plain = [remote[0], remote[1], ("COACH_PG_TLS", "disable")];
        assert_eq!(read(&plain).unwrap_err().var, "COACH_PG_TLS", "plain text only on loopback");
        let local = [remote[0], ("COACH_PG_HOST", "127.0.0.1"), ("COACH_PG_TLS", "disable")];
        assert!(!read(&local).unwrap().unwrap().tls);
    }

    #[test]
    fn vectors_pgvector_refuses_or_cannot_rank_are_left_out() {
        assert!(usable(&[0.5, -1.0]));
        assert!(!usable(&[0.0, 0.0]));
        assert!(!usable(&[f32::NAN, 1.0]));
        assert!(!usable(&[f32::INFINITY, 1.0]));
    }

    #[test]
    fn wide_vectors_are_compared_as_halfvec() {
        assert_eq!(distance("e", "$4", 384), "e <=> $4::vector");
        assert_eq!(distance("e", "$4", 3072), "e::halfvec(3072) <=> $4::vector::halfvec(3072)");
    }
}
