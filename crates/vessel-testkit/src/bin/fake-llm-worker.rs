//! `fake-llm-worker`: the fake OpenAI-compatible model server of
//! `vessel_testkit::llm_worker` as a process, for scripts, benches and the
//! docs. It prints its address (`127.0.0.1:<port>`) on the first line of
//! stdout once it listens, then serves until killed.
//!
//! ```text
//! fake-llm-worker [--listen 127.0.0.1:0] [--name worker] [--model fake-model]
//!                 [--reply TEXT] [--token-delay-ms N] [--first-token-delay-ms N]
//!                 [--failure-rate 0.0] [--metrics vllm|sglang|both]
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::time::Duration;

use vessel_testkit::llm_worker::{LlmWorker, MetricsFlavour};

const USAGE: &str = "usage: fake-llm-worker [--listen 127.0.0.1:0] [--name worker] \
[--model fake-model] [--reply TEXT] [--token-delay-ms N] [--first-token-delay-ms N] \
[--failure-rate 0.0] [--metrics vllm|sglang|both]";

struct Args {
    listen: SocketAddr,
    failure_rate: f64,
    builder: vessel_testkit::llm_worker::LlmWorkerBuilder,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        failure_rate: 0.0,
        builder: LlmWorker::builder(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_owned());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        let ms = |v: &str| v.parse::<u64>().map(Duration::from_millis);
        args.builder = match flag.as_str() {
            "--listen" => {
                args.listen = value.parse().map_err(|e| bad(&e))?;
                args.builder
            }
            "--name" => args.builder.name(&value),
            "--model" => args.builder.model(&value),
            "--reply" => args.builder.reply(&value),
            "--token-delay-ms" => args.builder.token_delay(ms(&value).map_err(|e| bad(&e))?),
            "--first-token-delay-ms" => args
                .builder
                .first_token_delay(ms(&value).map_err(|e| bad(&e))?),
            "--failure-rate" => {
                args.failure_rate = value.parse().map_err(|e| bad(&e))?;
                args.builder
            }
            "--metrics" => args
                .builder
                .flavour(value.parse::<MetricsFlavour>().map_err(|e| bad(&e))?),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        };
    }
    Ok(args)
}

fn main() -> std::process::ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-llm-worker: a tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("fake-llm-worker: bind {}: {e}", args.listen);
                return std::process::ExitCode::FAILURE;
            }
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("fake-llm-worker: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let worker = args.builder.serve(listener, addr);
        worker.handle().set_failure_rate(args.failure_rate);
        println!("{addr}");
        std::future::pending::<std::process::ExitCode>().await
    })
}
