//! `cargo xtask bench gateway`: what the whole LLM gateway costs end to
//! end. wrk (`-t1 -c16 -d10s --latency`) posts non-streaming chat
//! completions:
//!
//! * direct to one fake worker (`fake-llm-worker`, vessel-testkit);
//! * through `vessel run --concurrency 1` with no filter, to two workers;
//! * through `vessel run --concurrency 1` with `examples/llm-gateway.yaml`
//!   (the five middleware filters, the routing policy, health checks,
//!   outlier detection, retries, the metrics scrape), to the same two
//!   workers.
//!
//! Requests per second, median and p99 latency of each go to stderr.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::root;
use crate::ttfb::{serve, start_worker};

const LISTEN: &str = "127.0.0.1:10021";
const ADMIN: &str = "127.0.0.1:9921";

/// wrk's Lua script: POST a small completion with an API key, a prompt the
/// example's toy moderation model lets through.
const SCRIPT: &str = r#"wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer sk-alice"
wrk.body = '{"model":"fake-model","messages":[{"role":"user","content":"hello there"}]}'
"#;

/// One wrk run against `url`: (req/s, p50 ms, p99 ms).
fn wrk(url: &str, script: &Path) -> Result<(f64, f64, f64)> {
    let out = Command::new("wrk")
        .args(["-t1", "-c16", "-d10s", "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk (Debian: apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("Non-2xx") {
        bail!("wrk against {url} failed or saw errors:\n{text}");
    }
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let ms = |v: &str| -> Option<f64> {
        if let Some(us) = v.strip_suffix("us") {
            us.parse::<f64>().ok().map(|x| x / 1000.0)
        } else if let Some(ms) = v.strip_suffix("ms") {
            ms.parse().ok()
        } else {
            v.strip_suffix('s')?.parse::<f64>().ok().map(|x| x * 1000.0)
        }
    };
    let rps = field("Requests/sec:").and_then(|v| v.parse().ok());
    let p50 = field("50%").and_then(ms);
    let p99 = field("99%").and_then(ms);
    match (rps, p50, p99) {
        (Some(r), Some(a), Some(b)) => Ok((r, a, b)),
        _ => bail!("cannot read wrk's output:\n{text}"),
    }
}

/// `examples/llm-gateway.yaml` with its ports moved to [`LISTEN`] and
/// [`ADMIN`], its workers to `workers`, its module paths made absolute, and
/// its tenant's token budget out of reach.
fn gateway_config(workers: [std::net::SocketAddr; 2], no_filters: bool) -> Result<String> {
    let text = std::fs::read_to_string(root().join("examples/llm-gateway.yaml"))?;
    let examples = root().join("examples");
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        let t = line.trim_start();
        if no_filters && t.starts_with("- name: envoy.filters.http.wasm") {
            skipping = true;
            continue;
        }
        if skipping {
            if t.starts_with("- name: envoy.filters.http.router") {
                skipping = false;
            } else {
                continue;
            }
        }
        if no_filters && t.starts_with("vessel_policy_fallback") {
            continue;
        }
        let line = line
            .replace(
                "port_value: 10000",
                &format!("port_value: {}", port(LISTEN)),
            )
            .replace("port_value: 9901", &format!("port_value: {}", port(ADMIN)))
            .replace(
                "address: 127.0.0.1, port_value: 8001",
                &format!(
                    "address: {}, port_value: {}",
                    workers[0].ip(),
                    workers[0].port()
                ),
            )
            .replace(
                "address: 127.0.0.1, port_value: 8002",
                &format!(
                    "address: {}, port_value: {}",
                    workers[1].ip(),
                    workers[1].port()
                ),
            )
            // The bench measures the chain's cost, not the limiter: a
            // budget no run can spend (the example's 100,000 tokens a
            // minute runs out after about 16,000 requests).
            .replace(r#""acme": 100000"#, r#""acme": 1000000000000"#)
            .replace(
                "filename: llm/",
                &format!("filename: {}/llm/", examples.display()),
            )
            .replace(
                "filename: ../spec-tests/",
                &format!("filename: {}/../spec-tests/", examples.display()),
            );
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

fn port(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or("0")
}

pub(crate) fn gateway_bench() -> Result<()> {
    let target = crate::ttfb::build_release_bins()?;
    let (_w1, a1) = start_worker(&target.join("fake-llm-worker"))?;
    let (_w2, a2) = start_worker(&target.join("fake-llm-worker"))?;
    let dir = root().join("target/bench/gateway");
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("post.lua");
    std::fs::write(&script, SCRIPT)?;
    let mut rows = vec![(
        "direct to one worker",
        wrk(&format!("http://{a1}/v1/chat/completions"), &script)?,
    )];
    for (name, file, bare) in [
        ("vessel run, no filter", "bare.yaml", true),
        (
            "vessel run, examples/llm-gateway.yaml",
            "gateway.yaml",
            false,
        ),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, gateway_config([a1, a2], bare)?)?;
        let _vessel = serve(&target, &path, LISTEN)?;
        rows.push((
            name,
            wrk(&format!("http://{LISTEN}/v1/chat/completions"), &script)?,
        ));
    }
    eprintln!(
        "==> gateway (wrk -t1 -c16 -d10s, non-streaming chat completions, vessel run --concurrency 1):"
    );
    for (name, (rps, p50, p99)) in &rows {
        eprintln!("    {name:<40} {rps:>9.0} req/s, p50 {p50:>6.2} ms, p99 {p99:>6.2} ms");
    }
    Ok(())
}
