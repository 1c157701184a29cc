//! `text/event-stream` bodies arrive in arbitrary chunks: an event may be
//! cut anywhere, and one chunk may hold several events. [`Splitter`]
//! hands out whole events as soon as their blank line has arrived and
//! keeps only the unfinished tail.

/// Splits a stream of chunks into whole events (each with its
/// terminating blank line).
#[derive(Debug)]
pub struct Splitter {
    pending: Vec<u8>,
    max_event: usize,
}

/// What [`Splitter::push`] gives back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// Whole events, in order, each with its blank line.
    pub events: Vec<Vec<u8>>,
    /// Bytes given back untouched because an event grew past the limit
    /// without ending: the caller passes them on as they are.
    pub oversized: Vec<u8>,
}

impl Splitter {
    /// A splitter that holds at most `max_event` bytes of an unfinished
    /// event (past that, the bytes are given back as
    /// [`Split::oversized`]).
    pub fn new(max_event: usize) -> Self {
        Splitter {
            pending: Vec::new(),
            max_event,
        }
    }

    /// Adds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Split {
        self.pending.extend_from_slice(chunk);
        let mut split = Split::default();
        let mut start = 0;
        while let Some(end) = event_end(&self.pending[start..]) {
            split.events.push(self.pending[start..start + end].to_vec());
            start += end;
        }
        self.pending.drain(..start);
        if self.pending.len() > self.max_event {
            split.oversized = std::mem::take(&mut self.pending);
        }
        split
    }

    /// The unfinished tail (at the end of the body).
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// The length of the first event of `buf` including its blank line
/// (`\n\n` or `\r\n\r\n`), if it is whole.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// The data of an event: its `data:` lines (one leading space dropped),
/// joined with `\n`; `None` without any, or if it is not UTF-8.
pub fn data_of(event: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let mut data: Option<String> = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("data:") else {
            continue;
        };
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        match &mut data {
            Some(d) => {
                d.push('\n');
                d.push_str(rest);
            }
            None => data = Some(rest.to_owned()),
        }
    }
    data
}

/// The event with its data replaced by `data` (one `data:` line where the
/// first was; other fields such as `event:` and `id:` kept), ending with
/// `\n\n`.
pub fn with_data(event: &[u8], data: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(event);
    let mut out = String::with_capacity(event.len() + data.len());
    let mut placed = false;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if line.starts_with("data:") {
            if !placed {
                out.push_str("data: ");
                out.push_str(data);
                out.push('\n');
                placed = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !placed {
        out.push_str("data: ");
        out.push_str(data);
        out.push('\n');
    }
    out.push('\n');
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn events_across_chunks() {
        let mut s = Splitter::new(1024);
        let a = s.push(b"data: {\"a\":1}\n\ndata: {\"b\"");
        assert_eq!(a.events, vec![b"data: {\"a\":1}\n\n".to_vec()]);
        let b = s.push(b":2}\n");
        assert!(b.events.is_empty());
        let c = s.push(b"\ndata: [DONE]\n\n");
        assert_eq!(
            c.events,
            vec![
                b"data: {\"b\":2}\n\n".to_vec(),
                b"data: [DONE]\n\n".to_vec()
            ]
        );
        assert!(s.take_rest().is_empty());
    }

    #[test]
    fn crlf_and_oversized() {
        let mut s = Splitter::new(8);
        assert_eq!(s.push(b"data: x\r\n\r\n").events.len(), 1);
        let o = s.push(b"data: 0123456789");
        assert!(o.events.is_empty());
        assert_eq!(o.oversized, b"data: 0123456789".to_vec());
        s.push(b"data: y");
        assert_eq!(s.take_rest(), b"data: y".to_vec());
    }

    #[test]
    fn data_lines() {
        assert_eq!(data_of(b"data: a\ndata:b\n\n").as_deref(), Some("a\nb"));
        assert_eq!(data_of(b": comment\n\n"), None);
        assert_eq!(data_of(b"event: x\ndata: 1\n\n").as_deref(), Some("1"));
        assert_eq!(
            with_data(b"event: x\ndata: 1\nid: 2\n\n", "Z"),
            b"event: x\ndata: Z\nid: 2\n\n".to_vec()
        );
    }
}
