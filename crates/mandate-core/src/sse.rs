//! A decoder for server-sent events (the `text/event-stream` of MCP's
//! streamable HTTP): bytes in, the `data` of each complete event out. No
//! I/O; the caller feeds it what it reads.

/// Decodes a stream of events, keeping at most `limit` bytes of an
/// unfinished line or event.
#[derive(Debug)]
pub struct SseDecoder {
    buf: Vec<u8>,
    data: Vec<u8>,
    limit: usize,
}

/// An event or a line larger than the decoder's limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event of the stream is larger than {0} bytes")]
pub struct SseTooLarge(pub usize);

impl SseDecoder {
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            data: Vec::new(),
            limit,
        }
    }

    /// Feeds `chunk`; returns the data of each event it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, SseTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(std::mem::take(&mut self.data));
                }
            } else if let Some(rest) = line.strip_prefix(b"data:") {
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data
                    .extend_from_slice(rest.strip_prefix(b" ").unwrap_or(rest));
            }
            // `event:`, `id:`, `retry:` and comments carry nothing MCP needs.
            if self.data.len() > self.limit {
                return Err(SseTooLarge(self.limit));
            }
        }
        if self.buf.len() > self.limit {
            return Err(SseTooLarge(self.limit));
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream = b"event: message\r\ndata: {\"a\":1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\n";
        for split in 0..stream.len() {
            let mut d = SseDecoder::new(1024);
            let mut got = d.feed(&stream[..split]).unwrap();
            got.extend(d.feed(&stream[split..]).unwrap());
            assert_eq!(
                got,
                vec![b"{\"a\":1}".to_vec(), b"x\ny".to_vec()],
                "split at {split}"
            );
        }
        let mut d = SseDecoder::new(8);
        assert!(d.feed(b"data: 0123456789\n").is_err());
        let mut d = SseDecoder::new(8);
        assert!(d.feed(b"data: 0123456789").is_err());
    }
}
