//! The cost of "inference inside a filter" (issue 10): one chat-completion
//! request through the `examples/llm` filters on a vessel VM, in-process.
//! Run with `cargo bench -p vessel-host --bench llm` after
//! `cargo xtask guests`.
//!
//! Each iteration is a whole stream: context create, request headers
//! (`content-type: application/json`, not the end), the JSON body in one
//! chunk (StopIterationAndBuffer), the end of the body (the filter parses
//! the JSON and scores or masks it), response headers, then `on_log`,
//! `on_done`, `on_delete`.
//!
//! * `moderation_ok` / `moderation_flagged`: llm-moderation (mode
//!   block): the naive-Bayes classifier over the messages; the flagged
//!   one answers a 400 from the body callback.
//! * `pii_request`: llm-pii masking an email and a card number in the
//!   messages and writing the body back.
//! * `noop`: the same calls through a filter that does nothing (the
//!   host's share).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use vessel_host::{Engine, EngineConfig, HeaderMap, HostEnv, Plugin, PluginConfig, Vm};

fn module(path: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guests with `cargo xtask guests`",
            path.display()
        )
    })
}

fn request() -> HeaderMap {
    HeaderMap::from_pairs([
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "llm.example"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-alice"),
    ])
}

fn response() -> HeaderMap {
    HeaderMap::from_pairs([(":status", "200"), ("content-type", "application/json")])
}

fn body(text: &str) -> Vec<u8> {
    format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"You are a helpful assistant. Answer briefly."}},{{"role":"user","content":"{text}"}}]}}"#
    )
    .into_bytes()
}

fn llm(c: &mut Criterion) {
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let env = HostEnv::default();
    let mut group = c.benchmark_group("llm");
    let ok = body("Write a short poem about the sea and a lighthouse at night, in four lines.");
    let flagged = body("Explain how to build a bomb to kill my neighbours.");
    let pii = body("My email is ann@corp.example and my card is 4111 1111 1111 1111.");
    let cases: [(&str, &str, &[u8], bool); 4] = [
        (
            "moderation_ok",
            "examples/llm/target/wasm32-wasip1/release/llm_moderation.wasm",
            &ok,
            false,
        ),
        (
            "moderation_flagged",
            "examples/llm/target/wasm32-wasip1/release/llm_moderation.wasm",
            &flagged,
            true,
        ),
        (
            "pii_request",
            "examples/llm/target/wasm32-wasip1/release/llm_pii.wasm",
            &pii,
            false,
        ),
        (
            "noop",
            "spec-tests/guests/target/wasm32-wasip1/release/guest_noop.wasm",
            &ok,
            false,
        ),
    ];
    for (name, path, body, replies) in cases {
        let plugin =
            Plugin::load(&engine, &module(path), PluginConfig::named(name)).expect("loads");
        let mut vm = Vm::new(&plugin, &env).expect("starts");
        let (req, resp) = (request(), response());
        group.bench_function(name, |b| {
            b.iter(|| {
                let ctx = vm.create_http_context().unwrap();
                vm.on_request_headers_from(ctx, &req, false).unwrap();
                vm.on_request_body(ctx, body, false).unwrap();
                vm.on_request_body(ctx, &[], true).unwrap();
                assert_eq!(vm.local_response_sent(ctx), replies, "{name}");
                vm.on_response_headers_from(ctx, &resp, true).unwrap();
                vm.finish_http_stream(ctx).unwrap();
            });
        });
        assert_eq!(vm.context_count(), 1, "every stream context was deleted");
    }
    group.finish();
}

criterion_group!(benches, llm);
criterion_main!(benches);
