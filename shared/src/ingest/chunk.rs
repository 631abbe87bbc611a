//! Splitting text into overlapping chunks for retrieval.
//!
//! Markdown is split by headings first, so a chunk never straddles two sections and carries
//! its heading path ("Giving feedback > Praise"); other text is one section. Inside a section,
//! chunks are about `size` characters, cut at a paragraph, sentence or word boundary when one
//! is near, and each starts `overlap` characters before the previous one ended.
//!
//! Every chunk records where it is in the text it was cut from ([`Span`]): its character
//! range and, for a PDF, its pages (extraction puts a form feed between pages).

use crate::{
    config::{ConfigError, Env},
    model::{Chunk, Kind, Span},
};

/// Chunk sizes in characters (`COACH_CHUNK_SIZE`, `COACH_CHUNK_OVERLAP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    pub size: usize,
    pub overlap: usize,
}

impl ChunkConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let size = env.number("COACH_CHUNK_SIZE")? as usize;
        let overlap = env.number("COACH_CHUNK_OVERLAP")? as usize;
        if overlap >= size / 2 {
            return Err(ConfigError {
                var: "COACH_CHUNK_OVERLAP",
                reason: format!("must be less than half of COACH_CHUNK_SIZE ({size})"),
            });
        }
        Ok(Self { size, overlap })
    }
}

impl Default for ChunkConfig {
    fn default() -> Self {
        Self { size: 1000, overlap: 150 }
    }
}

/// The longest heading path a chunk carries, in characters: a section's path is copied into
/// each of its chunks and into every prompt that cites them, so a longer one is cut.
pub const MAX_HEADING_CHARS: usize = 200;

/// `text` cut to at most `max` characters, the last of them an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some(_) => {
            let keep = text.char_indices().nth(max.saturating_sub(1)).map_or(0, |(at, _)| at);
            format!("{}…", text[..keep].trim_end())
        }
    }
}

/// Chunks of a document of `kind` whose extracted text is `text`: markdown by sections,
/// anything else as plain text; a PDF's chunks know their pages.
pub fn chunk(kind: Kind, text: &str, config: ChunkConfig) -> Vec<Chunk> {
    match kind {
        Kind::Markdown => chunk_markdown(text, config),
        Kind::Pdf => one_section(text, config, true),
        _ => chunk_text(text, config),
    }
}

/// Chunks of a markdown document, section by section.
pub fn chunk_markdown(text: &str, config: ChunkConfig) -> Vec<Chunk> {
    let mut pieces: Vec<(Option<String>, (usize, usize))> = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    // The current section's body: a contiguous range of `text` (heading lines end it).
    let mut body = 0..0;
    let mut in_fence = false;
    let flush = |path: &[(usize, String)], body: &std::ops::Range<usize>, pieces: &mut Vec<_>| {
        let heading = (!path.is_empty()).then(|| {
            let joined = path.iter().map(|(_, h)| h.as_str()).collect::<Vec<_>>().join(" > ");
            cut(&joined, MAX_HEADING_CHARS)
        });
        for (start, end) in split(&text[body.clone()], config) {
            pieces.push((heading.clone(), (body.start + start, body.start + end)));
        }
    };
    let mut at = 0;
    for raw in text.split_inclusive('\n') {
        let line = raw.trim_end_matches(['\n', '\r']);
        let next = at + raw.len();
        if line.trim_start().starts_with("```") || line.trim_start().starts_with("~~~") {
            in_fence = !in_fence;
        }
        let level = if in_fence { 0 } else { line.chars().take_while(|&c| c == '#').count() };
        if (1..=6).contains(&level) && line[level..].starts_with(' ') {
            flush(&path, &body, &mut pieces);
            body = next..next;
            path.retain(|(l, _)| *l < level);
            path.push((level, cut(line[level..].trim().trim_end_matches('#').trim(), MAX_HEADING_CHARS)));
        } else {
            body.end = next;
        }
        at = next;
    }
    flush(&path, &body, &mut pieces);
    located(text, pieces, false)
}

/// Chunks of plain text (one section, no heading).
pub fn chunk_text(text: &str, config: ChunkConfig) -> Vec<Chunk> {
    one_section(text, config, false)
}

/// Chunks of `text` as one section without a heading, with their pages when `paged`.
fn one_section(text: &str, config: ChunkConfig, paged: bool) -> Vec<Chunk> {
    let pieces = split(text, config).into_iter().map(|range| (None, range)).collect();
    located(text, pieces, paged)
}

/// Finds chunks indexed before chunks recorded their spans in `text` (their document's text,
/// extracted again), in order, and gives each one found its span (with pages for a PDF):
/// each was cut from that text, so it is there, from where the one before it began. A chunk
/// not found (its text was extracted otherwise then) keeps none. Returns how many were found.
pub fn relocate(kind: Kind, text: &str, chunks: &mut [Chunk]) -> usize {
    let mut from = 0;
    let mut found = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        if chunk.span.is_some() || chunk.text.is_empty() {
            continue;
        }
        // A PDF's chunks now read a form feed as a line break; the old ones never had either.
        if let Some(at) = text[from..].find(chunk.text.as_str()) {
            let start = from + at;
            found.push((i, (start, start + chunk.text.len())));
            // Each chunk starts after the one before it.
            from = start + text[start..].chars().next().map_or(1, char::len_utf8);
        }
    }
    let pieces = found.iter().map(|(_, range)| (None, *range)).collect();
    let located = located(text, pieces, kind == Kind::Pdf);
    for ((i, _), with_span) in found.iter().zip(located) {
        chunks[*i].span = with_span.span;
    }
    found.len()
}

/// Chunks of `text`'s byte ranges (each with its heading path), with their character ranges
/// and, when `paged`, the pages they are on.
fn located(text: &str, pieces: Vec<(Option<String>, (usize, usize))>, paged: bool) -> Vec<Chunk> {
    // Every start and end, in order: one pass over the text counts characters and pages up
    // to each.
    let mut marks: Vec<usize> = pieces.iter().flat_map(|(_, (s, e))| [*s, *e]).collect();
    marks.sort_unstable();
    marks.dedup();
    let mut at: std::collections::HashMap<usize, (u64, u32)> = std::collections::HashMap::with_capacity(marks.len());
    let (mut chars, mut page, mut byte) = (0u64, 1u32, 0usize);
    let mut rest = text.chars();
    for mark in marks {
        while byte < mark {
            let Some(c) = rest.next() else { break };
            byte += c.len_utf8();
            chars += 1;
            if c == '\x0c' {
                page += 1;
            }
        }
        at.insert(mark, (chars, page));
    }
    pieces
        .into_iter()
        .map(|(heading, (start, end))| {
            let (from, first) = at.get(&start).copied().unwrap_or_default();
            let (to, last) = at.get(&end).copied().unwrap_or_default();
            // A piece is trimmed: it neither starts nor ends with a form feed, so the page at
            // its start and the page before its end are its first and last.
            let pages = paged.then_some([first, last.max(first)]);
            let text = text[start..end].replace('\x0c', "\n");
            Chunk { heading, text, span: Some(Span { start: from, end: to, pages }) }
        })
        .collect()
}

/// Splits one section into trimmed, non-empty pieces of about `size` characters: their byte
/// ranges in `text`. Memory is one piece's window of characters, not the text's (a
/// `(usize, char)` per character is 16 bytes each: 320 MB for a 20 MB file).
fn split(section: &str, config: ChunkConfig) -> Vec<(usize, usize)> {
    let lead = section.len() - section.trim_start().len();
    let text = section.trim();
    let size = config.size.max(1);
    let overlap = config.overlap.min(size / 2);
    let mut pieces = Vec::new();
    // The characters from `start` (a byte offset): `size` of them and the one after, if any.
    let mut window: Vec<(usize, char)> = Vec::with_capacity(size.min(text.len()) + 1);
    let mut start = 0;
    while start < text.len() {
        window.clear();
        window.extend(text[start..].char_indices().take(size + 1).map(|(at, c)| (start + at, c)));
        let last = window.len() <= size;
        let end = if last { window.len() } else { boundary(&window, 0, size) };
        let to = window.get(end).map_or(text.len(), |c| c.0);
        let piece = &text[start..to];
        let trimmed = piece.trim();
        if !trimmed.is_empty() {
            let from = start + (piece.len() - piece.trim_start().len());
            pieces.push((lead + from, lead + from + trimmed.len()));
        }
        if last {
            break;
        }
        // Step back by the overlap, then forward to the start of a word; always progress.
        let mut next = end.saturating_sub(overlap).max(1);
        while next < end && !window[next - 1].1.is_whitespace() {
            next += 1;
        }
        start = window[next].0;
    }
    pieces
}

/// The best cut in the last 30% of `start..hard_end`: after a blank line, else after a
/// sentence end, else at whitespace, else `hard_end` itself.
fn boundary(chars: &[(usize, char)], start: usize, hard_end: usize) -> usize {
    let floor = start + (hard_end - start) * 7 / 10;
    let window = floor..hard_end;
    let find = |pred: &dyn Fn(usize) -> bool| window.clone().rev().find(|&i| i > start && pred(i));
    find(&|i| chars[i - 1].1 == '\n' && i >= 2 && chars[i - 2].1 == '\n')
        .or_else(|| {
            find(&|i| matches!(chars[i - 1].1, ' ' | '\n') && i >= 2 && matches!(chars[i - 2].1, '.' | '!' | '?'))
        })
        .or_else(|| find(&|i| chars[i - 1].1.is_whitespace()))
        .unwrap_or(hard_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_sections_carry_their_heading_path() {
        let md = "# Giving feedback\nIntro.\n\n## Praise\nBe specific.\n\n```\n# not a heading\n```\n## Deadlines\nAsk early.\n";
        let chunks = chunk_markdown(md, ChunkConfig::default());
        let got: Vec<(Option<&str>, &str)> = chunks.iter().map(|c| (c.heading.as_deref(), c.text.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Some("Giving feedback"), "Intro."),
                (Some("Giving feedback > Praise"), "Be specific.\n\n```\n# not a heading\n```"),
                (Some("Giving feedback > Deadlines"), "Ask early."),
            ]
        );
    }

    #[test]
    fn long_text_is_cut_at_boundaries_with_overlap() {
        let sentence = "Feedback is a conversation, not a verdict. ";
        let text = sentence.repeat(60); // ~2600 chars
        let config = ChunkConfig { size: 1000, overlap: 150 };
        let chunks = chunk_text(&text, config);
        assert!(chunks.len() >= 3, "{}", chunks.len());
        for c in &chunks {
            assert!(c.text.chars().count() <= 1000);
            assert!(c.text.ends_with('.'), "cut at a sentence end: {:?}", &c.text[c.text.len() - 20..]);
            assert!(c.text.starts_with(|ch: char| ch.is_alphabetic()), "starts at a word");
        }
        // Consecutive chunks overlap.
        let tail: String = chunks[0].text.chars().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
        assert!(chunks[1].text.contains(tail.trim()), "overlap carried over");
    }

    #[test]
    fn no_text_is_lost_and_unicode_is_safe() {
        let text = "é".repeat(2500);
        let chunks = chunk_text(&text, ChunkConfig { size: 1000, overlap: 100 });
        assert_eq!(chunks[0].text.chars().count(), 1000);
        let total: usize = chunks.iter().map(|c| c.text.chars().count()).sum();
        assert!(total >= 2500);
        assert!(chunk_text("  \n ", ChunkConfig::default()).is_empty());
    }

    #[test]
    fn every_chunk_knows_its_character_range_and_pages() {
        // Markdown with CRLF line ends and multi-byte characters: each range is the chunk.
        let md = "# Über\r\n\r\nÄrger früh ansprechen.\r\n\r\n## Lob\r\n\r\nKonkret loben, bald danach.\r\n";
        let chunks = chunk_markdown(md, ChunkConfig::default());
        assert_eq!(chunks.len(), 2);
        for c in &chunks {
            let span = c.span.unwrap();
            let slice: String = md.chars().skip(span.start as usize).take((span.end - span.start) as usize).collect();
            assert_eq!(slice, c.text);
            assert_eq!(span.pages, None);
        }
        assert_eq!(chunks[1].heading.as_deref(), Some("Über > Lob"));
        // A PDF's text: pages split by form feeds; every chunk knows its pages.
        let pdf = format!("{}\x0c{}\x0c{}", "one. ".repeat(30), "two. ".repeat(30), "three. ".repeat(30));
        let chunks = chunk(Kind::Pdf, &pdf, ChunkConfig { size: 100, overlap: 10 });
        for c in &chunks {
            let [first, last] = c.span.unwrap().pages.unwrap();
            for (page, word) in [(1, "one"), (2, "two"), (3, "three")] {
                assert_eq!(c.text.contains(word), (first..=last).contains(&page), "{c:?}");
            }
            assert!(!c.text.contains('\x0c'), "form feeds become line breaks");
        }
        assert_eq!(chunks.last().unwrap().span.unwrap().pages, Some([3, 3]));
        // Plain text: ranges, no pages.
        let text = chunk(Kind::Text, "  Hello there.  ", ChunkConfig::default());
        assert_eq!(text[0].span, Some(Span { start: 2, end: 14, pages: None }));
    }

    #[test]
    fn chunks_indexed_before_spans_are_found_again_in_their_text() {
        let text: String = (0..200).map(|i| format!("Sentence number {i} says something. ")).collect();
        let mut old = chunk_text(&text, ChunkConfig::default());
        let new = old.clone();
        old.iter_mut().for_each(|c| c.span = None);
        old.push(Chunk { heading: None, text: "not in the text".into(), span: None });
        assert_eq!(relocate(Kind::Text, &text, &mut old), new.len());
        assert_eq!(&old[..new.len()], &new[..], "the same spans as chunking gives now");
        assert_eq!(old.last().unwrap().span, None);
    }

    #[test]
    fn tiny_sizes_still_progress() {
        let chunks = chunk_text("a b c d e f", ChunkConfig { size: 1, overlap: 5 });
        assert_eq!(chunks.iter().map(|c| c.text.as_str()).collect::<Vec<_>>().join(""), "abcdef");
    }

    #[test]
    fn a_huge_heading_is_cut_not_copied_whole_into_every_chunk() {
        let md = format!("# {}\n\n{}", "h".repeat(200_000), "Body text here. ".repeat(400));
        let chunks = chunk_markdown(&md, ChunkConfig::default());
        assert!(chunks.len() > 3);
        for chunk in &chunks {
            let heading = chunk.heading.as_deref().unwrap();
            assert_eq!(heading.chars().count(), MAX_HEADING_CHARS);
            assert!(heading.starts_with("hhh") && heading.ends_with('…'));
        }
        // A deep path is cut as a whole; a short one is left alone.
        let md = (1..=6).map(|l| format!("{} {}\n", "#".repeat(l), "word ".repeat(20))).collect::<String>() + "text";
        let heading = chunk_markdown(&md, ChunkConfig::default())[0].heading.clone().unwrap();
        assert!(heading.chars().count() <= MAX_HEADING_CHARS && heading.ends_with('…'), "{heading}");
        assert_eq!(cut("Praise", MAX_HEADING_CHARS), "Praise");
    }
}
