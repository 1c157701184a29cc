//! Probe modules: small generated WAT guests that call hostcalls directly
//! and report what they return (ABI reference §4, §5).
//!
//! The Rust SDK hides raw statuses (and panics on the ones it does not
//! expect, §11.20), so status-level checks use a probe instead. A probe
//! imports every `env` and `wasi_snapshot_preview1` function vessel provides
//! (named `$<import name>`), exports a 3-page memory, a counting bump
//! allocator (as both `malloc` and `proxy_on_memory_allocate`) and every
//! callback. The test adds *checks* to callbacks; each check evaluates a WAT
//! expression and logs one line at CRITICAL:
//!
//! ```text
//! probe:<label>=<decimal u32>      (Body::status / Body::value)
//! probe:<label>=<raw bytes>        (Body::bytes)
//! ```
//!
//! [`ProbeResults`] parses those lines back out of a [`LogCapture`].
//!
//! Memory layout: `0x00..0x100` out-parameters ([`RET_PTR`], [`RET_SIZE`],
//! [`OUT`], [`OUT2`]), `0x1000..0x9000` the line buffer, `0xA000..0x20000`
//! data placed with [`Probe::bytes`], `0x20000..` the allocator's heap.
//!
//! Globals a check may read: `$allocs` (allocator calls so far) and
//! `$last_size` (size of the last allocation). [`Probe::alloc_hook`] runs
//! extra instructions inside the allocator.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use vessel_host::hostcalls::import_table;
use vessel_host::{AbiVersion, Plugin, PluginConfig};
use wasmtime::ValType;

use crate::{LogCapture, SpecError, engine};

/// Out-parameter: a returned pointer (`*_ptr_ptr`).
pub const RET_PTR: u32 = 0x10;
/// Out-parameter: a returned size (`*_size_ptr`).
pub const RET_SIZE: u32 = 0x14;
/// Out-parameter: a u32 or u64 result (8 bytes).
pub const OUT: u32 = 0x18;
/// A second 8-byte out-parameter.
pub const OUT2: u32 = 0x20;
/// An address far outside the probe's memory.
pub const BAD_PTR: u32 = 0xFFFF_FF00;

const DATA_START: u32 = 0xA000;
const DATA_END: u32 = 0x20000;
const LOG_LEVEL_CRITICAL: u32 = 5;

/// Guest bytes placed by [`Probe::bytes`]. Displays as the WAT arguments
/// `(i32.const ptr) (i32.const len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob {
    /// Guest address.
    pub ptr: u32,
    /// Length in bytes.
    pub len: u32,
}

impl fmt::Display for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(i32.const {}) (i32.const {})", self.ptr, self.len)
    }
}

/// `(i32.const v)`.
pub fn c(v: u32) -> String {
    format!("(i32.const {v})")
}

/// `(i32.load (i32.const addr))`.
pub fn load(addr: u32) -> String {
    format!("(i32.load (i32.const {addr}))")
}

/// The callbacks a probe can put checks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Callback {
    /// `proxy_on_context_create(ctx, parent)`.
    ContextCreate,
    /// `proxy_on_vm_start(root, size) -> 1`.
    VmStart,
    /// `proxy_on_configure(root, size) -> 1`.
    Configure,
    /// `proxy_on_request_headers(ctx, n, eos) -> 0` (2 params in 0.1.0).
    RequestHeaders,
    /// `proxy_on_request_body(ctx, size, eos) -> 0`.
    RequestBody,
    /// `proxy_on_request_trailers(ctx, n) -> 0`.
    RequestTrailers,
    /// `proxy_on_response_headers(ctx, n, eos) -> 0` (2 params in 0.1.0).
    ResponseHeaders,
    /// `proxy_on_response_body(ctx, size, eos) -> 0`.
    ResponseBody,
    /// `proxy_on_response_trailers(ctx, n) -> 0`.
    ResponseTrailers,
    /// `proxy_on_tick(root)`.
    Tick,
    /// `proxy_on_queue_ready(root, token)`.
    QueueReady,
    /// `proxy_on_foreign_function(root, id, size)`.
    ForeignFunction,
    /// `proxy_on_http_call_response(root, token, headers, body, trailers)`.
    HttpCallResponse,
    /// `proxy_on_grpc_receive(root, token, size)`.
    GrpcReceive,
    /// `proxy_on_grpc_close(root, token, status)`.
    GrpcClose,
    /// `proxy_on_log(ctx)`.
    Log,
    /// `proxy_on_done(ctx) -> 1`.
    Done,
    /// `proxy_on_delete(ctx)`.
    Delete,
}

impl Callback {
    /// Every callback.
    pub const ALL: [Self; 18] = [
        Self::ContextCreate,
        Self::VmStart,
        Self::Configure,
        Self::RequestHeaders,
        Self::RequestBody,
        Self::RequestTrailers,
        Self::ResponseHeaders,
        Self::ResponseBody,
        Self::ResponseTrailers,
        Self::Tick,
        Self::QueueReady,
        Self::ForeignFunction,
        Self::HttpCallResponse,
        Self::GrpcReceive,
        Self::GrpcClose,
        Self::Log,
        Self::Done,
        Self::Delete,
    ];

    /// The export name.
    pub const fn export(self) -> &'static str {
        match self {
            Self::ContextCreate => "proxy_on_context_create",
            Self::VmStart => "proxy_on_vm_start",
            Self::Configure => "proxy_on_configure",
            Self::RequestHeaders => "proxy_on_request_headers",
            Self::RequestBody => "proxy_on_request_body",
            Self::RequestTrailers => "proxy_on_request_trailers",
            Self::ResponseHeaders => "proxy_on_response_headers",
            Self::ResponseBody => "proxy_on_response_body",
            Self::ResponseTrailers => "proxy_on_response_trailers",
            Self::Tick => "proxy_on_tick",
            Self::QueueReady => "proxy_on_queue_ready",
            Self::ForeignFunction => "proxy_on_foreign_function",
            Self::HttpCallResponse => "proxy_on_http_call_response",
            Self::GrpcReceive => "proxy_on_grpc_receive",
            Self::GrpcClose => "proxy_on_grpc_close",
            Self::Log => "proxy_on_log",
            Self::Done => "proxy_on_done",
            Self::Delete => "proxy_on_delete",
        }
    }

    /// Number of i32 params, and the default result (`None`: no result).
    const fn shape(self, v01: bool) -> (usize, Option<u32>) {
        match self {
            Self::ContextCreate | Self::QueueReady => (2, None),
            Self::VmStart | Self::Configure => (2, Some(1)),
            Self::RequestHeaders | Self::ResponseHeaders => (if v01 { 2 } else { 3 }, Some(0)),
            Self::RequestBody | Self::ResponseBody => (3, Some(0)),
            Self::RequestTrailers | Self::ResponseTrailers => (2, Some(0)),
            Self::Tick | Self::Log | Self::Delete => (1, None),
            Self::ForeignFunction | Self::GrpcReceive | Self::GrpcClose => (3, None),
            Self::HttpCallResponse => (5, None),
            Self::Done => (1, Some(1)),
        }
    }
}

/// Parameter names of every callback, in order: `$a $b $c $d $e`.
const PARAMS: [&str; 5] = ["$a", "$b", "$c", "$d", "$e"];

#[derive(Debug, Clone)]
enum Check {
    Value {
        label: String,
        expr: String,
    },
    Bytes {
        label: String,
        ptr: String,
        len: String,
    },
    Raw(String),
}

/// The checks of one callback.
#[derive(Debug, Clone, Default)]
pub struct Body {
    checks: Vec<Check>,
    result: Option<String>,
}

impl Body {
    /// Logs `probe:<label>=<decimal>` with the i32 value of `expr` (a
    /// hostcall's status, or any value).
    pub fn status(&mut self, label: &str, expr: impl Into<String>) -> &mut Self {
        self.checks.push(Check::Value {
            label: label.to_owned(),
            expr: expr.into(),
        });
        self
    }

    /// Same as [`Body::status`], for values that are not statuses.
    pub fn value(&mut self, label: &str, expr: impl Into<String>) -> &mut Self {
        self.status(label, expr)
    }

    /// Logs `probe:<label>=` followed by the `len` bytes at `ptr` (both WAT
    /// i32 expressions).
    pub fn bytes(
        &mut self,
        label: &str,
        ptr: impl Into<String>,
        len: impl Into<String>,
    ) -> &mut Self {
        self.checks.push(Check::Bytes {
            label: label.to_owned(),
            ptr: ptr.into(),
            len: len.into(),
        });
        self
    }

    /// Logs the blob returned through [`RET_PTR`] / [`RET_SIZE`].
    pub fn returned(&mut self, label: &str) -> &mut Self {
        self.bytes(label, load(RET_PTR), load(RET_SIZE))
    }

    /// Runs raw WAT instructions (they must leave the stack empty).
    pub fn raw(&mut self, wat: impl Into<String>) -> &mut Self {
        self.checks.push(Check::Raw(wat.into()));
        self
    }

    /// The callback's result expression (callbacks with a result only).
    pub fn returns(&mut self, expr: impl Into<String>) -> &mut Self {
        self.result = Some(expr.into());
        self
    }
}

/// A probe module under construction. See the module docs.
#[derive(Debug, Clone)]
pub struct Probe {
    abi: AbiVersion,
    data: Vec<(u32, Vec<u8>)>,
    next_data: u32,
    bodies: BTreeMap<Callback, Body>,
    import_modules: Vec<&'static str>,
    extra: Vec<String>,
    alloc_hook: String,
}

impl Default for Probe {
    fn default() -> Self {
        Self::new()
    }
}

impl Probe {
    /// An ABI 0.2.1 probe with no checks.
    pub fn new() -> Self {
        Self {
            abi: AbiVersion::V0_2_1,
            data: Vec::new(),
            next_data: DATA_START,
            bodies: BTreeMap::new(),
            import_modules: vec!["env", "wasi_snapshot_preview1"],
            extra: Vec::new(),
            alloc_hook: String::new(),
        }
    }

    /// Advertises another ABI version.
    pub fn abi(&mut self, abi: AbiVersion) -> &mut Self {
        self.abi = abi;
        self
    }

    /// Also imports every function of `wasi_unstable`, named
    /// `$wasi_unstable.<name>`.
    pub fn import_wasi_unstable(&mut self) -> &mut Self {
        if !self.import_modules.contains(&"wasi_unstable") {
            self.import_modules.push("wasi_unstable");
        }
        self
    }

    /// Runs `wat` at the start of every call of the allocator (its
    /// parameter is `$size`; the instructions must leave the stack empty).
    pub fn alloc_hook(&mut self, wat: impl Into<String>) -> &mut Self {
        self.alloc_hook = wat.into();
        self
    }

    /// Adds raw module fields (functions, globals) to the module.
    pub fn field(&mut self, wat: impl Into<String>) -> &mut Self {
        self.extra.push(wat.into());
        self
    }

    /// Places `data` in guest memory and returns where.
    ///
    /// # Panics
    /// If the data area (about 88 KiB) is full: a bug in the test.
    pub fn bytes(&mut self, data: &[u8]) -> Blob {
        let ptr = self.next_data;
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let end = ptr.saturating_add(len);
        assert!(end <= DATA_END, "probe data area is full");
        self.next_data = (end + 7) & !7;
        self.data.push((ptr, data.to_vec()));
        Blob { ptr, len }
    }

    /// The checks of `callback`.
    pub fn on(&mut self, callback: Callback) -> &mut Body {
        self.bodies.entry(callback).or_default()
    }

    fn import_name(module: &str, name: &str) -> String {
        match module {
            "env" | "wasi_snapshot_preview1" => format!("${name}"),
            other => format!("${other}.{name}"),
        }
    }

    /// The module text.
    ///
    /// # Panics
    /// If the labels do not fit in the data area: a bug in the test.
    pub fn wat(&self) -> String {
        let mut out = String::from("(module\n");
        for sig in import_table().iter() {
            if !self.import_modules.contains(&sig.module) {
                continue;
            }
            let _ = writeln!(
                out,
                "  (import \"{}\" \"{}\" (func {}{}))",
                sig.module,
                sig.name,
                Self::import_name(sig.module, sig.name),
                signature_wat(&sig.params, &sig.results),
            );
        }
        out.push_str(PRELUDE);
        let _ = writeln!(
            out,
            "  (func $alloc_hook (param $size i32)\n    {}\n  )",
            self.alloc_hook
        );
        let _ = writeln!(out, "  (func (export \"{}\"))", self.abi.marker());
        // Labels and data.
        let mut data = self.data.clone();
        let mut next = self.next_data;
        let mut label = |text: &str, data: &mut Vec<(u32, Vec<u8>)>| -> (u32, u32) {
            let ptr = next;
            let len = u32::try_from(text.len()).unwrap_or(0);
            next = (next + len + 7) & !7;
            data.push((ptr, text.as_bytes().to_vec()));
            (ptr, len)
        };
        let v01 = self.abi.is_v0_1();
        for cb in Callback::ALL {
            if v01 && cb == Callback::ForeignFunction {
                continue;
            }
            let (nparams, default) = cb.shape(v01);
            let params: Vec<String> = PARAMS[..nparams]
                .iter()
                .map(|p| format!("(param {p} i32)"))
                .collect();
            let result = if default.is_some() {
                "(result i32)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  (func (export \"{}\") {} {}",
                cb.export(),
                params.join(" "),
                result
            );
            let body = self.bodies.get(&cb);
            for check in body.map_or(&[][..], |b| &b.checks) {
                match check {
                    Check::Value { label: l, expr } => {
                        let (p, n) = label(l, &mut data);
                        let _ = writeln!(out, "    (call $report_u32 {} {} {expr})", c(p), c(n));
                    }
                    Check::Bytes { label: l, ptr, len } => {
                        let (p, n) = label(l, &mut data);
                        let _ = writeln!(
                            out,
                            "    (call $report_bytes {} {} {ptr} {len})",
                            c(p),
                            c(n)
                        );
                    }
                    Check::Raw(wat) => {
                        let _ = writeln!(out, "    {wat}");
                    }
                }
            }
            if let Some(default) = default {
                let expr = body
                    .and_then(|b| b.result.clone())
                    .unwrap_or_else(|| c(default));
                let _ = writeln!(out, "    {expr}");
            }
            out.push_str("  )\n");
        }
        assert!(next <= DATA_END, "probe data area is full");
        for (ptr, bytes) in &data {
            let mut escaped = String::with_capacity(bytes.len() * 3);
            for b in bytes {
                let _ = write!(escaped, "\\{b:02x}");
            }
            let _ = writeln!(out, "  (data (i32.const {ptr}) \"{escaped}\")");
        }
        for field in &self.extra {
            let _ = writeln!(out, "  {field}");
        }
        out.push_str(")\n");
        out
    }

    /// Compiles the probe with the shared engine.
    ///
    /// # Panics
    /// As [`Probe::wat`].
    pub fn load(&self, config: PluginConfig) -> Result<Plugin, SpecError> {
        Ok(Plugin::load(&engine()?, self.wat().as_bytes(), config)?)
    }
}

/// ` (param i32 i32) (result i32)` for a signature (empty lists omitted).
pub fn signature_wat(params: &[ValType], results: &[ValType]) -> String {
    let list = |kw: &str, tys: &[ValType]| -> String {
        if tys.is_empty() {
            return String::new();
        }
        let names: Vec<String> = tys.iter().map(ToString::to_string).collect();
        format!(" ({kw} {})", names.join(" "))
    };
    format!("{}{}", list("param", params), list("result", results))
}

/// The fixed part of every probe: memory, allocator, reporting.
const PRELUDE: &str = r#"
  (memory (export "memory") 3)
  (global $heap (mut i32) (i32.const 0x20000))
  (global $len (mut i32) (i32.const 0))
  (global $allocs (mut i32) (i32.const 0))
  (global $last_size (mut i32) (i32.const -1))
  (func $alloc (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (global.set $allocs (i32.add (global.get $allocs) (i32.const 1)))
    (global.set $last_size (local.get $size))
    (call $alloc_hook (local.get $size))
    (if (i32.gt_u (local.get $size) (i32.const 0x10000000))
      (then (return (i32.const 0))))
    (local.set $p (global.get $heap))
    (local.set $end
      (i32.and (i32.add (i32.add (local.get $p) (local.get $size)) (i32.const 7))
               (i32.const -8)))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow
                (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have))
                                    (i32.const 0xFFFF))
                           (i32.const 16)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))
  (export "malloc" (func $alloc))
  (export "proxy_on_memory_allocate" (func $alloc))
  ;; Appends $n bytes at $p to the line buffer (0x1000.., at most 0x8000 bytes).
  (func $put (param $p i32) (param $n i32)
    (if (i32.gt_u (i32.add (global.get $len) (local.get $n)) (i32.const 0x8000))
      (then (local.set $n (i32.sub (i32.const 0x8000) (global.get $len)))))
    (memory.copy (i32.add (i32.const 0x1000) (global.get $len)) (local.get $p) (local.get $n))
    (global.set $len (i32.add (global.get $len) (local.get $n))))
  ;; Appends $v as unsigned decimal (digits built below 0x9100).
  (func $putu (param $v i32)
    (local $i i32)
    (local.set $i (i32.const 0x9100))
    (loop $digit
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (local.get $i)
        (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digit (local.get $v)))
    (call $put (local.get $i) (i32.sub (i32.const 0x9100) (local.get $i))))
  (func $start_line (param $lp i32) (param $ll i32)
    (global.set $len (i32.const 0))
    (call $put (i32.const 0x9200) (i32.const 6))
    (call $put (local.get $lp) (local.get $ll))
    (call $put (i32.const 0x9206) (i32.const 1)))
  (func $flush
    (drop (call $proxy_log (i32.const 5) (i32.const 0x1000) (global.get $len)))
    (global.set $len (i32.const 0)))
  (func $report_u32 (param $lp i32) (param $ll i32) (param $v i32)
    (call $start_line (local.get $lp) (local.get $ll))
    (call $putu (local.get $v))
    (call $flush))
  (func $report_bytes (param $lp i32) (param $ll i32) (param $p i32) (param $n i32)
    (call $start_line (local.get $lp) (local.get $ll))
    (call $put (local.get $p) (local.get $n))
    (call $flush))
  (data (i32.const 0x9200) "probe:=")
"#;

/// What a probe reported, parsed from captured logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeResults {
    entries: Vec<(String, Vec<u8>)>,
}

impl ProbeResults {
    /// Parses every `probe:<label>=<value>` line of `logs`, in order.
    pub fn from_logs(logs: &LogCapture) -> Self {
        let entries = logs
            .records()
            .into_iter()
            .filter(|r| r.level.as_u32() == LOG_LEVEL_CRITICAL)
            .filter_map(|r| {
                let rest = r.message.strip_prefix(b"probe:")?;
                let eq = rest.iter().position(|b| *b == b'=')?;
                let label = String::from_utf8_lossy(&rest[..eq]).into_owned();
                Some((label, rest[eq + 1..].to_vec()))
            })
            .collect();
        Self { entries }
    }

    /// Every (label, value) pair, in order.
    pub fn entries(&self) -> &[(String, Vec<u8>)] {
        &self.entries
    }

    /// The last value reported under `label`.
    pub fn bytes(&self, label: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .rev()
            .find(|(l, _)| l == label)
            .map(|(_, v)| v.as_slice())
    }

    /// The last value reported under `label`, as a number.
    pub fn value(&self, label: &str) -> Option<u32> {
        std::str::from_utf8(self.bytes(label)?).ok()?.parse().ok()
    }

    /// Every value reported under `label`, as numbers.
    pub fn values(&self, label: &str) -> Vec<u32> {
        self.entries
            .iter()
            .filter(|(l, _)| l == label)
            .filter_map(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
            .collect()
    }

    /// Every numeric (label, value) pair whose label starts with `prefix`.
    pub fn numbers_with_prefix(&self, prefix: &str) -> Vec<(String, u32)> {
        self.entries
            .iter()
            .filter(|(l, _)| l.starts_with(prefix))
            .filter_map(|(l, v)| Some((l.clone(), std::str::from_utf8(v).ok()?.parse().ok()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use vessel_host::{ContextId, LogLevel, LogRecord, LogSink};

    use super::*;

    fn log(logs: &LogCapture, level: LogLevel, message: &[u8]) {
        logs.log(&LogRecord {
            plugin: "p",
            level,
            context: ContextId::new(1),
            message,
        });
    }

    #[test]
    fn results_are_parsed_from_critical_probe_lines_only() {
        let logs = LogCapture::new();
        log(&logs, LogLevel::Critical, b"probe:a.b=12");
        log(&logs, LogLevel::Info, b"probe:a.b=99");
        log(&logs, LogLevel::Critical, b"probe:bytes=x=\xff");
        log(&logs, LogLevel::Critical, b"not a probe line");
        log(&logs, LogLevel::Critical, b"probe:a.b=13");
        let r = ProbeResults::from_logs(&logs);
        assert_eq!(r.entries().len(), 3);
        assert_eq!(r.value("a.b"), Some(13), "the last report wins");
        assert_eq!(r.values("a.b"), [12, 13]);
        assert_eq!(r.bytes("bytes"), Some(&b"x=\xff"[..]));
        assert_eq!(r.value("bytes"), None);
        assert_eq!(r.value("absent"), None);
    }

    #[test]
    fn data_is_placed_aligned_and_rendered() {
        let mut p = Probe::new();
        let a = p.bytes(b"abc");
        let b = p.bytes(b"\x00\xff");
        assert_eq!(
            a,
            Blob {
                ptr: DATA_START,
                len: 3
            }
        );
        assert_eq!(b.ptr, DATA_START + 8);
        assert_eq!(
            b.to_string(),
            format!("(i32.const {}) (i32.const 2)", DATA_START + 8)
        );
        p.on(Callback::Tick).status("t", "(i32.const 1)");
        let wat = p.wat();
        assert!(wat.contains(&format!("(data (i32.const {}) \"\\00\\ff\")", b.ptr)));
        assert!(wat.contains("(func (export \"proxy_abi_version_0_2_1\"))"));
        assert!(wat.contains("(func (export \"proxy_on_tick\") (param $a i32)"));
    }
}
