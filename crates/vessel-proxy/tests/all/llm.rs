//! The LLM middleware examples (`examples/llm/`, issue 10) through a real
//! `vessel run` with two workers: llm-auth, llm-token-limit and
//! llm-billing as one chain in front of a fake OpenAI-style worker. What
//! the scenario files cannot check: the billing counters as
//! `/stats/prometheus` shows them, the token budget shared by the VMs of
//! both workers (shared data), and the value of `retry-after`. The
//! filters are built by `cargo xtask guests`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::Response;
use vessel_testkit::servers;

use crate::support::{
    Bootstrap, Cluster, Listener, Route, WasmFilter, admin_request, client, llm_filter, send,
    start_vessel,
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
