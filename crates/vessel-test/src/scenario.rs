//! The scenario file format of `vessel test` (documented in
//! `spec-tests/SCENARIOS.md`). Unknown keys are errors, so a typo never
//! silently disables a check.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use vessel_host::{FailurePolicy, ReloadBackoff};

/// A header list: `[[name, value], ...]`. Order and repeats are kept.
pub type Headers = Vec<(String, String)>;

/// One scenario file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The filter under test: a chain of one. Give this or `plugins`, not
    /// both ([`Scenario::chain`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginSpec>,
    /// The filters under test, as a chain in Envoy's `http_filters` order:
    /// requests pass them first to last, responses last to first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Vec<PluginSpec>>,
    /// Properties, by dotted path, visible to every stream. Strings are
    /// raw bytes; integers are 8-byte little-endian; booleans are one byte.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, PropertyScalar>,
    /// The name of the route every stream matches: the `route_name` and
    /// `xds.route_name` properties in-process, and the route's `name` in
    /// the configuration the real backends run (Envoy and `vessel run` give
    /// both properties from it). Unlike `properties`, it runs everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_name: Option<String>,
    /// Canned answers to `proxy_http_call`, by cluster name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clusters: BTreeMap<String, CannedResponse>,
    /// Foreign functions offered to the guest, by name: each returns its
    /// canned bytes (an extension).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub foreign_functions: BTreeMap<String, String>,
    /// Largest body the proxy buffers for a stopped filter (Envoy's
    /// `per_connection_buffer_limit_bytes`; default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_limit: Option<usize>,
    /// The client connects over TLS: the real backends terminate it on the
    /// listener with certificates made at run time; in-process, every
    /// stream (and connection) gets the `connection.*` properties that
    /// handshake gives ([`TlsSpec::properties`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Streams, run one after another on the same VM. A file has
    /// `streams` (HTTP) or `connections` (TCP), never both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<Stream>,
    /// TCP connections through the chain as network filters, run one
    /// after another on the same VMs (the TCP form).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<Connection>,
    /// Deliberate differences from Envoy that this scenario shows, by
    /// backend (the differential runner, `cargo xtask envoy-diff`).
    #[serde(default, skip_serializing_if = "Deviations::is_empty")]
    pub deviations: Deviations,
    /// The file runs only in-process (`vessel test`), and why: it pins an
    /// in-process behaviour that no real proxy can be driven to show (the
    /// reason should name the `DEVIATIONS.md` entry). The real backends of
    /// the differential runner report it as not run, with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_in_process: Option<String>,
}

impl Scenario {
    /// Reads and parses a scenario file: [`Error::Io`](crate::Error::Io) if
    /// it cannot be read, [`Error::Yaml`](crate::Error::Yaml) if it is not
    /// a scenario.
    pub fn from_file(path: &std::path::Path) -> Result<Self, crate::Error> {
        let text = std::fs::read_to_string(path).map_err(|e| crate::Error::Io {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::from_yaml(&text).map_err(|error| crate::Error::Yaml {
            path: path.to_owned(),
            error,
        })
    }

    /// Reads a scenario file's text. Unknown keys and values of the wrong
    /// type are errors that name the key path, with the line and column.
    pub fn from_yaml(text: &str) -> Result<Self, crate::YamlError> {
        let scenario: Self = crate::yaml::from_str(text)?;
        if scenario.streams.is_empty() && scenario.connections.is_empty() {
            // Empty lists are fine; a file with neither key is not.
            #[derive(Deserialize)]
            struct Form {
                streams: Option<serde::de::IgnoredAny>,
                connections: Option<serde::de::IgnoredAny>,
            }
            let form: Form = crate::yaml::from_str(text)?;
            if form.streams.is_none() && form.connections.is_none() {
                return Err(crate::YamlError::new(
                    "missing field `streams` (or `connections`, the TCP form)",
                ));
            }
        }
        Ok(scenario)
    }

    /// Writes the scenario in the file format (what `vessel test --record`
    /// prints).
    pub fn to_yaml(&self) -> Result<String, crate::YamlError> {
        crate::yaml::to_string(self)
    }

    /// The filter chain: `plugins`, or `plugin` as a chain of one. The
    /// `Err` is `(key, message)`: neither key, both keys, or an empty
    /// `plugins` list.
    pub fn chain(&self) -> Result<&[PluginSpec], (String, String)> {
        match (&self.plugin, &self.plugins) {
            (Some(_), Some(_)) => Err((
                "plugin, plugins".into(),
                "give either `plugin` (one filter) or `plugins` (a chain), not both".into(),
            )),
            (Some(p), None) => Ok(std::slice::from_ref(p)),
            (None, Some(chain)) if !chain.is_empty() => Ok(chain),
            (None, Some(_)) => Err(("plugins".into(), "the chain is empty".into())),
            (None, None) => Err((
                "plugin".into(),
                "no filter: give `plugin` (one filter) or `plugins` (a chain)".into(),
            )),
        }
    }

    /// True for the TCP form (the file has `connections`).
    pub fn is_tcp(&self) -> bool {
        !self.connections.is_empty()
    }

    /// `Err((key, message))` if the file mixes the forms (`streams` and
    /// `connections`), or a `sleep_ms` step is over [`MAX_SLEEP_MS`].
    pub fn check_form(&self) -> Result<(), (String, String)> {
        if !self.streams.is_empty() && !self.connections.is_empty() {
            return Err((
                "connections".into(),
                "a file has `streams` (HTTP) or `connections` (TCP), never both".into(),
            ));
        }
        for (i, conn) in self.connections.iter().enumerate() {
            for (j, step) in conn.steps.iter().enumerate() {
                if let Step::SleepMs(ms) = step
                    && *ms > MAX_SLEEP_MS
                {
                    return Err((
                        format!("connections[{i}].steps[{j}].sleep_ms"),
                        format!("{ms}: at most {MAX_SLEEP_MS} (milliseconds)"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `Err((key, message))` if the `tls` key is invalid: a `sni` that is
    /// no DNS name, or `alpn: http/1.1` in a file whose streams have
    /// trailers (the client then speaks HTTP/2).
    pub fn check_tls(&self) -> Result<(), (String, String)> {
        let Some(tls) = &self.tls else {
            return Ok(());
        };
        tls.check()?;
        let trailers = self.streams.iter().any(|st| {
            st.request.trailers.is_some()
                || st.upstream.as_ref().is_some_and(|u| !u.trailers.is_empty())
        });
        if trailers && tls.alpn == Some(Alpn::Http11) {
            return Err((
                "tls.alpn".into(),
                "`http/1.1`, but a stream has trailers: the real backends' client sends and \
                 receives trailers over HTTP/2 only (give `h2`, or no `alpn`)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The ALPN protocol the client offers (and so speaks): `tls.alpn`,
    /// else `h2` when a stream has trailers, else `http/1.1`. `None`
    /// without `tls`.
    pub fn alpn(&self) -> Option<Alpn> {
        let tls = self.tls.as_ref()?;
        let trailers = self.streams.iter().any(|st| {
            st.request.trailers.is_some()
                || st.upstream.as_ref().is_some_and(|u| !u.trailers.is_empty())
        });
        Some(
            tls.alpn
                .unwrap_or(if trailers { Alpn::H2 } else { Alpn::Http11 }),
        )
    }

    /// The key path of filter `i` of the chain in error messages:
    /// `plugin` for a chain given with `plugin`, else `plugins[i]`.
    pub fn plugin_key(&self, i: usize) -> String {
        if self.plugin.is_some() {
            "plugin".into()
        } else {
            format!("plugins[{i}]")
        }
    }
}

/// The `tls` key: the client connects over TLS (TLS 1.3, the proxies'
/// default). The real backends make a CA, a server certificate and (with
/// `client_certificate`) a client certificate at run time, with the fixed
/// names of [`tls_names`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// The server name the client sends (SNI), a DNS name; it is also the
    /// server certificate's first DNS name. Absent: no SNI (the client
    /// connects to `127.0.0.1` and the certificate is for `localhost` and
    /// that address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// The one protocol the client offers by ALPN: `h2` or `http/1.1`
    /// (the listener offers both). Absent: `h2` when a stream has
    /// trailers, else `http/1.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<Alpn>,
    /// The client presents a certificate, and the listener requires one
    /// (`require_client_certificate`, mTLS).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_certificate: bool,
    /// The listener runs Envoy's TLS inspector (`listener_filters`):
    /// only then does Envoy record the SNI (`connection.requested_server_name`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inspector: bool,
}

/// An ALPN protocol of [`TlsSpec::alpn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alpn {
    /// HTTP/2.
    #[serde(rename = "h2")]
    H2,
    /// HTTP/1.1.
    #[serde(rename = "http/1.1")]
    Http11,
}

impl Alpn {
    /// The protocol id as ALPN sends it.
    pub fn id(self) -> &'static str {
        match self {
            Self::H2 => "h2",
            Self::Http11 => "http/1.1",
        }
    }
}

/// The fixed names of the certificates a `tls` scenario runs with, so the
/// in-process properties are those of the real handshake.
pub mod tls_names {
    /// The organisation of every subject.
    pub const ORGANISATION: &str = "vessel tests";
    /// The CA's common name.
    pub const CA_COMMON_NAME: &str = "vessel scenario CA";
    /// The server certificate's common name.
    pub const SERVER_COMMON_NAME: &str = "vessel scenario server";
    /// The server certificate's DNS name without `sni`.
    pub const SERVER_DEFAULT_DNS: &str = "localhost";
    /// The client certificate's common name.
    pub const CLIENT_COMMON_NAME: &str = "vessel scenario client";
    /// The client certificate's URI SAN.
    pub const CLIENT_URI_SAN: &str = "spiffe://vessel.test/scenario-client";
    /// The client certificate's DNS SAN.
    pub const CLIENT_DNS_SAN: &str = "client.vessel.test";
    /// The TLS version both proxies negotiate with the harness's client.
    pub const VERSION: &str = "TLSv1.3";

    /// A subject `O=vessel tests, CN=<cn>` as Envoy prints it (RFC 2253,
    /// last component first).
    pub fn subject(cn: &str) -> String {
        format!("CN={cn},O={ORGANISATION}")
    }
}

impl TlsSpec {
    /// `Err((key, message))` if `sni` is not a DNS name (letters, digits,
    /// `-` and `.`, labels of 1 to 63 characters, not all digits: an IP
    /// literal sends no SNI).
    pub fn check(&self) -> Result<(), (String, String)> {
        let Some(sni) = &self.sni else {
            return Ok(());
        };
        let bad = |why: &str| {
            Err((
                "tls.sni".to_owned(),
                format!("`{sni}` is not a DNS name: {why}"),
            ))
        };
        if sni.is_empty() || sni.len() > 253 {
            return bad("it must have 1 to 253 characters");
        }
        for label in sni.split('.') {
            if label.is_empty() || label.len() > 63 {
                return bad("each dot-separated label must have 1 to 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                || label.starts_with('-')
                || label.ends_with('-')
            {
                return bad("a label holds only letters, digits and inner `-`");
            }
        }
        if sni
            .split('.')
            .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
        {
            return bad("an IP address is sent as no SNI at all (leave `sni` out)");
        }
        Ok(())
    }

    /// The server certificate's DNS names: `sni` (lower-case), else
    /// `localhost`. (It also holds the IP address `127.0.0.1`.)
    pub fn server_dns(&self) -> String {
        self.sni.as_deref().map_or_else(
            || tls_names::SERVER_DEFAULT_DNS.to_owned(),
            str::to_ascii_lowercase,
        )
    }

    /// The `connection.*` properties Envoy 1.40 gives a stream of this
    /// handshake, which the in-process runner gives every stream:
    /// `tls_version`, `mtls`, `requested_server_name` (the SNI only with
    /// `inspector`, else empty), the subject and first DNS SAN of the local
    /// (server) certificate, and the subject and first URI and DNS SANs of
    /// the peer (client) certificate (an empty subject and no SANs without
    /// one). `connection.sha256_peer_certificate_digest` is not among them:
    /// the certificate is made at run time, so its digest cannot be known
    /// here (DEVIATIONS.md H9).
    pub fn properties(&self) -> Vec<(&'static str, PropertyScalar)> {
        use tls_names::*;
        let s = PropertyScalar::Str;
        let sni = match (&self.sni, self.inspector) {
            (Some(name), true) => name.to_ascii_lowercase(),
            _ => String::new(),
        };
        let mut out = vec![
            ("connection.tls_version", s(VERSION.into())),
            (
                "connection.mtls",
                PropertyScalar::Bool(self.client_certificate),
            ),
            ("connection.requested_server_name", s(sni)),
            (
                "connection.subject_local_certificate",
                s(subject(SERVER_COMMON_NAME)),
            ),
            ("connection.dns_san_local_certificate", s(self.server_dns())),
        ];
        if self.client_certificate {
            out.extend([
                (
                    "connection.subject_peer_certificate",
                    s(subject(CLIENT_COMMON_NAME)),
                ),
                (
                    "connection.uri_san_peer_certificate",
                    s(CLIENT_URI_SAN.into()),
                ),
                (
                    "connection.dns_san_peer_certificate",
                    s(CLIENT_DNS_SAN.into()),
                ),
            ]);
        } else {
            out.push(("connection.subject_peer_certificate", s(String::new())));
        }
        out
    }
}

/// The `deviations` key: ids of entries of `spec-tests/DEVIATIONS.md`
/// (`B1`, `A1`, `E2`, ...) that explain why a backend's observations differ
/// from Envoy's for this scenario. A backend that differs with none listed
/// fails the differential runner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deviations {
    /// Why the in-process driver (`vessel test`) differs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_process: Vec<String>,
    /// Why `vessel run` differs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vessel_run: Vec<String>,
}

impl Deviations {
    /// True when no deviation is listed.
    pub fn is_empty(&self) -> bool {
        self.in_process.is_empty() && self.vessel_run.is_empty()
    }
}

/// The `plugin` key, or one entry of `plugins`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// Path to the `.wasm`, relative to the scenario file.
    pub wasm: String,
    /// Plugin name (default: the file's stem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Root id (default "").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub root_id: String,
    /// VM id (default "").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vm_id: String,
    /// Plugin configuration text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub configuration: String,
    /// VM configuration text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vm_configuration: String,
    /// Guest log level (default `trace`, so every guest line is observable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Envoy's `allow_on_headers_stop_iteration` (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_on_headers_stop_iteration: bool,
    /// What happens to streams once the VM failed (Envoy's
    /// `failure_policy`, by its Envoy name; default FAIL_CLOSED). A
    /// `FAIL_RELOAD` read from YAML carries the default backoff;
    /// [`PluginSpec::policy`] gives it `reload_backoff`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "policy_name::serialize",
        deserialize_with = "policy_name::deserialize"
    )]
    pub failure_policy: Option<FailurePolicy>,
    /// The FAIL_RELOAD backoff (Envoy's `reload_config.backoff`; default
    /// Envoy's 1 s base). Only with `failure_policy: FAIL_RELOAD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_backoff: Option<ReloadBackoffSpec>,
    /// Per-VM resource limits (vessel's `Limits`; no Envoy equivalent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
    /// Host function names the guest may call (Envoy's
    /// `capability_restriction_config.allowed_capabilities`). Absent or
    /// empty: everything is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_capabilities: Option<Vec<String>>,
    /// The guest's WASI environment (Envoy's
    /// `vm_config.environment_variables`). Absent: an empty environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentSpec>,
    /// Headers and properties the plugin must never see (vessel's
    /// `Hidden`, `vm_config.vessel_hidden` in `vessel run`; no Envoy
    /// equivalent). Absent: the plugin sees everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<HiddenSpec>,
}

/// The `plugin.hidden` key: what the plugin must never see (vessel-host's
/// `Hidden`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HiddenSpec {
    /// Request header (and trailer) names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers: Vec<String>,
    /// Response header (and trailer) names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers: Vec<String>,
    /// Property paths (`source.address`) and prefixes (`connection.*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<String>,
}

impl HiddenSpec {
    /// The vessel-host value. The `Err` is `(key, message)`, the key
    /// relative to the plugin (`hidden.request_headers[1]`).
    pub fn hidden(&self) -> Result<vessel_host::Hidden, (String, String)> {
        type Hide = for<'h> fn(
            &'h mut vessel_host::Hidden,
            &str,
        )
            -> Result<&'h mut vessel_host::Hidden, vessel_host::HiddenError>;
        let mut h = vessel_host::Hidden::new();
        let lists: [(&str, &Vec<String>, Hide); 3] = [
            (
                "request_headers",
                &self.request_headers,
                vessel_host::Hidden::hide_request_header,
            ),
            (
                "response_headers",
                &self.response_headers,
                vessel_host::Hidden::hide_response_header,
            ),
            (
                "properties",
                &self.properties,
                vessel_host::Hidden::hide_property,
            ),
        ];
        for (key, list, hide) in lists {
            for (i, item) in list.iter().enumerate() {
                hide(&mut h, item).map_err(|e| (format!("hidden.{key}[{i}]"), e.to_string()))?;
            }
        }
        Ok(h)
    }
}

impl PluginSpec {
    /// The failure policy, with `reload_backoff` for FAIL_RELOAD. The `Err`
    /// is `(key, message)`, the key relative to the plugin
    /// (`reload_backoff.base_ms`).
    pub fn policy(&self) -> Result<FailurePolicy, (String, String)> {
        let policy = self.failure_policy.unwrap_or_default();
        let Some(spec) = &self.reload_backoff else {
            return Ok(policy);
        };
        if !matches!(policy, FailurePolicy::FailReload(_)) {
            return Err((
                "reload_backoff".into(),
                format!(
                    "only with `failure_policy: FAIL_RELOAD` (the policy is {})",
                    policy.envoy_name()
                ),
            ));
        }
        Ok(FailurePolicy::FailReload(spec.backoff()?))
    }
}

/// Reads and writes `failure_policy` by Envoy's names (`FAIL_CLOSED`,
/// `FAIL_OPEN`, `FAIL_RELOAD`), into vessel-host's one [`FailurePolicy`].
mod policy_name {
    use super::{Deserialize, Deserializer, FailurePolicy, ReloadBackoff, Serializer};

    /// The names as serde reads them, so a bad one is an error at the
    /// key's own position (`plugin.failure_policy: unknown variant ...`).
    #[derive(Deserialize)]
    #[allow(clippy::enum_variant_names)]
    enum Name {
        #[serde(rename = "FAIL_CLOSED")]
        FailClosed,
        #[serde(rename = "FAIL_OPEN")]
        FailOpen,
        #[serde(rename = "FAIL_RELOAD")]
        FailReload,
    }

    pub(super) fn serialize<S: Serializer>(
        policy: &Option<FailurePolicy>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match policy {
            Some(p) => s.serialize_str(p.envoy_name()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<FailurePolicy>, D::Error> {
        Ok(Some(match Name::deserialize(d)? {
            Name::FailClosed => FailurePolicy::FailClosed,
            Name::FailOpen => FailurePolicy::FailOpen,
            Name::FailReload => FailurePolicy::FailReload(ReloadBackoff::default()),
        }))
    }
}

/// The `plugin.reload_backoff` key: how soon a failed VM may be replaced
/// under FAIL_RELOAD (vessel-host's [`ReloadBackoff`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadBackoffSpec {
    /// The shortest wait since the VM's last load, in milliseconds (Envoy's
    /// `base_interval`; default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ms: Option<u64>,
    /// The longest wait, in milliseconds (default 10 × the default base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
}

impl ReloadBackoffSpec {
    /// The backoff; the `Err` is `(key, message)`, the key relative to the
    /// plugin.
    pub fn backoff(&self) -> Result<ReloadBackoff, (String, String)> {
        let ms = std::time::Duration::from_millis;
        let base = match self.base_ms {
            Some(0) => {
                return Err(("reload_backoff.base_ms".into(), "must be at least 1".into()));
            }
            Some(b) => ms(b),
            None => ReloadBackoff::DEFAULT_BASE_INTERVAL,
        };
        let max = match self.max_ms {
            Some(m) if ms(m) < base => {
                return Err((
                    "reload_backoff.max_ms".into(),
                    format!("{m} is below the base of {} ms", base.as_millis()),
                ));
            }
            Some(m) => ms(m),
            None => ReloadBackoff::DEFAULT_MAX_INTERVAL.max(base),
        };
        Ok(ReloadBackoff::new(base, max))
    }
}

/// The `plugin.limits` key: per-VM resource limits. Every field is optional
/// and falls back to vessel's default (`vessel_host::Limits`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Largest linear memory of the VM, in bytes (default 1 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<usize>,
    /// CPU budget of one callback, in milliseconds (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_timeout_ms: Option<u64>,
    /// Fuel one callback may burn: a deterministic CPU limit (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_per_callback: Option<u64>,
    /// Key and value bytes a guest may grow one header map to (default 8 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_map_bytes: Option<usize>,
    /// Entries a guest may grow one header map to (default 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_map_entries: Option<usize>,
    /// Body bytes the filter holds per stream direction (default 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Bytes of properties a guest sets on one stream (default 8 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_property_bytes: Option<usize>,
    /// Bytes of queued effects and callouts in flight (default 256 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_effect_bytes: Option<usize>,
    /// Metrics the VM may define (default 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_metrics: Option<usize>,
    /// Longest metric name in bytes (default 16 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_metric_name_bytes: Option<usize>,
}

impl LimitsSpec {
    /// True if no limit is set.
    pub fn is_empty(&self) -> bool {
        self.memory_bytes.is_none()
            && self.callback_timeout_ms.is_none()
            && self.fuel_per_callback.is_none()
            && self.max_header_map_bytes.is_none()
            && self.max_header_map_entries.is_none()
            && self.max_body_bytes.is_none()
            && self.max_property_bytes.is_none()
            && self.max_effect_bytes.is_none()
            && self.max_metrics.is_none()
            && self.max_metric_name_bytes.is_none()
    }
}

/// The `plugin.environment` key, as Envoy's
/// `vm_config.environment_variables`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// Variables copied from the host process's environment, when set there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_env_keys: Vec<String>,
    /// Variables with fixed values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_values: BTreeMap<String, String>,
}

impl EnvironmentSpec {
    /// The guest's environment as `(name, value)` pairs: `key_values`, then
    /// each `host_env_keys` entry that is set in this process. A name given
    /// twice is an error, as in Envoy; the `Err` names the key, relative to
    /// the plugin (`environment.key_values.NAME`).
    pub fn resolve(&self) -> Result<Vec<(String, String)>, (String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.key_values {
            if k.is_empty() || k.contains('=') {
                return Err((
                    format!("environment.key_values.{k}"),
                    "a variable name must be non-empty and hold no `=`".into(),
                ));
            }
            out.push((k.clone(), v.clone()));
        }
        for (i, k) in self.host_env_keys.iter().enumerate() {
            if k.is_empty() || k.contains('=') {
                return Err((
                    format!("environment.host_env_keys[{i}]"),
                    "a variable name must be non-empty and hold no `=`".into(),
                ));
            }
            if self.key_values.contains_key(k) || self.host_env_keys[..i].contains(k) {
                return Err((
                    format!("environment.host_env_keys[{i}]"),
                    format!("`{k}` is given twice"),
                ));
            }
            if let Ok(v) = std::env::var(k) {
                out.push((k.clone(), v));
            }
        }
        Ok(out)
    }
}

/// A property value in a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PropertyScalar {
    /// A boolean (1 byte).
    Bool(bool),
    /// An integer (8 bytes LE).
    Int(i64),
    /// A string (raw bytes).
    Str(String),
}

/// A canned HTTP response (for the upstream or a callout cluster).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CannedResponse {
    /// Headers, including `:status`.
    #[serde(default)]
    pub headers: Headers,
    /// Body text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    /// For `upstream` only: the body as separate chunks, sent one by one
    /// (each is one response body callback), instead of `body` (an
    /// extension of the canned upstream; requests have `chunks` too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<String>>,
    /// Trailers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trailers: Headers,
    /// For clusters: fail the call without a response (`reset`), as a
    /// connection failure does (an extension).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    /// For clusters: answer as a timeout does in Envoy, with a 504 (an extension).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timeout: bool,
    /// For clusters: nothing listens at the cluster's endpoint. Envoy's
    /// router answers the call itself with a 503 (`upstream connect error
    /// or disconnect/reset before headers. reset reason: remote connection
    /// failure`, `text/plain`) (an extension).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreachable: bool,
    /// For clusters answering `proxy_grpc_call`: the gRPC status. 0 delivers
    /// `body` as the response message (`proxy_on_grpc_receive`); any other
    /// value closes the call with that status and `body` as its message
    /// (`proxy_on_grpc_close`). Default 0 (an extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// For clusters: a real Redis server (`host:port`, or `$NAME` for the
    /// address in environment variable `NAME`) that answers
    /// `proxy_redis_call` (Higress 0.2.100) on this cluster (an extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// For `redis` clusters: send `FLUSHALL` to the server before the
    /// scenario's first stream, so counters from an earlier run do not leak
    /// in. Only for a server dedicated to tests (an extension).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redis_flush: bool,
}

impl CannedResponse {
    /// The body as the upstream sends it: `chunks` if given, else `body`
    /// as one chunk (none if empty).
    pub fn body_chunks(&self) -> Vec<&str> {
        match &self.chunks {
            Some(c) => c.iter().map(String::as_str).collect(),
            None if self.body.is_empty() => Vec::new(),
            None => vec![self.body.as_str()],
        }
    }

    /// The address of the `redis` server, with a `$NAME` reference
    /// resolved. `Ok(None)` if this is no Redis cluster.
    pub fn redis_address(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let Some(raw) = &self.redis else {
            return Ok(None);
        };
        let text = match raw.strip_prefix('$') {
            Some(var) => std::env::var(var).map_err(|_| {
                format!(
                    "environment variable `{var}` is not set; it must hold the address of a \
                     Redis server for tests (`cargo xtask test` starts one and sets VESSEL_REDIS)"
                )
            })?,
            None => raw.clone(),
        };
        std::net::ToSocketAddrs::to_socket_addrs(text.as_str())
            .ok()
            .and_then(|mut a| a.next())
            .map(Some)
            .ok_or_else(|| format!("`{text}` is not a host:port address"))
    }
}

/// One stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    /// Time that passes before this stream, in milliseconds: the scenario
    /// clock (which starts when the VMs load) advances by this much, and
    /// the ticks that fall due meanwhile fire. What the FAIL_RELOAD backoff
    /// measures. Real backends sleep it.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub wait_ms: u64,
    /// Fire each root context's `on_tick` this many times before the stream
    /// (after `wait_ms`), without the clock moving (an extension).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ticks_before: u32,
    /// The client's request.
    pub request: Message,
    /// The upstream's answer (default: `:status 200`, no body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<CannedResponse>,
    /// What to check.
    #[serde(default)]
    pub expect: Expect,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// A request as the client sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Headers, with pseudo-headers.
    pub headers: Headers,
    /// Body text, sent in one chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Body chunks, sent one by one (instead of `body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<String>>,
    /// Trailers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trailers: Option<Headers>,
}

/// Expectations; every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// What reached the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_request: Option<ExpectMessage>,
    /// Whether the request reached the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_reached: Option<bool>,
    /// What the client got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ExpectResponse>,
    /// Substrings that some guest log line of this stream must contain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs_include: Vec<String>,
    /// Substrings that no guest log line of this stream may contain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs_exclude: Vec<String>,
    /// The VM must have failed (trapped) with a message containing this
    /// text (an extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_failed: Option<String>,
}

/// Expectations on a request that reached the upstream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectMessage {
    /// Pairs that must be present (name case-insensitive, value exact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_include: Headers,
    /// Names that must be absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_exclude: Vec<String>,
    /// The exact body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Pairs that must be present in the trailers (an extension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trailers_include: Headers,
}

/// Expectations on the response the client got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectResponse {
    /// The status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Pairs that must be present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_include: Headers,
    /// Names that must be absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_exclude: Vec<String>,
    /// The exact body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Pairs that must be present in the trailers (an extension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trailers_include: Headers,
}

/// One TCP connection of the TCP form: what the client and the upstream do,
/// in order, and what to check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// The steps, run in order.
    pub steps: Vec<Step>,
    /// What to check once the steps ran.
    #[serde(default)]
    pub expect: ConnectionExpect,
}

/// The longest `sleep_ms` step, in milliseconds.
pub const MAX_SLEEP_MS: u64 = 1_000;

/// The value of a step that takes none (`client_close: {}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoValue {}

/// One step of a connection: a map with exactly one key. Text is the YAML
/// string's bytes (so double-quoted YAML escapes, `"\n"`, `"\x00"`, work
/// as in the HTTP form's bodies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// The client writes these bytes.
    ClientSend(String),
    /// The upstream must receive exactly these next bytes (real backends
    /// wait for them, bounded; in-process everything is synchronous).
    UpstreamReceive(String),
    /// The upstream writes these bytes.
    UpstreamSend(String),
    /// The client must receive exactly these next bytes.
    ClientReceive(String),
    /// The client half-closes (shuts down its write side).
    ClientClose(NoValue),
    /// The upstream closes (its end of stream).
    UpstreamClose(NoValue),
    /// The client must see the proxy close its connection (EOF), with no
    /// bytes it has not received first.
    ClientReceiveClose(NoValue),
    /// The upstream must see the proxy close its connection (EOF), with no
    /// bytes it has not received first.
    UpstreamReceiveClose(NoValue),
    /// The real backends wait this many milliseconds (at most 1,000)
    /// before the next step, so that the proxy has read what was sent
    /// before apart from what is sent after: a proxy reads what its socket
    /// holds, and a filter that pauses sends nothing a step could wait
    /// for. In-process every step runs to its end, so nothing waits.
    SleepMs(u64),
}

impl Step {
    /// The step's key, as in the file (`client_send`).
    pub fn key(&self) -> &'static str {
        match self {
            Self::ClientSend(_) => "client_send",
            Self::UpstreamReceive(_) => "upstream_receive",
            Self::UpstreamSend(_) => "upstream_send",
            Self::ClientReceive(_) => "client_receive",
            Self::ClientClose(_) => "client_close",
            Self::UpstreamClose(_) => "upstream_close",
            Self::ClientReceiveClose(_) => "client_receive_close",
            Self::UpstreamReceiveClose(_) => "upstream_receive_close",
            Self::SleepMs(_) => "sleep_ms",
        }
    }
}

/// What to check on a connection; every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionExpect {
    /// Every byte the upstream got over the whole connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_received: Option<String>,
    /// Every byte the client got over the whole connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_received: Option<String>,
    /// Substrings that some guest log line of this connection must contain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs_include: Vec<String>,
    /// Substrings that no guest log line of this connection may contain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs_exclude: Vec<String>,
    /// The VM must have failed (trapped) with a message containing this
    /// text (an extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_failed: Option<String>,
}
