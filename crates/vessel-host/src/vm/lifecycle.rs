//! A [`Vm`]'s life: instantiation and start-up, traps and failure, and
//! the root context's shutdown.

use std::sync::Arc;

use wasmtime::{Instance, Store, Trap, TypedFunc, WasmBacktrace, WasmParams, WasmResults};

use super::callbacks::{Funcs, OnConfigure, OnContextCreate, OnDelete, OnDone, OnVmStart};
use super::{Vm, export, len_i32};
use crate::env::HostEnv;
use crate::error::{InstantiateError, TrapError, TrapKind, VmError};
use crate::hostcalls::capabilities;
use crate::ids::ContextId;
use crate::limits::{LimitExceeded, VmLimiter};
use crate::plugin::{Plugin, enforceable};
use crate::state::{Context, HostState, Phase};
use crate::wasi::ProcExit;

/// True for the start-up functions: the module's own (run with
/// [`Phase::Start`]) and the plugin's `proxy_on_vm_start` and
/// `proxy_on_configure`, which run under
/// [`Limits::startup_timeout`](crate::Limits::startup_timeout) too.
fn is_startup(callback: &str) -> bool {
    matches!(
        callback,
        "_initialize"
            | "_start"
            | "main"
            | "__main_void"
            | "proxy_on_vm_start"
            | "proxy_on_configure"
    )
}

/// An epoch deadline that never comes (far from overflowing wasmtime's
/// `current + ticks`).
const NO_DEADLINE: u64 = u64::MAX / 2;

impl Vm {
    /// Instantiates `plugin`, runs start-up and configures the root context.
    pub fn new(plugin: &Plugin, env: &HostEnv) -> Result<Self, VmError> {
        let name = plugin.config().name.clone();
        let instantiate_error = |source: InstantiateError| VmError::Instantiate {
            plugin: name.clone(),
            source,
        };
        enforceable(&plugin.engine, plugin.config())
            .map_err(|limit| instantiate_error(limit.into()))?;
        let pre = plugin
            .pre
            .as_ref()
            .map_err(|e| instantiate_error(InstantiateError::Link(Box::new(e.clone()))))?;
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
        // The plugin's tier decides the wasmtime engine (Winch or Cranelift).
        let mut store = Store::new(plugin.module.engine(), state);
        store.limiter(|s| s);
        // A wasm start function runs during instantiation.
        if let Some(ticks) = startup_ticks {
            store.set_epoch_deadline(ticks);
        }
        if let Some(fuel) = fuel {
            store
                .set_fuel(fuel)
                .map_err(|e| instantiate_error(InstantiateError::Wasmtime(e.into())))?;
        }
        let instance = pre.instantiate(&mut store).map_err(|e| {
            let pool_full = e
                .chain()
                .any(|c| c.is::<wasmtime::PoolConcurrencyLimitError>());
            let source = match (store.data().frame.memory_refused, &engine.pooling) {
                (Some((limit_bytes, requested_bytes)), _) => InstantiateError::Memory {
                    limit: LimitExceeded::Memory {
                        limit_bytes,
                        requested_bytes,
                    },
                    source: e.into(),
                },
                (None, Some(pool)) if pool_full => InstantiateError::PoolFull {
                    max_vms: pool.max_vms,
                    source: e.into(),
                },
                (None, _) => InstantiateError::Wasmtime(e.into()),
            };
            instantiate_error(source)
        })?;
        let memory = instance.get_memory(&mut store, "memory");
        let allocator = export::<i32, i32>(&instance, &mut store, "malloc")
            .or_else(|| export::<i32, i32>(&instance, &mut store, "proxy_on_memory_allocate"));
        store.data_mut().memory = memory;
        store.data_mut().allocator = allocator;
        let funcs = Funcs::resolve(
            &instance,
            &mut store,
            plugin.abi_version(),
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
            self.call_start("_initialize", &init, ())?;
            let store = &mut self.store;
            if let Some(main) = export::<(i32, i32), i32>(instance, store, "main") {
                self.call_start("main", &main, (0, 0))?;
            } else if let Some(main) = export::<(), i32>(instance, store, "__main_void") {
                self.call_start("__main_void", &main, ())?;
            }
        } else if let Some(start) = export::<(), ()>(instance, store, "_start") {
            self.call_start("_start", &start, ())?;
        }
        Ok(())
    }

    fn call_start<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &'static str,
        f: &TypedFunc<P, R>,
        args: P,
    ) -> Result<(), VmError> {
        match self.call_func(name, f, ContextId(0), Phase::Start, args) {
            Ok(_) => Ok(()),
            Err(VmError::Trap(t)) if matches!(t.kind, TrapKind::ProcExit(0)) => {
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
            .insert(root.0, Context::Root(Box::default()));
        let root_id = root.0 as i32;
        self.call::<OnContextCreate>(root, Phase::Callback, (root_id, 0))?;
        let config = self.plugin.config();
        let (vm_len, cfg_len) = (
            len_i32(config.vm_configuration.len()),
            len_i32(config.configuration.len()),
        );
        if self.call::<OnVmStart>(root, Phase::VmStart, (root_id, vm_len))? == Some(0) {
            return Err(VmError::VmStartRefused {
                plugin: self.plugin.config().name.clone(),
            });
        }
        if self.call::<OnConfigure>(root, Phase::Configure, (root_id, cfg_len))? == Some(0) {
            return Err(VmError::ConfigureRefused {
                plugin: self.plugin.config().name.clone(),
            });
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
                .frame
                .memory_refused
                .map(|(limit_bytes, requested_bytes)| LimitExceeded::Memory {
                    limit_bytes,
                    requested_bytes,
                }),
        }
    }

    pub(super) fn fail(&mut self, callback: &'static str, e: wasmtime::Error) -> VmError {
        let trap = e.downcast_ref::<Trap>().copied();
        let backtrace = e.downcast_ref::<WasmBacktrace>().map(ToString::to_string);
        let kind = if let Some(exit) = e.downcast_ref::<ProcExit>() {
            TrapKind::ProcExit(exit.0)
        } else if let Some(limit) = e.downcast_ref::<LimitExceeded>() {
            // A hostcall refused to hold more for the guest.
            TrapKind::Limit(limit.clone())
        } else if let Some(limit) = self.limit_of(callback, trap.as_ref()) {
            TrapKind::Limit(limit)
        } else if let Some(trap) = trap {
            TrapKind::Wasm(trap)
        } else {
            TrapKind::Host(e.into())
        };
        let mut message = match &kind {
            TrapKind::Wasm(t) => t.to_string(),
            TrapKind::Host(h) => h.get().root_cause().to_string(),
            TrapKind::ProcExit(code) => format!("the guest called proc_exit({code})"),
            TrapKind::Limit(limit) => match trap {
                // Out of memory: also say how the guest reacted.
                Some(t) if matches!(limit, LimitExceeded::Memory { .. }) => {
                    format!("{limit}; then: {t}")
                }
                _ => limit.to_string(),
            },
        };
        if let Some(bt) = backtrace {
            message.push('\n');
            message.push_str(&bt);
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

    /// Shuts the root context down: `proxy_on_done(root)`; if it returns
    /// true, `proxy_on_delete(root)`. Returns false if the guest deferred its
    /// deletion (it will call `proxy_done`).
    pub fn shutdown(&mut self) -> Result<bool, VmError> {
        self.alive()?;
        let root = self.root;
        let done = self.call::<OnDone>(root, Phase::Callback, root.0 as i32)? != Some(0);
        if done {
            self.call::<OnDelete>(root, Phase::Callback, root.0 as i32)?;
            self.store.data_mut().remove_context(root);
        } else if let Some(r) = self.store.data_mut().root_mut(root) {
            r.pending_done = true;
        }
        Ok(done)
    }
}
