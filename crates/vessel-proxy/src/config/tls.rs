//! `transport_socket` with `envoy.transport_sockets.tls`: Envoy's
//! `DownstreamTlsContext` (listeners' filter chains) and `UpstreamTlsContext`
//! (clusters), read into typed structs. The subset is in
//! `docs/envoy-config.md` and `docs/tls.md`; everything else is an error
//! naming its path.

use std::path::{Path, PathBuf};

use super::any::open_typed;
use super::error::ErrorKind;
use super::yaml::{Node, Obj, Res};

const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
const DOWNSTREAM: &str = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

/// Where PEM data comes from (`config.core.v3.DataSource`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    /// `filename` (relative names are resolved against the config file's
    /// directory). Downstream certificates from files are read again when
    /// the file changes.
    File(PathBuf),
    /// `inline_string` or `inline_bytes`.
    Inline(Vec<u8>),
}

/// One certificate chain and its private key
/// (`extensions.transport_sockets.tls.v3.TlsCertificate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCertificate {
    /// `certificate_chain`: the leaf first, then intermediates (PEM).
    pub certificate_chain: PemSource,
    /// `private_key` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub private_key: PemSource,
}

/// A certificate from `tls_certificate_sds_secret_configs`: a Secret named
/// `name` in a file (`sds_config.path_config_source.path`, or the older
/// `sds_config.path`), read again when the file changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsSecret {
    /// The secret's `name`.
    pub name: String,
    /// The file holding a `DiscoveryResponse`-shaped document with
    /// `resources: [{"@type": ...Secret, name, tls_certificate}]`.
    pub path: PathBuf,
}

/// Where one of the certificates a side presents comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// `tls_certificates[i]`.
    Static(TlsCertificate),
    /// `tls_certificate_sds_secret_configs[i]`.
    Sds(SdsSecret),
}

/// A TLS protocol version (`tls_params.tls_minimum_protocol_version`,
/// `tls_maximum_protocol_version`); vessel speaks 1.2 and 1.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLSv1_2.
    Tls12,
    /// TLSv1_3.
    Tls13,
}

/// `common_tls_context`, the part both sides share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommonTls {
    /// The certificates this side presents, in order (`tls_certificates`,
    /// then `tls_certificate_sds_secret_configs`).
    pub certificates: Vec<CertificateSource>,
    /// `validation_context.trusted_ca`: the CAs the peer's certificate must
    /// chain to. Without it, the peer's certificate is not verified (as in
    /// Envoy).
    pub trusted_ca: Option<PemSource>,
    /// `alpn_protocols`, in order of preference.
    pub alpn_protocols: Vec<String>,
    /// `tls_params.tls_minimum_protocol_version` (default TLSv1_2).
    pub min_version: TlsVersion,
    /// `tls_params.tls_maximum_protocol_version` (default TLSv1_3).
    pub max_version: TlsVersion,
}

/// A listener's `DownstreamTlsContext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamTls {
    /// `common_tls_context`.
    pub common: CommonTls,
    /// `require_client_certificate` (needs `validation_context.trusted_ca`).
    pub require_client_certificate: bool,
}

/// A cluster's `UpstreamTlsContext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// `common_tls_context` (at most one certificate: the client certificate).
    pub common: CommonTls,
    /// `sni`: the server name sent in the ClientHello (none if empty).
    pub sni: Option<String>,
}

/// Opens `transport_socket: {name: envoy.transport_sockets.tls,
/// typed_config: {...}}` and checks the context's type.
fn open_socket<'a>(node: &Node<'a>, expected: &str) -> Res<(Obj<'a>, bool)> {
    let o = node.obj(&["name", "typed_config"])?;
    let name = o.req("name")?.str()?;
    if name != TLS_SOCKET {
        return Err(o.req("name")?.err(
            ErrorKind::Unsupported,
            format!("`{name}` is not supported; the only transport socket is {TLS_SOCKET}"),
        ));
    }
    let tc = o.req("typed_config")?;
    let any = open_typed(&tc)?;
    if any.type_name != expected {
        return Err(any.type_path.err(
            ErrorKind::Invalid,
            format!(
                "`{}` is not supported here; expected type.googleapis.com/{expected}",
                any.type_name
            ),
        ));
    }
    let keys: &[&str] = if expected == DOWNSTREAM {
        &["common_tls_context", "require_client_certificate"]
    } else {
        &["common_tls_context", "sni"]
    };
    let body = any.body.obj(&any.keys(keys))?;
    Ok((body, any.inline))
}

/// Reads a listener filter chain's `transport_socket` (a
/// `DownstreamTlsContext`).
pub(crate) fn downstream_tls_context(node: &Node<'_>, base_dir: &Path) -> Res<DownstreamTls> {
    let (o, _) = open_socket(node, DOWNSTREAM)?;
    let common = match o.get("common_tls_context") {
        Some(c) => common_tls_context(&c, base_dir)?,
        None => return Err(o.err(ErrorKind::Missing, "common_tls_context is required")),
    };
    if common.certificates.is_empty() {
        return Err(o.path.key("common_tls_context").err(
            ErrorKind::Missing,
            "a server needs a certificate: tls_certificates or tls_certificate_sds_secret_configs",
        ));
    }
    let require_client_certificate = o
        .get("require_client_certificate")
        .map(|n| n.bool_value())
        .transpose()?
        .unwrap_or(false);
    if require_client_certificate && common.trusted_ca.is_none() {
        return Err(o.path.key("require_client_certificate").err(
            ErrorKind::Invalid,
            "needs common_tls_context.validation_context.trusted_ca",
        ));
    }
    Ok(DownstreamTls {
        common,
        require_client_certificate,
    })
}

/// Reads a cluster's `transport_socket` (an `UpstreamTlsContext`).
pub(crate) fn upstream_tls_context(node: &Node<'_>, base_dir: &Path) -> Res<UpstreamTls> {
    let (o, _) = open_socket(node, UPSTREAM)?;
    let common = match o.get("common_tls_context") {
        Some(c) => common_tls_context(&c, base_dir)?,
        None => CommonTls {
            certificates: Vec::new(),
            trusted_ca: None,
            alpn_protocols: Vec::new(),
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
        },
    };
    if common.certificates.len() > 1 {
        return Err(o.path.key("common_tls_context").err(
            ErrorKind::Invalid,
            "an upstream context presents at most one client certificate",
        ));
    }
    let sni = match o.get("sni") {
        Some(s) => {
            let s = s.str()?;
            (!s.is_empty()).then(|| s.to_owned())
        }
        None => None,
    };
    if let Some(s) = &sni
        && rustls_pki_types::ServerName::try_from(s.as_str()).is_err()
    {
        return Err(o
            .path
            .key("sni")
            .err(ErrorKind::Invalid, format!("`{s}` is not a DNS name")));
    }
    Ok(UpstreamTls { common, sni })
}

fn common_tls_context(node: &Node<'_>, base_dir: &Path) -> Res<CommonTls> {
    let o = node.obj(&[
        "tls_certificates",
        "tls_certificate_sds_secret_configs",
        "validation_context",
        "alpn_protocols",
        "tls_params",
    ])?;
    let mut certificates = Vec::new();
    for c in o
        .get("tls_certificates")
        .map(|n| n.list())
        .unwrap_or_default()
    {
        certificates.push(CertificateSource::Static(tls_certificate(&c, base_dir)?));
    }
    for s in o
        .get("tls_certificate_sds_secret_configs")
        .map(|n| n.list())
        .unwrap_or_default()
    {
        certificates.push(CertificateSource::Sds(sds_secret(&s, base_dir)?));
    }
    let trusted_ca = match o.get("validation_context") {
        Some(v) => {
            let vo = v.obj(&["trusted_ca"])?;
            Some(data_source(&vo.req("trusted_ca")?, base_dir)?)
        }
        None => None,
    };
    let mut alpn_protocols = Vec::new();
    for p in o
        .get("alpn_protocols")
        .map(|n| n.list())
        .unwrap_or_default()
    {
        alpn_protocols.push(p.non_empty_str()?.to_owned());
    }
    let (mut min_version, mut max_version) = (TlsVersion::Tls12, TlsVersion::Tls13);
    if let Some(p) = o.get("tls_params") {
        let po = p.obj(&[
            "tls_minimum_protocol_version",
            "tls_maximum_protocol_version",
        ])?;
        if let Some(v) = po.get("tls_minimum_protocol_version") {
            min_version = tls_version(&v)?.unwrap_or(TlsVersion::Tls12);
        }
        if let Some(v) = po.get("tls_maximum_protocol_version") {
            max_version = tls_version(&v)?.unwrap_or(TlsVersion::Tls13);
        }
        if min_version > max_version {
            return Err(p.err(
                ErrorKind::Invalid,
                "tls_minimum_protocol_version is above tls_maximum_protocol_version",
            ));
        }
    }
    Ok(CommonTls {
        certificates,
        trusted_ca,
        alpn_protocols,
        min_version,
        max_version,
    })
}

/// A protocol version; `TLS_AUTO` (None) is the default (1.2 to 1.3).
/// TLS 1.0 and 1.1 are refused.
fn tls_version(node: &Node<'_>) -> Res<Option<TlsVersion>> {
    Ok(
        match node.enumeration(&["TLS_AUTO", "TLSv1_2", "TLSv1_3"], &["TLSv1_0", "TLSv1_1"])? {
            "TLSv1_3" => Some(TlsVersion::Tls13),
            "TLSv1_2" => Some(TlsVersion::Tls12),
            _ => None,
        },
    )
}

fn tls_certificate(node: &Node<'_>, base_dir: &Path) -> Res<TlsCertificate> {
    let o = node.obj(&["certificate_chain", "private_key"])?;
    Ok(TlsCertificate {
        certificate_chain: data_source(&o.req("certificate_chain")?, base_dir)?,
        private_key: data_source(&o.req("private_key")?, base_dir)?,
    })
}

fn sds_secret(node: &Node<'_>, base_dir: &Path) -> Res<SdsSecret> {
    let o = node.obj(&["name", "sds_config"])?;
    let name = o.req("name")?.non_empty_str()?.to_owned();
    let sds = o.req("sds_config")?;
    let so = sds.obj(&["path_config_source", "path", "resource_api_version"])?;
    if let Some(v) = so.get("resource_api_version") {
        v.enumeration(&["V3"], &["AUTO", "V2"])?;
    }
    let path = match (so.get("path_config_source"), so.get("path")) {
        (Some(pcs), None) => pcs.obj(&["path"])?.req("path")?.non_empty_str()?,
        (None, Some(p)) => p.non_empty_str()?,
        (Some(_), Some(p)) => {
            return Err(p.err(
                ErrorKind::Invalid,
                "cannot be combined with path_config_source",
            ));
        }
        (None, None) => {
            return Err(sds.err(
                ErrorKind::Unsupported,
                "only secrets from a file are supported: give path_config_source.path",
            ));
        }
    };
    Ok(SdsSecret {
        name,
        path: resolve(base_dir, path),
    })
}

fn resolve(base_dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base_dir.join(p)
    }
}

/// A `DataSource` holding PEM: `filename`, `inline_string` or
/// `inline_bytes` (base64).
fn data_source(node: &Node<'_>, base_dir: &Path) -> Res<PemSource> {
    let o = node.obj(&["filename", "inline_string", "inline_bytes"])?;
    let given: Vec<&str> = ["filename", "inline_string", "inline_bytes"]
        .into_iter()
        .filter(|k| o.get(k).is_some())
        .collect();
    if given.len() != 1 {
        return Err(node.err(
            if given.is_empty() {
                ErrorKind::Missing
            } else {
                ErrorKind::Invalid
            },
            "exactly one of filename, inline_string, inline_bytes is required",
        ));
    }
    Ok(match given[0] {
        "filename" => PemSource::File(resolve(base_dir, o.req("filename")?.non_empty_str()?)),
        "inline_string" => PemSource::Inline(o.req("inline_string")?.str()?.as_bytes().to_vec()),
        _ => PemSource::Inline(o.req("inline_bytes")?.base64()?),
    })
}

/// Reads the Secret named `name` from an SDS file: a YAML or JSON document
/// shaped like a `DiscoveryResponse` (`resources: [...]`), each resource an
/// `envoy.extensions.transport_sockets.tls.v3.Secret` with a `name` and a
/// `tls_certificate`. Relative file names inside are resolved against the
/// SDS file's directory.
pub fn sds_certificate(text: &str, file: &Path, name: &str) -> Result<TlsCertificate, String> {
    let doc = crate::yaml::from_str::<crate::yaml::Value>(text).map_err(|e| e.to_string())?;
    let root = Node::root(&doc);
    let base_dir = file.parent().unwrap_or(Path::new(""));
    let r = (|| -> Res<Option<TlsCertificate>> {
        let o = root.obj(&["resources", "version_info", "@type", "type_url"])?;
        for res in o.get("resources").map(|n| n.list()).unwrap_or_default() {
            let any = open_typed(&res)?;
            if any.type_name != "envoy.extensions.transport_sockets.tls.v3.Secret" {
                return Err(any.type_path.err(
                    ErrorKind::Unsupported,
                    format!(
                        "`{}` is not supported; expected type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                        any.type_name
                    ),
                ));
            }
            let so = any.body.obj(&any.keys(&["name", "tls_certificate"]))?;
            if so.req("name")?.str()? == name {
                return Ok(Some(tls_certificate(
                    &so.req("tls_certificate")?,
                    base_dir,
                )?));
            }
        }
        Ok(None)
    })();
    match r {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(format!("no secret named `{name}` with a tls_certificate")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(yaml: &str) -> Res<DownstreamTls> {
        let doc = crate::yaml::from_str::<crate::yaml::Value>(yaml).expect("yaml");
        downstream_tls_context(&Node::root(&doc), Path::new("/etc/v"))
    }

    fn up(yaml: &str) -> Res<UpstreamTls> {
        let doc = crate::yaml::from_str::<crate::yaml::Value>(yaml).expect("yaml");
        upstream_tls_context(&Node::root(&doc), Path::new("/etc/v"))
    }

    const D: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
    const U: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

    #[test]
    fn downstream_full() {
        let t = down(&format!(
            r#"
name: envoy.transport_sockets.tls
typed_config:
  "@type": {D}
  require_client_certificate: true
  common_tls_context:
    alpn_protocols: [h2, http/1.1]
    tls_params: {{ tls_minimum_protocol_version: TLSv1_3 }}
    tls_certificates:
    - certificate_chain: {{ filename: a.pem }}
      private_key: {{ inline_string: "KEY" }}
    tls_certificate_sds_secret_configs:
    - name: s
      sds_config: {{ path_config_source: {{ path: /s/sds.yaml }} }}
    validation_context: {{ trusted_ca: {{ filename: /ca.pem }} }}
"#
        ))
        .expect("parses");
        assert!(t.require_client_certificate);
        assert_eq!(t.common.alpn_protocols, ["h2", "http/1.1"]);
        assert_eq!(t.common.min_version, TlsVersion::Tls13);
        assert_eq!(
            t.common.certificates,
            vec![
                CertificateSource::Static(TlsCertificate {
                    certificate_chain: PemSource::File("/etc/v/a.pem".into()),
                    private_key: PemSource::Inline(b"KEY".to_vec()),
                }),
                CertificateSource::Sds(SdsSecret {
                    name: "s".into(),
                    path: "/s/sds.yaml".into()
                }),
            ]
        );
        assert_eq!(t.common.trusted_ca, Some(PemSource::File("/ca.pem".into())));
    }

    #[test]
    fn downstream_errors_name_the_path() {
        let no_cert = down(&format!(
            "{{name: envoy.transport_sockets.tls, typed_config: {{'@type': {D}, common_tls_context: {{}}}}}}"
        ))
        .expect_err("no cert");
        assert!(
            no_cert.to_string().contains("common_tls_context"),
            "{no_cert}"
        );
        let unknown = down(&format!(
            "{{name: envoy.transport_sockets.tls, typed_config: {{'@type': {D}, common_tls_context: {{tls_certificates: [{{certificate_chain: {{filename: a}}, private_key: {{filename: b}}}}], tls_session_ticket_keys: {{}}}}}}}}"
        ))
        .expect_err("unknown key");
        assert!(
            unknown
                .to_string()
                .contains("common_tls_context.tls_session_ticket_keys"),
            "{unknown}"
        );
        let mtls_no_ca = down(&format!(
            "{{name: envoy.transport_sockets.tls, typed_config: {{'@type': {D}, require_client_certificate: true, common_tls_context: {{tls_certificates: [{{certificate_chain: {{filename: a}}, private_key: {{filename: b}}}}]}}}}}}"
        ))
        .expect_err("mtls without a CA");
        assert!(
            mtls_no_ca
                .to_string()
                .contains("require_client_certificate"),
            "{mtls_no_ca}"
        );
        let old = down(&format!(
            "{{name: envoy.transport_sockets.tls, typed_config: {{'@type': {D}, common_tls_context: {{tls_params: {{tls_minimum_protocol_version: TLSv1_0}}, tls_certificates: [{{certificate_chain: {{filename: a}}, private_key: {{filename: b}}}}]}}}}}}"
        ))
        .expect_err("TLS 1.0");
        assert!(
            old.to_string().contains("tls_minimum_protocol_version"),
            "{old}"
        );
        let other = down("{name: envoy.transport_sockets.raw_buffer}").expect_err("raw buffer");
        assert!(other.to_string().contains("name"), "{other}");
        let wrong_side = down(&format!(
            "{{name: envoy.transport_sockets.tls, typed_config: {{'@type': {U}}}}}"
        ))
        .expect_err("upstream type downstream");
        assert!(wrong_side.to_string().contains("@type"), "{wrong_side}");
    }

    #[test]
    fn upstream() {
        let t = up(&format!(
            r#"
name: envoy.transport_sockets.tls
typed_config:
  "@type": {U}
  sni: api.example.com
  common_tls_context:
    alpn_protocols: [h2]
    tls_certificates:
    - certificate_chain: {{ filename: c.pem }}
      private_key: {{ filename: k.pem }}
    validation_context: {{ trusted_ca: {{ filename: ca.pem }} }}
"#
        ))
        .expect("parses");
        assert_eq!(t.sni.as_deref(), Some("api.example.com"));
        assert_eq!(t.common.certificates.len(), 1);
        assert_eq!(
            t.common.trusted_ca,
            Some(PemSource::File("/etc/v/ca.pem".into()))
        );
        let bare = up(&format!(
            "{{name: envoy.transport_sockets.tls, typed_config: {{'@type': {U}}}}}"
        ))
        .expect("an empty context");
        assert_eq!(bare.sni, None);
        let bad_sni = up(&format!(
            "{{name: envoy.transport_sockets.tls, typed_config: {{'@type': {U}, sni: 'a b'}}}}"
        ))
        .expect_err("bad sni");
        assert!(bad_sni.to_string().contains("sni"), "{bad_sni}");
    }

    #[test]
    fn sds_file() {
        let text = r#"
resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: other
  tls_certificate: { certificate_chain: { filename: o.pem }, private_key: { filename: ok.pem } }
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: server
  tls_certificate: { certificate_chain: { filename: s.pem }, private_key: { filename: sk.pem } }
"#;
        let c = sds_certificate(text, Path::new("/d/sds.yaml"), "server").expect("found");
        assert_eq!(c.certificate_chain, PemSource::File("/d/s.pem".into()));
        assert!(sds_certificate(text, Path::new("/d/sds.yaml"), "none").is_err());
    }
}
