//! vessel-testkit's integration tests (one binary): the `fake-llm-worker`
//! binary as scripts and `cargo xtask bench ttfb` start it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request with `Connection: close`; the whole answer as text.
fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(vessel_testkit::WAIT)).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    answer
}

/// The binary prints the address it bound on port 0 and serves there with
/// the flags it was given: its name, its reply, its metric names.
#[test]
fn the_binary_prints_its_address_and_serves_its_flags() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-llm-worker"))
        .args([
            "--name",
            "w9",
            "--reply",
            "tick tock",
            "--metrics",
            "sglang",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _child = Kill(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr: SocketAddr = line.trim().parse().unwrap();
    assert_ne!(addr.port(), 0);

    let body = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let answer = exchange(
        addr,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: w\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-worker: w9\r\n"), "{answer}");
    assert!(answer.contains(r#""content":"tick tock""#), "{answer}");

    let metrics = exchange(
        addr,
        "GET /metrics HTTP/1.1\r\nhost: w\r\nconnection: close\r\n\r\n",
    );
    assert!(metrics.contains("sglang:num_queue_reqs{"), "{metrics}");
    assert!(!metrics.contains("vllm:"), "{metrics}");
}

/// A bad flag is refused with the usage and exit status 2.
#[test]
fn a_bad_flag_is_refused_with_the_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_fake-llm-worker"))
        .args(["--metrics", "tgi"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown metrics flavour `tgi`"), "{err}");
}
