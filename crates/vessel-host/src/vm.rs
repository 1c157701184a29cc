//! [`Vm`]: one wasmtime instance (`Store`) of a plugin, its root context and
//! the stream contexts it serves (ABI reference §3, §6.3, §11).
//!
//! A `Vm` is used by one thread at a time. Each guest callback runs to
//! completion; what the guest asks for meanwhile is queued as
//! [`Effect`]s for the embedder ([`Vm::drain_effects`]). The guest is never
//! re-entered from a hostcall.
//!
//! Start-up follows Envoy: `_initialize` (then `main(0, 0)` or
//! `__main_void()` if exported) or else `_start`; then
//! `proxy_on_context_create(root, 0)`, `proxy_on_vm_start(root,
//! vm_config_size)` and `proxy_on_configure(root, plugin_config_size)`. A
//! false result refuses the plugin.
//!
//! A trap fails the VM: the error names the plugin, the callback and the
//! trap, and every later call returns the same error without touching the
//! instance.
//!
//! Every guest call runs under the plugin's [`Limits`](crate::Limits): an
//! epoch deadline (CPU time per callback), optional fuel, and the store's
//! memory cap. A limit hit fails the VM with
//! [`TrapKind::Limit`], naming the limit and the
//! callback; other VMs carry on. Callbacks the plugin's
//! [`allowed_capabilities`](crate::PluginConfig::allowed_capabilities) do
//! not allow are treated as not exported (ABI reference §6.5).

use std::sync::Arc;

use vessel_abi::{
    BufferType, FilterDataStatus, FilterHeadersStatus, FilterTrailersStatus, MapType, Status,
};
use wasmtime::{Instance, Store, Trap, TypedFunc, WasmBacktrace, WasmParams, WasmResults};

use crate::effects::Effect;
use crate::env::HostEnv;
use crate::error::{TrapError, TrapKind, VmError};
use crate::headers::HeaderMap;
use crate::hostcalls::capabilities;
use crate::ids::{CalloutKind, ContextId, QueueToken, Token, VmInstanceId};
use crate::limits::{LimitExceeded, VmLimiter};
use crate::plugin::{Plugin, check_limits};
use crate::properties::{PropertyMap, PropertyValue};
use crate::state::{Context, HostState, HttpContext, Phase, RootContext, body_index, map_index};
use crate::wasi::ProcExit;

/// The answer to an HTTP call, delivered with [`Vm::on_http_call_response`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpCallResponse {
    /// Response headers, including `:status`.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Vec<u8>,
    /// Response trailers.
    pub trailers: HeaderMap,
}

/// How an HTTP call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpCallOutcome {
    /// A response arrived. A timeout is reported this way too, as Envoy's
    /// async client does: a `504` response.
    Response(HttpCallResponse),
    /// The call failed without a response (connection failure, reset). The
    /// guest gets 0 headers, 0 body bytes, 0 trailers and
    /// `proxy_get_status` gives `(BROKEN_CONNECTION, reason)`, as in Envoy.
    Failed {
        /// Envoy's message, e.g. `"reset"`.
        reason: String,
    },
}

/// How a Redis call (Higress 0.2.100) ended, delivered with
/// [`Vm::on_redis_call_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisCallOutcome {
    /// One RESP reply, raw (an error reply such as `-ERR ...` included).
    /// The guest gets status 0 and reads it as buffer 9.
    Reply(Vec<u8>),
    /// No reply: connection failure or timeout. The guest gets status 1
    /// (`NetworkError`) and size 0; `proxy_get_status` gives
    /// `(BROKEN_CONNECTION, "reset")`, as in Envoy-Higress.
    Failed,
}

type F1 = TypedFunc<i32, ()>;
type F2 = TypedFunc<(i32, i32), ()>;
type F3 = TypedFunc<(i32, i32, i32), ()>;
type B1 = TypedFunc<i32, i32>;
type B2 = TypedFunc<(i32, i32), i32>;
type B3 = TypedFunc<(i32, i32, i32), i32>;
type F4 = TypedFunc<(i32, i32, i32, i32), ()>;
type F5 = TypedFunc<(i32, i32, i32, i32, i32), ()>;

#[derive(Clone)]
enum HeadersFn {
    V1(B2),
    V2(B3),
}

#[derive(Default, Clone)]
struct Funcs {
    context_create: Option<F2>,
    vm_start: Option<B2>,
    configure: Option<B2>,
    tick: Option<F1>,
    queue_ready: Option<F2>,
    foreign_function: Option<F3>,
    request_headers: Option<HeadersFn>,
    request_body: Option<B3>,
    request_trailers: Option<B2>,
    response_headers: Option<HeadersFn>,
    response_body: Option<B3>,
    response_trailers: Option<B2>,
    http_call_response: Option<F5>,
    redis_call_response: Option<F4>,
    grpc_initial_metadata: Option<F3>,
    grpc_receive: Option<F3>,
    grpc_trailing_metadata: Option<F3>,
    grpc_close: Option<F3>,
    done: Option<B1>,
    log: Option<F1>,
    delete: Option<F1>,
}

impl Funcs {
    /// Looks up every callback the module exports and `allowed` allows.
    fn resolve(
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

/// One instance of a plugin. See the module docs.
pub struct Vm {
    store: Store<HostState>,
    plugin: Plugin,
    funcs: Funcs,
    root: ContextId,
    failed: Option<VmError>,
    /// Epoch ticks each callback may run (`None`: the engine has no epochs).
    deadline_ticks: Option<u64>,
    /// The same for start-up functions.
    startup_ticks: Option<u64>,
    /// Fuel each callback gets (`None`: the engine does not meter fuel).
    fuel: Option<u64>,
}

/// True for the module's start-up functions (run with [`Phase::Start`]).
fn is_startup(callback: &str) -> bool {
    matches!(callback, "_initialize" | "_start" | "main" | "__main_void")
}

/// An epoch deadline that never comes (far from overflowing wasmtime's
/// `current + ticks`).
const NO_DEADLINE: u64 = u64::MAX / 2;

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("plugin", &self.plugin.config().name)
            .field("root", &self.root)
            .field("contexts", &self.store.data().contexts.len())
            .field("failed", &self.failed.is_some())
            .finish()
    }
}

fn len_i32(n: usize) -> i32 {
    u32::try_from(n).unwrap_or(u32::MAX) as i32
}

impl Vm {
    /// Instantiates `plugin`, runs start-up and configures the root context.
    pub fn new(plugin: &Plugin, env: &HostEnv) -> Result<Self, VmError> {
        let name = plugin.config().name.clone();
        let instantiate_error = |message: String| VmError::Instantiate {
            plugin: name.clone(),
            message,
        };
        check_limits(&plugin.engine, plugin.config()).map_err(instantiate_error)?;
        let pre = plugin
            .pre
            .as_ref()
            .map_err(|e| instantiate_error(e.to_string()))?;
        let limits = &plugin.config().limits;
        let engine = plugin.engine.config();
        let memory_bytes = limits.memory_bytes.min(engine.max_memory_bytes);
        let ticks = |timeout: Option<std::time::Duration>| {
            engine
                .epoch_interruption
                .then(|| timeout.map_or(NO_DEADLINE, |t| plugin.engine.epoch_ticks(t)))
        };
        let deadline_ticks = ticks(limits.callback_timeout);
        let startup_ticks = ticks(limits.startup_timeout);
        let fuel = engine
            .consume_fuel
            .then(|| limits.fuel_per_callback.unwrap_or(u64::MAX));
        let state = HostState::new(
            plugin.shared.clone(),
            env.clone(),
            env.next_instance_id(),
            VmLimiter::new(memory_bytes),
        );
        let mut store = Store::new(&plugin.engine.inner, state);
        store.limiter(|s| &mut s.limiter);
        // A wasm start function runs during instantiation.
        if let Some(ticks) = startup_ticks {
            store.set_epoch_deadline(ticks);
        }
        if let Some(fuel) = fuel {
            store
                .set_fuel(fuel)
                .map_err(|e| instantiate_error(format!("{e:#}")))?;
        }
        let instance = pre.instantiate(&mut store).map_err(|e| {
            let mut message = format!("{e:#}");
            if let Some((limit_bytes, requested_bytes)) = store.data().limiter.memory_refused {
                message = format!(
                    "{}: {message}",
                    LimitExceeded::Memory {
                        limit_bytes,
                        requested_bytes
                    }
                );
            }
            instantiate_error(message)
        })?;
        let memory = instance.get_memory(&mut store, "memory");
        let allocator = export::<i32, i32>(&instance, &mut store, "malloc")
            .or_else(|| export::<i32, i32>(&instance, &mut store, "proxy_on_memory_allocate"));
        store.data_mut().memory = memory;
        store.data_mut().allocator = allocator;
        let funcs = Funcs::resolve(
            &instance,
            &mut store,
            plugin.abi_version().is_v0_1(),
            capabilities::restriction(plugin.config().allowed_capabilities.as_ref()),
        );
        let mut vm = Self {
            store,
            plugin: plugin.clone(),
            funcs,
            root: ContextId(0),
            failed: None,
            deadline_ticks,
            startup_ticks,
            fuel,
        };
        vm.run_start(&instance)?;
        vm.start_root()?;
        Ok(vm)
    }

    fn run_start(&mut self, instance: &Instance) -> Result<(), VmError> {
        let store = &mut self.store;
        if let Some(init) = export::<(), ()>(instance, store, "_initialize") {
            self.call_start("_initialize", init, ())?;
            let store = &mut self.store;
            if let Some(main) = export::<(i32, i32), i32>(instance, store, "main") {
                self.call_start("main", main, (0, 0))?;
            } else if let Some(main) = export::<(), i32>(instance, store, "__main_void") {
                self.call_start("__main_void", main, ())?;
            }
        } else if let Some(start) = export::<(), ()>(instance, store, "_start") {
            self.call_start("_start", start, ())?;
        }
        Ok(())
    }

    fn call_start<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &'static str,
        f: TypedFunc<P, R>,
        args: P,
    ) -> Result<(), VmError> {
        match self.call(name, f, ContextId(0), Phase::Start, args) {
            Ok(_) => Ok(()),
            Err(VmError::Trap(t)) if t.kind == TrapKind::ProcExit(0) => {
                // A command module's normal exit during start-up.
                self.failed = None;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn start_root(&mut self) -> Result<(), VmError> {
        let root = self.store.data_mut().alloc_context_id();
        self.root = root;
        self.store
            .data_mut()
            .contexts
            .insert(root.0, Context::Root(RootContext::default()));
        if let Some(f) = self.funcs.context_create.clone() {
            self.call(
                "proxy_on_context_create",
                f,
                root,
                Phase::Callback,
                (root.0 as i32, 0),
            )?;
        }
        let config = self.plugin.config();
        let (vm_len, cfg_len) = (
            len_i32(config.vm_configuration.len()),
            len_i32(config.configuration.len()),
        );
        if let Some(f) = self.funcs.vm_start.clone() {
            let ok = self.call(
                "proxy_on_vm_start",
                f,
                root,
                Phase::VmStart,
                (root.0 as i32, vm_len),
            )?;
            if ok == 0 {
                return Err(VmError::VmStartRefused {
                    plugin: self.plugin.config().name.clone(),
                });
            }
        }
        if let Some(f) = self.funcs.configure.clone() {
            let ok = self.call(
                "proxy_on_configure",
                f,
                root,
                Phase::Configure,
                (root.0 as i32, cfg_len),
            )?;
            if ok == 0 {
                return Err(VmError::ConfigureRefused {
                    plugin: self.plugin.config().name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Runs one guest function with `ctx` current.
    fn call<P: WasmParams, R: WasmResults>(
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
        st.limit_logged_in_callback = false;
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
    fn after_call(&mut self) -> Result<(), VmError> {
        while let Some(root) = self.store.data_mut().done_requested.pop() {
            if let Some(f) = self.funcs.delete.clone() {
                self.call("proxy_on_delete", f, root, Phase::Callback, root.0 as i32)?;
            }
            self.store.data_mut().contexts.remove(&root.0);
        }
        Ok(())
    }

    /// The limit behind a trap, if a limit caused it.
    fn limit_of(&self, callback: &str, trap: Option<&Trap>) -> Option<LimitExceeded> {
        let limits = &self.plugin.config().limits;
        match trap {
            Some(Trap::Interrupt) if is_startup(callback) => limits
                .startup_timeout
                .map(|timeout| LimitExceeded::StartupTimeout { timeout }),
            Some(Trap::Interrupt) => limits
                .callback_timeout
                .map(|timeout| LimitExceeded::CallbackTimeout { timeout }),
            Some(Trap::OutOfFuel) => limits
                .fuel_per_callback
                .map(|fuel| LimitExceeded::Fuel { fuel }),
            Some(Trap::StackOverflow) => Some(LimitExceeded::WasmStack {
                max_bytes: self.plugin.engine.config().max_wasm_stack,
            }),
            // A trap after a refused `memory.grow`: out of memory.
            _ => self
                .store
                .data()
                .limiter
                .memory_refused
                .map(|(limit_bytes, requested_bytes)| LimitExceeded::Memory {
                    limit_bytes,
                    requested_bytes,
                }),
        }
    }

    fn fail(&mut self, callback: &'static str, e: &wasmtime::Error) -> VmError {
        let trap = e.downcast_ref::<Trap>();
        let kind = if let Some(exit) = e.downcast_ref::<ProcExit>() {
            TrapKind::ProcExit(exit.0)
        } else if let Some(limit) = e.downcast_ref::<LimitExceeded>() {
            // A hostcall refused to hold more for the guest.
            TrapKind::Limit(limit.clone())
        } else if let Some(limit) = self.limit_of(callback, trap) {
            TrapKind::Limit(limit)
        } else if let Some(trap) = trap {
            TrapKind::Wasm(trap.to_string())
        } else {
            TrapKind::Host(e.root_cause().to_string())
        };
        let mut message = match &kind {
            TrapKind::Wasm(m) | TrapKind::Host(m) => m.clone(),
            TrapKind::ProcExit(code) => format!("the guest called proc_exit({code})"),
            TrapKind::Limit(limit) => match trap {
                // Out of memory: also say how the guest reacted.
                Some(t) if matches!(limit, LimitExceeded::Memory { .. }) => {
                    format!("{limit}; then: {t}")
                }
                _ => limit.to_string(),
            },
        };
        if let Some(bt) = e.downcast_ref::<WasmBacktrace>() {
            message.push('\n');
            message.push_str(&bt.to_string());
        }
        let err = VmError::Trap(Arc::new(TrapError {
            plugin: self.plugin.config().name.clone(),
            callback,
            message,
            kind,
        }));
        log::warn!(target: "vessel::vm", "{err}");
        self.failed = Some(err.clone());
        err
    }

    /// The plugin this VM runs.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// This VM's process-unique id (the target of queue notifications).
    pub fn instance_id(&self) -> VmInstanceId {
        self.store.data().instance
    }

    /// The root context.
    pub fn root_context(&self) -> ContextId {
        self.root
    }

    /// The error that failed this VM, if it failed.
    pub fn failure(&self) -> Option<&VmError> {
        self.failed.as_ref()
    }

    /// True if the VM failed.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// `Err` with the failure if the VM failed. Every entry point checks it
    /// first, so a failed VM refuses a callback even when the module does
    /// not export it (instead of answering as a healthy VM would).
    fn alive(&self) -> Result<(), VmError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Number of live contexts, the root included.
    pub fn context_count(&self) -> usize {
        self.store.data().contexts.len()
    }

    /// Guest log lines dropped because a callback logged more than
    /// [`Limits::max_log_bytes_per_callback`](crate::Limits::max_log_bytes_per_callback),
    /// since the VM started.
    pub fn dropped_log_lines(&self) -> u64 {
        self.store.data().dropped_log_lines
    }

    /// The bytes of those dropped lines.
    pub fn dropped_log_bytes(&self) -> u64 {
        self.store.data().dropped_log_bytes
    }

    /// Calls of hostcalls that the plugin's
    /// [`allowed_capabilities`](crate::PluginConfig::allowed_capabilities)
    /// do not allow (each got its stub's answer), since the VM started.
    pub fn denied_capability_calls(&self) -> u64 {
        self.store.data().denied_calls
    }

    /// Number of callouts in flight.
    pub fn callouts_in_flight(&self) -> usize {
        self.store.data().callouts.len()
    }

    /// The guest's linear memory size in bytes.
    pub fn memory_size(&self) -> usize {
        self.store
            .data()
            .memory
            .map_or(0, |m| m.data_size(&self.store))
    }

    /// The root context's current tick period in milliseconds (0 = none).
    pub fn tick_period_ms(&self) -> u32 {
        match self.store.data().contexts.get(&self.root.0) {
            Some(Context::Root(r)) => r.tick_period_ms,
            _ => 0,
        }
    }

    /// Takes the effects queued so far, oldest first. From then on they no
    /// longer count against [`Limits::max_effect_bytes`](crate::Limits::max_effect_bytes)
    /// (callouts count until they end).
    pub fn drain_effects(&mut self) -> std::vec::Drain<'_, Effect> {
        let state = self.store.data_mut();
        state.effect_bytes = 0;
        state.effects.drain(..)
    }

    /// Bytes this VM holds for its embedder: effects not taken yet and the
    /// requests of callouts in flight (bounded by
    /// [`Limits::max_effect_bytes`](crate::Limits::max_effect_bytes)).
    pub fn held_effect_bytes(&self) -> usize {
        self.store.data().held_bytes()
    }

    /// Hostcalls refused with an error status because of a limit (see
    /// [`Limits`](crate::Limits)), since the VM started.
    pub fn limit_refusals(&self) -> u64 {
        self.store.data().limit_refusals
    }

    /// True if effects are waiting.
    pub fn has_effects(&self) -> bool {
        !self.store.data().effects.is_empty()
    }

    fn http(&self, ctx: ContextId) -> Result<&HttpContext, VmError> {
        match self.store.data().contexts.get(&ctx.0) {
            Some(Context::Http(h)) => Ok(h),
            Some(_) => Err(VmError::WrongContextKind(ctx, "an HTTP stream")),
            None => Err(VmError::UnknownContext(ctx)),
        }
    }

    fn http_mut(&mut self, ctx: ContextId) -> Result<&mut HttpContext, VmError> {
        match self.store.data_mut().contexts.get_mut(&ctx.0) {
            Some(Context::Http(h)) => Ok(h),
            Some(_) => Err(VmError::WrongContextKind(ctx, "an HTTP stream")),
            None => Err(VmError::UnknownContext(ctx)),
        }
    }

    // ---- HTTP streams -------------------------------------------------

    /// Creates an HTTP stream context (`proxy_on_context_create(id, root)`).
    pub fn create_http_context(&mut self) -> Result<ContextId, VmError> {
        self.create_http_context_with(PropertyMap::new())
    }

    /// Creates an HTTP stream context with stream properties
    /// (`source.address`, `request.protocol`, ...).
    pub fn create_http_context_with(
        &mut self,
        properties: PropertyMap,
    ) -> Result<ContextId, VmError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let max = self.plugin.config().limits.max_contexts;
        if self.store.data().contexts.len() >= max {
            return Err(VmError::TooManyContexts {
                plugin: self.plugin.config().name.clone(),
                max,
            });
        }
        let id = self.store.data_mut().alloc_context_id();
        let ctx = HttpContext {
            root: self.root,
            properties,
            ..HttpContext::default()
        };
        self.store
            .data_mut()
            .contexts
            .insert(id.0, Context::Http(Box::new(ctx)));
        if let Some(f) = self.funcs.context_create.clone()
            && let Err(e) = self.call(
                "proxy_on_context_create",
                f,
                id,
                Phase::Callback,
                (id.0 as i32, self.root.0 as i32),
            )
        {
            // The embedder never learns the id: forget the context.
            self.store.data_mut().contexts.remove(&id.0);
            return Err(e);
        }
        Ok(id)
    }

    /// Sets a property on a stream (dotted path, e.g. `source.address`).
    pub fn set_stream_property(
        &mut self,
        ctx: ContextId,
        dotted: &str,
        value: impl Into<PropertyValue>,
    ) -> Result<(), VmError> {
        self.http_mut(ctx)?.properties.insert_dotted(dotted, value);
        Ok(())
    }

    fn headers_call(
        &mut self,
        ctx: ContextId,
        ty: MapType,
        map: HeaderMap,
        end_of_stream: bool,
    ) -> Result<FilterHeadersStatus, VmError> {
        self.alive()?;
        let i = map_index(ty).unwrap_or(0);
        {
            let h = self.http_mut(ctx)?;
            h.maps[i] = map;
            h.present[i] = true;
            h.sealed[i] = false;
        }
        let (name, f) = if i == 0 {
            (
                "proxy_on_request_headers",
                self.funcs.request_headers.clone(),
            )
        } else {
            (
                "proxy_on_response_headers",
                self.funcs.response_headers.clone(),
            )
        };
        let n = len_i32(self.http(ctx)?.maps[i].len());
        let raw = match f {
            None => 0,
            Some(HeadersFn::V1(f)) => {
                self.call(name, f, ctx, Phase::Callback, (ctx.0 as i32, n))?
            }
            Some(HeadersFn::V2(f)) => self.call(
                name,
                f,
                ctx,
                Phase::Callback,
                (ctx.0 as i32, n, i32::from(end_of_stream)),
            )?,
        };
        let allow_stop = self.plugin.config().allow_on_headers_stop_iteration;
        let stop_next = std::mem::take(&mut self.store.data_mut().stop_next_iteration);
        let h = self.http_mut(ctx)?;
        let status = translate_headers(raw as u32, stop_next, allow_stop);
        if status == FilterHeadersStatus::Continue {
            h.sealed[i] = true;
        }
        Ok(status)
    }

    /// Runs `proxy_on_request_headers`. The host keeps the map; read it with
    /// [`Vm::headers`]. The result is translated as Envoy translates it
    /// (ABI reference §11.1): Continue seals the map (later map hostcalls get
    /// BAD_ARGUMENT, as in Envoy).
    pub fn on_request_headers(
        &mut self,
        ctx: ContextId,
        headers: HeaderMap,
        end_of_stream: bool,
    ) -> Result<FilterHeadersStatus, VmError> {
        self.headers_call(ctx, MapType::HttpRequestHeaders, headers, end_of_stream)
    }

    /// Runs `proxy_on_response_headers` (see [`Vm::on_request_headers`]).
    pub fn on_response_headers(
        &mut self,
        ctx: ContextId,
        headers: HeaderMap,
        end_of_stream: bool,
    ) -> Result<FilterHeadersStatus, VmError> {
        self.headers_call(ctx, MapType::HttpResponseHeaders, headers, end_of_stream)
    }

    fn body_call(
        &mut self,
        ctx: ContextId,
        ty: BufferType,
        data: &[u8],
        end_of_stream: bool,
    ) -> Result<FilterDataStatus, VmError> {
        self.alive()?;
        let i = body_index(ty).unwrap_or(0);
        self.check_body_room(ctx, ty, data.len())?;
        let size = {
            let h = self.http_mut(ctx)?;
            let buf = h.bodies[i].get_or_insert_with(Vec::new);
            buf.extend_from_slice(data);
            let size = buf.len();
            h.may_add_trailers[i] = end_of_stream && !h.present[1 + 2 * i];
            size
        };
        let (name, f) = if i == 0 {
            ("proxy_on_request_body", self.funcs.request_body.clone())
        } else {
            ("proxy_on_response_body", self.funcs.response_body.clone())
        };
        let raw = match f {
            None => 0,
            Some(f) => self.call(
                name,
                f,
                ctx,
                Phase::Callback,
                (ctx.0 as i32, len_i32(size), i32::from(end_of_stream)),
            )?,
        };
        let stop_next = std::mem::take(&mut self.store.data_mut().stop_next_iteration);
        let h = self.http_mut(ctx)?;
        h.may_add_trailers[i] = false;
        let status = translate_data(raw as u32, stop_next);
        if status == FilterDataStatus::StopIterationNoBuffer {
            // Envoy keeps nothing for this chunk.
            h.bodies[i] = Some(Vec::new());
        }
        Ok(status)
    }

    /// Appends `data` to the request body buffer and runs
    /// `proxy_on_request_body` with the whole buffered size (ABI reference
    /// §11.2). On Continue, take the buffer with [`Vm::take_body`] and
    /// forward it; on a stop the host keeps buffering.
    pub fn on_request_body(
        &mut self,
        ctx: ContextId,
        data: &[u8],
        end_of_stream: bool,
    ) -> Result<FilterDataStatus, VmError> {
        self.body_call(ctx, BufferType::HttpRequestBody, data, end_of_stream)
    }

    /// Runs `proxy_on_response_body` (see [`Vm::on_request_body`]).
    pub fn on_response_body(
        &mut self,
        ctx: ContextId,
        data: &[u8],
        end_of_stream: bool,
    ) -> Result<FilterDataStatus, VmError> {
        self.body_call(ctx, BufferType::HttpResponseBody, data, end_of_stream)
    }

    fn trailers_call(
        &mut self,
        ctx: ContextId,
        ty: MapType,
        map: HeaderMap,
    ) -> Result<FilterTrailersStatus, VmError> {
        self.alive()?;
        let i = map_index(ty).unwrap_or(1);
        {
            let h = self.http_mut(ctx)?;
            h.maps[i] = map;
            h.present[i] = true;
            h.sealed[i] = false;
        }
        let (name, f) = if i == 1 {
            (
                "proxy_on_request_trailers",
                self.funcs.request_trailers.clone(),
            )
        } else {
            (
                "proxy_on_response_trailers",
                self.funcs.response_trailers.clone(),
            )
        };
        let n = len_i32(self.http(ctx)?.maps[i].len());
        let raw = match f {
            None => 0,
            Some(f) => self.call(name, f, ctx, Phase::Callback, (ctx.0 as i32, n))?,
        };
        let stop_next = std::mem::take(&mut self.store.data_mut().stop_next_iteration);
        let h = self.http_mut(ctx)?;
        let status = translate_trailers(raw as u32, stop_next);
        if status == FilterTrailersStatus::Continue {
            h.sealed[i] = true;
        }
        Ok(status)
    }

    /// Runs `proxy_on_request_trailers`.
    pub fn on_request_trailers(
        &mut self,
        ctx: ContextId,
        trailers: HeaderMap,
    ) -> Result<FilterTrailersStatus, VmError> {
        self.trailers_call(ctx, MapType::HttpRequestTrailers, trailers)
    }

    /// Runs `proxy_on_response_trailers`.
    pub fn on_response_trailers(
        &mut self,
        ctx: ContextId,
        trailers: HeaderMap,
    ) -> Result<FilterTrailersStatus, VmError> {
        self.trailers_call(ctx, MapType::HttpResponseTrailers, trailers)
    }

    /// A stream map as the guest left it (maps 0–3), whether or not it is
    /// sealed. `None` if the stream never had it.
    pub fn headers(&self, ctx: ContextId, ty: MapType) -> Option<&HeaderMap> {
        let h = self.http(ctx).ok()?;
        let i = map_index(ty)?;
        h.present[i].then(|| &h.maps[i])
    }

    /// Moves a stream map out of the host (it becomes unavailable to the guest).
    pub fn take_headers(&mut self, ctx: ContextId, ty: MapType) -> Option<HeaderMap> {
        let i = map_index(ty)?;
        let h = self.http_mut(ctx).ok()?;
        if !h.present[i] {
            return None;
        }
        h.present[i] = false;
        Some(std::mem::take(&mut h.maps[i]))
    }

    /// Provides a stream map without calling the guest (e.g. trailers that
    /// arrived while the stream was paused, or headers for `on_log`).
    pub fn set_headers(
        &mut self,
        ctx: ContextId,
        ty: MapType,
        map: HeaderMap,
    ) -> Result<(), VmError> {
        let i = map_index(ty).ok_or(VmError::WrongContextKind(ctx, "a stream map"))?;
        let h = self.http_mut(ctx)?;
        h.maps[i] = map;
        h.present[i] = true;
        Ok(())
    }

    /// Seals a direction's maps, as when the stream continues past them.
    pub fn seal(&mut self, ctx: ContextId, ty: MapType) -> Result<(), VmError> {
        if let Some(i) = map_index(ty) {
            self.http_mut(ctx)?.sealed[i] = true;
        }
        Ok(())
    }

    /// The buffered body of a stream.
    pub fn body(&self, ctx: ContextId, ty: BufferType) -> Option<&[u8]> {
        self.http(ctx).ok()?.body(ty).map(Vec::as_slice)
    }

    /// Takes the buffered body (to forward it on Continue).
    pub fn take_body(&mut self, ctx: ContextId, ty: BufferType) -> Option<Vec<u8>> {
        let i = body_index(ty)?;
        self.http_mut(ctx).ok()?.bodies[i].take()
    }

    /// Appends to a body buffer without calling the guest (data that arrives
    /// while the stream is paused on headers).
    pub fn append_body(
        &mut self,
        ctx: ContextId,
        ty: BufferType,
        data: &[u8],
    ) -> Result<(), VmError> {
        let i = body_index(ty).ok_or(VmError::WrongContextKind(ctx, "a body buffer"))?;
        self.check_body_room(ctx, ty, data.len())?;
        self.http_mut(ctx)?.bodies[i]
            .get_or_insert_with(Vec::new)
            .extend_from_slice(data);
        Ok(())
    }

    /// `Err(StreamLimit)` if `extra` more bytes would take the body this
    /// filter holds for `ctx` past [`Limits::max_body_bytes`](crate::Limits::max_body_bytes).
    fn check_body_room(&self, ctx: ContextId, ty: BufferType, extra: usize) -> Result<(), VmError> {
        let held = self.http(ctx)?.body(ty).map_or(0, Vec::len);
        let limit = self.plugin.config().limits.max_body_bytes;
        crate::hostcalls::buffers::check_body_growth(ty, held, held.saturating_add(extra), limit)
            .map_err(|limit| VmError::StreamLimit {
                plugin: self.plugin.config().name.clone(),
                context: ctx,
                limit,
            })
    }

    /// True if the guest sent a local response on this stream.
    pub fn local_response_sent(&self, ctx: ContextId) -> bool {
        self.http(ctx).is_ok_and(|h| h.local_response_sent)
    }

    /// Runs `proxy_on_log`. Sealed maps are readable during it.
    pub fn on_log(&mut self, ctx: ContextId) -> Result<(), VmError> {
        self.alive()?;
        self.http(ctx)?;
        if let Some(f) = self.funcs.log.clone() {
            self.call("proxy_on_log", f, ctx, Phase::Log, ctx.0 as i32)?;
        }
        Ok(())
    }

    /// Runs `proxy_on_done`; returns its result (Envoy ignores it for streams).
    pub fn on_done(&mut self, ctx: ContextId) -> Result<bool, VmError> {
        self.alive()?;
        match self.funcs.done.clone() {
            Some(f) => Ok(self.call("proxy_on_done", f, ctx, Phase::Callback, ctx.0 as i32)? != 0),
            None => Ok(true),
        }
    }

    /// Runs `proxy_on_delete` and forgets the context.
    pub fn on_delete(&mut self, ctx: ContextId) -> Result<(), VmError> {
        let result = match self.funcs.delete.clone() {
            _ if self.failed.is_some() => self.alive(),
            Some(f) if self.store.data().contexts.contains_key(&ctx.0) => {
                self.call("proxy_on_delete", f, ctx, Phase::Callback, ctx.0 as i32)
            }
            _ => Ok(()),
        };
        self.store.data_mut().contexts.remove(&ctx.0);
        result
    }

    /// Ends a stream in Envoy's order: `on_log`, `on_done`, `on_delete`
    /// (ABI reference §11.11). The context is forgotten even if the VM
    /// failed, so nothing leaks. A context that is not an HTTP stream (the
    /// root context, say) is left alone.
    pub fn finish_http_stream(&mut self, ctx: ContextId) -> Result<(), VmError> {
        if let Err(e) = self.http(ctx) {
            return Err(self.failed.clone().unwrap_or(e));
        }
        let result = self
            .on_log(ctx)
            .and_then(|()| self.on_done(ctx).map(|_| ()))
            .and_then(|()| self.on_delete(ctx));
        self.store.data_mut().contexts.remove(&ctx.0);
        result
    }

    // ---- root-context events ------------------------------------------

    /// Runs `proxy_on_tick` on the root context.
    pub fn on_tick(&mut self) -> Result<(), VmError> {
        self.alive()?;
        if let Some(f) = self.funcs.tick.clone() {
            let root = self.root;
            self.call("proxy_on_tick", f, root, Phase::Callback, root.0 as i32)?;
        }
        Ok(())
    }

    /// Runs `proxy_on_queue_ready(root, token)`.
    pub fn on_queue_ready(&mut self, root: ContextId, token: QueueToken) -> Result<(), VmError> {
        self.alive()?;
        if let Some(f) = self.funcs.queue_ready.clone() {
            self.call(
                "proxy_on_queue_ready",
                f,
                root,
                Phase::Callback,
                (root.0 as i32, token.0 as i32),
            )?;
        }
        Ok(())
    }

    /// Runs `proxy_on_foreign_function(root, function_id, args_size)` with
    /// `args` readable as the foreign-function argument buffer (0.2.x only).
    pub fn on_foreign_function(&mut self, function_id: u32, args: &[u8]) -> Result<(), VmError> {
        self.alive()?;
        let Some(f) = self.funcs.foreign_function.clone() else {
            return Ok(());
        };
        self.store.data_mut().foreign_args = args.to_vec();
        let root = self.root;
        let r = self.call(
            "proxy_on_foreign_function",
            f,
            root,
            Phase::Callback,
            (root.0 as i32, function_id as i32, len_i32(args.len())),
        );
        self.store.data_mut().foreign_args.clear();
        r
    }

    fn take_callout(&mut self, token: Token) -> Result<crate::state::Callout, VmError> {
        self.store
            .data_mut()
            .end_callout(token)
            .ok_or(VmError::UnknownToken(token))
    }

    fn set_status(&mut self, root: ContextId, code: u32, message: &[u8]) {
        if let Some(r) = self.store.data_mut().root_mut(root) {
            r.status_code = code;
            r.status_message.clear();
            r.status_message.extend_from_slice(message);
        }
    }

    /// Delivers the end of an HTTP call to its root context
    /// (`proxy_on_http_call_response(root, token, headers, body, trailers)`).
    pub fn on_http_call_response(
        &mut self,
        token: Token,
        outcome: HttpCallOutcome,
    ) -> Result<(), VmError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let call = self.take_callout(token)?;
        let root = call.root;
        let (h, b, t) = match outcome {
            HttpCallOutcome::Response(r) => {
                self.set_status(root, Status::Ok.as_u32(), b"");
                let counts = (
                    len_i32(r.headers.len()),
                    len_i32(r.body.len()),
                    len_i32(r.trailers.len()),
                );
                let data = &mut self.store.data_mut().callout_data;
                data.headers = Some(r.headers);
                data.body = Some(r.body);
                data.trailers = Some(r.trailers);
                counts
            }
            HttpCallOutcome::Failed { reason } => {
                self.set_status(root, Status::BrokenConnection.as_u32(), reason.as_bytes());
                (0, 0, 0)
            }
        };
        let result = match self.funcs.http_call_response.clone() {
            Some(f) => self.call(
                "proxy_on_http_call_response",
                f,
                root,
                Phase::Callback,
                (root.0 as i32, token.0 as i32, h, b, t),
            ),
            None => Ok(()),
        };
        self.store.data_mut().callout_data = Default::default();
        result
    }

    /// Delivers the end of a Redis call to its root context
    /// (`proxy_on_redis_call_response(root, token, status, size)`; see
    /// [`hostcalls::redis`](crate::hostcalls::redis)).
    pub fn on_redis_call_response(
        &mut self,
        token: Token,
        outcome: RedisCallOutcome,
    ) -> Result<(), VmError> {
        self.alive()?;
        if token.kind() != Some(CalloutKind::Redis) {
            return Err(VmError::UnknownToken(token));
        }
        let root = self.take_callout(token)?.root;
        let (status, size) = match outcome {
            RedisCallOutcome::Reply(reply) => {
                let n = len_i32(reply.len());
                self.store.data_mut().redis.response = reply;
                (0, n)
            }
            RedisCallOutcome::Failed => {
                self.set_status(root, Status::BrokenConnection.as_u32(), b"reset");
                (1, 0)
            }
        };
        let result = match self.funcs.redis_call_response.clone() {
            Some(f) => self.call(
                "proxy_on_redis_call_response",
                f,
                root,
                Phase::Callback,
                (root.0 as i32, token.0 as i32, status, size),
            ),
            None => Ok(()),
        };
        self.store.data_mut().redis.response = Vec::new();
        result
    }

    fn grpc_event(
        &mut self,
        token: Token,
        name: &'static str,
        f: Option<F3>,
        arg: i32,
        finished: bool,
    ) -> Result<(), VmError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let call = *self
            .store
            .data()
            .callouts
            .get(&token.0)
            .ok_or(VmError::UnknownToken(token))?;
        if finished {
            self.store.data_mut().end_callout(token);
        }
        let result = match f {
            Some(f) => self.call(
                name,
                f,
                call.root,
                Phase::Callback,
                (call.root.0 as i32, token.0 as i32, arg),
            ),
            None => Ok(()),
        };
        self.store.data_mut().callout_data = Default::default();
        result
    }

    /// A stream the remote side closed gets no more events.
    fn reject_remote_closed(&self, token: Token) -> Result<(), VmError> {
        match self.store.data().callouts.get(&token.0) {
            Some(c) if c.remote_closed => Err(VmError::UnknownToken(token)),
            _ => Ok(()),
        }
    }

    /// Delivers gRPC initial metadata (`proxy_on_grpc_receive_initial_metadata`).
    pub fn on_grpc_receive_initial_metadata(
        &mut self,
        token: Token,
        metadata: HeaderMap,
    ) -> Result<(), VmError> {
        self.reject_remote_closed(token)?;
        let n = len_i32(metadata.len());
        self.store.data_mut().callout_data.headers = Some(metadata);
        self.grpc_event(
            token,
            "proxy_on_grpc_receive_initial_metadata",
            self.funcs.grpc_initial_metadata.clone(),
            n,
            false,
        )
    }

    /// Delivers a gRPC message (`proxy_on_grpc_receive`). For a unary call
    /// this ends the call, as in Envoy.
    pub fn on_grpc_receive(&mut self, token: Token, message: Vec<u8>) -> Result<(), VmError> {
        self.reject_remote_closed(token)?;
        let n = len_i32(message.len());
        self.store.data_mut().callout_data.body = Some(message);
        let unary = token.kind() == Some(CalloutKind::GrpcCall);
        if unary && let Some(call) = self.store.data().callouts.get(&token.0).copied() {
            self.set_status(call.root, 0, b"");
        }
        self.grpc_event(
            token,
            "proxy_on_grpc_receive",
            self.funcs.grpc_receive.clone(),
            n,
            unary,
        )
    }

    /// Delivers gRPC trailing metadata.
    pub fn on_grpc_receive_trailing_metadata(
        &mut self,
        token: Token,
        metadata: HeaderMap,
    ) -> Result<(), VmError> {
        self.reject_remote_closed(token)?;
        let n = len_i32(metadata.len());
        self.store.data_mut().callout_data.trailers = Some(metadata);
        self.grpc_event(
            token,
            "proxy_on_grpc_receive_trailing_metadata",
            self.funcs.grpc_trailing_metadata.clone(),
            n,
            false,
        )
    }

    /// Delivers the close of a gRPC call or stream with its status. A
    /// stream's token stays valid until the guest has closed it too
    /// (`proxy_grpc_close`), as in Envoy.
    pub fn on_grpc_close(
        &mut self,
        token: Token,
        status: u32,
        message: &str,
    ) -> Result<(), VmError> {
        self.reject_remote_closed(token)?;
        let mut finished = true;
        if let Some(call) = self.store.data_mut().callouts.get_mut(&token.0) {
            // Envoy keeps a stream the guest has not closed until it does
            // (a `proxy_grpc_close` from now on releases it).
            finished = call.kind != CalloutKind::GrpcStream || call.local_closed;
            call.remote_closed = true;
            let root = call.root;
            self.set_status(root, status, message.as_bytes());
        }
        self.grpc_event(
            token,
            "proxy_on_grpc_close",
            self.funcs.grpc_close.clone(),
            status as i32,
            finished,
        )
    }

    /// Shuts the root context down: `proxy_on_done(root)`; if it returns
    /// true, `proxy_on_delete(root)`. Returns false if the guest deferred its
    /// deletion (it will call `proxy_done`).
    pub fn shutdown(&mut self) -> Result<bool, VmError> {
        self.alive()?;
        let root = self.root;
        let done = match self.funcs.done.clone() {
            Some(f) => self.call("proxy_on_done", f, root, Phase::Callback, root.0 as i32)? != 0,
            None => true,
        };
        if done {
            if let Some(f) = self.funcs.delete.clone() {
                self.call("proxy_on_delete", f, root, Phase::Callback, root.0 as i32)?;
            }
            self.store.data_mut().contexts.remove(&root.0);
        } else if let Some(r) = self.store.data_mut().root_mut(root) {
            r.pending_done = true;
        }
        Ok(done)
    }
}

/// Envoy's translation of a header callback's result (ABI reference §11.1).
pub fn translate_headers(
    raw: u32,
    stop_next: bool,
    allow_stop_iteration: bool,
) -> FilterHeadersStatus {
    if stop_next || raw > 4 {
        return FilterHeadersStatus::StopAllIterationAndWatermark;
    }
    match raw {
        1 if allow_stop_iteration => FilterHeadersStatus::StopIteration,
        1 => FilterHeadersStatus::StopAllIterationAndWatermark,
        3 => FilterHeadersStatus::StopAllIterationAndBuffer,
        4 => FilterHeadersStatus::StopAllIterationAndWatermark,
        // 2 (ContinueAndEndStream) reaches Envoy's default case: Continue.
        _ => FilterHeadersStatus::Continue,
    }
}

/// Envoy's translation of a body callback's result.
pub fn translate_data(raw: u32, stop_next: bool) -> FilterDataStatus {
    if stop_next || raw > 3 {
        return FilterDataStatus::StopIterationNoBuffer;
    }
    FilterDataStatus::try_from(raw).unwrap_or(FilterDataStatus::StopIterationNoBuffer)
}

/// Envoy's translation of a trailers callback's result.
pub fn translate_trailers(raw: u32, stop_next: bool) -> FilterTrailersStatus {
    if stop_next || raw > 1 {
        return FilterTrailersStatus::StopIteration;
    }
    FilterTrailersStatus::try_from(raw).unwrap_or(FilterTrailersStatus::StopIteration)
}

/// The export `name` with this signature, or `None`. Looks the export up
/// with `get_func` first: a missing export is common, and
/// `get_typed_func`'s error would capture a backtrace (costly when
/// `RUST_BACKTRACE` is set).
fn export<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Option<TypedFunc<P, R>> {
    instance
        .get_func(&mut *store, name)
        .and_then(|f| f.typed(&*store).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_translation_matches_envoy() {
        use FilterHeadersStatus::*;
        assert_eq!(translate_headers(0, false, false), Continue);
        assert_eq!(
            translate_headers(1, false, false),
            StopAllIterationAndWatermark
        );
        assert_eq!(translate_headers(1, false, true), StopIteration);
        assert_eq!(translate_headers(2, false, false), Continue);
        assert_eq!(
            translate_headers(3, false, false),
            StopAllIterationAndBuffer
        );
        assert_eq!(
            translate_headers(4, false, false),
            StopAllIterationAndWatermark
        );
        assert_eq!(
            translate_headers(99, false, false),
            StopAllIterationAndWatermark
        );
        assert_eq!(
            translate_headers(0, true, false),
            StopAllIterationAndWatermark
        );
    }

    #[test]
    fn data_and_trailer_translation_matches_envoy() {
        assert_eq!(translate_data(0, false), FilterDataStatus::Continue);
        assert_eq!(
            translate_data(1, false),
            FilterDataStatus::StopIterationAndBuffer
        );
        assert_eq!(
            translate_data(4, false),
            FilterDataStatus::StopIterationNoBuffer
        );
        assert_eq!(
            translate_data(0, true),
            FilterDataStatus::StopIterationNoBuffer
        );
        assert_eq!(translate_trailers(0, false), FilterTrailersStatus::Continue);
        assert_eq!(
            translate_trailers(2, false),
            FilterTrailersStatus::StopIteration
        );
        assert_eq!(
            translate_trailers(0, true),
            FilterTrailersStatus::StopIteration
        );
    }
}
