//! `llm-pii`: masks emails, phone numbers and card numbers (Luhn-checked)
//! in what a client sends to the model and in what the model answers.
//!
//! * **Request** (`application/json`): the body is buffered (the JSON
//!   must be whole to be rewritten), every `messages[].content` text is
//!   masked, and the body is written back if anything changed. A body
//!   that is not JSON passes unchanged, or gets a 400 with
//!   `reject_bad_json`.
//! * **JSON response**: buffered too; every `choices[].message.content`
//!   is masked.
//! * **`text/event-stream` response**: masked as it streams. Each
//!   chunk's whole events are rewritten at once (an event cut by the
//!   chunk boundary waits for its end); in each `choices[i].delta.content`
//!   the text that could still be the start of a match (a trailing word,
//!   number or address, at most 64 bytes) is held back and sent, masked,
//!   at the front of that choice's next delta, so a match split across
//!   two events or two chunks is still masked. The held text goes out
//!   with the choice's `finish_reason` event, or in an extra event before
//!   `data: [DONE]` (or at the end of the body).
//!
//! Masks: `[EMAIL]`, `[PHONE]`, `[CARD]` (scanner: llm-common `pii`).
//! Configuration (JSON, optional; README.md):
//! `{"request": true, "response": true, "email": true, "phone": true,
//!   "card": true, "reject_bad_json": false}`.

use std::collections::BTreeMap;
use std::rc::Rc;

use llm_common::pii::{Kinds, StreamMasker, mask};
use llm_common::{is_event_stream, is_json, openai, sse};
use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use serde_json::{Value, json};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(PiiRoot { config: Rc::new(Config::default()) })
    });
}}

/// The longest unfinished event kept between chunks.
const MAX_EVENT: usize = 1 << 20;
/// Choices with a carry-over of their own; text of further choices is
/// masked piece by piece.
const MAX_CHOICES: usize = 16;

fn yes() -> bool {
    true
}

/// The plugin configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Mask the request's messages.
    #[serde(default = "yes")]
    request: bool,
    /// Mask the response.
    #[serde(default = "yes")]
    response: bool,
    #[serde(default = "yes")]
    email: bool,
    #[serde(default = "yes")]
    phone: bool,
    #[serde(default = "yes")]
    card: bool,
    /// Answer a JSON request body that does not parse with a 400.
    #[serde(default)]
    reject_bad_json: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request: true,
            response: true,
            email: true,
            phone: true,
            card: true,
            reject_bad_json: false,
        }
    }
}

impl Config {
    fn kinds(&self) -> Kinds {
        Kinds {
            email: self.email,
            phone: self.phone,
            card: self.card,
        }
    }
}

struct PiiRoot {
    config: Rc<Config>,
}

impl Context for PiiRoot {}

impl RootContext for PiiRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        llm_common::configure("llm-pii", &bytes, &mut self.config)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Pii {
            config: Rc::clone(&self.config),
            request_json: false,
            response: Response::Pass,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

enum Response {
    /// Not masked.
    Pass,
    /// A JSON body, buffered by the host until its end.
    Json,
    /// An event stream, masked as it passes.
    Stream(Box<StreamState>),
}

#[derive(Default)]
struct StreamState {
    split: Option<sse::Splitter>,
    /// A carry-over per choice index.
    maskers: BTreeMap<u64, StreamMasker>,
    /// The last chunk object seen: the shape of an extra event.
    template: Option<Value>,
    masked: usize,
}

impl StreamState {
    /// Masks one event; the bytes to send for it.
    fn event(&mut self, event: Vec<u8>, kinds: Kinds) -> Vec<u8> {
        let Some(data) = sse::data_of(&event) else {
            return event;
        };
        if data.trim() == "[DONE]" {
            let mut out = self.flush(kinds);
            out.extend_from_slice(&event);
            return out;
        }
        let Ok(mut doc) = serde_json::from_str::<Value>(&data) else {
            return event;
        };
        let mut changed = false;
        if let Some(choices) = doc.get_mut("choices").and_then(Value::as_array_mut) {
            for choice in choices {
                let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
                let finished = choice.get("finish_reason").is_some_and(|f| !f.is_null());
                let text = choice
                    .get("delta")
                    .and_then(|d| d.get("content"))
                    .and_then(Value::as_str);
                if text.is_none() && !finished {
                    continue;
                }
                let text = text.unwrap_or("");
                let tracked = self.maskers.contains_key(&index) || self.maskers.len() < MAX_CHOICES;
                let mut out = if tracked {
                    self.maskers.entry(index).or_default().push(text, kinds)
                } else {
                    let (m, n) = mask(text, kinds);
                    self.masked += n;
                    m
                };
                if finished && let Some(mut m) = self.maskers.remove(&index) {
                    out += &m.finish(kinds);
                    self.masked += m.masked;
                }
                if out != text {
                    changed = true;
                    if let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) {
                        delta.insert("content".into(), Value::String(out));
                    } else if let Some(c) = choice.as_object_mut() {
                        c.insert("delta".into(), json!({ "content": out }));
                    }
                }
            }
            self.template = Some(doc.clone());
        }
        if changed {
            sse::with_data(&event, &doc.to_string())
        } else {
            event
        }
    }

    /// Extra events carrying what the maskers still hold.
    fn flush(&mut self, kinds: Kinds) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, mut m) in std::mem::take(&mut self.maskers) {
            let text = m.finish(kinds);
            self.masked += m.masked;
            if text.is_empty() {
                continue;
            }
            let mut doc = self.template.clone().unwrap_or_else(|| json!({}));
            if let Some(o) = doc.as_object_mut() {
                o.remove("usage");
                o.insert(
                    "choices".into(),
                    json!([{"index": index, "delta": {"content": text}, "finish_reason": null}]),
                );
            }
            out.extend_from_slice(format!("data: {doc}\n\n").as_bytes());
        }
        out
    }
}

struct Pii {
    config: Rc<Config>,
    request_json: bool,
    response: Response,
}

impl Context for Pii {}

impl Pii {
    fn mask_texts(&self, doc: &mut Value, response: bool) -> usize {
        let kinds = self.config.kinds();
        let mut found = 0;
        let mut f = |s: &str| {
            let (m, n) = mask(s, kinds);
            found += n;
            (n > 0).then_some(m)
        };
        if response {
            openai::rewrite_choice_contents(doc, &mut f);
        } else {
            openai::rewrite_message_texts(doc, &mut f);
        }
        found
    }
}

impl HttpContext for Pii {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let ct = self.get_http_request_header("content-type");
        if self.config.request && !end_of_stream && is_json(ct.as_deref()) {
            self.request_json = true;
            self.set_http_request_header("content-length", None);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.request_json {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let mut doc = match serde_json::from_slice::<Value>(&body) {
            Ok(doc) => doc,
            Err(e) if self.config.reject_bad_json => {
                info!("llm-pii: 400 request body is not JSON: {e}");
                let body = openai::error_body(
                    "The request body is not valid JSON.",
                    "invalid_request_error",
                    "invalid_json",
                );
                self.send_http_response(
                    400,
                    vec![("content-type", "application/json")],
                    Some(body.as_bytes()),
                );
                return Action::Pause;
            }
            Err(e) => {
                info!("llm-pii: request body is not JSON, passed unchanged: {e}");
                return Action::Continue;
            }
        };
        let n = self.mask_texts(&mut doc, false);
        info!("llm-pii: request masked={n}");
        if n > 0 {
            self.set_http_request_body(0, body_size, doc.to_string().as_bytes());
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if !self.config.response || end_of_stream {
            return Action::Continue;
        }
        let ct = self.get_http_response_header("content-type");
        if is_event_stream(ct.as_deref()) {
            self.response = Response::Stream(Box::new(StreamState {
                split: Some(sse::Splitter::new(MAX_EVENT)),
                ..StreamState::default()
            }));
        } else if is_json(ct.as_deref()) {
            self.response = Response::Json;
        } else {
            return Action::Continue;
        }
        self.set_http_response_header("content-length", None);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let kinds = self.config.kinds();
        match &mut self.response {
            Response::Pass => Action::Continue,
            Response::Json => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = self
                    .get_http_response_body(0, body_size)
                    .unwrap_or_default();
                let Ok(mut doc) = serde_json::from_slice::<Value>(&body) else {
                    info!("llm-pii: response body is not JSON, passed unchanged");
                    return Action::Continue;
                };
                let n = self.mask_texts(&mut doc, true);
                info!("llm-pii: response masked={n}");
                if n > 0 {
                    self.set_http_response_body(0, body_size, doc.to_string().as_bytes());
                }
                Action::Continue
            }
            Response::Stream(_) => {
                let chunk = if body_size > 0 {
                    self.get_http_response_body(0, body_size)
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                let Response::Stream(state) = &mut self.response else {
                    return Action::Continue;
                };
                let Some(split) = state.split.as_mut() else {
                    return Action::Continue;
                };
                let parts = split.push(&chunk);
                let mut out = Vec::with_capacity(chunk.len());
                for event in parts.events {
                    out.extend(state.event(event, kinds));
                }
                out.extend(parts.oversized);
                if end_of_stream {
                    let rest = state
                        .split
                        .take()
                        .map(|mut s| s.take_rest())
                        .unwrap_or_default();
                    if !rest.is_empty() {
                        out.extend(state.event(rest, kinds));
                    }
                    out.extend(state.flush(kinds));
                    info!("llm-pii: stream masked={}", state.masked);
                }
                if out != chunk {
                    self.set_http_response_body(0, body_size, &out);
                }
                Action::Continue
            }
        }
    }
}
