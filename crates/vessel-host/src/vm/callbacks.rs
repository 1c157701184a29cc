//! The callbacks a module exports (ABI reference §3, §6), in one table, and
//! the one path that calls them ([`Vm::call`]).
//!
//! Each row of [`CALLBACKS`] gives a callback's ABI name, the ABI versions
//! it applies to and its signature (every parameter and result is an
//! `i32`). [`Plugin::load`](crate::Plugin::load) checks every export named
//! in the table against its row. The rows of callbacks the host calls also
//! have a slot: a field of [`Funcs`], holding the typed function looked up
//! once when the VM starts, and a marker type ([`OnTick`], ...) that names
//! the slot in [`Vm::call`]. A call borrows the function from its slot; it
//! never clones one.

use wasmtime::{Instance, Store, TypedFunc, ValType, WasmParams, WasmResults};

use super::{Vm, export};
use crate::error::VmError;
use crate::hostcalls::capabilities;
use crate::ids::ContextId;
use crate::state::{Frame, HostState, Phase};
use vessel_abi::AbiVersion;

/// The ABI versions a row of [`CALLBACKS`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Versions {
    /// Every version.
    All,
    /// 0.1.0 only.
    V01,
    /// 0.2.0 and later.
    Since02,
}

impl Versions {
    fn includes(self, abi: AbiVersion) -> bool {
        match self {
            Self::All => true,
            Self::V01 => abi.is_v0_1(),
            Self::Since02 => !abi.is_v0_1(),
        }
    }
}

/// One row of [`CALLBACKS`]: a callback's name, the ABI versions it applies
/// to and its signature (all `i32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallbackSpec {
    /// The export name.
    pub(crate) name: &'static str,
    /// Where this row's signature applies.
    pub(crate) versions: Versions,
    /// Number of `i32` parameters.
    pub(crate) params: usize,
    /// Number of `i32` results (0 or 1).
    pub(crate) results: usize,
}

impl CallbackSpec {
    /// The parameter types.
    pub(crate) fn param_types(&self) -> Vec<ValType> {
        vec![ValType::I32; self.params]
    }

    /// The result types.
    pub(crate) fn result_types(&self) -> Vec<ValType> {
        vec![ValType::I32; self.results]
    }
}

/// The row of `name` for a module of ABI version `abi`, if the table has
/// one: the signature the module's export of that name must have.
pub(crate) fn expected_export(name: &str, abi: AbiVersion) -> Option<&'static CallbackSpec> {
    CALLBACKS
        .iter()
        .find(|spec| spec.name == name && spec.versions.includes(abi))
}

/// A callback the host calls: its row of [`CALLBACKS`] and its slot in
/// [`Funcs`].
pub(crate) trait Callback {
    /// The wasm parameters.
    type Params: WasmParams;
    /// The wasm results.
    type Results: WasmResults;
    /// The row.
    const SPEC: CallbackSpec;
    /// The slot: the function, if the module exports it and the plugin's
    /// capabilities allow it.
    fn slot(funcs: &Funcs) -> Option<&TypedFunc<Self::Params, Self::Results>>;
}

/// The number of results of a callback's result type.
trait Arity {
    const N: usize;
}
impl Arity for () {
    const N: usize = 0;
}
impl Arity for i32 {
    const N: usize = 1;
}

/// Builds [`CALLBACKS`], [`Funcs`] and the marker types from one list.
macro_rules! callbacks {
    (
        called {
            $( $(#[doc = $doc:literal])*
               $marker:ident, $field:ident: $name:literal, $versions:ident, ($($p:ty),*) -> $r:ty; )*
        }
        checked {
            $( $cname:literal, $cversions:ident, $cparams:literal -> $cresults:literal; )*
        }
    ) => {
        /// Every callback vessel knows: those it calls, then those it only
        /// checks (start-up functions, the allocator, and the validation and
        /// metadata callbacks vessel does not call).
        pub(crate) const CALLBACKS: &[CallbackSpec] = &[
            $( <$marker as Callback>::SPEC, )*
            $( CallbackSpec {
                name: $cname,
                versions: Versions::$cversions,
                params: $cparams,
                results: $cresults,
            }, )*
        ];

        /// The typed function of every callback the host calls, looked up
        /// once when the VM starts (`None`: not exported, or not allowed).
        #[derive(Default)]
        #[allow(unused_parens, reason = "`(i32)` is the one-parameter signature")]
        pub(crate) struct Funcs {
            $( $field: Option<TypedFunc<($($p),*), $r>>, )*
        }

        impl Funcs {
            /// Looks up every callback of the table that the module exports
            /// for its ABI version and `allowed` allows.
            pub(super) fn resolve(
                instance: &Instance,
                store: &mut Store<HostState>,
                abi: AbiVersion,
                allowed: Option<&[String]>,
            ) -> Self {
                Self {
                    $( $field: lookup(instance, store, abi, allowed, &<$marker as Callback>::SPEC), )*
                }
            }
        }

        $(
            $(#[doc = $doc])*
            pub(crate) struct $marker;

            #[allow(unused_parens, reason = "`(i32)` is the one-parameter signature")]
            impl Callback for $marker {
                type Params = ($($p),*);
                type Results = $r;
                const SPEC: CallbackSpec = CallbackSpec {
                    name: $name,
                    versions: Versions::$versions,
                    params: [$(stringify!($p)),*].len(),
                    results: <$r as Arity>::N,
                };
                fn slot(funcs: &Funcs) -> Option<&TypedFunc<Self::Params, Self::Results>> {
                    funcs.$field.as_ref()
                }
            }
        )*
    };
}

callbacks! {
    called {
        /// `proxy_on_context_create(context_id, parent_id)`.
        OnContextCreate, context_create: "proxy_on_context_create", All, (i32, i32) -> ();
        /// `proxy_on_vm_start(root_id, vm_configuration_size) -> ok`.
        OnVmStart, vm_start: "proxy_on_vm_start", All, (i32, i32) -> i32;
        /// `proxy_on_configure(root_id, plugin_configuration_size) -> ok`.
        OnConfigure, configure: "proxy_on_configure", All, (i32, i32) -> i32;
        /// `proxy_on_tick(root_id)`.
        OnTick, tick: "proxy_on_tick", All, (i32) -> ();
        /// `proxy_on_queue_ready(root_id, queue_id)`.
        OnQueueReady, queue_ready: "proxy_on_queue_ready", All, (i32, i32) -> ();
        /// `proxy_on_foreign_function(root_id, function_id, args_size)`
        /// (checked for every version, called for 0.2.x only).
        OnForeignFunction, foreign_function: "proxy_on_foreign_function", All, (i32, i32, i32) -> ();
        /// `proxy_on_request_headers(context_id, headers, end_of_stream) -> action`.
        OnRequestHeaders, request_headers: "proxy_on_request_headers", Since02, (i32, i32, i32) -> i32;
        /// `proxy_on_request_headers(context_id, headers) -> action` (0.1.0).
        OnRequestHeadersV01, request_headers_v01: "proxy_on_request_headers", V01, (i32, i32) -> i32;
        /// `proxy_on_request_body(context_id, body_size, end_of_stream) -> action`.
        OnRequestBody, request_body: "proxy_on_request_body", All, (i32, i32, i32) -> i32;
        /// `proxy_on_request_trailers(context_id, trailers) -> action`.
        OnRequestTrailers, request_trailers: "proxy_on_request_trailers", All, (i32, i32) -> i32;
        /// `proxy_on_response_headers(context_id, headers, end_of_stream) -> action`.
        OnResponseHeaders, response_headers: "proxy_on_response_headers", Since02, (i32, i32, i32) -> i32;
        /// `proxy_on_response_headers(context_id, headers) -> action` (0.1.0).
        OnResponseHeadersV01, response_headers_v01: "proxy_on_response_headers", V01, (i32, i32) -> i32;
        /// `proxy_on_response_body(context_id, body_size, end_of_stream) -> action`.
        OnResponseBody, response_body: "proxy_on_response_body", All, (i32, i32, i32) -> i32;
        /// `proxy_on_response_trailers(context_id, trailers) -> action`.
        OnResponseTrailers, response_trailers: "proxy_on_response_trailers", All, (i32, i32) -> i32;
        /// `proxy_on_http_call_response(root_id, token, headers, body_size, trailers)`.
        OnHttpCallResponse, http_call_response: "proxy_on_http_call_response", All, (i32, i32, i32, i32, i32) -> ();
        /// `proxy_on_redis_call_response(root_id, token, status, response_size)` (Higress).
        OnRedisCallResponse, redis_call_response: "proxy_on_redis_call_response", All, (i32, i32, i32, i32) -> ();
        /// `proxy_on_grpc_receive_initial_metadata(root_id, token, headers)`.
        OnGrpcReceiveInitialMetadata, grpc_initial_metadata: "proxy_on_grpc_receive_initial_metadata", All, (i32, i32, i32) -> ();
        /// `proxy_on_grpc_receive(root_id, token, message_size)`.
        OnGrpcReceive, grpc_receive: "proxy_on_grpc_receive", All, (i32, i32, i32) -> ();
        /// `proxy_on_grpc_receive_trailing_metadata(root_id, token, trailers)`.
        OnGrpcReceiveTrailingMetadata, grpc_trailing_metadata: "proxy_on_grpc_receive_trailing_metadata", All, (i32, i32, i32) -> ();
        /// `proxy_on_grpc_close(root_id, token, status)`.
        OnGrpcClose, grpc_close: "proxy_on_grpc_close", All, (i32, i32, i32) -> ();
        /// `proxy_on_new_connection(context_id) -> action`.
        OnNewConnection, new_connection: "proxy_on_new_connection", All, (i32) -> i32;
        /// `proxy_on_downstream_data(context_id, data_size, end_of_stream) -> action`.
        OnDownstreamData, downstream_data: "proxy_on_downstream_data", All, (i32, i32, i32) -> i32;
        /// `proxy_on_upstream_data(context_id, data_size, end_of_stream) -> action`.
        OnUpstreamData, upstream_data: "proxy_on_upstream_data", All, (i32, i32, i32) -> i32;
        /// `proxy_on_downstream_connection_close(context_id, peer_type)`.
        OnDownstreamConnectionClose, downstream_close: "proxy_on_downstream_connection_close", All, (i32, i32) -> ();
        /// `proxy_on_upstream_connection_close(context_id, peer_type)`.
        OnUpstreamConnectionClose, upstream_close: "proxy_on_upstream_connection_close", All, (i32, i32) -> ();
        /// `proxy_on_done(context_id) -> done`.
        OnDone, done: "proxy_on_done", All, (i32) -> i32;
        /// `proxy_on_log(context_id)`.
        OnLog, log: "proxy_on_log", All, (i32) -> ();
        /// `proxy_on_delete(context_id)`.
        OnDelete, delete: "proxy_on_delete", All, (i32) -> ();
    }
    checked {
        // The allocator (looked up by `Vm::new` for the hostcalls).
        "malloc", All, 1 -> 1;
        "proxy_on_memory_allocate", All, 1 -> 1;
        // Start-up (run once by `Vm::new`; `main` and `__main_void` are
        // run only if their signature fits, as Envoy does).
        "_initialize", All, 0 -> 0;
        "_start", All, 0 -> 0;
        // Exported by SDKs, never called by vessel.
        "proxy_validate_configuration", All, 2 -> 1;
        "proxy_on_request_metadata", All, 2 -> 1;
        "proxy_on_response_metadata", All, 2 -> 1;
    }
}

/// The export of `spec` with its typed signature, if it applies to `abi`
/// and `allowed` allows it.
fn lookup<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    abi: AbiVersion,
    allowed: Option<&[String]>,
    spec: &CallbackSpec,
) -> Option<TypedFunc<P, R>> {
    if !spec.versions.includes(abi) || !capabilities::is_allowed(allowed, spec.name) {
        return None;
    }
    export(instance, store, spec.name)
}

/// Runs `f` with a fresh [`Frame`] for `ctx` and `phase`, under the
/// callback's CPU budget (`ticks` of the epoch, `fuel`).
fn enter<P: WasmParams, R: WasmResults>(
    store: &mut Store<HostState>,
    ticks: Option<u64>,
    fuel: Option<u64>,
    f: &TypedFunc<P, R>,
    ctx: ContextId,
    phase: Phase,
    args: P,
) -> wasmtime::Result<R> {
    store.data_mut().frame = Frame::new(ctx, phase);
    if let Some(ticks) = ticks {
        store.set_epoch_deadline(ticks);
    }
    if let Some(fuel) = fuel {
        store.set_fuel(fuel)?;
    }
    let result = f.call(&mut *store, args);
    // What the callback left (its stop request, refused memory, log
    // budget) stays readable; no context is current any more.
    let frame = &mut store.data_mut().frame;
    frame.phase = Phase::Idle;
    frame.current = ContextId(0);
    frame.effective = None;
    result
}

impl Vm {
    /// The epoch ticks a guest call in `phase` may run.
    fn ticks(&self, phase: Phase) -> Option<u64> {
        if matches!(phase, Phase::Start | Phase::VmStart | Phase::Configure) {
            self.startup_ticks
        } else {
            self.deadline_ticks
        }
    }

    /// Runs callback `C` with `ctx` current. `Ok(None)` if the module does
    /// not export it (or the plugin's capabilities do not allow it); the
    /// VM's failure if it failed.
    pub(super) fn call<C: Callback>(
        &mut self,
        ctx: ContextId,
        phase: Phase,
        args: C::Params,
    ) -> Result<Option<C::Results>, VmError> {
        self.alive()?;
        let (ticks, fuel) = (self.ticks(phase), self.fuel);
        let Some(f) = C::slot(&self.funcs) else {
            return Ok(None);
        };
        let result = enter(&mut self.store, ticks, fuel, f, ctx, phase, args);
        self.returned(C::SPEC.name, result).map(Some)
    }

    /// Runs a guest function that is not in [`Funcs`] (start-up functions).
    pub(super) fn call_func<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &'static str,
        f: &TypedFunc<P, R>,
        ctx: ContextId,
        phase: Phase,
        args: P,
    ) -> Result<R, VmError> {
        self.alive()?;
        let (ticks, fuel) = (self.ticks(phase), self.fuel);
        let result = enter(&mut self.store, ticks, fuel, f, ctx, phase, args);
        self.returned(name, result)
    }

    /// Turns a guest call's result into the VM's: a trap fails the VM.
    fn returned<R>(
        &mut self,
        name: &'static str,
        result: wasmtime::Result<R>,
    ) -> Result<R, VmError> {
        match result {
            Ok(v) => {
                self.after_call()?;
                Ok(v)
            }
            Err(e) => Err(self.fail(name, e)),
        }
    }

    /// Runs what must happen after a guest call: `on_delete` for root
    /// contexts that called `proxy_done`.
    fn after_call(&mut self) -> Result<(), VmError> {
        while let Some(root) = self.store.data_mut().done_requested.pop() {
            self.call::<OnDelete>(root, Phase::Callback, root.0 as i32)?;
            self.store.data_mut().remove_context(root);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_have_the_abi_signatures() {
        let v01 = AbiVersion::V0_1_0;
        let v02 = AbiVersion::V0_2_1;
        let sig = |name, abi| expected_export(name, abi).map(|s| (s.params, s.results));
        assert_eq!(sig("proxy_on_request_headers", v01), Some((2, 1)));
        assert_eq!(sig("proxy_on_request_headers", v02), Some((3, 1)));
        assert_eq!(sig("proxy_on_http_call_response", v02), Some((5, 0)));
        assert_eq!(sig("proxy_on_tick", v02), Some((1, 0)));
        assert_eq!(sig("proxy_on_done", v02), Some((1, 1)));
        assert_eq!(sig("malloc", v02), Some((1, 1)));
        assert_eq!(sig("proxy_on_foreign_function", v02), Some((3, 0)));
        assert_eq!(sig("main", v02), None);
        assert_eq!(sig("proxy_on_unknown", v02), None);
    }

    #[test]
    fn every_name_has_one_row_per_version() {
        for &abi in AbiVersion::ALL {
            for spec in CALLBACKS {
                let rows = CALLBACKS
                    .iter()
                    .filter(|s| s.name == spec.name && s.versions.includes(abi))
                    .count();
                assert!(rows <= 1, "{} has {rows} rows for {abi:?}", spec.name);
            }
        }
    }
}
