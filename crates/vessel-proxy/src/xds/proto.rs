//! Envoy's resources between their protobuf form (what ADS carries) and
//! their JSON form (what the config reader walks), by reflection over
//! envoy-types' descriptor set: no resource is converted by hand.
//!
//! `google.protobuf.Any` values inside a resource (`typed_config`) are
//! written with `@type` and their fields, as Envoy's JSON does; an `Any`
//! whose type is not in the set (`xds.type.v3.TypedStruct`,
//! `udpa.type.v1.TypedStruct` among them) cannot be read, and the response
//! that carries it is rejected with that error.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

/// envoy-types' `FileDescriptorSet` (found by build.rs).
static DESCRIPTORS: &[u8] = include_bytes!(env!("VESSEL_ENVOY_DESCRIPTORS"));

/// Every message type of envoy-types (Envoy's v3 API, the well-known
/// types, xds and udpa annotations), decoded once.
pub fn descriptors() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTORS)
            .expect("envoy-types' descriptor set decodes (checked by the xds tests)")
    })
}

/// The message name of a type URL (`type.googleapis.com/a.b.C` → `a.b.C`).
fn message(type_url: &str) -> Result<MessageDescriptor, String> {
    let name = type_url.rsplit_once('/').map_or(type_url, |(_, n)| n);
    descriptors()
        .get_message_by_name(name)
        .ok_or_else(|| format!("unknown resource type `{type_url}`"))
}

/// Decodes a resource of type `type_url` into Envoy's JSON form (snake_case
/// field names, as in a bootstrap file; durations as `"5s"`, 64-bit
/// integers as strings, enums by name).
pub fn to_json(type_url: &str, bytes: &[u8]) -> Result<serde_json::Value, String> {
    let desc = message(type_url)?;
    let msg = DynamicMessage::decode(desc, bytes)
        .map_err(|e| format!("cannot decode `{type_url}`: {e}"))?;
    let options = SerializeOptions::new().use_proto_field_name(true);
    msg.serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| format!("cannot read `{type_url}`: {e}"))
}

/// Encodes a resource written in Envoy's JSON form (either field spelling)
/// as a message of type `type_url`.
pub fn from_json(type_url: &str, json: &serde_json::Value) -> Result<Vec<u8>, String> {
    let desc = message(type_url)?;
    let msg = DynamicMessage::deserialize(desc, json.clone())
        .map_err(|e| format!("`{type_url}`: {e}"))?;
    Ok(prost::Message::encode_to_vec(&msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_round_trips() {
        let json = serde_json::json!({
            "name": "main",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
            "filter_chains": [{"filters": [{
                "name": "hcm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "ingress",
                    "rds": {"config_source": {"ads": {}, "resource_api_version": "V3"}, "route_config_name": "routes"},
                    "http_filters": [
                        {"name": "add", "config_discovery": {
                            "config_source": {"ads": {}},
                            "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]}},
                        {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                    ]
                }
            }]}]
        });
        let url = "type.googleapis.com/envoy.config.listener.v3.Listener";
        let bytes = from_json(url, &json).expect("encodes");
        assert_eq!(to_json(url, &bytes).expect("decodes"), json);
    }

    #[test]
    fn typed_struct_is_not_known() {
        let json = serde_json::json!({
            "name": "f",
            "typed_config": {"@type": "type.googleapis.com/xds.type.v3.TypedStruct", "type_url": "x", "value": {}}
        });
        let url = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
        assert!(from_json(url, &json).is_err());
        assert!(to_json("type.googleapis.com/no.such.Type", b"").is_err());
    }
}
