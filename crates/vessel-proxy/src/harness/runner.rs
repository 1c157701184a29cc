//! Runs scenarios in-process: one VM per scenario file, the streams one
//! after another, with a canned upstream and canned callouts. The stream
//! driver reproduces Envoy's filter-manager behaviour for one filter:
//! header and body pauses, body buffering with a limit (413/500), local
//! replies from any phase (and the filter's own encode callbacks for them),
//! `on_log`/`on_done`/`on_delete` for every stream, and Envoy's failure
//! policies once the VM fails (ABI reference §6.6). The stream whose
//! callback failed gets a 503 (or a reset once the response started) under
//! every policy, as in Envoy; later streams get a 503 (FAIL_CLOSED), pass
//! as if the filter were absent (FAIL_OPEN), or get a fresh VM (FAIL_RELOAD,
//! with no backoff). Redis calls (Higress
//! 0.2.100) go to a real Redis server when the scenario names one for the
//! cluster.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vessel_host::{
    BufferType, ContextId, Effect, Engine, EngineConfig, FilterDataStatus, FilterHeadersStatus,
    FilterTrailersStatus, HeaderMap, HostEnv, HttpCallOutcome, HttpCallResponse, Limits,
    LocalResponse, LogLevel, LogRecord, LogSink, MapType, Plugin, PluginConfig, PropertyMap,
    PropertyValue, RedisCallOutcome, RedisCallRequest, StreamType, Vm, VmError,
};

use super::scenario::{
    CannedResponse, FailurePolicySpec, Headers, LimitsSpec, PropertyScalar, Scenario, Stream,
};
use super::{Error, Observation, ObservedMessage};

/// Default buffer limit: Envoy's `per_connection_buffer_limit_bytes` default.
pub const DEFAULT_BUFFER_LIMIT: usize = 1 << 20;

/// The body of Envoy's 503 for a call to an endpoint that refuses the
/// connection.
pub(super) const UNREACHABLE_BODY: &str = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";

/// Upper bound on effect rounds per callback, so a filter that starts a new
/// callout from every callout response cannot hang the harness.
const MAX_EFFECT_ROUNDS: usize = 10_000;

#[derive(Default)]
struct Capture {
    lines: Mutex<Vec<(LogLevel, String)>>,
}

impl LogSink for Capture {
    fn log(&self, record: &LogRecord<'_>) {
        let line = String::from_utf8_lossy(record.message).into_owned();
        if let Ok(mut l) = self.lines.lock() {
            l.push((record.level, line));
        }
    }
}

impl Capture {
    fn len(&self) -> usize {
        self.lines.lock().map_or(0, |l| l.len())
    }
    fn since(&self, start: usize) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| {
                l[start.min(l.len())..]
                    .iter()
                    .map(|(_, m)| m.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn to_map(h: &Headers) -> HeaderMap {
    HeaderMap::from_pairs(h.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn property(v: &PropertyScalar) -> PropertyValue {
    match v {
        PropertyScalar::Bool(b) => PropertyValue::Bool(*b),
        PropertyScalar::Int(i) => PropertyValue::Int(*i),
        PropertyScalar::Str(s) => PropertyValue::from(s.as_str()),
    }
}

/// A loaded scenario: its file, its VM and its captured logs.
pub struct Loaded {
    /// The scenario.
    pub scenario: Scenario,
    /// Where it was read from.
    pub path: PathBuf,
    vm: Result<Vm, VmError>,
    capture: Arc<Capture>,
    properties: PropertyMap,
    /// Kept to build a fresh VM under FAIL_RELOAD.
    plugin: Plugin,
    env: HostEnv,
    policy: FailurePolicySpec,
    /// The failure of the VM that FAIL_RELOAD replaced, still reported for
    /// later streams (as the real backends report it: a plugin's failure
    /// shows in its log for good).
    last_failure: Option<String>,
}

/// The plugin's [`Limits`] from `plugin.limits`, checked against the
/// engine; the `Err` is `(key, message)`.
fn limits_of(spec: Option<&LimitsSpec>, engine: &Engine) -> Result<Limits, (String, String)> {
    let mut limits = Limits::default();
    let Some(spec) = spec else {
        return Ok(limits);
    };
    let bad = |key: &str, message: String| (format!("plugin.limits.{key}"), message);
    if let Some(m) = spec.memory_bytes {
        let max = engine.config().max_memory_bytes;
        if m == 0 || m > max {
            return Err(bad(
                "memory_bytes",
                format!("{m} is not between 1 and the engine's ceiling of {max} bytes"),
            ));
        }
        limits.memory_bytes = m;
    }
    if let Some(ms) = spec.callback_timeout_ms {
        if ms == 0 {
            return Err(bad("callback_timeout_ms", "must be at least 1".into()));
        }
        limits.callback_timeout = Some(std::time::Duration::from_millis(ms));
    }
    if let Some(fuel) = spec.fuel_per_callback {
        if fuel == 0 {
            return Err(bad("fuel_per_callback", "must be at least 1".into()));
        }
        limits.fuel_per_callback = Some(fuel);
    }
    Ok(limits)
}

impl Loaded {
    /// Parses and loads a scenario file: reads the YAML, loads the plugin
    /// and starts its VM. A VM that fails to start is kept as an error so
    /// each stream can report it.
    pub fn from_file(engine: &Engine, path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let scenario: Scenario = serde_yaml::from_str(&text).map_err(|e| Error::Yaml {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::new(engine, path, scenario)
    }

    /// Loads an already parsed scenario; `path` anchors the relative wasm path.
    pub fn new(engine: &Engine, path: &Path, scenario: Scenario) -> Result<Self, Error> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let wasm_path = dir.join(&scenario.plugin.wasm);
        let wasm = std::fs::read(&wasm_path).map_err(|e| Error::Plugin {
            path: path.to_owned(),
            wasm: wasm_path.clone(),
            message: format!("cannot read it: {e}"),
        })?;
        let spec = &scenario.plugin;
        let log_level = match &spec.log_level {
            Some(l) => l.parse::<LogLevel>().map_err(|_| Error::Invalid {
                path: path.to_owned(),
                key: "plugin.log_level".into(),
                message: format!("`{l}` is not one of trace, debug, info, warn, error, critical"),
            })?,
            None => LogLevel::Trace,
        };
        let name = spec.name.clone().unwrap_or_else(|| {
            wasm_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let invalid = |(key, message): (String, String)| Error::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        // Fuel needs an engine compiled with fuel metering: a scenario that
        // sets `fuel_per_callback` gets an engine of its own.
        let fuel_engine;
        let engine = match spec.limits.as_ref().and_then(|l| l.fuel_per_callback) {
            Some(_) if !engine.config().consume_fuel => {
                fuel_engine = Engine::new(EngineConfig {
                    consume_fuel: true,
                    pooling: None,
                    ..engine.config().clone()
                })
                .map_err(|e| {
                    invalid((
                        "plugin.limits.fuel_per_callback".into(),
                        format!("cannot build an engine with fuel metering: {e}"),
                    ))
                })?;
                &fuel_engine
            }
            _ => engine,
        };
        let limits = limits_of(spec.limits.as_ref(), engine).map_err(invalid)?;
        let environment = match &spec.environment {
            Some(e) => e.resolve().map_err(invalid)?,
            None => Vec::new(),
        };
        if let Some(caps) = &spec.allowed_capabilities
            && let Some(i) = caps.iter().position(String::is_empty)
        {
            return Err(invalid((
                format!("plugin.allowed_capabilities[{i}]"),
                "a capability name must not be empty".into(),
            )));
        }
        let config = PluginConfig {
            name,
            root_id: spec.root_id.clone(),
            vm_id: spec.vm_id.clone(),
            vm_configuration: spec.vm_configuration.clone().into_bytes(),
            configuration: spec.configuration.clone().into_bytes(),
            log_level,
            allow_on_headers_stop_iteration: spec.allow_on_headers_stop_iteration,
            environment,
            limits,
            allowed_capabilities: spec.allowed_capabilities.clone(),
            ..PluginConfig::default()
        };
        let plugin = Plugin::load(engine, &wasm, config).map_err(|e| Error::Plugin {
            path: path.to_owned(),
            wasm: wasm_path.clone(),
            message: e.to_string(),
        })?;
        for (cname, c) in &scenario.clusters {
            let invalid = |message: String| Error::Invalid {
                path: path.to_owned(),
                key: format!("clusters.{cname}.redis"),
                message,
            };
            if let Some(addr) = c.redis_address().map_err(invalid)?
                && c.redis_flush
            {
                flush_redis(addr).map_err(invalid)?;
            }
        }
        let capture = Arc::new(Capture::default());
        let clusters: Vec<String> = scenario.clusters.keys().cloned().collect();
        let mut env = HostEnv::builder()
            .log_sink_arc(capture.clone())
            .known_clusters(move |c| clusters.iter().any(|k| k == c));
        for (name, result) in &scenario.foreign_functions {
            let bytes = result.clone().into_bytes();
            env = env.foreign_function(name.clone(), move |_: &[u8]| Ok(bytes.clone()));
        }
        let env = env.build();
        let mut properties = PropertyMap::new();
        for (k, v) in &scenario.properties {
            properties.insert_dotted(k, property(v));
        }
        let vm = Vm::new(&plugin, &env);
        let policy = scenario.plugin.failure_policy.unwrap_or_default();
        Ok(Self {
            scenario,
            path: path.to_owned(),
            vm,
            capture,
            properties,
            plugin,
            env,
            policy,
            last_failure: None,
        })
    }

    /// Runs every stream and returns one observation per stream.
    pub fn run(&mut self) -> Vec<Observation> {
        let streams = self.scenario.streams.clone();
        streams
            .iter()
            .enumerate()
            .map(|(i, s)| self.run_stream(s, i == 0))
            .collect()
    }

    /// Runs one stream. The first stream's logs also hold what the VM
    /// logged while it started (`on_vm_start`, `on_configure`).
    fn run_stream(&mut self, stream: &Stream, first: bool) -> Observation {
        let start = if first { 0 } else { self.capture.len() };
        let mut obs = Observation::default();
        let failed = match &self.vm {
            Ok(vm) => vm.failure().map(ToString::to_string),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = failed {
            match self.policy {
                FailurePolicySpec::FailReload if self.vm.is_ok() => {
                    // Envoy reloads only a VM that failed at run time (a
                    // trap), not one that never started. vessel test uses
                    // no backoff: the next stream gets the fresh VM.
                    self.vm = Vm::new(&self.plugin, &self.env);
                    self.last_failure = Some(why);
                }
                FailurePolicySpec::FailOpen => {
                    obs.vm_failure = Some(why);
                    pass_through(stream, &mut obs);
                    obs.logs = self.capture.since(start);
                    return obs;
                }
                _ => {}
            }
        }
        let vm = match &mut self.vm {
            Ok(vm) => vm,
            Err(e) => {
                // The VM never started: every stream fails closed, as it
                // would after a trap.
                obs.vm_failure = Some(e.to_string());
                obs.response = Some(fail_closed());
                obs.logs = self.capture.since(start);
                return obs;
            }
        };
        let mut driver = Driver {
            vm,
            ctx: ContextId::new(0),
            scenario: &self.scenario,
            continued: [false; 2],
            local: None,
            grpc: vessel_host::is_grpc_request(&to_map(&stream.request.headers)),
            response_started: false,
            reset: false,
            limit: self.scenario.buffer_limit.unwrap_or(DEFAULT_BUFFER_LIMIT),
            obs: &mut obs,
        };
        let result = driver.run(stream, &self.properties);
        let ctx = driver.ctx;
        let response_started = driver.response_started;
        if let Err(e) = result {
            obs.vm_failure = Some(e.to_string());
            // The stream whose callback failed fails closed under every
            // policy, as in Envoy: its in-VM check (cpp-host `CHECK_FAIL`)
            // reads only the deprecated `fail_open`, and `failure_policy`
            // acts when the filter is created for a later stream. A 503
            // local reply, or a reset once response headers went downstream.
            if ctx == ContextId::new(0) && self.policy == FailurePolicySpec::FailOpen {
                // The VM failed before this stream reached the filter (in a
                // tick): the stream starts on a failed VM.
                pass_through(stream, &mut obs);
            } else if response_started {
                obs.reset = true;
            } else if obs.response.is_none() && !obs.reset {
                obs.response = Some(fail_closed());
            }
        }
        if ctx != ContextId::new(0)
            && let Ok(vm) = &mut self.vm
            && let Err(e) = vm.finish_http_stream(ctx)
        {
            obs.vm_failure.get_or_insert_with(|| e.to_string());
        }
        if obs.vm_failure.is_none() {
            obs.vm_failure.clone_from(&self.last_failure);
        }
        obs.logs = self.capture.since(start);
        obs
    }
}

/// Sends `FLUSHALL` to the Redis server at `addr` (a scenario's
/// `redis_flush`), bounded in time.
pub(crate) fn flush_redis(addr: std::net::SocketAddr) -> Result<(), String> {
    use std::io::{Read, Write};
    let t = std::time::Duration::from_secs(2);
    let fail = |e: std::io::Error| format!("FLUSHALL on {addr}: {e}");
    let mut s = std::net::TcpStream::connect_timeout(&addr, t).map_err(fail)?;
    s.set_read_timeout(Some(t)).map_err(fail)?;
    s.write_all(b"*1\r\n$8\r\nFLUSHALL\r\n").map_err(fail)?;
    let mut reply = [0u8; 64];
    let n = s.read(&mut reply).map_err(fail)?;
    if reply[..n].starts_with(b"+OK") {
        Ok(())
    } else {
        Err(format!(
            "FLUSHALL on {addr}: {}",
            String::from_utf8_lossy(&reply[..n]).trim_end()
        ))
    }
}

/// Carries out a Redis call against the scenario's real server, on a
/// short-lived runtime of its own (the harness is synchronous).
fn redis_call(addr: std::net::SocketAddr, call: &RedisCallRequest) -> RedisCallOutcome {
    let run = || match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(vessel_hyper::redis::call(
            addr,
            call,
            &vessel_hyper::redis::IdleConnections::default(),
        )),
        Err(_) => RedisCallOutcome::Failed,
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        // Inside a runtime (an async caller): block another thread instead.
        std::thread::scope(|s| s.spawn(run).join().unwrap_or(RedisCallOutcome::Failed))
    } else {
        run()
    }
}

/// FAIL_OPEN for a stream that starts on a failed VM: it passes as if the
/// filter were absent. The request goes upstream as the client sent it; the
/// upstream's answer reaches the client unchanged.
fn pass_through(stream: &Stream, obs: &mut Observation) {
    let req = &stream.request;
    if obs.upstream_request.is_none() {
        let body = match (&req.body, &req.chunks) {
            (_, Some(c)) => c.concat(),
            (Some(b), None) => b.clone(),
            (None, None) => String::new(),
        };
        obs.upstream_request = Some(ObservedMessage {
            status: None,
            headers: req.headers.clone(),
            body,
            trailers: req.trailers.clone().unwrap_or_default(),
        });
    }
    let up = stream.upstream.clone().unwrap_or_else(|| CannedResponse {
        headers: vec![(":status".into(), "200".into())],
        ..CannedResponse::default()
    });
    obs.response = Some(ObservedMessage {
        status: up
            .headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| v.parse().ok()),
        headers: up.headers.clone(),
        body: up.body.clone(),
        trailers: up.trailers.clone(),
    });
}

/// Envoy's fail-closed answer for a failed VM (`wasm_fail_stream`): a 503
/// with no body that skips the filter's encode callbacks.
fn fail_closed() -> ObservedMessage {
    ObservedMessage {
        status: Some(503),
        headers: vec![(":status".into(), "503".into())],
        ..ObservedMessage::default()
    }
}

struct Driver<'a> {
    vm: &'a mut Vm,
    ctx: ContextId,
    scenario: &'a Scenario,
    /// A `ContinueStream` arrived for the request / response direction.
    continued: [bool; 2],
    local: Option<LocalResponse>,
    /// The client's request is gRPC (local replies become gRPC replies).
    grpc: bool,
    /// Response headers went downstream (the filter continued them).
    response_started: bool,
    reset: bool,
    limit: usize,
    obs: &'a mut Observation,
}

enum Step {
    Go,
    Stop,
}

fn map_to_headers(map: &HeaderMap) -> Headers {
    map.iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

fn canned_outcome(c: &CannedResponse) -> HttpCallOutcome {
    if c.reset {
        return HttpCallOutcome::Failed {
            reason: "reset".into(),
        };
    }
    if c.unreachable {
        // Envoy's router answers a call to an endpoint that refuses the
        // connection itself (the async client's `onSuccess` with a 503).
        let body = UNREACHABLE_BODY;
        return HttpCallOutcome::Response(HttpCallResponse {
            headers: HeaderMap::from_pairs([
                (":status", "503"),
                ("content-length", body.len().to_string().as_str()),
                ("content-type", "text/plain"),
            ]),
            body: body.as_bytes().to_vec(),
            trailers: HeaderMap::new(),
        });
    }
    if c.timeout {
        return HttpCallOutcome::Response(HttpCallResponse {
            headers: HeaderMap::from_pairs([(":status", "504"), ("content-type", "text/plain")]),
            body: b"upstream request timeout".to_vec(),
            trailers: HeaderMap::new(),
        });
    }
    HttpCallOutcome::Response(HttpCallResponse {
        headers: to_map(&c.headers),
        body: c.body.clone().into_bytes(),
        trailers: to_map(&c.trailers),
    })
}

impl Driver<'_> {
    /// A trap in a root-context callback (callout response, queue) fails
    /// the VM but not this stream at once: as in Envoy, the stream fails
    /// closed at its own next callback, or stays paused.
    fn root_callback(&mut self, result: Result<(), VmError>) {
        if let Err(e) = result {
            self.obs.vm_failure.get_or_insert_with(|| e.to_string());
        }
    }

    fn pump(&mut self) -> Result<(), VmError> {
        for _ in 0..MAX_EFFECT_ROUNDS {
            let effects: Vec<Effect> = self.vm.drain_effects().collect();
            if effects.is_empty() {
                return Ok(());
            }
            for effect in effects {
                match effect {
                    Effect::ContinueStream { context, stream } if context == self.ctx => {
                        match stream {
                            StreamType::HttpRequest => self.continued[0] = true,
                            StreamType::HttpResponse => self.continued[1] = true,
                            _ => {}
                        }
                    }
                    Effect::CloseStream { context, .. } if context == self.ctx => self.reset = true,
                    Effect::LocalResponse { context, response } if context == self.ctx => {
                        self.local.get_or_insert(response);
                    }
                    Effect::HttpCall { token, request, .. } => {
                        let outcome = match self.scenario.clusters.get(&request.upstream) {
                            Some(c) => canned_outcome(c),
                            None => HttpCallOutcome::Failed {
                                reason: "reset".into(),
                            },
                        };
                        let r = self.vm.on_http_call_response(token, outcome);
                        self.root_callback(r);
                    }
                    Effect::GrpcCall { token, call, .. } => {
                        let cluster = String::from_utf8_lossy(&call.upstream).into_owned();
                        match self.scenario.clusters.get(&cluster) {
                            Some(c) if !c.reset && c.grpc_status.unwrap_or(0) == 0 => {
                                // Envoy's unary success: the message, no close.
                                self.vm
                                    .on_grpc_receive(token, c.body.clone().into_bytes())?;
                            }
                            Some(c) => {
                                let status = if c.reset {
                                    14
                                } else {
                                    c.grpc_status.unwrap_or(14)
                                };
                                self.vm.on_grpc_close(token, status, &c.body)?;
                            }
                            None => self.vm.on_grpc_close(token, 14, "no such cluster")?,
                        }
                    }
                    Effect::RedisCall { token, call, .. } => {
                        let addr = self
                            .scenario
                            .clusters
                            .get(&call.cluster)
                            .and_then(|c| c.redis_address().ok().flatten());
                        let outcome = match addr {
                            Some(addr) => redis_call(addr, &call),
                            None => RedisCallOutcome::Failed,
                        };
                        let r = self.vm.on_redis_call_response(token, outcome);
                        self.root_callback(r);
                    }
                    Effect::GrpcStream { token, .. } => {
                        // `vessel test` has no canned gRPC streams yet.
                        self.vm
                            .on_grpc_close(token, 14, "vessel test: no gRPC streams")?;
                    }
                    Effect::QueueReady { vm, root, token } if vm == self.vm.instance_id() => {
                        let r = self.vm.on_queue_ready(root, token);
                        self.root_callback(r);
                    }
                    _ => {}
                }
            }
        }
        self.obs.stalled = Some(format!(
            "the filter kept starting callouts; gave up after {MAX_EFFECT_ROUNDS} rounds"
        ));
        Ok(())
    }

    fn run(&mut self, stream: &Stream, properties: &PropertyMap) -> Result<(), VmError> {
        for _ in 0..stream.ticks_before {
            // A timer fires only while the root context has a tick period
            // (ABI reference §11.13: a period of 0 cancels it).
            if self.vm.tick_period_ms() == 0 {
                continue;
            }
            self.vm.on_tick()?;
            self.pump()?;
        }
        self.ctx = self.vm.create_http_context_with(properties.clone())?;
        self.pump()?;
        let req = &stream.request;
        let chunks: Vec<&[u8]> = match (&req.body, &req.chunks) {
            (_, Some(c)) => c.iter().map(|s| s.as_bytes()).collect(),
            (Some(b), None) => vec![b.as_bytes()],
            (None, None) => Vec::new(),
        };
        let trailers = req.trailers.as_ref().map(to_map);
        let forwarded = self.direction(0, to_map(&req.headers), &chunks, trailers)?;
        let Some((headers, body, trailers)) = forwarded else {
            return self.finish_without_upstream();
        };
        self.obs.upstream_request = Some(ObservedMessage {
            status: None,
            headers: map_to_headers(&headers),
            body: String::from_utf8_lossy(&body).into_owned(),
            trailers: map_to_headers(&trailers),
        });
        let default = CannedResponse {
            headers: vec![(":status".into(), "200".into())],
            ..CannedResponse::default()
        };
        let up = stream.upstream.as_ref().unwrap_or(&default);
        let body = up.body.as_bytes();
        let chunks: Vec<&[u8]> = if body.is_empty() {
            Vec::new()
        } else {
            vec![body]
        };
        let trailers = (!up.trailers.is_empty()).then(|| to_map(&up.trailers));
        let response = self.direction(1, to_map(&up.headers), &chunks, trailers)?;
        match response {
            Some((h, b, t)) => self.respond(h, b, t),
            None => self.finish_without_upstream(),
        }
    }

    /// After the request or response direction stopped for good: a local
    /// reply, a reset, or a stall.
    fn finish_without_upstream(&mut self) -> Result<(), VmError> {
        if let Some(reply) = self.local.take() {
            return self.local_reply(reply);
        }
        if self.reset {
            self.obs.reset = true;
            return Ok(());
        }
        if self.obs.stalled.is_none() {
            self.obs.stalled = Some("the filter paused the stream and nothing resumed it".into());
        }
        Ok(())
    }

    fn respond(
        &mut self,
        headers: HeaderMap,
        body: Vec<u8>,
        trailers: HeaderMap,
    ) -> Result<(), VmError> {
        let status = headers
            .get_str(":status")
            .and_then(|s| s.parse::<u16>().ok());
        self.obs.response = Some(ObservedMessage {
            status,
            headers: map_to_headers(&headers),
            body: String::from_utf8_lossy(&body).into_owned(),
            trailers: map_to_headers(&trailers),
        });
        Ok(())
    }

    /// Sends a local reply through the filter's encode callbacks, as Envoy
    /// does (ABI reference §11.3). Shaped as Envoy's
    /// `Utility::prepareLocalReply`: for a gRPC request a headers-only
    /// `200` with `grpc-status` and `grpc-message` (the body), otherwise the
    /// status and body with `content-type: text/plain` if the guest set
    /// none (the gRPC status is then ignored).
    fn local_reply(&mut self, reply: LocalResponse) -> Result<(), VmError> {
        let (headers, body) = reply.to_response(self.grpc);
        if self.response_started {
            // Envoy's `sendLocalReply` once response headers were sent
            // downstream: it can only reset the stream.
            self.obs.reset = true;
            return Ok(());
        }
        if self.obs.in_response_phase {
            // The reply replaces a response the filter was processing
            // (Envoy's `sendDirectLocalReply`).
            return self.respond(headers, body, HeaderMap::new());
        }
        self.obs.in_response_phase = true;
        let chunks: Vec<&[u8]> = if body.is_empty() {
            Vec::new()
        } else {
            vec![&body]
        };
        match self.direction(1, headers.clone(), &chunks, None)? {
            Some((h, b, t)) => self.respond(h, b, t),
            None => self.respond(headers, body.clone(), HeaderMap::new()),
        }
    }

    /// Runs one direction (0 request, 1 response) through the filter.
    /// Returns what passes the filter, or `None` if the filter stopped it
    /// for good (local reply, reset, stall).
    fn direction(
        &mut self,
        dir: usize,
        headers: HeaderMap,
        chunks: &[&[u8]],
        trailers: Option<HeaderMap>,
    ) -> Result<Option<(HeaderMap, Vec<u8>, HeaderMap)>, VmError> {
        let (hty, bty, tty) = if dir == 0 {
            (
                MapType::HttpRequestHeaders,
                BufferType::HttpRequestBody,
                MapType::HttpRequestTrailers,
            )
        } else {
            self.obs.in_response_phase = true;
            (
                MapType::HttpResponseHeaders,
                BufferType::HttpResponseBody,
                MapType::HttpResponseTrailers,
            )
        };
        let has_trailers = trailers.is_some();
        let eos = chunks.is_empty() && !has_trailers;
        self.continued[dir] = false;
        let st = if dir == 0 {
            self.vm.on_request_headers(self.ctx, headers, eos)?
        } else {
            self.vm.on_response_headers(self.ctx, headers, eos)?
        };
        self.pump()?;
        if self.local.is_some() || self.reset {
            return Ok(None);
        }
        if st != FilterHeadersStatus::Continue && !self.continued[dir] {
            // Paused on headers: Envoy buffers what arrives without calling
            // the filter; nothing else can resume it here.
            for c in chunks {
                self.vm.append_body(self.ctx, bty, c)?;
            }
            return Ok(None);
        }
        self.vm.seal(self.ctx, hty)?;
        if dir == 1 {
            self.response_started = true;
        }
        let out_headers = self.vm.headers(self.ctx, hty).cloned().unwrap_or_default();
        if dir == 0 && !eos {
            // As in Envoy, request headers the filter continued go upstream
            // at once, and so does each body chunk it lets pass, even if a
            // later callback stops the request or answers it locally.
            self.obs.upstream_request = Some(ObservedMessage {
                status: None,
                headers: map_to_headers(&out_headers),
                body: String::new(),
                trailers: Vec::new(),
            });
        }
        let mut out_body = Vec::new();
        let mut stopped = false;
        for (i, chunk) in chunks.iter().enumerate() {
            let eos = i + 1 == chunks.len() && !has_trailers;
            self.continued[dir] = false;
            let st = if dir == 0 {
                self.vm.on_request_body(self.ctx, chunk, eos)?
            } else {
                self.vm.on_response_body(self.ctx, chunk, eos)?
            };
            self.pump()?;
            if self.local.is_some() || self.reset {
                return Ok(None);
            }
            match self.body_step(dir, st, bty)? {
                Step::Go => {
                    out_body.extend(self.vm.take_body(self.ctx, bty).unwrap_or_default());
                    stopped = false;
                    if dir == 0
                        && let Some(up) = self.obs.upstream_request.as_mut()
                    {
                        up.body = String::from_utf8_lossy(&out_body).into_owned();
                    }
                }
                Step::Stop => {
                    stopped = true;
                    if self.local.is_some() {
                        return Ok(None);
                    }
                }
            }
        }
        let mut out_trailers = HeaderMap::new();
        if let Some(t) = trailers {
            self.continued[dir] = false;
            let st = if dir == 0 {
                self.vm.on_request_trailers(self.ctx, t)?
            } else {
                self.vm.on_response_trailers(self.ctx, t)?
            };
            self.pump()?;
            if self.local.is_some() || self.reset {
                return Ok(None);
            }
            if st != FilterTrailersStatus::Continue && !self.continued[dir] {
                return Ok(None);
            }
            stopped = false;
            out_body.extend(self.vm.take_body(self.ctx, bty).unwrap_or_default());
            out_trailers = self.vm.headers(self.ctx, tty).cloned().unwrap_or_default();
        } else if let Some(t) = self.vm.headers(self.ctx, tty) {
            // Trailers the filter added from its last body callback.
            out_trailers = t.clone();
        }
        if stopped {
            return Ok(None);
        }
        Ok(Some((out_headers, out_body, out_trailers)))
    }

    fn body_step(
        &mut self,
        dir: usize,
        st: FilterDataStatus,
        bty: BufferType,
    ) -> Result<Step, VmError> {
        if st == FilterDataStatus::Continue || self.continued[dir] {
            return Ok(Step::Go);
        }
        let buffered = self.vm.body(self.ctx, bty).map_or(0, <[u8]>::len);
        // Only `StopIterationAndBuffer` is limited; `StopIterationAndWatermark`
        // applies flow control instead (ABI reference §11.2).
        if st == FilterDataStatus::StopIterationAndBuffer && buffered > self.limit {
            // Envoy: 413 for a request, 500 for a response; the filter is not
            // called again for this direction.
            let (status, body) = if dir == 0 {
                (413, "Payload Too Large")
            } else {
                (500, "Internal Server Error")
            };
            self.local = Some(LocalResponse {
                status,
                details: if dir == 0 {
                    "request_payload_too_large".into()
                } else {
                    "response_payload_too_large".into()
                },
                body: body.as_bytes().to_vec(),
                headers: HeaderMap::new(),
                grpc_status: None,
            });
        }
        Ok(Step::Stop)
    }
}
