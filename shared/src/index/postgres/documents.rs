//! Writing the index: a document's rows in one transaction, and reading them back.

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use pgvector::Vector;

use super::{
    connection::{is_undefined_table, text, usable},
    search::span,
    vector_table, PgIndex,
};
use crate::{
    analysis::{Analyzer, MAX_TERM_FREQUENCY},
    model::{Chunk, Scope, Shard, Span},
    store::{Added, DocumentIndex},
    store::{StoreError, StoreResult},
};

/// Bumps a scope's change counter and moves its chunk and term counts by $2 and $3, in the
/// transaction that changes it (last, so the row lock it takes is held only until the
/// commit).
pub(super) const BUMP_VERSION: &str =
    "INSERT INTO coach_index_versions (scope, version, chunks, length) VALUES ($1, 1, $2, $3)
     ON CONFLICT (scope) DO UPDATE SET version = coach_index_versions.version + 1,
         chunks = coach_index_versions.chunks + $2, length = coach_index_versions.length + $3";

/// `text` as a lexeme in `tsvector` or `tsquery` input: quoted, its quotes and backslashes
/// escaped.
pub(super) fn lexeme(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// A chunk's terms as `tsvector` input: each term with positions 1 to its frequency, so the
/// number of positions is the term frequency. And the chunk's length in terms. (Public for
/// bulk loads that write the rows an add writes.)
pub fn chunk_vector(analyzer: &Analyzer, chunk: &Chunk) -> (String, i32) {
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

/// Holds document `id` of `scope` until the transaction ends: an add, a remove and an access
/// change of one document take it, so each sees the others whole.
async fn lock_document(
    tx: &tokio_postgres::Transaction<'_>,
    scope: &str,
    id: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&format!("{scope}/{id}")]).await?;
    Ok(())
}

#[async_trait]
impl DocumentIndex for PgIndex {
    async fn purge(&self, _scope: &Scope) -> StoreResult<Option<std::time::Duration>> {
        // A remove deletes the document's rows in its transaction: nothing is left to rewrite.
        Ok(None)
    }

    async fn add(&self, scope: &Scope, doc: Shard, source_key: &str, source_etag: &str) -> StoreResult<Added> {
        self.prepare_write().await?;
        let dims = doc.dims;
        let with_vectors = doc
            .embedding_model
            .as_deref()
            .filter(|_| dims > 0 && !doc.chunks.is_empty() && doc.vectors.len() == doc.chunks.len() * dims as usize);
        if doc.embedding_model.is_some() && with_vectors.is_none() && !doc.chunks.is_empty() {
            return Err(StoreError::internal("a document's vectors do not match its chunks"));
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
                    lock_document(&tx, &scope, &doc.document_id).await?;
                    // Under the lock a delete also takes: a delete of the object before this
                    // check is seen here; one after it removes what this commits.
                    match blobs.version(&key).await? {
                        Some(version) if version == etag => {}
                        Some(_) => return Ok(Added::Superseded),
                        None => return Ok(Added::Gone),
                    }
                    let id = &doc.document_id;
                    // Who may read it, as set (under this lock too) before or since its upload.
                    let access: Option<Vec<String>> = tx
                        .query_opt(
                            "SELECT groups FROM coach_document_access WHERE scope = $1 AND document_id = $2",
                            &[&scope, id],
                        )
                        .await?
                        .and_then(|row| row.get(0));
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
                                  span_start, span_end, first_page, last_page, access)
                             SELECT $1, $2, t.n, t.h, t.b, t.v::tsvector, t.l, t.s, t.e, t.f, t.p, $12::text[]
                             FROM unnest($3::int4[], $4::text[], $5::text[], $6::text[], $7::int4[],
                                         $8::int8[], $9::int8[], $10::int4[], $11::int4[])
                                  AS t(n, h, b, v, l, s, e, f, p)
                             RETURNING id, chunk",
                            &[
                                &scope, id, &numbers, &headings, &bodies, terms, lengths, &starts, &ends, &firsts,
                                &lasts, &access,
                            ],
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
                                "INSERT INTO {table} (chunk_id, scope, access, embedding)
                             SELECT t.id, $1, $4::text[], t.e FROM unnest($2::int8[], $3::vector[]) AS t(id, e)"
                            ),
                            &[&scope, &ids, &vectors, &access],
                        )
                        .await?;
                    }
                    // A restricted document's share of the scope's statistics, beside its access.
                    tx.execute(
                        "UPDATE coach_document_access SET chunks = $3, length = $4 WHERE scope = $1 AND document_id = $2",
                        &[&scope, id, &(doc.chunks.len() as i64), &length],
                    )
                    .await?;
                    let chunks = doc.chunks.len() as i64 - old_chunks;
                    tx.execute(BUMP_VERSION, &[&scope, &chunks, &(length - old_length)]).await?;
                    tx.commit().await?;
                    Ok(Added::Indexed)
                })
            })
            .await
    }

    async fn remove(&self, scope: &Scope, id: &str) -> StoreResult<bool> {
        self.migrate().await?;
        let (scope, id) = (scope.name().to_owned(), id.to_owned());
        let removed = self
            .db
            .with_client("remove a document", move |client| {
                let (scope, id) = (scope.clone(), id.clone());
                Box::pin(async move {
                    let tx = client.transaction().await?;
                    lock_document(&tx, &scope, &id).await?;
                    let removed = tx
                        .query_opt(
                            "DELETE FROM coach_documents WHERE scope = $1 AND document_id = $2 RETURNING chunks, length",
                            &[&scope, &id],
                        )
                        .await;
                    match removed {
                        Ok(row) => {
                            tx.execute(
                                "DELETE FROM coach_document_access WHERE scope = $1 AND document_id = $2",
                                &[&scope, &id],
                            )
                            .await?;
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

    async fn set_access(&self, scope: &Scope, id: &str, access: Option<&[String]>, rev: u64) -> StoreResult<()> {
        self.migrate().await?;
        let (scope, id) = (scope.name().to_owned(), id.to_owned());
        let access: Option<Vec<String>> = access.map(<[String]>::to_vec);
        let rev = rev.min(i64::MAX as u64) as i64;
        self.db
            .with_client("change a document's access", move |client| {
                let (scope, id, access) = (scope.clone(), id.clone(), access.clone());
                Box::pin(async move {
                    let tx = client.transaction().await?;
                    // The lock an add of the document takes: it copies what this commits.
                    lock_document(&tx, &scope, &id).await?;
                    let current = tx
                        .query_opt(
                            "SELECT groups, rev FROM coach_document_access WHERE scope = $1 AND document_id = $2",
                            &[&scope, &id],
                        )
                        .await?;
                    let changed = current.is_none_or(|row| {
                        let (groups, current_rev): (Option<Vec<String>>, i64) = (row.get(0), row.get(1));
                        current_rev <= rev && groups != access
                    });
                    if changed {
                        let chunks: Vec<i64> = tx
                            .query(
                                "UPDATE coach_chunks SET access = $3 WHERE scope = $1 AND document_id = $2 RETURNING id",
                                &[&scope, &id, &access],
                            )
                            .await?
                            .iter()
                            .map(|row| row.get(0))
                            .collect();
                        let vectors = tx
                            .query_opt(
                                "SELECT embedding_model, dims FROM coach_documents
                                 WHERE scope = $1 AND document_id = $2 AND embedding_model IS NOT NULL AND dims > 0",
                                &[&scope, &id],
                            )
                            .await?;
                        if let Some(row) = vectors {
                            let (model, dims): (String, i32) = (row.get(0), row.get(1));
                            let table = vector_table(&model, dims as u32);
                            tx.execute(
                                &format!("UPDATE {table} SET access = $2 WHERE chunk_id = ANY($1)"),
                                &[&chunks, &access],
                            )
                            .await?;
                        }
                        // Last, as its trigger takes the scope's statistics row (see migration 6).
                        // With the document's chunks and terms as indexed (none yet: an add sets them).
                        tx.execute(
                            "INSERT INTO coach_document_access (scope, document_id, groups, rev, chunks, length)
                             SELECT $1, $2, $3, $4, coalesce(d.chunks, 0), coalesce(d.length, 0)
                             FROM (SELECT 1) one
                             LEFT JOIN coach_documents d ON d.scope = $1 AND d.document_id = $2
                             ON CONFLICT (scope, document_id) DO UPDATE
                             SET groups = excluded.groups, rev = excluded.rev,
                                 chunks = excluded.chunks, length = excluded.length",
                            &[&scope, &id, &access, &rev],
                        )
                        .await?;
                        // What a search may return changed: answers kept for the scope go.
                        if !chunks.is_empty() {
                            tx.execute(BUMP_VERSION, &[&scope, &0i64, &0i64]).await?;
                        }
                    }
                    tx.commit().await?;
                    Ok(())
                })
            })
            .await
    }

    async fn document(&self, scope: &Scope, id: &str) -> StoreResult<Option<Shard>> {
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
