//! vessel's own WASI preview1 against wasmtime-wasi's, on one wasmtime
//! engine (vessel's default [`Engine`]: pooling allocator, epoch checks) and
//! the same compiled modules. `docs/wasi.md` has the results and the
//! decision.
//!
//! ```text
//! cargo xtask bench wasi           # this bench only (also a step of `cargo xtask bench`)
//! CARGO_TARGET_DIR=target cargo bench --locked --manifest-path benches/wasi/Cargo.toml --bench wasi
//! CARGO_TARGET_DIR=target cargo bench --locked --manifest-path benches/wasi/Cargo.toml --bench wasi -- wasi_call
//! ```
//!
//! Group `wasi_call/<impl>/<call>`: a WAT proxy-wasm module whose
//! `proxy_on_tick` makes [`CALLS`] calls of one WASI function in a loop,
//! trapping on any errno but SUCCESS:
//!
//! * `fd_write`: one 16-byte line to fd 1. vessel passes it to the
//!   plugin's log sink (here one that counts and drops it); wasmtime-wasi
//!   writes it to its default stdout, a null sink;
//! * `clock_time_get`: the MONOTONIC clock (Go's `nanotime`);
//! * `random_get`: 32 bytes;
//! * `empty`: the same loop without a call, the baseline.
//!
//! `wasi_call/wasmtime_wasi/build_p1` is the per-VM cost of wasmtime-wasi's
//! context (built and dropped); vessel's WASI keeps no state of its own.
//!
//! `vessel` runs the tick through [`Vm::on_tick`]; `wasmtime_wasi` calls
//! the export directly on an instance linked by
//! `wasmtime_wasi::p1::add_to_linker_sync`. Per call:
//! `(time(call) - time(empty)) / CALLS`, which cancels the guest entry, as
//! the summary printed at the end shows.
//!
//! Group `wasi_go/<plugin>/<impl>/start`: Go-built Higress plugins (PyPI
//! `gpustack-higress-plugins`, which `cargo xtask bench` downloads into
//! `target/higress/`), a new VM each: instantiation, Go's `_initialize`
//! (the Go runtime's start, the WASI-heaviest part of a Go plugin's life),
//! `proxy_on_context_create`, `proxy_on_vm_start`, `proxy_on_configure`,
//! then dropping the VM.
//!
//! `vessel` is [`Vm::new`] with all of vessel's hostcalls. wasmtime-wasi
//! cannot run these modules unmodified: they import proxy-wasm hostcalls
//! (`env.proxy_*`) besides WASI, and wasmtime-wasi has none. The
//! `wasmtime_wasi` side links wasmtime-wasi's preview1 plus stubs for the
//! `env` imports: `proxy_get_buffer_bytes` serves the plugin configuration,
//! `proxy_get_header_map_pairs` the request headers, other `proxy_get_*`
//! and `proxy_call_foreign_function` answer NOT_FOUND, everything else OK.
//! The start runs the same guest code on both sides; the difference is
//! the WASI calls plus vessel's hostcalls and set-up against the stubs.
//!
//! Besides criterion's two groups, which run one after the other, a paired
//! pass alternates vessel and wasmtime-wasi starts [`PAIRED_ROUNDS`] times
//! and prints both medians and the median difference, which a load that
//! drifts over the run cannot bias.
//!
//! Before timing, a count pass runs one start and [`REQUESTS`] requests
//! (context create, `proxy_on_request_headers`, `on_log`, `on_done`,
//! `on_delete`) on each side, with counting clocks, random sources, log
//! sink (vessel) and memory pipes as stdout and stderr (wasmtime-wasi), and
//! prints how many WASI calls each path makes. The request path is counted,
//! not timed: with stubs in place of vessel's hostcalls the guest does not
//! take the same branches, so a time would compare hostcalls, not WASI.
//!
//! A missing plugin is a printed skip, and a failure under `CI=true`.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    clippy::print_stdout
)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion, SamplingMode};
use vessel_host::{
    CacheConfig, Clock, Engine, EngineConfig, HeaderMap, HostEnv, LogRecord, LogSink, OsRandom,
    Plugin, PluginConfig, Random, Status, SystemClock, Vm,
};
use wasmtime::{Caller, Extern, InstancePre, Linker, Module, Store, Val, ValType};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::clocks::{HostMonotonicClock, HostWallClock, WallClock};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

/// WASI calls per guest entry in `wasi_call`.
const CALLS: u32 = 1_000;

/// An epoch deadline that never comes (vessel's engine checks epochs).
const NO_DEADLINE: u64 = u64::MAX / 2;

// ---- the per-call microbenchmark ------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Empty,
    FdWrite,
    ClockTimeGet,
    RandomGet,
}

impl Call {
    const ALL: [Self; 4] = [
        Self::Empty,
        Self::FdWrite,
        Self::ClockTimeGet,
        Self::RandomGet,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::FdWrite => "fd_write",
            Self::ClockTimeGet => "clock_time_get",
            Self::RandomGet => "random_get",
        }
    }

    /// One call in WAT; any errno but SUCCESS traps.
    fn body(self) -> &'static str {
        match self {
            Self::Empty => "",
            // iovec at 0 = (64, 16); nwritten at 16 must be 16.
            Self::FdWrite => {
                "(if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16))
                   (then unreachable))
                 (if (i32.ne (i32.load (i32.const 16)) (i32.const 16)) (then unreachable))"
            }
            Self::ClockTimeGet => {
                "(if (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 24))
                   (then unreachable))"
            }
            Self::RandomGet => {
                "(if (call $random_get (i32.const 128) (i32.const 32)) (then unreachable))"
            }
        }
    }
}

/// A minimal proxy-wasm (ABI 0.2.1) module whose `proxy_on_tick` makes
/// [`CALLS`] calls of `call`.
fn micro_module(call: Call) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get"
    (func $random_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\40\00\00\00\10\00\00\00")
  (data (i32.const 64) "wasi bench line\n")
  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $n)) (i32.const 65536))
      (then (return (i32.const 0))))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_tick") (param i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.const {CALLS})))
        {body}
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))))"#,
        body = call.body()
    );
    wat::parse_str(text).expect("the microbenchmark module is valid WAT")
}

/// A log sink that counts lines and drops them.
#[derive(Clone, Default)]
struct CountingSink(Arc<AtomicU64>);

impl LogSink for CountingSink {
    fn log(&self, _record: &LogRecord<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Per-entry times (ns) seen by the benchmark routines, for the summary.
#[derive(Default)]
struct Summary(RefCell<BTreeMap<String, Vec<f64>>>);

impl Summary {
    /// Times `iters` runs of `f`, as criterion's `iter_custom`, and keeps the
    /// mean per run under `key`.
    fn iter(&self, b: &mut Bencher<'_>, key: &str, mut f: impl FnMut()) {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            let elapsed = start.elapsed();
            self.0
                .borrow_mut()
                .entry(key.to_owned())
                .or_default()
                .push(elapsed.as_nanos() as f64 / iters.max(1) as f64);
            elapsed
        });
    }

    /// The median of the per-run means under `key`.
    fn median(&self, key: &str) -> Option<f64> {
        let mut v = self.0.borrow().get(key)?.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }
}

fn wasmtime_wasi_ctx() -> WasiP1Ctx {
    // The defaults: stdout and stderr are null sinks, no preopens, the
    // host's clocks and a per-context CSPRNG.
    WasiCtxBuilder::new().build_p1()
}

fn micro(c: &mut Criterion, engine: &Engine, summary: &Summary) {
    let mut group = c.benchmark_group("wasi_call");
    for call in Call::ALL {
        let wasm = micro_module(call);
        let plugin = Plugin::load(engine, &wasm, PluginConfig::named(call.name())).expect("loads");

        // vessel: Vm::on_tick, vessel's WASI.
        let lines = CountingSink::default();
        let env = HostEnv::builder().log_sink(lines.clone()).build();
        let mut vm = Vm::new(&plugin, &env).expect("starts");
        vm.on_tick().expect("vessel: every call succeeds");
        let expected = if call == Call::FdWrite { CALLS } else { 0 };
        assert_eq!(
            lines.0.load(Ordering::Relaxed),
            u64::from(expected),
            "vessel: every fd_write reached the log sink"
        );
        let key = format!("vessel/{}", call.name());
        group.bench_function(&key, |b| {
            summary.iter(b, &key, || vm.on_tick().expect("tick"));
        });

        // wasmtime-wasi: the export, called directly.
        let mut linker = Linker::<WasiP1Ctx>::new(engine.wasmtime());
        p1::add_to_linker_sync(&mut linker, |t| t).expect("wasmtime-wasi links");
        let pre = linker.instantiate_pre(plugin.module()).expect("links");
        if call == Call::FdWrite {
            // Check once that the lines arrive, on a memory pipe.
            let out = MemoryOutputPipe::new(1 << 20);
            let mut store = Store::new(
                engine.wasmtime(),
                WasiCtxBuilder::new().stdout(out.clone()).build_p1(),
            );
            store.set_epoch_deadline(NO_DEADLINE);
            let instance = pre.instantiate(&mut store).expect("instantiates");
            let tick = instance
                .get_typed_func::<i32, ()>(&mut store, "proxy_on_tick")
                .expect("exported");
            tick.call(&mut store, 1)
                .expect("wasmtime-wasi: every call succeeds");
            drop(store);
            assert_eq!(
                out.contents(),
                b"wasi bench line\n".repeat(CALLS as usize),
                "wasmtime-wasi: every fd_write reached stdout"
            );
        }
        let mut store = Store::new(engine.wasmtime(), wasmtime_wasi_ctx());
        store.set_epoch_deadline(NO_DEADLINE);
        let instance = pre.instantiate(&mut store).expect("instantiates");
        let tick = instance
            .get_typed_func::<i32, ()>(&mut store, "proxy_on_tick")
            .expect("exported");
        tick.call(&mut store, 1)
            .expect("wasmtime-wasi: every call succeeds");
        let key = format!("wasmtime_wasi/{}", call.name());
        group.bench_function(&key, |b| {
            summary.iter(b, &key, || tick.call(&mut store, 1).expect("tick"));
        });
    }
    // wasmtime-wasi's per-store state, which every VM needs; vessel's WASI
    // has none beyond the VM's own.
    let key = "wasmtime_wasi/build_p1";
    group.bench_function(key, |b| {
        summary.iter(b, key, || drop(wasmtime_wasi_ctx()));
    });
    group.finish();
}

// ---- Go plugins -------------------------------------------------------------

/// Plugin directory and a configuration from its documentation.
const GO_PLUGINS: &[(&str, &str)] = &[
    (
        "transformer",
        r#"{"reqRules":[{"operate":"add","headers":[{"key":"x-add","value":"1"}]}]}"#,
    ),
    (
        "gpustack-ai-proxy",
        r#"{"provider":{"type":"openai","apiTokens":["sk-bench"]}}"#,
    ),
];

/// The vessel repository.
fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// `target/higress/.../plugins/<name>/<version>/plugin.wasm`, if downloaded.
fn go_plugin(name: &str) -> Result<Vec<u8>, String> {
    let dir = root()
        .join("target/higress/gpustack_higress_plugins/plugins")
        .join(name);
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|mut versions| versions.find_map(|v| v.ok()))
        .and_then(|v| std::fs::read(v.path().join("plugin.wasm")).ok())
        .ok_or_else(|| {
            format!(
                "missing {}/<version>/plugin.wasm; `cargo xtask bench` (or `cargo xtask go-plugins`) downloads it from PyPI (gpustack-higress-plugins==0.5.1)",
                dir.display()
            )
        })
}

fn request_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        (":method", "GET"),
        (":path", "/api/v1/items?limit=10"),
        (":authority", "example.com"),
        (":scheme", "http"),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("x-bench", "1"),
    ]
}

/// Counters for the one-off count pass, shared by the counting clock,
/// random source and log sink of either side.
#[derive(Clone, Default)]
struct Counts {
    wall: Arc<AtomicU64>,
    monotonic: Arc<AtomicU64>,
    random: Arc<AtomicU64>,
    random_bytes: Arc<AtomicU64>,
    /// vessel: log lines at INFO or ERROR, which is where WASI stdout and
    /// stderr go, and where `proxy_log` lines of those levels go too.
    log_lines: Arc<AtomicU64>,
}

impl Counts {
    /// A vessel environment whose clock, random source and log sink count.
    fn vessel_env(&self) -> HostEnv {
        HostEnv::builder()
            .clock(CountingClock(self.clone()))
            .random(CountingRandom(self.clone()))
            .log_sink(CountingLogs(self.clone()))
            .build()
    }

    /// A wasmtime-wasi context whose clocks and random source count (its
    /// defaults, wrapped), with memory pipes as stdout and stderr.
    fn wasmtime_wasi_ctx(&self, stdout: &MemoryOutputPipe, stderr: &MemoryOutputPipe) -> WasiP1Ctx {
        WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(CountingClock(self.clone()))
            .monotonic_clock(CountingClock(self.clone()))
            .secure_random(CountingRng {
                inner: wasmtime_wasi::random::thread_rng(),
                counts: self.clone(),
            })
            .build_p1()
    }

    /// Clock reads (REALTIME, MONOTONIC), random_get calls and bytes, log
    /// lines; each reset to 0.
    fn take(&self) -> [u64; 5] {
        [
            &self.wall,
            &self.monotonic,
            &self.random,
            &self.random_bytes,
            &self.log_lines,
        ]
        .map(|c| c.swap(0, Ordering::Relaxed))
    }
}

struct CountingClock(Counts);

impl Clock for CountingClock {
    fn wall_nanos(&self) -> u64 {
        self.0.wall.fetch_add(1, Ordering::Relaxed);
        SystemClock.wall_nanos()
    }
    fn monotonic_nanos(&self) -> u64 {
        self.0.monotonic.fetch_add(1, Ordering::Relaxed);
        SystemClock.monotonic_nanos()
    }
}

impl HostWallClock for CountingClock {
    fn resolution(&self) -> Duration {
        WallClock::new().resolution()
    }
    fn now(&self) -> Duration {
        self.0.wall.fetch_add(1, Ordering::Relaxed);
        WallClock::new().now()
    }
}

impl HostMonotonicClock for CountingClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.monotonic.fetch_add(1, Ordering::Relaxed);
        SystemClock.monotonic_nanos()
    }
}

struct CountingRandom(Counts);

impl Random for CountingRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), Status> {
        self.0.random.fetch_add(1, Ordering::Relaxed);
        self.0
            .random_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        OsRandom.fill(buf)
    }
}

/// wasmtime-wasi's default CSPRNG, counting the bytes it gives. Its
/// `random_get` draws one value per byte (`random_iter().take(len)`), so
/// the calls themselves are not counted on this side.
struct CountingRng {
    inner: Box<dyn rand_core::Rng + Send>,
    counts: Counts,
}

impl rand_core::TryRng for CountingRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        self.counts.random_bytes.fetch_add(1, Ordering::Relaxed);
        Ok(self.inner.next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.counts.random_bytes.fetch_add(1, Ordering::Relaxed);
        Ok(self.inner.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.counts
            .random_bytes
            .fetch_add(dst.len() as u64, Ordering::Relaxed);
        self.inner.fill_bytes(dst);
        Ok(())
    }
}

struct CountingLogs(Counts);

impl LogSink for CountingLogs {
    fn log(&self, record: &LogRecord<'_>) {
        if matches!(
            record.level,
            vessel_host::LogLevel::Info | vessel_host::LogLevel::Error
        ) {
            self.0.log_lines.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The store data of the wasmtime-wasi side: WASI plus what the proxy-wasm
/// stubs serve.
struct Stub {
    wasi: WasiP1Ctx,
    vm_configuration: Vec<u8>,
    configuration: Vec<u8>,
    request_headers: Vec<(&'static str, &'static str)>,
    /// `proxy_log` calls, counted in the count pass.
    proxy_logs: u64,
}

/// proxy-wasm status codes used by the stubs.
const OK: i32 = 0;
const NOT_FOUND: i32 = 1;

/// Copies `bytes` into guest memory allocated by the guest's allocator and
/// writes the address and length to the out-parameters.
fn give(
    caller: &mut Caller<'_, Stub>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_len: i32,
) -> wasmtime::Result<i32> {
    let len = i32::try_from(bytes.len())?;
    let ptr = if bytes.is_empty() {
        0
    } else {
        let alloc = caller
            .get_export("malloc")
            .or_else(|| caller.get_export("proxy_on_memory_allocate"))
            .and_then(Extern::into_func)
            .ok_or_else(|| wasmtime::format_err!("no allocator export"))?
            .typed::<i32, i32>(&*caller)?;
        alloc.call(&mut *caller, len)?
    };
    let memory = caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| wasmtime::format_err!("no memory export"))?;
    let at = |p: i32| p as u32 as usize;
    memory.write(&mut *caller, at(ptr), bytes)?;
    memory.write(&mut *caller, at(ret_ptr), &(ptr as u32).to_le_bytes())?;
    memory.write(&mut *caller, at(ret_len), &(len as u32).to_le_bytes())?;
    Ok(OK)
}

/// proxy-wasm's header map serialization (ABI reference §8).
fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// wasmtime-wasi's preview1 plus stubs for every `env` import of `module`.
fn stub_linker(engine: &wasmtime::Engine, module: &Module) -> wasmtime::Result<Linker<Stub>> {
    let mut linker = Linker::<Stub>::new(engine);
    p1::add_to_linker_sync(&mut linker, |s: &mut Stub| &mut s.wasi)?;
    let special = [
        "proxy_get_buffer_bytes",
        "proxy_get_header_map_pairs",
        "proxy_log",
    ];
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_, Stub>,
         ty: i32,
         start: i32,
         max: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            // BufferType 6 = VmConfiguration, 7 = PluginConfiguration.
            let bytes = match ty {
                6 => c.data().vm_configuration.clone(),
                7 => c.data().configuration.clone(),
                _ => return Ok(NOT_FOUND),
            };
            let start = (start as u32 as usize).min(bytes.len());
            let end = start.saturating_add(max as u32 as usize).min(bytes.len());
            give(&mut c, &bytes[start..end], ret_ptr, ret_len)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_, Stub>, ty: i32, ret_ptr: i32, ret_len: i32| -> wasmtime::Result<i32> {
            // MapType 0 = request headers; every other map is empty.
            let pairs = if ty == 0 {
                serialize(&c.data().request_headers)
            } else {
                serialize(&[])
            };
            give(&mut c, &pairs, ret_ptr, ret_len)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: Caller<'_, Stub>, _level: i32, _ptr: i32, _len: i32| -> i32 {
            c.data_mut().proxy_logs += 1;
            OK
        },
    )?;
    for import in module.imports() {
        let (m, name) = (import.module(), import.name());
        if m != "env" || special.contains(&name) {
            continue;
        }
        let Some(ty) = import.ty().func().cloned() else {
            wasmtime::bail!("import {m}.{name} is not a function");
        };
        let status = if name.starts_with("proxy_get_") || name == "proxy_call_foreign_function" {
            NOT_FOUND
        } else {
            OK
        };
        let results: Vec<ValType> = ty.results().collect();
        linker.func_new(m, name, ty, move |_, _, out| {
            for (slot, ty) in out.iter_mut().zip(&results) {
                *slot = match ty {
                    ValType::I32 => Val::I32(status),
                    ValType::I64 => Val::I64(0),
                    _ => wasmtime::bail!("unexpected result type of a stub"),
                };
            }
            Ok(())
        })?;
    }
    Ok(linker)
}

/// One guest started on wasmtime-wasi with the stubs: `_initialize`, then
/// the root context as vessel's `Vm::new` does it.
struct StubVm {
    store: Store<Stub>,
    instance: wasmtime::Instance,
    next_ctx: i32,
}

const ROOT: i32 = 1;

impl StubVm {
    fn start(
        pre: &InstancePre<Stub>,
        wasi: WasiP1Ctx,
        configuration: &[u8],
    ) -> wasmtime::Result<Self> {
        let engine = pre.module().engine();
        let mut store = Store::new(
            engine,
            Stub {
                wasi,
                vm_configuration: Vec::new(),
                configuration: configuration.to_vec(),
                request_headers: request_headers(),
                proxy_logs: 0,
            },
        );
        store.set_epoch_deadline(NO_DEADLINE);
        let instance = pre.instantiate(&mut store)?;
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call(&mut store, ())?;
        }
        let mut vm = Self {
            store,
            instance,
            next_ctx: ROOT + 1,
        };
        vm.call::<(i32, i32), ()>("proxy_on_context_create", (ROOT, 0))?;
        let ok = vm.call::<(i32, i32), i32>("proxy_on_vm_start", (ROOT, 0))?;
        wasmtime::ensure!(ok != 0, "proxy_on_vm_start refused");
        let len = i32::try_from(configuration.len())?;
        let ok = vm.call::<(i32, i32), i32>("proxy_on_configure", (ROOT, len))?;
        wasmtime::ensure!(ok != 0, "proxy_on_configure refused");
        Ok(vm)
    }

    fn call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
        args: P,
    ) -> wasmtime::Result<R> {
        let f = self
            .instance
            .get_typed_func::<P, R>(&mut self.store, name)?;
        f.call(&mut self.store, args)
    }

    /// One request: what vessel's `create_http_context`,
    /// `on_request_headers` and `finish_http_stream` call.
    fn request(&mut self) -> wasmtime::Result<()> {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        let n = i32::try_from(self.store.data().request_headers.len())?;
        self.call::<(i32, i32), ()>("proxy_on_context_create", (ctx, ROOT))?;
        self.call::<(i32, i32, i32), i32>("proxy_on_request_headers", (ctx, n, 1))?;
        self.call::<i32, ()>("proxy_on_log", ctx)?;
        self.call::<i32, i32>("proxy_on_done", ctx)?;
        self.call::<i32, ()>("proxy_on_delete", ctx)?;
        Ok(())
    }
}

fn vessel_request(vm: &mut Vm, headers: &HeaderMap) {
    let ctx = vm.create_http_context().expect("context");
    vm.on_request_headers(ctx, headers.clone(), true)
        .expect("request headers");
    vm.finish_http_stream(ctx).expect("finish");
}

/// Requests in the count pass.
const REQUESTS: u32 = 1_000;

/// Counts the WASI calls of one start and of [`REQUESTS`] requests (GET,
/// seven headers), on vessel and on wasmtime-wasi with the stubs, and
/// prints them.
fn count_calls(name: &str, plugin: &Plugin, pre: &InstancePre<Stub>, configuration: &[u8]) {
    let show = |side: &str, path: &str, [wall, mono, random, bytes, _logs]: [u64; 5], out: &str| {
        let random = if side == "vessel" {
            format!("{random} calls, {bytes} B")
        } else {
            format!("{bytes} B")
        };
        eprintln!(
            "wasi_go/{name}: {path:<13} {side:<13}: clock reads {mono} MONOTONIC + {wall} REALTIME, \
             random_get {random}, {out}"
        );
    };
    let counts = Counts::default();
    let env = counts.vessel_env();
    let mut vm = Vm::new(plugin, &env).expect("starts");
    let lines = |n: u64| format!("{n} log lines at INFO or ERROR (fd_write 1, 2 or proxy_log)");
    let c = counts.take();
    show("vessel", "start", c, &lines(c[4]));
    let headers = HeaderMap::from_pairs(request_headers());
    for _ in 0..REQUESTS {
        vessel_request(&mut vm, &headers);
    }
    let c = counts.take();
    show("vessel", &format!("{REQUESTS} requests"), c, &lines(c[4]));

    let (stdout, stderr) = (
        MemoryOutputPipe::new(1 << 20),
        MemoryOutputPipe::new(1 << 20),
    );
    let wasi = counts.wasmtime_wasi_ctx(&stdout, &stderr);
    let mut stub = StubVm::start(pre, wasi, configuration)
        .expect("the plugin starts on wasmtime-wasi with the stubs");
    let written = |logs: u64| {
        format!(
            "fd_write {} B to stdout, {} B to stderr; proxy_log {logs}",
            stdout.contents().len(),
            stderr.contents().len()
        )
    };
    let logs = std::mem::take(&mut stub.store.data_mut().proxy_logs);
    show("wasmtime_wasi", "start", counts.take(), &written(logs));
    for _ in 0..REQUESTS {
        stub.request()
            .expect("a request runs on wasmtime-wasi with the stubs");
    }
    let logs = std::mem::take(&mut stub.store.data_mut().proxy_logs);
    show(
        "wasmtime_wasi",
        &format!("{REQUESTS} requests"),
        counts.take(),
        &written(logs),
    );
}

/// Rounds of the paired start measurement.
const PAIRED_ROUNDS: u32 = 200;

/// Starts (and drops) a VM on each side in turn, [`PAIRED_ROUNDS`] times,
/// alternating which goes first, and prints the medians: unlike two
/// criterion runs one after the other, load that changes over time on a
/// shared machine falls on both sides alike.
fn paired_start(name: &str, plugin: &Plugin, pre: &InstancePre<Stub>, configuration: &[u8]) {
    let env = HostEnv::builder().log_sink(CountingSink::default()).build();
    let vessel = || {
        let t = Instant::now();
        drop(Vm::new(plugin, &env).expect("starts"));
        t.elapsed()
    };
    let wasmtime_wasi = || {
        let t = Instant::now();
        drop(StubVm::start(pre, wasmtime_wasi_ctx(), configuration).expect("starts"));
        t.elapsed()
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..PAIRED_ROUNDS {
        if round % 2 == 0 {
            a.push(vessel());
            b.push(wasmtime_wasi());
        } else {
            b.push(wasmtime_wasi());
            a.push(vessel());
        }
    }
    let diffs: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(a, b)| b.as_secs_f64() - a.as_secs_f64())
        .collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e6
    };
    let secs = |v: &[Duration]| v.iter().map(Duration::as_secs_f64).collect::<Vec<_>>();
    println!(
        "wasi_go/{name}: paired start, {PAIRED_ROUNDS} rounds: vessel {:.0} us, wasmtime_wasi {:.0} us, \
         median of (wasmtime_wasi - vessel) {:+.0} us",
        median(secs(&a)),
        median(secs(&b)),
        median(diffs)
    );
}

fn go(c: &mut Criterion, engine: &Engine, summary: &Summary) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    for &(name, configuration) in GO_PLUGINS {
        let wasm = match go_plugin(name) {
            Ok(wasm) => wasm,
            Err(missing) if ci => panic!("wasi_go/{name}: CI=true and {missing}"),
            Err(missing) => {
                eprintln!("wasi_go/{name}: skipped: {missing}");
                continue;
            }
        };
        let config = PluginConfig {
            configuration: configuration.as_bytes().to_vec(),
            ..PluginConfig::named(name)
        };
        let plugin = Plugin::load(engine, &wasm, config).expect("loads");
        let linker = stub_linker(engine.wasmtime(), plugin.module()).expect("stubs link");
        let pre = linker
            .instantiate_pre(plugin.module())
            .expect("wasmtime-wasi and the stubs link every import");
        count_calls(name, &plugin, &pre, configuration.as_bytes());
        paired_start(name, &plugin, &pre, configuration.as_bytes());

        let env = HostEnv::builder().log_sink(CountingSink::default()).build();
        let mut group = c.benchmark_group(format!("wasi_go/{name}"));
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(5));
        let key = format!("{name}/vessel/start");
        group.bench_function("vessel/start", |b| {
            summary.iter(b, &key, || drop(Vm::new(&plugin, &env).expect("starts")));
        });
        let key = format!("{name}/wasmtime_wasi/start");
        group.bench_function("wasmtime_wasi/start", |b| {
            summary.iter(b, &key, || {
                let vm = StubVm::start(&pre, wasmtime_wasi_ctx(), configuration.as_bytes());
                drop(vm.expect("starts"));
            });
        });
        group.finish();
    }
}

// ---- summary -----------------------------------------------------------------

fn print_summary(summary: &Summary) {
    let calls = f64::from(CALLS);
    let mut lines = Vec::new();
    for imp in ["vessel", "wasmtime_wasi"] {
        let Some(empty) = summary.median(&format!("{imp}/empty")) else {
            continue;
        };
        lines.push(format!(
            "wasi_call {imp:<13} guest entry + {CALLS} empty loop rounds: {empty:>7.0} ns"
        ));
        for call in Call::ALL.into_iter().filter(|c| *c != Call::Empty) {
            if let Some(t) = summary.median(&format!("{imp}/{}", call.name())) {
                lines.push(format!(
                    "wasi_call {imp:<13} {:<15} {:>7.1} ns per call",
                    call.name(),
                    (t - empty) / calls
                ));
            }
        }
    }
    if let Some(t) = summary.median("wasmtime_wasi/build_p1") {
        lines.push(format!(
            "wasi_call wasmtime_wasi WasiCtxBuilder::new().build_p1() and drop: {t:>7.0} ns per VM"
        ));
    }
    for &(name, _) in GO_PLUGINS {
        for imp in ["vessel", "wasmtime_wasi"] {
            if let Some(t) = summary.median(&format!("{name}/{imp}/start")) {
                lines.push(format!(
                    "wasi_go   {name:<18} {imp:<13} start {:>7.0} us",
                    t / 1000.0
                ));
            }
        }
    }
    println!("\n==> WASI summary (medians of criterion's samples)");
    for line in lines {
        println!("{line}");
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let cache_dir = root().join("target/tmp/wasi-bench-module-cache");
    let engine = Engine::new(EngineConfig {
        cache: CacheConfig::in_dir(&cache_dir),
        ..EngineConfig::default()
    })
    .expect("engine");
    let summary = Summary::default();
    micro(&mut c, &engine, &summary);
    go(&mut c, &engine, &summary);
    c.final_summary();
    print_summary(&summary);
}
