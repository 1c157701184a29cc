//! VM-pool scaling: throughput of a CPU-bound filter (`guest_cpu_burn`)
//! through the tower layer with 1 and with 2 runtime workers (and as many
//! VMs). Each iteration is a batch of 64 requests, 8 in flight. Run with
//! `cargo xtask bench`; the ratio of the two times is the speed-up.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};
use vessel_host::{Engine, EngineConfig, HostEnv, Plugin, PluginConfig};
use vessel_hyper::{Clusters, FailurePolicy, FilterPool, Runtime, VesselBody, VesselLayer};

const BATCH: usize = 64;
const IN_FLIGHT: usize = 8;

fn guest() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec-tests/guests/target/wasm32-wasip1/release/guest_cpu_burn.wasm");
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask guests`", path.display()))
}

fn scaling(c: &mut Criterion) {
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let plugin = Plugin::load(&engine, &guest(), PluginConfig::named("cpu_burn")).expect("loads");
    let mut group = c.benchmark_group("scaling");
    group.sample_size(20);
    for workers in [1usize, 2] {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        let layer = rt.block_on(async {
            let runtime = Runtime::new(Clusters::new());
            let pool = FilterPool::new(
                &plugin,
                &HostEnv::default(),
                &runtime,
                workers,
                FailurePolicy::FailClosed,
            )
            .unwrap();
            VesselLayer::new(vec![pool])
        });
        let upstream = tower::service_fn(|_req: Request<VesselBody>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let service = layer.layer(upstream);
        group.bench_function(format!("cpu_burn/{workers}_workers"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    rt.block_on(async {
                        let mut tasks = Vec::new();
                        for t in 0..IN_FLIGHT {
                            let svc = service.clone();
                            tasks.push(tokio::spawn(async move {
                                for i in 0..BATCH / IN_FLIGHT {
                                    let req = Request::get(format!("/r/{t}/{i}"))
                                        .header("host", "bench")
                                        .body(Full::new(Bytes::new()))
                                        .unwrap();
                                    let resp = svc.clone().oneshot(req).await.unwrap();
                                    let _ = resp.into_body().collect().await;
                                }
                            }));
                        }
                        for t in tasks {
                            t.await.unwrap();
                        }
                    });
                    total += start.elapsed();
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, scaling);
criterion_main!(benches);
