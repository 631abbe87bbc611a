//! Splitting text into overlapping chunks for retrieval.
//!
//! Markdown is split by headings first, so a chunk never straddles two sections and carries
//! its heading path ("Giving feedback > Praise"); other text is one section. Inside a section,
//! chunks are about `size` characters, cut at a paragraph, sentence or word boundary when one
//! is near, and each starts `overlap` characters before the previous one ended.

use crate::{
    config::{ConfigError, Env},
    model::Chunk,
};

/// Chunk sizes in characters (`COACH_CHUNK_SIZE`, `COACH_CHUNK_OVERLAP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    pub size: usize,
    pub overlap: usize,
}

impl ChunkConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let size = env.number("COACH_CHUNK_SIZE", 1000, 100, 20_000)? as usize;
        let overlap = env.number("COACH_CHUNK_OVERLAP", 150, 0, 10_000)? as usize;
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

/// Chunks of a markdown document, section by section.
pub fn chunk_markdown(text: &str, config: ChunkConfig) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut body = String::new();
    let mut in_fence = false;
    let flush = |path: &[(usize, String)], body: &mut String, chunks: &mut Vec<Chunk>| {
        let heading = (!path.is_empty()).then(|| {
            let joined = path.iter().map(|(_, h)| h.as_str()).collect::<Vec<_>>().join(" > ");
            cut(&joined, MAX_HEADING_CHARS)
        });
        for text in split(body, config) {
            chunks.push(Chunk { heading: heading.clone(), text });
        }
        body.clear();
    };
    for line in text.lines() {
        if line.trim_start().starts_with("```") || line.trim_start().starts_with("~~~") {
            in_fence = !in_fence;
        }
        let level = if in_fence { 0 } else { line.chars().take_while(|&c| c == '#').count() };
        if (1..=6).contains(&level) && line[level..].starts_with(' ') {
            flush(&path, &mut body, &mut chunks);
            path.retain(|(l, _)| *l < level);
            path.push((level, cut(line[level..].trim().trim_end_matches('#').trim(), MAX_HEADING_CHARS)));
        } else {
            body.push_str(line);
            body.push('\n');
        }
    }
    flush(&path, &mut body, &mut chunks);
    chunks
}

/// Chunks of plain text (one section, no heading).
pub fn chunk_text(text: &str, config: ChunkConfig) -> Vec<Chunk> {
    split(text, config).into_iter().map(|text| Chunk { heading: None, text }).collect()
}

/// Splits one section into trimmed, non-empty pieces of about `size` characters. Memory
/// beyond the pieces themselves is one piece's window of characters, not the text's (a
/// `(usize, char)` per character is 16 bytes each: 320 MB for a 20 MB file).
fn split(text: &str, config: ChunkConfig) -> Vec<String> {
    let text = text.trim();
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
        let piece = text[start..to].trim();
        if !piece.is_empty() {
            pieces.push(piece.to_owned());
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
