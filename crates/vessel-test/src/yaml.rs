//! The one module of vessel that talks to the YAML crate (`serde-saphyr`,
//! see `docs/dependencies.md`); the scenario format and vessel-proxy's Envoy
//! config reader both use it. Everything else reads and writes YAML through
//! [`from_str`], [`to_string`] and [`Value`], and sees only [`YamlError`], so
//! no YAML crate type reaches a public signature and the crate can be swapped
//! here alone.
//!
//! Every document is read with the same options:
//! * YAML 1.2 core scalars: `yes`, `on`, `0755` and `1_000` stay strings, as
//!   vessel read them with `serde_yaml` before;
//! * duplicate keys are errors; merge keys (`<<: *anchor`) are applied;
//! * tags other than the standard ones (`!!str`, ...) are errors;
//! * the parser's budget (nesting depth 64, 250,000 nodes, 64 MiB of scalars,
//!   alias-bomb limits) bounds what a document can cost.

use std::fmt;

use serde::Serialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::MessageFormatter as _;

/// A YAML document that could not be read (or a value that could not be
/// written as YAML): where, and why.
///
/// The message starts with the path of the offending key when there is one
/// (`streams[0].expct: unknown field ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct YamlError {
    location: Option<(usize, usize)>,
    message: String,
}

impl YamlError {
    /// An error about the whole document (no location).
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            location: None,
            message: message.into(),
        }
    }

    /// The 1-based line of the problem, when known.
    pub fn line(&self) -> Option<usize> {
        self.location.map(|(line, _)| line)
    }

    /// The 1-based column of the problem, when known.
    pub fn column(&self) -> Option<usize> {
        self.location.map(|(_, column)| column)
    }

    /// What is wrong, with the key path when there is one, without the
    /// position.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, column)) => write!(f, "line {line} column {column}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        reject_unsupported_tags: true,
        // `.inf` and `.nan` reach the reader, which rejects them with the
        // field's path where they are not allowed.
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
        with_snippet: false,
    }
}

/// Reads one YAML document into `T`.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    let mut path = None;
    serde_saphyr::with_deserializer_from_str_with_options(text, options(), |d| {
        serde_path_to_error::deserialize(d).map_err(|e| {
            // A path of only unknown segments (`?`) says nothing.
            if e.path()
                .iter()
                .any(|s| !matches!(s, serde_path_to_error::Segment::Unknown))
            {
                path = Some(e.path().to_string());
            }
            e.into_inner()
        })
    })
    .map_err(|e| {
        let mut what = serde_saphyr::UserMessageFormatter
            .format_message(&e)
            .into_owned();
        // The parser says only "invalid u16": add what it found.
        if let serde_saphyr::Error::InvalidScalar { ty, location } = &e
            && let Some(found) = source_text(text, location.span())
        {
            what = format!("expected {ty}, found `{found}`");
        }
        YamlError {
            location: e.location().filter(|l| l.line() > 0).and_then(|l| {
                Some((
                    usize::try_from(l.line()).ok()?,
                    usize::try_from(l.column()).ok()?,
                ))
            }),
            message: match path {
                Some(path) => format!("{path}: {what}"),
                None => what,
            },
        }
    })
}

/// The text of `span` in `input`, if it is short enough to quote.
fn source_text(input: &str, span: serde_saphyr::Span) -> Option<&str> {
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    input
        .get(start..start.checked_add(len)?)
        .filter(|s| !s.is_empty() && s.len() <= 80)
}

/// Writes `value` as a YAML document.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, YamlError> {
    serde_saphyr::to_string(value).map_err(|e| YamlError {
        location: None,
        message: e.to_string(),
    })
}

/// A YAML document as a tree, for readers that walk it by hand (the Envoy
/// config reader). Mappings keep their order; merge keys are already
/// applied and duplicate keys already rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A non-negative integer.
    UInt(u64),
    /// A negative integer.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    String(String),
    /// A list.
    Sequence(Vec<Value>),
    /// A mapping, in document order.
    Mapping(Vec<(Value, Value)>),
}

impl Value {
    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// True for a mapping.
    pub fn is_mapping(&self) -> bool {
        matches!(self, Self::Mapping(_))
    }

    /// The value of string key `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let Self::Mapping(m) = self else {
            return None;
        };
        m.iter()
            .find(|(k, _)| matches!(k, Self::String(s) if s == key))
            .map(|(_, v)| v)
    }

    /// The number as a `u64`, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::UInt(n) => Some(n),
            Self::Int(n) => u64::try_from(n).ok(),
            _ => None,
        }
    }

    /// The number as an `i64`, if it is an integer in range.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::UInt(n) => i64::try_from(n).ok(),
            Self::Int(n) => Some(n),
            _ => None,
        }
    }

    /// The number as an `f64` (rounded for large integers).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::UInt(n) => Some(n as f64),
            Self::Int(n) => Some(n as f64),
            Self::Float(f) => Some(f),
            _ => None,
        }
    }
}

impl<'de> de::Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor;

        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
                Ok(Value::UInt(n))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
                Ok(u64::try_from(n).map_or(Value::Int(n), Value::UInt))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
                Ok(Value::Float(n))
            }
            fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                Ok(Value::String(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Value, E> {
                Ok(Value::String(s))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Value, E> {
                Err(E::custom("binary values (`!!binary`) are not supported"))
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Value, D2::Error> {
                de::Deserialize::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Value::Sequence(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Value::Mapping(out))
            }
        }

        d.deserialize_any(ValueVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::String(v.to_owned())
    }

    #[test]
    fn scalars_follow_yaml_1_2_core() {
        let v: Value = from_str(
            "a: 1\nb: -2\nc: 1.5\nd: ~\ne:\nf: yes\ng: \"10\"\nh: 0755\ni: 1_000\nj: on\n",
        )
        .expect("parses");
        let expected = Value::Mapping(vec![
            (s("a"), Value::UInt(1)),
            (s("b"), Value::Int(-2)),
            (s("c"), Value::Float(1.5)),
            (s("d"), Value::Null),
            (s("e"), Value::Null),
            (s("f"), s("yes")),
            (s("g"), s("10")),
            (s("h"), s("0755")),
            (s("i"), s("1_000")),
            (s("j"), s("on")),
        ]);
        assert_eq!(v, expected);
        assert_eq!(from_str::<Value>("").expect("empty"), Value::Null);
    }

    #[test]
    fn merge_keys_apply_and_explicit_keys_win() {
        let v: Value = from_str("- &c {name: a, t: 1s}\n- <<: *c\n  name: b\n").expect("parses");
        let Value::Sequence(items) = v else {
            panic!("{v:?}")
        };
        assert_eq!(items[1].get("name"), Some(&s("b")));
        assert_eq!(items[1].get("t"), Some(&s("1s")));
    }

    #[test]
    fn errors_have_a_position_and_a_path() {
        let e = from_str::<Value>("a: {}\na: {}\n").expect_err("duplicate key");
        assert_eq!((e.line(), e.column()), (Some(2), Some(1)));
        assert!(e.message().contains("duplicate"), "{e}");

        let e = from_str::<Value>("a: !custom x\n").expect_err("custom tag");
        assert!(e.message().contains("!custom"), "{e}");
        assert_eq!(e.line(), Some(1));

        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            port: u16,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            items: Vec<Inner>,
        }
        let e = from_str::<Outer>("items:\n  - port: 1\n  - port: ok\n").expect_err("bad port");
        assert_eq!((e.line(), e.column()), (Some(3), Some(11)));
        assert_eq!(e.message(), "items[1].port: expected u16, found `ok`");
        assert_eq!(e.to_string(), format!("line 3 column 11: {}", e.message()));

        let e = from_str::<Outer>("items: [\n").expect_err("unclosed");
        assert_eq!(e.line(), Some(1));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(from_str::<Value>(&deep).is_err());
    }

    #[test]
    fn writes_what_it_reads() {
        let v: Vec<(String, String)> =
            vec![(":path".into(), "/a b".into()), ("x".into(), "yes".into())];
        let text = to_string(&v).expect("writes");
        assert_eq!(from_str::<Vec<(String, String)>>(&text).expect("reads"), v);
    }
}
