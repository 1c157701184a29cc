//! Building a scenario's filters from its `plugin` / `plugins` keys: each
//! plugin's configuration, limits and policy, checked, with errors that
//! name the key (`plugins[1].limits.memory_bytes`); and the log capture
//! the VMs write to.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vessel_host::{
    Engine, EngineConfig, FailurePolicy, HostEnv, LimitValue, Limits, LogLevel, LogRecord, LogSink,
    Plugin, PluginConfig, PropertyMap, PropertyValue,
};

use super::Error;
use super::Services;
use super::scenario::{LimitsSpec, PluginSpec, PropertyScalar, Scenario};

/// What a scenario's keys give its streams, checked.
pub(super) struct Setup {
    /// The chain's plugins, in order, with their policies.
    pub(super) plugins: Vec<(Plugin, FailurePolicy)>,
    /// The host environment the VMs share.
    pub(super) env: HostEnv,
    /// The guest log lines.
    pub(super) capture: Arc<Capture>,
    /// `properties`.
    pub(super) properties: PropertyMap,
}

/// Loads the chain's plugins, empties the `redis_flush` servers (through
/// `services`; a Redis cluster needs them) and builds the host environment
/// (log capture, `clusters`, `foreign_functions`).
pub(super) fn setup(
    engine: &Engine,
    path: &Path,
    scenario: &Scenario,
    services: &dyn Services,
) -> Result<Setup, Error> {
    let invalid = |(key, message)| Error::Invalid {
        path: path.to_owned(),
        key,
        message,
    };
    scenario.check_form().map_err(invalid)?;
    scenario.check_tls().map_err(invalid)?;
    let chain = scenario.chain().map_err(invalid)?;
    let mut plugins = Vec::with_capacity(chain.len());
    for (i, spec) in chain.iter().enumerate() {
        plugins.push(load_plugin(engine, path, &scenario.plugin_key(i), spec)?);
    }
    for (cname, c) in &scenario.clusters {
        if c.chunks.is_some() {
            return Err(Error::Invalid {
                path: path.to_owned(),
                key: format!("clusters.{cname}.chunks"),
                message: "only the `upstream` of a stream sends its body in chunks; \
                          a cluster's answer is one `body`"
                    .into(),
            });
        }
        let invalid = |message: String| Error::Invalid {
            path: path.to_owned(),
            key: format!("clusters.{cname}.redis"),
            message,
        };
        let Some(addr) = c.redis_address().map_err(invalid)? else {
            continue;
        };
        if !services.provided() {
            return Err(invalid(format!(
                "a real Redis server ({addr}): the in-process runner opens no connection \
                 unless it is given Services (vessel_test::run_files_with; `vessel test` does)"
            )));
        }
        if c.redis_flush {
            services.redis_flush(addr).map_err(invalid)?;
        }
    }
    let capture = Arc::new(Capture::default());
    let clusters: Vec<String> = scenario.clusters.keys().cloned().collect();
    let mut env = HostEnv::builder()
        .log_sink_arc(capture.clone())
        .known_clusters(move |c| clusters.iter().any(|k| k == c));
    for (name, result) in &scenario.foreign_functions {
        let bytes = result.clone().into_bytes();
        env = env.foreign_function(name.clone(), move |_: &[u8]| Ok(bytes.clone()));
    }
    let mut properties = PropertyMap::new();
    for (k, v) in &scenario.properties {
        properties.insert_dotted(k, property(v));
    }
    // The handshake's `connection.*` properties; `properties` may not
    // give any of them too (the two would disagree).
    if let Some(tls) = &scenario.tls {
        for (k, v) in tls.properties() {
            if scenario.properties.contains_key(k) {
                return Err(Error::Invalid {
                    path: path.to_owned(),
                    key: format!("properties.{k}"),
                    message: "the `tls` handshake gives this property; leave it out".into(),
                });
            }
            properties.insert_dotted(k, property(&v));
        }
    }
    if let Some(name) = &scenario.route_name {
        for key in ["route_name", "xds.route_name"] {
            properties.insert_dotted(key, name.as_str());
        }
    }
    Ok(Setup {
        plugins,
        env: env.build(),
        capture,
        properties,
    })
}

/// The guest log lines of a scenario, from every VM of its chain.
#[derive(Default)]
pub(super) struct Capture {
    lines: Mutex<Vec<(LogLevel, String)>>,
}

impl LogSink for Capture {
    fn log(&self, record: &LogRecord<'_>) {
        let line = String::from_utf8_lossy(record.message).into_owned();
        if let Ok(mut l) = self.lines.lock() {
            l.push((record.level, line));
        }
    }
}

impl Capture {
    pub(super) fn len(&self) -> usize {
        self.lines.lock().map_or(0, |l| l.len())
    }
    pub(super) fn since(&self, start: usize) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| {
                l[start.min(l.len())..]
                    .iter()
                    .map(|(_, m)| m.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn property(v: &PropertyScalar) -> PropertyValue {
    match v {
        PropertyScalar::Bool(b) => PropertyValue::Bool(*b),
        PropertyScalar::Int(i) => PropertyValue::Int(*i),
        PropertyScalar::Str(s) => PropertyValue::from(s.as_str()),
    }
}

/// The plugin's [`Limits`] from `limits`, checked by [`Limits::set`] (the
/// rules `vessel run`'s `vessel_limits` follows too) against the engine's
/// memory ceiling; the `Err` is `(key, message)`, the key relative to the
/// plugin.
fn limits_of(spec: Option<&LimitsSpec>, engine: &Engine) -> Result<Limits, (String, String)> {
    let mut limits = Limits::default();
    let Some(spec) = spec else {
        return Ok(limits);
    };
    let count = |v: Option<usize>| v.map(|n| LimitValue::Count(n as u64));
    let fields = [
        ("memory_bytes", "memory_bytes", count(spec.memory_bytes)),
        (
            "callback_timeout_ms",
            "callback_timeout",
            spec.callback_timeout_ms
                .map(|ms| LimitValue::Duration(Duration::from_millis(ms))),
        ),
        (
            "fuel_per_callback",
            "fuel_per_callback",
            spec.fuel_per_callback.map(LimitValue::Count),
        ),
        (
            "max_header_map_bytes",
            "max_header_map_bytes",
            count(spec.max_header_map_bytes),
        ),
        (
            "max_header_map_entries",
            "max_header_map_entries",
            count(spec.max_header_map_entries),
        ),
        (
            "max_body_bytes",
            "max_body_bytes",
            count(spec.max_body_bytes),
        ),
        (
            "max_property_bytes",
            "max_property_bytes",
            count(spec.max_property_bytes),
        ),
        (
            "max_effect_bytes",
            "max_effect_bytes",
            count(spec.max_effect_bytes),
        ),
        ("max_metrics", "max_metrics", count(spec.max_metrics)),
        (
            "max_metric_name_bytes",
            "max_metric_name_bytes",
            count(spec.max_metric_name_bytes),
        ),
    ];
    let ceiling = engine.config().max_memory_bytes;
    for (spec_key, key, value) in fields {
        if let Some(value) = value {
            limits
                .set(key, value, ceiling)
                .map_err(|e| (format!("limits.{spec_key}"), e.to_string()))?;
        }
    }
    Ok(limits)
}

/// Loads one plugin of the chain; `key` names it in errors (`plugin`,
/// `plugins[1]`).
fn load_plugin(
    engine: &Engine,
    path: &Path,
    key: &str,
    spec: &PluginSpec,
) -> Result<(Plugin, FailurePolicy), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let invalid = |(k, message): (String, String)| Error::Invalid {
        path: path.to_owned(),
        key: format!("{key}.{k}"),
        message,
    };
    let wasm_path = dir.join(&spec.wasm);
    let plugin_error = |message: String| Error::Plugin {
        path: path.to_owned(),
        key: format!("{key}.wasm"),
        wasm: wasm_path.clone(),
        message,
    };
    let wasm =
        std::fs::read(&wasm_path).map_err(|e| plugin_error(format!("cannot read it: {e}")))?;
    let log_level = match &spec.log_level {
        Some(l) => l.parse::<LogLevel>().map_err(|_| {
            invalid((
                "log_level".into(),
                format!("`{l}` is not one of trace, debug, info, warn, error, critical"),
            ))
        })?,
        None => LogLevel::Trace,
    };
    let policy = spec.policy().map_err(invalid)?;
    let name = spec.name.clone().unwrap_or_else(|| {
        wasm_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    // Fuel needs an engine compiled with fuel metering: a plugin that sets
    // `fuel_per_callback` gets an engine of its own.
    let fuel_engine;
    let engine = match spec.limits.as_ref().and_then(|l| l.fuel_per_callback) {
        Some(_) if !engine.config().consume_fuel => {
            fuel_engine = Engine::new(EngineConfig {
                consume_fuel: true,
                pooling: None,
                ..engine.config().clone()
            })
            .map_err(|e| {
                invalid((
                    "limits.fuel_per_callback".into(),
                    format!("cannot build an engine with fuel metering: {e}"),
                ))
            })?;
            &fuel_engine
        }
        _ => engine,
    };
    let limits = limits_of(spec.limits.as_ref(), engine).map_err(invalid)?;
    let environment = match &spec.environment {
        Some(e) => e.resolve().map_err(invalid)?,
        None => Vec::new(),
    };
    if let Some(caps) = &spec.allowed_capabilities
        && let Some(i) = caps.iter().position(String::is_empty)
    {
        return Err(invalid((
            format!("allowed_capabilities[{i}]"),
            "a capability name must not be empty".into(),
        )));
    }
    let hidden = match &spec.hidden {
        Some(h) => h.hidden().map_err(invalid)?,
        None => vessel_host::Hidden::new(),
    };
    let config = PluginConfig {
        name,
        root_id: spec.root_id.clone(),
        vm_id: spec.vm_id.clone(),
        vm_configuration: spec.vm_configuration.clone().into_bytes(),
        configuration: spec.configuration.clone().into_bytes(),
        log_level,
        allow_on_headers_stop_iteration: spec.allow_on_headers_stop_iteration,
        environment,
        limits,
        allowed_capabilities: spec.allowed_capabilities.clone(),
        hidden,
        ..PluginConfig::default()
    };
    let plugin = Plugin::load(engine, &wasm, config).map_err(|e| plugin_error(e.to_string()))?;
    Ok((plugin, policy))
}
