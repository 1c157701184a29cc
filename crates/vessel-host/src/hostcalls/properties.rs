//! Properties: `proxy_get_property`, `proxy_set_property` (ABI reference
//! §4.6, §5.2, §10).
//!
//! * `proxy_get_property`: OK with the encoded value; absent → NOT_FOUND;
//!   a provider error is passed through (the provider must keep to
//!   NOT_FOUND, SERIALIZATION_FAILURE or INTERNAL_FAILURE, which the SDKs
//!   accept); bad memory → INVALID_MEMORY_ACCESS. The lookup order is in
//!   [`crate::properties`].
//! * `proxy_set_property`: OK, stored on the target stream (read back by
//!   `proxy_get_property` with the same path); from a root context, which
//!   has no stream information → NOT_FOUND, as in Envoy. A (0, 0) value is an
//!   empty value. A value that would take the stream's stored properties
//!   (the filter state the stream's filters share, if it has one; each
//!   property counts its path, its value and
//!   [`PROPERTY_ENTRY_OVERHEAD`](crate::properties::PROPERTY_ENTRY_OVERHEAD))
//!   past [`Limits::max_property_bytes`](crate::Limits::max_property_bytes)
//!   is not stored and fails the VM with
//!   [`LimitExceeded::PropertyBytes`]
//!   (the Rust SDK accepts only OK here, §11.20).
//!
//! A path the plugin's [`Hidden`] hides, or a `request.*` /
//! `response.*` attribute of a hidden header, is NOT_FOUND; whole-map
//! attributes leave hidden headers out; a set of a hidden path stores
//! nothing and returns OK (logged once per stream, see [`crate::hidden`]).

use vessel_abi::{MapType, Status, pairs, split_path};
use wasmtime::Caller;

use super::{Registry, hostcall};
use crate::embedder::PropertyScope;
use crate::headers::HeaderMap;
use crate::hidden::Hidden;
use crate::limits::LimitExceeded;
use crate::memory::{Fail, HostResult, read, return_bytes, with_mem};
use crate::state::{Context, HostState, HttpContext};

pub(crate) fn add_to_linker(reg: &mut Registry) -> wasmtime::Result<()> {
    hostcall!(reg, "env", "proxy_get_property", get_property, path: i32, path_len: i32, ret_ptr: i32, ret_size: i32);
    hostcall!(reg, "env", "proxy_set_property", set_property, path: i32, path_len: i32, val: i32, val_len: i32);
    Ok(())
}

fn get_property(
    caller: &mut Caller<'_, HostState>,
    path: i32,
    path_len: i32,
    ret_ptr: i32,
    ret_size: i32,
) -> HostResult {
    let value = with_mem(caller, |mem, state| {
        let path = read(mem, path, path_len)?;
        resolve(state, path)
    })??;
    match value {
        Some(v) => return_bytes(caller, ret_ptr, ret_size, &v),
        None => Err(Status::NotFound.into()),
    }
}

fn set_property(
    caller: &mut Caller<'_, HostState>,
    path: i32,
    path_len: i32,
    val: i32,
    val_len: i32,
) -> HostResult {
    with_mem(caller, |mem, state| {
        let path = read(mem, path, path_len)?;
        let val = read(mem, val, val_len)?;
        let target = state.target();
        let limit = state.plugin.config.limits.max_property_bytes;
        if matches!(state.contexts.get(&target.0), Some(Context::Http(_)))
            && let Some(pattern) = state.plugin.config.hidden.property(path)
        {
            // Not stored (a later filter of the stream would read it in
            // place of the real value); OK, as the Rust SDK accepts only OK.
            state.hidden_write(&HiddenProperty(&pattern));
            return Ok(());
        }
        match state.contexts.get_mut(&target.0) {
            Some(Context::Http(h)) => {
                let (before, after) = h.properties.guest_set_bytes(path, val.len());
                if after > limit && after > before {
                    return Err(Fail::from(LimitExceeded::PropertyBytes {
                        limit_bytes: limit,
                        requested_bytes: after,
                    }));
                }
                h.properties.set_by_guest(path.to_vec(), val.to_vec());
                Ok(())
            }
            _ => Err(Status::NotFound.into()),
        }
    })?
}

/// How a write log names a hidden property: "property `source.address`".
struct HiddenProperty<'a>(&'a str);

impl std::fmt::Display for HiddenProperty<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "property `{}`", self.0)
    }
}

/// Resolves a property path for the target context. A path the plugin's
/// [`Hidden`] hides is absent.
pub(crate) fn resolve(state: &HostState, path: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    let config = &state.plugin.config;
    if config.hidden.hides_property(path) {
        return Ok(None);
    }
    let segs: Vec<&[u8]> = split_path(path).collect();
    match segs.as_slice() {
        [b"plugin_name"] => return Ok(Some(config.name.as_bytes().to_vec())),
        [b"plugin_root_id"] => return Ok(Some(config.root_id.as_bytes().to_vec())),
        [b"plugin_vm_id"] => return Ok(Some(config.vm_id.as_bytes().to_vec())),
        [b"plugin_vm_configuration"] => return Ok(Some(config.vm_configuration.clone())),
        _ => {}
    }
    let target = state.target();
    let (root, stream) = match state.contexts.get(&target.0) {
        Some(Context::Http(h)) => (h.root, Some(&**h)),
        _ => (target, None),
    };
    if let Some(h) = stream {
        if let Some(v) = derived(h, &segs, &config.hidden) {
            return Ok(Some(v));
        }
        if let Some(v) = h.properties.lookup(path) {
            return Ok(Some(v.into_owned()));
        }
    }
    if let Some(Context::Root(r)) = state.contexts.get(&root.0)
        && let Some(v) = r.properties.get(path)
    {
        return Ok(Some(v.to_vec()));
    }
    if let Some(v) = config.properties.get(path) {
        return Ok(Some(v.to_vec()));
    }
    let provided = match &state.env.inner.properties {
        Some(provider) => provider.get_property(
            &segs,
            PropertyScope {
                plugin: &config.name,
                context: target,
                is_root: stream.is_none(),
            },
        )?,
        None => None,
    };
    Ok(provided.or_else(|| stream.and_then(|_| stream_default(&segs))))
}

/// What a stream attribute is when nobody set it: Envoy's stream info
/// always has `response.flags` (no flag yet: 0, an int of 8 bytes
/// little-endian) until the router or the upstream's answer sets some.
fn stream_default(segs: &[&[u8]]) -> Option<Vec<u8>> {
    match segs {
        [b"response", b"flags"] => Some(0u64.to_le_bytes().to_vec()),
        _ => None,
    }
}

/// `request.*` and `response.*` attributes from the stream's header maps,
/// as `hidden` lets the plugin see them: an attribute of a hidden header is
/// absent, and a whole map leaves hidden entries out.
fn derived(h: &HttpContext, segs: &[&[u8]], hidden: &Hidden) -> Option<Vec<u8>> {
    let req = (h.request.headers.get(), MapType::HttpRequestHeaders);
    let resp = (h.response.headers.get(), MapType::HttpResponseHeaders);
    let resp_trailers = (h.response.trailers.get(), MapType::HttpResponseTrailers);
    let header = |(map, ty): (Option<&HeaderMap>, MapType), name: &[u8]| -> Option<Vec<u8>> {
        if hidden.hides_header(ty, name) {
            return None;
        }
        let map = map?;
        let values: Vec<&[u8]> = map.get_all(name).collect();
        (!values.is_empty()).then(|| values.join(&b","[..]))
    };
    let whole = |(map, ty): (Option<&HeaderMap>, MapType)| {
        let map = map?;
        Some(if hidden.hides_in(ty) {
            pairs::encode(map.iter().filter(|(k, _)| !hidden.hides_header(ty, k)))
        } else {
            map.encode()
        })
    };
    let path = || header(req, b":path");
    match segs {
        [b"request", b"path"] => path(),
        [b"request", b"url_path"] => path().map(|p| {
            let end = p.iter().position(|b| *b == b'?').unwrap_or(p.len());
            p[..end].to_vec()
        }),
        [b"request", b"query"] => path().map(|p| match p.iter().position(|b| *b == b'?') {
            Some(i) => p[i + 1..].to_vec(),
            None => Vec::new(),
        }),
        [b"request", b"host"] => header(req, b":authority"),
        [b"request", b"scheme"] => header(req, b":scheme"),
        [b"request", b"method"] => header(req, b":method"),
        [b"request", b"referer"] => header(req, b"referer"),
        [b"request", b"useragent"] => header(req, b"user-agent"),
        [b"request", b"id"] => header(req, b"x-request-id"),
        [b"request", b"headers"] => whole(req),
        [b"request", b"headers", name] => header(req, name),
        [b"response", b"code"] => {
            let status = header(resp, b":status")?;
            std::str::from_utf8(&status)
                .ok()?
                .trim()
                .parse::<i64>()
                .ok()
                .map(|c| c.to_le_bytes().to_vec())
        }
        [b"response", b"headers"] => whole(resp),
        [b"response", b"headers", name] => header(resp, name),
        [b"response", b"trailers"] => whole(resp_trailers),
        [b"response", b"trailers", name] => header(resp_trailers, name),
        _ => None,
    }
}
