//! OpenAI-style JSON: error bodies, and what the filters read from
//! requests (`model`, `messages[].content`) and responses (`usage`).

use serde_json::{Value, json};

/// An OpenAI-style error body:
/// `{"error":{"message":..,"type":..,"param":null,"code":..}}`.
pub fn error_body(message: &str, kind: &str, code: &str) -> String {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}}).to_string()
}

/// Token counts of a response's `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// `usage.prompt_tokens`.
    pub prompt: u64,
    /// `usage.completion_tokens`.
    pub completion: u64,
    /// `usage.total_tokens` (prompt + completion when absent).
    pub total: u64,
}

/// The `usage` object of a response or stream chunk, if it has one with
/// numeric `prompt_tokens` or `completion_tokens`.
pub fn usage_of(doc: &Value) -> Option<Usage> {
    let u = doc.get("usage")?;
    let prompt = u.get("prompt_tokens").and_then(Value::as_u64);
    let completion = u.get("completion_tokens").and_then(Value::as_u64);
    if prompt.is_none() && completion.is_none() {
        return None;
    }
    let (prompt, completion) = (prompt.unwrap_or(0), completion.unwrap_or(0));
    let total = u
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(prompt.saturating_add(completion));
    Some(Usage {
        prompt,
        completion,
        total,
    })
}

/// The `model` string of a request or response.
pub fn model_of(doc: &Value) -> Option<&str> {
    doc.get("model").and_then(Value::as_str)
}

/// Every text of `messages[].content`: a string content, or the `text` of
/// the `{"type":"text","text":..}` parts of an array content.
pub fn message_texts(doc: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    let Some(messages) = doc.get("messages").and_then(Value::as_array) else {
        return out;
    };
    for m in messages {
        match m.get("content") {
            Some(Value::String(s)) => out.push(s.as_str()),
            Some(Value::Array(parts)) => {
                out.extend(parts.iter().filter_map(|p| p.get("text")?.as_str()));
            }
            _ => {}
        }
    }
    out
}

/// Applies `f` to every text of `messages[].content` (as
/// [`message_texts`] finds them), replacing it with `f`'s answer when that
/// is `Some`. Returns how many texts changed.
pub fn rewrite_message_texts(doc: &mut Value, f: &mut dyn FnMut(&str) -> Option<String>) -> usize {
    let mut changed = 0;
    let Some(messages) = doc.get_mut("messages").and_then(Value::as_array_mut) else {
        return 0;
    };
    for m in messages {
        match m.get_mut("content") {
            Some(Value::String(s)) => changed += replace(s, f),
            Some(Value::Array(parts)) => {
                for p in parts {
                    if let Some(Value::String(s)) = p.get_mut("text") {
                        changed += replace(s, f);
                    }
                }
            }
            _ => {}
        }
    }
    changed
}

/// Applies `f` to every `choices[].message.content` string of a
/// (non-streamed) response. Returns how many changed.
pub fn rewrite_choice_contents(
    doc: &mut Value,
    f: &mut dyn FnMut(&str) -> Option<String>,
) -> usize {
    let mut changed = 0;
    let Some(choices) = doc.get_mut("choices").and_then(Value::as_array_mut) else {
        return 0;
    };
    for c in choices {
        if let Some(Value::String(s)) = c.get_mut("message").and_then(|m| m.get_mut("content")) {
            changed += replace(s, f);
        }
    }
    changed
}

fn replace(s: &mut String, f: &mut dyn FnMut(&str) -> Option<String>) -> usize {
    match f(s) {
        Some(new) if new != *s => {
            *s = new;
            1
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn error_body_shape() {
        let v: Value = serde_json::from_str(&error_body("no", "invalid_request_error", "x"))
            .unwrap_or_default();
        assert_eq!(v["error"]["message"], "no");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "x");
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn usage_and_model() {
        let v = json!({"model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 4}});
        assert_eq!(
            usage_of(&v),
            Some(Usage {
                prompt: 3,
                completion: 4,
                total: 7
            })
        );
        assert_eq!(model_of(&v), Some("m"));
        assert_eq!(usage_of(&json!({"usage": null})), None);
        assert_eq!(usage_of(&json!({"usage": {"prompt_tokens": "x"}})), None);
    }

    #[test]
    fn message_texts_and_rewrite() {
        let mut v = json!({"messages": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "image_url"}]},
            {"role": "assistant", "content": null}
        ]});
        assert_eq!(message_texts(&v), vec!["a", "b"]);
        let n = rewrite_message_texts(&mut v, &mut |s| Some(s.to_uppercase()));
        assert_eq!(n, 2);
        assert_eq!(message_texts(&v), vec!["A", "B"]);
        let mut r = json!({"choices": [{"message": {"content": "x"}}]});
        assert_eq!(rewrite_choice_contents(&mut r, &mut |_| None), 0);
        assert_eq!(
            rewrite_choice_contents(&mut r, &mut |_| Some("y".into())),
            1
        );
        assert_eq!(r["choices"][0]["message"]["content"], "y");
    }
}
