//! Splitting a streamed etcd answer (watch, lease keepalive) into its messages: the gRPC
//! gateway writes one JSON object per line. Pure: the caller reads the chunks and keeps the
//! time; this only buffers, so it can be fuzzed and tested without a network.

/// A streamed body's bytes, buffered until a line is complete.
#[derive(Debug)]
pub struct LineBuf {
    buf: Vec<u8>,
    /// The start of `buf` searched for a line end already (not searched again).
    scanned: usize,
    /// Longest message accepted, in bytes, counted from its first byte that is not white
    /// space to its line end.
    max: usize,
}

/// A message longer than the limit: the stream cannot be read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong {
    /// The limit, in bytes.
    pub max: usize,
}

impl LineBuf {
    /// An empty buffer that accepts messages up to `max` bytes.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            max,
        }
    }

    /// Appends a chunk as it arrived.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete non-empty line, trimmed of white space (`None`: no complete line
    /// buffered). A message longer than the limit (counted from its first byte that is not
    /// white space, to its line end) is an error, whether its end has arrived or not; white
    /// space between messages is dropped as it arrives. So the buffer stays within the limit
    /// plus about two chunks, whatever the peer sends.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, TooLong> {
        loop {
            let Some(pos) = self
                .buf
                .get(self.scanned..)
                .and_then(|rest| memchr::memchr(b'\n', rest))
            else {
                let lead = leading_blank(&self.buf);
                if lead == self.buf.len() {
                    self.buf.clear();
                }
                self.scanned = self.buf.len();
                if self.buf.len() - lead.min(self.buf.len()) > self.max {
                    return Err(TooLong { max: self.max });
                }
                return Ok(None);
            };
            let end = self.scanned + pos;
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            self.scanned = 0;
            if let Some(found) = self.message(&line[..line.len() - 1])? {
                return Ok(Some(found));
            }
        }
    }

    /// One segment between line ends: its trimmed text, `None` when blank.
    fn message(&self, segment: &[u8]) -> Result<Option<Vec<u8>>, TooLong> {
        if segment.len() - leading_blank(segment) > self.max {
            return Err(TooLong { max: self.max });
        }
        let trimmed = segment.trim_ascii();
        Ok((!trimmed.is_empty()).then(|| trimmed.to_vec()))
    }

    /// Whether the buffer holds more than white space: a message has begun (and must end
    /// within the caller's deadline).
    #[must_use]
    pub fn has_begun(&self) -> bool {
        self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }

    /// At the end of the body: what is left, trimmed, when it is more than white space (a
    /// last message without a line end).
    pub fn take_rest(&mut self) -> Result<Option<Vec<u8>>, TooLong> {
        let rest = std::mem::take(&mut self.buf);
        self.scanned = 0;
        self.message(&rest)
    }

    /// Bytes buffered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is buffered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// How many bytes of white space `bytes` begins with.
fn leading_blank(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]], max: usize) -> Result<Vec<Vec<u8>>, TooLong> {
        let mut b = LineBuf::new(max);
        let mut out = Vec::new();
        for c in chunks {
            b.push(c);
            while let Some(line) = b.next_line()? {
                out.push(line);
            }
        }
        out.extend(b.take_rest()?);
        Ok(out)
    }

    #[test]
    fn lines_across_chunks_blank_lines_and_a_last_line_without_end() {
        let got = all(
            &[b"{\"a\"", b":1}\n\n  \r\n{\"b\":2}\r", b"\n{\"c\"", b":3} "],
            64,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                b"{\"a\":1}".to_vec(),
                b"{\"b\":2}".to_vec(),
                b"{\"c\":3}".to_vec()
            ]
        );
    }

    #[test]
    fn a_message_over_the_limit_is_an_error_with_or_without_its_end() {
        assert_eq!(all(&[b"0123456789\n"], 5), Err(TooLong { max: 5 }));
        assert_eq!(all(&[b"0123", b"45678"], 5), Err(TooLong { max: 5 }));
        // White space before a message does not count; endless white space is dropped.
        assert_eq!(all(&[b"   01234\r\n"], 6).unwrap(), vec![b"01234".to_vec()]);
        let mut b = LineBuf::new(5);
        for _ in 0..1000 {
            b.push(b"   \r\t ");
            assert_eq!(b.next_line(), Ok(None));
        }
        assert!(b.is_empty());
    }

    #[test]
    fn only_text_begins_a_message() {
        let mut b = LineBuf::new(10);
        b.push(b" \n\r\n ");
        assert_eq!(b.next_line(), Ok(None));
        assert!(!b.has_begun());
        b.push(b"{");
        assert!(b.has_begun());
    }
}
