//! `/config_dump`: Envoy's `admin.v3.ConfigDump` for what vessel holds: the
//! bootstrap, the dynamic listeners (active and warming), clusters, route
//! configs, ECDS filter configs and endpoints, each with its `version_info`
//! and `last_updated`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value as Json, json};

use super::Shared;
use super::store::{Kind, Resource};
use crate::yaml::Value;

/// A YAML tree as JSON (numbers as numbers, mappings with string keys).
pub(crate) fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::UInt(n) => json!(n),
        Value::Int(n) => json!(n),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.clone()),
        Value::Sequence(s) => Json::Array(s.iter().map(to_json).collect()),
        Value::Mapping(m) => Json::Object(
            m.iter()
                .map(|(k, v)| {
                    let k = match k {
                        Value::String(s) => s.clone(),
                        other => to_json(other).to_string(),
                    };
                    (k, to_json(v))
                })
                .collect(),
        ),
    }
}

/// A protobuf `Timestamp` in JSON: RFC 3339, UTC, milliseconds.
pub(crate) fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn typed(kind: Kind, json: &Json) -> Json {
    let mut out = serde_json::Map::new();
    out.insert("@type".to_owned(), Json::String(kind.type_url().to_owned()));
    if let Json::Object(m) = json {
        out.extend(m.clone());
    }
    Json::Object(out)
}

/// One dynamic resource as Envoy dumps it: its version, the resource under
/// `field` with its `@type`, and when it was last updated.
fn versioned(kind: Kind, field: &str, r: &Resource) -> Json {
    json!({
        "version_info": r.version,
        field: typed(kind, &r.json),
        "last_updated": timestamp(r.last_updated),
    })
}

pub(crate) fn config_dump(shared: &Shared) -> String {
    let state = shared.lock();
    let store = &state.store;
    let version = |k: Kind| state.versions.get(&k).cloned().unwrap_or_default();
    let statics = |key: &str| -> Vec<Json> {
        match shared
            .file
            .doc
            .get("static_resources")
            .and_then(|s| s.get(key))
        {
            Some(Value::Sequence(s)) => s.iter().map(to_json).collect(),
            Some(v @ Value::Mapping(_)) => vec![to_json(v)],
            _ => Vec::new(),
        }
    };

    let (mut active_clusters, mut warming_clusters) = (Vec::new(), Vec::new());
    for (name, r) in store.of(Kind::Cluster) {
        let json = versioned(Kind::Cluster, "cluster", r);
        if state.warming.1.contains(name) {
            warming_clusters.push(json);
        } else {
            active_clusters.push(json);
        }
    }
    let static_clusters: Vec<Json> = statics("clusters")
        .into_iter()
        .map(|c| json!({"cluster": typed(Kind::Cluster, &c)}))
        .collect();

    let dynamic_listeners: Vec<Json> = store
        .of(Kind::Listener)
        .map(|(name, r)| {
            let state_json = versioned(Kind::Listener, "listener", r);
            if state.warming.0.contains(name) {
                json!({"name": name, "warming_state": state_json})
            } else {
                json!({"name": name, "active_state": state_json})
            }
        })
        .collect();
    let static_listeners: Vec<Json> = statics("listeners")
        .into_iter()
        .map(|l| json!({"listener": typed(Kind::Listener, &l)}))
        .collect();

    let route_configs: Vec<Json> = store
        .of(Kind::Route)
        .map(|(_, r)| versioned(Kind::Route, "route_config", r))
        .collect();
    let ecds: Vec<Json> = store
        .of(Kind::Extension)
        .map(|(_, r)| versioned(Kind::Extension, "ecds_filter", r))
        .collect();
    let endpoints: Vec<Json> = store
        .of(Kind::Endpoint)
        .map(|(_, r)| versioned(Kind::Endpoint, "endpoint_config", r))
        .collect();

    let doc = json!({"configs": [
        {
            "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "bootstrap": to_json(&shared.file.doc),
        },
        {
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "version_info": version(Kind::Cluster),
            "static_clusters": static_clusters,
            "dynamic_active_clusters": active_clusters,
            "dynamic_warming_clusters": warming_clusters,
        },
        {
            "@type": "type.googleapis.com/envoy.admin.v3.EcdsConfigDump",
            "ecds_filters": ecds,
        },
        {
            "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "version_info": version(Kind::Listener),
            "static_listeners": static_listeners,
            "dynamic_listeners": dynamic_listeners,
        },
        {
            "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            "dynamic_route_configs": route_configs,
        },
        {
            "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
            "dynamic_endpoint_configs": endpoints,
        },
    ]});
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_611_845_123);
        assert_eq!(timestamp(t), "2026-12-07T02:50:45.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }
}
