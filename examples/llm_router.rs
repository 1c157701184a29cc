//! A Rust LLM router that embeds vessel (issue 10, "Embedding in a Rust LLM
//! router"): its routing policy is a proxy-wasm filter behind the router's
//! own `select_worker` trait, its middleware is a proxy-wasm chain on the
//! axum app, and a native least-in-flight policy routes whenever the filter
//! fails. See `vessel_examples::llm_router` and docs/llm-gateway.md.
//!
//! ```sh
//! cargo xtask guests      # builds the policy and the middleware filters
//! cargo run -p vessel-examples --example llm_router              # two fake workers
//! cargo run -p vessel-examples --example llm_router -- 127.0.0.1:8001 127.0.0.1:8002
//! ```
//!
//! `VESSEL_ROUTER_PORT` sets the port (default 3000). The router serves
//! until Ctrl-C.

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use vessel_examples::llm_router::{Middleware, Router, WasmPolicy, WasmPolicyOptions, app, serve};
use vessel_host::{Engine, EngineConfig};
use vessel_testkit::llm_worker::LlmWorker;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> anyhow::Result<Vec<u8>> {
    let path = Path::new(ROOT).join(rel);
    std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; build it with `cargo xtask guests`",
            path.display()
        )
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env_logger::init();

    // 1. The workers: the addresses given, or two fake OpenAI workers.
    let mut addrs: Vec<SocketAddr> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let mut _fakes = Vec::new();
    if addrs.is_empty() {
        for name in ["w0", "w1"] {
            let w = LlmWorker::builder().name(name).start().await;
            println!("fake worker {name} on {}", w.addr());
            addrs.push(w.addr());
            _fakes.push(w);
        }
    }

    // 2. The routing policy: guest_llm_policy (least queue, then prompt
    //    affinity) behind the router's `RoutingPolicy` trait.
    let engine = Engine::new(EngineConfig::default())?;
    let policy_wasm =
        read("../spec-tests/guests/target/wasm32-wasip1/release/guest_llm_policy.wasm")?;
    let policy = Arc::new(WasmPolicy::new(
        &engine,
        &policy_wasm,
        br#"{"cluster":"workers"}"#,
        WasmPolicyOptions::default(),
    )?);
    let router = Arc::new(Router::new(&addrs, policy.clone()));

    // 3. The middleware: llm-auth in front (one key), hot-swappable.
    let middleware = Middleware::new(&engine);
    let auth = middleware.filter(
        "llm_auth",
        &read("llm/target/wasm32-wasip1/release/llm_auth.wasm")?,
        br#"{"keys": {"sk-demo": "demo"}}"#,
    )?;
    middleware.swap(vec![auth]);

    // 4. Serve.
    let port: u16 = std::env::var("VESSEL_ROUTER_PORT").map_or(Ok(3000), |p| p.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("router on http://{addr}; try:");
    println!(
        "  curl -N http://{addr}/v1/chat/completions -H 'authorization: Bearer sk-demo' \\\n    \
         -H 'content-type: application/json' \\\n    \
         -d '{{\"model\":\"fake-model\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}],\"stream\":true}}'"
    );
    println!(
        "  (add -H 'x-policy-test: trap' to see the native fallback route it; -i shows x-worker and x-router-decision)"
    );
    tokio::select! {
        served = serve(listener, app(router.clone(), &middleware)) => served?,
        _ = tokio::signal::ctrl_c() => {}
    }
    println!(
        "{} decisions, {} fallbacks",
        policy.stats().decisions(),
        router.fallbacks()
    );
    Ok(())
}
