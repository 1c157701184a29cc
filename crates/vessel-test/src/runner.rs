//! Runs scenarios in-process: one VM per filter of the scenario's chain,
//! the streams (or, in the TCP form, the connections, through
//! [`TcpStream`]) one after another, with a canned upstream and canned
//! callouts. Envoy's stream rules (iteration, pauses, buffering and its
//! limit, local replies, the end callbacks, the failure policies) are
//! vessel-host's [`HttpStream`]; this runner only pumps the script into it
//! and its actions out, and carries out the VM-level effects (callouts,
//! gRPC, Redis through the caller's [`Services`], ticks, queues) with the
//! scenario's canned answers. Time is a scenario clock that starts when the
//! VMs load and moves only by each stream's `wait_ms`: the FAIL_RELOAD
//! backoff ([`ReloadGate`]) and the tick timers run on it, so nothing
//! sleeps.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vessel_host::{
    Action, CONNECTION_SPECIFIC_RESPONSE_HEADERS, ContextId, DEFAULT_BUFFER_LIMIT, Direction,
    Effect, Engine, FailurePolicy, FilterVms, HeaderMap, HostEnv, HttpCallOutcome, HttpStream,
    Plugin, PropertyMap, PropertyValue, RedisCallOutcome, ReloadDecision, ReloadGate, StreamConfig,
    StreamSignal, TcpAction, TcpStream, Token, Vm, VmError, VmInstanceId,
};

use super::canned::{canned_outcome, grpc_answer, map_to_headers, to_map};
use super::load::{Capture, Setup, setup};
use super::scenario::{CannedResponse, Connection, Scenario, Step, Stream};
use super::{Error, NoServices, Observation, ObservedConnection, ObservedMessage, Services};

/// Upper bound on the effects carried out per stream event, so a filter
/// that starts a new callout from every callout response cannot hang the
/// harness.
const MAX_EFFECT_ROUNDS: usize = 10_000;

/// Upper bound on the ticks one `wait_ms` fires (a 1 ms period and a long
/// wait would otherwise run for ever).
const MAX_TICKS_PER_WAIT: usize = 10_000;

/// A root context's timer, as its last `proxy_set_tick_period_milliseconds`
/// left it, on the scenario clock.
#[derive(Debug, Clone, Copy)]
struct Timer {
    period: Duration,
    /// When it last fired (or was set).
    last: Instant,
}

/// One filter of the chain: its plugin, its VM and its policy.
struct Filter {
    plugin: Plugin,
    policy: FailurePolicy,
    /// `Err`: the VM never started, and why.
    vm: Result<Vm, VmError>,
    /// The reload gate (FAIL_RELOAD only).
    gate: Option<ReloadGate>,
    timer: Option<Timer>,
}

/// What a scenario's streams share besides the VMs.
struct World {
    env: HostEnv,
    capture: Arc<Capture>,
    properties: PropertyMap,
    buffer_limit: usize,
    clusters: BTreeMap<String, CannedResponse>,
    /// The scenario clock.
    now: Instant,
    /// gRPC calls and streams the runner has seen, by filter and token.
    grpc: HashMap<(usize, Token), GrpcKind>,
    /// The first VM failure of the file: every backend reports it from then
    /// on (a plugin's failure shows in its log for good).
    failure: Option<String>,
    /// Effects the runner could not carry out, for the next observation.
    errors: Vec<String>,
    /// Where Redis calls go.
    services: Arc<dyn Services>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrpcKind {
    Unary,
    Stream,
}

/// A loaded scenario: its file, its chain of VMs and its captured logs.
pub struct Loaded {
    /// The scenario.
    pub scenario: Scenario,
    /// Where it was read from.
    pub path: PathBuf,
    filters: Vec<Filter>,
    world: World,
}

impl Loaded {
    /// Parses and loads a scenario file: reads the YAML, loads the plugins
    /// and starts their VMs. A VM that fails to start is kept as an error
    /// so each stream can report it.
    pub fn from_file(engine: &Engine, path: &Path) -> Result<Self, Error> {
        Self::from_file_with(engine, path, Arc::new(NoServices))
    }

    /// [`Loaded::from_file`] with real services for the scenario's Redis
    /// clusters.
    pub fn from_file_with(
        engine: &Engine,
        path: &Path,
        services: Arc<dyn Services>,
    ) -> Result<Self, Error> {
        let scenario = Scenario::from_file(path)?;
        Self::new_with(engine, path, scenario, services)
    }

    /// Loads an already parsed scenario; `path` anchors the relative wasm
    /// paths. No real services ([`NoServices`]).
    pub fn new(engine: &Engine, path: &Path, scenario: Scenario) -> Result<Self, Error> {
        Self::new_with(engine, path, scenario, Arc::new(NoServices))
    }

    /// [`Loaded::new`] with real services for the scenario's Redis clusters.
    pub fn new_with(
        engine: &Engine,
        path: &Path,
        scenario: Scenario,
        services: Arc<dyn Services>,
    ) -> Result<Self, Error> {
        let Setup {
            plugins,
            env,
            capture,
            properties,
        } = setup(engine, path, &scenario, services.as_ref())?;
        // The VMs start in chain order, as Envoy starts its filters'.
        let filters: Vec<Filter> = plugins
            .into_iter()
            .map(|(plugin, policy)| {
                let vm = Vm::new(&plugin, &env);
                Filter {
                    plugin,
                    policy,
                    vm,
                    gate: None,
                    timer: None,
                }
            })
            .collect();
        // The scenario clock starts now, with the VMs loaded.
        let now = Instant::now();
        let mut loaded = Self {
            path: path.to_owned(),
            filters,
            world: World {
                env,
                capture,
                properties,
                buffer_limit: scenario.buffer_limit.unwrap_or(DEFAULT_BUFFER_LIMIT),
                clusters: scenario.clusters.clone(),
                now,
                grpc: HashMap::new(),
                failure: None,
                errors: Vec::new(),
                services,
            },
            scenario,
        };
        for f in &mut loaded.filters {
            if let FailurePolicy::FailReload(backoff) = f.policy {
                f.gate = Some(ReloadGate::new(backoff, now));
            }
        }
        // What the VMs asked for while they started (tick periods,
        // callouts from `on_configure`, ...).
        let mut chain = Chain::new(&mut loaded.filters);
        chain.collect_all();
        if let Err(e) = settle(&mut chain, &mut loaded.world, Target::Nothing) {
            loaded.world.errors.push(e);
        }
        loaded.note_failures();
        Ok(loaded)
    }

    /// Runs every stream (or every connection of the TCP form) and returns
    /// one observation per stream (connection).
    pub fn run(&mut self) -> Vec<Observation> {
        if self.scenario.is_tcp() {
            let connections = self.scenario.connections.clone();
            return connections
                .iter()
                .enumerate()
                .map(|(i, c)| self.run_connection(c, i == 0))
                .collect();
        }
        let streams = self.scenario.streams.clone();
        streams
            .iter()
            .enumerate()
            .map(|(i, s)| self.run_stream(s, i == 0))
            .collect()
    }

    /// The first failure of the file, once a VM failed.
    fn note_failures(&mut self) {
        if self.world.failure.is_some() {
            return;
        }
        self.world.failure = self.filters.iter().find_map(|f| match &f.vm {
            Ok(vm) => vm.failure().map(ToString::to_string),
            Err(e) => Some(e.to_string()),
        });
    }

    /// Runs one stream. The first stream's logs also hold what the VMs
    /// logged while they started (`on_vm_start`, `on_configure`).
    fn run_stream(&mut self, stream: &Stream, first: bool) -> Observation {
        let start = if first { 0 } else { self.world.capture.len() };
        let mut obs = Observation {
            errors: std::mem::take(&mut self.world.errors),
            ..Observation::default()
        };
        self.pass_time(Duration::from_millis(stream.wait_ms), &mut obs);
        self.ticks_before(stream.ticks_before, &mut obs);
        self.reload_failed_vms(&mut obs);
        let mut chain = Chain::new(&mut self.filters);
        let mut http = HttpStream::new(StreamConfig {
            buffer_limit: self.world.buffer_limit,
            properties: self.world.properties.clone(),
            ..StreamConfig::new(chain.filters.len())
        });
        let mut pump = Pump {
            chain: &mut chain,
            world: &mut self.world,
            http: &mut http,
            seen: Seen::default(),
            obs: &mut obs,
        };
        pump.drive(stream);
        self.note_failures();
        obs.vm_failure.clone_from(&self.world.failure);
        obs.logs = self.world.capture.since(start);
        obs
    }

    /// Runs one connection of the TCP form: the steps in order, each
    /// event's actions recorded before the next step, then the end of the
    /// connection. The first connection's logs also hold what the VMs
    /// logged while they started.
    fn run_connection(&mut self, conn: &Connection, first: bool) -> Observation {
        let start = if first { 0 } else { self.world.capture.len() };
        let mut obs = Observation {
            errors: std::mem::take(&mut self.world.errors),
            ..Observation::default()
        };
        self.reload_failed_vms(&mut obs);
        let mut chain = Chain::new(&mut self.filters);
        let mut tcp = TcpStream::new(chain.filters.len(), self.world.buffer_limit);
        let mut pump = TcpPump {
            chain: &mut chain,
            world: &mut self.world,
            tcp: &mut tcp,
            seen: TcpSeen::default(),
            obs: &mut obs,
        };
        pump.drive(conn);
        self.note_failures();
        obs.vm_failure.clone_from(&self.world.failure);
        obs.logs = self.world.capture.since(start);
        obs
    }

    /// `wait_ms`: the clock moves on, and the ticks that fall due meanwhile
    /// fire, in time order.
    fn pass_time(&mut self, wait: Duration, obs: &mut Observation) {
        let Some(target) = self.world.now.checked_add(wait) else {
            obs.errors
                .push(format!("wait_ms: {} ms is too long", wait.as_millis()));
            return;
        };
        let mut chain = Chain::new(&mut self.filters);
        for _ in 0..MAX_TICKS_PER_WAIT {
            let due = chain
                .filters
                .iter()
                .enumerate()
                .filter(|(_, f)| f.vm.as_ref().is_ok_and(|vm| !vm.is_failed()))
                .filter_map(|(i, f)| {
                    let t = f.timer?;
                    let at = t.last.checked_add(t.period)?;
                    (at <= target).then_some((at, i))
                })
                .min();
            let Some((at, i)) = due else {
                self.world.now = target;
                return;
            };
            self.world.now = at;
            if let Some(t) = &mut chain.filters[i].timer {
                t.last = at;
            }
            tick(&mut chain, &mut self.world, i, obs);
        }
        self.world.now = target;
        obs.errors.push(format!(
            "wait_ms: the wait of {} ms would fire more than {MAX_TICKS_PER_WAIT} ticks",
            wait.as_millis()
        ));
    }

    /// `ticks_before`: each root context with a tick period gets this many
    /// ticks, in chain order, without the clock moving.
    fn ticks_before(&mut self, n: u32, obs: &mut Observation) {
        let mut chain = Chain::new(&mut self.filters);
        for _ in 0..n {
            for i in 0..chain.filters.len() {
                let f = &chain.filters[i];
                if f.timer.is_some() && f.vm.as_ref().is_ok_and(|vm| !vm.is_failed()) {
                    tick(&mut chain, &mut self.world, i, obs);
                }
            }
        }
    }

    /// FAIL_RELOAD: a VM that failed at run time is replaced for the next
    /// stream once its [`ReloadGate`] allows it; until then the stream gets
    /// the policy's 503 (Envoy's `vm_reload_backoff`). A VM that never
    /// started is not reloaded, as in Envoy.
    fn reload_failed_vms(&mut self, obs: &mut Observation) {
        let now = self.world.now;
        let mut reloaded = false;
        for f in &mut self.filters {
            let (Ok(vm), Some(gate)) = (&f.vm, &mut f.gate) else {
                continue;
            };
            if !vm.is_failed() {
                continue;
            }
            match gate.decide(now) {
                ReloadDecision::Reload => match Vm::new(&f.plugin, &self.world.env) {
                    Ok(vm) => {
                        log::debug!(target: "vessel::test", "FAIL_RELOAD: a fresh VM for `{}`", f.plugin.config().name);
                        f.vm = Ok(vm);
                        f.timer = None;
                        reloaded = true;
                    }
                    Err(e) => {
                        // The failed VM stays; the next stream asks again,
                        // after a longer wait.
                        log::debug!(target: "vessel::test", "FAIL_RELOAD: the new VM did not start: {e}");
                    }
                },
                ReloadDecision::Backoff { until } => {
                    log::debug!(
                        target: "vessel::test",
                        "FAIL_RELOAD: backoff holds the reload of `{}` back for {:?}",
                        f.plugin.config().name,
                        until.saturating_duration_since(now)
                    );
                }
                other => obs
                    .errors
                    .push(format!("FAIL_RELOAD: unknown reload decision {other:?}")),
            }
        }
        if reloaded {
            let mut chain = Chain::new(&mut self.filters);
            chain.collect_all();
            if let Err(e) = settle(&mut chain, &mut self.world, Target::Nothing) {
                obs.errors.push(e);
            }
        }
    }
}

/// One `on_tick` on filter `i`'s root context, and what it asked for.
fn tick(chain: &mut Chain<'_>, world: &mut World, i: usize, obs: &mut Observation) {
    chain.root_event(i, Vm::on_tick);
    if let Err(e) = settle(chain, world, Target::Nothing) {
        obs.errors.push(e);
    }
}

/// The chain's VMs as the [`HttpStream`] reaches them; the effects each
/// callback leaves (after the stream took its own signals) are queued with
/// the filter and VM they came from.
struct Chain<'a> {
    filters: &'a mut [Filter],
    effects: VecDeque<(usize, VmInstanceId, Effect)>,
}

impl<'a> Chain<'a> {
    fn new(filters: &'a mut [Filter]) -> Self {
        Self {
            filters,
            effects: VecDeque::new(),
        }
    }

    /// Queues what every VM left.
    fn collect_all(&mut self) {
        for (i, f) in self.filters.iter_mut().enumerate() {
            if let Ok(vm) = &mut f.vm {
                let id = vm.instance_id();
                self.effects
                    .extend(vm.drain_effects().map(|e| (i, id, e)).collect::<Vec<_>>());
            }
        }
    }

    /// Runs a root-context event on filter `i`'s VM and queues its effects.
    /// A failure is the VM's (it shows in [`Vm::failure`]): as in Envoy,
    /// the streams paused on it stay paused, and the next callback of a
    /// stream on it fails that stream. A token the guest cancelled first
    /// gets no event.
    fn root_event(&mut self, i: usize, f: impl FnOnce(&mut Vm) -> Result<(), VmError>) {
        let Some(Ok(vm)) = self.filters.get_mut(i).map(|f| f.vm.as_mut()) else {
            return;
        };
        let was_failed = vm.is_failed();
        match f(vm) {
            Ok(()) | Err(VmError::UnknownToken(_)) => {}
            Err(_) if was_failed => {}
            Err(e) => log::debug!(target: "vessel::test", "a root callback failed the VM: {e}"),
        }
        let id = vm.instance_id();
        let left: Vec<Effect> = vm.drain_effects().collect();
        self.effects.extend(left.into_iter().map(|e| (i, id, e)));
    }
}

impl FilterVms for Chain<'_> {
    fn with_vm<R>(&mut self, i: usize, f: impl FnOnce(&mut Vm) -> R) -> R {
        // The stream reaches a filter's VM only through a context that
        // `create_context` made, which needs a started VM.
        let Ok(vm) = self.filters[i].vm.as_mut() else {
            unreachable!("the stream used filter {i}, whose VM never started, without a context")
        };
        let r = f(vm);
        let id = vm.instance_id();
        let left: Vec<Effect> = vm.drain_effects().collect();
        self.effects.extend(left.into_iter().map(|e| (i, id, e)));
        r
    }

    fn policy(&self, i: usize) -> FailurePolicy {
        self.filters[i].policy
    }

    fn create_context(&mut self, i: usize, properties: PropertyMap) -> Result<ContextId, VmError> {
        match &mut self.filters[i].vm {
            // What `on_context_create` asked for stays in the VM: the
            // stream takes its own signals next.
            Ok(vm) => vm.create_http_context_with(properties),
            Err(e) => Err(e.clone()),
        }
    }

    fn create_tcp_context(
        &mut self,
        i: usize,
        properties: PropertyMap,
    ) -> Result<ContextId, VmError> {
        match &mut self.filters[i].vm {
            Ok(vm) => vm.create_tcp_context_with(properties),
            Err(e) => Err(e.clone()),
        }
    }

    fn context_finished(&mut self, i: usize, _context: ContextId, vm_ok: bool) {
        if vm_ok && let Some(gate) = &mut self.filters[i].gate {
            gate.served();
        }
    }
}

/// Carries out the queued effects with the canned answers, and routes the
/// signals for `http` (continue, local reply, close) to it. Bounded by
/// [`MAX_EFFECT_ROUNDS`]; the `Err` says why it gave up.
/// Where [`settle`] routes the signals for a stream.
enum Target<'s> {
    /// No stream runs (start-up, ticks between streams).
    Nothing,
    /// An HTTP stream.
    Http(&'s mut HttpStream),
    /// A TCP connection.
    Tcp(&'s mut TcpStream),
}

fn settle(chain: &mut Chain<'_>, world: &mut World, mut target: Target<'_>) -> Result<(), String> {
    let mut rounds = 0;
    while let Some((i, id, effect)) = chain.effects.pop_front() {
        rounds += 1;
        if rounds > MAX_EFFECT_ROUNDS {
            chain.effects.clear();
            return Err(format!(
                "the filters kept starting callouts; gave up after {MAX_EFFECT_ROUNDS} effects"
            ));
        }
        if chain.filters[i].vm.as_ref().map(Vm::instance_id).ok() != Some(id) {
            // Left by a VM that FAIL_RELOAD has replaced since: gone with it.
            continue;
        }
        match StreamSignal::from_effect(effect) {
            Ok((ctx, signal)) => match &mut target {
                Target::Http(s) if s.context(i) == Some(ctx) => s.signal(chain, i, signal),
                Target::Tcp(s) if s.context(i) == Some(ctx) => s.signal(chain, i, signal),
                // The stream ended (a callout answered after its end):
                // Envoy ignores the signal too.
                Target::Http(s) if s.is_done() => {}
                Target::Tcp(s) if s.is_closed() => {}
                Target::Nothing => {}
                Target::Http(_) | Target::Tcp(_) => world.errors.push(format!(
                    "filter {i} signalled {signal:?} for context {ctx:?}, which is not this stream's"
                )),
            },
            Err(effect) => carry_out(chain, world, i, effect),
        }
    }
    Ok(())
}

/// One VM-level effect of filter `i`, with the scenario's canned answers.
fn carry_out(chain: &mut Chain<'_>, world: &mut World, i: usize, effect: Effect) {
    match effect {
        Effect::HttpCall { token, request, .. } => {
            let outcome = match world.clusters.get(&request.upstream) {
                Some(c) => canned_outcome(c),
                None => HttpCallOutcome::Failed {
                    reason: "reset".into(),
                },
            };
            chain.root_event(i, |vm| vm.on_http_call_response(token, outcome));
        }
        Effect::GrpcCall { token, call, .. } => {
            world.grpc.insert((i, token), GrpcKind::Unary);
            let cluster = world
                .clusters
                .get(&*String::from_utf8_lossy(&call.upstream));
            chain.root_event(i, |vm| grpc_answer(vm, token, cluster));
        }
        Effect::RedisCall { token, call, .. } => {
            let addr = world
                .clusters
                .get(&call.cluster)
                .and_then(|c| c.redis_address().ok().flatten());
            let outcome = match addr {
                Some(addr) => world.services.redis_call(addr, &call),
                None => RedisCallOutcome::Failed,
            };
            chain.root_event(i, |vm| vm.on_redis_call_response(token, outcome));
        }
        Effect::GrpcStream { token, .. } => {
            // No canned stream messages yet (DEVIATIONS.md H1): the stream
            // is closed at once with UNAVAILABLE, unless the guest cancelled
            // it first.
            world.grpc.insert((i, token), GrpcKind::Stream);
            chain.root_event(i, |vm| {
                vm.on_grpc_close(token, 14, "vessel test: no gRPC streams")
            });
        }
        Effect::GrpcSend { token, .. } => {
            // The canned stream is closed: the message goes nowhere, as it
            // would to a server that has ended the stream.
            if world.grpc.get(&(i, token)) != Some(&GrpcKind::Stream) {
                world.errors.push(format!(
                    "filter {i}: a gRPC message on token {} that is no open stream",
                    token.get()
                ));
            }
        }
        Effect::GrpcClose { token } | Effect::GrpcCancel { token } => {
            // The guest is done with the call or stream: it gets no more
            // events (a unary call it cancelled got none).
            if world.grpc.remove(&(i, token)).is_none() {
                world.errors.push(format!(
                    "filter {i}: a gRPC close or cancel of token {}, which is no gRPC call",
                    token.get()
                ));
            }
        }
        Effect::TickPeriod { root, period } => {
            let now = world.now;
            let f = &mut chain.filters[i];
            if f.vm.as_ref().map(Vm::root_context).ok() != Some(root) {
                world.errors.push(format!(
                    "filter {i}: a tick period for root context {}, which is not the VM's root",
                    root.get()
                ));
                return;
            }
            f.timer = period.map(|period| Timer { period, last: now });
        }
        Effect::QueueReady { vm, root, token } => {
            // A queue registered by a VM that FAIL_RELOAD replaced has no
            // reader left, as in Envoy.
            if let Some(j) = chain
                .filters
                .iter()
                .position(|f| f.vm.as_ref().map(Vm::instance_id).ok() == Some(vm))
            {
                chain.root_event(j, |vm| vm.on_queue_ready(root, token));
            }
        }
        // A script has no routes to pick again.
        Effect::ClearRouteCache { .. } => {}
        other @ (Effect::ContinueStream { .. }
        | Effect::CloseStream { .. }
        | Effect::LocalResponse { .. }) => world.errors.push(format!(
            "filter {i}: {other:?} is for no stream of this scenario"
        )),
        // `Effect` is non-exhaustive: say what this runner cannot carry out.
        other => world.errors.push(format!(
            "filter {i}: vessel test cannot carry out {other:?}"
        )),
    }
}

/// A piece of one direction of the script.
enum Part {
    Headers(HeaderMap, bool),
    Data(Vec<u8>, bool),
    Trailers(HeaderMap),
}

/// What left the stream so far.
#[derive(Default)]
struct Seen {
    response_headers: Option<HeaderMap>,
    response_body: Vec<u8>,
    response_trailers: HeaderMap,
    upstream_body: Vec<u8>,
}

/// One stream: the script in, the actions out, the effects carried out
/// after each event.
struct Pump<'p, 'a> {
    chain: &'p mut Chain<'a>,
    world: &'p mut World,
    http: &'p mut HttpStream,
    seen: Seen,
    obs: &'p mut Observation,
}

impl Pump<'_, '_> {
    /// Carries out what the last event left, and records the actions.
    fn after_event(&mut self) {
        if let Err(e) = settle(self.chain, self.world, Target::Http(self.http)) {
            self.obs.stalled = Some(e);
        }
        while let Some(action) = self.http.poll_action() {
            self.record(action);
        }
        self.obs.errors.append(&mut self.world.errors);
    }

    fn record(&mut self, action: Action) {
        let obs = &mut *self.obs;
        let seen = &mut self.seen;
        match action {
            Action::UpstreamHeaders { headers, .. } => {
                obs.upstream_request = Some(ObservedMessage {
                    status: None,
                    headers: map_to_headers(&headers),
                    ..ObservedMessage::default()
                });
            }
            Action::UpstreamData { data, .. } => {
                seen.upstream_body.extend_from_slice(&data);
                if let Some(up) = &mut obs.upstream_request {
                    up.body = String::from_utf8_lossy(&seen.upstream_body).into_owned();
                }
            }
            Action::UpstreamTrailers { trailers } => {
                if let Some(up) = &mut obs.upstream_request {
                    up.trailers = map_to_headers(&trailers);
                }
            }
            // The canned upstream is only asked once the request is whole,
            // and a local reply answers instead.
            Action::CancelUpstream => {}
            Action::DownstreamHeaders { headers, .. } => seen.response_headers = Some(headers),
            Action::DownstreamData { data, .. } => seen.response_body.extend_from_slice(&data),
            Action::DownstreamTrailers { trailers } => seen.response_trailers = trailers,
            Action::Reset { .. } => obs.reset = true,
            other => obs
                .errors
                .push(format!("vessel test cannot carry out {other:?}")),
        }
    }

    /// Sends one direction's script as the real backends' client and
    /// upstream send it, and as Envoy's HTTP/1.1 codec hands it to the
    /// filters. The headers and the first body chunk arrive together, each
    /// later chunk and the trailers 80 ms after the one before; the end of
    /// a body arrives with its last chunk, after the data (a body callback
    /// with no new bytes and `end_of_stream`). What arrives together reaches
    /// the filters before anything the VMs asked for is carried out (a
    /// callout answer comes in a later turn of the event loop).
    fn send(
        &mut self,
        request: bool,
        headers: HeaderMap,
        body: &[&[u8]],
        trailers: Option<HeaderMap>,
    ) {
        let body: Vec<&[u8]> = body.iter().copied().filter(|c| !c.is_empty()).collect();
        let headers_end = body.is_empty() && trailers.is_none();
        let mut reads = Vec::new();
        let mut read = vec![Part::Headers(headers, headers_end)];
        for (k, chunk) in body.into_iter().enumerate() {
            if k > 0 {
                reads.push(std::mem::take(&mut read));
            }
            read.push(Part::Data(chunk.to_vec(), false));
        }
        match trailers {
            Some(t) => {
                reads.push(std::mem::take(&mut read));
                read.push(Part::Trailers(t));
            }
            None if !headers_end => read.push(Part::Data(Vec::new(), true)),
            None => {}
        }
        reads.push(read);
        for read in reads {
            for part in read {
                if self.http.is_done() || self.http.is_local_reply() {
                    break;
                }
                let (http, chain) = (&mut *self.http, &mut *self.chain);
                match (part, request) {
                    (Part::Headers(h, end), true) => http.request_headers(chain, h, end),
                    (Part::Headers(h, end), false) => http.response_headers(chain, h, end),
                    (Part::Data(d, end), true) => http.request_data(chain, d, end),
                    (Part::Data(d, end), false) => http.response_data(chain, d, end),
                    (Part::Trailers(t), true) => http.request_trailers(chain, t),
                    (Part::Trailers(t), false) => http.response_trailers(chain, t),
                }
            }
            self.after_event();
        }
    }

    fn drive(&mut self, stream: &Stream) {
        let req = &stream.request;
        let body: Vec<&[u8]> = match (&req.body, &req.chunks) {
            (_, Some(c)) => c.iter().map(String::as_bytes).collect(),
            (Some(b), None) => vec![b.as_bytes()],
            (None, None) => Vec::new(),
        };
        self.send(
            true,
            to_map(&req.headers),
            &body,
            req.trailers.as_ref().map(to_map),
        );
        // The upstream answers a request that reached it whole.
        if !self.http.is_done()
            && !self.http.is_local_reply()
            && self.http.is_complete(Direction::Request)
        {
            let default = CannedResponse {
                headers: vec![(":status".into(), "200".into())],
                ..CannedResponse::default()
            };
            let up = stream.upstream.as_ref().unwrap_or(&default);
            // An upstream's answer, as Envoy's stream info says it.
            let (http, chain) = (&mut *self.http, &mut *self.chain);
            http.set_property(chain, "response.code_details", "via_upstream");
            http.set_property(chain, "response.flags", PropertyValue::Uint(0));
            let trailers = (!up.trailers.is_empty()).then(|| to_map(&up.trailers));
            let body: Vec<&[u8]> = up.body_chunks().into_iter().map(str::as_bytes).collect();
            self.send(false, to_map(&up.headers), &body, trailers);
        }
        let complete = self.http.is_complete(Direction::Response);
        if !complete && !self.obs.reset && self.obs.stalled.is_none() {
            self.obs.stalled = Some("the filter paused the stream and nothing resumed it".into());
        }
        if complete
            && !self.obs.reset
            && let Some(mut headers) = self.seen.response_headers.take()
        {
            // What the client gets: the proxy strips these after the
            // filters (Envoy's `mutateResponseHeaders`).
            for name in CONNECTION_SPECIFIC_RESPONSE_HEADERS {
                headers.remove(name.as_bytes());
            }
            self.obs.response = Some(ObservedMessage {
                status: headers
                    .get_str(":status")
                    .and_then(|s| s.parse::<u16>().ok()),
                headers: map_to_headers(&headers),
                body: String::from_utf8_lossy(&self.seen.response_body).into_owned(),
                trailers: map_to_headers(&self.seen.response_trailers),
            });
        }
        // on_log, on_done, on_delete for every filter; what they ask for is
        // carried out, but the stream is over.
        self.http.finish(self.chain);
        self.after_event();
    }
}

/// What left a connection so far, and how far the steps have read it.
#[derive(Default)]
struct TcpSeen {
    upstream: Vec<u8>,
    client: Vec<u8>,
    /// The proxy ended (half-closed or closed) the upstream connection.
    upstream_eof: bool,
    /// The proxy ended the client connection.
    client_eof: bool,
    /// How much of `upstream` and `client` the `*_receive` steps took.
    upstream_read: usize,
    client_read: usize,
}

/// One connection of the TCP form: the steps in, the actions out, the
/// effects carried out after each step.
struct TcpPump<'p, 'a> {
    chain: &'p mut Chain<'a>,
    world: &'p mut World,
    tcp: &'p mut TcpStream,
    seen: TcpSeen,
    obs: &'p mut Observation,
}

impl TcpPump<'_, '_> {
    /// Carries out what the last event left, and records the actions.
    fn after_event(&mut self) {
        if let Err(e) = settle(self.chain, self.world, Target::Tcp(self.tcp)) {
            self.obs.stalled = Some(e);
        }
        while let Some(action) = self.tcp.poll_action() {
            match action {
                TcpAction::UpstreamData { data, end_stream } => {
                    self.seen.upstream.extend_from_slice(&data);
                    self.seen.upstream_eof |= end_stream;
                }
                TcpAction::DownstreamData { data, end_stream } => {
                    self.seen.client.extend_from_slice(&data);
                    self.seen.client_eof |= end_stream;
                }
                TcpAction::CloseDownstream => self.seen.client_eof = true,
                TcpAction::CloseUpstream => self.seen.upstream_eof = true,
                other => self
                    .obs
                    .errors
                    .push(format!("vessel test cannot carry out {other:?}")),
            }
        }
        self.obs.errors.append(&mut self.world.errors);
    }

    /// A `*_receive` step: the next bytes of a side must be `want`.
    fn receive(&mut self, n: usize, step: &Step, client: bool, want: &[u8]) -> Option<String> {
        let (got, read) = if client {
            (&self.seen.client, &mut self.seen.client_read)
        } else {
            (&self.seen.upstream, &mut self.seen.upstream_read)
        };
        let rest = got.get(*read..).unwrap_or_default();
        if rest.starts_with(want) {
            *read += want.len();
            return None;
        }
        Some(format!(
            "step {n} ({}): expected the next bytes {:?}, but the {} had received {:?} since the last receive step",
            step.key(),
            String::from_utf8_lossy(want),
            if client { "client" } else { "upstream" },
            String::from_utf8_lossy(rest),
        ))
    }

    /// A `*_receive_close` step: the side must have seen the proxy end its
    /// connection, with every byte before it received.
    fn receive_close(&mut self, n: usize, step: &Step, client: bool) -> Option<String> {
        let (got, read, eof) = if client {
            (
                &self.seen.client,
                self.seen.client_read,
                self.seen.client_eof,
            )
        } else {
            (
                &self.seen.upstream,
                self.seen.upstream_read,
                self.seen.upstream_eof,
            )
        };
        let rest = got.get(read..).unwrap_or_default();
        let side = if client { "client" } else { "upstream" };
        if !rest.is_empty() {
            return Some(format!(
                "step {n} ({}): expected the proxy to close the {side} connection, but the {side} has bytes it did not receive first: {:?}",
                step.key(),
                String::from_utf8_lossy(rest),
            ));
        }
        (!eof).then(|| {
            format!(
                "step {n} ({}): the proxy did not close the {side} connection",
                step.key()
            )
        })
    }

    fn drive(&mut self, conn: &Connection) {
        let properties = self.world.properties.clone();
        self.tcp.new_connection(self.chain, properties);
        self.after_event();
        for (k, step) in conn.steps.iter().enumerate() {
            let n = k + 1;
            let failure = match step {
                Step::ClientSend(text) => {
                    self.tcp.downstream_data(self.chain, text.as_bytes(), false);
                    None
                }
                Step::UpstreamSend(text) => {
                    self.tcp.upstream_data(self.chain, text.as_bytes(), false);
                    None
                }
                Step::ClientClose(_) => {
                    self.tcp.downstream_data(self.chain, &[], true);
                    None
                }
                Step::UpstreamClose(_) => {
                    self.tcp.upstream_data(self.chain, &[], true);
                    None
                }
                Step::UpstreamReceive(want) => self.receive(n, step, false, want.as_bytes()),
                Step::ClientReceive(want) => self.receive(n, step, true, want.as_bytes()),
                Step::ClientReceiveClose(_) => self.receive_close(n, step, true),
                Step::UpstreamReceiveClose(_) => self.receive_close(n, step, false),
                // Synchronous: what was sent has been read already.
                Step::SleepMs(_) => None,
            };
            self.after_event();
            if let Some(f) = failure {
                self.obs
                    .connection
                    .get_or_insert_with(ObservedConnection::default)
                    .step_failures
                    .push(f);
            }
        }
        // The end of the connection (if the steps left it open): the
        // downstream close and on_done, on_log, on_delete for every filter.
        self.tcp.finish(self.chain);
        self.after_event();
        let conn = self
            .obs
            .connection
            .get_or_insert_with(ObservedConnection::default);
        conn.upstream_received = String::from_utf8_lossy(&self.seen.upstream).into_owned();
        conn.client_received = String::from_utf8_lossy(&self.seen.client).into_owned();
        conn.upstream_closed = self.seen.upstream_eof;
        conn.client_closed = self.seen.client_eof;
    }
}
