//! A small Server-Sent Events decoder for upstream LLM streams: bytes in, events out.
//! Handles `\n` and `\r\n` line ends, multi-line `data:`, comments, and events split across
//! chunks; refuses to buffer more than [`MAX_EVENT_BYTES`] for one event.

/// Largest single event accepted from an upstream.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, when present.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
}

/// The upstream sent an event larger than [`MAX_EVENT_BYTES`].
#[derive(Debug, PartialEq, Eq)]
pub struct EventTooLarge;

impl SseDecoder {
    /// Feeds bytes; returns the events completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, EventTooLarge> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some((end, sep)) = find_blank_line(&self.buf) {
            let block: Vec<u8> = self.buf.drain(..end + sep).take(end).collect();
            if let Some(event) = parse_block(&String::from_utf8_lossy(&block)) {
                events.push(event);
            }
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(EventTooLarge);
        }
        Ok(events)
    }

    /// Flushes a last event that was not followed by a blank line.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let rest = std::mem::take(&mut self.buf);
        parse_block(&String::from_utf8_lossy(&rest))
    }
}

/// Position and length of the first blank-line separator (`\n\n`, `\r\n\r\n`, `\r\r`).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        let rest = &buf[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else if rest.starts_with(b"\n\n") || rest.starts_with(b"\r\r") {
            Some((i, 2))
        } else {
            None
        }
    })
}

fn parse_block(block: &str) -> Option<SseEvent> {
    let mut event = SseEvent::default();
    let mut has_data = false;
    for line in block.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event.event = Some(value.to_owned()),
            "data" => {
                if has_data {
                    event.data.push('\n');
                }
                event.data.push_str(value);
                has_data = true;
            }
            _ => {}
        }
    }
    (has_data || event.event.is_some()).then_some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut d = SseDecoder::default();
        assert!(d.push(b"event: content_block_delta\nda").unwrap().is_empty());
        let events = d.push(b"ta: {\"a\":1}\n\ndata: [DONE]\n\n").unwrap();
        assert_eq!(
            events,
            vec![
                SseEvent { event: Some("content_block_delta".into()), data: "{\"a\":1}".into() },
                SseEvent { event: None, data: "[DONE]".into() },
            ]
        );
    }

    #[test]
    fn crlf_comments_and_multiline_data() {
        let mut d = SseDecoder::default();
        let events = d.push(b": keep-alive\r\n\r\ndata: a\r\ndata: b\r\n\r\n").unwrap();
        assert_eq!(events, vec![SseEvent { event: None, data: "a\nb".into() }]);
    }

    #[test]
    fn unterminated_last_event_is_flushed() {
        let mut d = SseDecoder::default();
        assert!(d.push(b"data: tail").unwrap().is_empty());
        assert_eq!(d.finish(), Some(SseEvent { event: None, data: "tail".into() }));
    }

    #[test]
    fn oversized_event_is_refused() {
        let mut d = SseDecoder::default();
        assert_eq!(d.push(&vec![b'x'; MAX_EVENT_BYTES + 1]), Err(EventTooLarge));
    }
}
