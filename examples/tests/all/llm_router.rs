//! The `llm_router` example's parts with real ones: two fake OpenAI
//! workers on loopback, the axum app served on loopback, a hyper client,
//! and real SDK guests (`guest_llm_policy`, `guest_noop`, `llm-auth`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use vessel_examples::llm_router::{
    DECISION_HEADER, Middleware, RouteRequest, Router, RoutingPolicy, WasmPolicy,
    WasmPolicyOptions, Worker, app, serve,
};
use vessel_host::{Engine, EngineConfig};
use vessel_testkit::eventually;
use vessel_testkit::llm_worker::{LlmWorker, WorkerHandle};

fn read(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask guests`", path.display()))
}

fn guest(name: &str) -> Vec<u8> {
    read(&format!(
        "../spec-tests/guests/target/wasm32-wasip1/release/guest_{name}.wasm"
    ))
}

fn llm_filter(name: &str) -> Vec<u8> {
    read(&format!("llm/target/wasm32-wasip1/release/{name}.wasm"))
}

const AUTH_CONFIG: &str = r#"{"keys": {"sk-alice": "acme"}}"#;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Setup {
    workers: Vec<WorkerHandle>,
    router: Arc<Router>,
    policy: Arc<WasmPolicy>,
    middleware: Middleware,
    addr: SocketAddr,
    client: HttpClient,
}

/// Two workers (`w0`, `w1`), a router asking `guest_llm_policy`, an empty
/// middleware chain, the app served on loopback.
async fn setup() -> Setup {
    let mut workers = Vec::new();
    let mut addrs = Vec::new();
    for name in ["w0", "w1"] {
        let w = LlmWorker::builder().name(name).start().await;
        addrs.push(w.addr());
        workers.push(w.handle());
    }
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let policy = Arc::new(
        WasmPolicy::new(
            &engine,
            &guest("llm_policy"),
            br#"{"cluster":"workers"}"#,
            WasmPolicyOptions::default(),
        )
        .unwrap(),
    );
    let router = Arc::new(Router::new(&addrs, policy.clone()));
    let middleware = Middleware::new(&engine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app(router.clone(), &middleware)));
    Setup {
        workers,
        router,
        policy,
        middleware,
        addr,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

fn chat_body(prompt: &str, stream: bool) -> Vec<u8> {
    format!(
        r#"{{"model":"fake-model","messages":[{{"role":"user","content":"{prompt}"}}],"stream":{stream}}}"#
    )
    .into_bytes()
}

fn request(
    addr: SocketAddr,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::from(body))).unwrap()
}

/// A whole completion: (status, worker, decision, body).
async fn chat(s: &Setup, headers: &[(&str, &str)], prompt: &str) -> (u16, String, String, String) {
    chat_with(&s.client, s.addr, headers, prompt).await
}

async fn chat_with(
    client: &HttpClient,
    addr: SocketAddr,
    headers: &[(&str, &str)],
    prompt: &str,
) -> (u16, String, String, String) {
    let resp = client
        .request(request(addr, headers, chat_body(prompt, false)))
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (worker, decision) = (header("x-worker"), header(DECISION_HEADER));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        worker,
        decision,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Sends requests one after another until `stop`; returns the statuses that
/// were not 200 (with their bodies) and how many were sent.
fn background_load(
    s: &Setup,
    headers: &'static [(&'static str, &'static str)],
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<(u16, String)>, usize)> {
    let (client, addr) = (s.client.clone(), s.addr);
    tokio::spawn(async move {
        let (mut bad, mut sent) = (Vec::new(), 0);
        while !stop.load(Ordering::Relaxed) {
            let (status, _, _, body) = chat_with(&client, addr, headers, "load").await;
            sent += 1;
            if status != 200 {
                bad.push((status, body));
            }
        }
        (bad, sent)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wasm_policy_routes_by_queue_depth() {
    let s = setup().await;
    s.router.set_queue(0, Some(5));
    s.router.set_queue(1, Some(0));
    for i in 0..4 {
        let (status, worker, decision, _) = chat(&s, &[], &format!("hello {i}")).await;
        assert_eq!(
            (status, worker.as_str(), decision.as_str()),
            (200, "w1", "policy")
        );
    }
    s.router.set_queue(0, Some(0));
    s.router.set_queue(1, Some(3));
    for i in 0..4 {
        let (status, worker, decision, _) = chat(&s, &[], &format!("hello {i}")).await;
        assert_eq!(
            (status, worker.as_str(), decision.as_str()),
            (200, "w0", "policy")
        );
    }
    assert_eq!(s.router.fallbacks(), 0);
    assert_eq!(s.policy.stats().decisions(), 8);
    assert_eq!(s.workers[0].counters().completions, 4);
    assert_eq!(s.workers[1].counters().completions, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_policy_falls_back_and_the_request_succeeds() {
    let s = setup().await;
    let modes = ["trap", "trap-body", "loop", "grow", "garbage", "gone"];
    for mode in modes {
        let (status, worker, decision, body) = chat(&s, &[("x-policy-test", mode)], "hi").await;
        assert_eq!(status, 200, "{mode}: {body}");
        assert!(worker == "w0" || worker == "w1", "{mode}: {worker}");
        assert_eq!(decision, "fallback", "{mode}");
    }
    assert_eq!(s.router.fallbacks(), modes.len() as u64);
    let stats = s.policy.stats();
    assert_eq!(stats.failures(), 4, "trap, trap-body, loop, grow");
    assert_eq!(stats.unknown_choice(), 2, "garbage, gone");
    // The failed VMs are rebuilt: the policy decides again.
    s.router.set_queue(0, Some(9));
    s.router.set_queue(1, Some(0));
    for _ in 0..4 {
        let (status, worker, decision, _) = chat(&s, &[], "after").await;
        assert_eq!(
            (status, worker.as_str(), decision.as_str()),
            (200, "w1", "policy")
        );
    }
    assert!(stats.rebuilds() >= 1, "{stats:?}");
    assert_eq!(s.router.fallbacks(), modes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_requests_under_load_all_succeed() {
    let s = Arc::new(setup().await);
    let mut tasks = Vec::new();
    for t in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut bad = Vec::new();
            for i in 0..100 {
                // 2 in 100: a trap or a garbage choice.
                let mode = match (t * 100 + i) % 100 {
                    0 => Some("trap"),
                    50 => Some("garbage"),
                    _ => None,
                };
                let headers: Vec<(&str, &str)> =
                    mode.map(|m| ("x-policy-test", m)).into_iter().collect();
                let (status, _, _, body) = chat(&s, &headers, "load").await;
                if status != 200 {
                    bad.push((status, body));
                }
            }
            bad
        }));
    }
    for t in tasks {
        let bad = t.await.unwrap();
        assert!(bad.is_empty(), "{bad:?}");
    }
    // 8 of 400 misbehaved; nothing else fell back.
    assert_eq!(s.router.fallbacks(), 8);
    assert_eq!(s.policy.stats().failures(), 4);
    assert_eq!(s.policy.stats().unknown_choice(), 4);
    assert_eq!(s.policy.stats().decisions(), 400);
    let served = s.workers[0].counters().completions + s.workers[1].counters().completions;
    assert_eq!(served, 400);
}

/// A policy that always answers `answer`.
struct Fixed(Option<usize>);

impl RoutingPolicy for Fixed {
    fn select_worker(&self, _: &RouteRequest, _: &[Worker]) -> Option<usize> {
        self.0
    }
}

#[test]
fn the_router_falls_back_on_an_unhealthy_or_out_of_range_choice() {
    let addrs: Vec<SocketAddr> = vec![
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    ];
    let req = RouteRequest {
        method: http::Method::POST,
        path: "/v1/chat/completions".into(),
        headers: http::HeaderMap::new(),
        body: Bytes::new(),
    };
    let out_of_range = Router::new(&addrs, Arc::new(Fixed(Some(7))));
    let r = out_of_range.route(&req).unwrap();
    assert!(!r.by_policy);
    assert_eq!(out_of_range.fallbacks(), 1);

    let unhealthy = Router::new(&addrs, Arc::new(Fixed(Some(0))));
    unhealthy.set_healthy(0, false);
    let r = unhealthy.route(&req).unwrap();
    assert_eq!((r.index, r.by_policy), (1, false));
    // The in-flight count follows the guard.
    assert_eq!(unhealthy.workers()[1].in_flight, 1);
    drop(r);
    assert_eq!(unhealthy.workers()[1].in_flight, 0);
    unhealthy.set_healthy(0, true);
    let r = unhealthy.route(&req).unwrap();
    assert_eq!((r.index, r.by_policy), (0, true));
    assert_eq!(unhealthy.fallbacks(), 1);

    unhealthy.set_healthy(0, false);
    unhealthy.set_healthy(1, false);
    assert!(unhealthy.route(&req).is_none(), "no healthy worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_reloads_under_load_without_a_failed_request() {
    let s = setup().await;
    s.router.set_queue(0, Some(5));
    s.router.set_queue(1, Some(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = background_load(&s, &[], stop.clone());

    let (_, worker, decision, _) = chat(&s, &[], "x").await;
    assert_eq!((worker.as_str(), decision.as_str()), ("w1", "policy"));

    // A configuration change: the policy looks at a cluster the router
    // does not publish, names nobody, and the fallback routes.
    s.policy
        .reload(&guest("llm_policy"), br#"{"cluster":"elsewhere"}"#)
        .unwrap();
    let (status, _, decision, _) = chat(&s, &[], "x").await;
    assert_eq!((status, decision.as_str()), (200, "fallback"));

    // Another module: guest_noop names nobody either.
    s.policy.reload(&guest("noop"), b"").unwrap();
    let (status, _, decision, _) = chat(&s, &[], "x").await;
    assert_eq!((status, decision.as_str()), (200, "fallback"));

    // Back to the policy.
    s.policy
        .reload(&guest("llm_policy"), br#"{"cluster":"workers"}"#)
        .unwrap();
    let (_, worker, decision, _) = chat(&s, &[], "x").await;
    assert_eq!((worker.as_str(), decision.as_str()), ("w1", "policy"));

    // A module that does not load, or a configuration the policy refuses:
    // the current one keeps deciding.
    assert!(s.policy.reload(b"not wasm", b"").is_err());
    assert!(
        s.policy
            .reload(&guest("llm_policy"), br#"{"no_such_key":1}"#)
            .is_err()
    );
    let (_, worker, decision, _) = chat(&s, &[], "x").await;
    assert_eq!((worker.as_str(), decision.as_str()), ("w1", "policy"));
    assert_eq!(s.policy.stats().reloads(), 3);

    stop.store(true, Ordering::Relaxed);
    let (bad, sent) = load.await.unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert!(sent > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_middleware_chain_reloads_under_load_without_a_failed_request() {
    let s = setup().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = background_load(&s, &[("authorization", "Bearer sk-alice")], stop.clone());

    let (status, ..) = chat(&s, &[], "no key").await;
    assert_eq!(status, 200, "no middleware yet");

    let auth = s
        .middleware
        .filter("llm_auth", &llm_filter("llm_auth"), AUTH_CONFIG.as_bytes())
        .unwrap();
    s.middleware.swap(vec![auth]);
    let (status, worker, _, body) = chat(&s, &[], "no key").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("invalid_api_key"), "{body}");
    assert_eq!(worker, "", "answered by the filter, not a worker");
    let (status, ..) = chat(&s, &[("authorization", "Bearer sk-alice")], "key").await;
    assert_eq!(status, 200);

    s.middleware.swap(Vec::new());
    let (status, ..) = chat(&s, &[], "no key").await;
    assert_eq!(status, 200, "auth swapped out");

    stop.store(true, Ordering::Relaxed);
    let (bad, sent) = load.await.unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert!(sent > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_passes_through_event_by_event() {
    let s = setup().await;
    let auth = s
        .middleware
        .filter("llm_auth", &llm_filter("llm_auth"), AUTH_CONFIG.as_bytes())
        .unwrap();
    s.middleware.swap(vec![auth]);
    for w in &s.workers {
        w.close_gate();
    }
    let resp = s
        .client
        .request(request(
            s.addr,
            &[("authorization", "Bearer sk-alice")],
            chat_body("stream please", true),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let index = match resp.headers().get("x-worker").unwrap().to_str().unwrap() {
        "w0" => 0,
        _ => 1,
    };
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("data: ") {
        let frame = body.frame().await.expect("a frame").unwrap();
        if let Ok(data) = frame.into_data() {
            seen.extend_from_slice(&data);
        }
    }
    // The first event arrived while the worker holds the rest at its gate.
    let worker = &s.workers[index];
    eventually("the worker holds the stream at its gate", || {
        worker.counters().gated == 1
    })
    .await;
    assert_eq!(worker.counters().streams_completed, 0);
    assert_eq!(s.router.workers()[index].in_flight, 1);

    worker.open_gate();
    let rest = body.collect().await.unwrap().to_bytes();
    seen.extend_from_slice(&rest);
    let text = String::from_utf8_lossy(&seen);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(worker.counters().streams_completed, 1);
    eventually("the request no longer counts in flight", || {
        s.router.workers()[index].in_flight == 0
    })
    .await;
}
