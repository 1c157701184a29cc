//! `cargo xtask bench tiered`: tiered compilation (Winch first, Cranelift in
//! the background; `docs/operations.md`, "Tiered compilation"), for the
//! biggest Go plugin in target/higress and the Rust SDK header filter
//! (`guest_bench_headers`), always with an empty module cache:
//!
//! * compile time, Winch against Cranelift (`Plugin::load`, the median of
//!   three; vessel-host's `tiers` bench);
//! * time to the first served request of a `vessel run` cold start
//!   (`--concurrency 1`, a fresh `--module-cache-dir`), with
//!   `--compilation tiered` and `cranelift`: from spawning the process to
//!   the first HTTP response on the listener (one request at a time, a new
//!   connection each, every 5 ms); with tiering, also the time until the
//!   admin's `/stats` shows the pool on the Cranelift tier;
//! * steady-state req/s of the header filter on each tier: `wrk -t1 -c32
//!   -d10s` (as `wrk_rps`) against `--compilation winch` and `cranelift`
//!   (both `--no-module-cache`).
//!
//! Release builds. Results go to stderr.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::ttfb::Kill;
use crate::{cargo, root, run, wrk_rps};

const HEADERS_CONFIG: &str = "examples/bench/with_filter.yaml";
const HEADERS_WASM: &str =
    "spec-tests/guests/target/wasm32-wasip1/release/guest_bench_headers.wasm";
const HEADERS_LISTEN: &str = "127.0.0.1:10010";
const HEADERS_ADMIN: &str = "127.0.0.1:9911";
const GO_LISTEN: &str = "127.0.0.1:10013";
const GO_ADMIN: &str = "127.0.0.1:9913";

/// The biggest `plugin.wasm` of the gpustack-higress-plugins wheel.
fn biggest_go_plugin() -> Result<PathBuf> {
    let dir = root().join("target/higress/gpustack_higress_plugins/plugins");
    let mut best: Option<(u64, PathBuf)> = None;
    for plugin in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
        for version in std::fs::read_dir(plugin?.path())? {
            let path = version?.path().join("plugin.wasm");
            if let Ok(meta) = std::fs::metadata(&path)
                && best.as_ref().is_none_or(|(size, _)| meta.len() > *size)
            {
                best = Some((meta.len(), path));
            }
        }
    }
    best.map(|(_, p)| p)
        .context("no plugin.wasm in target/higress")
}

/// A `vessel run` config: the Go plugin (named after its directory) in
/// front of a direct response.
fn go_config(wasm: &Path, name: &str) -> Result<PathBuf> {
    let text = format!(
        r#"static_resources:
  listeners:
  - name: main
    address:
      socket_address: {{ address: 127.0.0.1, port_value: 10013 }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response:
                  status: 200
                  body: {{ inline_string: "hello from vessel\n" }}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code:
                    local:
                      filename: {}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: 9913 }}
"#,
        wasm.display()
    );
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("tiered_go.yaml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// One GET on a new connection; `Some(status line)` once anything answers.
fn probe(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req =
        format!("GET {path} HTTP/1.1\r\nhost: bench\r\nx-bench: 1\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    (!text.is_empty()).then_some(text)
}

/// Seconds from spawning `vessel run` to its first response, and with
/// `tiered`, to the pool's switch to Cranelift.
fn cold_start(
    vessel: &Path,
    config: &Path,
    listen: &str,
    admin: &str,
    plugin: &str,
    compilation: &str,
) -> Result<(f64, Option<f64>)> {
    let cache = root().join(format!("target/bench/tiered-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let listen: SocketAddr = listen.parse()?;
    let admin: SocketAddr = admin.parse()?;
    let start = Instant::now();
    let _child = Kill(
        Command::new(vessel)
            .arg("run")
            .arg("-c")
            .arg(config)
            .args(["--concurrency", "1", "--compilation", compilation])
            .arg("--module-cache-dir")
            .arg(&cache)
            .current_dir(root())
            .stdout(Stdio::null())
            .spawn()
            .context("starting vessel run")?,
    );
    let deadline = start + Duration::from_secs(120);
    let first = loop {
        if probe(listen, "/x").is_some() {
            break start.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            bail!("vessel run --compilation {compilation} served nothing in 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut optimized = None;
    if compilation == "tiered" {
        let stat = format!("wasm.{plugin}.tier_upgrade_success: 1");
        loop {
            if probe(admin, "/stats").is_some_and(|t| t.contains(&stat)) {
                optimized = Some(start.elapsed().as_secs_f64());
                break;
            }
            if Instant::now() > deadline {
                bail!("the {plugin} pool did not reach the Cranelift tier in 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_dir_all(&cache);
    Ok((first, optimized))
}

fn vessel_rps(vessel: &Path, compilation: &str) -> Result<f64> {
    let mut cmd = Command::new(vessel);
    cmd.args(["run", "-c", HEADERS_CONFIG, "--concurrency", "1"])
        .args(["--compilation", compilation, "--no-module-cache"]);
    wrk_rps(cmd)
}

pub(crate) fn tiered_bench() -> Result<()> {
    let go = biggest_go_plugin()?;
    let vessel = crate::release_vessel()?;
    run(Command::new(cargo())
        .args(["bench", "-p", "vessel-host", "--bench", "tiers", "--"])
        .arg(&go)
        .arg(root().join(HEADERS_WASM)))?;

    let go_name = go
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .context("the plugin's directory")?
        .to_owned();
    let go_cfg = go_config(&go, &go_name)?;
    let headers_cfg = root().join(HEADERS_CONFIG);
    let mut lines = Vec::new();
    for (what, cfg, listen, admin, plugin) in [
        (
            "bench_headers (Rust SDK)",
            &headers_cfg,
            HEADERS_LISTEN,
            HEADERS_ADMIN,
            "bench_headers",
        ),
        (
            go_name.as_str(),
            &go_cfg,
            GO_LISTEN,
            GO_ADMIN,
            go_name.as_str(),
        ),
    ] {
        let (tiered, upgraded) = cold_start(&vessel, cfg, listen, admin, plugin, "tiered")?;
        let (cranelift, _) = cold_start(&vessel, cfg, listen, admin, plugin, "cranelift")?;
        lines.push(format!(
            "    {what}: first response {tiered:.2} s tiered (Cranelift VMs at {:.2} s), \
             {cranelift:.2} s cranelift",
            upgraded.unwrap_or(f64::NAN)
        ));
    }
    let winch_rps = vessel_rps(&vessel, "winch")?;
    let cranelift_rps = vessel_rps(&vessel, "cranelift")?;
    eprintln!(
        "==> tiered (vessel run --concurrency 1, empty module cache; {}):",
        go.display()
    );
    for l in lines {
        eprintln!("{l}");
    }
    eprintln!(
        "    bench_headers steady state (wrk -t1 -c32 -d10s): winch {winch_rps:.0} req/s, \
         cranelift {cranelift_rps:.0} req/s"
    );
    Ok(())
}
