//! Search: one statement, BM25 and vector scores fused by document in SQL.

use std::{sync::LazyLock, time::Instant};

use async_trait::async_trait;
use pgvector::Vector;
use tokio_postgres::Row;

use super::{
    connection::{is_undefined_table, lock, text, usable},
    distance, vector_table, PgIndex, HNSW_MAX_HALFVEC_DIMS,
};
use crate::{
    analysis::MAX_TERM_FREQUENCY,
    model::{Chunk, Clearance, Passage, Ranking, Span},
    store::StoreResult,
    store::{PassageSearch, PendingQuery},
};

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
)"#;

/// The collection statistics of scope `scope` (and the shared docs) as a caller of groups
/// `groups` (parameters; NULL: every document) sees them: `totals` the chunks and terms
/// indexed, `hidden` those the caller may not read (the sets of groups that share none with
/// the caller's, as the trigger of migration 6 sums them: a row per set, not per document),
/// `stats` the readable chunks and their mean length, as an index of the readable documents
/// alone would count them.
fn stats(scope: &str, groups: &str) -> String {
    format!(
        "totals AS (
    SELECT coalesce(sum(v.chunks), 0)::float8 AS chunks, coalesce(sum(v.length), 0)::float8 AS length
    FROM coach_index_versions v WHERE v.scope = {scope} OR v.scope = '_global'
), hidden AS (
    SELECT coalesce(sum(a.chunks), 0)::float8 AS chunks, coalesce(sum(a.length), 0)::float8 AS length
    FROM coach_access_totals a
    WHERE {groups}::text[] IS NOT NULL AND a.scope = {scope} AND NOT (a.groups && {groups}::text[])
), stats AS (
    SELECT greatest(t.chunks - h.chunks, 1) AS n,
           greatest((t.length - h.length) / greatest(t.chunks - h.chunks, 1), 1) AS avgdl
    FROM totals t CROSS JOIN hidden h
)"
    )
}

/// A restricted caller's HNSW breadth over what their share of the scope alone asks (see
/// [`EF_SEARCH_SQL`]): a scan a little short of the window still goes over the graph again.
const EF_MARGIN: f64 = 1.1;

/// Sets `hnsw.ef_search` for the search that follows on the connection: $3 (the configured
/// breadth) for a caller who may read everything in scope $1, and for a caller of groups
/// $2 who may not, $3 divided by the share of the scope's chunks they may read, with a
/// margin (at most 1,000, pgvector's limit). A scan filtered to a share f of the rows
/// finds about f x ef_search readable neighbours in its first pass; one short of the
/// fusion window goes on (the scan is iterative), reading as much of the graph again. So a
/// restricted caller's scan reads what it needs in one pass, and an admin's is as
/// configured. Every vector search sets it, so none inherits another caller's. (Built once:
/// it is the same statement for every search.)
static EF_SEARCH_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH {stats}
SELECT set_config('hnsw.ef_search', (CASE WHEN h.chunks > 0
    THEN least(1000, greatest($3::float8, ceil($3::float8 * t.chunks / s.n * {EF_MARGIN:?})))
    ELSE $3::float8 END)::int4::text, false)
FROM totals t CROSS JOIN hidden h CROSS JOIN stats s",
        stats = stats("$1", "$2")
    )
});

/// Whether a row of `alias` is one the caller may read: $8 is the caller's groups, or NULL
/// for a caller who reads everything; a row's `access` is NULL when its document is open to
/// the tenant (and always for the shared docs).
fn readable(alias: &str) -> String {
    format!("($8::text[] IS NULL OR {alias}.access IS NULL OR {alias}.access && $8::text[])")
}

/// The search statement, words only (`vectors: None`) or words and the vectors of a table
/// (and its dimension). Parameters: $1 query terms, $2 tenant, $3 window, $4 least fused
/// score, $5 top_k, $6 most rows a searched term may match (see [`QUERY_WORDS`]), $7 the
/// terms' weights, $8 the caller's groups (NULL: every document); with vectors also $9 the
/// query's vector, $10 greatest cosine distance, $11 the vector ranking's weight.
///
/// Documents the caller may not read are left out of both rankings in the scan itself (a
/// row's `access`; the HNSW scan is iterative, so the filter cannot starve it) and of the
/// collection statistics (their chunks and lengths taken from the scope's totals), so the
/// ranking is the one an index of the readable documents alone would give.
///
/// The word ranking is BM25 as the S3 store computes it ([`crate::index::rank`]): per
/// searched term in a matching chunk, weight x idf x tf (k1 + 1) / (tf + k1 (1 - b + b
/// length / mean length)), the term frequency read from the number of its positions
/// (`setweight` marks the query's terms, `ts_filter` keeps them), document frequencies
/// counted over the scope's matching chunks, chunk count and mean length from
/// `coach_index_versions`. Each ranking keeps its best `window`; they are fused by document
/// as the S3 store fuses them ([`crate::index::rank`]): in each ranking a chunk's score is
/// divided by the ranking's best and weighted, and a document takes its best chunk's; the
/// best `top_k` documents, each with its chunk of the best chunk-level fused score, then
/// (when fewer documents match) other chunks by that score. The statement sums the weighted
/// shares; the caller divides by the query's total weight ($4 is multiplied by it).
fn search_sql(vectors: Option<(&str, u32)>) -> String {
    let (nearest, semantic) = match vectors {
        Some((table, dims)) => {
            let distance = distance("v.embedding", "$9", dims);
            let readable = readable("v");
            (
                format!(
                    ", nearest AS MATERIALIZED (
    SELECT v.chunk_id AS id, {distance} AS distance
    FROM {table} v
    WHERE (v.scope = $2 OR v.scope = '_global') AND {readable}
    ORDER BY {distance}
    LIMIT $3
)"
                ),
                "
    UNION ALL
    SELECT 1, n.id, c.scope, c.document_id,
           CASE WHEN max(1 - n.distance) OVER () > 0
                THEN greatest((1 - n.distance) / max(1 - n.distance) OVER (), 0) ELSE 0 END,
           $11::float8
    FROM nearest n JOIN coach_chunks c ON c.id = n.id
    WHERE n.distance <= $10",
            )
        }
        None => (String::new(), ""),
    };
    format!(
        "WITH {QUERY_WORDS}, {stats}, matched AS MATERIALIZED (
    SELECT c.id, c.length, t.lexeme, least(cardinality(t.positions), {MAX_TERM_FREQUENCY})::float8 AS tf
    FROM coach_chunks c
    CROSS JOIN query
    CROSS JOIN LATERAL unnest(ts_filter(setweight(c.terms, 'A', query.terms), '{{a}}')) AS t
    WHERE (c.scope = $2 OR c.scope = '_global') AND c.terms @@ query.q AND {readable}
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
    SELECT 0 AS k, b.id, c.scope, c.document_id,
           CASE WHEN max(b.score) OVER () > 0 THEN greatest(b.score / max(b.score) OVER (), 0) ELSE 0 END AS s,
           1.0::float8 AS w
    FROM best_words b JOIN coach_chunks c ON c.id = b.id{semantic}
), chunk_scores AS (
    SELECT id, scope, document_id, sum(w * s) AS score FROM ranked GROUP BY id, scope, document_id
), document_scores AS (
    SELECT scope, document_id, sum(w * s) AS score
    FROM (SELECT k, scope, document_id, max(w) AS w, max(s) AS s FROM ranked GROUP BY k, scope, document_id) b
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
        readable = readable("c"),
        stats = stats("$2", "$8"),
    )
}

fn passage(row: &Row) -> Passage {
    let (document_id, title): (String, String) = (row.get(0), row.get(1));
    let (number, score): (i32, f32) = (row.get(2), row.get(3));
    let chunk = Chunk { heading: row.get(4), text: row.get(5), span: span(row, 6) };
    Passage::of_chunk(&document_id, &title, number.max(0) as u32, score, &chunk)
}

/// The span in columns `at..at + 4` (start, end, first and last page) of `row`.
pub(super) fn span(row: &Row, at: usize) -> Option<Span> {
    let (start, end): (Option<i64>, Option<i64>) = (row.get(at), row.get(at + 1));
    let (first, last): (Option<i32>, Option<i32>) = (row.get(at + 2), row.get(at + 3));
    let pages = first.zip(last).map(|(f, l)| [f.max(0) as u32, l.max(0) as u32]);
    Some(Span { start: start?.max(0) as u64, end: end?.max(0) as u64, pages })
}

impl PgIndex {
    async fn run_search(
        &self,
        tenant: &str,
        groups: Option<Vec<String>>,
        terms: &[&(String, f32)],
        vector: Option<(String, Vec<f32>)>,
        ranking: &Ranking,
    ) -> StoreResult<Result<Vec<Row>, tokio_postgres::Error>> {
        let window = ranking.window() as i64;
        let top_k = ranking.top_k as i64;
        let (weight, min_score) = (f64::from(ranking.vector_weight), f64::from(ranking.min_score));
        let max_distance = 1.0 - f64::from(ranking.min_similarity);
        let word_rows = self.db.config.word_rows as f64;
        let ef_search = f64::from(self.db.config.ef_search);
        let (words, weights): (Vec<String>, Vec<f64>) = terms.iter().map(|(t, w)| (text(t), f64::from(*w))).unzip();
        let tenant = tenant.to_owned();
        self.db
            .with_client("search the index", move |client| {
                let (tenant, words, weights, vector, groups) =
                    (tenant.clone(), words.clone(), weights.clone(), vector.clone(), groups.clone());
                Box::pin(async move {
                    let sql = search_sql(vector.as_ref().map(|(table, v)| (table.as_str(), v.len() as u32)));
                    let statement = match client.prepare_cached(&sql).await {
                        Ok(s) => s,
                        Err(e) if is_undefined_table(&e) => return Ok(Err(e)),
                        Err(e) => return Err(e.into()),
                    };
                    let result = match &vector {
                        Some((_, v)) => {
                            let ef = match client.prepare_cached(&EF_SEARCH_SQL).await {
                                Ok(s) => s,
                                Err(e) if is_undefined_table(&e) => return Ok(Err(e)),
                                Err(e) => return Err(e.into()),
                            };
                            let v = Vector::from(v.clone());
                            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 11] = [
                                &words,
                                &tenant,
                                &window,
                                &min_score,
                                &top_k,
                                &word_rows,
                                &weights,
                                &groups,
                                &v,
                                &max_distance,
                                &weight,
                            ];
                            // Sent together: the search runs after the setting, one round trip.
                            let setting: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                                [&tenant, &groups, &ef_search];
                            let (set, rows) =
                                tokio::join!(client.query_one(&ef, &setting), client.query(&statement, &params));
                            set.and(rows)
                        }
                        None => {
                            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] =
                                [&words, &tenant, &window, &min_score, &top_k, &word_rows, &weights, &groups];
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

#[async_trait]
impl PassageSearch for PgIndex {
    async fn search(
        &self,
        tenant: &str,
        clearance: Clearance<'_>,
        query: PendingQuery<'_>,
        ranking: &Ranking,
    ) -> StoreResult<Vec<Passage>> {
        if ranking.top_k == 0 {
            return Ok(Vec::new());
        }
        // The schema is migrated (once per instance) while the query is made.
        let (migrated, mut query) = tokio::join!(self.migrate(), query);
        migrated?;
        // The rankings the query takes part in, as the S3 store counts them: the vector
        // ranking's weight whenever the query has a vector, matches or not.
        let total = 1.0 + if query.vector.is_some() { ranking.vector_weight } else { 0.0 };
        let ranking = &Ranking { min_score: ranking.min_score * total, ..ranking.clone() };
        let shares = |rows: Vec<Row>| -> Vec<Passage> {
            rows.iter()
                .map(|row| {
                    let mut passage = passage(row);
                    passage.source.score = (passage.source.score / total).min(1.0);
                    passage
                })
                .collect()
        };
        let vector = query.vector.take().filter(|(_, v)| usable(v) && v.len() as u32 <= HNSW_MAX_HALFVEC_DIMS);
        let vector = vector
            .map(|(model, v)| (vector_table(&model, v.len() as u32), v))
            .filter(|(table, _)| !self.recently_missing(table));
        let table = vector.as_ref().map(|(t, _)| t.clone());
        let terms: Vec<&(String, f32)> = query.ranked_terms().collect();
        let groups = clearance.groups().map(<[String]>::to_vec);
        match self.run_search(tenant, groups.clone(), &terms, vector, ranking).await? {
            Ok(rows) => Ok(shares(rows)),
            // No vectors of this model yet: by words, and remember for a while.
            Err(_) if table.is_some() => {
                lock(&self.missing).insert(table.unwrap_or_default(), Instant::now());
                match self.run_search(tenant, groups, &terms, None, ranking).await? {
                    Ok(rows) => Ok(shares(rows)),
                    Err(_) => Ok(Vec::new()),
                }
            }
            // Nothing indexed yet: Coach's tables do not exist.
            Err(_) => Ok(Vec::new()),
        }
    }

    /// The change counters of the tenant and the shared docs.
    async fn version(&self, tenant: &str) -> StoreResult<String> {
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
