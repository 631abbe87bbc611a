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
//! - one vector table per embedding model and dimension ([`vector_table`]), named from the
//!   model's name and listed in `coach_vector_tables`: `vector(d)` under an HNSW index
//!   (cosine), with the chunk's scope. Vectors of different models never share a ranking:
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
//! scale, see [`QUERY_WORDS`]), and the nearest as many by cosine distance (HNSW, iterative
//! scan so the scope filter cannot starve it), fused by reciprocal rank in SQL.
//!
//! Connections ([`Database`]): a small pool per function instance (kept across invocations), TLS verified
//! against the system's roots plus the CA in the Coach secret (`postgres_ca_pem`), the
//! password from the Coach secret (`postgres_password`), short connect and statement
//! timeouts. A failure to reach the database is [`Failure::Unreachable`] (a 503 for chat, a
//! retried event for ingest); a pooled connection found dead is replaced once.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use pgvector::Vector;
use tokio_postgres::{error::SqlState, Row};

use super::{Added, BlobStore, DocumentIndex, Failure, PassageSearch, PendingQuery, Probe, StoreError};
use crate::{
    analysis::{Analyzer, MAX_TERM_FREQUENCY},
    config::{ConfigError, Env},
    error::Error,
    model::{Chunk, Passage, Ranking, Scope, Shard, Span},
};

/// pgvector's HNSW indexes `vector` up to this dimension; above it, `halfvec` (up to 4,000).
const HNSW_MAX_VECTOR_DIMS: u32 = 2000;
const HNSW_MAX_HALFVEC_DIMS: u32 = 4000;
/// Advisory lock (any constant) serialising Coach's schema changes.
const SCHEMA_LOCK: i64 = 0x436f_6163_6853_6368;
/// How long a missing vector table is remembered before it is looked for again.
const MISSING_TABLE_RECHECK: Duration = Duration::from_secs(30);

const UNAVAILABLE: &str = "the document index is unavailable";

/// Coach's schema, in order; each entry is applied once, in one transaction, and recorded
/// in `coach_schema_migrations`. Never edit an entry: add one.
pub const MIGRATIONS: &[&str] = &[
    // 1: documents, chunks with their words, the list of vector tables.
    "CREATE EXTENSION IF NOT EXISTS vector;
     CREATE TABLE coach_documents (
         scope text NOT NULL,
         document_id text NOT NULL,
         title text NOT NULL,
         source_etag text NOT NULL,
         embedding_model text,
         dims integer NOT NULL DEFAULT 0,
         chunks integer NOT NULL,
         indexed_at timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (scope, document_id)
     );
     CREATE TABLE coach_chunks (
         id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
         scope text NOT NULL,
         document_id text NOT NULL,
         chunk integer NOT NULL,
         heading text,
         body text NOT NULL,
         words tsvector GENERATED ALWAYS AS (to_tsvector('english', coalesce(heading, '') || ' ' || body)) STORED,
         UNIQUE (scope, document_id, chunk),
         FOREIGN KEY (scope, document_id) REFERENCES coach_documents ON DELETE CASCADE
     );
     CREATE INDEX coach_chunks_words ON coach_chunks USING gin (words);
     CREATE TABLE coach_vector_tables (
         model text NOT NULL,
         dims integer NOT NULL,
         table_name text NOT NULL UNIQUE,
         created_at timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (model, dims)
     );",
    // 2: a change counter per scope, bumped by every commit that changes what a search of
    // the scope may return (the index version answer caches key on).
    "CREATE TABLE coach_index_versions (
         scope text PRIMARY KEY,
         version bigint NOT NULL
     );",
    // 3: Coach's own terms (the S3 store's analyser) in place of PostgreSQL's English
    // configuration, chunk lengths, and each scope's BM25 statistics. Existing chunks get
    // their terms from `Database::reanalyse` (no analyser recorded yet).
    "ALTER TABLE coach_chunks ADD COLUMN terms tsvector, ADD COLUMN length integer NOT NULL DEFAULT 0;
     CREATE INDEX coach_chunks_terms ON coach_chunks USING gin (terms);
     DROP INDEX coach_chunks_words;
     ALTER TABLE coach_chunks DROP COLUMN words;
     ALTER TABLE coach_documents ADD COLUMN analyzer text, ADD COLUMN length bigint NOT NULL DEFAULT 0;
     ALTER TABLE coach_index_versions
         ADD COLUMN chunks bigint NOT NULL DEFAULT 0, ADD COLUMN length bigint NOT NULL DEFAULT 0;
     INSERT INTO coach_index_versions (scope, version, chunks)
         SELECT scope, 1, sum(chunks) FROM coach_documents GROUP BY scope
         ON CONFLICT (scope) DO UPDATE
         SET version = coach_index_versions.version + 1, chunks = excluded.chunks;",
    // 4: where each chunk is in its document's extracted text (none for chunks indexed
    // before: their documents are cited without it until indexed again).
    "ALTER TABLE coach_chunks
         ADD COLUMN span_start bigint, ADD COLUMN span_end bigint,
         ADD COLUMN first_page integer, ADD COLUMN last_page integer;",
];

/// Bumps a scope's change counter and moves its chunk and term counts by $2 and $3, in the
/// transaction that changes it (last, so the row lock it takes is held only until the
/// commit).
const BUMP_VERSION: &str = "INSERT INTO coach_index_versions (scope, version, chunks, length) VALUES ($1, 1, $2, $3)
     ON CONFLICT (scope) DO UPDATE SET version = coach_index_versions.version + 1,
         chunks = coach_index_versions.chunks + $2, length = coach_index_versions.length + $3";

/// `text` as a lexeme in `tsvector` or `tsquery` input: quoted, its quotes and backslashes
/// escaped.
fn lexeme(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// A chunk's terms as `tsvector` input: each term with positions 1 to its frequency, so the
/// number of positions is the term frequency. And the chunk's length in terms.
fn chunk_vector(analyzer: &Analyzer, chunk: &Chunk) -> (String, i32) {
    let (terms, length) = analyzer.chunk_terms(chunk);
    let mut out = String::new();
    for (term, tf) in terms {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&lexeme(&term));
        out.push(':');
        let positions: Vec<String> = (1..=tf.min(MAX_TERM_FREQUENCY)).map(|p| p.to_string()).collect();
        out.push_str(&positions.join(","));
    }
    (out, length as i32)
}

/// Connection settings (`COACH_PG_*`); the password and an extra CA come from the Coach secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgConfig {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    /// Verify the server's certificate and name (`verify-full`); off only on loopback.
    pub tls: bool,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// Most rows (of the whole table, estimated) a query word may match and still be searched
    /// (0: every word is); see [`QUERY_WORDS`].
    pub word_rows: u64,
    /// HNSW candidate list size (recall against speed). A search asking for more (the
    /// fusion window) gets them all the same: the scan is iterative.
    pub ef_search: u32,
    /// How text becomes terms (`COACH_SEARCH_LANGUAGE`), as the S3 store's.
    pub analyzer: Analyzer,
}

impl PgConfig {
    /// `None` unless `COACH_INDEX_STORE` is `postgres` (the default is `s3`).
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        match env.string_or("COACH_INDEX_STORE", "s3").as_str() {
            "s3" => return Ok(None),
            "postgres" => {}
            other => {
                let reason = format!("expected s3 or postgres, got {other:?}");
                return Err(ConfigError { var: "COACH_INDEX_STORE", reason });
            }
        }
        let host = env.string("COACH_PG_HOST").ok_or_else(|| ConfigError {
            var: "COACH_PG_HOST",
            reason: "required with COACH_INDEX_STORE=postgres (the cluster's or RDS Proxy's endpoint)".into(),
        })?;
        let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let tls = match env.string_or("COACH_PG_TLS", "verify-full").as_str() {
            "verify-full" => true,
            "disable" if loopback => false,
            "disable" => {
                let reason = format!("TLS can be turned off only for a server on loopback, not {host:?}");
                return Err(ConfigError { var: "COACH_PG_TLS", reason });
            }
            other => {
                let reason = format!("expected verify-full or disable, got {other:?}");
                return Err(ConfigError { var: "COACH_PG_TLS", reason });
            }
        };
        Ok(Some(Self {
            host,
            port: env.number("COACH_PG_PORT", 5432, 1, 65_535)? as u16,
            database: env.string_or("COACH_PG_DATABASE", "coach"),
            user: env.string_or("COACH_PG_USER", "coach"),
            tls,
            pool_size: env.number("COACH_PG_POOL_SIZE", 4, 1, 64)? as usize,
            connect_timeout: Duration::from_secs(env.number("COACH_PG_CONNECT_TIMEOUT_SECS", 3, 1, 60)?),
            statement_timeout: Duration::from_secs(env.number("COACH_PG_STATEMENT_TIMEOUT_SECS", 10, 1, 900)?),
            ef_search: env.number("COACH_PG_EF_SEARCH", 100, 10, 1000)? as u32,
            word_rows: env.number("COACH_PG_WORD_ROWS", 20_000, 0, 1_000_000_000)?,
            analyzer: Analyzer::from_env(env)?,
        }))
    }
}

/// What the Coach secret holds for the database.
#[derive(Clone, Default)]
pub struct PgSecret {
    /// `postgres_password` (none: the server does not ask for one, as locally).
    pub password: Option<String>,
    /// `postgres_ca_pem`: certificates to trust besides the system's (the RDS CA bundle when
    /// connecting to the cluster directly; RDS Proxy's certificate needs none).
    pub ca_pem: Option<String>,
}

/// Reads [`PgSecret`] when the pool (re)connects.
pub type SecretReader = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<PgSecret, Error>> + Send>> + Send + Sync>;

/// Connections to Coach's database (a pool, built on first use from the configuration and
/// the secret) and its schema.
pub struct Database {
    config: PgConfig,
    secret: SecretReader,
    pool: tokio::sync::Mutex<Option<Pool>>,
    migrated: tokio::sync::OnceCell<()>,
}

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
fn distance(column: &str, param: &str, dims: u32) -> String {
    if dims <= HNSW_MAX_VECTOR_DIMS {
        format!("{column} <=> {param}::vector")
    } else {
        format!("{column}::halfvec({dims}) <=> {param}::vector::halfvec({dims})")
    }
}

/// Locks a std mutex, still using it after a panic elsewhere (single inserts and removes
/// leave the sets behind these locks consistent).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What an operator reads from a PostgreSQL error.
fn failure(e: &tokio_postgres::Error) -> Failure {
    if let Some(code) = e.code() {
        return match code {
            c if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                || *c == SqlState::INSUFFICIENT_PRIVILEGE =>
            {
                Failure::AccessDenied
            }
            c if *c == SqlState::TOO_MANY_CONNECTIONS
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                Failure::Throttled
            }
            c if *c == SqlState::QUERY_CANCELED => Failure::TimedOut,
            c if *c == SqlState::INVALID_CATALOG_NAME || *c == SqlState::UNDEFINED_TABLE => Failure::NotFound,
            c if *c == SqlState::CANNOT_CONNECT_NOW || *c == SqlState::ADMIN_SHUTDOWN => Failure::Unreachable,
            _ => Failure::Failed,
        };
    }
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::TimedOut) => Failure::TimedOut,
        Some(_) => Failure::Unreachable,
        None if e.is_closed() || e.to_string().contains("timeout") => Failure::Unreachable,
        None => Failure::Failed,
    }
}

fn service(action: &'static str, e: tokio_postgres::Error) -> StoreError {
    StoreError::Service { action, failure: failure(&e), cause: Box::new(e) }
}

fn pool_error(action: &'static str, e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => service(action, e),
        PoolError::Timeout(_) => StoreError::Service {
            action,
            failure: Failure::TimedOut,
            cause: "no database connection within the timeout".into(),
        },
        other => StoreError::Service { action, failure: Failure::Failed, cause: other.to_string().into() },
    }
}

fn unavailable(cause: StoreError) -> Error {
    Error::unavailable(UNAVAILABLE, cause)
}

/// PostgreSQL text cannot hold NUL: extracted text rarely has one, and it means nothing.
fn text(s: &str) -> String {
    s.replace('\0', " ")
}

/// A usable vector: finite, not all zeros (pgvector refuses NaN and infinity; a zero vector
/// has no direction, so no similarity).
fn usable(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite()) && v.iter().any(|x| *x != 0.0)
}

fn is_undefined_table(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNDEFINED_TABLE)
}

impl Database {
    pub fn new(config: PgConfig, secret: SecretReader) -> Self {
        Self { config, secret, pool: tokio::sync::Mutex::new(None), migrated: tokio::sync::OnceCell::new() }
    }

    /// The pool, built on first use from the configuration and the secret.
    async fn pool(&self) -> Result<Pool, Error> {
        let mut pool = self.pool.lock().await;
        if let Some(pool) = pool.as_ref() {
            return Ok(pool.clone());
        }
        let secret = (self.secret)().await?;
        let built = self.build_pool(&secret)?;
        *pool = Some(built.clone());
        Ok(built)
    }

    fn build_pool(&self, secret: &PgSecret) -> Result<Pool, Error> {
        let c = &self.config;
        let mut pg = tokio_postgres::Config::new();
        pg.host(&c.host)
            .port(c.port)
            .dbname(&c.database)
            .user(&c.user)
            .application_name("coach")
            .connect_timeout(c.connect_timeout)
            // A peer gone silent (a failover, a network fault) is given up within seconds,
            // not the kernel's minutes: unacknowledged data after 10 s, or an idle connection
            // not answering keepalives (after 30 s, every 5 s, 3 times) ends the connection.
            .tcp_user_timeout(Duration::from_secs(10))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .options(format!(
                "-c statement_timeout={} -c hnsw.ef_search={} -c hnsw.iterative_scan=relaxed_order",
                c.statement_timeout.as_millis(),
                c.ef_search
            ));
        if let Some(password) = &secret.password {
            pg.password(password);
        }
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = if c.tls {
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
            Manager::from_config(pg, tls(secret.ca_pem.as_deref())?, manager_config)
        } else {
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            Manager::from_config(pg, tokio_postgres::NoTls, manager_config)
        };
        Pool::builder(manager)
            .max_size(c.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(c.connect_timeout * 2))
            .wait_timeout(Some(c.statement_timeout + c.connect_timeout))
            .recycle_timeout(Some(c.connect_timeout))
            .build()
            .map_err(|e| Error::Internal { detail: format!("database pool: {e}"), cause: None })
    }

    /// A pooled connection. After a refused login the pool is dropped, so the next use reads
    /// the secret again (a rotated password).
    async fn client(&self, action: &'static str) -> Result<deadpool_postgres::Object, Error> {
        let pool = self.pool().await?;
        match pool.get().await {
            Ok(client) => Ok(client),
            Err(e) => {
                let e = pool_error(action, e);
                if e.failure() == Some(Failure::AccessDenied) {
                    self.pool.lock().await.take();
                }
                Err(unavailable(e))
            }
        }
    }

    /// Runs `work` on a pooled connection; when the connection turns out dead (the server
    /// or a proxy closed it while the instance was frozen), once more on a fresh one. `work`
    /// must be safe to repeat: every operation here is.
    async fn with_client<T, F>(&self, action: &'static str, work: F) -> Result<T, Error>
    where
        F: for<'c> Fn(&'c mut deadpool_postgres::Object) -> Pin<Box<dyn Future<Output = Result<T, Op>> + Send + 'c>>,
    {
        let mut client = self.client(action).await?;
        match work(&mut client).await {
            Err(Op::Db(e)) if e.is_closed() || failure(&e) == Failure::Unreachable => {
                drop(deadpool_postgres::Object::take(client));
                let mut client = self.client(action).await?;
                work(&mut client).await.map_err(|e| e.into_error(action))
            }
            other => other.map_err(|e| e.into_error(action)),
        }
    }

    /// Applies the [`MIGRATIONS`] not applied yet (once per instance; concurrent instances
    /// wait for each other on an advisory lock).
    pub async fn migrate(&self) -> Result<(), Error> {
        self.migrated
            .get_or_try_init(|| {
                self.with_client("migrate the index schema", |client| {
                    Box::pin(async move {
                        let tx = client.transaction().await?;
                        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).await?;
                        tx.batch_execute(
                            "CREATE TABLE IF NOT EXISTS coach_schema_migrations (
                                 version integer PRIMARY KEY,
                                 applied_at timestamptz NOT NULL DEFAULT now()
                             )",
                        )
                        .await?;
                        let row =
                            tx.query_one("SELECT coalesce(max(version), 0) FROM coach_schema_migrations", &[]).await?;
                        let applied: i32 = row.get(0);
                        for (version, sql) in (1..).zip(MIGRATIONS).skip(applied.max(0) as usize) {
                            tx.batch_execute(sql).await?;
                            tx.execute("INSERT INTO coach_schema_migrations (version) VALUES ($1)", &[&version])
                                .await?;
                            tracing::info!(version, "applied an index schema migration");
                        }
                        tx.commit().await?;
                        Ok(())
                    })
                })
            })
            .await
            .copied()
    }
}

/// Documents analysed again per transaction by [`Database::reanalyse`].
const REANALYSE_BATCH: i64 = 20;
/// How long a write spends analysing older documents again before its own work, until
/// none is left (`coach-dev migrate` does them all at once).
const REANALYSE_PER_WRITE: Duration = Duration::from_secs(5);

impl Database {
    /// Analyses again, with the configured analyser, the documents indexed with another (or
    /// before analysers were recorded), [`REANALYSE_BATCH`] per transaction, each document's
    /// chunks and its scope's statistics together, until none is left (`Ok(true)`) or
    /// `budget` has passed (`Ok(false)`). Concurrent callers skip each other's documents.
    pub async fn reanalyse(&self, budget: Duration) -> Result<bool, Error> {
        let started = Instant::now();
        let analyzer = Arc::new(self.config.analyzer.clone());
        loop {
            let analyzer = analyzer.clone();
            let done = self
                .with_client("analyse documents again", move |client| {
                    let analyzer = analyzer.clone();
                    Box::pin(async move {
                        let id = analyzer.id();
                        let tx = client.transaction().await?;
                        let docs = tx
                            .query(
                                "SELECT scope, document_id, length FROM coach_documents
                                 WHERE analyzer IS DISTINCT FROM $1
                                 ORDER BY scope, document_id LIMIT $2 FOR UPDATE SKIP LOCKED",
                                &[&id, &REANALYSE_BATCH],
                            )
                            .await?;
                        for doc in &docs {
                            let (scope, document_id, old_length): (String, String, i64) =
                                (doc.get(0), doc.get(1), doc.get(2));
                            let rows = tx
                                .query(
                                    "SELECT id, heading, body FROM coach_chunks WHERE scope = $1 AND document_id = $2",
                                    &[&scope, &document_id],
                                )
                                .await?;
                            let mut ids = Vec::with_capacity(rows.len());
                            let mut vectors = Vec::with_capacity(rows.len());
                            let mut lengths = Vec::with_capacity(rows.len());
                            for row in &rows {
                                let chunk = Chunk { heading: row.get(1), text: row.get(2), span: None };
                                let (vector, length) = chunk_vector(&analyzer, &chunk);
                                ids.push(row.get::<_, i64>(0));
                                vectors.push(vector);
                                lengths.push(length);
                            }
                            tx.execute(
                                "UPDATE coach_chunks c SET terms = t.v::tsvector, length = t.l
                                 FROM unnest($1::int8[], $2::text[], $3::int4[]) AS t(id, v, l) WHERE c.id = t.id",
                                &[&ids, &vectors, &lengths],
                            )
                            .await?;
                            let length: i64 = lengths.iter().map(|&l| i64::from(l)).sum();
                            tx.execute(
                                "UPDATE coach_documents SET analyzer = $3, length = $4
                                 WHERE scope = $1 AND document_id = $2",
                                &[&scope, &document_id, &id, &length],
                            )
                            .await?;
                            tx.execute(BUMP_VERSION, &[&scope, &0i64, &(length - old_length)]).await?;
                        }
                        tx.commit().await?;
                        Ok((docs.len() as i64) < REANALYSE_BATCH)
                    })
                })
                .await?;
            if done {
                return Ok(true);
            }
            if started.elapsed() >= budget {
                return Ok(false);
            }
        }
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
    pub async fn migrate(&self) -> Result<(), Error> {
        self.db.migrate().await
    }

    /// Before a write: the schema migrated, and documents of another analyser analysed
    /// again for at most [`REANALYSE_PER_WRITE`] while any are left.
    async fn prepare_write(&self) -> Result<(), Error> {
        use std::sync::atomic::Ordering;
        self.migrate().await?;
        if !self.reanalysed.load(Ordering::Relaxed) && self.db.reanalyse(REANALYSE_PER_WRITE).await? {
            self.reanalysed.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Creates the vector table of `model` at `dims` unless it exists.
    async fn ensure_vector_table(&self, model: &str, dims: u32) -> Result<String, Error> {
        let table = vector_table(model, dims);
        if lock(&self.tables).contains(&table) {
            return Ok(table);
        }
        if dims == 0 || dims > HNSW_MAX_HALFVEC_DIMS {
            return Err(Error::internal(format!(
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

    async fn run_search(
        &self,
        tenant: &str,
        terms: &[&(String, f32)],
        vector: Option<(String, Vec<f32>)>,
        ranking: &Ranking,
    ) -> Result<Result<Vec<Row>, tokio_postgres::Error>, Error> {
        let window = ranking.window() as i64;
        let top_k = ranking.top_k as i64;
        let (weight, min_score) = (f64::from(ranking.vector_weight), f64::from(ranking.min_score));
        let max_distance = 1.0 - f64::from(ranking.min_similarity);
        let word_rows = self.db.config.word_rows as f64;
        let (words, weights): (Vec<String>, Vec<f64>) = terms.iter().map(|(t, w)| (text(t), f64::from(*w))).unzip();
        let tenant = tenant.to_owned();
        self.db
            .with_client("search the index", move |client| {
                let (tenant, words, weights, vector) = (tenant.clone(), words.clone(), weights.clone(), vector.clone());
                Box::pin(async move {
                    let sql = search_sql(vector.as_ref().map(|(table, v)| (table.as_str(), v.len() as u32)));
                    let statement = match client.prepare_cached(&sql).await {
                        Ok(s) => s,
                        Err(e) if is_undefined_table(&e) => return Ok(Err(e)),
                        Err(e) => return Err(e.into()),
                    };
                    let result = match &vector {
                        Some((_, v)) => {
                            let v = Vector::from(v.clone());
                            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
                                &words,
                                &tenant,
                                &window,
                                &min_score,
                                &top_k,
                                &word_rows,
                                &weights,
                                &v,
                                &max_distance,
                                &weight,
                            ];
                            client.query(&statement, &params).await
                        }
                        None => {
                            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
                                [&words, &tenant, &window, &min_score, &top_k, &word_rows, &weights];
                            client.query(&statement, &params).await
                        }
                    };
                    match result {
                        Err(e) if is_undefined_table(&e) => Ok(Err(e)),
                        Err(e) => Err(e.into()),
                        Ok(rows) => Ok(Ok(rows)),
                    }
                })
            })
            .await
    }
}

/// Why an operation on a connection failed.
enum Op {
    Db(tokio_postgres::Error),
    Other(Error),
}

impl From<tokio_postgres::Error> for Op {
    fn from(e: tokio_postgres::Error) -> Self {
        Op::Db(e)
    }
}

impl From<Error> for Op {
    fn from(e: Error) -> Self {
        Op::Other(e)
    }
}

impl Op {
    fn into_error(self, action: &'static str) -> Error {
        match self {
            Op::Db(e) => unavailable(service(action, e)),
            Op::Other(e) => e,
        }
    }
}

/// The TLS connector: the system's roots, plus `ca_pem`'s certificates.
fn tls(ca_pem: Option<&str>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, Error> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(pem) = ca_pem {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|_| Error::internal("postgres_ca_pem in the Coach secret is not PEM certificates"))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(Error::internal("postgres_ca_pem in the Coach secret holds no usable certificate"));
        }
    }
    if roots.is_empty() {
        return Err(Error::internal("no trusted certificates to verify the database with"));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The query's terms, as the search statement weighs them: each term ($1) with its weight
/// ($7), each term's share of the table's chunks from the planner's statistics (`pg_stats`,
/// kept by autovacuum's ANALYZE), and the terms actually searched: those estimated to match
/// at most $6 rows (0: every term), or if none is, the one matching fewest. A term in a
/// large share of the chunks (a corpus' own stop word) ranks little in BM25 and costs the
/// most to rank (every chunk it matches is read), so at scale it is left out; in a table of
/// fewer chunks than $6, nothing is, and the ranking is the S3 store's exactly. Terms missing
/// from the statistics (the rare ones, or a table not analysed yet) count as matching none.
const QUERY_WORDS: &str = r#"query_terms AS (
    SELECT term, weight FROM unnest($1::text[], $7::float8[]) AS t(term, weight)
), chunks AS (
    SELECT greatest(reltuples, 0)::float8 AS n FROM pg_class WHERE oid = 'coach_chunks'::regclass
), estimated AS (
    SELECT q.term, q.weight, least(coalesce(s.share::float8 * chunks.n, 0), chunks.n) AS rows
    FROM query_terms q
    CROSS JOIN chunks
    LEFT JOIN (
        SELECT e.lexeme, st.most_common_elem_freqs[e.i] AS share
        FROM pg_stats st, unnest(st.most_common_elems::text::text[]) WITH ORDINALITY AS e(lexeme, i)
        WHERE st.schemaname = current_schema() AND st.tablename = 'coach_chunks' AND st.attname = 'terms'
    ) s ON s.lexeme = q.term
), searched AS (
    SELECT term, weight FROM estimated WHERE $6::float8 = 0 OR rows <= $6::float8
    UNION ALL
    SELECT term, weight FROM (SELECT term, weight FROM estimated ORDER BY rows, term LIMIT 1) fewest
    WHERE NOT EXISTS (SELECT 1 FROM estimated WHERE $6::float8 = 0 OR rows <= $6::float8)
), query AS (
    SELECT coalesce(string_agg('''' || replace(replace(term, '\', '\\'), '''', '''''') || '''', ' | '), '')::tsquery AS q,
           array_agg(term) AS terms
    FROM searched
), stats AS (
    SELECT greatest(coalesce(sum(v.chunks), 0), 1)::float8 AS n,
           greatest(coalesce(sum(v.length), 0)::float8 / greatest(coalesce(sum(v.chunks), 0), 1), 1) AS avgdl
    FROM coach_index_versions v WHERE v.scope = $2 OR v.scope = '_global'
)"#;

/// The search statement, words only (`vectors: None`) or words and the vectors of a table
/// (and its dimension). Parameters: $1 query terms, $2 tenant, $3 window, $4 least fused
/// score, $5 top_k, $6 most rows a searched term may match (see [`QUERY_WORDS`]), $7 the
/// terms' weights; with vectors also $8 the query's vector, $9 greatest cosine distance,
/// $10 the vector ranking's weight.
///
/// The word ranking is BM25 as the S3 store computes it ([`crate::index::rank`]): per
/// searched term in a matching chunk, weight x idf x tf (k1 + 1) / (tf + k1 (1 - b + b
/// length / mean length)), the term frequency read from the number of its positions
/// (`setweight` marks the query's terms, `ts_filter` keeps them), document frequencies
/// counted over the scope's matching chunks, chunk count and mean length from
/// `coach_index_versions`. Each ranking keeps its best `window`; they are fused by document
/// as the S3 store fuses them ([`crate::index::rank`]): a document at the rank of its best
/// chunk scores weight / (60 + rank) in each ranking, summed; the best `top_k` documents,
/// each with its chunk of the best chunk-level fused score, then (when fewer documents
/// match) other chunks by that score.
fn search_sql(vectors: Option<(&str, u32)>) -> String {
    let (nearest, semantic) = match vectors {
        Some((table, dims)) => {
            let distance = distance("v.embedding", "$8", dims);
            (
                format!(
                    ", nearest AS MATERIALIZED (
    SELECT v.chunk_id AS id, {distance} AS distance
    FROM {table} v
    WHERE v.scope = $2 OR v.scope = '_global'
    ORDER BY {distance}
    LIMIT $3
)"
                ),
                "
    UNION ALL
    SELECT 1, n.id, c.scope, c.document_id, row_number() OVER (ORDER BY n.distance, n.id), $10::float8
    FROM nearest n JOIN coach_chunks c ON c.id = n.id
    WHERE n.distance <= $9",
            )
        }
        None => (String::new(), ""),
    };
    format!(
        "WITH {QUERY_WORDS}, matched AS MATERIALIZED (
    SELECT c.id, c.length, t.lexeme, least(cardinality(t.positions), {MAX_TERM_FREQUENCY})::float8 AS tf
    FROM coach_chunks c
    CROSS JOIN query
    CROSS JOIN LATERAL unnest(ts_filter(setweight(c.terms, 'A', query.terms), '{{a}}')) AS t
    WHERE (c.scope = $2 OR c.scope = '_global') AND c.terms @@ query.q
), frequencies AS (
    SELECT lexeme, count(*)::float8 AS df FROM matched GROUP BY lexeme
), best_words AS (
    SELECT m.id,
           sum(s.weight * ln(1 + (stats.n - f.df + 0.5) / (f.df + 0.5))
               * m.tf * ({k1} + 1) / (m.tf + {k1} * (1 - {b} + {b} * m.length / stats.avgdl))) AS score
    FROM matched m
    JOIN frequencies f ON f.lexeme = m.lexeme
    JOIN searched s ON s.term = m.lexeme
    CROSS JOIN stats
    GROUP BY m.id
    ORDER BY score DESC, m.id
    LIMIT $3
){nearest}, ranked AS (
    SELECT 0 AS k, b.id, c.scope, c.document_id, row_number() OVER (ORDER BY b.score DESC, b.id) AS r, 1.0::float8 AS w
    FROM best_words b JOIN coach_chunks c ON c.id = b.id{semantic}
), chunk_scores AS (
    SELECT id, scope, document_id, sum(w / (60 + r)) AS score FROM ranked GROUP BY id, scope, document_id
), document_scores AS (
    SELECT scope, document_id, sum(w / (60 + rank)) AS score
    FROM (
        SELECT scope, document_id, w, row_number() OVER (PARTITION BY k ORDER BY best) AS rank
        FROM (SELECT k, scope, document_id, max(w) AS w, min(r) AS best FROM ranked GROUP BY k, scope, document_id) b
    ) d
    GROUP BY scope, document_id
), best_chunks AS (
    SELECT DISTINCT ON (scope, document_id) id, scope, document_id
    FROM chunk_scores ORDER BY scope, document_id, score DESC, id
), top_documents AS (
    SELECT b.id, d.score FROM document_scores d JOIN best_chunks b USING (scope, document_id)
    WHERE d.score >= $4
    ORDER BY d.score DESC, d.scope, d.document_id
    LIMIT $5
), chosen AS (
    SELECT id, score, 0 AS tier FROM top_documents
    UNION ALL
    SELECT id, score, 1 FROM (
        SELECT id, score FROM chunk_scores
        WHERE score >= $4 AND id NOT IN (SELECT id FROM top_documents)
        ORDER BY score DESC, id
        LIMIT greatest($5 - (SELECT count(*) FROM top_documents), 0)
    ) rest
)
SELECT c.document_id, d.title, c.chunk, f.score::float4, c.heading, c.body,
       c.span_start, c.span_end, c.first_page, c.last_page
FROM chosen f
JOIN coach_chunks c ON c.id = f.id
JOIN coach_documents d ON d.scope = c.scope AND d.document_id = c.document_id
WHERE c.scope = $2 OR c.scope = '_global'
ORDER BY f.tier, f.score DESC, f.id
LIMIT $5",
        k1 = Ranking::BM25_K1,
        b = Ranking::BM25_B,
    )
}

fn passage(row: &Row) -> Passage {
    let (document_id, title): (String, String) = (row.get(0), row.get(1));
    let (number, score): (i32, f32) = (row.get(2), row.get(3));
    let chunk = Chunk { heading: row.get(4), text: row.get(5), span: span(row, 6) };
    Passage::of_chunk(&document_id, &title, number.max(0) as u32, score, &chunk)
}

/// The span in columns `at..at + 4` (start, end, first and last page) of `row`.
fn span(row: &Row, at: usize) -> Option<Span> {
    let (start, end): (Option<i64>, Option<i64>) = (row.get(at), row.get(at + 1));
    let (first, last): (Option<i32>, Option<i32>) = (row.get(at + 2), row.get(at + 3));
    let pages = first.zip(last).map(|(f, l)| [f.max(0) as u32, l.max(0) as u32]);
    Some(Span { start: start?.max(0) as u64, end: end?.max(0) as u64, pages })
}

#[async_trait]
impl PassageSearch for PgIndex {
    async fn search(&self, tenant: &str, query: PendingQuery<'_>, ranking: &Ranking) -> Result<Vec<Passage>, Error> {
        if ranking.top_k == 0 {
            return Ok(Vec::new());
        }
        // The schema is migrated (once per instance) while the query is made.
        let (migrated, mut query) = tokio::join!(self.migrate(), query);
        migrated?;
        let vector = query.vector.take().filter(|(_, v)| usable(v) && v.len() as u32 <= HNSW_MAX_HALFVEC_DIMS);
        let vector = vector
            .map(|(model, v)| (vector_table(&model, v.len() as u32), v))
            .filter(|(table, _)| !self.recently_missing(table));
        let table = vector.as_ref().map(|(t, _)| t.clone());
        let terms: Vec<&(String, f32)> = query.ranked_terms().collect();
        match self.run_search(tenant, &terms, vector, ranking).await? {
            Ok(rows) => Ok(rows.iter().map(passage).collect()),
            // No vectors of this model yet: by words, and remember for a while.
            Err(_) if table.is_some() => {
                lock(&self.missing).insert(table.unwrap_or_default(), Instant::now());
                match self.run_search(tenant, &terms, None, ranking).await? {
                    Ok(rows) => Ok(rows.iter().map(passage).collect()),
                    Err(_) => Ok(Vec::new()),
                }
            }
            // Nothing indexed yet: Coach's tables do not exist.
            Err(_) => Ok(Vec::new()),
        }
    }

    /// The change counters of the tenant and the shared docs.
    async fn version(&self, tenant: &str) -> Result<String, Error> {
        let tenant = tenant.to_owned();
        let version = self
            .db
            .with_client("read the index version", move |client| {
                let tenant = tenant.clone();
                Box::pin(async move {
                    let row = client
                        .query_one(
                            "SELECT coalesce((SELECT version FROM coach_index_versions WHERE scope = '_global'), 0),
                                    coalesce((SELECT version FROM coach_index_versions WHERE scope = $1), 0)",
                            &[&tenant],
                        )
                        .await;
                    match row {
                        Ok(row) => Ok(format!("pg-{}/{}", row.get::<_, i64>(0), row.get::<_, i64>(1))),
                        // Nothing indexed yet (or a database migrated before the counters):
                        // the counters start with the first change.
                        Err(e) if is_undefined_table(&e) => Ok("pg-0/0".to_owned()),
                        Err(e) => Err(e.into()),
                    }
                })
            })
            .await?;
        Ok(version)
    }
}

#[async_trait]
impl DocumentIndex for PgIndex {
    async fn purge(&self, _scope: &Scope) -> Result<Option<std::time::Duration>, Error> {
        // A remove deletes the document's rows in its transaction: nothing is left to rewrite.
        Ok(None)
    }

    async fn add(&self, scope: &Scope, doc: Shard, source_key: &str, source_etag: &str) -> Result<Added, Error> {
        self.prepare_write().await?;
        let dims = doc.dims;
        let with_vectors = doc
            .embedding_model
            .as_deref()
            .filter(|_| dims > 0 && !doc.chunks.is_empty() && doc.vectors.len() == doc.chunks.len() * dims as usize);
        if doc.embedding_model.is_some() && with_vectors.is_none() && !doc.chunks.is_empty() {
            return Err(Error::internal("a document's vectors do not match its chunks"));
        }
        let table = match with_vectors {
            Some(model) => Some(self.ensure_vector_table(model, dims).await?),
            None => None,
        };
        // Analysed before the transaction: it is CPU work.
        let analyzer = &self.db.config.analyzer;
        let (terms, lengths): (Vec<String>, Vec<i32>) = doc.chunks.iter().map(|c| chunk_vector(analyzer, c)).unzip();
        let words = Arc::new((terms, lengths, analyzer.id()));
        let doc = Arc::new(doc);
        let (scope, key, etag) = (scope.name().to_owned(), source_key.to_owned(), source_etag.to_owned());
        let blobs = self.blobs.clone();
        self.db
            .with_client("index a document", move |client| {
                let (doc, scope, key, etag, table, blobs, words) =
                    (doc.clone(), scope.clone(), key.clone(), etag.clone(), table.clone(), blobs.clone(), words.clone());
                Box::pin(async move {
                    let tx = client.transaction().await?;
                    let lock = format!("{scope}/{}", doc.document_id);
                    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&lock]).await?;
                    // Under the lock a delete also takes: a delete of the object before this
                    // check is seen here; one after it removes what this commits.
                    match blobs.version(&key).await.map_err(Error::from)? {
                        Some(version) if version == etag => {}
                        Some(_) => return Ok(Added::Superseded),
                        None => return Ok(Added::Gone),
                    }
                    let id = &doc.document_id;
                    let old = tx
                        .query_opt(
                            "DELETE FROM coach_documents WHERE scope = $1 AND document_id = $2 RETURNING chunks, length",
                            &[&scope, id],
                        )
                        .await?;
                    let (old_chunks, old_length) = old.map_or((0, 0), |row| (i64::from(row.get::<_, i32>(0)), row.get(1)));
                    let (terms, lengths, analyzer) = &*words;
                    let length: i64 = lengths.iter().map(|&l| i64::from(l)).sum();
                    let model = doc.embedding_model.as_deref().filter(|_| table.is_some());
                    let dims = if table.is_some() { doc.dims as i32 } else { 0 };
                    tx.execute(
                        "INSERT INTO coach_documents
                             (scope, document_id, title, source_etag, embedding_model, dims, chunks, analyzer, length)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        &[&scope, id, &text(&doc.title), &etag, &model, &dims, &(doc.chunks.len() as i32), analyzer, &length],
                    )
                    .await?;
                    let numbers: Vec<i32> = (0..doc.chunks.len() as i32).collect();
                    let headings: Vec<Option<String>> =
                        doc.chunks.iter().map(|c| c.heading.as_deref().map(text)).collect();
                    let bodies: Vec<String> = doc.chunks.iter().map(|c| text(&c.text)).collect();
                    let spans: Vec<Option<Span>> = doc.chunks.iter().map(|c| c.span).collect();
                    let starts: Vec<Option<i64>> = spans.iter().map(|s| s.map(|s| s.start as i64)).collect();
                    let ends: Vec<Option<i64>> = spans.iter().map(|s| s.map(|s| s.end as i64)).collect();
                    let page = |i: usize| -> Vec<Option<i32>> {
                        spans.iter().map(|s| s.and_then(|s| s.pages).map(|p| p[i] as i32)).collect()
                    };
                    let (firsts, lasts) = (page(0), page(1));
                    let rows = tx
                        .query(
                            "INSERT INTO coach_chunks
                                 (scope, document_id, chunk, heading, body, terms, length,
                                  span_start, span_end, first_page, last_page)
                             SELECT $1, $2, t.n, t.h, t.b, t.v::tsvector, t.l, t.s, t.e, t.f, t.p
                             FROM unnest($3::int4[], $4::text[], $5::text[], $6::text[], $7::int4[],
                                         $8::int8[], $9::int8[], $10::int4[], $11::int4[])
                                  AS t(n, h, b, v, l, s, e, f, p)
                             RETURNING id, chunk",
                            &[&scope, id, &numbers, &headings, &bodies, terms, lengths, &starts, &ends, &firsts, &lasts],
                        )
                        .await?;
                    if let Some(table) = &table {
                        let dims = doc.dims as usize;
                        let mut ids = Vec::with_capacity(rows.len());
                        let mut vectors = Vec::with_capacity(rows.len());
                        for row in &rows {
                            let (chunk_id, chunk): (i64, i32) = (row.get(0), row.get(1));
                            let v = &doc.vectors[chunk as usize * dims..(chunk as usize + 1) * dims];
                            if usable(v) {
                                ids.push(chunk_id);
                                vectors.push(Vector::from(v.to_vec()));
                            }
                        }
                        tx.execute(
                            &format!(
                                "INSERT INTO {table} (chunk_id, scope, embedding)
                             SELECT t.id, $1, t.e FROM unnest($2::int8[], $3::vector[]) AS t(id, e)"
                            ),
                            &[&scope, &ids, &vectors],
                        )
                        .await?;
                    }
                    let chunks = doc.chunks.len() as i64 - old_chunks;
                    tx.execute(BUMP_VERSION, &[&scope, &chunks, &(length - old_length)]).await?;
                    tx.commit().await?;
                    Ok(Added::Indexed)
                })
            })
            .await
    }

    async fn remove(&self, scope: &Scope, id: &str) -> Result<bool, Error> {
        self.migrate().await?;
        let (scope, id) = (scope.name().to_owned(), id.to_owned());
        let removed = self
            .db
            .with_client("remove a document", move |client| {
                let (scope, id) = (scope.clone(), id.clone());
                Box::pin(async move {
                    let tx = client.transaction().await?;
                    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&format!("{scope}/{id}")])
                        .await?;
                    let removed = tx
                        .query_opt(
                            "DELETE FROM coach_documents WHERE scope = $1 AND document_id = $2 RETURNING chunks, length",
                            &[&scope, &id],
                        )
                        .await;
                    match removed {
                        Ok(row) => {
                            let found = row.is_some();
                            if let Some(row) = row {
                                let (chunks, length): (i32, i64) = (row.get(0), row.get(1));
                                tx.execute(BUMP_VERSION, &[&scope, &-i64::from(chunks), &-length]).await?;
                            }
                            tx.commit().await?;
                            Ok(Some(found))
                        }
                        // Nothing was ever indexed: nothing to remove.
                        Err(e) if is_undefined_table(&e) => Ok(Some(false)),
                        Err(e) => Err(e.into()),
                    }
                })
            })
            .await?;
        Ok(removed.unwrap_or(false))
    }

    async fn document(&self, scope: &Scope, id: &str) -> Result<Option<Shard>, Error> {
        let (scope, id) = (scope.name().to_owned(), id.to_owned());
        self.db.with_client("read a document", move |client| {
            let (scope, id) = (scope.clone(), id.clone());
            Box::pin(async move {
                let head = match client
                    .query_opt(
                        "SELECT title, embedding_model, dims FROM coach_documents WHERE scope = $1 AND document_id = $2",
                        &[&scope, &id],
                    )
                    .await
                {
                    Ok(Some(row)) => row,
                    Ok(None) => return Ok(None),
                    Err(e) if is_undefined_table(&e) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                let (title, model, dims): (String, Option<String>, i32) = (head.get(0), head.get(1), head.get(2));
                let rows = client
                    .query(
                        "SELECT id, heading, body, span_start, span_end, first_page, last_page
                         FROM coach_chunks WHERE scope = $1 AND document_id = $2 ORDER BY chunk",
                        &[&scope, &id],
                    )
                    .await?;
                let chunks: Vec<Chunk> =
                    rows.iter().map(|r| Chunk { heading: r.get(1), text: r.get(2), span: span(r, 3) }).collect();
                let mut vectors = Vec::new();
                if let (Some(model), true) = (&model, dims > 0) {
                    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
                    let table = vector_table(model, dims as u32);
                    let stored = client
                        .query(
                            &format!("SELECT chunk_id, embedding FROM {table} WHERE scope = $1 AND chunk_id = ANY($2)"),
                            &[&scope, &ids],
                        )
                        .await?;
                    let by_id: HashMap<i64, Vector> = stored.into_iter().map(|r| (r.get(0), r.get(1))).collect();
                    vectors.reserve(ids.len() * dims as usize);
                    for chunk_id in &ids {
                        // A chunk whose vector was unusable has none: zeros, which match nothing.
                        match by_id.get(chunk_id) {
                            Some(v) => vectors.extend_from_slice(v.as_slice()),
                            None => vectors.extend(std::iter::repeat_n(0.0, dims as usize)),
                        }
                    }
                }
                Ok(Some(Shard {
                    document_id: id,
                    title,
                    chunks,
                    dims: if model.is_some() { dims.max(0) as u32 } else { 0 },
                    embedding_model: model,
                    vectors,
                }))
            })
        })
        .await
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
    use super::*;

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
