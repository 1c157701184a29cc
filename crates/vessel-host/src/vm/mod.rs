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
//! [`TrapKind::Limit`](crate::TrapKind::Limit), naming the limit and the
//! callback; other VMs carry on. Callbacks the plugin's
//! [`allowed_capabilities`](crate::PluginConfig::allowed_capabilities) do
//! not allow are treated as not exported (ABI reference §6.5).
//!
//! The code is split by job:
//!
//! * `mod.rs`: the [`Vm`] type and its accessors;
//! * `lifecycle.rs`: instantiation, start-up, traps and failure, shutdown;
//! * `callbacks.rs`: the one table of guest callbacks (name, signature,
//!   slot), also used by [`Plugin::load`](crate::Plugin::load) to check
//!   exports, and the one path that calls them (a fresh per-callback
//!   frame, the CPU budget, trap handling);
//! * `stream.rs`: the HTTP stream API (contexts, header, body and trailer
//!   callbacks, the maps and bodies the host holds, the end of a stream);
//! * `tcp.rs`: the TCP stream API (network-filter contexts, connection
//!   and data callbacks, the data buffers, the end of a connection);
//! * `callouts.rs`: root-context events (HTTP, gRPC and Redis answers,
//!   ticks, queues, foreign functions).

pub(crate) mod callbacks;
mod callouts;
mod lifecycle;
mod stream;
mod tcp;

use wasmtime::{Instance, Store, TypedFunc, WasmParams, WasmResults};

use crate::effects::Effect;
use crate::error::VmError;
use crate::ids::{ContextId, VmInstanceId};
use crate::plugin::Plugin;
use crate::state::{Context, HostState, HttpContext};

use callbacks::Funcs;
pub use callouts::{HttpCallOutcome, HttpCallResponse, RedisCallOutcome};
pub use stream::{translate_data, translate_headers, translate_trailers};

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

pub(super) fn len_i32(n: usize) -> i32 {
    u32::try_from(n).unwrap_or(u32::MAX) as i32
}

impl Vm {
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
    pub(super) fn alive(&self) -> Result<(), VmError> {
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
        self.store.data().log.dropped_lines
    }

    /// The bytes of those dropped lines.
    pub fn dropped_log_bytes(&self) -> u64 {
        self.store.data().log.dropped_bytes
    }

    /// Calls of hostcalls that the plugin's
    /// [`allowed_capabilities`](crate::PluginConfig::allowed_capabilities)
    /// do not allow (each got its stub's answer), since the VM started.
    pub fn denied_capability_calls(&self) -> u64 {
        self.store.data().denied_calls
    }

    /// Writes (add, replace, remove, set pairs, set property) to a header
    /// or property the plugin's [`Hidden`](crate::Hidden) hides, each
    /// ignored, since the VM started. The first of each stream is logged
    /// at warn level (target `vessel::hidden`).
    pub fn hidden_writes(&self) -> u64 {
        self.store.data().hidden_writes
    }

    /// Number of callouts in flight.
    pub fn callouts_in_flight(&self) -> usize {
        self.store.data().callouts.in_flight.len()
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

    /// The effects queued so far, to take some and leave the rest (the
    /// filter manager takes a stream's own signals this way). Call
    /// [`Vm::recount_effects`] after taking some.
    pub(crate) fn effects_mut(&mut self) -> &mut Vec<Effect> {
        &mut self.store.data_mut().effects
    }

    /// Recounts what the queued effects hold after some were taken through
    /// [`Vm::effects_mut`].
    pub(crate) fn recount_effects(&mut self) {
        self.store.data_mut().recount_effects();
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

    pub(super) fn http(&self, ctx: ContextId) -> Result<&HttpContext, VmError> {
        match self.store.data().contexts.get(&ctx.0) {
            Some(Context::Http(h)) => Ok(h),
            Some(_) => Err(VmError::WrongContextKind(ctx, "an HTTP stream")),
            None => Err(VmError::UnknownContext(ctx)),
        }
    }

    pub(super) fn http_mut(&mut self, ctx: ContextId) -> Result<&mut HttpContext, VmError> {
        match self.store.data_mut().contexts.get_mut(&ctx.0) {
            Some(Context::Http(h)) => Ok(h),
            Some(_) => Err(VmError::WrongContextKind(ctx, "an HTTP stream")),
            None => Err(VmError::UnknownContext(ctx)),
        }
    }
}

/// The export `name` with this signature, or `None`. Looks the export up
/// with `get_func` first: a missing export is common, and
/// `get_typed_func`'s error would capture a backtrace (costly when
/// `RUST_BACKTRACE` is set).
pub(super) fn export<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Option<TypedFunc<P, R>> {
    instance
        .get_func(&mut *store, name)
        .and_then(|f| f.typed(&*store).ok())
}
