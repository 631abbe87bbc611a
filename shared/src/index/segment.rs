//! Segments: building one from documents' chunks (tokenised once, at write time), taking
//! one apart again for compaction, and the form a reader searches (with 8-bit copies of the
//! vectors for a fast first scan).

use std::collections::HashMap;

use crate::{
    analysis::Analyzer,
    model::{Chunk, Shard},
    store::{Segment, SegmentDoc},
};

/// Scales `v` to unit length (a zero or broken vector becomes zero).
pub fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter_mut().for_each(|x| *x /= norm);
    } else {
        v.iter_mut().for_each(|x| *x = 0.0);
    }
}

/// Writes `v` as 8-bit steps of `max |v| / 127` into `out` and returns the step (0 when `v`
/// is zero).
pub fn quantise(v: &[f32], out: &mut [i8]) -> f32 {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        out.iter_mut().for_each(|q| *q = 0);
        return 0.0;
    }
    let step = max / 127.0;
    for (q, x) in out.iter_mut().zip(v) {
        *q = (x / step).round().clamp(-127.0, 127.0) as i8;
    }
    step
}

/// A segment of `docs`, in order: chunks analysed into an inverted index, vectors scaled to
/// unit length. A document whose vectors do not match its chunks keeps no vectors.
pub fn build(docs: Vec<Shard>, analyzer: &Analyzer) -> Segment {
    let mut segment = Segment::default();
    for shard in docs {
        let first_chunk = segment.chunks.len() as u32;
        let first_value = segment.vectors.len() as u64;
        let well_formed = shard.vectors.len() == shard.chunks.len() * shard.dims as usize && shard.dims > 0;
        let (model, dims) = if well_formed { (shard.embedding_model, shard.dims) } else { (None, 0) };
        if well_formed {
            let mut vectors = shard.vectors;
            vectors.chunks_exact_mut(dims as usize).for_each(normalise);
            segment.vectors.extend(vectors);
        }
        segment.docs.push(SegmentDoc {
            document_id: shard.document_id,
            title: shard.title,
            first_chunk,
            chunks: shard.chunks.len() as u32,
            embedding_model: model,
            dims,
            first_value,
        });
        segment.chunks.extend(shard.chunks);
    }
    index_terms(&mut segment, analyzer);
    segment
}

/// (Re)makes the inverted index of `segment` from its chunks' text with `analyzer`.
pub fn index_terms(segment: &mut Segment, analyzer: &Analyzer) {
    let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
    segment.lengths.clear();
    for (number, chunk) in segment.chunks.iter().enumerate() {
        let (terms, length) = analyzer.chunk_terms(chunk);
        for (term, tf) in terms {
            postings.entry(term).or_default().push((number as u32, tf));
        }
        segment.lengths.push(length);
    }
    segment.terms.clear();
    segment.term_ends.clear();
    segment.postings.clear();
    segment.frequencies.clear();
    let mut terms: Vec<(String, Vec<(u32, u32)>)> = postings.into_iter().collect();
    terms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (term, list) in terms {
        for (chunk, tf) in list {
            segment.postings.push(chunk);
            segment.frequencies.push(tf);
        }
        segment.terms.push(term);
        segment.term_ends.push(segment.postings.len() as u32);
    }
    segment.analyzer = analyzer.id();
}

/// The documents of `segment` for which `keep` holds, as shards again (for compaction).
pub fn documents(segment: Segment, mut keep: impl FnMut(&SegmentDoc) -> bool) -> Vec<Shard> {
    let mut chunks = segment.chunks.into_iter();
    let mut out = Vec::new();
    for doc in segment.docs {
        let doc_chunks: Vec<Chunk> = chunks.by_ref().take(doc.chunks as usize).collect();
        if !keep(&doc) {
            continue;
        }
        let start = doc.first_value as usize;
        let end = start + doc.chunks as usize * doc.dims as usize;
        out.push(Shard {
            document_id: doc.document_id,
            title: doc.title,
            chunks: doc_chunks,
            embedding_model: doc.embedding_model,
            dims: doc.dims,
            vectors: segment.vectors.get(start..end).map(<[f32]>::to_vec).unwrap_or_default(),
        });
    }
    out
}

/// Groups documents, in order, into parts of about `target` bytes each.
pub fn split(docs: Vec<Shard>, target: u64) -> Vec<Vec<Shard>> {
    let mut parts = vec![Vec::new()];
    let mut size = 0u64;
    for doc in docs {
        // Text, and about as much again for its postings, plus the vectors.
        let bytes: u64 = doc
            .chunks
            .iter()
            .map(|c| 2 * (c.text.len() + c.heading.as_ref().map_or(0, String::len)) as u64)
            .sum::<u64>()
            + doc.vectors.len() as u64 * 4;
        if size > 0 && size + bytes > target {
            parts.push(Vec::new());
            size = 0;
        }
        size += bytes;
        if let Some(part) = parts.last_mut() {
            part.push(doc);
        }
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// Bytes a segment takes once loaded for search (its data plus the 8-bit vectors and the
/// per-chunk tables the reader adds), estimated from its contents.
pub fn memory(segment: &Segment) -> u64 {
    const STRING: u64 = 24;
    let text: u64 = segment
        .chunks
        .iter()
        .map(|c| c.text.len() as u64 + c.heading.as_ref().map_or(0, |h| h.len() as u64) + 2 * STRING)
        .sum();
    let docs: u64 = segment.docs.iter().map(|d| (d.document_id.len() + d.title.len()) as u64 + 96).sum();
    let terms: u64 = segment.terms.iter().map(|t| t.len() as u64 + STRING + 4).sum();
    let per_chunk = 4 /* length */ + 4 /* document */ + 4 /* step */;
    text + docs
        + terms
        + segment.postings.len() as u64 * 8
        + segment.chunks.len() as u64 * per_chunk
        + segment.vectors.len() as u64 * 5
}

/// A segment ready for search.
pub struct Loaded {
    pub segment: Segment,
    /// Per chunk: its document's position in `segment.docs`.
    pub chunk_doc: Vec<u32>,
    /// The unit vectors quantised to 8 bits, laid out like `segment.vectors`.
    pub quantised: Vec<i8>,
    /// Per chunk: the value of one quantisation step (0 without a vector: never matched).
    pub steps: Vec<f32>,
}

impl Loaded {
    /// `segment` ready for search with `analyzer`'s terms: one made with another analyser
    /// (an older Coach's, or another language) is analysed again from its text.
    pub fn new(mut segment: Segment, analyzer: &Analyzer) -> Self {
        if segment.analyzer != analyzer.id() {
            index_terms(&mut segment, analyzer);
        }
        let mut chunk_doc = Vec::with_capacity(segment.chunks.len());
        let mut quantised = vec![0; segment.vectors.len()];
        let mut steps = vec![0.0; segment.chunks.len()];
        for (d, doc) in segment.docs.iter().enumerate() {
            chunk_doc.extend(std::iter::repeat_n(d as u32, doc.chunks as usize));
            let dims = doc.dims as usize;
            if dims == 0 {
                continue;
            }
            let start = doc.first_value as usize;
            let end = start + doc.chunks as usize * dims;
            let rows = segment.vectors[start..end].chunks_exact(dims).zip(quantised[start..end].chunks_exact_mut(dims));
            for (c, (row, q)) in rows.enumerate() {
                steps[doc.first_chunk as usize + c] = quantise(row, q);
            }
        }
        Self { segment, chunk_doc, quantised, steps }
    }

    /// The postings of `term`: (chunks, frequencies).
    pub fn postings(&self, term: &str) -> Option<(&[u32], &[u32])> {
        let s = &self.segment;
        let i = s.terms.binary_search_by(|t| t.as_str().cmp(term)).ok()?;
        let start = if i == 0 { 0 } else { s.term_ends[i - 1] as usize };
        let end = s.term_ends[i] as usize;
        Some((&s.postings[start..end], &s.frequencies[start..end]))
    }

    /// The unit vector of chunk `c` and its 8-bit copy, when its document has vectors.
    pub fn vector(&self, c: usize) -> Option<(&[f32], &[i8])> {
        let doc = &self.segment.docs[self.chunk_doc[c] as usize];
        let dims = doc.dims as usize;
        if dims == 0 {
            return None;
        }
        let start = doc.first_value as usize + (c - doc.first_chunk as usize) * dims;
        Some((&self.segment.vectors[start..start + dims], &self.quantised[start..start + dims]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, texts: &[&str], vectors: Vec<f32>, dims: u32) -> Shard {
        Shard {
            document_id: id.into(),
            title: format!("{id}.md"),
            chunks: texts
                .iter()
                .map(|t| Chunk { heading: Some("Guide".into()), text: (*t).into(), span: None })
                .collect(),
            embedding_model: (dims > 0).then(|| "m".to_owned()),
            dims,
            vectors,
        }
    }

    #[test]
    fn build_indexes_every_chunk_and_takes_apart_again() {
        let docs = vec![
            shard("a", &["Feedback early", "Deadlines slip"], vec![3.0, 4.0, 0.0, 2.0], 2),
            shard("b", &["More feedback"], vec![], 0),
            // Vectors that do not fit the chunks are dropped, the text kept.
            shard("c", &["Broken vectors"], vec![1.0], 2),
        ];
        let english = Analyzer::default();
        let segment = build(docs.clone(), &english);
        assert_eq!(segment.chunks.len(), 4);
        assert_eq!(segment.vectors, vec![0.6, 0.8, 0.0, 1.0]);
        let loaded = Loaded::new(segment.clone(), &english);
        let (chunks, tfs) = loaded.postings("feedback").unwrap();
        assert_eq!(chunks, &[0, 2]);
        assert_eq!(tfs, &[1, 1]);
        // The heading counts as words of every chunk under it.
        assert_eq!(loaded.postings("guid").unwrap().0.len(), 4);
        assert!(loaded.postings("zebra").is_none());
        assert_eq!(loaded.chunk_doc, vec![0, 0, 1, 2]);
        assert_eq!(loaded.vector(1).unwrap().0, &[0.0, 1.0]);
        assert!(loaded.vector(2).is_none() && loaded.vector(3).is_none());
        assert!(loaded.steps[0] > 0.0 && loaded.steps[2] == 0.0);
        // Taken apart: the kept documents come back as they went in (vectors at unit length).
        let back = documents(segment.clone(), |d| d.document_id != "b");
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].chunks, docs[0].chunks);
        assert_eq!(back[0].vectors, vec![0.6, 0.8, 0.0, 1.0]);
        assert_eq!((back[1].dims, back[1].vectors.len()), (0, 0));
        // Rebuilt from its parts, a segment is the same segment.
        assert_eq!(build(documents(segment.clone(), |_| true), &english), segment);
        assert!(memory(&segment) > 0);
        // Loaded with another analyser, the segment is analysed again from its text.
        let none = crate::config::with(&[("COACH_SEARCH_LANGUAGE", "none")], Analyzer::from_env).unwrap();
        let again = Loaded::new(segment.clone(), &none);
        assert_eq!(again.segment.analyzer, none.id());
        assert_eq!(again.postings("deadlines").unwrap().0, &[1]);
        assert!(again.postings("deadlin").is_none());
        let mut legacy = segment;
        legacy.analyzer = crate::analysis::LEGACY_ID.into();
        legacy.terms = vec!["deadline".into()];
        legacy.term_ends = vec![1];
        (legacy.postings, legacy.frequencies) = (vec![1], vec![1]);
        let migrated = Loaded::new(legacy, &english);
        assert_eq!(migrated.postings("deadlin").unwrap().0, &[1]);
        assert_eq!(migrated.postings("feedback").unwrap().0, &[0, 2]);
    }
}
