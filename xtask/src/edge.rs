//! `cargo xtask bench edge`: vessel run at the edge, against Envoy 1.40 on
//! the same config, one worker each, in the same run:
//!
//! * TCP proxy throughput (MB/s): one client streams 1 GiB through
//!   `tcp_proxy` to a loopback sink that counts it, without and with a
//!   network wasm filter that reads every chunk
//!   ([`INSPECT_GUEST`]);
//! * HTTPS requests per second with keep-alive (wrk over TLS 1.3, 32
//!   connections), without and with the benchmark header filter, on the
//!   end-to-end benchmark's configs (`examples/bench/`) with a
//!   `DownstreamTlsContext` added;
//! * new TLS connections per second: the same without a filter, but every
//!   request on a new connection (`Connection: close`), so each pays a
//!   handshake.
//!
//! The certificate is made at run time with the `openssl` CLI. Results go
//! to stderr.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::root;

const LISTEN: &str = "127.0.0.1:10031";
/// Bytes per transfer.
const TRANSFER: usize = 1 << 30;
/// Transfers per proxy and config; the median is reported.
const ROUNDS: usize = 3;
/// The network filter that reads every chunk, built by `cargo xtask guests`.
pub(crate) const INSPECT_GUEST: &str =
    "spec-tests/guests/target/wasm32-wasip1/release/guest_tcp_close.wasm";

/// A loopback sink: reads each connection to its end, then writes the
/// number of bytes it read (8 bytes, little-endian) and closes.
fn sink() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                let mut n: u64 = 0;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k as u64,
                    }
                }
                let _ = s.write_all(&n.to_le_bytes());
            });
        }
    });
    Ok(addr)
}

/// The bootstrap: `tcp_proxy` to the sink, after the inspecting filter if
/// `filter`.
fn config(sink: SocketAddr, filter: bool) -> String {
    let network = if filter {
        format!(
            r#"      - name: envoy.filters.network.wasm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
          config:
            name: inspect
            root_id: inspect
            configuration:
              "@type": type.googleapis.com/google.protobuf.StringValue
              value: "a pattern that never comes"
            vm_config:
              runtime: envoy.wasm.runtime.v8
              code: {{ local: {{ filename: {} }} }}
"#,
            root().join(INSPECT_GUEST).display()
        )
    } else {
        String::new()
    };
    format!(
        r#"static_resources:
  listeners:
  - name: edge
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 10031 }} }}
    filter_chains:
    - filters:
{network}      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: edge
          cluster: sink
  clusters:
  - name: sink
    connect_timeout: 1s
    load_assignment:
      cluster_name: sink
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
"#,
        sink.port()
    )
}

/// One transfer of [`TRANSFER`] bytes through the proxy: MB/s (10^6 bytes).
fn transfer() -> Result<f64> {
    let chunk = vec![b'x'; 64 * 1024];
    let start = Instant::now();
    let mut s = TcpStream::connect(LISTEN)?;
    s.set_nodelay(true)?;
    let mut sent = 0;
    while sent < TRANSFER {
        s.write_all(&chunk)?;
        sent += chunk.len();
    }
    s.shutdown(Shutdown::Write)?;
    let mut count = [0u8; 8];
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    s.read_exact(&mut count)
        .context("the sink's byte count did not come back")?;
    let took = start.elapsed();
    let got = u64::from_le_bytes(count);
    if got != TRANSFER as u64 {
        bail!("the sink got {got} bytes of {TRANSFER}");
    }
    Ok(TRANSFER as f64 / took.as_secs_f64() / 1e6)
}

/// Starts `cmd`, waits for [`LISTEN`], runs [`ROUNDS`] transfers, stops
/// it: the MB/s of each.
fn measure(mut cmd: Command) -> Result<Vec<f64>> {
    let mut child: Child = cmd
        .current_dir(root())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let result = (|| {
        crate::ttfb::wait_listening(LISTEN)?;
        (0..ROUNDS).map(|_| transfer()).collect()
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn write_config(name: &str, text: &str) -> Result<PathBuf> {
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

fn vessel(bin: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["run", "-c"])
        .arg(config)
        .args(["--concurrency", "1", "-l", "error"]);
    cmd
}

fn envoy(bin: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(config)
        .args(["--concurrency", "1", "-l", "error", "--base-id", "7311"]);
    cmd
}

/// The HTTPS port of the TLS benchmark configs.
const HTTPS_PORT: u16 = 10032;

/// A self-signed ECDSA P-256 certificate for `bench.test` in `dir`: the
/// certificate and key files.
fn bench_certificate(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("bench.crt"), dir.join("bench.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=bench.test",
            "-addext",
            "subjectAltName=DNS:bench.test",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running `openssl req` (Debian: apt-get install openssl)")?;
    if !out.status.success() {
        bail!(
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((cert, key))
}

/// `examples/bench/<name>` served over TLS on [`HTTPS_PORT`] with `cert`:
/// the wasm path made absolute (the file moves to `target/bench`).
fn https_config(name: &str, cert: &Path, key: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(root().join("examples/bench").join(name))?;
    let tls = format!(
        r#"    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: ["http/1.1"]
            tls_certificates:
            - certificate_chain: {{ filename: {} }}
              private_key: {{ filename: {} }}
      filters:"#,
        cert.display(),
        key.display()
    );
    let out = text
        .replace("    filter_chains:\n    - filters:", &tls)
        .replace("port_value: 10010", &format!("port_value: {HTTPS_PORT}"))
        .replace(
            "../../spec-tests/",
            &format!("{}/spec-tests/", root().display()),
        );
    if !out.contains("DownstreamTlsContext") || !out.contains(&HTTPS_PORT.to_string()) {
        bail!("examples/bench/{name} no longer has the shape the TLS benchmark edits");
    }
    write_config(&format!("edge_https_{name}"), &out)
}

/// HTTPS req/s (keep-alive) without and with the filter, and new TLS
/// connections per second, for `vessel run` and Envoy: one line each.
fn https_bench(vessel_bin: &Path, envoy_bin: &Path) -> Result<Vec<String>> {
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = bench_certificate(&dir)?;
    let without = https_config("without_filter.yaml", &cert, &key)?;
    let with = https_config("with_filter.yaml", &cert, &key)?;
    let url = format!("https://127.0.0.1:{HTTPS_PORT}/x");
    let close = ["-H", "Connection: close"];
    let mut lines = Vec::new();
    for (name, make) in [
        (
            "vessel run",
            &(|c: &Path| vessel(vessel_bin, c)) as &dyn Fn(&Path) -> Command,
        ),
        ("Envoy 1.40", &|c: &Path| envoy(envoy_bin, c)),
    ] {
        let keep = crate::wrk_rps_at(make(&without), &url, &[])?;
        let filtered = crate::wrk_rps_at(make(&with), &url, &[])?;
        let handshakes = crate::wrk_rps_at(make(&without), &url, &close)?;
        lines.push(format!(
            "    {name}: HTTPS keep-alive {keep:.0} req/s, with the filter {filtered:.0} req/s; \
             new TLS connections {handshakes:.0}/s"
        ));
    }
    Ok(lines)
}

/// `cargo xtask bench edge`.
pub(crate) fn edge_bench() -> Result<()> {
    crate::guests()?;
    let vessel_bin = crate::release_vessel()?;
    let envoy_bin = crate::envoy_diff::ensure_envoy()?;
    let sink = sink()?;
    let without = write_config("edge_tcp_without.yaml", &config(sink, false))?;
    let with = write_config("edge_tcp_with.yaml", &config(sink, true))?;
    let mut lines = Vec::new();
    for (name, without_cmd, with_cmd) in [
        (
            "vessel run",
            vessel(&vessel_bin, &without),
            vessel(&vessel_bin, &with),
        ),
        (
            "Envoy 1.40",
            envoy(&envoy_bin, &without),
            envoy(&envoy_bin, &with),
        ),
    ] {
        let a = measure(without_cmd)?;
        let b = measure(with_cmd)?;
        lines.push(format!(
            "    {name}: tcp_proxy {:.0} MB/s, with the inspecting network filter {:.0} MB/s (runs: {a:.0?} / {b:.0?})",
            median(a.clone()),
            median(b.clone()),
        ));
    }
    let https = https_bench(&vessel_bin, &envoy_bin)?;
    eprintln!(
        "==> edge: HTTPS, one worker, wrk -t1 -c32 -d10s over TLS 1.3 (ECDSA P-256), direct response; \
         new connections: every request with `Connection: close`:\n{}",
        https.join("\n")
    );
    eprintln!(
        "==> edge: TCP proxy throughput, one worker, one connection streaming {} MiB to a sink, median of {ROUNDS}:\n{}",
        TRANSFER >> 20,
        lines.join("\n")
    );
    Ok(())
}
