//! The `stream_events` oracle: arbitrary sequences of stream events against real SDK-built
//! guests (ABI reference §3, §6.3, §11.1–§11.3, §11.6, §11.11, §11.13, §11.15).
//!
//! # The guests
//!
//! The Rust SDK guests of `spec-tests/guests` ([`GUESTS`]: `http_call`, `bodies`, `headers`,
//! `ticks`, `queues`, `local_response`), each with a few plugin configurations. They must be
//! built (`spec-tests/guests/README.md`); a guest that is not built is skipped.
//!
//! To see which callbacks the host runs, [`instrument`] wraps every exported `proxy_on_*`
//! callback of the module: the wrapper first calls the guest's own `proxy_log` import at
//! CRITICAL with a length of [`TRACE_MARK`] plus the callback's number, then the original
//! callback. The host's log sink sees the line, with the context that was current; the
//! guest's code and memory are untouched.
//!
//! # The harness
//!
//! The input is a list of events: a new stream; request or response headers, body chunks
//! (with or without `end_of_stream`) and trailers on one of the live streams; the end of a
//! stream (a normal end or an abort: `finish_http_stream`); a tick; the answer to an HTTP
//! callout (200, 403 or a failed call); a queue notification. The harness plays Envoy's part
//! (ABI reference §11.1–§11.3): it sends a direction's body and trailers only after its
//! headers continued, a response only after the request headers continued, nothing after
//! `end_of_stream`; it follows the guest's `ContinueStream`, `LocalResponse` (the reply goes
//! through the guest's response callbacks, as in Envoy), `CloseStream`, `HttpCall`,
//! `TickPeriod` and `QueueReady` effects. At the end it ends every stream, fails every
//! callout still in flight and shuts the root context down.
//!
//! # The oracle
//!
//! * Nothing panics, and the guest never traps (these sequences are valid in Envoy).
//! * Each embedder call runs exactly the callbacks Envoy runs for it, on the right context,
//!   in order: `proxy_on_context_create` for a new stream; one callback per stream event;
//!   `proxy_on_log`, `proxy_on_done`, `proxy_on_delete` at the end of a stream; the root's
//!   `proxy_on_tick`, `proxy_on_http_call_response`, `proxy_on_queue_ready`; and
//!   `proxy_on_done`, `proxy_on_delete` at shutdown.
//! * Over the whole trace, every context starts with `proxy_on_context_create` and gets no
//!   callback after `proxy_on_delete`; a stream's request headers come before its request
//!   body and trailers (the same for the response).
//! * Effects name live contexts; `callouts_in_flight` is the number of callouts the
//!   embedder has not answered; the context count is back to 1 (the root) when every stream
//!   has ended and to 0 after shutdown.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arbitrary::{Result as ArbResult, Unstructured};
use vessel_abi::{FilterDataStatus, FilterHeadersStatus, FilterTrailersStatus, StreamType};
use vessel_host::{
    ContextId, Effect, Engine, EngineConfig, FixedClock, HeaderMap, HostEnv, HttpCallOutcome,
    HttpCallResponse, LogLevel, LogRecord, LogSink, Plugin, PluginConfig, QueueToken, Token, Vm,
    VmError,
};
use wasm_encoder::{CodeSection, ExportKind, ExportSection, FunctionSection, RawSection};
use wasmparser::{ExternalKind, Parser, Payload, TypeRef};

/// The guests and the plugin configurations the harness chooses from.
pub const GUESTS: &[(&str, &[&str])] = &[
    ("http_call", &[""]),
    (
        "bodies",
        &[
            "",
            "request=buffer,response=replace",
            "request=grow,response=shrink",
            "request=middle,response=append-max",
            "request=clear,response=prepend",
        ],
    ),
    ("headers", &[""]),
    ("ticks", &["10", "10,2"]),
    ("queues", &["", "other-queue"]),
    ("local_response", &[""]),
];

/// The length band of a trace line: `TRACE_MARK + callback number`.
pub const TRACE_MARK: usize = 60_000;

/// The callbacks [`instrument`] traces, numbered by position.
pub const CALLBACKS: &[&str] = &[
    "proxy_on_context_create",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_log",
    "proxy_on_done",
    "proxy_on_delete",
    "proxy_on_tick",
    "proxy_on_queue_ready",
    "proxy_on_http_call_response",
    "proxy_on_grpc_receive_initial_metadata",
    "proxy_on_grpc_receive",
    "proxy_on_grpc_receive_trailing_metadata",
    "proxy_on_grpc_close",
    "proxy_on_foreign_function",
    "proxy_on_new_connection",
    "proxy_on_downstream_data",
    "proxy_on_upstream_data",
    "proxy_on_downstream_connection_close",
    "proxy_on_upstream_connection_close",
];

/// A callback, by its number in [`CALLBACKS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Callback(pub usize);

impl Callback {
    fn named(name: &str) -> Self {
        Self(
            CALLBACKS
                .iter()
                .position(|c| *c == name)
                .expect("a traced callback"),
        )
    }

    /// The callback's export name.
    pub fn name(self) -> &'static str {
        CALLBACKS[self.0]
    }
}

impl std::fmt::Display for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a module could not be instrumented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentError(pub String);

impl From<wasmparser::BinaryReaderError> for InstrumentError {
    fn from(e: wasmparser::BinaryReaderError) -> Self {
        Self(e.to_string())
    }
}

/// What pass 1 of [`instrument`] learns about a module.
#[derive(Default)]
struct Shape {
    /// The parameter count of each function type (0 for non-function types).
    type_params: Vec<u32>,
    /// The type of each function, imports first.
    func_types: Vec<u32>,
    /// Imported functions.
    imported: usize,
    /// The function index of `env.proxy_log`.
    log_func: Option<u32>,
    /// (function index, callback number) of each exported callback.
    callbacks: Vec<(u32, usize)>,
}

fn shape(wasm: &[u8]) -> Result<Shape, InstrumentError> {
    let mut shape = Shape::default();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for sub in group?.into_types() {
                        shape.type_params.push(match &sub.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => f.params().len() as u32,
                            _ => 0,
                        });
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import?;
                    if let TypeRef::Func(ty) = import.ty {
                        if import.module == "env" && import.name == "proxy_log" {
                            shape.log_func = Some(shape.func_types.len() as u32);
                        }
                        shape.func_types.push(ty);
                        shape.imported += 1;
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    shape.func_types.push(ty?);
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export?;
                    if matches!(export.kind, ExternalKind::Func)
                        && let Some(cb) = CALLBACKS.iter().position(|c| *c == export.name)
                    {
                        shape.callbacks.push((export.index, cb));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(shape)
}

/// Wraps every exported callback of [`CALLBACKS`] so that it first logs a trace line (see
/// the module docs). The module must import `env.proxy_log`; every other byte of it is
/// kept, and the wrappers are appended after its functions, so no index moves.
pub fn instrument(wasm: &[u8]) -> Result<Vec<u8>, InstrumentError> {
    let shape = shape(wasm)?;
    let log_func = shape
        .log_func
        .ok_or_else(|| InstrumentError("no env.proxy_log import".into()))?;
    let total = shape.func_types.len() as u32;
    let defined = shape.func_types.len() - shape.imported;
    let mut wrappers = Vec::new(); // (original, type, params, callback)
    for &(func, cb) in &shape.callbacks {
        let ty = *shape
            .func_types
            .get(func as usize)
            .ok_or_else(|| InstrumentError(format!("no function {func}")))?;
        let params = *shape
            .type_params
            .get(ty as usize)
            .ok_or_else(|| InstrumentError(format!("no type {ty}")))?;
        wrappers.push((func, ty, params, cb));
    }

    let mut module = wasm_encoder::Module::new();
    let mut code: Option<CodeSection> = None;
    let mut saw_functions = false;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload?;
        match &payload {
            Payload::FunctionSection(reader) => {
                saw_functions = true;
                let mut section = FunctionSection::new();
                for ty in reader.clone() {
                    section.function(ty?);
                }
                for (_, ty, _, _) in &wrappers {
                    section.function(*ty);
                }
                module.section(&section);
            }
            Payload::ExportSection(reader) => {
                let mut section = ExportSection::new();
                for export in reader.clone() {
                    let export = export?;
                    let kind = match export.kind {
                        ExternalKind::Func | ExternalKind::FuncExact => ExportKind::Func,
                        ExternalKind::Table => ExportKind::Table,
                        ExternalKind::Memory => ExportKind::Memory,
                        ExternalKind::Global => ExportKind::Global,
                        ExternalKind::Tag => ExportKind::Tag,
                    };
                    let wrapped = wrappers.iter().position(|(f, _, _, cb)| {
                        *f == export.index && CALLBACKS[*cb] == export.name
                    });
                    let index = match wrapped {
                        Some(w) if kind == ExportKind::Func => total + w as u32,
                        _ => export.index,
                    };
                    section.export(export.name, kind, index);
                }
                module.section(&section);
            }
            Payload::CodeSectionStart { .. } => code = Some(CodeSection::new()),
            Payload::CodeSectionEntry(body) => {
                let section = code
                    .as_mut()
                    .ok_or_else(|| InstrumentError("code entry outside the code section".into()))?;
                section.raw(body.as_bytes());
                if section.len() as usize == defined {
                    for &(func, _, params, cb) in &wrappers {
                        section.function(&wrapper(func, params, cb, log_func));
                    }
                    module.section(&*section);
                    code = None;
                }
            }
            other => {
                if let Some((id, range)) = other.as_section() {
                    module.section(&RawSection {
                        id,
                        data: &wasm[range],
                    });
                }
            }
        }
    }
    if !saw_functions || code.is_some() {
        return Err(InstrumentError(
            "no complete function and code sections".into(),
        ));
    }
    Ok(module.finish())
}

/// `proxy_log(CRITICAL, 0, TRACE_MARK + cb); drop; original(params...)`.
fn wrapper(original: u32, params: u32, cb: usize, log_func: u32) -> wasm_encoder::Function {
    let mut f = wasm_encoder::Function::new([]);
    let mut sink = f.instructions();
    sink.i32_const(LogLevel::Critical.as_u32() as i32)
        .i32_const(0)
        .i32_const((TRACE_MARK + cb) as i32)
        .call(log_func)
        .drop();
    for p in 0..params {
        sink.local_get(p);
    }
    sink.call(original).end();
    f
}

/// The trace and the guest's other log lines.
#[derive(Debug, Default)]
struct Recorded {
    trace: Vec<(Callback, ContextId)>,
    lines: Vec<String>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Recorded>>);

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take_trace(&self) -> Vec<(Callback, ContextId)> {
        std::mem::take(&mut self.lock().trace)
    }
}

impl LogSink for Recorder {
    fn log(&self, record: &LogRecord<'_>) {
        let len = record.message.len();
        let mut r = self.lock();
        if record.level == LogLevel::Critical
            && (TRACE_MARK..TRACE_MARK + CALLBACKS.len()).contains(&len)
        {
            r.trace.push((Callback(len - TRACE_MARK), record.context));
        } else {
            if r.lines.len() >= 64 {
                r.lines.remove(0);
            }
            r.lines
                .push(String::from_utf8_lossy(record.message).into_owned());
        }
    }
}

/// The repository root (the fuzz crate's parent).
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Where a guest's module is built.
pub fn guest_path(name: &str) -> PathBuf {
    repo_root().join(format!(
        "spec-tests/guests/target/wasm32-wasip1/release/guest_{name}.wasm"
    ))
}

/// The instrumented, compiled guests that are built (index into [`GUESTS`], plugin).
pub fn plugins() -> &'static [(usize, Plugin)] {
    static PLUGINS: OnceLock<Vec<(usize, Plugin)>> = OnceLock::new();
    PLUGINS.get_or_init(|| {
        let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
        GUESTS
            .iter()
            .enumerate()
            .filter_map(|(i, (name, _))| {
                let wasm = std::fs::read(guest_path(name)).ok()?;
                let wasm = instrument(&wasm)
                    .unwrap_or_else(|e| panic!("cannot instrument guest_{name}: {e:?}"));
                let plugin = Plugin::load(&engine, &wasm, PluginConfig::named(*name))
                    .unwrap_or_else(|e| panic!("instrumented guest_{name} does not load: {e}"));
                Some((i, plugin))
            })
            .collect()
    })
}

/// Request header sets that steer the guests.
fn request_headers(choice: u8, extra: &[u8]) -> HeaderMap {
    let base: &[(&str, &str)] = match choice % 16 {
        0 => &[],
        1 => &[("x-token", "secret")],
        2 => &[("x-auth-cluster", "nowhere")],
        3 => &[(":path", "/local/headers")],
        4 => &[(":path", "/local/body")],
        5 => &[(":path", "/local/response")],
        6 => &[(":path", "/local/empty")],
        7 => &[(":path", "/local/multi")],
        8 => &[(":path", "/local/grpc")],
        9 => &[("x-body-mode", "replace"), ("x-resp-body-mode", "grow")],
        10 => &[("x-body-mode", "buffer"), ("x-resp-body-mode", "middle")],
        11 => &[
            (
                "x-op",
                "add,add-existing,replace,replace-new,remove,set-pairs",
            ),
            ("x-resp-op", "add,remove,add-trailer"),
            ("x-existing", "first"),
            ("x-drop", "1"),
        ],
        12 => &[("x-enqueue", "a,b,c")],
        13 => &[("x-enqueue", "x"), ("x-queue-vm-id", "other")],
        14 => &[("x-body-mode", "append-max"), ("x-resp-body-mode", "clear")],
        _ => &[("x-body-mode", "prepend"), ("x-resp-body-mode", "shrink")],
    };
    let mut map = HeaderMap::from_pairs([
        (":method", "POST"),
        (":path", "/"),
        (":authority", "example"),
        (":scheme", "http"),
    ]);
    for (k, v) in base {
        map.insert(k.as_bytes(), v.as_bytes());
    }
    if !extra.is_empty() {
        map.append(b"x-fuzz", extra);
    }
    map
}

/// One embedder event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A new stream.
    NewStream,
    /// Headers on the `stream`-th live stream.
    Headers {
        /// Stream pick.
        stream: u8,
        /// Response instead of request.
        response: bool,
        /// Which header set (request) or `:status` (response).
        choice: u8,
        /// `end_of_stream`.
        eos: bool,
    },
    /// A body chunk.
    Body {
        /// Stream pick.
        stream: u8,
        /// Response instead of request.
        response: bool,
        /// The chunk.
        data: Vec<u8>,
        /// `end_of_stream`.
        eos: bool,
    },
    /// Trailers.
    Trailers {
        /// Stream pick.
        stream: u8,
        /// Response instead of request.
        response: bool,
    },
    /// The stream ends (complete or aborted).
    Finish {
        /// Stream pick.
        stream: u8,
    },
    /// A tick, if a tick period is set.
    Tick,
    /// The answer to an HTTP callout in flight.
    Callout {
        /// Callout pick.
        pick: u8,
        /// 0: 200, 1: 403, else a failed call.
        outcome: u8,
    },
    /// A queue notification.
    QueueReady {
        /// Notification pick.
        pick: u8,
    },
}

/// A fuzz case: the guest, its configuration and the events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamInput {
    /// Guest pick (into the built guests).
    pub guest: u8,
    /// Configuration pick.
    pub config: u8,
    /// Extra request header value (empty: none).
    pub extra: Vec<u8>,
    /// The events.
    pub events: Vec<StreamEvent>,
}

impl StreamInput {
    /// Decodes a case from arbitrary bytes (never fails).
    pub fn from_bytes(data: &[u8]) -> Self {
        let mut u = Unstructured::new(data);
        let mut input = Self::default();
        let _ = input.fill(&mut u);
        input
    }

    fn fill(&mut self, u: &mut Unstructured<'_>) -> ArbResult<()> {
        self.guest = u.arbitrary()?;
        self.config = u.arbitrary()?;
        let n = u.int_in_range(0..=8u8)?;
        self.extra = (0..n).map(|_| u.arbitrary()).collect::<ArbResult<_>>()?;
        let count = u.int_in_range(0..=40u8)?;
        for _ in 0..count {
            let event = match u.int_in_range(0..=11u8)? {
                0 | 1 => StreamEvent::NewStream,
                2 | 3 => StreamEvent::Headers {
                    stream: u.arbitrary()?,
                    response: u.arbitrary()?,
                    choice: u.arbitrary()?,
                    eos: u.ratio(1, 4)?,
                },
                4 | 5 => {
                    let len = u.int_in_range(0..=24u8)?;
                    StreamEvent::Body {
                        stream: u.arbitrary()?,
                        response: u.arbitrary()?,
                        data: (0..len).map(|_| u.arbitrary()).collect::<ArbResult<_>>()?,
                        eos: u.arbitrary()?,
                    }
                }
                6 => StreamEvent::Trailers {
                    stream: u.arbitrary()?,
                    response: u.arbitrary()?,
                },
                7 => StreamEvent::Finish {
                    stream: u.arbitrary()?,
                },
                8 => StreamEvent::Tick,
                9 | 10 => StreamEvent::Callout {
                    pick: u.arbitrary()?,
                    outcome: u.arbitrary()?,
                },
                _ => StreamEvent::QueueReady {
                    pick: u.arbitrary()?,
                },
            };
            self.events.push(event);
        }
        Ok(())
    }
}

/// Where one direction of a stream is, from the filter's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Dir {
    /// No headers yet.
    #[default]
    NotStarted,
    /// The headers callback stopped; waiting for the guest to continue.
    Paused {
        /// The headers ended the direction.
        eos: bool,
    },
    /// Headers passed; body or trailers may follow.
    Open,
    /// Nothing more comes in this direction.
    Done,
}

#[derive(Debug, Clone, Default)]
struct Stream {
    id: ContextId,
    req: Dir,
    resp: Dir,
    /// A local reply is being or was sent.
    local_reply: bool,
    /// The stream was reset: only its end may follow.
    reset: bool,
}

impl Stream {
    fn dir(&mut self, response: bool) -> &mut Dir {
        if response {
            &mut self.resp
        } else {
            &mut self.req
        }
    }

    fn over(&self) -> bool {
        self.reset || (self.req == Dir::Done && self.resp == Dir::Done)
    }
}

fn check_order(trace: &[(Callback, ContextId)]) {
    #[derive(Default)]
    struct Seen {
        created: bool,
        deleted: bool,
        req_headers: bool,
        resp_headers: bool,
        logged: bool,
        done: bool,
    }
    let mut seen: HashMap<ContextId, Seen> = HashMap::new();
    for (i, &(cb, ctx)) in trace.iter().enumerate() {
        let s = seen.entry(ctx).or_default();
        let at = || format!("trace[{i}] {cb} on {ctx}: {trace:?}");
        assert!(!s.deleted, "callback after proxy_on_delete: {}", at());
        match cb.name() {
            "proxy_on_context_create" => {
                assert!(!s.created, "created twice: {}", at());
                s.created = true;
            }
            name => assert!(s.created, "{name} before proxy_on_context_create: {}", at()),
        }
        match cb.name() {
            "proxy_on_request_headers" => s.req_headers = true,
            "proxy_on_response_headers" => s.resp_headers = true,
            "proxy_on_request_body" | "proxy_on_request_trailers" => {
                assert!(s.req_headers, "request data before its headers: {}", at());
            }
            "proxy_on_response_body" | "proxy_on_response_trailers" => {
                assert!(s.resp_headers, "response data before its headers: {}", at());
            }
            "proxy_on_log" => s.logged = true,
            "proxy_on_done" => s.done = true,
            "proxy_on_delete" => {
                assert!(s.done, "proxy_on_delete before proxy_on_done: {}", at());
                s.deleted = true;
            }
            _ => {}
        }
        if s.logged {
            assert!(
                matches!(
                    cb.name(),
                    "proxy_on_log" | "proxy_on_done" | "proxy_on_delete"
                ),
                "a stream callback after proxy_on_log: {}",
                at()
            );
        }
    }
}

struct Harness<'a> {
    vm: Vm,
    recorder: Recorder,
    streams: Vec<Stream>,
    callouts: Vec<Token>,
    queues: Vec<(ContextId, QueueToken)>,
    /// The whole trace so far.
    trace: Vec<(Callback, ContextId)>,
    guest: &'a str,
}

impl Harness<'_> {
    fn root(&self) -> ContextId {
        self.vm.root_context()
    }

    /// Checks that `what` ran exactly `expected` and did not fail.
    fn expect<T>(
        &mut self,
        what: &str,
        result: Result<T, VmError>,
        expected: &[(Callback, ContextId)],
    ) -> T {
        let trace = self.recorder.take_trace();
        let lines = || self.recorder.lock().lines.join("\n");
        let value = match result {
            Ok(v) => v,
            Err(e) => panic!(
                "guest_{}: {what} failed: {e}\ntrace {trace:?}\nguest log:\n{}",
                self.guest,
                lines()
            ),
        };
        assert_eq!(
            trace, expected,
            "guest_{}: {what} ran the wrong callbacks",
            self.guest
        );
        self.trace.extend(trace);
        value
    }

    /// The stream a data event is for: the `pick`-th live one (a new one if none is live).
    /// If its request has not started, the request headers (set `choice`) are the event.
    /// `None` if the event is spent or the stream takes no more events but its end.
    fn advance(&mut self, pick: u8, choice: u8, eos: bool, extra: &[u8]) -> Option<usize> {
        if self.streams.is_empty() {
            self.apply(&StreamEvent::NewStream, extra);
        }
        let i = self.live(pick)?;
        let s = &self.streams[i];
        if s.over() {
            return None;
        }
        if s.req == Dir::NotStarted && !s.local_reply {
            self.headers(i, false, request_headers(choice, extra), eos, 0);
            return None;
        }
        Some(i)
    }

    /// Whether response headers may come now (Envoy: after the request headers went
    /// upstream, and not when a local reply replaced the response).
    fn response_may_start(&self, i: usize) -> bool {
        let s = &self.streams[i];
        !s.over()
            && !s.local_reply
            && s.resp == Dir::NotStarted
            && matches!(s.req, Dir::Open | Dir::Done)
    }

    fn live(&self, pick: u8) -> Option<usize> {
        (!self.streams.is_empty()).then(|| pick as usize % self.streams.len())
    }

    fn index_of(&self, id: ContextId) -> Option<usize> {
        self.streams.iter().position(|s| s.id == id)
    }

    fn check_counts(&self) {
        assert_eq!(
            self.vm.context_count(),
            1 + self.streams.len(),
            "guest_{}: contexts: the root and {} streams",
            self.guest,
            self.streams.len()
        );
        assert_eq!(
            self.vm.callouts_in_flight(),
            self.callouts.len(),
            "guest_{}: callouts in flight",
            self.guest
        );
    }

    /// Follows the effects of the last call; `depth` bounds local replies inside replies.
    fn effects(&mut self, depth: u32) {
        let effects: Vec<Effect> = self.vm.drain_effects().collect();
        let instance = self.vm.instance_id();
        let root = self.root();
        for effect in effects {
            match effect {
                Effect::ContinueStream { context, stream } => {
                    let i = self.index_of(context).unwrap_or_else(|| {
                        panic!("ContinueStream for {context}, not a live stream")
                    });
                    let s = &mut self.streams[i];
                    let dir = match stream {
                        StreamType::HttpRequest => &mut s.req,
                        StreamType::HttpResponse => &mut s.resp,
                        other => panic!("ContinueStream of {other:?}"),
                    };
                    if let Dir::Paused { eos } = *dir {
                        *dir = if eos { Dir::Done } else { Dir::Open };
                    }
                }
                Effect::CloseStream { context, .. } => {
                    let i = self
                        .index_of(context)
                        .unwrap_or_else(|| panic!("CloseStream for {context}, not a live stream"));
                    self.streams[i].reset = true;
                }
                Effect::LocalResponse { context, response } => {
                    let i = self.index_of(context).unwrap_or_else(|| {
                        panic!("LocalResponse for {context}, not a live stream")
                    });
                    let s = &mut self.streams[i];
                    s.req = Dir::Done;
                    let first = !s.local_reply;
                    s.local_reply = true;
                    match s.resp {
                        // The reply goes through this filter's encoder path (Envoy).
                        Dir::NotStarted | Dir::Paused { .. } if first && depth < 2 => {
                            let mut headers = response.headers.clone();
                            headers.insert(b":status", response.status.to_string().as_bytes());
                            let eos = response.body.is_empty();
                            s.resp = Dir::NotStarted;
                            self.headers(i, true, headers, eos, depth + 1);
                            if !eos && let Some(i) = self.index_of(context) {
                                let s = &self.streams[i];
                                if s.resp == Dir::Open {
                                    self.body(i, true, &response.body, true, depth + 1);
                                }
                            }
                            if let Some(i) = self.index_of(context) {
                                self.streams[i].resp = Dir::Done;
                            }
                        }
                        // Too late to replace the response: Envoy resets the stream.
                        _ => s.reset = true,
                    }
                }
                Effect::HttpCall { root: r, token, .. } => {
                    assert_eq!(r, root, "a callout belongs to the root context");
                    self.callouts.push(token);
                }
                Effect::QueueReady { vm, root: r, token } => {
                    if vm == instance {
                        assert_eq!(r, root, "queue notifications go to the root context");
                        self.queues.push((r, token));
                    }
                }
                Effect::TickPeriod { root: r, .. } => {
                    assert_eq!(r, root, "tick periods belong to the root context");
                }
                Effect::GrpcCall { .. }
                | Effect::GrpcStream { .. }
                | Effect::GrpcSend { .. }
                | Effect::GrpcCancel { .. }
                | Effect::GrpcClose { .. }
                | Effect::RedisCall { .. }
                | Effect::ClearRouteCache { .. } => {
                    panic!("guest_{}: unexpected effect {effect:?}", self.guest)
                }
                other => panic!(
                    "guest_{}: an effect this oracle does not know: {other:?}",
                    self.guest
                ),
            }
        }
    }

    fn headers(&mut self, i: usize, response: bool, map: HeaderMap, eos: bool, depth: u32) {
        let id = self.streams[i].id;
        let (name, r) = if response {
            (
                "proxy_on_response_headers",
                self.vm.on_response_headers(id, map, eos),
            )
        } else {
            (
                "proxy_on_request_headers",
                self.vm.on_request_headers(id, map, eos),
            )
        };
        let status = self.expect(name, r, &[(Callback::named(name), id)]);
        let dir = self.streams[i].dir(response);
        *dir = match status {
            FilterHeadersStatus::Continue if eos => Dir::Done,
            FilterHeadersStatus::Continue => Dir::Open,
            _ => Dir::Paused { eos },
        };
        if status == FilterHeadersStatus::Continue {
            let ty = if response {
                vessel_abi::MapType::HttpResponseHeaders
            } else {
                vessel_abi::MapType::HttpRequestHeaders
            };
            let _ = self.vm.take_headers(id, ty);
        }
        self.effects(depth);
    }

    fn body(&mut self, i: usize, response: bool, data: &[u8], eos: bool, depth: u32) {
        let id = self.streams[i].id;
        let (name, r) = if response {
            (
                "proxy_on_response_body",
                self.vm.on_response_body(id, data, eos),
            )
        } else {
            (
                "proxy_on_request_body",
                self.vm.on_request_body(id, data, eos),
            )
        };
        let status = self.expect(name, r, &[(Callback::named(name), id)]);
        if status == FilterDataStatus::Continue {
            let ty = if response {
                vessel_abi::BufferType::HttpResponseBody
            } else {
                vessel_abi::BufferType::HttpRequestBody
            };
            let _ = self.vm.take_body(id, ty);
        }
        if eos {
            *self.streams[i].dir(response) = Dir::Done;
        }
        self.effects(depth);
    }

    fn trailers(&mut self, i: usize, response: bool) {
        let id = self.streams[i].id;
        let map = HeaderMap::from_pairs([("x-trailer", "t")]);
        let (name, r) = if response {
            (
                "proxy_on_response_trailers",
                self.vm.on_response_trailers(id, map),
            )
        } else {
            (
                "proxy_on_request_trailers",
                self.vm.on_request_trailers(id, map),
            )
        };
        let _: FilterTrailersStatus = self.expect(name, r, &[(Callback::named(name), id)]);
        *self.streams[i].dir(response) = Dir::Done;
        self.effects(0);
    }

    fn finish(&mut self, i: usize) {
        let id = self.streams[i].id;
        let r = self.vm.finish_http_stream(id);
        self.expect(
            "finish_http_stream",
            r,
            &[
                (Callback::named("proxy_on_log"), id),
                (Callback::named("proxy_on_done"), id),
                (Callback::named("proxy_on_delete"), id),
            ],
        );
        self.streams.remove(i);
        self.effects(0);
    }

    fn answer(&mut self, pick: usize, outcome: u8) {
        let token = self.callouts.remove(pick % self.callouts.len());
        let outcome = match outcome % 3 {
            0 => HttpCallOutcome::Response(HttpCallResponse {
                headers: HeaderMap::from_pairs([(":status", "200"), ("x-auth-user", "alice")]),
                body: b"alice\n".to_vec(),
                trailers: HeaderMap::default(),
            }),
            1 => HttpCallOutcome::Response(HttpCallResponse {
                headers: HeaderMap::from_pairs([(":status", "403")]),
                body: Vec::new(),
                trailers: HeaderMap::from_pairs([("x-t", "1")]),
            }),
            _ => HttpCallOutcome::Failed {
                reason: "reset".into(),
            },
        };
        let r = self.vm.on_http_call_response(token, outcome);
        let root = self.root();
        self.expect(
            "on_http_call_response",
            r,
            &[(Callback::named("proxy_on_http_call_response"), root)],
        );
        self.effects(0);
    }

    fn apply(&mut self, event: &StreamEvent, extra: &[u8]) {
        match event {
            StreamEvent::NewStream => {
                if self.streams.len() >= 4 {
                    return;
                }
                let r = self.vm.create_http_context();
                let id = *r.as_ref().unwrap_or(&ContextId::new(0));
                self.expect(
                    "create_http_context",
                    r,
                    &[(Callback::named("proxy_on_context_create"), id)],
                );
                self.streams.push(Stream {
                    id,
                    ..Stream::default()
                });
            }
            StreamEvent::Headers {
                stream,
                response,
                choice,
                eos,
            } => {
                let Some(i) = self.advance(*stream, *choice, *eos, extra) else {
                    return;
                };
                if *response && self.response_may_start(i) {
                    let status = ["200", "404", "503", "204"][*choice as usize % 4];
                    let map = HeaderMap::from_pairs([(":status", status), ("content-length", "5")]);
                    self.headers(i, true, map, *eos, 0);
                }
            }
            StreamEvent::Body {
                stream,
                response,
                data,
                eos,
            } => {
                let Some(i) = self.advance(*stream, data.len() as u8, false, extra) else {
                    return;
                };
                let s = &mut self.streams[i];
                if (*response || !s.local_reply) && *s.dir(*response) == Dir::Open {
                    self.body(i, *response, data, *eos, 0);
                } else if *response && self.response_may_start(i) {
                    let map = HeaderMap::from_pairs([(":status", "200")]);
                    self.headers(i, true, map, false, 0);
                }
            }
            StreamEvent::Trailers { stream, response } => {
                let Some(i) = self.advance(*stream, 0, false, extra) else {
                    return;
                };
                let s = &mut self.streams[i];
                if *s.dir(*response) == Dir::Open && !s.local_reply {
                    self.trailers(i, *response);
                }
            }
            StreamEvent::Finish { stream } => {
                if let Some(i) = self.live(*stream) {
                    self.finish(i);
                }
            }
            StreamEvent::Tick => {
                if self.vm.tick_period_ms() == 0 {
                    return;
                }
                let r = self.vm.on_tick();
                let root = self.root();
                self.expect("on_tick", r, &[(Callback::named("proxy_on_tick"), root)]);
                self.effects(0);
            }
            StreamEvent::Callout { pick, outcome } => {
                if !self.callouts.is_empty() {
                    self.answer(*pick as usize, *outcome);
                }
            }
            StreamEvent::QueueReady { pick } => {
                if self.queues.is_empty() {
                    return;
                }
                let (root, token) = self.queues.remove(*pick as usize % self.queues.len());
                let r = self.vm.on_queue_ready(root, token);
                self.expect(
                    "on_queue_ready",
                    r,
                    &[(Callback::named("proxy_on_queue_ready"), root)],
                );
                self.effects(0);
            }
        }
        self.check_counts();
    }

    fn end(mut self) -> Vec<(Callback, ContextId)> {
        while !self.streams.is_empty() {
            self.finish(0);
        }
        self.check_counts();
        let mut rounds = 0;
        while !self.callouts.is_empty() || !self.queues.is_empty() {
            rounds += 1;
            assert!(rounds < 1000, "callouts and notifications never end");
            if !self.callouts.is_empty() {
                self.answer(0, 2);
            }
            if let Some((root, token)) = self.queues.pop() {
                let r = self.vm.on_queue_ready(root, token);
                self.expect(
                    "on_queue_ready",
                    r,
                    &[(Callback::named("proxy_on_queue_ready"), root)],
                );
                self.effects(0);
            }
        }
        self.check_counts();
        assert_eq!(self.vm.context_count(), 1, "only the root is left");
        let root = self.root();
        let r = self.vm.shutdown();
        let done = *r.as_ref().unwrap_or(&false);
        let mut expected = vec![(Callback::named("proxy_on_done"), root)];
        if done {
            expected.push((Callback::named("proxy_on_delete"), root));
        }
        let done = self.expect("shutdown", r, &expected);
        assert!(done, "the SDK's root context deletes at once");
        assert_eq!(self.vm.context_count(), 0, "the root context leaked");
        check_order(&self.trace);
        self.trace
    }
}

/// Runs `input` and checks it (see the module docs). Returns the whole trace, or `None` if
/// no guest is built.
pub fn run(input: &StreamInput) -> Option<Vec<(Callback, ContextId)>> {
    let plugins = plugins();
    if plugins.is_empty() {
        return None;
    }
    let (index, plugin) = &plugins[input.guest as usize % plugins.len()];
    let (name, configs) = GUESTS[*index];
    let config = configs[input.config as usize % configs.len()];
    let plugin = plugin.with_config(PluginConfig {
        configuration: config.as_bytes().to_vec(),
        vm_id: "fuzz".into(),
        ..PluginConfig::named(name)
    });
    let recorder = Recorder::default();
    let env = HostEnv::builder()
        .clock(FixedClock {
            wall_nanos: 1_700_000_000_000_000_000,
            monotonic_nanos: 7,
        })
        .log_sink(recorder.clone())
        .known_clusters(|c| c == "auth")
        .build();
    let vm = Vm::new(&plugin, &env);
    let mut h = Harness {
        vm: match vm {
            Ok(vm) => vm,
            Err(e) => panic!("guest_{name} with {config:?} does not start: {e}"),
        },
        recorder,
        streams: Vec::new(),
        callouts: Vec::new(),
        queues: Vec::new(),
        trace: Vec::new(),
        guest: name,
    };
    let root = h.root();
    h.expect(
        "Vm::new",
        Ok(()),
        &[
            (Callback::named("proxy_on_context_create"), root),
            (Callback::named("proxy_on_vm_start"), root),
            (Callback::named("proxy_on_configure"), root),
        ],
    );
    h.effects(0);
    h.check_counts();
    for event in &input.events {
        h.apply(event, &input.extra);
    }
    Some(h.end())
}

/// The fuzz entry point.
pub fn stream_events_oracle(data: &[u8]) {
    let _ = run(&StreamInput::from_bytes(data));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::XorShift;

    #[allow(clippy::print_stderr)]
    fn built() -> bool {
        if plugins().is_empty() {
            eprintln!(
                "skipped: no guest built under spec-tests/guests/target (see spec-tests/guests/README.md)"
            );
            return false;
        }
        true
    }

    /// The instrumented module keeps the original's imports and exports and traces each
    /// callback once.
    #[test]
    fn instrumentation_traces_callbacks() {
        if !built() {
            return;
        }
        let (_, plugin) = &plugins()[0];
        let exports: Vec<String> = plugin
            .module()
            .exports()
            .map(|e| e.name().to_owned())
            .collect();
        assert!(exports.iter().any(|e| e == "proxy_on_request_headers"));
        let recorder = Recorder::default();
        let env = HostEnv::builder().log_sink(recorder.clone()).build();
        let mut vm = Vm::new(plugin, &env).expect("vm");
        let root = vm.root_context();
        let s = vm.create_http_context().expect("stream");
        vm.finish_http_stream(s).expect("finish");
        let names: Vec<(&str, ContextId)> = recorder
            .take_trace()
            .into_iter()
            .map(|(cb, ctx)| (cb.name(), ctx))
            .collect();
        assert_eq!(
            names,
            vec![
                ("proxy_on_context_create", root),
                ("proxy_on_vm_start", root),
                ("proxy_on_configure", root),
                ("proxy_on_context_create", s),
                ("proxy_on_log", s),
                ("proxy_on_done", s),
                ("proxy_on_delete", s),
            ]
        );
    }

    #[test]
    fn instrumenting_needs_proxy_log() {
        let wasm =
            wat::parse_str("(module (func (export \"proxy_on_tick\") (param i32)))").expect("wat");
        assert!(instrument(&wasm).is_err());
        assert!(instrument(b"not wasm").is_err());
    }

    /// The order checker rejects a callback after `proxy_on_delete`, and a body before its
    /// headers.
    #[test]
    #[should_panic(expected = "after proxy_on_delete")]
    fn order_checker_rejects_callbacks_after_delete() {
        let c = ContextId::new(2);
        check_order(&[
            (Callback::named("proxy_on_context_create"), c),
            (Callback::named("proxy_on_done"), c),
            (Callback::named("proxy_on_delete"), c),
            (Callback::named("proxy_on_tick"), c),
        ]);
    }

    #[test]
    #[should_panic(expected = "request data before its headers")]
    fn order_checker_rejects_body_before_headers() {
        let c = ContextId::new(2);
        check_order(&[
            (Callback::named("proxy_on_context_create"), c),
            (Callback::named("proxy_on_request_body"), c),
        ]);
    }

    /// A hand-written full exchange on every guest and configuration.
    #[test]
    fn every_guest_serves_a_full_exchange() {
        if !built() {
            return;
        }
        for (g, (index, _)) in plugins().iter().enumerate() {
            for c in 0..GUESTS[*index].1.len() {
                for choice in 0..16u8 {
                    let events = vec![
                        StreamEvent::NewStream,
                        StreamEvent::Headers {
                            stream: 0,
                            response: false,
                            choice,
                            eos: false,
                        },
                        StreamEvent::Body {
                            stream: 0,
                            response: false,
                            data: b"hello".to_vec(),
                            eos: true,
                        },
                        StreamEvent::Callout {
                            pick: 0,
                            outcome: choice,
                        },
                        StreamEvent::Tick,
                        StreamEvent::QueueReady { pick: 0 },
                        StreamEvent::Headers {
                            stream: 0,
                            response: true,
                            choice,
                            eos: false,
                        },
                        StreamEvent::Body {
                            stream: 0,
                            response: true,
                            data: b"world".to_vec(),
                            eos: false,
                        },
                        StreamEvent::Trailers {
                            stream: 0,
                            response: true,
                        },
                        StreamEvent::Finish { stream: 0 },
                    ];
                    let trace = run(&StreamInput {
                        guest: g as u8,
                        config: c as u8,
                        extra: Vec::new(),
                        events,
                    })
                    .expect("built");
                    assert!(trace.len() >= 7, "{trace:?}");
                }
            }
        }
    }

    #[test]
    fn oracle_over_seeds() {
        if !built() {
            return;
        }
        for seed in crate::seeds().step_by(8) {
            stream_events_oracle(&seed);
        }
        let mut rng = XorShift::new(0x57_4EA7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..300 {
            let len = rng.below(400);
            let trace = run(&StreamInput::from_bytes(&rng.bytes(len))).expect("built");
            seen.extend(trace.into_iter().map(|(cb, _)| cb.name()));
        }
        // The seeds reach every callback the guests have events for.
        for cb in &CALLBACKS[..15] {
            assert!(seen.contains(cb), "no seed runs {cb}: {seen:?}");
        }
    }
}
