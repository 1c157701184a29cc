//! A fake OpenAI-compatible model server (an "LLM worker"), on real hyper
//! over loopback, for the gateway tests, the benches and the docs.
//!
//! It speaks the parts of the API a gateway sees:
//!
//! * `POST /v1/chat/completions`: a `chat.completion` JSON answer, or with
//!   `"stream": true` a `text/event-stream` of `chat.completion.chunk`
//!   events, one per token, each its own body frame, a `usage` chunk when
//!   `stream_options.include_usage` is true, then `data: [DONE]`;
//! * `GET /v1/models`: the one model it serves;
//! * `GET /health`: 200, or 503 while set unhealthy;
//! * `GET /metrics`: Prometheus text with the model-server metrics the
//!   Gateway API Inference Extension reads ([`MetricsFlavour`]).
//!
//! Every answer carries `x-worker: <name>`, so a load-balancing test can
//! count who answered. A [`WorkerHandle`] controls it while it runs:
//! latency (a first-token delay and a per-token delay), failures (500 for
//! the next N requests, or a failure rate), health, extra queue depth and
//! running requests on top of the real ones, KV-cache use, and a **gate**
//! that holds every stream after its first token until the test opens it.
//! Its counters say what happened, including streams the client cancelled
//! (the connection went away before the last event).
//!
//! ```no_run
//! # async fn f() {
//! use vessel_testkit::llm_worker::LlmWorker;
//! let worker = LlmWorker::builder().name("w1").reply("Hello there").start().await;
//! let handle = worker.handle();
//! handle.close_gate();
//! // ... a stream now stops after its first token ...
//! handle.open_gate();
//! assert_eq!(handle.counters().streams_completed, 0);
//! # }
//! ```

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::servers;

/// Which model server's metric names `GET /metrics` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsFlavour {
    /// vLLM: `vllm:num_requests_running`, `vllm:num_requests_waiting`,
    /// `vllm:gpu_cache_usage_perc` and `vllm:kv_cache_usage_perc`.
    #[default]
    Vllm,
    /// SGLang: `sglang:num_running_reqs`, `sglang:num_queue_reqs` and
    /// `sglang:token_usage`.
    Sglang,
    /// Both sets.
    Both,
}

impl std::str::FromStr for MetricsFlavour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vllm" => Ok(Self::Vllm),
            "sglang" => Ok(Self::Sglang),
            "both" => Ok(Self::Both),
            other => Err(format!(
                "unknown metrics flavour `{other}` (vllm, sglang or both)"
            )),
        }
    }
}

/// What a worker's counters say, read at one moment
/// ([`WorkerHandle::counters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Every HTTP request it received, any path.
    pub requests: u64,
    /// `POST /v1/chat/completions` requests it received.
    pub completions: u64,
    /// Completions it answered 500 on purpose ([`WorkerHandle::fail_next`],
    /// [`WorkerHandle::set_failure_rate`]).
    pub failed: u64,
    /// Streaming completions it started (the head was sent).
    pub streams_started: u64,
    /// Streams that sent `data: [DONE]`.
    pub streams_completed: u64,
    /// Streams whose client went away before `data: [DONE]` (the body's
    /// receiver was dropped: the connection closed or the stream was
    /// reset).
    pub streams_cancelled: u64,
    /// Streams held at the gate right now (after their first token).
    pub gated: u64,
    /// Completions in flight right now (waiting or running).
    pub in_flight: u64,
}

/// Shared state of one worker.
#[derive(Debug)]
struct State {
    name: String,
    model: String,
    flavour: MetricsFlavour,
    reply: Mutex<Vec<String>>,
    token_delay_us: AtomicU64,
    first_token_delay_us: AtomicU64,
    fail_next: AtomicU64,
    /// Failure rate in parts per million.
    failure_ppm: AtomicU64,
    healthy: AtomicBool,
    extra_waiting: AtomicU64,
    extra_running: AtomicU64,
    /// f64 bits.
    kv_cache: AtomicU64,
    gate: watch::Sender<bool>,
    requests: AtomicU64,
    completions: AtomicU64,
    failed: AtomicU64,
    streams_started: AtomicU64,
    streams_completed: AtomicU64,
    streams_cancelled: AtomicU64,
    gated: AtomicU64,
    waiting: AtomicU64,
    running: AtomicU64,
}

/// Counts one request as waiting or running while it lives.
struct Phase<'a> {
    state: &'a State,
    running: bool,
}

impl<'a> Phase<'a> {
    fn waiting(state: &'a State) -> Self {
        state.waiting.fetch_add(1, Ordering::SeqCst);
        Self {
            state,
            running: false,
        }
    }

    fn run(&mut self) {
        if !self.running {
            self.state.running.fetch_add(1, Ordering::SeqCst);
            self.state.waiting.fetch_sub(1, Ordering::SeqCst);
            self.running = true;
        }
    }
}

impl Drop for Phase<'_> {
    fn drop(&mut self) {
        let n = if self.running {
            &self.state.running
        } else {
            &self.state.waiting
        };
        n.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Builds an [`LlmWorker`].
#[derive(Debug, Clone)]
pub struct LlmWorkerBuilder {
    name: String,
    model: String,
    flavour: MetricsFlavour,
    reply: String,
    token_delay: Duration,
    first_token_delay: Duration,
}

impl Default for LlmWorkerBuilder {
    fn default() -> Self {
        Self {
            name: "worker".to_owned(),
            model: "fake-model".to_owned(),
            flavour: MetricsFlavour::Vllm,
            reply: "Hello from the fake worker.".to_owned(),
            token_delay: Duration::ZERO,
            first_token_delay: Duration::ZERO,
        }
    }
}

impl LlmWorkerBuilder {
    /// Its name, sent as `x-worker` on every answer (default `worker`).
    pub fn name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// The model it lists on `/v1/models` and answers as when a request
    /// names none (default `fake-model`).
    pub fn model(mut self, model: &str) -> Self {
        model.clone_into(&mut self.model);
        self
    }

    /// The metric names of `/metrics` (default vLLM's).
    pub fn flavour(mut self, flavour: MetricsFlavour) -> Self {
        self.flavour = flavour;
        self
    }

    /// The text every completion answers, cut into tokens at word starts
    /// (`"Hello there"` is the tokens `Hello` and ` there`).
    pub fn reply(mut self, text: &str) -> Self {
        text.clone_into(&mut self.reply);
        self
    }

    /// The pause before each token after the first.
    pub fn token_delay(mut self, delay: Duration) -> Self {
        self.token_delay = delay;
        self
    }

    /// The pause before the first token (the time "in the queue").
    pub fn first_token_delay(mut self, delay: Duration) -> Self {
        self.first_token_delay = delay;
        self
    }

    fn state(self) -> State {
        State {
            name: self.name,
            model: self.model,
            flavour: self.flavour,
            reply: Mutex::new(tokens(&self.reply)),
            token_delay_us: AtomicU64::new(micros(self.token_delay)),
            first_token_delay_us: AtomicU64::new(micros(self.first_token_delay)),
            fail_next: AtomicU64::new(0),
            failure_ppm: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            extra_waiting: AtomicU64::new(0),
            extra_running: AtomicU64::new(0),
            kv_cache: AtomicU64::new(0f64.to_bits()),
            gate: watch::Sender::new(true),
            requests: AtomicU64::new(0),
            completions: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            streams_started: AtomicU64::new(0),
            streams_completed: AtomicU64::new(0),
            streams_cancelled: AtomicU64::new(0),
            gated: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            running: AtomicU64::new(0),
        }
    }

    /// Starts it on 127.0.0.1, port 0 (HTTP/1.1 and h2c), until the
    /// runtime ends.
    pub async fn start(self) -> LlmWorker {
        let (listener, addr) = servers::bind().await;
        self.serve(listener, addr)
    }

    /// Starts it on `listener` (whose address is `addr`), until the runtime
    /// ends.
    pub fn serve(self, listener: TcpListener, addr: SocketAddr) -> LlmWorker {
        let state = Arc::new(self.state());
        let shared = state.clone();
        servers::serve(listener, move |req| {
            let state = shared.clone();
            async move { handle(state, req).await }
        });
        LlmWorker {
            addr,
            handle: WorkerHandle(state),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `text` cut before each whitespace that follows a non-space.
fn tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut prev_space = true;
    for c in text.chars() {
        if c.is_whitespace() && !prev_space && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_space = c.is_whitespace();
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A running fake worker: its address and its [`WorkerHandle`].
#[derive(Debug, Clone)]
pub struct LlmWorker {
    addr: SocketAddr,
    handle: WorkerHandle,
}

impl LlmWorker {
    /// A builder with the defaults (name `worker`, model `fake-model`,
    /// vLLM metrics, no delays, open gate).
    pub fn builder() -> LlmWorkerBuilder {
        LlmWorkerBuilder::default()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its controls and counters.
    pub fn handle(&self) -> WorkerHandle {
        self.handle.clone()
    }
}

/// Controls and counters of a running [`LlmWorker`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerHandle(Arc<State>);

impl WorkerHandle {
    /// Its name (the `x-worker` header).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The text of the next completions (cut into tokens as
    /// [`LlmWorkerBuilder::reply`] does).
    pub fn set_reply(&self, text: &str) {
        *self
            .0
            .reply
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tokens(text);
    }

    /// The tokens of the reply, as the worker sends them.
    pub fn reply_tokens(&self) -> Vec<String> {
        self.0
            .reply
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The pause before each token after the first.
    pub fn set_token_delay(&self, delay: Duration) {
        self.0.token_delay_us.store(micros(delay), Ordering::SeqCst);
    }

    /// The pause before the first token.
    pub fn set_first_token_delay(&self, delay: Duration) {
        self.0
            .first_token_delay_us
            .store(micros(delay), Ordering::SeqCst);
    }

    /// The next `n` completions are answered 500 (an OpenAI-style error).
    pub fn fail_next(&self, n: u64) {
        self.0.fail_next.store(n, Ordering::SeqCst);
    }

    /// A share (0.0 to 1.0) of the completions is answered 500, chosen
    /// by a fixed pseudo-random sequence over the completion count (so a
    /// run is repeatable).
    pub fn set_failure_rate(&self, rate: f64) {
        let ppm = (rate.clamp(0.0, 1.0) * 1_000_000.0).round();
        // In 0..=1e6 after the clamp: the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        self.0.failure_ppm.store(ppm as u64, Ordering::SeqCst);
    }

    /// Whether `/health` answers 200 (true) or 503.
    pub fn set_healthy(&self, healthy: bool) {
        self.0.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Added to the waiting requests that `/metrics` reports.
    pub fn set_extra_waiting(&self, n: u64) {
        self.0.extra_waiting.store(n, Ordering::SeqCst);
    }

    /// Added to the running requests that `/metrics` reports.
    pub fn set_extra_running(&self, n: u64) {
        self.0.extra_running.store(n, Ordering::SeqCst);
    }

    /// The KV-cache use `/metrics` reports (0.0 to 1.0).
    pub fn set_kv_cache_usage(&self, used: f64) {
        self.0
            .kv_cache
            .store(used.clamp(0.0, 1.0).to_bits(), Ordering::SeqCst);
    }

    /// Holds every stream after its first token (until
    /// [`WorkerHandle::open_gate`]); non-streaming completions are held
    /// before they answer.
    pub fn close_gate(&self) {
        self.0.gate.send_replace(false);
    }

    /// Lets held streams go on.
    pub fn open_gate(&self) {
        self.0.gate.send_replace(true);
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        let s = &self.0;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Counters {
            requests: get(&s.requests),
            completions: get(&s.completions),
            failed: get(&s.failed),
            streams_started: get(&s.streams_started),
            streams_completed: get(&s.streams_completed),
            streams_cancelled: get(&s.streams_cancelled),
            gated: get(&s.gated),
            in_flight: get(&s.waiting) + get(&s.running),
        }
    }

    /// The `/metrics` text now.
    pub fn metrics_text(&self) -> String {
        metrics(&self.0)
    }
}

/// A streamed response body fed by a channel; each message is one frame.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

fn respond(
    state: &State,
    status: u16,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&state.name) {
        resp.headers_mut().insert("x-worker", v);
    }
    resp
}

fn error_json(message: &str, kind: &str) -> String {
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}}).to_string()
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    match (req.method().as_str(), path.as_str()) {
        ("POST", "/v1/chat/completions") => completion(state, req).await,
        ("GET", "/v1/models") => {
            let body = json!({
                "object": "list",
                "data": [{"id": state.model, "object": "model", "created": 0, "owned_by": "vessel-testkit"}],
            });
            respond(&state, 200, "application/json", body.to_string())
        }
        ("GET", "/health") => {
            if state.healthy.load(Ordering::SeqCst) {
                respond(&state, 200, "text/plain", "ok\n")
            } else {
                respond(&state, 503, "text/plain", "unhealthy\n")
            }
        }
        ("GET", "/metrics") => respond(&state, 200, "text/plain; version=0.0.4", metrics(&state)),
        _ => respond(
            &state,
            404,
            "application/json",
            error_json(&format!("no route for {path}"), "invalid_request_error"),
        ),
    }
}

/// Whether completion number `n` (from 1) fails.
fn should_fail(state: &State, n: u64) -> bool {
    let next = state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1));
    if next.is_ok() {
        return true;
    }
    let ppm = state.failure_ppm.load(Ordering::SeqCst);
    ppm > 0 && splitmix(n) % 1_000_000 < ppm
}

fn splitmix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The parsed parts of a chat-completion request that matter here.
struct Ask {
    model: String,
    stream: bool,
    include_usage: bool,
    max_tokens: Option<usize>,
    prompt_tokens: usize,
}

fn parse_ask(state: &State, body: &[u8]) -> Result<Ask, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` must be an array")?;
    let prompt_tokens = messages
        .iter()
        .filter_map(|m| m.get("content").and_then(Value::as_str))
        .map(|c| c.split_whitespace().count())
        .sum();
    let max_tokens = v
        .get("max_tokens")
        .or_else(|| v.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    Ok(Ask {
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&state.model)
            .to_owned(),
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        max_tokens,
        prompt_tokens,
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

async fn completion(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let n = state.completions.fetch_add(1, Ordering::SeqCst) + 1;
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return respond(
                &state,
                400,
                "application/json",
                error_json(&format!("reading the body: {e}"), "invalid_request_error"),
            );
        }
    };
    let ask = match parse_ask(&state, &body) {
        Ok(a) => a,
        Err(e) => {
            return respond(
                &state,
                400,
                "application/json",
                error_json(&e, "invalid_request_error"),
            );
        }
    };
    if should_fail(&state, n) {
        state.failed.fetch_add(1, Ordering::SeqCst);
        return respond(
            &state,
            500,
            "application/json",
            error_json("the fake worker failed on purpose", "server_error"),
        );
    }
    let mut toks = state
        .reply
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(max) = ask.max_tokens {
        toks.truncate(max);
    }
    let id = format!("chatcmpl-{}-{n}", state.name);
    if ask.stream {
        stream(state, ask, id, toks)
    } else {
        let mut phase = Phase::waiting(&state);
        delay(&state.first_token_delay_us).await;
        phase.run();
        for _ in 1..toks.len() {
            delay(&state.token_delay_us).await;
        }
        let mut gate = state.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
        drop(phase);
        let body = json!({
            "id": id,
            "object": "chat.completion",
            "created": now_secs(),
            "model": ask.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": toks.concat()},
                "finish_reason": "stop",
            }],
            "usage": usage(ask.prompt_tokens, toks.len()),
        });
        respond(&state, 200, "application/json", body.to_string())
    }
}

async fn delay(us: &AtomicU64) {
    let us = us.load(Ordering::SeqCst);
    if us > 0 {
        tokio::time::sleep(Duration::from_micros(us)).await;
    }
}

fn event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn chunk(id: &str, model: &str, delta: Value, finish: Option<&str>, usage: Option<Value>) -> Value {
    let mut v = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    if let Some(u) = usage {
        v["usage"] = u;
    }
    v
}

/// The event-stream answer: the head at once, the events from a task.
fn stream(state: Arc<State>, ask: Ask, id: String, toks: Vec<String>) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let mut resp = respond(&state, 200, "text/event-stream", Bytes::new());
    *resp.body_mut() = ChannelBody { rx }.boxed_unsync();
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    state.streams_started.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        let outcome = produce(&state, &ask, &id, &toks, &tx).await;
        let counter = match outcome {
            Ok(()) => &state.streams_completed,
            Err(Gone) => &state.streams_cancelled,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    });
    resp
}

/// The client went away.
struct Gone;

/// Sends `bytes` unless the receiver is gone first.
async fn send(tx: &mpsc::Sender<Bytes>, bytes: Bytes) -> Result<(), Gone> {
    tx.send(bytes).await.map_err(|_| Gone)
}

/// Waits `us` microseconds unless the receiver goes away first.
async fn pause(tx: &mpsc::Sender<Bytes>, us: &AtomicU64) -> Result<(), Gone> {
    tokio::select! {
        () = delay(us) => Ok(()),
        () = tx.closed() => Err(Gone),
    }
}

async fn produce(
    state: &State,
    ask: &Ask,
    id: &str,
    toks: &[String],
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), Gone> {
    let mut phase = Phase::waiting(state);
    pause(tx, &state.first_token_delay_us).await?;
    phase.run();
    let with_usage = |v: Value| {
        if ask.include_usage {
            let mut v = v;
            v["usage"] = Value::Null;
            v
        } else {
            v
        }
    };
    for (i, tok) in toks.iter().enumerate() {
        if i > 0 {
            pause(tx, &state.token_delay_us).await?;
        }
        let delta = if i == 0 {
            json!({"role": "assistant", "content": tok})
        } else {
            json!({"content": tok})
        };
        send(
            tx,
            event(&with_usage(chunk(id, &ask.model, delta, None, None))),
        )
        .await?;
        if i == 0 {
            hold_at_gate(state, tx).await?;
        }
    }
    send(
        tx,
        event(&with_usage(chunk(
            id,
            &ask.model,
            json!({}),
            Some("stop"),
            None,
        ))),
    )
    .await?;
    if ask.include_usage {
        let mut last = chunk(
            id,
            &ask.model,
            json!({}),
            None,
            Some(usage(ask.prompt_tokens, toks.len())),
        );
        last["choices"] = json!([]);
        send(tx, event(&last)).await?;
    }
    send(tx, Bytes::from_static(b"data: [DONE]\n\n")).await?;
    drop(phase);
    Ok(())
}

/// Waits while the gate is closed, counted in `gated`; the client going
/// away ends the wait.
async fn hold_at_gate(state: &State, tx: &mpsc::Sender<Bytes>) -> Result<(), Gone> {
    let mut gate = state.gate.subscribe();
    if *gate.borrow() {
        return Ok(());
    }
    state.gated.fetch_add(1, Ordering::SeqCst);
    let outcome = tokio::select! {
        _ = gate.wait_for(|open| *open) => Ok(()),
        () = tx.closed() => Err(Gone),
    };
    state.gated.fetch_sub(1, Ordering::SeqCst);
    outcome
}

/// The Prometheus text of `/metrics`.
fn metrics(state: &State) -> String {
    use std::fmt::Write;
    let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
    let running = get(&state.running) + get(&state.extra_running);
    let waiting = get(&state.waiting) + get(&state.extra_waiting);
    let kv = f64::from_bits(get(&state.kv_cache));
    let model = &state.model;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, label: &str, value: String| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{label}=\"{model}\"}} {value}\n"
        );
    };
    if matches!(state.flavour, MetricsFlavour::Vllm | MetricsFlavour::Both) {
        let l = "model_name";
        metric(
            "vllm:num_requests_running",
            "gauge",
            "Number of requests in model execution batches.",
            l,
            running.to_string(),
        );
        metric(
            "vllm:num_requests_waiting",
            "gauge",
            "Number of requests waiting to be processed.",
            l,
            waiting.to_string(),
        );
        metric(
            "vllm:gpu_cache_usage_perc",
            "gauge",
            "GPU KV-cache usage. 1 means 100 percent usage.",
            l,
            kv.to_string(),
        );
        metric(
            "vllm:kv_cache_usage_perc",
            "gauge",
            "KV-cache usage. 1 means 100 percent usage.",
            l,
            kv.to_string(),
        );
    }
    if matches!(state.flavour, MetricsFlavour::Sglang | MetricsFlavour::Both) {
        let l = "model_name";
        metric(
            "sglang:num_running_reqs",
            "gauge",
            "The number of running requests.",
            l,
            running.to_string(),
        );
        metric(
            "sglang:num_queue_reqs",
            "gauge",
            "The number of requests in the waiting queue.",
            l,
            waiting.to_string(),
        );
        metric(
            "sglang:token_usage",
            "gauge",
            "The token usage.",
            l,
            kv.to_string(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

    fn client() -> TestClient {
        Client::builder(TokioExecutor::new()).build_http()
    }

    fn post(addr: SocketAddr, body: &Value) -> Request<Full<Bytes>> {
        Request::post(format!("http://{addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    }

    async fn get(c: &TestClient, addr: SocketAddr, path: &str) -> (u16, String) {
        let req = Request::get(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = c.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[test]
    fn tokens_start_at_words() {
        assert_eq!(tokens("Hello there  you"), ["Hello", " there", "  you"]);
        assert_eq!(tokens(""), Vec::<String>::new());
    }

    #[tokio::test]
    async fn answers_a_completion_with_usage_and_its_name() {
        let w = LlmWorker::builder()
            .name("w1")
            .reply("one two three")
            .start()
            .await;
        let c = client();
        let ask =
            json!({"model": "m", "messages": [{"role": "user", "content": "say three words"}]});
        let resp = c.request(post(w.addr(), &ask)).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-worker"], "w1");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "m");
        assert_eq!(v["choices"][0]["message"]["content"], "one two three");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})
        );
        assert_eq!(w.handle().counters().completions, 1);
    }

    #[tokio::test]
    async fn streams_one_frame_per_event_held_by_the_gate() {
        let w = LlmWorker::builder().reply("a b").start().await;
        let h = w.handle();
        h.close_gate();
        let ask =
            json!({"messages": [], "stream": true, "stream_options": {"include_usage": true}});
        let resp = client().request(post(w.addr(), &ask)).await.unwrap();
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let first = String::from_utf8(first.to_vec()).unwrap();
        assert!(
            first.starts_with("data: {") && first.ends_with("\n\n"),
            "{first}"
        );
        assert!(first.contains(r#""content":"a""#), "{first}");
        crate::eventually("the stream waits at the gate", || h.counters().gated == 1).await;
        h.open_gate();
        let mut rest = Vec::new();
        while let Some(f) = body.frame().await {
            rest.push(String::from_utf8(f.unwrap().into_data().unwrap().to_vec()).unwrap());
        }
        assert_eq!(rest.len(), 4, "{rest:?}");
        assert!(rest[0].contains(r#""content":" b""#));
        assert!(rest[1].contains(r#""finish_reason":"stop""#));
        assert!(rest[2].contains(r#""completion_tokens":2"#), "{}", rest[2]);
        assert_eq!(rest[3], "data: [DONE]\n\n");
        crate::eventually("the stream is counted", || {
            h.counters().streams_completed == 1
        })
        .await;
    }

    #[tokio::test]
    async fn a_client_that_goes_away_cancels_the_stream() {
        let w = LlmWorker::builder().reply("a b c").start().await;
        let h = w.handle();
        h.close_gate();
        let ask = json!({"messages": [], "stream": true});
        let resp = client().request(post(w.addr(), &ask)).await.unwrap();
        let mut body = resp.into_body();
        body.frame().await.unwrap().unwrap();
        crate::eventually("the stream waits at the gate", || h.counters().gated == 1).await;
        drop(body);
        crate::eventually("the stream is cancelled", || {
            h.counters().streams_cancelled == 1
        })
        .await;
        assert_eq!(h.counters().streams_completed, 0);
        assert_eq!(h.counters().in_flight, 0);
    }

    #[tokio::test]
    async fn health_failures_and_metrics_follow_the_handle() {
        let w = LlmWorker::builder()
            .name("w2")
            .flavour(MetricsFlavour::Both)
            .start()
            .await;
        let (h, c) = (w.handle(), client());
        assert_eq!(get(&c, w.addr(), "/health").await.0, 200);
        h.set_healthy(false);
        assert_eq!(get(&c, w.addr(), "/health").await.0, 503);
        h.fail_next(2);
        let ask = json!({"messages": []});
        for want in [500, 500, 200] {
            let resp = c.request(post(w.addr(), &ask)).await.unwrap();
            assert_eq!(resp.status(), want);
        }
        assert_eq!(h.counters().failed, 2);
        h.set_extra_waiting(7);
        h.set_extra_running(3);
        h.set_kv_cache_usage(0.25);
        let (status, text) = get(&c, w.addr(), "/metrics").await;
        assert_eq!(status, 200);
        for line in [
            "vllm:num_requests_waiting{model_name=\"fake-model\"} 7",
            "vllm:num_requests_running{model_name=\"fake-model\"} 3",
            "vllm:gpu_cache_usage_perc{model_name=\"fake-model\"} 0.25",
            "vllm:kv_cache_usage_perc{model_name=\"fake-model\"} 0.25",
            "sglang:num_queue_reqs{model_name=\"fake-model\"} 7",
            "sglang:num_running_reqs{model_name=\"fake-model\"} 3",
            "sglang:token_usage{model_name=\"fake-model\"} 0.25",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let (status, models) = get(&c, w.addr(), "/v1/models").await;
        assert_eq!(status, 200);
        assert!(models.contains(r#""id":"fake-model""#), "{models}");
    }

    #[tokio::test]
    async fn in_flight_requests_show_in_the_metrics() {
        let w = LlmWorker::builder().reply("x y").start().await;
        let h = w.handle();
        h.close_gate();
        let ask = json!({"messages": [], "stream": true});
        let resp = client().request(post(w.addr(), &ask)).await.unwrap();
        let mut body = resp.into_body();
        body.frame().await.unwrap().unwrap();
        crate::eventually("the stream is held", || h.counters().gated == 1).await;
        assert!(
            h.metrics_text()
                .contains("vllm:num_requests_running{model_name=\"fake-model\"} 1\n"),
            "{}",
            h.metrics_text()
        );
        h.open_gate();
        while body.frame().await.is_some() {}
        crate::eventually("the stream ends", || h.counters().in_flight == 0).await;
    }

    #[tokio::test]
    async fn the_failure_rate_is_roughly_kept() {
        let w = LlmWorker::builder().start().await;
        let h = w.handle();
        h.set_failure_rate(0.5);
        let c = client();
        let ask = json!({"messages": []});
        for _ in 0..40 {
            let _ = c.request(post(w.addr(), &ask)).await.unwrap();
        }
        let failed = h.counters().failed;
        assert!((8..=32).contains(&failed), "{failed} of 40");
    }
}
