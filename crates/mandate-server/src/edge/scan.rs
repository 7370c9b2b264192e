//! Finds request heads that carry both `Content-Length` and
//! `Transfer-Encoding`, in the raw bytes of a connection.
//!
//! hyper reads such a request by its `Transfer-Encoding` (RFC 9112 §6.3)
//! and drops the `Content-Length` field before any service sees the
//! request, so the evidence is only on the wire. We would rather refuse
//! the request than pick one framing (a proxy in front may have picked the
//! other: request smuggling).
//!
//! The scanner sees every byte hyper reads, before hyper does, and cannot
//! know where bodies end. So it over-approximates: it splits the stream at
//! empty lines into blocks, and flags a block that has a line containing
//! ` HTTP/1.`, a line starting with `content-length:` and one starting with
//! `transfer-encoding:` (ASCII case aside).
//!
//! INVARIANT (no request head with both fields goes unflagged): a head is
//! a run of non-empty lines (httparse ends it at the first empty line, so
//! the scanner never starts a new block inside it); its request line
//! contains ` HTTP/1.` (a single SP before the version, which httparse
//! requires) even when the bytes of a previous body were glued in front of
//! it; and each header line starts right after a line feed, with the name
//! immediately followed by `:` (httparse refuses white space there and
//! obsolete line folding in requests). Bytes before the head, from a body,
//! only add lines to the block.
//!
//! A body that itself holds such a block (an HTTP request with both fields,
//! uploaded as data) is flagged too: the requests after it on the same
//! connection are refused. That is the price of never missing one.

/// The longest line prefix the scanner needs: `transfer-encoding:`.
const PREFIX: usize = 18;
const NEEDLE: &[u8] = b" HTTP/1.";

#[derive(Debug, Default)]
pub(super) struct HeadScanner {
    /// The first bytes of the current line, lower-cased.
    prefix: [u8; PREFIX],
    /// Bytes seen in the current line (saturating).
    line_len: usize,
    /// Whether the current line so far is empty or a lone `\r`.
    blank: bool,
    /// How much of [`NEEDLE`] the current line has matched at its end.
    needle: usize,
    /// What the current block has shown.
    request_line: bool,
    content_length: bool,
    transfer_encoding: bool,
    /// Sticky: a block with all three was seen.
    flagged: bool,
}

impl HeadScanner {
    pub(super) fn new() -> Self {
        Self {
            blank: true,
            ..Self::default()
        }
    }

    /// Whether a block with both framing fields has been seen so far.
    pub(super) fn flagged(&self) -> bool {
        self.flagged
    }

    /// Whether a head has begun (a request line was read) and not ended:
    /// bytes of the next request, pipelined behind the one being answered.
    pub(super) fn in_head(&self) -> bool {
        self.request_line
    }

    /// Feeds the next bytes of the stream.
    pub(super) fn feed(&mut self, bytes: &[u8]) {
        if self.flagged {
            return;
        }
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            i += 1;
            // Past the prefix and outside a partial ` HTTP/1.`, a byte
            // that is neither a line feed nor a space changes nothing but
            // the line's length (as `step` would): a run of such bytes is
            // skipped at once (most of a head is long values, such as a
            // credential).
            if self.line_len >= PREFIX && self.needle == 0 && b != b'\n' && b != b' ' {
                let rest = bytes.get(i..).unwrap_or_default();
                let run = rest
                    .iter()
                    .position(|&c| c == b'\n' || c == b' ')
                    .unwrap_or(rest.len());
                i += run;
                self.line_len = self.line_len.saturating_add(run + 1);
                self.blank = false;
                continue;
            }
            self.step(b);
        }
    }

    /// Takes one byte of the stream.
    fn step(&mut self, b: u8) {
        if b == b'\n' {
            self.end_line();
            return;
        }
        if let Some(slot) = self.prefix.get_mut(self.line_len) {
            *slot = b.to_ascii_lowercase();
        }
        self.blank = self.line_len == 0 && b == b'\r';
        self.line_len = self.line_len.saturating_add(1);
        self.needle = match (NEEDLE.get(self.needle), NEEDLE.first()) {
            (Some(&want), _) if want == b => self.needle + 1,
            (_, Some(&first)) if first == b => 1,
            _ => 0,
        };
        if self.needle == NEEDLE.len() {
            self.request_line = true;
            self.needle = 0;
        }
    }

    fn end_line(&mut self) {
        if self.blank {
            // An empty line: whatever head was open has ended.
            self.request_line = false;
            self.content_length = false;
            self.transfer_encoding = false;
        } else {
            let seen = self.prefix.get(..self.line_len.min(PREFIX)).unwrap_or(&[]);
            self.content_length |= seen.starts_with(b"content-length:");
            self.transfer_encoding |= seen.starts_with(b"transfer-encoding:");
            if self.request_line && self.content_length && self.transfer_encoding {
                self.flagged = true;
            }
        }
        self.line_len = 0;
        self.blank = true;
        self.needle = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::HeadScanner;
    use proptest::prelude::*;

    fn scan(chunks: &[&[u8]]) -> bool {
        let mut s = HeadScanner::new();
        for c in chunks {
            s.feed(c);
        }
        s.flagged()
    }

    const SMUGGLED: &[u8] = b"POST /gw/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    #[test]
    fn a_head_with_both_fields_is_flagged() {
        assert!(scan(&[SMUGGLED]));
        assert!(scan(&[
            b"POST / HTTP/1.1\nTRANSFER-ENCODING: chunked\ncontent-LENGTH:3\n\n"
        ]));
    }

    #[test]
    fn ordinary_heads_are_not() {
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nX-Transfer-Encoding: chunked\r\n\r\n",
        ]));
    }

    #[test]
    fn fields_in_separate_heads_are_not_joined() {
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]));
    }

    #[test]
    fn a_head_glued_to_a_previous_body_is_flagged() {
        // The previous request's body ends without a line feed.
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\na\r\nbc",
            SMUGGLED
        ]));
    }

    /// The scanner's state after `stream`, fed in chunks cut at `cuts`, is
    /// its state after each byte in turn: the runs it skips change nothing
    /// else.
    fn same_as_byte_by_byte(stream: &[u8], cuts: &[usize]) -> Result<(), TestCaseError> {
        let mut whole = HeadScanner::new();
        let mut at = 0;
        for &c in cuts.iter().chain([&stream.len()]) {
            let c = c.clamp(at, stream.len());
            whole.feed(&stream[at..c]);
            at = c;
        }
        let mut one = HeadScanner::new();
        for &b in stream {
            if !one.flagged {
                one.step(b);
            }
        }
        // Once flagged, a connection is refused; what follows is not read.
        prop_assert_eq!(whole.flagged(), one.flagged());
        if !one.flagged() {
            prop_assert_eq!(format!("{whole:?}"), format!("{one:?}"));
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn skipping_runs_changes_nothing(
            parts in proptest::collection::vec(prop_oneof![
                Just(b"\r\n".to_vec()), Just(b"\n".to_vec()), Just(b" ".to_vec()),
                Just(b" HTTP/1.1".to_vec()), Just(b"POST /x".to_vec()),
                Just(b"Content-Length: 4".to_vec()), Just(b"TRANSFER-ENCODING:chunked".to_vec()),
                Just(b"signature-key: sig=jwt;jwt=\"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln\"".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..40),
            ], 0..24),
            cuts in proptest::collection::vec(0usize..600, 0..8),
        ) {
            let stream = parts.concat();
            let mut cuts = cuts;
            cuts.sort_unstable();
            same_as_byte_by_byte(&stream, &cuts)?;
        }

        /// However the stream is cut into reads, and whatever came before
        /// it on the connection, a head with both fields is flagged.
        #[test]
        fn no_split_hides_a_head(
            before in proptest::collection::vec(any::<u8>(), 0..64),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let mut stream = before;
            stream.extend_from_slice(SMUGGLED);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut s = HeadScanner::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([stream.len()]) {
                s.feed(&stream[at..c]);
                at = c;
            }
            prop_assert!(s.flagged());
        }
    }
}
