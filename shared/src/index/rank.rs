//! Ranking a scope's loaded segments for a query, in process: the S3 index store's search.
//!
//! A query is ranked twice: BM25 over its weighted terms (always), and cosine similarity
//! against chunk vectors when both the query and the document have embeddings from the same
//! model (an 8-bit scan picks candidates, exact f32 cosine ranks them). The best
//! [`Ranking::window`] chunks of each ranking are fused by document, a weighted mean of the
//! rankings' scores each divided by its best ([`fuse`]); the top `top_k` above `min_score`
//! are returned with their sources.

use std::collections::{HashMap, HashSet};

use super::{
    segment::{normalise, quantise},
    Part,
};
use crate::model::{Passage, Query, Ranking};

const BM25_K1: f32 = Ranking::BM25_K1;
const BM25_B: f32 = Ranking::BM25_B;

/// The 8-bit vector scan keeps this many candidates per window slot for exact re-ranking.
const RERANK_FACTOR: usize = 4;
/// How far below `min_similarity` an 8-bit estimate may be and still be re-checked exactly:
/// far above the worst quantisation error in the unit test (about 0.001 at 384 dimensions).
const QUANTISATION_SLACK: f32 = 0.05;

/// Dot product of two 8-bit vectors, written so the compiler vectorises it (16 lanes).
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut lanes = [0i32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = a16.remainder().iter().zip(b16.remainder()).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
    for (x, y) in a16.zip(b16) {
        for i in 0..16 {
            lanes[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    lanes.iter().sum::<i32>() + tail
}

/// Dot product of two f32 vectors with eight running sums, so it vectorises.
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// A chunk: (part, chunk of its segment).
type Hit = ((usize, u32), f32);

/// Best first; ties by position, so rankings are stable.
fn by_score(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The best `n` of `hits`, best first.
fn best(mut hits: Vec<Hit>, n: usize) -> Vec<Hit> {
    if hits.len() > n && n > 0 {
        hits.select_nth_unstable_by(n - 1, by_score);
    }
    hits.truncate(n);
    hits.sort_unstable_by(by_score);
    hits
}

/// Ranks the live chunks of `parts` for `query`.
pub fn search(parts: &[Part], query: &Query, ranking: &Ranking) -> Vec<Passage> {
    let window = ranking.window();
    let lexical = best(bm25(parts, query.ranked_terms().collect()), window);
    let semantic = match &query.vector {
        Some((model, vector)) => best(similar(parts, model, vector, ranking.min_similarity, window), window),
        None => Vec::new(),
    };
    let document = |(pi, ci): (usize, u32)| (pi, parts[pi].segment.chunk_doc[ci as usize]);
    let rankings: &[(&[Hit], f32)] = match query.vector {
        Some(_) => &[(&lexical, 1.0), (&semantic, ranking.vector_weight)],
        None => &[(&lexical, 1.0)],
    };
    fuse(rankings, document, ranking)
        .into_iter()
        .map(|((pi, ci), score)| {
            let loaded = &parts[pi].segment;
            let doc = &loaded.segment.docs[loaded.chunk_doc[ci as usize] as usize];
            let chunk = &loaded.segment.chunks[ci as usize];
            let number = ci - doc.first_chunk;
            Passage::of_chunk(&doc.document_id, &doc.title, number, score, chunk)
        })
        .collect()
}

/// Fusion by document, a convex combination of the rankings' scores: each ranking's scores
/// are divided by its best (so each lies in 0..1, the best chunk of a ranking at 1), and a
/// chunk scores the weighted mean of them over the rankings (`rankings` are those the query
/// takes part in; a ranking where the chunk is not among the best `window` counts 0 for it).
/// A document scores the same of its best chunk in each ranking, so a second chunk of one
/// document does not add to it. The best `top_k` documents above `min_score` come first,
/// each with its chunk of the best chunk-level score; when fewer documents than `top_k`
/// match, their other chunks follow in chunk-level order. So the passages of a few long
/// documents cannot fill the list while other documents match, and a document split into
/// several chunks is not outranked for it.
fn fuse<D: Copy + Eq + std::hash::Hash + Ord>(
    rankings: &[(&[Hit], f32)],
    document: impl Fn((usize, u32)) -> D,
    ranking: &Ranking,
) -> Vec<Hit> {
    let mut chunks: HashMap<(usize, u32), f32> = HashMap::new();
    let mut documents: HashMap<D, f32> = HashMap::new();
    let total: f32 = rankings.iter().map(|(_, weight)| weight).sum();
    for (hits, weight) in rankings {
        let Some(&(_, best)) = hits.first() else { continue };
        if best <= 0.0 || total <= 0.0 {
            continue;
        }
        let mut seen = HashSet::new();
        for (id, score) in hits.iter() {
            let share = weight / total * (score / best).clamp(0.0, 1.0);
            *chunks.entry(*id).or_default() += share;
            // Best first: a document's first chunk here is its best.
            if seen.insert(document(*id)) {
                *documents.entry(document(*id)).or_default() += share;
            }
        }
    }
    // Shares add up to 1 at most, but for rounding.
    chunks.values_mut().for_each(|s| *s = s.min(1.0));
    documents.values_mut().for_each(|s| *s = s.min(1.0));
    // Chunks best first, ties by position.
    let mut chunks: Vec<Hit> = chunks.into_iter().collect();
    chunks.sort_unstable_by(by_score);
    let mut documents: Vec<(D, f32)> = documents.into_iter().filter(|(_, s)| *s >= ranking.min_score).collect();
    documents.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    documents.truncate(ranking.top_k);
    let mut best_chunk: HashMap<D, (usize, u32)> = HashMap::new();
    for (id, _) in &chunks {
        best_chunk.entry(document(*id)).or_insert(*id);
    }
    let mut out: Vec<Hit> = documents.iter().filter_map(|(d, score)| Some((*best_chunk.get(d)?, *score))).collect();
    let taken: HashSet<(usize, u32)> = out.iter().map(|(id, _)| *id).collect();
    let rest = chunks.into_iter().filter(|(id, s)| !taken.contains(id) && *s >= ranking.min_score);
    out.extend(rest.take(ranking.top_k.saturating_sub(out.len())));
    out
}

/// Whether chunk `c` of `part` belongs to a live document.
fn live(part: &Part, c: u32) -> bool {
    part.live[part.segment.chunk_doc[c as usize] as usize]
}

/// BM25 scores of every live chunk that has a query term, over all `parts` as one
/// collection, each term's score times its weight.
fn bm25(parts: &[Part], terms: Vec<&(String, f32)>) -> Vec<Hit> {
    if terms.is_empty() {
        return Vec::new();
    }
    let (mut total_chunks, mut total_length) = (0usize, 0u64);
    for part in parts {
        let segment = &part.segment.segment;
        for doc in segment.docs.iter().zip(part.live.iter()).filter(|(_, live)| **live).map(|(d, _)| d) {
            let range = doc.first_chunk as usize..(doc.first_chunk + doc.chunks) as usize;
            total_chunks += range.len();
            total_length += segment.lengths[range].iter().map(|&l| u64::from(l)).sum::<u64>();
        }
    }
    let avg_length = if total_chunks == 0 { 1.0 } else { (total_length as f32 / total_chunks as f32).max(1.0) };
    let idfs: Vec<f32> = terms
        .iter()
        .map(|(term, weight)| {
            let df: usize = parts
                .iter()
                .map(|p| {
                    p.segment.postings(term).map_or(0, |(chunks, _)| chunks.iter().filter(|&&c| live(p, c)).count())
                })
                .sum();
            weight * ((total_chunks as f32 - df as f32 + 0.5) / (df as f32 + 0.5) + 1.0).ln()
        })
        .collect();
    let mut hits = Vec::new();
    let mut scores: Vec<f32> = Vec::new();
    for (pi, part) in parts.iter().enumerate() {
        let lengths = &part.segment.segment.lengths;
        let mut any = false;
        for ((term, _), idf) in terms.iter().zip(&idfs) {
            let Some((chunks, frequencies)) = part.segment.postings(term) else { continue };
            if !any {
                scores.clear();
                scores.resize(lengths.len(), 0.0);
                any = true;
            }
            for (&chunk, &tf) in chunks.iter().zip(frequencies) {
                if !live(part, chunk) {
                    continue;
                }
                let tf = tf as f32;
                let length = lengths[chunk as usize] as f32;
                scores[chunk as usize] +=
                    idf * tf * (BM25_K1 + 1.0) / (tf + BM25_K1 * (1.0 - BM25_B + BM25_B * length / avg_length));
            }
        }
        if any {
            // Every matched term adds a positive score (idf > 0), so zero means no match.
            hits.extend(scores.iter().enumerate().filter(|(_, s)| **s > 0.0).map(|(ci, s)| ((pi, ci as u32), *s)));
        }
    }
    hits
}

/// Live chunks whose vector (from `model`) has cosine similarity of at least
/// `min_similarity` to `vector`: a scan of the 8-bit vectors picks candidates, exact f32
/// cosine ranks them.
fn similar(parts: &[Part], model: &str, vector: &[f32], min_similarity: f32, window: usize) -> Vec<Hit> {
    let mut unit = vector.to_vec();
    normalise(&mut unit);
    let mut query = vec![0i8; unit.len()];
    let query_step = quantise(&unit, &mut query);
    if query_step == 0.0 {
        return Vec::new();
    }
    let floor = min_similarity - QUANTISATION_SLACK;
    let mut estimates = Vec::new();
    for (pi, part) in parts.iter().enumerate() {
        let loaded = &part.segment;
        for (doc, _) in loaded.segment.docs.iter().zip(part.live.iter()).filter(|(_, live)| **live) {
            let dims = doc.dims as usize;
            if dims != unit.len() || doc.embedding_model.as_deref() != Some(model) {
                continue;
            }
            let start = doc.first_value as usize;
            let rows = loaded.quantised[start..start + doc.chunks as usize * dims].chunks_exact(dims);
            for (k, row) in rows.enumerate() {
                let ci = doc.first_chunk as usize + k;
                let step = loaded.steps[ci];
                let estimate = dot_i8(row, &query) as f32 * step * query_step;
                if step > 0.0 && estimate >= floor {
                    estimates.push(((pi, ci as u32), estimate));
                }
            }
        }
    }
    best(estimates, window * RERANK_FACTOR)
        .into_iter()
        .filter_map(|((pi, ci), _)| {
            let (row, _) = parts[pi].segment.vector(ci as usize)?;
            let cosine = dot_f32(row, &unit);
            (cosine >= min_similarity).then_some(((pi, ci), cosine))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::{
        analysis::Analyzer,
        index::segment::{build, Loaded},
        model::{Chunk, Shard},
    };

    fn query(text: &str, vector: Option<(&str, &[f32])>) -> Query {
        Query {
            terms: Analyzer::default().weighted_terms(text),
            vector: vector.map(|(m, v)| (m.to_owned(), v.to_vec())),
        }
    }

    fn search(parts: &[Part], text: &str, vector: Option<(&str, &[f32])>, ranking: &Ranking) -> Vec<Passage> {
        super::search(parts, &query(text, vector), ranking)
    }

    fn doc(id: &str, texts: &[&str], vectors: Option<(&str, Vec<Vec<f32>>)>) -> Shard {
        let (model, dims, flat) = match vectors {
            Some((m, v)) => (Some(m.to_owned()), v[0].len() as u32, v.concat()),
            None => (None, 0, Vec::new()),
        };
        Shard {
            document_id: id.into(),
            title: format!("{id}.md"),
            chunks: texts.iter().map(|t| Chunk { heading: None, text: (*t).into(), span: None }).collect(),
            embedding_model: model,
            dims,
            vectors: flat,
        }
    }

    /// One segment of `docs`, every document live.
    fn part(docs: Vec<Shard>) -> Part {
        let live = vec![true; docs.len()];
        let analyzer = Analyzer::default();
        Part { segment: Arc::new(Loaded::new(build(docs, &analyzer), &analyzer)), live: Arc::new(live) }
    }

    fn shard(id: &str, texts: &[&str], vectors: Option<(&str, Vec<Vec<f32>>)>) -> Part {
        part(vec![doc(id, texts, vectors)])
    }

    fn config() -> Ranking {
        Ranking { top_k: 3, min_score: 0.0, min_similarity: 0.3, vector_weight: 1.0 }
    }

    #[test]
    fn the_fusion_window_is_the_reference_depth_or_ten_per_passage() {
        for (top_k, window) in [(1, 100), (5, 100), (10, 100), (11, 110), (50, 500)] {
            assert_eq!(Ranking { top_k, ..config() }.window(), window, "top_k {top_k}");
        }
    }

    #[test]
    fn fused_scores_are_the_weighted_mean_of_each_rankings_share_of_its_best() {
        // "a" is best in both rankings; "b" has only the commoner of the two terms (same
        // length) and is not similar enough to count.
        let shards = vec![
            shard("a", &["deadlines slip quietly"], Some(("m", vec![vec![1.0, 0.0]]))),
            shard("b", &["deadlines happen to everyone"], Some(("m", vec![vec![0.0, 1.0]]))),
        ];
        let weighted = Ranking { vector_weight: 3.0, ..config() };
        let hits = search(&shards, "deadlines slip", Some(("m", &[1.0, 0.0])), &weighted);
        assert_eq!(hits[0].source.document_id, "a");
        assert!((hits[0].source.score - 1.0).abs() < 1e-6, "best of both: {}", hits[0].source.score);
        let b = hits[1].source.score;
        assert!(b > 0.0 && b < 0.25, "only the words' quarter of the weight, and less than its best: {b}");
        // Without a query vector the word ranking is the whole score.
        let words = search(&shards, "deadlines slip", None, &weighted);
        assert!((words[0].source.score - 1.0).abs() < 1e-6);
        assert!((words[1].source.score - 4.0 * b).abs() < 1e-5, "{} vs {}", words[1].source.score, 4.0 * b);
    }

    #[test]
    fn bm25_ranks_the_relevant_chunk_first() {
        let shards = vec![
            shard("a", &["Plan your week around three priorities.", "Block focus time in the calendar."], None),
            shard("b", &["When someone keeps missing deadlines, raise it early and ask what gets in the way."], None),
        ];
        let hits = search(&shards, "teammate missing deadlines", None, &config());
        assert_eq!(hits[0].source.document_id, "b");
        assert_eq!(hits.len(), 1, "only chunks that match");
        assert!(search(&shards, "zebra", None, &config()).is_empty());
    }

    #[test]
    fn vectors_find_what_words_miss_and_fusion_keeps_both() {
        let shards = vec![
            shard(
                "a",
                &["Praise specific behaviour.", "Unrelated text."],
                Some(("m", vec![vec![1.0, 0.0], vec![0.0, 1.0]])),
            ),
            shard("b", &["Deadlines slip when work in progress grows."], Some(("m", vec![vec![0.6, 0.8]]))),
        ];
        let hits = search(&shards, "deadlines", Some(("m", &[1.0, 0.0])), &config());
        let ids: Vec<(&str, u32)> = hits.iter().map(|h| (h.source.document_id.as_str(), h.source.chunk)).collect();
        assert!(ids.contains(&("a", 0)), "semantic match without shared words: {ids:?}");
        assert!(ids.contains(&("b", 0)), "lexical match: {ids:?}");
        assert!(!ids.contains(&("a", 1)), "below the similarity floor: {ids:?}");
        // A vector from another model is ignored.
        let hits = search(&shards, "deadlines", Some(("other", &[1.0, 0.0])), &config());
        assert_eq!(hits.len(), 1);
    }

    #[test]
    fn the_8_bit_scan_finds_the_same_neighbours_as_exact_cosine() {
        let mut rng = fastrand::Rng::with_seed(42);
        let dims = 384;
        let query: Vec<f32> = (0..dims).map(|_| rng.f32() * 2.0 - 1.0).collect();
        // Query plus noise of every strength, so similarities spread from about 0 to 1.
        let vectors: Vec<Vec<f32>> = (0..3000)
            .map(|i| {
                let noise = i as f32 / 300.0;
                query.iter().map(|q| q + noise * (rng.f32() * 2.0 - 1.0)).collect()
            })
            .collect();
        let all_exact: Vec<(u32, f64)> = {
            let qn = query.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            let mut all: Vec<(u32, f64)> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let dot: f64 = v.iter().zip(&query).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
                    let vn = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                    (i as u32, dot / (vn * qn))
                })
                .filter(|(_, c)| *c >= 0.2)
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            all
        };
        let exact = &all_exact[..100];
        let texts = vec!["x"; vectors.len()];
        let shards = vec![shard("a", &texts, Some(("m", vectors)))];
        // The 8-bit estimates stay well inside the slack the scan allows them.
        let mut unit = query.clone();
        normalise(&mut unit);
        let mut q8 = vec![0i8; dims];
        let q_step = quantise(&unit, &mut q8);
        let loaded = &shards[0].segment;
        let worst = loaded
            .segment
            .vectors
            .chunks_exact(dims)
            .zip(loaded.quantised.chunks_exact(dims).zip(&loaded.steps))
            .map(|(exact, (row, step))| (dot_i8(row, &q8) as f32 * step * q_step - dot_f32(exact, &unit)).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < QUANTISATION_SLACK / 2.0, "worst 8-bit error {worst}");
        let got = best(similar(&shards, "m", &query, 0.2, 100), 100);
        assert_eq!(got.len(), exact.len());
        for (((_, ci), cosine), (i, expected)) in got.iter().zip(exact) {
            assert_eq!(ci, i);
            assert!((f64::from(*cosine) - expected).abs() < 1e-4, "{cosine} vs {expected}");
        }
        // At the similarity floor too: everything at or above it, and nothing below.
        // (Compared as sets: near-ties may order differently in f32 and f64.)
        let mut above: Vec<u32> = all_exact.iter().filter(|(_, c)| *c >= 0.5).map(|(i, _)| *i).collect();
        assert!(above.len() > 100 && above.len() < 1000, "a floor inside the data: {}", above.len());
        let mut got: Vec<u32> =
            best(similar(&shards, "m", &query, 0.5, 1000), 1000).iter().map(|(id, _)| id.1).collect();
        above.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, above);
    }

    #[test]
    fn zero_and_broken_vectors_never_match() {
        let shards = vec![shard(
            "a",
            &["zero", "nan", "fine"],
            Some(("m", vec![vec![0.0, 0.0], vec![f32::NAN, 1.0], vec![1.0, 0.0]])),
        )];
        let hits = best(similar(&shards, "m", &[1.0, 0.0], 0.0, 10), 10);
        assert_eq!(hits.iter().map(|(id, _)| id.1).collect::<Vec<_>>(), vec![2]);
        assert!(similar(&shards, "m", &[0.0, 0.0], 0.0, 10).is_empty());
        assert!(similar(&shards, "m", &[f32::INFINITY, 0.0], 0.0, 10).is_empty());
    }

    #[test]
    fn documents_not_live_are_never_returned_and_do_not_count() {
        let texts = ["Feedback early and often.", "Feedback in private."];
        let mut both = part(vec![doc("old", &texts[..1], None), doc("new", &texts[1..], None)]);
        let all = search(std::slice::from_ref(&both), "feedback", None, &config());
        assert_eq!(all.len(), 2);
        both.live = Arc::new(vec![false, true]);
        let hits = search(std::slice::from_ref(&both), "feedback", None, &config());
        assert_eq!(hits.iter().map(|h| h.source.document_id.as_str()).collect::<Vec<_>>(), vec!["new"]);
        assert_eq!(hits[0].source.chunk, 0, "chunk numbers are per document");
        let with_vectors = Part {
            live: Arc::new(vec![false]),
            ..shard("v", &["Praise specific behaviour."], Some(("m", vec![vec![1.0, 0.0]])))
        };
        assert!(search(&[with_vectors], "zebra", Some(("m", &[1.0, 0.0])), &config()).is_empty());
    }

    use proptest::prelude::*;

    /// A document of the property test: words from a small vocabulary (so they share terms),
    /// a 4-dimensional vector per chunk, who may read it (an index into `ACCESS`).
    fn any_document() -> impl Strategy<Value = (Vec<String>, Vec<Vec<f32>>, usize)> {
        let words = prop::sample::subsequence(
            vec!["feedback", "bonus", "payroll", "goals", "review", "salary", "plan", "team", "board", "hire"],
            1..6,
        );
        let chunk = (words, prop::collection::vec(-1.0f32..1.0, 4));
        (prop::collection::vec(chunk, 1..4), 0..ACCESS.len()).prop_map(|(chunks, access)| {
            let (texts, vectors) = chunks.into_iter().map(|(w, v)| (w.join(" "), v)).unzip();
            (texts, vectors, access)
        })
    }

    /// The accesses documents are given: open, or restricted to some groups.
    const ACCESS: &[Option<&[&str]>] = &[None, Some(&["hr"]), Some(&["board"]), Some(&["hr", "legal"])];
    /// The callers: no groups, some groups.
    const CALLERS: &[&[&str]] = &[&[], &["hr"], &["board", "legal"], &["sales"]];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// What a caller gets from a scope with restricted documents is exactly what an index
        /// of the documents they may read alone would give: the same passages, in the same
        /// order, with the same scores (the restriction applies before ranking, statistics
        /// included), as many as `top_k` allows; and never a document they may not read.
        #[test]
        fn a_caller_ranks_as_if_only_their_readable_documents_were_indexed(
            docs in prop::collection::vec(any_document(), 1..12),
            query in prop::sample::subsequence(vec!["feedback", "bonus", "payroll", "goals", "salary", "zebra"], 1..4),
            vector in prop::collection::vec(-1.0f32..1.0, 4),
            with_vector in any::<bool>(),
            top_k in 1usize..6,
        ) {
            let shards: Vec<Shard> = docs
                .iter()
                .enumerate()
                .map(|(i, (texts, vectors, _))| {
                    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                    doc(&format!("d{i}"), &texts, Some(("m", vectors.clone())))
                })
                .collect();
            let mut manifest = crate::store::Manifest::default();
            for (i, (_, _, access)) in docs.iter().enumerate() {
                let groups: Option<Vec<String>> = ACCESS[*access].map(|g| g.iter().map(|s| (*s).to_owned()).collect());
                manifest.set_access(&format!("d{i}"), groups.as_deref(), 0);
            }
            let whole = part(shards.clone());
            let ranking = Ranking { top_k, ..config() };
            let text = query.join(" ");
            let vector = with_vector.then_some(("m", &vector[..]));
            for caller in CALLERS {
                let groups: Vec<String> = caller.iter().map(|s| (*s).to_owned()).collect();
                let clearance = crate::model::Clearance::Groups(&groups);
                let ids = whole.segment.segment.docs.iter().map(|d| d.document_id.as_str());
                let mask = manifest.readable(ids, &whole.live, clearance);
                let masked = Part { live: Arc::new(mask.clone()), ..whole.clone() };
                let got = search(&[masked], &text, vector, &ranking);
                let readable: Vec<Shard> =
                    shards.iter().zip(&mask).filter(|(_, r)| **r).map(|(s, _)| s.clone()).collect();
                let expected = if readable.is_empty() { Vec::new() } else { search(&[part(readable)], &text, vector, &ranking) };
                let key = |p: &Passage| (p.source.document_id.clone(), p.source.chunk);
                prop_assert_eq!(got.iter().map(key).collect::<Vec<_>>(), expected.iter().map(key).collect::<Vec<_>>());
                for (g, e) in got.iter().zip(&expected) {
                    prop_assert!((g.source.score - e.source.score).abs() < 1e-5, "{} vs {}", g.source.score, e.source.score);
                }
                for p in &got {
                    let i: usize = p.source.document_id[1..].parse().unwrap();
                    let access = ACCESS[docs[i].2].map(|g| g.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
                    prop_assert!(clearance.may_read(access.as_deref()), "{} given to {:?}", p.source.document_id, caller);
                }
            }
        }
    }

    #[test]
    fn top_k_and_min_score_bound_the_result() {
        let texts: Vec<String> = (0..10).map(|i| format!("feedback note {i}")).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let shards = vec![shard("a", &refs, None)];
        assert_eq!(search(&shards, "feedback", None, &config()).len(), 3);
        // Found by the words alone, they score at most the words' half of the fusion.
        let vector = Some(("m", &[1.0f32, 0.0][..]));
        assert_eq!(search(&shards, "feedback", vector, &Ranking { min_score: 0.5, ..config() }).len(), 3);
        assert!(search(&shards, "feedback", vector, &Ranking { min_score: 0.6, ..config() }).is_empty());
    }
}
