//! The dynamic forms of the bootstrap: `dynamic_resources` (ADS over gRPC),
//! and the places where a resource names another that a control plane
//! delivers: an HTTP connection manager's `rds`, an HTTP filter's
//! `config_discovery` (ECDS), an `EDS` cluster's `eds_cluster_config`.
//! The xDS client (`crate::xds`) reads the delivered resources through
//! [`Resolver`]; docs/xds.md describes the subset.

use crate::yaml::Value;

use super::error::ErrorKind;
use super::yaml::{Node, Res};

/// `dynamic_resources`: where listeners and clusters come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicResources {
    /// `ads_config.grpc_services[0].envoy_grpc.cluster_name`: the static
    /// HTTP/2 cluster of the control plane.
    pub ads_cluster: String,
    /// `ads_config.set_node_on_first_message_only` (default false: the node
    /// goes with every request, as in Envoy).
    pub node_on_first_message_only: bool,
    /// `lds_config: {ads: {}}`: listeners come over ADS.
    pub lds: bool,
    /// `cds_config: {ads: {}}`: clusters come over ADS.
    pub cds: bool,
}

/// What a control plane delivered, by resource name, in Envoy's JSON form
/// (the walker reads each as if it were written in the bootstrap). The
/// static-only reader resolves nothing.
pub(crate) trait Resolver {
    /// LDS listeners, in order.
    fn listeners(&self) -> Vec<(&str, &Value)>;
    /// CDS clusters, in order.
    fn clusters(&self) -> Vec<(&str, &Value)>;
    /// An RDS `RouteConfiguration`.
    fn route_config(&self, name: &str) -> Option<&Value>;
    /// An ECDS `TypedExtensionConfig`.
    fn extension_config(&self, name: &str) -> Option<&Value>;
    /// An EDS `ClusterLoadAssignment`.
    fn endpoints(&self, name: &str) -> Option<&Value>;
}

/// Resolves nothing: a bootstrap read without a control plane.
pub(crate) struct NoDynamic;

impl Resolver for NoDynamic {
    fn listeners(&self) -> Vec<(&str, &Value)> {
        Vec::new()
    }
    fn clusters(&self) -> Vec<(&str, &Value)> {
        Vec::new()
    }
    fn route_config(&self, _: &str) -> Option<&Value> {
        None
    }
    fn extension_config(&self, _: &str) -> Option<&Value> {
        None
    }
    fn endpoints(&self, _: &str) -> Option<&Value> {
        None
    }
}

/// A `ConfigSource` vessel follows: `{ads: {}}`, optionally with
/// `resource_api_version: V3`.
pub(crate) fn ads_config_source(node: &Node<'_>) -> Res<()> {
    let o = node.obj(&["ads", "resource_api_version"])?;
    if let Some(v) = o.get("resource_api_version") {
        v.enumeration(&["V3"], &["AUTO", "V2"])?;
    }
    match o.get("ads") {
        Some(a) => {
            a.obj(&[])?;
            Ok(())
        }
        None => Err(o.err(
            ErrorKind::Unsupported,
            "only `ads: {}` config sources are supported (path, api_config_source and \
             self config sources are not)",
        )),
    }
}

/// Reads `dynamic_resources`.
pub(crate) fn dynamic_resources(node: &Node<'_>) -> Res<DynamicResources> {
    let o = node.obj(&["ads_config", "lds_config", "cds_config"])?;
    let ads = o.req("ads_config")?;
    let a = ads.obj(&[
        "api_type",
        "transport_api_version",
        "grpc_services",
        "set_node_on_first_message_only",
    ])?;
    a.req("api_type")?.enumeration(
        &["GRPC"],
        &[
            "DELTA_GRPC",
            "AGGREGATED_GRPC",
            "AGGREGATED_DELTA_GRPC",
            "REST",
        ],
    )?;
    if let Some(v) = a.get("transport_api_version") {
        v.enumeration(&["V3"], &["AUTO", "V2"])?;
    }
    let services = a.req("grpc_services")?;
    let list = services.list();
    let [service] = list.as_slice() else {
        return Err(services.err(
            ErrorKind::Invalid,
            format!(
                "exactly one gRPC service is supported, found {}",
                list.len()
            ),
        ));
    };
    let s = service.obj(&["envoy_grpc"])?;
    let eg = s.req("envoy_grpc")?;
    let ads_cluster = eg
        .obj(&["cluster_name"])?
        .req("cluster_name")?
        .non_empty_str()?
        .to_owned();
    let node_on_first_message_only = a
        .get("set_node_on_first_message_only")
        .map(|b| b.bool())
        .transpose()?
        .unwrap_or(false);
    let mut lds = false;
    let mut cds = false;
    if let Some(l) = o.get("lds_config") {
        ads_config_source(&l)?;
        lds = true;
    }
    if let Some(c) = o.get("cds_config") {
        ads_config_source(&c)?;
        cds = true;
    }
    Ok(DynamicResources {
        ads_cluster,
        node_on_first_message_only,
        lds,
        cds,
    })
}
