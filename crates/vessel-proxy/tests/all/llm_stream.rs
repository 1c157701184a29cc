//! `vessel run` as an LLM gateway, streaming: the fake OpenAI-compatible
//! worker of vessel-testkit (`llm_worker`) behind a chain of three wasm
//! filters (guest_quirks `q1`, guest_bodies `bodies` in passthrough, which
//! reads and logs every response body chunk, guest_quirks `q2`; both quirks
//! log `quirks: on_done`), driven by a hyper client, by `curl -N` and by
//! the official `openai` Python package (`VESSEL_PYTHON`, set by `cargo
//! xtask test`); and once behind the five LLM middleware examples of
//! `examples/llm`.
//!
//! No fixed sleeps: the worker's gate holds a stream after its first token,
//! and its counters say when it is held, done or cancelled.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use vessel_testkit::bootstrap::{Bootstrap, Cluster, Listener, Route, WasmFilter};
use vessel_testkit::llm_worker::{LlmWorker, WorkerHandle};
use vessel_testkit::{VesselProcess, WAIT, eventually, eventually_async};

use crate::support::{self, llm_filter};

/// The worker's reply: four tokens.
const REPLY: &str = "Streams stay streaming here";

/// `vessel run` with listener `main` (the three-filter chain, everything
/// routed to the cluster `workers` with `worker` in it) and the admin.
async fn gateway(name: &str, worker: SocketAddr) -> VesselProcess {
    let config = Bootstrap::new()
        .listener(
            Listener::new("main")
                .route(Route::prefix("/").to("workers"))
                .filter(WasmFilter::new("q1", support::guest("quirks")))
                .filter(
                    WasmFilter::new("bodies", support::guest("bodies"))
                        .configuration("request=passthrough,response=passthrough"),
                )
                .filter(WasmFilter::new("q2", support::guest("quirks"))),
        )
        .cluster(Cluster::new("workers").endpoint(worker));
    support::start_vessel(&format!("llm-stream-{name}"), &config, 1).await
}

async fn worker(name: &str) -> (LlmWorker, WorkerHandle) {
    let w = LlmWorker::builder().name(name).reply(REPLY).start().await;
    let h = w.handle();
    (w, h)
}

fn stream_request(addr: SocketAddr) -> http::Request<Full<Bytes>> {
    let ask = json!({
        "model": "fake-model",
        "messages": [{"role": "user", "content": "how do streams behave"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-stream")
        .body(Full::new(Bytes::from(ask.to_string())))
        .unwrap()
}

/// Reads `body` until `buf` holds a whole SSE event (`\n\n`); returns the
/// event, leaving the rest in `buf`.
async fn next_event(body: &mut Incoming, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            return Some(String::from_utf8(event).unwrap());
        }
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("a body frame in time")?
            .expect("a good body frame");
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
    }
}

/// The `data:` JSON of an event.
fn data(event: &str) -> Value {
    let json = event
        .strip_prefix("data: ")
        .and_then(|e| e.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("not an SSE data event: {event:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// How many lines of `log` are plugin `plugin`'s `quirks: <callback>`.
fn quirks_lines(log: &str, plugin: &str, callback: &str) -> usize {
    let line = format!("wasm log {plugin}: quirks: {callback}");
    log.lines().filter(|l| l.ends_with(&line)).count()
}

/// A client over HTTP/1.1 (`http2` false) or h2c with prior knowledge,
/// with TCP_NODELAY.
fn client(http2: bool) -> Client<HttpConnector, Full<Bytes>> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build(http)
}

/// The first token reaches the client through the whole chain while the
/// worker is held at its gate, so it has not sent the last one: no filter
/// buffered the stream. The body filter saw that first event as a chunk of
/// its own. Then the rest, the usage chunk and `[DONE]` arrive. Over
/// HTTP/1.1, then h2c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_passes_through_the_chain_chunk_by_chunk() {
    let (w, h) = worker("w1").await;
    let vessel = gateway("chunks", w.addr()).await;
    let main = vessel.listener("main");
    for (n, http2) in [(1, false), (2, true)] {
        h.close_gate();
        let resp = tokio::time::timeout(WAIT, client(http2).request(stream_request(main)))
            .await
            .expect("the head in time")
            .expect("a response");
        assert_eq!(resp.status(), 200, "{}", vessel.stderr());
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["x-worker"], "w1");
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        let first = next_event(&mut body, &mut buf)
            .await
            .expect("a first event");
        let first = data(&first);
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["content"], "Streams");
        // The gate was closed before the request: the worker cannot have
        // sent more than its first token.
        assert_eq!(h.counters().streams_completed, n - 1, "http2={http2}");
        eventually("the worker holds the stream", || h.counters().gated == 1).await;
        eventually(
            "guest_bodies logs the first event as a response body chunk",
            || {
                let log = vessel.stderr();
                let chunks = log.lines().filter(|l| {
                    l.contains("wasm log bodies: response-body chunk data=data: {")
                        && l.contains(r#""content":"Streams""#)
                });
                chunks.count() == usize::try_from(n).unwrap()
            },
        )
        .await;

        h.open_gate();
        let mut content = String::from("Streams");
        let mut usage = None;
        let mut done = false;
        while let Some(event) = next_event(&mut body, &mut buf).await {
            if event == "data: [DONE]\n\n" {
                done = true;
                continue;
            }
            let v = data(&event);
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                content.push_str(t);
            }
            if v["usage"].is_object() {
                usage = Some(v["usage"].clone());
            }
        }
        assert!(done, "no [DONE] (http2={http2})");
        assert_eq!(content, REPLY);
        assert_eq!(
            usage,
            Some(json!({"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}))
        );
        eventually("the worker counts the stream done", || {
            h.counters().streams_completed == n
        })
        .await;
    }
}

/// A client that goes away mid-stream (the worker held at its gate) makes
/// vessel cancel the upstream request: the worker sees its stream's
/// receiver go (`streams_cancelled`), and both quirks filters run
/// `on_log` and `on_done` for the stream. Over HTTP/1.1 (the connection
/// closes), then h2c (the stream is reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_cancels_upstream_and_runs_on_done() {
    let (w, h) = worker("w1").await;
    let vessel = gateway("cancel", w.addr()).await;
    let main = vessel.listener("main");
    h.close_gate();
    for (n, http2) in [(1, false), (2, true)] {
        let client = client(http2);
        let resp = tokio::time::timeout(WAIT, client.request(stream_request(main)))
            .await
            .expect("the head in time")
            .expect("a response");
        assert_eq!(resp.status(), 200, "{}", vessel.stderr());
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        let first = next_event(&mut body, &mut buf)
            .await
            .expect("a first event");
        assert_eq!(data(&first)["choices"][0]["delta"]["content"], "Streams");
        eventually("the worker holds the stream", || h.counters().gated == 1).await;
        let log = vessel.stderr();
        for q in ["q1", "q2"] {
            assert_eq!(
                quirks_lines(&log, q, "on_done"),
                n - 1,
                "{q}, http2={http2}"
            );
        }

        // The client goes with the body half read.
        drop(body);
        drop(client);
        eventually("the worker sees the stream cancelled", || {
            h.counters().streams_cancelled == u64::try_from(n).unwrap()
        })
        .await;
        let c = h.counters();
        assert_eq!(
            (c.streams_completed, c.in_flight, c.gated),
            (0, 0, 0),
            "{c:?}"
        );
        eventually("every filter's on_log and on_done ran", || {
            let log = vessel.stderr();
            ["q1", "q2"].iter().all(|q| {
                quirks_lines(&log, q, "on_log") == n && quirks_lines(&log, q, "on_done") == n
            })
        })
        .await;
    }
}

/// The five LLM middleware examples (`examples/llm`: auth, token limit,
/// PII masking, billing, moderation annotating) keep a stream streaming
/// too: an event reaches the client while the worker is held after its
/// first token. (llm-pii holds back the tail of a `delta.content` that
/// could still grow into a match, so that first event may carry less
/// text: the whole text arrives by the end.) The stream's usage reaches
/// the billing counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_middleware_chain_streams_too() {
    let (w, h) = worker("w1").await;
    let config = Bootstrap::new()
        .listener(
            Listener::new("main")
                .route(Route::prefix("/").to("workers"))
                .filter(
                    WasmFilter::new("llm_auth", llm_filter("auth"))
                        .configuration(r#"{"keys": {"sk-stream": "acme"}}"#),
                )
                .filter(
                    WasmFilter::new("llm_token_limit", llm_filter("token_limit"))
                        .configuration(r#"{"tokens_per_minute": 1000000}"#),
                )
                .filter(WasmFilter::new("llm_pii", llm_filter("pii")).configuration("{}"))
                .filter(WasmFilter::new("llm_billing", llm_filter("billing")).configuration("{}"))
                .filter(
                    WasmFilter::new("llm_moderation", llm_filter("moderation"))
                        .configuration(r#"{"mode": "annotate"}"#),
                ),
        )
        .cluster(Cluster::new("workers").endpoint(w.addr()));
    let vessel = support::start_vessel("llm-stream-middleware", &config, 1).await;
    let (main, admin) = (vessel.listener("main"), vessel.admin());
    h.close_gate();

    let resp = tokio::time::timeout(WAIT, client(false).request(stream_request(main)))
        .await
        .expect("the head in time")
        .expect("a response");
    assert_eq!(resp.status(), 200, "{}", vessel.stderr());
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let verdict = resp.headers()["x-llm-moderation"].to_str().unwrap();
    assert!(verdict.starts_with("ok; score="), "{verdict}");
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let first = next_event(&mut body, &mut buf)
        .await
        .expect("a first event");
    assert_eq!(data(&first)["object"], "chat.completion.chunk");
    assert_eq!(h.counters().streams_completed, 0);
    eventually("the worker holds the stream", || h.counters().gated == 1).await;

    h.open_gate();
    let mut content = data(&first)["choices"][0]["delta"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut done = false;
    while let Some(event) = next_event(&mut body, &mut buf).await {
        if event == "data: [DONE]\n\n" {
            done = true;
            continue;
        }
        if let Some(t) = data(&event)["choices"][0]["delta"]["content"].as_str() {
            content.push_str(t);
        }
    }
    assert!(done, "no [DONE]");
    assert_eq!(content, REPLY);
    let billed = "llm_completion_tokens.tenant.acme.model.fake-model";
    eventually_async("billing counts the stream's tokens", || async move {
        support::stat(admin, billed).await == Some(4)
    })
    .await;
}

/// Whether the test may skip for a missing `what`: not under `CI=true`,
/// where it fails instead. Prints the skip.
fn skip(what: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true needs {what}"
    );
    eprintln!("SKIPPED: {what} is missing");
}

/// `curl -N` (no output buffering) through the gateway: the first event's
/// line reaches curl's stdout while the worker is held, the rest after the
/// gate opens. Debian's curl; without it the test prints a skip (fails
/// under `CI=true`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_n_streams_through_vessel_run() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        skip("curl (Debian: `apt-get install curl`)");
        return;
    }
    let (w, h) = worker("w1").await;
    let vessel = gateway("curl", w.addr()).await;
    let main = vessel.listener("main");
    h.close_gate();

    let ask = json!({"messages": [{"role": "user", "content": "hi"}], "stream": true});
    let mut child = std::process::Command::new("curl")
        .args([
            "-sS",
            "-N",
            "--max-time",
            "60",
            "-H",
            "content-type: application/json",
        ])
        .arg("--data")
        .arg(ask.to_string())
        .arg(format!("http://{main}/v1/chat/completions"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start curl");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().expect("curl's stdout");
    let _child = Kill(child);
    // curl's output, line by line, from a thread.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = next_line(&mut lines).await.expect("a first line from curl");
    let v = data(&format!("{first}\n\n"));
    assert_eq!(v["choices"][0]["delta"]["content"], "Streams");
    let held = h.counters();
    assert_eq!((held.gated, held.streams_completed), (1, 0), "{held:?}");

    h.open_gate();
    let mut content = String::from("Streams");
    let mut last = String::new();
    while let Some(line) = next_line(&mut lines).await {
        if let Some(json) = line.strip_prefix("data: ")
            && json != "[DONE]"
        {
            let v: Value = serde_json::from_str(json).unwrap();
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                content.push_str(t);
            }
        }
        if !line.is_empty() {
            last = line;
        }
    }
    assert_eq!(content, REPLY);
    assert_eq!(last, "data: [DONE]");
}

/// The next line curl printed (`None` once it has exited), bounded by
/// [`WAIT`].
async fn next_line(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Option<String> {
    tokio::time::timeout(WAIT, lines.recv())
        .await
        .expect("curl prints in time")
}

/// The Python of the venv that has the `openai` package: `VESSEL_PYTHON`
/// (`cargo xtask test` makes the venv and sets it), else `target/py` if
/// that venv exists.
fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VESSEL_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/py/bin/python");
    venv.exists().then_some(venv)
}

/// The official `openai` Python client through the gateway
/// (`tests/clients/openai_chat.py`): a completion and a stream with
/// `stream_options.include_usage`; content, tokens and usage come through
/// whole. Without `VESSEL_PYTHON` (or `target/py`) the test prints a skip
/// (fails under `CI=true`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_completes_and_streams_through_vessel_run() {
    let Some(python) = python() else {
        skip("VESSEL_PYTHON (a venv with `openai`; `cargo xtask test` makes it)");
        return;
    };
    let (w, h) = worker("w1").await;
    let vessel = gateway("openai", w.addr()).await;
    let main = vessel.listener("main");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/openai_chat.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg(&script)
            .arg(format!("http://{main}/v1"))
            .output()
            .unwrap_or_else(|e| panic!("start {}: {e}", python.display()))
    });
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("the script ends in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\nstdout:\n{stdout}\nstderr:\n{}\nvessel:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        vessel.stderr()
    );
    let results: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(results.len(), 2, "{stdout}");
    let (whole, streamed) = (&results[0], &results[1]);
    let tokens: Vec<Value> = h.reply_tokens().into_iter().map(Value::from).collect();
    assert_eq!(whole["kind"], "completion");
    assert_eq!(whole["content"], REPLY);
    assert_eq!(whole["worker"], "w1");
    assert_eq!(
        whole["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    );
    assert_eq!(streamed["kind"], "stream");
    assert_eq!(streamed["tokens"], Value::from(tokens));
    assert_eq!(streamed["finish_reason"], "stop");
    assert_eq!(
        streamed["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    );
    let c = h.counters();
    assert_eq!((c.completions, c.streams_completed), (2, 1), "{c:?}");
}
