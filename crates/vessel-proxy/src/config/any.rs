//! `google.protobuf.Any` values: the plugin and VM `configuration` fields
//! (ABI reference §9, "same Any rules"), and the `TypedStruct` wrapper of
//! `typed_config`.

use super::error::ErrorKind;
use super::yaml::{Node, Res, YamlPath, any_type};

/// `google.protobuf.StringValue`.
pub(crate) const STRING_VALUE: &str = "google.protobuf.StringValue";
/// `google.protobuf.BytesValue`.
pub(crate) const BYTES_VALUE: &str = "google.protobuf.BytesValue";
/// `google.protobuf.Struct`.
pub(crate) const STRUCT: &str = "google.protobuf.Struct";
/// The old and new `TypedStruct` names.
pub(crate) const TYPED_STRUCTS: [&str; 2] = ["udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"];

/// Reads a `configuration` Any into the bytes the guest sees:
/// * `StringValue` / `BytesValue`: the wrapped value, raw;
/// * `Struct`, or a `TypedStruct` (its `value`): compact JSON text, keys
///   sorted, as Envoy prints a `Struct`.
pub(crate) fn configuration_bytes(node: &Node<'_>) -> Res<Vec<u8>> {
    let ty = any_type(node)?;
    match ty {
        STRING_VALUE => {
            let o = node.obj(&["@type", "value"])?;
            Ok(o.get("value")
                .map(|v| v.str().map(|s| s.as_bytes().to_vec()))
                .transpose()?
                .unwrap_or_default())
        }
        BYTES_VALUE => {
            let o = node.obj(&["@type", "value"])?;
            Ok(o.get("value")
                .map(|v| v.base64())
                .transpose()?
                .unwrap_or_default())
        }
        STRUCT => {
            let o = node.obj(&["@type", "value"])?;
            struct_json(o.get("value"), node)
        }
        t if TYPED_STRUCTS.contains(&t) => {
            let o = node.obj(&["@type", "type_url", "value"])?;
            if let Some(u) = o.get("type_url") {
                u.str()?;
            }
            struct_json(o.get("value"), node)
        }
        other => Err(node.path.key("@type").err(
            ErrorKind::Unsupported,
            format!(
                "configuration type `{other}` is not supported; use \
                 google.protobuf.StringValue, google.protobuf.BytesValue, \
                 google.protobuf.Struct or a TypedStruct"
            ),
        )),
    }
}

/// Serializes a `Struct` (absent = `{}`) as compact JSON.
fn struct_json(value: Option<Node<'_>>, parent: &Node<'_>) -> Res<Vec<u8>> {
    let json = match value {
        None => serde_json::Value::Object(serde_json::Map::new()),
        Some(v) => {
            if !v.v.is_mapping() {
                return Err(v.err(
                    ErrorKind::Invalid,
                    format!(
                        "a Struct value must be a mapping, found {}",
                        super::yaml::describe(v.v)
                    ),
                ));
            }
            v.to_json()?
        }
    };
    serde_json::to_vec(&json)
        .map_err(|e| parent.err(ErrorKind::Invalid, format!("cannot serialize as JSON: {e}")))
}

/// An `Any` opened up: the message type name, and the node holding the
/// message's fields.
pub(crate) struct Opened<'a> {
    /// The message type name (no `type.googleapis.com/` prefix).
    pub(crate) type_name: &'a str,
    /// The node whose mapping holds the message fields.
    pub(crate) body: Node<'a>,
    /// Whether the fields sit next to `@type` (a plain Any) and so `@type`
    /// must be allowed among them.
    pub(crate) inline: bool,
    /// Where the type was named (`@type`, or a TypedStruct's `type_url`).
    pub(crate) type_path: YamlPath,
}

/// Opens an `Any` that may be a `TypedStruct` wrapper: for a plain Any the
/// fields sit next to `@type`; for a `TypedStruct` the type is `type_url`
/// and the fields are in `value`.
pub(crate) fn open_typed<'a>(node: &Node<'a>) -> Res<Opened<'a>> {
    let ty = any_type(node)?;
    if !TYPED_STRUCTS.contains(&ty) {
        return Ok(Opened {
            type_name: ty,
            body: node.clone(),
            inline: true,
            type_path: node.path.key("@type"),
        });
    }
    let o = node.obj(&["@type", "type_url", "value"])?;
    let url_node = o.req("type_url")?;
    let url = url_node.str()?;
    let type_name = super::yaml::type_name(url)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            url_node.err(
                ErrorKind::Invalid,
                format!("`{url}` is not a type URL (expected type.googleapis.com/<message name>)"),
            )
        })?;
    static EMPTY: crate::yaml::Value = crate::yaml::Value::Mapping(Vec::new());
    let body = o.get("value").unwrap_or_else(|| Node {
        v: &EMPTY,
        path: o.path.key("value"),
    });
    Ok(Opened {
        type_name,
        body,
        inline: false,
        type_path: url_node.path.clone(),
    })
}

impl Opened<'_> {
    /// The allowed keys of the body: `fields`, plus `@type` for a plain Any.
    pub(crate) fn keys<'k>(&self, fields: &[&'k str]) -> Vec<&'k str> {
        let mut keys = Vec::with_capacity(fields.len() + 1);
        if self.inline {
            keys.push("@type");
        }
        keys.extend_from_slice(fields);
        keys
    }
}
