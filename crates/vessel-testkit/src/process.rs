//! A `vessel run` child process on a bootstrap whose listeners may be on
//! port 0: it writes its admin address to `--admin-address-path`, and its
//! listeners' bound addresses are read from the admin's
//! `GET /listeners?format=json` ([`vessel_proxy::run::ListenersStatus`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use vessel_proxy::run::ListenersStatus;

use crate::WAIT;

/// One admin request (`method`, `path`), bounded by 10 s: (status, body),
/// or why it failed.
pub async fn admin_get(
    admin: SocketAddr,
    method: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let call = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| format!("{method} {path}: no answer in 10 s"))?
}

/// Which proxy a [`VesselProcess`] runs.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Vessel,
    Envoy,
}

/// Real Envoy for a differential test: the binary `VESSEL_ENVOY` names
/// (`cargo xtask test` sets it). Without it: `None` after printing a skip
/// for `test`, and a panic under `CI=true` (a missing prerequisite is
/// never a silent pass).
///
/// # Panics
/// Under `CI=true` without `VESSEL_ENVOY`, or if it names no file.
#[allow(clippy::print_stderr)]
pub fn envoy_from_env(test: &str) -> Option<PathBuf> {
    let Some(p) = std::env::var_os("VESSEL_ENVOY").map(PathBuf::from) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: CI=true needs VESSEL_ENVOY"
        );
        eprintln!("SKIPPED {test}: VESSEL_ENVOY is not set (cargo xtask test sets it)");
        return None;
    };
    assert!(p.is_file(), "VESSEL_ENVOY={} is not a file", p.display());
    Some(p)
}

/// A `vessel run` child (or real Envoy's, [`VesselProcess::start_envoy`])
/// on `dir/envoy.yaml`; killed when dropped.
#[derive(Debug)]
pub struct VesselProcess {
    /// The child.
    pub child: Child,
    /// Its directory: the config, its stderr, the admin address file.
    pub dir: PathBuf,
    stderr: PathBuf,
    admin_file: PathBuf,
    admin: Option<SocketAddr>,
    listeners: Option<ListenersStatus>,
}

impl VesselProcess {
    /// Writes `config` to `dir/envoy.yaml` (`dir` is emptied first) and
    /// starts `bin run -c dir/envoy.yaml --admin-address-path
    /// dir/admin-address` with `args` after them; stderr goes to
    /// `dir/stderr.log`. Call [`VesselProcess::wait_ready`] next.
    ///
    /// # Panics
    /// If the directory cannot be written or the binary not started.
    pub fn start(bin: &Path, dir: &Path, config: &str, args: &[&str]) -> Self {
        Self::start_as(Kind::Vessel, bin, dir, config, args)
    }

    /// [`VesselProcess::start`] for real Envoy (`bin` is the `envoy`
    /// binary, `args` e.g. `["--concurrency", "1"]`): the same config file,
    /// admin address file and readiness; a fresh `--base-id` per process.
    ///
    /// # Panics
    /// If the directory cannot be written or the binary not started.
    pub fn start_envoy(bin: &Path, dir: &Path, config: &str, args: &[&str]) -> Self {
        Self::start_as(Kind::Envoy, bin, dir, config, args)
    }

    fn start_as(kind: Kind, bin: &Path, dir: &Path, config: &str, args: &[&str]) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("create the test directory");
        let dir = dir.canonicalize().expect("a canonical directory");
        std::fs::write(dir.join("envoy.yaml"), config).expect("write the config");
        let stderr = dir.join("stderr.log");
        let admin_file = dir.join("admin-address");
        let mut command = Command::new(bin);
        match kind {
            Kind::Vessel => {
                command.arg("run");
            }
            Kind::Envoy => {
                // Envoy's shared-memory region is per base id: one each.
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                command
                    .arg("--base-id")
                    .arg((std::process::id() % 100_000 * 1000 + 500 + n % 400).to_string());
            }
        }
        let child = command
            .arg("-c")
            .arg(dir.join("envoy.yaml"))
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("create stderr.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        Self {
            child,
            dir,
            stderr,
            admin_file,
            admin: None,
            listeners: None,
        }
    }

    /// What the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Replaces the config file (write + rename, as editors and config
    /// management do).
    pub fn write_config(&self, config: &str) {
        replace_file(&self.dir.join("envoy.yaml"), config.as_bytes());
    }

    /// Waits (bounded by [`WAIT`]) until the admin address file is there,
    /// the admin answers `/ready` and `/listeners?format=json` (which may
    /// list no listener yet: a proxy whose control plane has not pushed
    /// them); panics with the child's stderr if it exits first.
    pub async fn wait_ready(&mut self) {
        self.wait_ready_within(WAIT).await;
    }

    /// [`wait_ready`](Self::wait_ready) with another bound: for configs
    /// whose modules take long to compile (the Go plugins, cold: about
    /// 12 s each on one core).
    pub async fn wait_ready_within(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("vessel exited early ({status}):\n{}", self.stderr());
            }
            if let Some((admin, listeners)) = self.probe().await {
                self.admin = Some(admin);
                self.listeners = Some(listeners);
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "vessel not ready after {within:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The admin listener's address once the process has written it, ready
    /// or not (a proxy waiting for its control plane answers `/stats`
    /// before `/ready`).
    pub fn admin_address(&self) -> Option<SocketAddr> {
        std::fs::read_to_string(&self.admin_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    async fn probe(&self) -> Option<(SocketAddr, ListenersStatus)> {
        let admin = self.admin_address()?;
        match admin_get(admin, "GET", "/ready").await {
            Ok((200, _)) => {}
            _ => return None,
        }
        let (status, body) = admin_get(admin, "GET", "/listeners?format=json")
            .await
            .ok()?;
        assert_eq!(status, 200, "GET /listeners?format=json: {body}");
        let listeners = ListenersStatus::from_json(body.as_bytes())
            .unwrap_or_else(|e| panic!("/listeners?format=json: {e}:\n{body}"));
        Some((admin, listeners))
    }

    /// Reads the admin's `/listeners?format=json` again, after a reload
    /// added, moved or removed listeners: [`VesselProcess::listener`] then
    /// answers from it. Returns the listeners now serving.
    ///
    /// # Panics
    /// Before [`VesselProcess::wait_ready`], or if the admin does not answer.
    pub async fn refresh_listeners(&mut self) -> &ListenersStatus {
        let admin = self.admin();
        let (status, body) = admin_get(admin, "GET", "/listeners?format=json")
            .await
            .unwrap_or_else(|e| panic!("GET /listeners?format=json: {e}"));
        assert_eq!(status, 200, "GET /listeners?format=json: {body}");
        let listeners = ListenersStatus::from_json(body.as_bytes())
            .unwrap_or_else(|e| panic!("/listeners?format=json: {e}:\n{body}"));
        self.listeners.insert(listeners)
    }

    /// The admin listener's address.
    ///
    /// # Panics
    /// Before [`VesselProcess::wait_ready`].
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("wait_ready first")
    }

    /// The bound address of listener `name`.
    ///
    /// # Panics
    /// Before [`VesselProcess::wait_ready`], or if there is no such bound
    /// listener.
    pub fn listener(&self, name: &str) -> SocketAddr {
        let listeners = self.listeners.as_ref().expect("wait_ready first");
        listeners
            .address_of(name)
            .unwrap_or_else(|| panic!("no bound listener `{name}` in {listeners:?}"))
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Sends SIGTERM.
    ///
    /// # Panics
    /// If `kill -TERM` fails.
    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// The CPU time the child used so far (user and system), in clock
    /// ticks (`/proc/<pid>/stat`).
    ///
    /// # Panics
    /// If `/proc/<pid>/stat` cannot be read.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("/proc/<pid>/stat");
        // The fields after the command name (which may hold spaces):
        // state is the first, utime and stime the 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        field(11) + field(12)
    }

    /// The child's resident set size in KiB (Linux).
    ///
    /// # Panics
    /// If `/proc/<pid>/status` has no `VmRSS`.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for VesselProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `bytes` next to `path` and renames it over `path`.
///
/// # Panics
/// If either step fails.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write the new file");
    std::fs::rename(&tmp, path).expect("rename it over the old one");
}
