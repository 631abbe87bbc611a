//! Coach's schema ([`MIGRATIONS`]) and re-analysing documents indexed with another analyser.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    connection::Database,
    documents::{chunk_vector, BUMP_VERSION},
};
use crate::{model::Chunk, store::StoreResult};

/// Advisory lock (any constant) serialising Coach's schema changes.
pub(super) const SCHEMA_LOCK: i64 = 0x436f_6163_6853_6368;

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
    // 5: who may read each document. `coach_document_access` holds it per document (set
    // before the document is indexed; `groups` NULL: the whole tenant) with the record's
    // revision it came from, and the document's chunks and terms as indexed (what a search
    // takes out of the scope's statistics for a caller who may not read it; summed per set
    // of groups since migration 6);
    // each chunk and vector row carries a copy of the groups, so a search filters in the
    // scan itself.
    "CREATE TABLE coach_document_access (
         scope text NOT NULL,
         document_id text NOT NULL,
         groups text[],
         rev bigint NOT NULL,
         chunks bigint NOT NULL DEFAULT 0,
         length bigint NOT NULL DEFAULT 0,
         PRIMARY KEY (scope, document_id)
     );
     ALTER TABLE coach_chunks ADD COLUMN access text[];
     DO $$
     DECLARE t text;
     BEGIN
         FOR t IN SELECT table_name FROM coach_vector_tables LOOP
             EXECUTE format('ALTER TABLE %I ADD COLUMN access text[]', t);
         END LOOP;
     END $$;",
    // 6: each restricted document's chunks and terms taken again from its indexed row (an
    // access set after the document was indexed, with no row of it in this table before,
    // had left them at 0); and summed per scope and set of groups, so a
    // search takes what a caller may not read out of the statistics in a few rows, however
    // many documents are restricted. Kept by a trigger on `coach_document_access`, in the
    // transaction that changes a row; it locks the scope's `coach_index_versions` row first,
    // the row every writer of the scope updates last, so writers queue in one order.
    "CREATE TABLE coach_access_totals (
         scope text NOT NULL,
         groups text[] NOT NULL,
         chunks bigint NOT NULL,
         length bigint NOT NULL,
         PRIMARY KEY (scope, groups)
     );
     UPDATE coach_document_access a SET chunks = d.chunks, length = d.length
         FROM coach_documents d
         WHERE d.scope = a.scope AND d.document_id = a.document_id
           AND (a.chunks, a.length) IS DISTINCT FROM (d.chunks::bigint, d.length);
     INSERT INTO coach_access_totals (scope, groups, chunks, length)
         SELECT scope, groups, sum(chunks), sum(length) FROM coach_document_access
         WHERE groups IS NOT NULL GROUP BY scope, groups HAVING sum(chunks) <> 0 OR sum(length) <> 0;
     CREATE FUNCTION coach_access_totals_move(s text, g text[], c bigint, l bigint) RETURNS void
     LANGUAGE plpgsql AS $$
     BEGIN
         IF g IS NULL OR (c = 0 AND l = 0) THEN
             RETURN;
         END IF;
         PERFORM 1 FROM coach_index_versions WHERE scope = s FOR UPDATE;
         INSERT INTO coach_access_totals AS t (scope, groups, chunks, length) VALUES (s, g, c, l)
         ON CONFLICT (scope, groups) DO UPDATE SET chunks = t.chunks + c, length = t.length + l;
         DELETE FROM coach_access_totals WHERE scope = s AND groups = g AND chunks = 0 AND length = 0;
     END $$;
     CREATE FUNCTION coach_access_totals_keep() RETURNS trigger
     LANGUAGE plpgsql AS $$
     BEGIN
         IF TG_OP = 'UPDATE' AND OLD.scope = NEW.scope AND OLD.groups IS NOT DISTINCT FROM NEW.groups THEN
             PERFORM coach_access_totals_move(NEW.scope, NEW.groups, NEW.chunks - OLD.chunks, NEW.length - OLD.length);
             RETURN NULL;
         END IF;
         IF TG_OP IN ('UPDATE', 'DELETE') THEN
             PERFORM coach_access_totals_move(OLD.scope, OLD.groups, -OLD.chunks, -OLD.length);
         END IF;
         IF TG_OP IN ('UPDATE', 'INSERT') THEN
             PERFORM coach_access_totals_move(NEW.scope, NEW.groups, NEW.chunks, NEW.length);
         END IF;
         RETURN NULL;
     END $$;
     CREATE TRIGGER coach_access_totals_keep
         AFTER INSERT OR UPDATE OR DELETE ON coach_document_access
         FOR EACH ROW EXECUTE FUNCTION coach_access_totals_keep();",
];

impl Database {
    /// Applies the [`MIGRATIONS`] not applied yet (once per instance; concurrent instances
    /// wait for each other on an advisory lock).
    pub async fn migrate(&self) -> StoreResult<()> {
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
pub(super) const REANALYSE_PER_WRITE: Duration = Duration::from_secs(5);

impl Database {
    /// Analyses again, with the configured analyser, the documents indexed with another (or
    /// before analysers were recorded), [`REANALYSE_BATCH`] per transaction, each document's
    /// chunks and its scope's statistics together, until none is left (`Ok(true)`) or
    /// `budget` has passed (`Ok(false)`). Concurrent callers skip each other's documents.
    pub async fn reanalyse(&self, budget: Duration) -> StoreResult<bool> {
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
                            tx.execute(
                                "UPDATE coach_document_access SET length = $3 WHERE scope = $1 AND document_id = $2",
                                &[&scope, &document_id, &length],
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
