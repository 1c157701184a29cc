//! The `hostcalls` oracle: every import of
//! [`import_table`] called with arbitrary
//! `(ptr, len, enum)` arguments from a real guest, through a real [`Vm`] (ABI reference §4,
//! §5.3, §7, §11.20).
//!
//! # The guest
//!
//! [`guest_wat`] generates one module from the import table: it imports every function
//! vessel provides and exports every callback. Each callback runs the same interpreter: it
//! asks the harness for the next operation through `proxy_call_foreign_function` (the
//! control function, [`CONTROL_NAME`]), executes it and reports its result with the next
//! request. An operation is either a call of one import, with up to 12 arguments taken from
//! the fuzz input, or one of a few guest-side operations: set the callback's return value,
//! change the allocator's behaviour (bump, a fixed pointer, trap, call a hostcall the
//! allocator may not call, call one it may call), or store 8 bytes in its own memory.
//!
//! The guest memory is 4 pages: a control scratch area, an area for out-parameters, a data
//! segment with useful arguments (a cluster name, pair maps, property paths, an iovec, ...)
//! and a heap for the allocator. Every control request rewrites what it reads, so whatever a
//! fuzzed call writes cannot derail the interpreter.
//!
//! # The harness
//!
//! [`HostcallInput`] is a list of *segments* (each a list of operations; each callback the
//! guest runs takes the next segment) and a list of embedder *events* (new stream, headers,
//! bodies, trailers, ticks, callout answers, queue notifications, foreign function calls,
//! end of stream), applied to one [`Vm`] whose plugin configuration, VM configuration,
//! clusters, properties, foreign functions, clock and random source are fixed.
//!
//! # The oracle
//!
//! * Nothing panics.
//! * Every result of every import is one of its documented results
//!   ([`documented`]).
//! * A call either returns or stops the guest with a trap of a known kind: `proc_exit(code)`
//!   gives [`TrapKind::ProcExit(code)`](TrapKind::ProcExit); a trapping allocator gives a wasm
//!   trap; an allocator that calls a restricted hostcall gives a `restricted_callback` host
//!   trap; a call that would make the host hold more than the plugin's (deliberately small,
//!   [`fuzz_limits`]) limits allow gives [`TrapKind::Limit`] naming one of the knobs its
//!   module docs list ([`limit_traps`]). No trap happens outside an operation.
//! * What the guest makes the host hold stays bounded: operations may repeat (up to 64
//!   times in a row, as a guest's loop would), and the effects the VM holds never pass
//!   [`Limits::max_effect_bytes`](vessel_host::Limits::max_effect_bytes).
//! * Body data the harness delivers past the filter's own limit gets
//!   [`VmError::StreamLimit`] and the VM carries on.
//! * After a trap the VM stays failed with the same error; other embedder errors are the
//!   typed ones the call can give.
//! * After every stream ends and the root shuts down, no context is left (only the root if
//!   it deferred its deletion or the VM failed), and no callout is in flight once answered.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arbitrary::{Result as ArbResult, Unstructured};
use vessel_abi::{Status, pairs};
use vessel_host::hostcalls::{ImportSig, import_table};
use vessel_host::shared::queues::SharedQueueLimits;
use vessel_host::{
    ContextId, Effect, Engine, EngineConfig, FixedClock, HeaderMap, HostEnv, HttpCallOutcome,
    HttpCallResponse, LimitExceeded, Limits, LogRecord, LogSink, Plugin, PluginConfig,
    PropertyProvider, PropertyScope, QueueToken, Random, Token, TrapKind, Vm, VmError,
};
use wasmtime::{Trap, ValType};

use crate::documented::{Expect, NO_RESULT, documented, limit_traps};

/// The name of the harness's control foreign function (16 bytes, written by the guest).
pub const CONTROL_NAME: &[u8; 16] = b"vessel-fuzz-ctl!";
/// A second foreign function, which echoes its arguments.
pub const ECHO_NAME: &str = "echo";

/// Guest memory size: 4 pages, neither more nor less.
pub const MEMORY_BYTES: u32 = 4 * 65536;
/// Control scratch area: name, request, returned pointer and size.
const CTL: u32 = 0x100;
/// Out-parameter area (64 slots of 8 bytes).
const OUT: u32 = 0x200;
/// Data segment with useful arguments.
const DATA: u32 = 0x400;
/// Start of the allocator's heap.
const HEAP: u32 = 0x1_0000;
/// Bytes of one operation record: op (u32) and 12 u64 argument slots.
const RECORD: usize = 4 + 8 * MAX_ARGS;
/// Most parameters of any import (`proxy_grpc_call`).
const MAX_ARGS: usize = 12;

/// Guest-side operations, numbered after the imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Internal {
    /// Set the current callback's return value to `a0`.
    SetReturn,
    /// Set the allocator mode to `a0 % 5` (0 bump, 1 return `a1`, 2 trap, 3 call a restricted
    /// hostcall, 4 call `proxy_log`, then bump).
    AllocMode,
    /// Store `a1` (8 bytes) at `a0 % (memory - 8)`.
    Store,
}

const INTERNALS: [Internal; 3] = [Internal::SetReturn, Internal::AllocMode, Internal::Store];

/// The imports in the guest's order (the import table's order).
pub fn imports() -> Vec<&'static ImportSig> {
    import_table().iter().collect()
}

fn wat_ty(t: &ValType) -> &'static str {
    match t {
        ValType::I32 => "i32",
        ValType::I64 => "i64",
        ValType::F32 => "f32",
        ValType::F64 => "f64",
        ValType::V128 => "v128",
        ValType::Ref(_) => "funcref",
    }
}

fn wat_bytes(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "\\{b:02x}");
        s
    })
}

/// One item of the guest's data segment.
#[derive(Debug, Clone)]
pub struct DataItem {
    /// Guest address.
    pub ptr: u32,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// The data segment: arguments that mean something to some hostcall.
pub fn data_items() -> &'static [DataItem] {
    static ITEMS: OnceLock<Vec<DataItem>> = OnceLock::new();
    ITEMS.get_or_init(|| {
        let call_headers = pairs::encode([
            (&b":method"[..], &b"GET"[..]),
            (b":path", b"/fuzz"),
            (b":authority", b"auth"),
        ]);
        let raw: Vec<Vec<u8>> = vec![
            b"auth".to_vec(),
            call_headers,
            pairs::encode([(&b"x-a"[..], &b"1"[..]), (b"x-b", b"")]),
            b"x-a".to_vec(),
            b":path".to_vec(),
            b"hello world".to_vec(),
            b"request\0headers\0:path".to_vec(),
            b"plugin_name".to_vec(),
            b"fuzz\0err".to_vec(),
            b"fuzz\0prop".to_vec(),
            b"q".to_vec(),
            CONTROL_NAME.to_vec(),
            ECHO_NAME.as_bytes().to_vec(),
            vec![0xff, 0xff, 0xff, 0x7f, 1, 2],
            b"svc".to_vec(),
            Vec::new(),
        ];
        let mut at = DATA;
        let mut items: Vec<DataItem> = raw
            .into_iter()
            .map(|bytes| {
                let item = DataItem { ptr: at, bytes };
                at += (item.bytes.len() as u32 + 8) & !7;
                item
            })
            .collect();
        // An iovec for fd_write: "hello world".
        let hello = items[5].clone();
        let mut iovec = hello.ptr.to_le_bytes().to_vec();
        iovec.extend_from_slice(&(hello.bytes.len() as u32).to_le_bytes());
        items.push(DataItem {
            ptr: at,
            bytes: iovec,
        });
        items
    })
}

/// The WAT text of the fuzz guest (see the module docs).
pub fn guest_wat() -> String {
    let imports = imports();
    let n = imports.len();
    let mut w = String::from("(module\n");
    for (i, sig) in imports.iter().enumerate() {
        let params: Vec<&str> = sig.params.iter().map(wat_ty).collect();
        let results: Vec<&str> = sig.results.iter().map(wat_ty).collect();
        let _ = writeln!(
            w,
            "  (import \"{}\" \"{}\" (func $i{i} (param {}) (result {})))",
            sig.module,
            sig.name,
            params.join(" "),
            results.join(" ")
        );
    }
    let find = |module: &str, name: &str| {
        imports
            .iter()
            .position(|s| s.module == module && s.name == name)
            .expect("the import table has the control imports")
    };
    let foreign = find("env", "proxy_call_foreign_function");
    let tick = find("env", "proxy_set_tick_period_milliseconds");
    let log = find("env", "proxy_log");
    let name_lo = u64::from_le_bytes(CONTROL_NAME[..8].try_into().expect("8 bytes"));
    let name_hi = u64::from_le_bytes(CONTROL_NAME[8..].try_into().expect("8 bytes"));
    let _ = write!(
        w,
        r#"
  (memory (export "memory") 4 4)
  (global $heap (mut i32) (i32.const {HEAP}))
  (global $mode (mut i32) (i32.const 0))
  (global $fixed (mut i32) (i32.const 0))
  (global $in_ctl (mut i32) (i32.const 0))
  (global $seq (mut i32) (i32.const 0))
  (global $last (mut i64) (i64.const 0))
  (global $ret (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func $bump (param $size i32) (result i32) (local $p i32)
    (if (i32.gt_u (i32.add (global.get $heap) (local.get $size)) (i32.const {MEMORY_BYTES}))
      (then (global.set $heap (i32.const {HEAP}))))
    (if (i32.gt_u (i32.add (global.get $heap) (local.get $size)) (i32.const {MEMORY_BYTES}))
      (then (return (i32.const 0))))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (global.get $heap) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (local.get $p))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (if (global.get $in_ctl) (then (return (call $bump (local.get $size)))))
    (block $b4 (block $b3 (block $b2 (block $b1 (block $b0
      (br_table $b0 $b1 $b2 $b3 $b4 $b0 (global.get $mode)))
      (return (call $bump (local.get $size))))
      (return (global.get $fixed)))
      unreachable)
      (drop (call $i{tick} (i32.const 0)))
      (return (call $bump (local.get $size))))
    (drop (call $i{log} (i32.const 0) (i32.const {DATA}) (i32.const 4)))
    (call $bump (local.get $size)))
  (func $ctl (param $kind i32) (result i32) (local $st i32)
    (global.set $in_ctl (i32.const 1))
    (global.set $heap (i32.const {HEAP}))
    (i64.store (i32.const {CTL}) (i64.const {name_lo}))
    (i64.store (i32.const {ctl8}) (i64.const {name_hi}))
    (i32.store (i32.const {ctl16}) (global.get $seq))
    (i32.store (i32.const {ctl20}) (local.get $kind))
    (i64.store (i32.const {ctl24}) (global.get $last))
    (i64.store (i32.const {ctl32}) (i64.const 0))
    (global.set $seq (i32.add (global.get $seq) (i32.const 1)))
    (local.set $st (call $i{foreign} (i32.const {CTL}) (i32.const 16) (i32.const {ctl16}) (i32.const 16) (i32.const {ctl32}) (i32.const {ctl36})))
    (global.set $in_ctl (i32.const 0))
    (if (local.get $st) (then (return (i32.const 0))))
    (if (i32.lt_u (i32.load (i32.const {ctl36})) (i32.const {RECORD})) (then (return (i32.const 0))))
    (i32.load (i32.const {ctl32})))
  (func $run (param $default i32) (result i32) (local $p i32)
    (global.set $ret (local.get $default))
    (local.set $p (call $ctl (i32.const 0)))
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $p)))
      (global.set $last (call $dispatch (i32.load (local.get $p)) (local.get $p)))
      (local.set $p (call $ctl (i32.const 1)))
      (br $next)))
    (global.get $ret))
  (func $internal (param $k i32) (param $p i32) (result i64)
    (block $store (block $mode (block $ret
      (br_table $ret $mode $store $ret (local.get $k)))
      (global.set $ret (i32.load offset=4 (local.get $p)))
      (return (i64.const 0)))
      (global.set $mode (i32.rem_u (i32.load offset=4 (local.get $p)) (i32.const 5)))
      (global.set $fixed (i32.load offset=12 (local.get $p)))
      (return (i64.const 0)))
    (i64.store
      (i32.rem_u (i32.load offset=4 (local.get $p)) (i32.const {store_mod}))
      (i64.load offset=12 (local.get $p)))
    (i64.const 0))
"#,
        ctl8 = CTL + 8,
        ctl16 = CTL + 16,
        ctl20 = CTL + 20,
        ctl24 = CTL + 24,
        ctl32 = CTL + 32,
        ctl36 = CTL + 36,
        store_mod = MEMORY_BYTES - 8,
    );
    // The dispatcher: a br_table over every import, then the internal operations.
    w.push_str(
        "  (func $dispatch (param $op i32) (param $p i32) (result i64)\n    (block $default\n",
    );
    for i in (0..n).rev() {
        let _ = writeln!(w, "    (block $c{i}");
    }
    let labels: Vec<String> = (0..n).map(|i| format!("$c{i}")).collect();
    let _ = writeln!(
        w,
        "      (br_table {} $default (local.get $op))",
        labels.join(" ")
    );
    for (i, sig) in imports.iter().enumerate() {
        let _ = writeln!(w, "    )");
        let args: Vec<String> = sig
            .params
            .iter()
            .enumerate()
            .map(|(j, t)| {
                let load = if matches!(t, ValType::I64) {
                    "i64.load"
                } else {
                    "i32.load"
                };
                format!("({load} offset={} (local.get $p))", 4 + 8 * j)
            })
            .collect();
        let call = format!("(call $i{i} {})", args.join(" "));
        if sig.results.is_empty() {
            let _ = writeln!(w, "    {call} (return (i64.const {NO_RESULT}))");
        } else {
            let _ = writeln!(w, "    (return (i64.extend_i32_u {call}))");
        }
    }
    let _ = writeln!(
        w,
        "    )\n    (call $internal (i32.sub (local.get $op) (i32.const {n})) (local.get $p)))"
    );
    // Callbacks: (name, params, has result, default result).
    let callbacks: &[(&str, usize, Option<i32>)] = &[
        ("proxy_on_context_create", 2, None),
        ("proxy_on_vm_start", 2, Some(1)),
        ("proxy_on_configure", 2, Some(1)),
        ("proxy_on_request_headers", 3, Some(0)),
        ("proxy_on_request_body", 3, Some(0)),
        ("proxy_on_request_trailers", 2, Some(0)),
        ("proxy_on_response_headers", 3, Some(0)),
        ("proxy_on_response_body", 3, Some(0)),
        ("proxy_on_response_trailers", 2, Some(0)),
        ("proxy_on_log", 1, None),
        ("proxy_on_done", 1, Some(1)),
        ("proxy_on_delete", 1, None),
        ("proxy_on_tick", 1, None),
        ("proxy_on_queue_ready", 2, None),
        ("proxy_on_http_call_response", 5, None),
        ("proxy_on_grpc_receive_initial_metadata", 3, None),
        ("proxy_on_grpc_receive", 3, None),
        ("proxy_on_grpc_receive_trailing_metadata", 3, None),
        ("proxy_on_grpc_close", 3, None),
        ("proxy_on_foreign_function", 3, None),
    ];
    for (name, params, result) in callbacks {
        let ps = vec!["i32"; *params].join(" ");
        match result {
            Some(default) => {
                let _ = writeln!(
                    w,
                    "  (func (export \"{name}\") (param {ps}) (result i32) (call $run (i32.const {default})))"
                );
            }
            None => {
                let _ = writeln!(
                    w,
                    "  (func (export \"{name}\") (param {ps}) (drop (call $run (i32.const 0))))"
                );
            }
        }
    }
    for item in data_items() {
        let _ = writeln!(
            w,
            "  (data (i32.const {}) \"{}\")",
            item.ptr,
            wat_bytes(&item.bytes)
        );
    }
    w.push_str(")\n");
    w
}

/// The fuzz plugin's limits: small enough that a few calls with long arguments (the guest
/// has 256 KiB of memory) or one call repeated in a loop reach each of them, large enough
/// that every import still returns OK with the data items.
pub fn fuzz_limits() -> Limits {
    Limits {
        max_header_map_bytes: 16 << 10,
        max_header_map_entries: 64,
        max_body_bytes: 64 << 10,
        max_property_bytes: 16 << 10,
        max_effect_bytes: 64 << 10,
        max_metrics: 32,
        max_metric_name_bytes: 1 << 10,
        // The interpreter never loops forever; a long case (a call repeated in a loop,
        // each a round trip through the control function) must not hit the CPU limit on
        // a slow machine.
        callback_timeout: Some(std::time::Duration::from_secs(5)),
        ..Limits::default()
    }
}

/// The fuzz environment's shared-queue limits (small, as [`fuzz_limits`]).
pub fn fuzz_queue_limits() -> SharedQueueLimits {
    SharedQueueLimits {
        max_len: 64,
        max_bytes: 64 << 10,
        max_queues_per_vm_id: 16,
        max_name_bytes: 1 << 10,
    }
}

/// The compiled fuzz guest, shared by every run in the process.
pub fn guest_plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
        let wasm = wat::parse_str(guest_wat()).expect("the generated guest is valid WAT");
        let config = PluginConfig {
            vm_id: "fuzz-vm".into(),
            root_id: "fuzz-root".into(),
            vm_configuration: b"vm-config".to_vec(),
            configuration: b"plugin-config".to_vec(),
            limits: fuzz_limits(),
            ..PluginConfig::named("fuzz-hostcalls")
        };
        Plugin::load(&engine, &wasm, config).expect("the generated guest loads")
    })
}

/// One operation of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Import index (see [`imports`]), or `imports().len() + k` for guest-side operation `k`.
    pub op: u32,
    /// Argument slots; an i32 parameter uses the low 32 bits.
    pub args: [u64; MAX_ARGS],
}

impl Op {
    fn record(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD);
        out.extend_from_slice(&self.op.to_le_bytes());
        for a in &self.args {
            out.extend_from_slice(&a.to_le_bytes());
        }
        out
    }

    /// The import this operation calls, if it calls one.
    pub fn import(&self) -> Option<&'static ImportSig> {
        imports().get(self.op as usize).copied()
    }

    fn internal(&self) -> Option<Internal> {
        let n = imports().len();
        INTERNALS.get((self.op as usize).checked_sub(n)?).copied()
    }
}

/// An embedder event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `create_http_context`.
    NewStream,
    /// Request or response headers (`response`), on stream `stream` (an index into the
    /// streams created so far; past the end means the root context).
    Headers {
        /// Stream index.
        stream: u8,
        /// Response instead of request.
        response: bool,
        /// `end_of_stream`.
        eos: bool,
    },
    /// A body chunk.
    Body {
        /// Stream index.
        stream: u8,
        /// Response instead of request.
        response: bool,
        /// Chunk length (bytes `0, 1, 2, ...`).
        len: u8,
        /// `end_of_stream`.
        eos: bool,
    },
    /// Trailers.
    Trailers {
        /// Stream index.
        stream: u8,
        /// Response instead of request.
        response: bool,
    },
    /// `finish_http_stream`.
    Finish {
        /// Stream index.
        stream: u8,
    },
    /// `on_tick`.
    Tick,
    /// Answer the `pick`-th callout in flight (HTTP: a response or a failure; gRPC: a
    /// message, or a close).
    Callout {
        /// Which callout.
        pick: u8,
        /// Fail / close instead of answering.
        fail: bool,
    },
    /// `on_queue_ready` for the `pick`-th notification.
    QueueReady {
        /// Which notification.
        pick: u8,
    },
    /// `on_foreign_function`.
    Foreign {
        /// Function id.
        id: u8,
        /// Argument length.
        len: u8,
    },
}

/// A whole fuzz case (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostcallInput {
    /// One segment per guest callback, in the order the callbacks run.
    pub segments: Vec<Vec<Op>>,
    /// Embedder events after start-up.
    pub events: Vec<Event>,
}

const EDGES: [u32; 10] = [
    0,
    1,
    u32::MAX,
    0x8000_0000,
    0x7fff_ffff,
    MEMORY_BYTES,
    MEMORY_BYTES - 1,
    MEMORY_BYTES - 4,
    MEMORY_BYTES - 8,
    HEAP,
];

/// Reads arguments: raw values, small numbers (enums), pointers to and lengths of data
/// items, out-parameter slots and edge values.
struct ArgReader {
    last_item: usize,
}

impl ArgReader {
    fn arg(&mut self, u: &mut Unstructured<'_>, wide: bool) -> ArbResult<u64> {
        let sel: u8 = u.arbitrary()?;
        let raw: u32 = u.arbitrary()?;
        let items = data_items();
        // Mostly addresses inside memory and short lengths, which get past the bounds
        // checks; sometimes raw and edge values, which must not.
        Ok(match sel % 16 {
            0 if wide => u.arbitrary::<u64>()?,
            0 => u64::from(raw),
            1..=3 => u64::from(raw % 16),
            4..=6 => {
                self.last_item = raw as usize % items.len();
                u64::from(items[self.last_item].ptr)
            }
            7..=9 => items[self.last_item].bytes.len() as u64,
            10 => u64::from(raw % (MEMORY_BYTES - 8)),
            11 => u64::from(EDGES[raw as usize % EDGES.len()]),
            12..=14 => u64::from(OUT + (raw % 64) * 8),
            _ => u64::from(raw % 10),
        })
    }
}

impl HostcallInput {
    /// Decodes a fuzz case from arbitrary bytes (never fails; short input gives a short case).
    pub fn from_bytes(data: &[u8]) -> Self {
        let mut u = Unstructured::new(data);
        let mut input = Self::default();
        let _ = input.fill(&mut u);
        input
    }

    fn fill(&mut self, u: &mut Unstructured<'_>) -> ArbResult<()> {
        let imports = imports();
        let total = (imports.len() + INTERNALS.len()) as u32;
        let mut reader = ArgReader { last_item: 0 };
        let n_segments = u.int_in_range(0..=12u8)?;
        for _ in 0..n_segments {
            let mut seg = Vec::new();
            let n_ops = u.int_in_range(0..=10u8)?;
            for _ in 0..n_ops {
                let op = u32::from(u.arbitrary::<u16>()?) % total;
                let mut args = [0u64; MAX_ARGS];
                let params: Vec<bool> = match imports.get(op as usize) {
                    Some(sig) => sig
                        .params
                        .iter()
                        .map(|t| matches!(t, ValType::I64))
                        .collect(),
                    None => vec![false, true],
                };
                for (slot, wide) in args.iter_mut().zip(params) {
                    *slot = reader.arg(u, wide)?;
                }
                // Sometimes a loop: the same call again and again.
                let times = if u.ratio(1u8, 8)? {
                    u.int_in_range(2..=64u8)?
                } else {
                    1
                };
                for _ in 0..times {
                    seg.push(Op { op, args });
                }
            }
            self.segments.push(seg);
        }
        let n_events = u.int_in_range(0..=16u8)?;
        for _ in 0..n_events {
            let event = match u.int_in_range(0..=8u8)? {
                0 => Event::NewStream,
                1 => Event::Headers {
                    stream: u.arbitrary()?,
                    response: u.arbitrary()?,
                    eos: u.arbitrary()?,
                },
                2 => Event::Body {
                    stream: u.arbitrary()?,
                    response: u.arbitrary()?,
                    len: u.arbitrary()?,
                    eos: u.arbitrary()?,
                },
                3 => Event::Trailers {
                    stream: u.arbitrary()?,
                    response: u.arbitrary()?,
                },
                4 => Event::Finish {
                    stream: u.arbitrary()?,
                },
                5 => Event::Tick,
                6 => Event::Callout {
                    pick: u.arbitrary()?,
                    fail: u.arbitrary()?,
                },
                7 => Event::QueueReady {
                    pick: u.arbitrary()?,
                },
                _ => Event::Foreign {
                    id: u.arbitrary()?,
                    len: u.arbitrary()?,
                },
            };
            self.events.push(event);
        }
        Ok(())
    }
}

/// What the control function saw: the protocol state shared with the guest.
#[derive(Debug, Default)]
struct Control {
    segments: VecDeque<Vec<Op>>,
    current: VecDeque<Op>,
    seq: u32,
    /// The operation the guest is running (sent, result not reported yet).
    pending: Option<Op>,
    /// The guest allocator's mode as of the operations sent.
    alloc_mode: u32,
    /// Every finished operation with its result.
    done: Vec<(Op, i64)>,
    /// Protocol breaches (should stay empty).
    anomalies: Vec<String>,
}

impl Control {
    fn request(&mut self, args: &[u8]) -> Result<Vec<u8>, Status> {
        // A fuzzed call of the control function replays stale bytes: refuse it.
        let Ok(args) = <[u8; 16]>::try_from(args) else {
            return Err(Status::BadArgument);
        };
        let word = |i: usize| u32::from_le_bytes([args[i], args[i + 1], args[i + 2], args[i + 3]]);
        let (seq, kind) = (word(0), word(4));
        let last = i64::from_le_bytes(args[8..16].try_into().map_err(|_| Status::BadArgument)?);
        if seq != self.seq || kind > 1 {
            return Err(Status::BadArgument);
        }
        self.seq += 1;
        if kind == 0 {
            if let Some(op) = self.pending.take() {
                self.anomalies
                    .push(format!("a callback began while {op:?} was unfinished"));
            }
            self.current = self.segments.pop_front().unwrap_or_default().into();
        } else {
            match self.pending.take() {
                Some(op) => self.done.push((op, last)),
                None => self
                    .anomalies
                    .push("a result arrived without an operation".into()),
            }
        }
        let Some(op) = self.current.pop_front() else {
            return Ok(Vec::new());
        };
        if op.internal() == Some(Internal::AllocMode) {
            self.alloc_mode = (op.args[0] as u32) % 5;
        }
        let record = op.record();
        self.pending = Some(op);
        Ok(record)
    }
}

fn lock(c: &Mutex<Control>) -> MutexGuard<'_, Control> {
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Discards guest logs.
struct NullLog;

impl LogSink for NullLog {
    fn log(&self, _record: &LogRecord<'_>) {}
}

/// Deterministic "random" bytes.
struct Counter;

impl Random for Counter {
    fn fill(&self, buf: &mut [u8]) -> Result<(), Status> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = i as u8;
        }
        Ok(())
    }
}

/// A property provider that knows one property and fails one path.
struct Props;

impl PropertyProvider for Props {
    fn get_property(
        &self,
        path: &[&[u8]],
        _scope: PropertyScope<'_>,
    ) -> Result<Option<Vec<u8>>, Status> {
        match path {
            [b"fuzz", b"err"] => Err(Status::SerializationFailure),
            [b"fuzz", b"prop"] => Ok(Some(b"value".to_vec())),
            _ => Ok(None),
        }
    }
}

fn env(control: &Arc<Mutex<Control>>) -> HostEnv {
    let c = Arc::clone(control);
    HostEnv::builder()
        .clock(FixedClock {
            wall_nanos: 1_700_000_000_000_000_000,
            monotonic_nanos: 42,
        })
        .log_sink(NullLog)
        .random(Counter)
        .property_provider(Props)
        .known_clusters(|c| c == "auth")
        .queue_limits(fuzz_queue_limits())
        .foreign_function(
            std::str::from_utf8(CONTROL_NAME).expect("ASCII"),
            move |args: &[u8]| lock(&c).request(args),
        )
        .foreign_function(ECHO_NAME, |args: &[u8]| Ok(args.to_vec()))
        .build()
}

/// What is outstanding for the embedder.
#[derive(Default)]
struct Outstanding {
    callouts: Vec<Token>,
    queues: Vec<(ContextId, QueueToken)>,
}

struct Harness {
    vm: Vm,
    control: Arc<Mutex<Control>>,
    streams: Vec<ContextId>,
    outstanding: Outstanding,
    /// The error that failed the VM, once it failed.
    failure: Option<VmError>,
    /// Every checked (operation, result).
    seen: Vec<(u32, i64)>,
}

impl Harness {
    /// Checks the operations finished so far and the outcome of one embedder call.
    fn check<T>(&mut self, what: &str, result: Result<T, VmError>) -> Option<T> {
        self.check_done();
        let pending = lock(&self.control).pending.take();
        match result {
            Ok(v) => {
                assert!(
                    self.failure.is_none(),
                    "{what} succeeded on a failed VM: {:?}",
                    self.failure
                );
                assert_eq!(
                    pending, None,
                    "{what} returned while an operation was running"
                );
                Some(v)
            }
            Err(VmError::Trap(trap)) => {
                if let Some(previous) = &self.failure {
                    assert!(
                        matches!(previous, VmError::Trap(p) if Arc::ptr_eq(p, &trap)),
                        "{what}: a failed VM changed its error: {previous:?}, then {trap:?}"
                    );
                    assert_eq!(pending, None);
                    return None;
                }
                let op = pending
                    .unwrap_or_else(|| panic!("{what}: trap outside any operation: {trap:?}"));
                let mode = lock(&self.control).alloc_mode;
                check_trap(&op, mode, &trap.kind);
                self.failure = Some(VmError::Trap(trap));
                None
            }
            Err(e) => {
                assert_eq!(pending, None, "{what}: {e} while an operation was running");
                if let Some(failure) = &self.failure {
                    panic!("{what} on a failed VM gave {e:?}, not the failure {failure:?}");
                }
                if let VmError::StreamLimit { limit, .. } = &e {
                    assert!(
                        matches!(limit, LimitExceeded::BodyBytes { .. }) && what == "body",
                        "{what}: unexpected stream limit {e:?}"
                    );
                    assert!(!self.vm.is_failed(), "a stream limit failed the VM");
                    return None;
                }
                assert!(
                    matches!(
                        e,
                        VmError::UnknownContext(_)
                            | VmError::WrongContextKind(..)
                            | VmError::UnknownToken(_)
                    ),
                    "{what}: unexpected error {e:?}"
                );
                None
            }
        }
    }

    /// Every finished operation gave a documented result.
    fn check_done(&mut self) {
        let (done, anomalies) = {
            let mut c = lock(&self.control);
            (
                std::mem::take(&mut c.done),
                std::mem::take(&mut c.anomalies),
            )
        };
        assert!(anomalies.is_empty(), "control protocol: {anomalies:?}");
        for (op, result) in done {
            self.seen.push((op.op, result));
            match op.import() {
                Some(sig) => {
                    let expect = documented(sig.module, sig.name)
                        .unwrap_or_else(|| panic!("{}.{} is undocumented", sig.module, sig.name));
                    assert!(
                        expect.allows(&op.args[..sig.params.len()], result),
                        "{}.{}{:?} returned {} ({}), not one of {expect:?}",
                        sig.module,
                        sig.name,
                        &op.args[..sig.params.len()],
                        result,
                        status_name(result)
                    );
                }
                None => assert_eq!(result, 0, "guest-side {op:?} returned {result}"),
            }
        }
    }

    fn collect_effects(&mut self) {
        let held = self.vm.held_effect_bytes();
        assert!(
            held <= fuzz_limits().max_effect_bytes,
            "the VM holds {held} bytes for the embedder"
        );
        let root = self.vm.root_context();
        let instance = self.vm.instance_id();
        for effect in self.vm.drain_effects() {
            match effect {
                Effect::HttpCall { token, root: r, .. }
                | Effect::GrpcCall { token, root: r, .. }
                | Effect::GrpcStream { token, root: r, .. }
                | Effect::RedisCall { token, root: r, .. } => {
                    assert_eq!(r, root, "a callout is owned by the root context");
                    self.outstanding.callouts.push(token);
                }
                Effect::QueueReady { vm, root: r, token } if vm == instance => {
                    self.outstanding.queues.push((r, token));
                }
                _ => {}
            }
        }
    }

    fn stream(&self, i: u8) -> ContextId {
        self.streams
            .get(i as usize)
            .copied()
            .unwrap_or_else(|| self.vm.root_context())
    }

    fn apply(&mut self, event: &Event) {
        let headers = || HeaderMap::from_pairs([(":method", "GET"), (":path", "/"), ("x-a", "1")]);
        match *event {
            Event::NewStream => {
                let r = self.vm.create_http_context();
                if let Some(id) = self.check("create_http_context", r) {
                    self.streams.push(id);
                }
            }
            Event::Headers {
                stream,
                response,
                eos,
            } => {
                let s = self.stream(stream);
                let r = if response {
                    self.vm.on_response_headers(s, headers(), eos)
                } else {
                    self.vm.on_request_headers(s, headers(), eos)
                };
                self.check("headers", r);
            }
            Event::Body {
                stream,
                response,
                len,
                eos,
            } => {
                let s = self.stream(stream);
                let data: Vec<u8> = (0..len).collect();
                let r = if response {
                    self.vm.on_response_body(s, &data, eos)
                } else {
                    self.vm.on_request_body(s, &data, eos)
                };
                self.check("body", r);
            }
            Event::Trailers { stream, response } => {
                let s = self.stream(stream);
                let trailers = HeaderMap::from_pairs([("grpc-status", "0")]);
                let r = if response {
                    self.vm.on_response_trailers(s, trailers)
                } else {
                    self.vm.on_request_trailers(s, trailers)
                };
                self.check("trailers", r);
            }
            Event::Finish { stream } => {
                let s = self.stream(stream);
                let is_stream = s != self.vm.root_context();
                let r = self.vm.finish_http_stream(s);
                self.check("finish_http_stream", r);
                if is_stream {
                    self.streams.retain(|&x| x != s);
                }
            }
            Event::Tick => {
                let r = self.vm.on_tick();
                self.check("on_tick", r);
            }
            Event::Callout { pick, fail } => self.answer_callout(pick as usize, fail),
            Event::QueueReady { pick } => {
                if self.outstanding.queues.is_empty() {
                    return;
                }
                let (root, token) = self
                    .outstanding
                    .queues
                    .remove(pick as usize % self.outstanding.queues.len());
                let r = self.vm.on_queue_ready(root, token);
                self.check("on_queue_ready", r);
            }
            Event::Foreign { id, len } => {
                let args: Vec<u8> = (0..len).collect();
                let r = self.vm.on_foreign_function(u32::from(id), &args);
                self.check("on_foreign_function", r);
            }
        }
        self.collect_effects();
    }

    fn answer_callout(&mut self, pick: usize, fail: bool) {
        if self.outstanding.callouts.is_empty() {
            return;
        }
        let token = self
            .outstanding
            .callouts
            .remove(pick % self.outstanding.callouts.len());
        let r = match token.kind() {
            Some(vessel_host::CalloutKind::Http) => {
                let outcome = if fail {
                    HttpCallOutcome::Failed {
                        reason: "reset".into(),
                    }
                } else {
                    HttpCallOutcome::Response(HttpCallResponse {
                        headers: HeaderMap::from_pairs([(":status", "200")]),
                        body: b"ok".to_vec(),
                        trailers: HeaderMap::default(),
                    })
                };
                self.vm.on_http_call_response(token, outcome)
            }
            Some(vessel_host::CalloutKind::Redis) => self.vm.on_redis_call_response(
                token,
                if fail {
                    vessel_host::RedisCallOutcome::Failed
                } else {
                    vessel_host::RedisCallOutcome::Reply(b"+OK\r\n".to_vec())
                },
            ),
            _ if fail => self.vm.on_grpc_close(token, 14, "unavailable"),
            Some(vessel_host::CalloutKind::GrpcCall) => self.vm.on_grpc_receive(token, vec![1, 2]),
            _ => {
                let r = self.vm.on_grpc_receive(token, vec![3]);
                // A stream stays open: answer it again later.
                self.outstanding.callouts.push(token);
                r
            }
        };
        self.check("callout answer", r);
    }

    fn finish(mut self) -> (Vec<(u32, i64)>, Option<VmError>) {
        for s in std::mem::take(&mut self.streams) {
            let r = self.vm.finish_http_stream(s);
            self.check("final finish_http_stream", r);
        }
        assert_eq!(
            self.vm.context_count(),
            1,
            "stream contexts leaked after every stream ended (VM failure: {:?})",
            self.failure
        );
        // Answer every callout (gRPC streams get closed), as a proxy shutting down would.
        let mut rounds = 0;
        while let Some(token) = self.outstanding.callouts.first().copied() {
            rounds += 1;
            assert!(rounds < 10_000, "callouts never end");
            debug_assert!(token.get() != 0);
            self.answer_callout(0, true);
            self.collect_effects();
        }
        if self.failure.is_none() {
            assert_eq!(
                self.vm.callouts_in_flight(),
                0,
                "callouts in flight after every one was answered"
            );
        }
        let r = self.vm.shutdown();
        let done = self.check("shutdown", r);
        match done {
            Some(true) => assert_eq!(self.vm.context_count(), 0, "root context leaked"),
            Some(false) => {
                assert_eq!(self.vm.context_count(), 1);
                // The root deferred its deletion; a last tick may call proxy_done.
                let r = self.vm.on_tick();
                self.check("on_tick after shutdown", r);
                assert!(self.vm.context_count() <= 1);
            }
            None => assert!(self.vm.context_count() <= 1, "contexts leaked"),
        }
        self.check_done();
        (self.seen, self.failure)
    }
}

fn status_name(result: i64) -> String {
    if result == NO_RESULT {
        return "no result".into();
    }
    Status::try_from(result as u32).map_or_else(|_| "?".into(), |s| format!("{s:?}"))
}

/// A trap during `op` with the allocator in `alloc_mode` must be of a known kind.
fn check_trap(op: &Op, alloc_mode: u32, kind: &TrapKind) {
    let sig = op.import();
    let is_exit = sig.is_some_and(|s| documented(s.module, s.name) == Some(Expect::ProcExit));
    match kind {
        TrapKind::ProcExit(code) => {
            assert!(is_exit, "ProcExit({code}) from {sig:?}");
            assert_eq!(*code, op.args[0] as u32 as i32, "proc_exit code");
        }
        TrapKind::Wasm(trap) => {
            assert!(
                alloc_mode == 2 && sig.is_some() && *trap == Trap::UnreachableCodeReached,
                "wasm trap {trap:?} during {sig:?} with allocator mode {alloc_mode}"
            );
        }
        TrapKind::Host(error) => {
            let cause = error.get().root_cause().to_string();
            assert!(
                alloc_mode == 3 && sig.is_some() && cause.contains("restricted_callback"),
                "host trap {cause:?} during {sig:?} with allocator mode {alloc_mode}"
            );
        }
        // Only the limits its module docs name, and only from a call (the generated guest
        // stays far inside the memory, CPU and stack limits).
        TrapKind::Limit(limit) => {
            let knobs = sig.map_or(&[][..], |s| limit_traps(s.module, s.name));
            assert!(
                knobs.contains(&limit.knob()),
                "limit {limit:?} hit during {sig:?}, which documents only {knobs:?}"
            );
        }
        other => panic!("a trap kind this oracle does not know: {other:?} during {sig:?}"),
    }
}

/// Runs `input` against a fresh VM of the fuzz guest and checks it (see the module docs).
/// Returns every (operation, result) after start-up.
pub fn run(input: &HostcallInput) -> Vec<(u32, i64)> {
    run_outcome(input).0
}

/// [`run`], also returning the error that failed the VM, if one did.
pub fn run_outcome(input: &HostcallInput) -> (Vec<(u32, i64)>, Option<VmError>) {
    let control = Arc::new(Mutex::new(Control {
        segments: input.segments.iter().cloned().collect(),
        ..Control::default()
    }));
    let env = env(&control);
    let vm = match Vm::new(guest_plugin(), &env) {
        Ok(vm) => vm,
        Err(e) => {
            // Start-up may trap or be refused; check it like any other call.
            let mut c = lock(&control);
            let pending = c.pending.take();
            let done = std::mem::take(&mut c.done);
            let mode = c.alloc_mode;
            drop(c);
            for (op, result) in done {
                if let Some(sig) = op.import() {
                    let expect = documented(sig.module, sig.name).expect("documented");
                    assert!(
                        expect.allows(&op.args[..sig.params.len()], result),
                        "{}.{} returned {result} during start-up",
                        sig.module,
                        sig.name
                    );
                }
            }
            match &e {
                VmError::Trap(t) => check_trap(
                    &pending.unwrap_or_else(|| panic!("start-up trap outside operations: {t:?}")),
                    mode,
                    &t.kind,
                ),
                VmError::VmStartRefused { .. } | VmError::ConfigureRefused { .. } => {
                    assert_eq!(pending, None);
                }
                other => panic!("unexpected start-up error {other:?}"),
            }
            return (Vec::new(), Some(e));
        }
    };
    let mut h = Harness {
        vm,
        control,
        streams: Vec::new(),
        outstanding: Outstanding::default(),
        failure: None,
        seen: Vec::new(),
    };
    h.check_done();
    assert_eq!(h.vm.context_count(), 1, "only the root after start-up");
    h.collect_effects();
    for event in &input.events {
        h.apply(event);
    }
    h.finish()
}

/// A hand-made case in which nearly every import is called with good arguments (and so
/// returns OK or SUCCESS): a stream's request headers run them, the root defers its deletion
/// at shutdown and calls `proxy_done` on the last tick. Used by the stable tests.
pub fn good_calls() -> HostcallInput {
    let items = data_items();
    let p = |i: usize| u64::from(items[i].ptr);
    let l = |i: usize| items[i].bytes.len() as u64;
    let o = |k: u32| u64::from(OUT + 8 * k);
    let op = |module: &str, name: &str, args: &[u64]| {
        let i = imports()
            .iter()
            .position(|s| s.module == module && s.name == name)
            .unwrap_or_else(|| panic!("no import {module}.{name}"));
        let mut slots = [0u64; MAX_ARGS];
        slots[..args.len()].copy_from_slice(args);
        Op {
            op: i as u32,
            args: slots,
        }
    };
    let env = |name: &str, args: &[u64]| op("env", name, args);
    let mut good = vec![
        env("proxy_log", &[2, p(5), l(5)]),
        env("proxy_get_log_level", &[o(0)]),
        env("proxy_get_current_time_nanoseconds", &[o(0)]),
        env("proxy_set_tick_period_milliseconds", &[10]),
        env("proxy_get_buffer_bytes", &[6, 0, 100, o(0), o(1)]),
        env("proxy_get_buffer_status", &[6, o(0), o(1)]),
        env("proxy_get_configuration", &[o(0), o(1)]),
        env("proxy_get_header_map_pairs", &[0, o(0), o(1)]),
        env("proxy_get_header_map_size", &[0, o(0)]),
        env("proxy_get_header_map_value", &[0, p(3), l(3), o(0), o(1)]),
        env("proxy_add_header_map_value", &[0, p(3), l(3), p(5), l(5)]),
        env(
            "proxy_replace_header_map_value",
            &[0, p(3), l(3), p(5), l(5)],
        ),
        env("proxy_remove_header_map_value", &[0, p(3), l(3)]),
        env("proxy_set_header_map_pairs", &[0, p(2), l(2)]),
        env("proxy_get_property", &[p(7), l(7), o(0), o(1)]),
        env("proxy_set_property", &[p(9), l(9), p(5), l(5)]),
        env("proxy_set_shared_data", &[p(3), l(3), p(5), l(5), 0]),
        env("proxy_get_shared_data", &[p(3), l(3), o(0), o(1), o(2)]),
        env("proxy_register_shared_queue", &[p(10), l(10), o(3)]),
        env(
            "proxy_resolve_shared_queue",
            &[p(15), 0, p(10), l(10), o(4)],
        ),
        env("proxy_enqueue_shared_queue", &[1, p(5), l(5)]),
        env("proxy_dequeue_shared_queue", &[1, o(0), o(1)]),
        env("proxy_define_metric", &[0, p(3), l(3), o(5)]),
        env("proxy_increment_metric", &[4, 1]),
        env("proxy_record_metric", &[4, 5]),
        env("proxy_get_metric", &[4, o(0)]),
        env(
            "proxy_http_call",
            &[p(0), l(0), p(1), l(1), p(15), 0, p(15), 0, 1000, o(6)],
        ),
        env("proxy_redis_init", &[p(0), l(0), p(15), 0, p(15), 0, 1000]),
        env("proxy_redis_call", &[p(0), l(0), p(5), l(5), o(6)]),
        env(
            "proxy_grpc_call",
            &[
                p(0),
                l(0),
                p(14),
                l(14),
                p(14),
                l(14),
                p(15),
                0,
                p(5),
                l(5),
                1000,
                o(6),
            ],
        ),
        env("proxy_grpc_cancel", &[5]),
        env(
            "proxy_grpc_stream",
            &[p(0), l(0), p(14), l(14), p(14), l(14), p(15), 0, o(6)],
        ),
        env("proxy_grpc_send", &[6, p(5), l(5), 0]),
        env("proxy_grpc_close", &[6]),
        env("proxy_continue_stream", &[0]),
        env("proxy_close_stream", &[0]),
        env("proxy_continue_request", &[]),
        env("proxy_continue_response", &[]),
        env("proxy_clear_route_cache", &[]),
        env(
            "proxy_send_local_response",
            &[403, p(5), l(5), p(5), l(5), p(2), l(2), u64::from(u32::MAX)],
        ),
        env("proxy_get_status", &[o(0), o(1), o(2)]),
        env(
            "proxy_call_foreign_function",
            &[p(12), l(12), p(5), l(5), o(0), o(1)],
        ),
        env("pthread_equal", &[3, 3]),
        env("emscripten_notify_memory_growth", &[0]),
        env("proxy_set_effective_context", &[1]),
    ];
    for m in ["wasi_snapshot_preview1", "wasi_unstable"] {
        let w = |name: &str, args: &[u64]| op(m, name, args);
        good.extend([
            w("fd_write", &[1, p(16), 1, o(0)]),
            w("fd_pwrite", &[2, p(16), 1, 0, o(0)]),
            w("fd_seek", &[1, 0, 0, o(0)]),
            w("fd_close", &[1]),
            w("fd_fdstat_get", &[1, o(0)]),
            w("fd_fdstat_set_rights", &[1, 0, 0]),
            w("fd_filestat_set_size", &[1, 0]),
            w("fd_filestat_set_times", &[1, 0, 0, 0]),
            w("fd_advise", &[1, 0, 0, 0]),
            w("fd_allocate", &[1, 0, 0]),
            w("fd_datasync", &[1]),
            w("fd_sync", &[2]),
            w("fd_tell", &[1, o(0)]),
            w("environ_sizes_get", &[o(0), o(1)]),
            w("environ_get", &[o(0), o(1)]),
            w("args_sizes_get", &[o(0), o(1)]),
            w("args_get", &[o(0), o(1)]),
            w("clock_time_get", &[0, 0, o(0)]),
            w("clock_res_get", &[1, o(0)]),
            w("random_get", &[o(0), 8]),
            w("sched_yield", &[]),
            w("poll_oneoff", &[0, 0, 0, o(0)]),
        ]);
    }
    let set_return = Op {
        op: imports().len() as u32,
        args: [0; MAX_ARGS],
    };
    HostcallInput {
        segments: vec![
            // Start-up: root create, VM start, configure; the stream's create.
            vec![],
            vec![],
            vec![],
            vec![],
            // The stream's request headers, then its request body.
            good,
            vec![env("proxy_set_buffer_bytes", &[0, 0, 0, p(5), l(5)])],
            // The stream's log, done, delete; the HTTP call's answer.
            vec![],
            vec![],
            vec![],
            vec![],
            // The gRPC stream's close; the root's on_done defers; the last tick ends it.
            vec![],
            vec![set_return],
            vec![env("proxy_done", &[])],
        ],
        events: vec![
            Event::NewStream,
            Event::Headers {
                stream: 0,
                response: false,
                eos: false,
            },
            Event::Body {
                stream: 0,
                response: false,
                len: 3,
                eos: true,
            },
            Event::Finish { stream: 0 },
        ],
    }
}

/// The fuzz entry point: decodes `data` and runs it.
pub fn hostcalls_oracle(data: &[u8]) {
    let _ = run(&HostcallInput::from_bytes(data));
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::XorShift;

    fn op(name: &str, args: &[u64]) -> Op {
        let i = imports()
            .iter()
            .position(|s| s.name == name)
            .unwrap_or_else(|| panic!("no import {name}"));
        let mut slots = [0u64; MAX_ARGS];
        slots[..args.len()].copy_from_slice(args);
        Op {
            op: i as u32,
            args: slots,
        }
    }

    fn internal(k: Internal, a0: u64, a1: u64) -> Op {
        let i = INTERNALS.iter().position(|x| *x == k).expect("internal");
        let mut args = [0u64; MAX_ARGS];
        args[0] = a0;
        args[1] = a1;
        Op {
            op: (imports().len() + i) as u32,
            args,
        }
    }

    /// A structured random case: every import has the same chance.
    fn random_input(rng: &mut XorShift) -> HostcallInput {
        let len = 64 + rng.below(1500);
        let bytes = rng.bytes(len);
        HostcallInput::from_bytes(&bytes)
    }

    #[test]
    fn generated_guest_loads_and_every_import_is_imported() {
        let plugin = guest_plugin();
        let imported: HashSet<(String, String)> = plugin
            .module()
            .imports()
            .map(|i| (i.module().to_owned(), i.name().to_owned()))
            .collect();
        assert_eq!(imported.len(), import_table().len());
    }

    /// A call with good arguments works, a bad pointer is INVALID_MEMORY_ACCESS, and the
    /// oracle sees every result. Start-up takes three segments (context create, VM start,
    /// configure), the stream's create one, its request headers the next.
    #[test]
    fn results_reach_the_oracle() {
        let items = data_items();
        let control = Arc::new(Mutex::new(Control {
            segments: vec![
                vec![],
                vec![],
                vec![],
                vec![],
                vec![
                    op("proxy_log", &[2, u64::from(items[5].ptr), 11]),
                    op("proxy_log", &[2, u64::from(MEMORY_BYTES), 1]),
                    op("proxy_log", &[9, 0, 0]),
                    op("pthread_equal", &[5, 5]),
                    op("emscripten_notify_memory_growth", &[0]),
                ],
            ]
            .into(),
            ..Control::default()
        }));
        let env = env(&control);
        let mut vm = Vm::new(guest_plugin(), &env).expect("vm");
        let s = vm.create_http_context().expect("stream");
        assert!(lock(&control).done.is_empty());
        vm.on_request_headers(s, HeaderMap::default(), true)
            .expect("headers");
        let results: Vec<i64> = lock(&control).done.iter().map(|(_, r)| *r).collect();
        assert_eq!(
            results,
            vec![
                0,
                i64::from(Status::InvalidMemoryAccess.as_u32()),
                i64::from(Status::BadArgument.as_u32()),
                1,
                NO_RESULT,
            ]
        );
        // Nothing left: the next callback runs no operation.
        vm.on_request_body(s, b"x", true).expect("body");
        assert_eq!(lock(&control).done.len(), 5);
    }

    /// Each known trap kind is produced and accepted; the VM then stays failed.
    #[test]
    fn known_traps_are_accepted() {
        let exit = HostcallInput {
            segments: vec![vec![], vec![op("proc_exit", &[7])]],
            events: vec![Event::Tick, Event::NewStream],
        };
        let _ = run(&exit);
        let alloc_trap = HostcallInput {
            segments: vec![vec![
                internal(Internal::AllocMode, 2, 0),
                op(
                    "proxy_get_property",
                    &[
                        u64::from(data_items()[7].ptr),
                        data_items()[7].bytes.len() as u64,
                        u64::from(OUT),
                        u64::from(OUT + 8),
                    ],
                ),
            ]],
            events: vec![],
        };
        let _ = run(&alloc_trap);
        let restricted = HostcallInput {
            segments: vec![vec![
                internal(Internal::AllocMode, 3, 0),
                op(
                    "proxy_get_configuration",
                    &[u64::from(OUT), u64::from(OUT + 8)],
                ),
            ]],
            events: vec![Event::NewStream],
        };
        let _ = run(&restricted);
    }

    /// The oracle catches a wrong result: a hand-made bad record fails the check.
    #[test]
    #[should_panic(expected = "not one of")]
    fn undocumented_results_are_caught() {
        let control = Arc::new(Mutex::new(Control::default()));
        let env = env(&control);
        let vm = Vm::new(guest_plugin(), &env).expect("vm");
        lock(&control)
            .done
            .push((op("proxy_done", &[]), i64::from(Status::Empty.as_u32())));
        let mut h = Harness {
            vm,
            control,
            streams: Vec::new(),
            outstanding: Outstanding::default(),
            failure: None,
            seen: Vec::new(),
        };
        h.check_done();
    }

    /// Finding (fixed in `vessel-host/src/vm.rs`): `finish_http_stream` on the root context
    /// returned `WrongContextKind` but removed the root context anyway, so later root
    /// callbacks ran on a context the host no longer knew, and `context_count` dropped to 0
    /// with the plugin still running.
    #[test]
    fn finishing_the_root_as_a_stream_keeps_it() {
        let _ = run(&HostcallInput {
            segments: vec![],
            events: vec![Event::Finish { stream: 0 }, Event::Tick],
        });
        let control = Arc::new(Mutex::new(Control::default()));
        let mut vm = Vm::new(guest_plugin(), &env(&control)).expect("vm");
        let root = vm.root_context();
        assert!(matches!(
            vm.finish_http_stream(root),
            Err(VmError::WrongContextKind(..))
        ));
        assert_eq!(vm.context_count(), 1);
        assert!(matches!(vm.shutdown(), Ok(true)));
        assert_eq!(vm.context_count(), 0);
    }

    /// Finding (fixed in `vessel-host/src/vm.rs`): a stream whose `proxy_on_context_create`
    /// trapped stayed in the VM, although `create_http_context` returned the error and the
    /// embedder never learnt its id.
    #[test]
    fn a_stream_that_traps_on_create_is_forgotten() {
        let _ = run(&HostcallInput {
            segments: vec![vec![], vec![], vec![], vec![op("proc_exit", &[792])]],
            events: vec![Event::NewStream, Event::NewStream, Event::Tick],
        });
    }

    /// Issue 9: a guest that adds large header values in a loop fails its VM with the map
    /// limit, named, and the host holds no more than the limit; the same loop of
    /// `proxy_continue_stream` stops at the effect limit.
    #[test]
    fn header_values_added_in_a_loop_stop_at_the_map_limit() {
        let key = &data_items()[3];
        let add = op(
            "proxy_add_header_map_value",
            &[
                0,
                u64::from(key.ptr),
                key.bytes.len() as u64,
                u64::from(HEAP),
                4096,
            ],
        );
        let input = HostcallInput {
            segments: vec![vec![], vec![], vec![], vec![], vec![add; 64]],
            events: vec![
                Event::NewStream,
                Event::Headers {
                    stream: 0,
                    response: false,
                    eos: true,
                },
            ],
        };
        let (seen, failure) = run_outcome(&input);
        let failure = failure.expect("the VM failed");
        let limit = failure.limit().expect("on a limit");
        assert_eq!(limit.knob(), "Limits::max_header_map_bytes", "{failure}");
        assert!(failure.to_string().contains("Limits::max_header_map_bytes"));
        // 16 KiB hold three 4 KiB values and the request's headers; the fourth add traps.
        assert_eq!(seen.iter().filter(|(_, r)| *r == 0).count(), 3, "{seen:?}");

        let cont = op("proxy_continue_stream", &[0]);
        let input = HostcallInput {
            segments: vec![vec![], vec![], vec![], vec![], vec![cont; 2000]],
            events: input.events,
        };
        let (_, failure) = run_outcome(&input);
        let failure = failure.expect("the VM failed");
        assert_eq!(
            failure.limit().map(LimitExceeded::knob),
            Some("Limits::max_effect_bytes"),
            "{failure}"
        );
    }

    /// The fixed seeds reach some of the limits (so the oracle's check of limit traps runs).
    #[test]
    fn seeds_reach_limits() {
        let mut rng = XorShift::new(0x4057_CA11);
        let mut knobs = HashSet::new();
        for _ in 0..150 {
            if let (_, Some(failure)) = run_outcome(&random_input(&mut rng))
                && let Some(limit) = failure.limit()
            {
                knobs.insert(limit.knob());
            }
        }
        assert!(!knobs.is_empty(), "no seed hit a limit");
    }

    #[test]
    fn oracle_over_seeds() {
        for seed in crate::seeds().step_by(16) {
            hostcalls_oracle(&seed);
        }
        let mut rng = XorShift::new(0x4057_CA11);
        for _ in 0..150 {
            let _ = run(&random_input(&mut rng));
        }
    }

    /// The fixed seeds get most imports past their argument checks (an OK or SUCCESS result).
    #[test]
    fn seeds_get_past_argument_checks() {
        let mut rng = XorShift::new(0x4057_CA11);
        let mut ok = HashSet::new();
        let mut runs = vec![run(&good_calls())];
        for _ in 0..150 {
            runs.push(run(&random_input(&mut rng)));
        }
        for (op, result) in runs.into_iter().flatten() {
            if result == 0 {
                ok.insert(op);
            }
        }
        // Imports that can return OK at all.
        let possible: Vec<u32> = imports()
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                documented(s.module, s.name)
                    .is_some_and(|e| e.allows(&[0, 0], 0) || e == Expect::PthreadEqual)
            })
            .map(|(i, _)| i as u32)
            .collect();
        let missing: Vec<String> = possible
            .iter()
            .filter(|op| !ok.contains(*op))
            .map(|op| imports()[*op as usize].name.to_owned())
            .collect();
        assert!(
            missing.is_empty(),
            "{} of {} imports never returned OK: {missing:?}",
            missing.len(),
            possible.len()
        );
    }

    /// The fixed seeds call every import.
    #[test]
    fn seeds_call_every_import() {
        let mut rng = XorShift::new(0x4057_CA11);
        let mut called = HashSet::new();
        for _ in 0..150 {
            for seg in random_input(&mut rng).segments {
                for op in seg {
                    called.insert(op.op);
                }
            }
        }
        let missing: Vec<String> = imports()
            .iter()
            .enumerate()
            .filter(|(i, _)| !called.contains(&(*i as u32)))
            .map(|(_, s)| format!("{}.{}", s.module, s.name))
            .collect();
        assert!(missing.is_empty(), "never called: {missing:?}");
    }
}
