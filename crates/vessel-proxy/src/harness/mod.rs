//! The `vessel test` harness. The scenario format, its checker and the
//! in-process runner are the `vessel-test` crate, re-exported here; this
//! module adds what needs a network and a runtime: [`RealServices`] (Redis
//! over vessel-hyper), the real backends that run a scenario through
//! `vessel run` or Envoy ([`real`], [`via_run`], [`envoy`]) and the
//! differential runner ([`diff`]).
//!
//! [`run_file`], [`run_files`] and [`record_file`] here are vessel-test's
//! with [`RealServices`]: what `vessel test` runs.
//!
//! ```no_run
//! let report = vessel_proxy::harness::run_files(&["tests/hello.yaml"]).expect("loads");
//! assert!(report.passed(), "{}", report.render());
//! ```

pub mod diff;
pub mod envoy;
pub mod real;
mod servers;
mod tcp_drive;
mod tls;
pub mod via_run;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vessel_host::{Engine, RedisCallOutcome, RedisCallRequest};
pub use vessel_test::*;

/// The services `vessel test` gives the in-process runner: Redis calls on a
/// short-lived tokio runtime through vessel-hyper's RESP client, and
/// `FLUSHALL` over a plain socket, each bounded in time.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealServices;

impl Services for RealServices {
    fn redis_call(&self, addr: SocketAddr, call: &RedisCallRequest) -> RedisCallOutcome {
        let run = || match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(vessel_hyper::redis::call(
                addr,
                call,
                &vessel_hyper::redis::IdleConnections::default(),
            )),
            Err(_) => RedisCallOutcome::Failed,
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Inside a runtime (an async caller): block another thread instead.
            std::thread::scope(|s| s.spawn(run).join().unwrap_or(RedisCallOutcome::Failed))
        } else {
            run()
        }
    }

    fn redis_flush(&self, addr: SocketAddr) -> Result<(), String> {
        flush_redis(addr)
    }
}

/// Sends `FLUSHALL` to the Redis server at `addr` (a scenario's
/// `redis_flush`), bounded in time.
pub(crate) fn flush_redis(addr: SocketAddr) -> Result<(), String> {
    use std::io::{Read, Write};
    let t = Duration::from_secs(2);
    let fail = |e: std::io::Error| format!("FLUSHALL on {addr}: {e}");
    let mut s = std::net::TcpStream::connect_timeout(&addr, t).map_err(fail)?;
    s.set_read_timeout(Some(t)).map_err(fail)?;
    s.write_all(b"*1\r\n$8\r\nFLUSHALL\r\n").map_err(fail)?;
    let mut reply = [0u8; 64];
    let n = s.read(&mut reply).map_err(fail)?;
    if reply[..n].starts_with(b"+OK") {
        Ok(())
    } else {
        Err(format!(
            "FLUSHALL on {addr}: {}",
            String::from_utf8_lossy(&reply[..n]).trim_end()
        ))
    }
}

/// Runs one scenario file in-process with [`RealServices`].
pub fn run_file(engine: &Engine, path: &Path) -> Result<Vec<StreamResult>, Error> {
    vessel_test::run_file_with(engine, path, Arc::new(RealServices))
}

/// Runs scenario files in-process with a default engine and
/// [`RealServices`]. Stops at the first file that cannot run at all.
pub fn run_files<P: AsRef<Path>>(paths: &[P]) -> Result<Report, Error> {
    vessel_test::run_files_with(paths, Arc::new(RealServices))
}

/// [`vessel_test::record_file`] with [`RealServices`] (`vessel test --record`).
pub fn record_file(engine: &Engine, path: &Path) -> Result<String, Error> {
    vessel_test::record_file(engine, path, Arc::new(RealServices))
}
