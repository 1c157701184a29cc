//! Adapter overhead: one request through [`VesselLayer`] over an in-memory
//! inner service that answers like `vessel run`'s direct response (status,
//! `content-type`, `content-length`, an 18-byte body), with no sockets.
//! Run with `cargo xtask bench`. Times are the benchmark thread's CPU time,
//! which other load on the machine barely moves.
//!
//! * `direct`: the inner service alone (the floor);
//! * `no_filter`: the layer with an empty chain;
//! * `bench_headers`: the layer with the benchmark header filter
//!   (`guest_bench_headers`: reads a request header, adds one request and
//!   one response header);
//! * `stream_only`: the same stream's events through the filter manager
//!   and the pool ([`PooledStream`]) with no hyper types.
//!
//! `bench_headers − no_filter` is what one filter costs per request through
//! the adapter; compare it with vessel-host's `lifecycle/bench_headers`
//! (the same guest callbacks with no adapter) to see the adapter's share.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, header};
use http_body_util::{BodyExt, Empty, Full};
use tower::{Layer, Service, ServiceExt};
use vessel_host::{
    Engine, EngineConfig, FailurePolicy as Policy, FilterVms, HeaderMap, HostEnv, HttpStream,
    Plugin, PluginConfig, StreamConfig, Vm,
};
use vessel_hyper::{
    Clusters, ConnectionInfo, FailurePolicy, FilterPool, PooledStream, Runtime, VesselBody,
    VesselLayer,
};

const BODY: &[u8] = b"hello from vessel\n";

fn guest() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec-tests/guests/target/wasm32-wasip1/release/guest_bench_headers.wasm");
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask guests`", path.display()))
}

/// The request wrk sends (`-H 'x-bench: 1'`), with the connection facts
/// `vessel run` adds.
fn request() -> Request<Empty<Bytes>> {
    let source: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let destination: SocketAddr = "127.0.0.1:10010".parse().unwrap();
    let mut req = Request::get("/x")
        .header("host", "127.0.0.1:10010")
        .header("x-bench", "1")
        .body(Empty::new())
        .unwrap();
    req.extensions_mut().insert(ConnectionInfo {
        source,
        destination,
        id: 1,
    });
    req
}

/// [`request`]'s headers as the host's map.
fn stream_request() -> HeaderMap {
    HeaderMap::from_pairs([
        (":authority", "127.0.0.1:10010"),
        (":path", "/x"),
        (":method", "GET"),
        (":scheme", "http"),
        ("x-bench", "1"),
    ])
}

/// [`direct_response`]'s headers as the host's map.
fn stream_response() -> HeaderMap {
    HeaderMap::from_pairs([
        (":status", "200"),
        ("content-type", "text/plain"),
        ("content-length", "18"),
    ])
}

/// `vessel run`'s direct response.
fn direct_response<B>(_req: Request<B>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, BODY.len().into());
    resp
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), so that
/// other load on a shared machine does not count.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Times `iters` requests, one after the other, inside one `block_on` on a
/// current-thread runtime: every task of a request runs on this thread, so
/// its CPU time is the cost.
fn time<S, B>(rt: &tokio::runtime::Runtime, service: &S, iters: u64) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = thread_cpu_time();
        for _ in 0..iters {
            let resp = service.clone().oneshot(request()).await.unwrap();
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            assert_eq!(body.len(), BODY.len());
            std::hint::black_box(parts);
        }
        thread_cpu_time().saturating_sub(start)
    })
}

fn adapter(c: &mut Criterion) {
    // One worker thread, like `vessel run --concurrency 1`; a current-thread
    // runtime keeps every task of a request on the timing thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let plugin =
        Plugin::load(&engine, &guest(), PluginConfig::named("bench_headers")).expect("loads");
    let pool = rt.block_on(async {
        let runtime = Runtime::new(Clusters::new());
        FilterPool::new(
            &plugin,
            &HostEnv::default(),
            &runtime,
            1,
            FailurePolicy::FailClosed,
        )
        .unwrap()
    });
    let inner = tower::service_fn(|req: Request<VesselBody>| async move {
        Ok::<_, Infallible>(direct_response(req))
    });

    let mut group = c.benchmark_group("adapter");
    let direct = tower::service_fn(|req: Request<Empty<Bytes>>| async move {
        Ok::<_, Infallible>(direct_response(req))
    });
    group.bench_function("direct", |b| b.iter_custom(|n| time(&rt, &direct, n)));
    let no_filter = VesselLayer::new(Vec::new()).layer(inner);
    group.bench_function("no_filter", |b| b.iter_custom(|n| time(&rt, &no_filter, n)));
    let with_filter = VesselLayer::new(vec![pool.clone()]).layer(inner);
    group.bench_function("bench_headers", |b| {
        b.iter_custom(|n| time(&rt, &with_filter, n))
    });
    // The same stream through the filter manager and the pool alone, with
    // no hyper types: what the pump adds is `bench_headers` minus this
    // minus `no_filter`.
    // The inputs are clones of maps built once (two allocations each, as
    // the pump's conversion of a hyper head).
    let (request_map, response_map) = (stream_request(), stream_response());
    let pools = vec![pool.clone()];
    group.bench_function("stream_only", |b| {
        b.iter_custom(|n| {
            let start = thread_cpu_time();
            for _ in 0..n {
                let mut stream = PooledStream::new(&pools, StreamConfig::new(1));
                stream.request_headers(request_map.clone(), true);
                while let Some(a) = stream.poll_action() {
                    std::hint::black_box(a);
                }
                stream.response_headers(response_map.clone(), false);
                stream.response_data(BODY.to_vec(), true);
                while let Some(a) = stream.poll_action() {
                    std::hint::black_box(a);
                }
                stream.finish();
            }
            thread_cpu_time().saturating_sub(start)
        })
    });
    // The filter manager over one VM of its own (no pool, no locks): what
    // `stream_only` adds over this is the pool's.
    let mut vm = OneVm(Vm::new(&plugin, &HostEnv::default()).expect("starts"));
    group.bench_function("stream_plain", |b| {
        b.iter_custom(|n| {
            let start = thread_cpu_time();
            for _ in 0..n {
                let mut stream = HttpStream::new(StreamConfig::new(1));
                stream.request_headers(&mut vm, request_map.clone(), true);
                while let Some(a) = stream.poll_action() {
                    std::hint::black_box(a);
                }
                stream.response_headers(&mut vm, response_map.clone(), false);
                stream.response_data(&mut vm, BODY.to_vec(), true);
                while let Some(a) = stream.poll_action() {
                    std::hint::black_box(a);
                }
                stream.finish(&mut vm);
            }
            thread_cpu_time().saturating_sub(start)
        })
    });
    group.finish();
    assert_eq!(pool.context_count(), 1, "every stream context was deleted");
}

/// One VM, owned: [`FilterVms`] with no pool.
struct OneVm(Vm);

impl FilterVms for OneVm {
    fn with_vm<R>(&mut self, _: usize, f: impl FnOnce(&mut Vm) -> R) -> R {
        let r = f(&mut self.0);
        self.0.drain_effects().for_each(drop);
        r
    }

    fn policy(&self, _: usize) -> Policy {
        Policy::FailClosed
    }
}

criterion_group!(benches, adapter);
criterion_main!(benches);
