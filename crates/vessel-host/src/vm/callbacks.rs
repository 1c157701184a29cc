//! The guest callbacks a [`Vm`] calls, looked up once at instantiation, and
//! the one path that calls them ([`Vm::call`]).

use wasmtime::{Instance, Store, TypedFunc, WasmParams, WasmResults};

use super::{Vm, export};
use crate::error::VmError;
use crate::hostcalls::capabilities;
use crate::ids::ContextId;
use crate::state::{HostState, Phase};

pub(super) type F1 = TypedFunc<i32, ()>;
pub(super) type F2 = TypedFunc<(i32, i32), ()>;
pub(super) type F3 = TypedFunc<(i32, i32, i32), ()>;
pub(super) type B1 = TypedFunc<i32, i32>;
pub(super) type B2 = TypedFunc<(i32, i32), i32>;
pub(super) type B3 = TypedFunc<(i32, i32, i32), i32>;
pub(super) type F4 = TypedFunc<(i32, i32, i32, i32), ()>;
pub(super) type F5 = TypedFunc<(i32, i32, i32, i32, i32), ()>;

#[derive(Clone)]
pub(super) enum HeadersFn {
    V1(B2),
    V2(B3),
}

#[derive(Default, Clone)]
pub(super) struct Funcs {
    pub(super) context_create: Option<F2>,
    pub(super) vm_start: Option<B2>,
    pub(super) configure: Option<B2>,
    pub(super) tick: Option<F1>,
    pub(super) queue_ready: Option<F2>,
    pub(super) foreign_function: Option<F3>,
    pub(super) request_headers: Option<HeadersFn>,
    pub(super) request_body: Option<B3>,
    pub(super) request_trailers: Option<B2>,
    pub(super) response_headers: Option<HeadersFn>,
    pub(super) response_body: Option<B3>,
    pub(super) response_trailers: Option<B2>,
    pub(super) http_call_response: Option<F5>,
    pub(super) redis_call_response: Option<F4>,
    pub(super) grpc_initial_metadata: Option<F3>,
    pub(super) grpc_receive: Option<F3>,
    pub(super) grpc_trailing_metadata: Option<F3>,
    pub(super) grpc_close: Option<F3>,
    pub(super) done: Option<B1>,
    pub(super) log: Option<F1>,
    pub(super) delete: Option<F1>,
}

impl Funcs {
    /// Looks up every callback the module exports and `allowed` allows.
    pub(super) fn resolve(
        instance: &Instance,
        store: &mut Store<HostState>,
        v01: bool,
        allowed: Option<&[String]>,
    ) -> Self {
        macro_rules! get {
            ($name:literal) => {
                if capabilities::is_allowed(allowed, $name) {
                    export(instance, store, $name)
                } else {
                    None
                }
            };
        }
        let headers = |store: &mut Store<HostState>, name: &str| -> Option<HeadersFn> {
            if !capabilities::is_allowed(allowed, name) {
                None
            } else {
                if v01 {
                    export(instance, store, name).map(HeadersFn::V1)
                } else {
                    export(instance, store, name).map(HeadersFn::V2)
                }
            }
        };
        Self {
            context_create: get!("proxy_on_context_create"),
            vm_start: get!("proxy_on_vm_start"),
            configure: get!("proxy_on_configure"),
            tick: get!("proxy_on_tick"),
            queue_ready: get!("proxy_on_queue_ready"),
            foreign_function: if v01 {
                None
            } else {
                get!("proxy_on_foreign_function")
            },
            request_headers: headers(store, "proxy_on_request_headers"),
            request_body: get!("proxy_on_request_body"),
            request_trailers: get!("proxy_on_request_trailers"),
            response_headers: headers(store, "proxy_on_response_headers"),
            response_body: get!("proxy_on_response_body"),
            response_trailers: get!("proxy_on_response_trailers"),
            http_call_response: get!("proxy_on_http_call_response"),
            redis_call_response: get!("proxy_on_redis_call_response"),
            grpc_initial_metadata: get!("proxy_on_grpc_receive_initial_metadata"),
            grpc_receive: get!("proxy_on_grpc_receive"),
            grpc_trailing_metadata: get!("proxy_on_grpc_receive_trailing_metadata"),
            grpc_close: get!("proxy_on_grpc_close"),
            done: get!("proxy_on_done"),
            log: get!("proxy_on_log"),
            delete: get!("proxy_on_delete"),
        }
    }
}

impl Vm {
    /// Runs one guest function with `ctx` current.
    pub(super) fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &'static str,
        f: TypedFunc<P, R>,
        ctx: ContextId,
        phase: Phase,
        args: P,
    ) -> Result<R, VmError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let st = self.store.data_mut();
        st.current = ctx;
        st.effective = None;
        st.stop_next_iteration = false;
        st.phase = phase;
        st.log_bytes = 0;
        st.log_dropped_in_callback = false;
        st.limiter.memory_refused = None;
        let ticks = if phase == Phase::Start {
            self.startup_ticks
        } else {
            self.deadline_ticks
        };
        if let Some(ticks) = ticks {
            self.store.set_epoch_deadline(ticks);
        }
        if let Some(fuel) = self.fuel
            && let Err(e) = self.store.set_fuel(fuel)
        {
            return Err(self.fail(name, &e));
        }
        let result = f.call(&mut self.store, args);
        let st = self.store.data_mut();
        st.current = ContextId(0);
        st.effective = None;
        st.phase = Phase::Idle;
        match result {
            Ok(v) => {
                self.after_call()?;
                Ok(v)
            }
            Err(e) => Err(self.fail(name, &e)),
        }
    }

    /// Runs what must happen after a guest call: `on_delete` for root
    /// contexts that called `proxy_done`.
    pub(super) fn after_call(&mut self) -> Result<(), VmError> {
        while let Some(root) = self.store.data_mut().done_requested.pop() {
            if let Some(f) = self.funcs.delete.clone() {
                self.call("proxy_on_delete", f, root, Phase::Callback, root.0 as i32)?;
            }
            self.store.data_mut().contexts.remove(&root.0);
        }
        Ok(())
    }
}
