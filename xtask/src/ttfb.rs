//! `cargo xtask bench ttfb`: time to the first byte of a streamed chat
//! completion (the first SSE event), over loopback, one request at a time
//! on one keep-alive connection:
//!
//! * direct to the fake worker (`fake-llm-worker`, vessel-testkit);
//! * through `vessel run` (one worker thread) with no filter;
//! * through `vessel run` with the benchmark header filter
//!   (`guest_bench_headers`, which also gets every body callback);
//! * through `vessel run` with the five LLM middleware examples of
//!   `examples/llm` (auth, token limit, PII masking, billing, moderation
//!   annotating), in that order.
//!
//! The clock starts before the request is written and stops when the first
//! `data:` bytes of the body are read; the rest of the stream is read too,
//! so every request ends before the next starts. Release builds of both
//! binaries. The median and p99 of each, and the medians' distance from
//! direct, go to stderr.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, root, run};

/// Requests measured per case, after [`WARMUP`] unmeasured ones.
const REQUESTS: usize = 2000;
const WARMUP: usize = 200;
/// The listener of the `vessel run` cases.
const LISTEN: &str = "127.0.0.1:10020";

pub(crate) struct Kill(pub(crate) Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One wasm filter of a `vessel run` case: its name, its module and its
/// plugin configuration.
struct Filter {
    name: &'static str,
    module: PathBuf,
    configuration: &'static str,
}

/// The `vessel run` config: listener [`LISTEN`] routing everything to the
/// cluster `workers` (the fake worker), through `filters` in order.
fn config(worker: SocketAddr, filters: &[Filter]) -> String {
    let filters: String = filters
        .iter()
        .map(|f| {
            format!(
                r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                root_id: {name}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{configuration}'
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: "{module}" }} }}
"#,
                name = f.name,
                configuration = f.configuration,
                module = f.module.display()
            )
        })
        .collect();
    let (ip, port) = LISTEN.split_once(':').unwrap_or(("127.0.0.1", "10020"));
    format!(
        r#"# cargo xtask bench ttfb: vessel run in front of one fake LLM worker.
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: workers }}
          http_filters:
{filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: workers
    connect_timeout: 1s
    load_assignment:
      cluster_name: workers
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{ socket_address: {{ address: {}, port_value: {} }} }}
"#,
        worker.ip(),
        worker.port()
    )
}

/// Starts `fake-llm-worker` and reads its address from its first line.
pub(crate) fn start_worker(bin: &Path) -> Result<(Kill, SocketAddr)> {
    let mut child = Command::new(bin)
        .args([
            "--name",
            "w1",
            "--reply",
            "one two three four five six seven eight",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("the worker's stdout")?;
    let child = Kill(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .parse()
        .with_context(|| format!("the worker printed {line:?}, not an address"))?;
    Ok((child, addr))
}

/// Starts the release `vessel run --concurrency 1 -l error` (in `target`)
/// on `config` and waits until `listen` accepts connections; it is killed
/// when the guard drops.
pub(crate) fn serve(target: &Path, config: &Path, listen: &str) -> Result<Kill> {
    let vessel = crate::vessel_proxy(&target.join("vessel"), &config.to_string_lossy())
        .args(["-l", "error"])
        .spawn()
        .context("starting vessel run")?;
    let vessel = Kill(vessel);
    wait_listening(listen)?;
    Ok(vessel)
}

/// Waits until `addr` accepts connections (at most 60 s).
pub(crate) fn wait_listening(addr: &str) -> Result<()> {
    wait_listening_within(addr, Duration::from_secs(60))
}

/// [`wait_listening`] with another bound.
pub(crate) fn wait_listening_within(addr: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after {} s", within.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One HTTP/1.1 keep-alive connection that reads chunked responses.
struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str) -> Result<Self> {
        let tcp = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self {
            r: BufReader::new(tcp),
        })
    }

    /// Sends one streamed completion; returns the time to the first body
    /// byte, after reading the whole response.
    fn stream(&mut self, body: &str) -> Result<Duration> {
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer sk-bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let start = Instant::now();
        self.r.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        let mut chunked = false;
        let mut status = String::new();
        loop {
            line.clear();
            if self.r.read_line(&mut line)? == 0 {
                bail!("the connection closed in the response head");
            }
            if status.is_empty() {
                status = line.trim().to_owned();
            }
            let l = line.to_ascii_lowercase();
            if l.starts_with("transfer-encoding:") && l.contains("chunked") {
                chunked = true;
            }
            if line == "\r\n" {
                break;
            }
        }
        if !status.starts_with("HTTP/1.1 200") || !chunked {
            bail!("want a 200 chunked stream, got `{status}` (chunked: {chunked})");
        }
        let mut first = None;
        let mut seen = Vec::new();
        loop {
            line.clear();
            self.r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16)
                .with_context(|| format!("a chunk size, not {line:?}"))?;
            let mut data = vec![0; size + 2];
            self.r.read_exact(&mut data)?;
            if first.is_none() && size > 0 {
                first = Some(start.elapsed());
            }
            if size == 0 {
                break;
            }
            seen.extend_from_slice(&data[..size]);
        }
        if !seen.starts_with(b"data: {") || !seen.ends_with(b"data: [DONE]\n\n") {
            bail!("not an SSE stream: {:?}", String::from_utf8_lossy(&seen));
        }
        first.context("an empty body")
    }
}

/// `REQUESTS` measured streams on one connection: the times, sorted.
fn measure(addr: &str) -> Result<Vec<Duration>> {
    let body = r#"{"model":"fake-model","messages":[{"role":"user","content":"count to eight"}],"stream":true}"#;
    let mut conn = Conn::open(addr)?;
    for _ in 0..WARMUP {
        conn.stream(body)?;
    }
    let mut times = (0..REQUESTS)
        .map(|_| conn.stream(body))
        .collect::<Result<Vec<_>>>()?;
    times.sort();
    Ok(times)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // An index into a non-empty slice: the casts stay in range.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Builds the release `vessel` and `fake-llm-worker`; their directory.
pub(crate) fn build_release_bins() -> Result<PathBuf> {
    // One command: the two packages' features unify to what `-p
    // vessel-proxy` alone builds (the e2e bench's vessel), so neither
    // build undoes the other.
    run(Command::new(cargo()).args([
        "build",
        "--release",
        "-p",
        "vessel-proxy",
        "-p",
        "vessel-testkit",
        "--bin",
        "vessel",
        "--bin",
        "fake-llm-worker",
    ]))?;
    Ok(root().join("target/release"))
}

/// Runs the three cases and prints their numbers.
pub(crate) fn ttfb_bench() -> Result<()> {
    let target = build_release_bins()?;
    let (_worker, addr) = start_worker(&target.join("fake-llm-worker"))?;
    let dir = root().join("target/bench/ttfb");
    std::fs::create_dir_all(&dir)?;
    let guest = |name: &str| {
        root().join(format!(
            "spec-tests/guests/target/wasm32-wasip1/release/guest_{name}.wasm"
        ))
    };
    let llm = |name: &str| {
        root().join(format!(
            "examples/llm/target/wasm32-wasip1/release/llm_{name}.wasm"
        ))
    };
    let header_filter = vec![Filter {
        name: "bench_headers",
        module: guest("bench_headers"),
        configuration: "",
    }];
    // The five LLM middleware examples (examples/llm/README.md), auth
    // first; moderation annotates (a verdict never blocks the bench).
    let chain = vec![
        Filter {
            name: "llm_auth",
            module: llm("auth"),
            configuration: r#"{"keys": {"sk-bench": "bench"}}"#,
        },
        Filter {
            name: "llm_token_limit",
            module: llm("token_limit"),
            configuration: r#"{"tokens_per_minute": 1000000000}"#,
        },
        Filter {
            name: "llm_pii",
            module: llm("pii"),
            configuration: "{}",
        },
        Filter {
            name: "llm_billing",
            module: llm("billing"),
            configuration: "{}",
        },
        Filter {
            name: "llm_moderation",
            module: llm("moderation"),
            configuration: r#"{"mode": "annotate"}"#,
        },
    ];
    let mut rows = vec![("direct to the worker", measure(&addr.to_string())?)];
    for (name, file, filters) in [
        ("vessel run, no filter", "no_filter.yaml", Vec::new()),
        (
            "vessel run, bench_headers filter",
            "filter.yaml",
            header_filter,
        ),
        ("vessel run, the 5 LLM middlewares", "llm_chain.yaml", chain),
    ] {
        for f in &filters {
            if !f.module.is_file() {
                bail!(
                    "{} is missing: run `cargo xtask guests`",
                    f.module.display()
                );
            }
        }
        let path = dir.join(file);
        std::fs::write(&path, config(addr, &filters))?;
        let _vessel = serve(&target, &path, LISTEN)?;
        rows.push((name, measure(LISTEN)?));
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let direct = percentile(&rows[0].1, 0.5);
    eprintln!(
        "==> ttfb (time to the first SSE byte of a streamed chat completion, {REQUESTS} sequential requests on one keep-alive loopback connection after {WARMUP} warm-up ones; vessel run --concurrency 1):"
    );
    for (name, times) in &rows {
        let (p50, p99) = (percentile(times, 0.5), percentile(times, 0.99));
        eprintln!(
            "    {name:<34} median {:>7.1} us, p99 {:>7.1} us, median over direct {:>+7.1} us",
            us(p50),
            us(p99),
            us(p50) - us(direct)
        );
    }
    Ok(())
}
