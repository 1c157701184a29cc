//! Shared pieces of the LLM middleware examples (`examples/llm/`): plain
//! Rust with no proxy-wasm calls, so the host-side tests
//! (`cargo test -p llm-common`) cover them.
//!
//! * [`openai`]: OpenAI-style error bodies and `usage` / `model` readers;
//! * [`sse`]: a `text/event-stream` event splitter for bodies that arrive
//!   in arbitrary chunks;
//! * [`pii`]: the email / phone / card scanner and masker, with the
//!   carry-over rule for text that arrives in pieces;
//! * [`classifier`]: the naive-Bayes text classifier of `llm-moderation`
//!   (training and scoring);
//! * [`resp`]: Redis commands and replies (RESP) for `llm-token-limit`'s
//!   Redis budget;
//! * [`Tee`]: a bounded copy of a body that passes through unbuffered.

#![warn(missing_docs)]

pub mod classifier;
pub mod openai;
pub mod pii;
pub mod resp;
pub mod sse;

/// A bounded copy of a body the filter lets pass chunk by chunk: the
/// filter keeps what it needs to read at the end (a JSON response's
/// `usage`) without making the host buffer the stream. Past `max` bytes
/// the copy is dropped and [`Tee::overflowed`] says so.
#[derive(Debug, Default)]
pub struct Tee {
    data: Vec<u8>,
    max: usize,
    overflowed: bool,
}

impl Tee {
    /// An empty copy that holds at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Tee {
            data: Vec::new(),
            max,
            overflowed: false,
        }
    }

    /// Appends a chunk (or drops everything once past the limit).
    pub fn push(&mut self, chunk: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.data.len() + chunk.len() > self.max {
            self.overflowed = true;
            self.data = Vec::new();
            return;
        }
        self.data.extend_from_slice(chunk);
    }

    /// The bytes so far (empty once overflowed).
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The body was larger than the limit.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

/// Reads a plugin configuration (JSON) into `config`: an empty (or
/// all-whitespace) configuration keeps the defaults. A configuration that
/// does not parse is refused (`on_configure` returns false) with a log
/// line naming `plugin`.
pub fn configure<C: serde::de::DeserializeOwned>(
    plugin: &str,
    bytes: &[u8],
    config: &mut std::rc::Rc<C>,
) -> bool {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    match serde_json::from_slice::<C>(bytes) {
        Ok(c) => {
            *config = std::rc::Rc::new(c);
            true
        }
        Err(e) => {
            log::warn!("{plugin}: bad configuration: {e}");
            false
        }
    }
}

/// The response of an OpenAI-style call, watched for its `usage` as it
/// passes: a JSON body is copied (at most `max` bytes), an event stream is
/// split into events and the last one that carries `usage` is kept. Nothing
/// is buffered by the host.
#[derive(Debug, Default)]
pub enum UsageTap {
    /// Not watched.
    #[default]
    Off,
    /// A JSON body, copied.
    Json(Tee),
    /// An event stream, and its last event with `usage` (parsed).
    Stream(sse::Splitter, Option<serde_json::Value>),
}

impl UsageTap {
    /// Watches a response with this `content-type`.
    pub fn for_response(content_type: Option<&str>, max: usize) -> Self {
        if is_event_stream(content_type) {
            Self::Stream(sse::Splitter::new(max), None)
        } else {
            Self::Json(Tee::new(max))
        }
    }

    /// One body chunk.
    pub fn push(&mut self, chunk: &[u8]) {
        match self {
            Self::Off => {}
            Self::Json(tee) => tee.push(chunk),
            Self::Stream(split, last) => {
                for event in split.push(chunk).events {
                    if let Some(v) = sse::data_of(&event)
                        .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
                        .filter(|v| openai::usage_of(v).is_some())
                    {
                        *last = Some(v);
                    }
                }
            }
        }
    }

    /// At the end: the document that carries `usage` (the JSON body, or the
    /// stream's last event with it), if any. The tap is off afterwards.
    pub fn finish(&mut self) -> Option<serde_json::Value> {
        match std::mem::take(self) {
            Self::Off => None,
            Self::Json(tee) => serde_json::from_slice(tee.bytes()).ok(),
            Self::Stream(_, last) => last,
        }
    }
}

/// The bearer token of an `authorization` value (`Bearer <key>`, scheme
/// case-insensitive), or the whole trimmed value for other headers.
pub fn key_of(header: &str, value: &str) -> Option<String> {
    let value = value.trim();
    let key = if header.eq_ignore_ascii_case("authorization") {
        let (scheme, rest) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        rest.trim()
    } else {
        value
    };
    (!key.is_empty()).then(|| key.to_owned())
}

/// `content-type` is `text/event-stream` (parameters ignored).
pub fn is_event_stream(content_type: Option<&str>) -> bool {
    media_type(content_type).eq_ignore_ascii_case("text/event-stream")
}

/// `content-type` is JSON (`application/json` or `+json`).
pub fn is_json(content_type: Option<&str>) -> bool {
    let m = media_type(content_type).to_ascii_lowercase();
    m == "application/json" || m.ends_with("+json")
}

fn media_type(content_type: Option<&str>) -> &str {
    content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
}

/// A name segment for a metric or a shared-data key: ASCII letters,
/// digits, `-` and `_` are kept, anything else becomes `_`; at most 64
/// bytes; empty becomes `unknown`.
pub fn label(value: &str) -> String {
    let s: String = value
        .chars()
        .filter(|c| c.is_ascii())
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "unknown".into() } else { s }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn keys_from_headers() {
        assert_eq!(
            key_of("authorization", "Bearer sk-1").as_deref(),
            Some("sk-1")
        );
        assert_eq!(
            key_of("Authorization", "bearer  sk-1 ").as_deref(),
            Some("sk-1")
        );
        assert_eq!(key_of("authorization", "Basic abc"), None);
        assert_eq!(key_of("authorization", "Bearer "), None);
        assert_eq!(key_of("x-api-key", " sk-2 ").as_deref(), Some("sk-2"));
        assert_eq!(key_of("x-api-key", ""), None);
    }

    #[test]
    fn content_types() {
        assert!(is_event_stream(Some("text/event-stream; charset=utf-8")));
        assert!(!is_event_stream(Some("application/json")));
        assert!(is_json(Some("application/json; charset=utf-8")));
        assert!(is_json(Some("application/problem+json")));
        assert!(!is_json(None));
    }

    #[test]
    fn labels_are_safe() {
        assert_eq!(label("gpt-4o.mini/x"), "gpt-4o_mini_x");
        assert_eq!(label("é"), "unknown");
        assert_eq!(label(&"a".repeat(100)).len(), 64);
    }

    #[test]
    fn tee_is_bounded() {
        let mut t = Tee::new(4);
        t.push(b"ab");
        t.push(b"cd");
        assert_eq!(t.bytes(), b"abcd");
        t.push(b"e");
        assert!(t.overflowed());
        assert!(t.bytes().is_empty());
    }
}
