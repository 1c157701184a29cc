//! The LLM middleware examples (`examples/llm/`, issue 10) through a real
//! `vessel run` with two workers: llm-auth, llm-token-limit and
//! llm-billing as one chain in front of a fake OpenAI-style worker. What
//! the scenario files cannot check: the billing counters as
//! `/stats/prometheus` shows them, the token budget shared by the VMs of
//! both workers (shared data), and the value of `retry-after`; and the
//! Redis budget of `llm_token_limit_redis.wasm` held across two gateway
//! instances (a real redis-server, `VESSEL_REDIS`: skipped without it, a
//! failure under `CI=true`), failing open when Redis is down. The filters
//! are built by `cargo xtask guests`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use serde_json::json;
use vessel_testkit::{eventually, servers};

use crate::support::{
    Answer, Bootstrap, Cluster, Listener, Route, WasmFilter, admin_request, answer, client,
    llm_filter, redis, send, start_vessel,
};

const COMPLETION: &str = r#"{"id":"c","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;

const STREAM: &str = concat!(
    "data: {\"id\":\"s\",\"model\":\"llama-3.1-8b\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"s\",\"model\":\"llama-3.1-8b\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n",
    "data: [DONE]\n\n",
);

/// The fake worker: `/stream` answers an event stream, anything else a
/// JSON completion.
async fn worker() -> std::net::SocketAddr {
    servers::serve_fn(|req: http::Request<hyper::body::Incoming>| async move {
        let (body, ct) = if req.uri().path() == "/stream" {
            (STREAM, "text/event-stream")
        } else {
            (COMPLETION, "application/json")
        };
        let mut resp: Response<_> = servers::reply(200, body);
        resp.headers_mut()
            .insert("content-type", ct.parse().unwrap());
        resp
    })
    .await
}

fn prometheus_value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}{{}} ")))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_token_limit_and_billing_through_vessel_run() {
    let up = worker().await;
    let auth = r#"{"keys": {"sk-alice": "acme", "sk-bob": "globex"}, "remove_key_header": true}"#;
    let limit = r#"{"tokens_per_minute": 1000, "tenants": {"acme": 40}}"#;
    let config = Bootstrap::new()
        .listener(
            Listener::new("main")
                .route(Route::prefix("/").to("backend"))
                .filter(WasmFilter::new("llm_auth", llm_filter("auth")).configuration(auth))
                .filter(
                    WasmFilter::new("llm_token_limit", llm_filter("token_limit"))
                        .configuration(limit),
                )
                .filter(WasmFilter::new("llm_billing", llm_filter("billing"))),
        )
        .cluster(Cluster::new("backend").endpoint(up));
    let vessel = start_vessel("llm-chain", &config, 2).await;
    let (main, admin) = (vessel.listener("main"), vessel.admin());
    // Fresh clients (connections) per request, so both workers' VMs get
    // requests and the budget must hold across them.
    let alice = [("authorization", "Bearer sk-alice")];
    let bob = [("authorization", "Bearer sk-bob")];

    let denied = send(&client(), main, "/json", &[]).await;
    assert_eq!(denied.status, 401, "{denied:?}");
    assert!(
        denied.body.contains("\"code\":\"invalid_api_key\""),
        "{denied:?}"
    );

    // acme: 17 + 17 + 10 = 44 tokens of 40, then over budget.
    for path in ["/json", "/json", "/stream"] {
        let a = send(&client(), main, path, &alice).await;
        assert_eq!(a.status, 200, "{path}: {a:?}");
    }
    let over = send(&client(), main, "/json", &alice).await;
    assert_eq!(over.status, 429, "{over:?}");
    let retry: u64 = over
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric retry-after: {over:?}"));
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(over.header("content-type"), Some("application/json"));
    assert!(
        over.body.contains("\"code\":\"rate_limit_exceeded\""),
        "{over:?}"
    );
    // globex has a budget of its own.
    let b = send(&client(), main, "/stream", &bob).await;
    assert_eq!(b.status, 200, "{b:?}");
    assert_eq!(b.body, STREAM);

    let (status, prom) = admin_request(admin, "GET", "/stats/prometheus")
        .await
        .unwrap();
    assert_eq!(status, 200);
    for (name, want) in [
        ("llm_prompt_tokens_tenant_acme_model_gpt_4o_mini", 24),
        ("llm_completion_tokens_tenant_acme_model_gpt_4o_mini", 10),
        ("llm_requests_tenant_acme_model_gpt_4o_mini", 2),
        ("llm_prompt_tokens_tenant_acme_model_llama_3_1_8b", 7),
        ("llm_completion_tokens_tenant_acme_model_llama_3_1_8b", 3),
        ("llm_prompt_tokens_tenant_globex_model_llama_3_1_8b", 7),
        ("llm_requests_tenant_globex_model_llama_3_1_8b", 1),
    ] {
        assert_eq!(
            prometheus_value(&prom, name),
            Some(want),
            "{name} in\n{prom}"
        );
        assert!(prom.contains(&format!("# TYPE {name} counter\n")), "{prom}");
    }
}

/// The Redis budget's window: long, so that no window boundary falls
/// inside the test (the windows are fixed: `now / window_seconds`).
const REDIS_WINDOW: u64 = 1_000_000_000;

/// One gateway instance: llm-token-limit's Redis build alone, acme may
/// use 30 tokens, in front of `up`, with Redis at `redis`.
async fn redis_gateway(
    name: &str,
    up: SocketAddr,
    redis: SocketAddr,
    prefix: &str,
) -> vessel_testkit::VesselProcess {
    let limit = json!({
        "tokens_per_minute": 1000,
        "tenants": {"acme": 30},
        "window_seconds": REDIS_WINDOW,
        "redis": {"cluster": "budget-redis", "key_prefix": prefix, "timeout_ms": 2000},
    });
    let config = Bootstrap::new()
        .listener(
            Listener::new("main")
                .route(Route::prefix("/").to("backend"))
                .filter(
                    WasmFilter::new("llm_token_limit", llm_filter("token_limit_redis"))
                        .configuration(limit.to_string()),
                ),
        )
        .cluster(Cluster::new("backend").endpoint(up))
        .cluster(Cluster::new("budget-redis").endpoint(redis));
    start_vessel(name, &config, 1).await
}

/// A chat completion (POST with a body, so the paused request's body
/// waits for the budget check too) as `tenant`.
async fn chat(addr: SocketAddr, tenant: &str) -> Answer {
    let req = http::Request::post(format!("http://{addr}/json"))
        .header("content-type", "application/json")
        .header("x-llm-tenant", tenant)
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    answer(&client(), req).await
}

/// `GET key` in the Redis server at `addr`: the number stored, `None` for
/// a key not set.
fn redis_get(addr: SocketAddr, key: &str) -> Option<u64> {
    let reply = crate::support::redis_command(addr, &["GET", key])
        .pop()
        .flatten()?;
    Some(reply.parse().expect("a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_token_budget_holds_across_two_gateway_instances() {
    let Some(redis) = redis("llm redis budget") else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let prefix = format!(
        "vessel_llm_budget_{}_{}",
        std::process::id(),
        nanos.as_nanos()
    );
    let acme_key = format!("{prefix}:acme:{}", nanos.as_secs() / REDIS_WINDOW);
    let up = worker().await;
    let a = redis_gateway("llm-redis-a", up, redis, &prefix).await;
    let b = redis_gateway("llm-redis-b", up, redis, &prefix).await;
    let (a_main, b_main) = (a.listener("main"), b.listener("main"));

    // acme uses its budget through instance A: 17 + 17 = 34 of 30.
    for n in [17, 34] {
        let r = chat(a_main, "acme").await;
        assert_eq!(r.status, 200, "{r:?}\n{}", a.stderr());
        assert_eq!(r.body, COMPLETION);
        // The charge is fire and forget: wait until Redis has it.
        eventually(&format!("{acme_key} = {n}"), || {
            redis_get(redis, &acme_key) == Some(n)
        })
        .await;
    }
    // The charge's answer is logged with the total Redis returned.
    eventually("A logs the second charge", || {
        a.stderr()
            .contains("llm-token-limit: acme charged 17 tokens, 34/30 used")
    })
    .await;

    // Instance B has never seen acme, yet answers 429 from Redis.
    let over = chat(b_main, "acme").await;
    assert_eq!(over.status, 429, "{over:?}\n{}", b.stderr());
    let retry: u64 = over
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric retry-after: {over:?}"));
    assert!((1..=REDIS_WINDOW).contains(&retry), "retry-after {retry}");
    assert_eq!(over.header("content-type"), Some("application/json"));
    assert!(
        over.body.contains("\"code\":\"rate_limit_exceeded\"")
            && over
                .body
                .contains("Rate limit reached for acme: 34 of 30 tokens"),
        "{over:?}"
    );
    // So does A, and another tenant still passes through B.
    assert_eq!(chat(a_main, "acme").await.status, 429);
    let globex = chat(b_main, "globex").await;
    assert_eq!(globex.status, 200, "{globex:?}");
    assert_eq!(globex.body, COMPLETION);
    let globex_key = format!("{prefix}:globex:{}", nanos.as_secs() / REDIS_WINDOW);
    eventually(&format!("{globex_key} = 17"), || {
        redis_get(redis, &globex_key) == Some(17)
    })
    .await;
    // The 429s charged nothing.
    assert_eq!(redis_get(redis, &acme_key), Some(34));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_token_budget_fails_open_when_redis_is_down() {
    // A loopback port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = closed.local_addr().unwrap();
    drop(closed);
    let up = worker().await;
    let g = redis_gateway("llm-redis-down", up, down, "vessel_llm_budget_down").await;
    let main = g.listener("main");
    // 17 + 17 + 17 tokens for a budget of 30: each still passes.
    for _ in 0..3 {
        let r = chat(main, "acme").await;
        assert_eq!(r.status, 200, "{r:?}\n{}", g.stderr());
        assert_eq!(r.body, COMPLETION);
    }
    let log = g.stderr();
    assert!(
        log.contains(
            "llm-token-limit: redis budget check failed (status 1); acme let through (fail open)"
        ),
        "{log}"
    );
}
