//! `envoy.extensions.wasm.v3.PluginConfig` and `VmConfig` (ABI reference §9;
//! failure policies §6.6; capability restriction §6.5; resource limits §6.6).
//!
//! Two keys here are vessel's own: `vm_config.vessel_limits` sets the
//! per-VM [`Limits`], and `vm_config.vessel_hidden` the headers and
//! properties the plugin must never see ([`Hidden`]) (docs/envoy-config.md,
//! "vessel extensions"). Envoy's `VmConfig` has no such fields, so Envoy
//! rejects a config that uses them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vessel_host::{EngineConfig, FailurePolicy, Hidden, LimitValue, Limits, ReloadBackoff};

use super::any::configuration_bytes;
use super::error::ErrorKind;
use super::yaml::{Node, Res};

/// One `envoy.filters.http.wasm` filter: a plugin and the VM it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmFilter {
    /// `config.name`: the `plugin_name` property and log prefix (may be empty).
    pub name: String,
    /// `config.root_id`: selects the guest's root context (may be empty).
    pub root_id: String,
    /// `config.vm_config.vm_id`: VMs with the same id and code are shared
    /// (may be empty).
    pub vm_id: String,
    /// `config.configuration`, as the bytes `proxy_on_configure` sees
    /// (empty if absent).
    pub configuration: Vec<u8>,
    /// `config.vm_config.configuration`, as the bytes `proxy_on_vm_start`
    /// sees (empty if absent).
    pub vm_configuration: Vec<u8>,
    /// `config.vm_config.code`: where the module comes from.
    pub code: WasmCode,
    /// What happens when the VM fails, from `fail_open` and
    /// `failure_policy`. `FAIL_RELOAD` carries `config.reload_config.backoff`,
    /// with Envoy's defaults filled in (base 1 s, max 10 × base): a failed VM
    /// is replaced once `base_interval` has passed since its slot's last
    /// load, doubling per reload in a row that did not give a working VM, up
    /// to `max_interval` (Envoy ignores `max_interval`; see
    /// spec-tests/DEVIATIONS.md A5). The backoff is read and checked under
    /// every policy, as Envoy does.
    pub failure_policy: FailurePolicy,
    /// `config.capability_restriction_config.allowed_capabilities` keys, in
    /// document order. `None` when absent *or empty*: as in Envoy, an empty
    /// map allows everything.
    pub allowed_capabilities: Option<Vec<String>>,
    /// `config.vm_config.environment_variables`.
    pub environment: EnvSpec,
    /// `config.allow_on_headers_stop_iteration` (default false).
    pub allow_on_headers_stop_iteration: bool,
    /// `config.vm_config.vessel_limits` (a vessel extension that Envoy
    /// rejects): the per-VM limits, [`Limits::default`] for every field not
    /// given.
    pub limits: Limits,
    /// `config.vm_config.vessel_hidden` (a vessel extension that Envoy
    /// rejects): the request and response headers and the properties the
    /// plugin must never see; empty when absent.
    pub hidden: Hidden,
}

/// Where the module comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WasmCode {
    /// `code.local.filename`, resolved against the config file's directory
    /// when relative. Not checked for existence at load time.
    File(PathBuf),
    /// `code.local.inline_bytes` (base64-decoded) or `code.local.inline_string`
    /// (its UTF-8 bytes).
    Inline(Vec<u8>),
    /// `code.remote`: fetched over HTTP through a cluster and checked
    /// against its sha256 before it is compiled. The reader gives this;
    /// `vessel run` resolves it (`run::remote`) into [`WasmCode::Fetched`]
    /// before it builds the filters.
    Remote(RemoteCode),
    /// `code.remote` once resolved: the module bytes, whose sha256 is
    /// `remote.sha256` (fetched, or read from the on-disk cache). The
    /// reader never gives this.
    Fetched {
        /// What the config said.
        remote: RemoteCode,
        /// The verified module bytes.
        code: Arc<Vec<u8>>,
    },
}

impl WasmCode {
    /// The remote source, resolved or not.
    pub fn remote(&self) -> Option<&RemoteCode> {
        match self {
            Self::Remote(r) | Self::Fetched { remote: r, .. } => Some(r),
            Self::File(_) | Self::Inline(_) => None,
        }
    }
}

/// `vm_config.code.remote` (`config.core.v3.RemoteDataSource`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCode {
    /// `http_uri.uri`: `scheme://authority/path`. The authority is the
    /// request's `Host`, the path (default `/`) its path; the connection
    /// goes to an endpoint of `cluster` (TLS when the cluster has an
    /// `UpstreamTlsContext`), whatever the scheme says, as in Envoy.
    pub uri: String,
    /// `http_uri.cluster`: a cluster of `static_resources.clusters`.
    pub cluster: String,
    /// `http_uri.timeout` (required, as in Envoy): how long one attempt may
    /// take until the whole body has arrived. Zero: no limit.
    pub timeout: Duration,
    /// `sha256`: 64 lowercase hex digits, the digest the module must have.
    pub sha256: String,
    /// `retry_policy`, with Envoy's defaults.
    pub retry: RemoteRetry,
}

/// `code.remote.retry_policy`: how often, and how long apart, a failed
/// fetch is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteRetry {
    /// `num_retries` (default 1, Envoy's `RetryCount`): tries after the
    /// first, so `num_retries + 1` attempts in all.
    pub num_retries: u32,
    /// `retry_back_off.base_interval` (default 1 s, Envoy's
    /// `RetryInitialDelayMilliseconds`).
    pub base_interval: Duration,
    /// `retry_back_off.max_interval` (default 10 × base; without
    /// `retry_back_off`, 10 s, Envoy's `RetryMaxDelayMilliseconds`).
    pub max_interval: Duration,
}

impl Default for RemoteRetry {
    fn default() -> Self {
        Self {
            num_retries: 1,
            base_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(10),
        }
    }
}

/// `vm_config.environment_variables`: what the guest's WASI environment
/// holds. Keys are unique across both fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvSpec {
    /// `host_env_keys`: variables copied from vessel's own environment (if set).
    pub host_env_keys: Vec<String>,
    /// `key_values`: fixed variables.
    pub key_values: BTreeMap<String, String>,
}

const PLUGIN_KEYS: &[&str] = &[
    "name",
    "root_id",
    "vm_config",
    "configuration",
    "fail_open",
    "failure_policy",
    "reload_config",
    "capability_restriction_config",
    "allow_on_headers_stop_iteration",
];

const VM_KEYS: &[&str] = &[
    "vm_id",
    "runtime",
    "code",
    "configuration",
    "environment_variables",
    "vessel_limits",
    "vessel_hidden",
];

/// The fields of `vm_config.vessel_limits`.
/// Runtimes that may be named; vessel always uses wasmtime.
const RUNTIMES: &[&str] = &[
    "envoy.wasm.runtime.v8",
    "envoy.wasm.runtime.wasmtime",
    "envoy.wasm.runtime.wamr",
];

/// Reads a `PluginConfig` (the `config` of a `Wasm` filter).
pub(crate) fn plugin_config(node: &Node<'_>, base_dir: &Path) -> Res<WasmFilter> {
    let o = node.obj(PLUGIN_KEYS)?;
    let name = o.string_or_default("name")?;
    let root_id = o.string_or_default("root_id")?;
    let configuration = o
        .get("configuration")
        .map(|c| configuration_bytes(&c))
        .transpose()?
        .unwrap_or_default();

    let vm = o.req("vm_config")?.obj(VM_KEYS)?;
    let vm_id = vm.string_or_default("vm_id")?;
    if let Some(rt) = vm.get("runtime") {
        let r = rt.str()?;
        if r == "envoy.wasm.runtime.null" {
            return Err(rt.err(
                ErrorKind::Unsupported,
                "envoy.wasm.runtime.null runs native (NullVM) plugins compiled into \
                 Envoy; vessel runs only WebAssembly modules",
            ));
        }
        if !r.is_empty() && !RUNTIMES.contains(&r) {
            return Err(rt.err(
                ErrorKind::Invalid,
                format!(
                    "unknown runtime `{r}`; expected one of {} (vessel uses wasmtime \
                     whichever is named)",
                    RUNTIMES.join(", ")
                ),
            ));
        }
    }
    let code = code(&vm.req("code")?, base_dir)?;
    let vm_configuration = vm
        .get("configuration")
        .map(|c| configuration_bytes(&c))
        .transpose()?
        .unwrap_or_default();
    let environment = vm
        .get("environment_variables")
        .map(|e| environment(&e))
        .transpose()?
        .unwrap_or_default();
    let limits = vm
        .get("vessel_limits")
        .map(|l| limits(&l))
        .transpose()?
        .unwrap_or_default();
    let hidden = vm
        .get("vessel_hidden")
        .map(|h| hidden(&h))
        .transpose()?
        .unwrap_or_default();

    let reload_backoff = o
        .get("reload_config")
        .map(|r| reload_backoff(&r))
        .transpose()?
        .unwrap_or_default();
    let failure_policy = failure_policy(&o, reload_backoff)?;
    let allowed_capabilities = o
        .get("capability_restriction_config")
        .map(|c| capabilities(&c))
        .transpose()?
        .flatten();
    let allow_on_headers_stop_iteration = o
        .get("allow_on_headers_stop_iteration")
        .map(|b| b.bool_value())
        .transpose()?
        .unwrap_or(false);

    Ok(WasmFilter {
        name,
        root_id,
        vm_id,
        configuration,
        vm_configuration,
        code,
        failure_policy,
        allowed_capabilities,
        environment,
        allow_on_headers_stop_iteration,
        limits,
        hidden,
    })
}

/// `vm_config.vessel_hidden`: lists of request header names, response
/// header names and property patterns (`source.address`, `connection.*`)
/// the plugin must never see ([`Hidden`]). Every key is optional; a name or
/// pattern [`Hidden`] refuses is an error at its own path.
fn hidden(node: &Node<'_>) -> Res<Hidden> {
    type Hide =
        for<'h> fn(&'h mut Hidden, &str) -> Result<&'h mut Hidden, vessel_host::HiddenError>;
    let o = node.obj(&["request_headers", "response_headers", "properties"])?;
    let mut h = Hidden::new();
    let keys: [(&str, Hide); 3] = [
        ("request_headers", Hidden::hide_request_header),
        ("response_headers", Hidden::hide_response_header),
        ("properties", Hidden::hide_property),
    ];
    for (key, hide) in keys {
        let Some(list) = o.get(key) else { continue };
        for item in list.list() {
            hide(&mut h, item.str()?).map_err(|e| item.err(ErrorKind::Invalid, e.to_string()))?;
        }
    }
    Ok(h)
}

/// `vm_config.vessel_limits`: vessel's per-VM [`Limits`], keyed by their
/// field names. Every field is optional; absent ones keep their [`Limits`]
/// default. `callback_timeout` and `startup_timeout` are durations
/// (`"0.05s"`), the others integers; [`Limits::set`] checks the ranges
/// (the same rules as a scenario's `limits`), against the engine's
/// ceiling [`EngineConfig::DEFAULT_MAX_MEMORY_BYTES`] for `memory_bytes`.
/// `fuel_per_callback` turns on fuel metering in the engine (see
/// `vessel run`).
fn limits(node: &Node<'_>) -> Res<Limits> {
    let o = node.obj(Limits::KEYS)?;
    let mut l = Limits::default();
    for key in Limits::KEYS {
        let Some(n) = o.get(key) else { continue };
        let value = if key.ends_with("_timeout") {
            LimitValue::Duration(n.duration()?)
        } else {
            LimitValue::Count(n.u64()?)
        };
        l.set(key, value, EngineConfig::DEFAULT_MAX_MEMORY_BYTES)
            .map_err(|e| n.err(ErrorKind::Invalid, e.to_string()))?;
    }
    Ok(l)
}

/// `vm_config.code`: an `AsyncDataSource`, `local` or `remote`.
fn code(node: &Node<'_>, base_dir: &Path) -> Res<WasmCode> {
    let o = node.obj(&["local", "remote"])?;
    match (o.get("local"), o.get("remote")) {
        (Some(_), Some(r)) => {
            Err(r.err(ErrorKind::Invalid, "only one of local, remote may be given"))
        }
        (None, Some(r)) => remote(&r).map(WasmCode::Remote),
        (None, None) => Err(node.err(ErrorKind::Missing, "one of local, remote is required")),
        (Some(local), None) => local_code(&local, base_dir),
    }
}

/// `vm_config.code.local`: a `DataSource`.
fn local_code(local: &Node<'_>, base_dir: &Path) -> Res<WasmCode> {
    let l = local.obj(&["filename", "inline_bytes", "inline_string"])?;
    let given: Vec<&str> = ["filename", "inline_bytes", "inline_string"]
        .into_iter()
        .filter(|k| l.get(k).is_some())
        .collect();
    match given.as_slice() {
        [] => Err(local.err(
            ErrorKind::Missing,
            "one of filename, inline_bytes, inline_string is required",
        )),
        ["filename"] => {
            let f = l.req("filename")?;
            let p = Path::new(f.non_empty_str()?);
            Ok(WasmCode::File(if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }))
        }
        ["inline_bytes"] => Ok(WasmCode::Inline(l.req("inline_bytes")?.base64()?)),
        ["inline_string"] => Ok(WasmCode::Inline(
            l.req("inline_string")?.str()?.as_bytes().to_vec(),
        )),
        several => Err(local.err(
            ErrorKind::Invalid,
            format!("only one of {} may be given", several.join(", ")),
        )),
    }
}

/// `vm_config.code.remote`: a `RemoteDataSource` (`http_uri`, `sha256`,
/// `retry_policy`), with Envoy's validation and defaults (Envoy's
/// `remote_async_datasource.cc`). That `http_uri.cluster` names a cluster is
/// checked with the other cross-references, in `config::bootstrap`.
fn remote(node: &Node<'_>) -> Res<RemoteCode> {
    let o = node.obj(&["http_uri", "sha256", "retry_policy"])?;
    let h = o.req("http_uri")?;
    let hu = h.obj(&["uri", "cluster", "timeout"])?;
    let uri_node = hu.req("uri")?;
    let uri = uri_node.non_empty_str()?;
    let parsed: http::Uri = uri
        .parse()
        .map_err(|e| uri_node.err(ErrorKind::Invalid, format!("`{uri}` is not a URI: {e}")))?;
    if parsed.scheme().is_none() || parsed.authority().is_none() {
        return Err(uri_node.err(
            ErrorKind::Invalid,
            format!("`{uri}` must be an absolute URI with a host, like http://host/path"),
        ));
    }
    let cluster = hu.req("cluster")?.non_empty_str()?.to_owned();
    let timeout_node = hu.req("timeout")?;
    let timeout = timeout_node.duration()?;
    if timeout.as_secs() >= 1 << 32 {
        return Err(timeout_node.err(ErrorKind::Invalid, "must be less than 2^32 seconds"));
    }
    let sha_node = o.req("sha256")?;
    let sha256 = sha_node.non_empty_str()?;
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(sha_node.err(
            ErrorKind::Invalid,
            format!("`{sha256}` is not a sha256 digest: 64 hex digits expected"),
        ));
    }
    if sha256.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(sha_node.err(
            ErrorKind::Invalid,
            "write the digest in lowercase hex: Envoy compares it with the lowercase \
             hex of the module's sha256, so an uppercase digest never matches",
        ));
    }
    let mut retry = RemoteRetry::default();
    if let Some(rp) = o.get("retry_policy") {
        let rp = rp.obj(&["retry_back_off", "num_retries"])?;
        if let Some(n) = rp.get("num_retries") {
            retry.num_retries = wrapped_u32(&n)?;
        }
        if let Some(b) = rp.get("retry_back_off") {
            (retry.base_interval, retry.max_interval) = backoff_strategy(&b)?;
        }
    }
    Ok(RemoteCode {
        uri: uri.to_owned(),
        cluster,
        timeout,
        sha256: sha256.to_owned(),
        retry,
    })
}

/// A `google.protobuf.UInt32Value`: a number, or `{value: n}`.
fn wrapped_u32(node: &Node<'_>) -> Res<u32> {
    if node.v.is_mapping() {
        let o = node.obj(&["value"])?;
        return o.get("value").map_or(Ok(0), |v| v.u32());
    }
    node.u32()
}

/// `vm_config.environment_variables`.
fn environment(node: &Node<'_>) -> Res<EnvSpec> {
    let o = node.obj(&["host_env_keys", "key_values"])?;
    let mut env = EnvSpec::default();
    if let Some(kv) = o.get("key_values") {
        for (k, v) in kv.map()? {
            env.key_values.insert(k.to_owned(), v.str()?.to_owned());
        }
    }
    if let Some(keys) = o.get("host_env_keys") {
        for k in keys.list() {
            let key = k.non_empty_str()?;
            if env.key_values.contains_key(key) || env.host_env_keys.iter().any(|h| h == key) {
                return Err(k.err(
                    ErrorKind::Duplicate,
                    format!("environment variable `{key}` is given more than once"),
                ));
            }
            env.host_env_keys.push(key.to_owned());
        }
    }
    Ok(env)
}

/// `fail_open` + `failure_policy`, combined as Envoy's `Plugin` does: both
/// set is an error; `fail_open: true` means FAIL_OPEN; unspecified means
/// FAIL_CLOSED.
fn failure_policy(o: &super::yaml::Obj<'_>, backoff: ReloadBackoff) -> Res<FailurePolicy> {
    let fail_open = o.get("fail_open").map(|b| b.bool()).transpose()?;
    let policy_node = o.get("failure_policy");
    let policy = policy_node
        .as_ref()
        .map(|p| {
            // FAIL_IGNORE is the name newer Envoy releases use for FAIL_OPEN.
            p.enumeration(
                &[
                    "UNSPECIFIED",
                    "FAIL_RELOAD",
                    "FAIL_CLOSED",
                    "FAIL_OPEN",
                    "FAIL_IGNORE",
                ],
                &[],
            )
        })
        .transpose()?
        .unwrap_or("UNSPECIFIED");
    if fail_open == Some(true) {
        if let Some(p) = policy_node.filter(|_| policy != "UNSPECIFIED") {
            return Err(p.err(
                ErrorKind::Invalid,
                "only one of fail_open or failure_policy can be set",
            ));
        }
        return Ok(FailurePolicy::FailOpen);
    }
    Ok(match policy {
        "FAIL_RELOAD" => FailurePolicy::FailReload(backoff),
        "FAIL_OPEN" | "FAIL_IGNORE" => FailurePolicy::FailOpen,
        _ => FailurePolicy::FailClosed,
    })
}

/// `reload_config.backoff`.
fn reload_backoff(node: &Node<'_>) -> Res<ReloadBackoff> {
    let o = node.obj(&["backoff"])?;
    let Some(b) = o.get("backoff") else {
        return Ok(ReloadBackoff::default());
    };
    let (base, max) = backoff_strategy(&b)?;
    Ok(ReloadBackoff::new(base, max))
}

/// A `config.core.v3.BackoffStrategy`: `base_interval` (required, at least
/// 1 ms) and `max_interval` (at least the base; default 10 × base), as
/// Envoy's `buildJitteredExponentialBackOffStrategy`.
fn backoff_strategy(node: &Node<'_>) -> Res<(Duration, Duration)> {
    let b = node.obj(&["base_interval", "max_interval"])?;
    let base_node = b.req("base_interval")?;
    let base = base_node.duration()?;
    if base < Duration::from_millis(1) {
        return Err(base_node.err(ErrorKind::Invalid, "must be at least 1ms"));
    }
    let max = match b.get("max_interval") {
        None => base * 10,
        Some(m) => {
            let max = m.duration()?;
            if max < base {
                return Err(m.err(
                    ErrorKind::Invalid,
                    "max_interval must be greater than or equal to base_interval",
                ));
            }
            max
        }
    };
    Ok((base, max))
}

/// `capability_restriction_config.allowed_capabilities`: keys only; the
/// values (`SanitizationConfig`) have no fields.
fn capabilities(node: &Node<'_>) -> Res<Option<Vec<String>>> {
    let o = node.obj(&["allowed_capabilities"])?;
    let Some(m) = o.get("allowed_capabilities") else {
        return Ok(None);
    };
    let mut names = Vec::new();
    for (k, v) in m.map()? {
        if !v.v.is_null() {
            v.obj(&[])?;
        }
        if k.is_empty() {
            return Err(v.err(ErrorKind::Invalid, "capability name must not be empty"));
        }
        names.push(k.to_owned());
    }
    Ok(if names.is_empty() { None } else { Some(names) })
}
