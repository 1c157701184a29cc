//! The differential runner (`cargo xtask envoy-diff`): every scenario file
//! runs on three backends — in-process ([`super::run_file`]), through a
//! real `vessel run` ([`super::via_run`]) and through real Envoy
//! ([`super::envoy`]) — and Envoy is the oracle. For each file and backend
//! the runner checks the scenario's expectations, then compares the
//! backend's observations with Envoy's: the upstream request (headers,
//! body, trailers), the client response (status, headers, body, trailers),
//! how the stream ended, whether the VM failed, and the guest's log lines.
//!
//! Only what genuinely differs by proxy is normalised, in one place:
//! [`NORMALISATIONS`]. Any other difference must be a deliberate deviation
//! listed in `spec-tests/DEVIATIONS.md` and named by the scenario's
//! `deviations` key for that backend; an unlisted difference fails the run.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use vessel_host::{CacheConfig, Engine, EngineConfig};

use super::real::Run;
use super::scenario::{ConnectionExpect, Deviations, Expect, Scenario};
use super::{Error, Observation, ObservedMessage, check, check_connection};

/// One thing that differs by proxy and is therefore not compared.
#[derive(Debug, Clone, Copy)]
pub struct Normalisation {
    /// What is left out or rewritten.
    pub what: Rule,
    /// Why it genuinely differs by proxy.
    pub why: &'static str,
}

/// A normalisation rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A header (request to the upstream, or response to the client) of
    /// this name is not compared.
    Header(&'static str),
    /// Headers whose name starts with this prefix are not compared.
    HeaderPrefix(&'static str),
    /// This exact header entry is not compared.
    HeaderEntry(&'static str, &'static str),
    /// Header lists compare as sorted lists (order is not compared).
    HeaderOrder,
    /// A guest log line repeated in one stream is compared once (its first
    /// occurrence).
    RepeatedLogLines,
    /// Of a VM failure, only the callback that failed is compared.
    VmFailureText,
    /// In guest log lines, values that differ on every run are masked: a
    /// UUID (`<uuid>`), an HTTP date (`<date>`), the number after
    /// `x-envoy-upstream-service-time` (`<ms>`).
    LogValues,
}

/// Everything the comparison normalises: the one list.
pub const NORMALISATIONS: &[Normalisation] = &[
    Normalisation {
        what: Rule::Header("date"),
        why: "each proxy stamps responses with its own clock",
    },
    Normalisation {
        what: Rule::Header("server"),
        why: "Envoy names itself (`server: envoy`) on every response it forwards or makes",
    },
    Normalisation {
        what: Rule::Header("x-request-id"),
        why: "Envoy's connection manager adds a random UUID to every request",
    },
    Normalisation {
        what: Rule::HeaderPrefix("x-envoy-"),
        why: "Envoy's router adds its own headers (`x-envoy-expected-rq-timeout-ms` upstream, `x-envoy-upstream-service-time` downstream)",
    },
    Normalisation {
        what: Rule::Header("x-forwarded-proto"),
        why: "Envoy's connection manager adds the scheme the request arrived on",
    },
    Normalisation {
        what: Rule::Header("content-length"),
        why: "framing: a proxy may frame a body by length or by chunks/HTTP-2 frames, and the in-process driver has no framing",
    },
    Normalisation {
        what: Rule::Header("transfer-encoding"),
        why: "framing (HTTP/1.1 chunked), the other side of `content-length`",
    },
    Normalisation {
        what: Rule::Header("connection"),
        why: "HTTP/1.1 hop-by-hop: whether a proxy keeps the client connection open (Envoy closes it after a local reply that left the request body unread)",
    },
    Normalisation {
        what: Rule::Header(":scheme"),
        why: "an HTTP/2 request always carries one; the in-process driver sends only the scripted headers",
    },
    Normalisation {
        what: Rule::HeaderEntry(":authority", "localhost"),
        why: "the authority the HTTP client sends when the script names none; the in-process driver sends none",
    },
    Normalisation {
        what: Rule::Header("te"),
        why: "HTTP/2 hop-by-hop `te: trailers`, which proxies may drop or keep",
    },
    Normalisation {
        what: Rule::HeaderOrder,
        why: "HTTP/2 sends pseudo-headers first and each proxy orders the headers it adds differently; repeated headers keep their relative order within a name",
    },
    Normalisation {
        what: Rule::RepeatedLogLines,
        why: "Envoy runs `on_vm_start`/`on_configure` once per VM instance (the base VM, the main thread's and each worker's), so start-up lines appear several times",
    },
    Normalisation {
        what: Rule::LogValues,
        why: "a guest that logs the headers it sees logs values no two runs share: the random `x-request-id`, the `date` of the response, the timing in `x-envoy-upstream-service-time`",
    },
    Normalisation {
        what: Rule::VmFailureText,
        why: "each runtime words a trap its own way (wasmtime vs V8); which callback failed is compared",
    },
];

fn header_ignored(name: &str, value: &str) -> bool {
    let name = name.to_ascii_lowercase();
    NORMALISATIONS.iter().any(|n| match n.what {
        Rule::Header(h) => name == h,
        Rule::HeaderPrefix(p) => name.starts_with(p),
        Rule::HeaderEntry(h, v) => name == h && value == v,
        _ => false,
    })
}

fn headers(h: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = h
        .iter()
        .filter(|(k, v)| !header_ignored(k, v))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    // Stable: repeated names keep their relative order.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// [`Rule::LogValues`]: masks the values of a log line that differ on
/// every run.
fn mask(line: &str) -> String {
    static MASKS: std::sync::OnceLock<Vec<(regex::Regex, &'static str)>> =
        std::sync::OnceLock::new();
    let masks = MASKS.get_or_init(|| {
        [
            (
                r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                "<uuid>",
            ),
            (
                r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT",
                "<date>",
            ),
            (r"(x-envoy-upstream-service-time\W+)\d+", "${1}<ms>"),
        ]
        .into_iter()
        .filter_map(|(re, with)| regex::Regex::new(re).ok().map(|r| (r, with)))
        .collect()
    });
    let mut out = line.to_owned();
    for (re, with) in masks {
        out = re.replace_all(&out, *with).into_owned();
    }
    out
}

fn logs(lines: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    lines
        .iter()
        .map(|l| mask(l))
        .filter(|l| seen.insert(l.clone()))
        .collect()
}

fn vm_failure(f: &Option<String>) -> Option<String> {
    f.as_ref().map(|f| match f.find(" trapped") {
        Some(i) => f[..i]
            .rsplit_once('`')
            .and_then(|(a, _)| a.rsplit_once('`'))
            .map_or_else(|| f[..i].to_owned(), |(_, name)| format!("`{name}`")),
        None => "failed".to_owned(),
    })
}

/// A message in its compared form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    status: Option<u16>,
    headers: Vec<(String, String)>,
    body: String,
    trailers: Vec<(String, String)>,
}

fn msg(m: &Option<ObservedMessage>) -> Option<Msg> {
    m.as_ref().map(|m| Msg {
        status: m.status,
        headers: headers(&m.headers),
        body: m.body.clone(),
        trailers: headers(&m.trailers),
    })
}

/// A TCP connection in its compared form: what each side received, and
/// which steps failed (`step 3 (upstream_receive)`: the drivers word the
/// rest differently). Whether a side saw the proxy close is compared
/// through the `*_receive_close` steps only: in-process, the end of the
/// connection closes both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Conn {
    upstream_received: String,
    client_received: String,
    failed_steps: Vec<String>,
}

/// An observation in its compared form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Normal {
    upstream: Option<Msg>,
    response: Option<Msg>,
    end: &'static str,
    vm_failure: Option<String>,
    logs: Vec<String>,
    connection: Option<Conn>,
}

fn normal(o: &Observation) -> Normal {
    Normal {
        upstream: msg(&o.upstream_request),
        response: msg(&o.response),
        end: if o.response.is_some() {
            "response"
        } else if o.reset {
            "reset"
        } else {
            "stalled"
        },
        vm_failure: vm_failure(&o.vm_failure),
        logs: logs(&o.logs),
        connection: o.connection.as_ref().map(|c| Conn {
            upstream_received: c.upstream_received.clone(),
            client_received: c.client_received.clone(),
            failed_steps: c
                .step_failures
                .iter()
                .map(|f| {
                    f.split_once(':')
                        .map_or(f.as_str(), |(step, _)| step)
                        .to_owned()
                })
                .collect(),
        }),
    }
}

fn show_pairs(p: &[(String, String)]) -> String {
    p.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn only_in<'a, T: PartialEq>(a: &'a [T], b: &[T]) -> Vec<&'a T> {
    let mut rest: Vec<&T> = b.iter().collect();
    let mut out = Vec::new();
    for x in a {
        match rest.iter().position(|y| *y == x) {
            Some(i) => {
                rest.remove(i);
            }
            None => out.push(x),
        }
    }
    out
}

fn diff_msg(what: &str, ours: &Option<Msg>, envoy: &Option<Msg>, out: &mut Vec<String>) {
    match (ours, envoy) {
        (None, None) => {}
        (Some(_), None) => out.push(format!("{what}: present here, absent in Envoy")),
        (None, Some(_)) => out.push(format!("{what}: absent here, present in Envoy")),
        (Some(a), Some(b)) => {
            if a.status != b.status {
                out.push(format!(
                    "{what}.status: {:?} here, {:?} in Envoy",
                    a.status, b.status
                ));
            }
            for (field, x, y) in [
                ("headers", &a.headers, &b.headers),
                ("trailers", &a.trailers, &b.trailers),
            ] {
                if x != y {
                    let extra: Vec<_> = only_in(x, y).into_iter().cloned().collect();
                    let missing: Vec<_> = only_in(y, x).into_iter().cloned().collect();
                    out.push(format!(
                        "{what}.{field}: only here [{}]; only in Envoy [{}]",
                        show_pairs(&extra),
                        show_pairs(&missing)
                    ));
                }
            }
            if a.body != b.body {
                out.push(format!(
                    "{what}.body: {:?} here, {:?} in Envoy",
                    a.body, b.body
                ));
            }
        }
    }
}

/// The differences of one stream's observation from Envoy's, after
/// normalisation; empty when they agree.
pub fn compare(ours: &Observation, envoy: &Observation) -> Vec<String> {
    let (a, b) = (normal(ours), normal(envoy));
    let mut out = Vec::new();
    diff_msg("upstream_request", &a.upstream, &b.upstream, &mut out);
    diff_msg("response", &a.response, &b.response, &mut out);
    if let (Some(x), Some(y)) = (&a.connection, &b.connection) {
        for (what, here, there) in [
            (
                "upstream_received",
                &x.upstream_received,
                &y.upstream_received,
            ),
            ("client_received", &x.client_received, &y.client_received),
        ] {
            if here != there {
                out.push(format!("{what}: {here:?} here, {there:?} in Envoy"));
            }
        }
        if x.failed_steps != y.failed_steps {
            out.push(format!(
                "failed steps: {:?} here, {:?} in Envoy",
                x.failed_steps, y.failed_steps
            ));
        }
    }
    if a.end != b.end {
        out.push(format!(
            "the stream ended: {} here, {} in Envoy",
            a.end, b.end
        ));
    }
    if a.vm_failure != b.vm_failure {
        out.push(format!(
            "VM failure: {} here, {} in Envoy",
            a.vm_failure.as_deref().unwrap_or("none"),
            b.vm_failure.as_deref().unwrap_or("none")
        ));
    }
    if a.logs != b.logs {
        let extra = only_in(&a.logs, &b.logs);
        let missing = only_in(&b.logs, &a.logs);
        if extra.is_empty() && missing.is_empty() {
            out.push(format!(
                "guest logs: same lines, in another order:\n  here:  {:?}\n  Envoy: {:?}",
                a.logs, b.logs
            ));
        } else {
            let mut s = "guest logs:".to_owned();
            for l in extra {
                let _ = write!(s, "\n  - {l:?} (only here)");
            }
            for l in missing {
                let _ = write!(s, "\n  + {l:?} (only in Envoy)");
            }
            out.push(s);
        }
    }
    out
}

/// The expectations as Envoy's observations are checked: the text of
/// `vm_failed` is reduced to the callback that failed
/// ([`Rule::VmFailureText`]).
fn envoy_expect(e: &Expect) -> Expect {
    let mut e = e.clone();
    e.vm_failed = vm_failure(&e.vm_failed);
    e
}

/// [`envoy_expect`] for a TCP connection.
fn envoy_connection_expect(e: &ConnectionExpect) -> ConnectionExpect {
    let mut e = e.clone();
    e.vm_failed = vm_failure(&e.vm_failed);
    e
}

fn envoy_observation(o: &Observation) -> Observation {
    let mut o = o.clone();
    o.vm_failure = vm_failure(&o.vm_failure);
    o
}

/// The three backends, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `vessel test`'s in-process driver.
    InProcess,
    /// A real `vessel run`.
    VesselRun,
    /// Real Envoy, the oracle.
    Envoy,
}

impl Backend {
    /// All three, in table order.
    pub const ALL: [Backend; 3] = [Backend::InProcess, Backend::VesselRun, Backend::Envoy];

    /// The column title.
    pub fn title(self) -> &'static str {
        match self {
            Backend::InProcess => "in-process",
            Backend::VesselRun => "vessel run",
            Backend::Envoy => "Envoy",
        }
    }

    /// The name on the command line (`vessel envoy-diff --backends`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::InProcess => "in-process",
            Backend::VesselRun => "vessel-run",
            Backend::Envoy => "envoy",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("`{s}` is not a backend: in-process, vessel-run or envoy"))
    }
}

/// One backend's verdict on one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every expectation held, and (vessel backends) it agrees with Envoy.
    Pass,
    /// An expectation failed.
    Fail,
    /// Every expectation held, but the observations differ from Envoy's.
    Differs,
    /// The backend could not run the file, and why.
    NotRun(String),
    /// The backend broke (could not start, ...).
    Error(String),
}

impl Verdict {
    fn cell(&self) -> String {
        match self {
            Verdict::Pass => "pass".into(),
            Verdict::Fail => "fail".into(),
            Verdict::Differs => "differs".into(),
            Verdict::NotRun(_) => "n/a".into(),
            Verdict::Error(_) => "error".into(),
        }
    }
}

/// The result of one file on the three backends.
#[derive(Debug, Clone)]
pub struct FileResult {
    /// The scenario file.
    pub file: PathBuf,
    /// One verdict per backend, in [`Backend::ALL`] order.
    pub verdicts: [Verdict; 3],
    /// Per backend: failed expectations and differences from Envoy, one
    /// text per stream and item.
    pub details: [Vec<String>; 3],
    /// The deviations the file lists.
    pub deviations: Deviations,
    /// Why the file fails the run (empty: it does not).
    pub problems: Vec<String>,
}

impl FileResult {
    /// Ran on all three backends.
    pub fn ran_everywhere(&self) -> bool {
        self.verdicts
            .iter()
            .all(|v| !matches!(v, Verdict::NotRun(_) | Verdict::Error(_)))
    }

    fn name(&self) -> String {
        self.file.file_name().map_or_else(
            || self.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    fn cell(&self, i: usize) -> String {
        let mut c = self.verdicts[i].cell();
        let ids = match i {
            0 => &self.deviations.in_process,
            1 => &self.deviations.vessel_run,
            _ => return c,
        };
        if !ids.is_empty() && self.verdicts[i] != Verdict::Pass {
            let _ = write!(c, " ({})", ids.join(", "));
        }
        c
    }
}

/// The ids of the entries of `DEVIATIONS.md`: the first cell of each table
/// row (`| B1 | ...`, `| 4 | ...`).
pub fn deviation_ids(deviations_md: &str) -> BTreeSet<String> {
    deviations_md
        .lines()
        .filter_map(|l| l.strip_prefix('|'))
        .filter_map(|l| l.split('|').next())
        .map(str::trim)
        .filter(|id| {
            !id.is_empty()
                && id.chars().last().is_some_and(|c| c.is_ascii_digit())
                && id.chars().all(|c| c.is_ascii_alphanumeric())
        })
        .map(str::to_owned)
        .collect()
}

/// What the differential runner needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `vessel` binary (for `vessel run`).
    pub vessel: PathBuf,
    /// The `envoy` binary.
    pub envoy: PathBuf,
    /// The ids of `DEVIATIONS.md` ([`deviation_ids`]).
    pub known_deviations: BTreeSet<String>,
    /// The backends to run (the others report the file as not run); all
    /// three when empty. Without Envoy, nothing is compared with it.
    pub backends: Vec<Backend>,
    /// The compiled-module cache of the in-process backend (`vessel run`
    /// uses its own default, [`CacheConfig::user_default`]).
    pub module_cache: CacheConfig,
}

/// Why a backend that `Options::backends` leaves out did not run a file.
const NOT_SELECTED: &str = "not selected (`vessel envoy-diff --backends`)";

impl Options {
    fn runs(&self, b: Backend) -> bool {
        self.backends.is_empty() || self.backends.contains(&b)
    }
}

fn observed(r: Result<Run, Error>) -> Result<Vec<Observation>, Verdict> {
    match r {
        Ok(Run::Observed(o)) => Ok(o),
        Ok(Run::Skipped(why)) => Err(Verdict::NotRun(why)),
        Err(e) => Err(Verdict::Error(e.to_string())),
    }
}

/// Runs one scenario file on the three backends (concurrently) and judges
/// it.
pub fn diff_file(engine: &Engine, options: &Options, path: &Path) -> Result<FileResult, Error> {
    let scenario = Scenario::from_file(path)?;
    let not_selected = || Ok(Run::Skipped(NOT_SELECTED.into()));
    let vessel_run = || match options.runs(Backend::VesselRun) {
        true => super::real::run_file(super::real::Proxy::VesselRun(&options.vessel), path),
        false => not_selected(),
    };
    let envoy_run = || match options.runs(Backend::Envoy) {
        true => super::real::run_file(super::real::Proxy::Envoy(&options.envoy), path),
        false => not_selected(),
    };
    let in_process_run = || match options.runs(Backend::InProcess) {
        true => super::run_file(engine, path)
            .map(|results| Run::Observed(results.into_iter().map(|r| r.observation).collect())),
        false => not_selected(),
    };
    // A file with a Redis cluster keeps state outside the proxies (the
    // counters on the one Redis server): its backends run one after the
    // other, each starting from a flushed server. The others run at once.
    let (in_process, via, envoy) = if scenario.clusters.values().any(|c| c.redis.is_some()) {
        let in_process = in_process_run();
        (in_process, vessel_run(), envoy_run())
    } else {
        std::thread::scope(|s| {
            let via = s.spawn(vessel_run);
            let envoy = s.spawn(envoy_run);
            let in_process = in_process_run();
            let panicked = |backend: &str| Error::Io {
                path: path.to_owned(),
                message: format!("the {backend} backend panicked"),
            };
            (
                in_process,
                via.join().unwrap_or_else(|_| Err(panicked("vessel run"))),
                envoy.join().unwrap_or_else(|_| Err(panicked("Envoy"))),
            )
        })
    };
    // A file the in-process runner cannot load is that backend's error,
    // not the end of the run.
    Ok(judge(
        path,
        &scenario,
        options,
        [observed(in_process), observed(via), observed(envoy)],
    ))
}

fn judge(
    path: &Path,
    scenario: &Scenario,
    options: &Options,
    runs: [Result<Vec<Observation>, Verdict>; 3],
) -> FileResult {
    let mut result = FileResult {
        file: path.to_owned(),
        verdicts: [Verdict::Pass, Verdict::Pass, Verdict::Pass],
        details: Default::default(),
        deviations: scenario.deviations.clone(),
        problems: Vec::new(),
    };
    for id in scenario
        .deviations
        .in_process
        .iter()
        .chain(&scenario.deviations.vessel_run)
    {
        if !options.known_deviations.contains(id) {
            result.problems.push(format!(
                "lists deviation `{id}`, which DEVIATIONS.md does not have"
            ));
        }
    }
    let envoy = match &runs[2] {
        Ok(o) => Some(o.clone()),
        Err(_) => None,
    };
    for (i, run) in runs.into_iter().enumerate() {
        let obs = match run {
            Ok(o) => o,
            Err(v) => {
                if let Verdict::Error(e) = &v {
                    result
                        .problems
                        .push(format!("{}: {e}", Backend::ALL[i].title()));
                }
                result.verdicts[i] = v;
                continue;
            }
        };
        let mut failed = false;
        let mut differs = false;
        for (n, o) in obs.iter().enumerate() {
            let failures = if scenario.is_tcp() {
                let Some(conn) = scenario.connections.get(n) else {
                    break;
                };
                if i == 2 {
                    check_connection(
                        &envoy_connection_expect(&conn.expect),
                        &envoy_observation(o),
                    )
                } else {
                    check_connection(&conn.expect, o)
                }
            } else {
                let Some(stream) = scenario.streams.get(n) else {
                    break;
                };
                if i == 2 {
                    check(&envoy_expect(&stream.expect), &envoy_observation(o))
                } else {
                    check(&stream.expect, o)
                }
            };
            for f in failures {
                failed = true;
                result.details[i].push(format!("[{}] expectation: {f}", n + 1));
            }
            if i < 2
                && let Some(e) = envoy.as_ref().and_then(|e| e.get(n))
            {
                for d in compare(o, e) {
                    differs = true;
                    result.details[i].push(format!("[{}] vs Envoy: {d}", n + 1));
                }
            }
        }
        result.verdicts[i] = if failed {
            Verdict::Fail
        } else if differs {
            Verdict::Differs
        } else {
            Verdict::Pass
        };
    }
    let listed = |i: usize| match i {
        0 => !scenario.deviations.in_process.is_empty(),
        1 => !scenario.deviations.vessel_run.is_empty(),
        // Expectations are written for vessel: where vessel deviates on
        // purpose, Envoy may fail them.
        _ => !scenario.deviations.is_empty(),
    };
    for i in 0..3 {
        if matches!(result.verdicts[i], Verdict::Fail | Verdict::Differs) && !listed(i) {
            result.problems.push(format!(
                "{} {} and the file lists no deviation for it",
                Backend::ALL[i].title(),
                if result.verdicts[i] == Verdict::Fail {
                    "fails an expectation"
                } else {
                    "differs from Envoy"
                }
            ));
        }
    }
    result
}

/// The results of the differential run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One entry per file.
    pub files: Vec<FileResult>,
}

impl Report {
    /// True when no file has a problem.
    pub fn ok(&self) -> bool {
        self.files.iter().all(|f| f.problems.is_empty())
    }

    /// Per backend: how many files pass, fail, differ, did not run.
    pub fn totals(&self) -> [[usize; 4]; 3] {
        let mut t = [[0; 4]; 3];
        for f in &self.files {
            for (i, v) in f.verdicts.iter().enumerate() {
                let k = match v {
                    Verdict::Pass => 0,
                    Verdict::Fail => 1,
                    Verdict::Differs => 2,
                    Verdict::NotRun(_) | Verdict::Error(_) => 3,
                };
                t[i][k] += 1;
            }
        }
        t
    }

    /// The table: one row per file, one column per backend, and the totals.
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "scenario".to_owned(),
            Backend::ALL[0].title().to_owned(),
            Backend::ALL[1].title().to_owned(),
            Backend::ALL[2].title().to_owned(),
        ]];
        for f in &self.files {
            rows.push([f.name(), f.cell(0), f.cell(1), f.cell(2)]);
        }
        let mut widths = [0; 4];
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for (n, r) in rows.iter().enumerate() {
            let cells: Vec<String> = r
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
            if n == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
            }
        }
        out.push('\n');
        out.push_str(&self.totals_text());
        out
    }

    fn totals_text(&self) -> String {
        let t = self.totals();
        let everywhere = self.files.iter().filter(|f| f.ran_everywhere()).count();
        let mut out = format!(
            "{} scenario files, {everywhere} ran on all three backends.\n",
            self.files.len()
        );
        for (i, b) in Backend::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "- {}: {} pass, {} fail, {} differ, {} not run",
                b.title(),
                t[i][0],
                t[i][1],
                t[i][2],
                t[i][3]
            );
        }
        out
    }

    /// Every failed expectation, difference and problem, by file.
    pub fn details(&self) -> String {
        self.details_of(|_| true)
    }

    /// The details of the files with a problem only (what made the run
    /// fail), printed again last so that the tail of a long CI log names
    /// them.
    pub fn failures(&self) -> String {
        self.details_of(|f| !f.problems.is_empty())
    }

    fn details_of(&self, keep: impl Fn(&FileResult) -> bool) -> String {
        let mut out = String::new();
        for f in self.files.iter().filter(|f| keep(f)) {
            let any = f.details.iter().any(|d| !d.is_empty())
                || !f.problems.is_empty()
                || f.verdicts.iter().any(|v| match v {
                    Verdict::NotRun(why) => why != NOT_SELECTED,
                    Verdict::Error(_) => true,
                    _ => false,
                });
            if !any {
                continue;
            }
            let _ = writeln!(out, "## {}", f.name());
            for p in &f.problems {
                let _ = writeln!(out, "PROBLEM: {p}");
            }
            for (i, b) in Backend::ALL.iter().enumerate() {
                match &f.verdicts[i] {
                    Verdict::NotRun(why) if why != NOT_SELECTED => {
                        let _ = writeln!(out, "{}: not run: {why}", b.title());
                    }
                    Verdict::Error(e) => {
                        let _ = writeln!(out, "{}: error: {e}", b.title());
                    }
                    _ => {}
                }
                for d in &f.details[i] {
                    let mut lines = d.lines();
                    if let Some(first) = lines.next() {
                        let _ = writeln!(out, "{}: {first}", b.title());
                    }
                    for l in lines {
                        let _ = writeln!(out, "    {l}");
                    }
                }
            }
            out.push('\n');
        }
        out
    }

    /// `spec-tests/CONFORMANCE.md`: the table, the totals and the
    /// normalisations (generated; the differences stay in the command's
    /// output).
    pub fn conformance_md(&self) -> String {
        let mut out = String::from(
            "# Conformance against Envoy\n\n\
             Generated by `cargo xtask envoy-diff`; do not edit. Every scenario file of\n\
             `spec-tests/scenarios/` runs in-process (`vessel test`), through a real\n\
             `vessel run` and through real Envoy 1.40 (V8), and Envoy is the oracle\n\
             (`crates/vessel-proxy/src/harness/diff.rs`).\n\n\
             * **pass**: every expectation of the file holds and, for the vessel\n\
             \x20 backends, the observations equal Envoy's after normalisation;\n\
             * **fail**: an expectation does not hold;\n\
             * **differs**: the expectations hold but the observations differ from\n\
             \x20 Envoy's;\n\
             * **n/a**: the backend cannot express the file (see the details).\n\n\
             A file may fail or differ only with a deliberate deviation of\n\
             `DEVIATIONS.md`, shown in brackets; otherwise the command fails.\n\n",
        );
        out.push_str(&self.table());
        out.push_str("\n## Not run\n\n");
        for f in &self.files {
            for (i, v) in f.verdicts.iter().enumerate() {
                if let Verdict::NotRun(why) = v {
                    let _ = writeln!(out, "- {} on {}: {why}", f.name(), Backend::ALL[i].title());
                }
            }
        }
        out.push_str("\n## Normalised before comparing\n\n");
        for n in NORMALISATIONS {
            let what = match n.what {
                Rule::Header(h) => format!("header `{h}`"),
                Rule::HeaderPrefix(p) => format!("headers `{p}*`"),
                Rule::HeaderEntry(h, v) => format!("header `{h}: {v}`"),
                Rule::HeaderOrder => "header order".into(),
                Rule::RepeatedLogLines => "repeated guest log lines".into(),
                Rule::VmFailureText => "the text of a VM failure".into(),
                Rule::LogValues => "values in guest log lines".into(),
            };
            let _ = writeln!(out, "- {what}: {}", n.why);
        }
        out
    }
}

/// Runs every file; stops at a file that cannot be read at all.
pub fn run(options: &Options, files: &[PathBuf]) -> Result<Report, Error> {
    let engine = Engine::new(EngineConfig {
        cache: options.module_cache.clone(),
        ..EngineConfig::default()
    })?;
    let mut report = Report::default();
    for f in files {
        report.files.push(diff_file(&engine, options, f)?);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(headers: &[(&str, &str)], logs: &[&str]) -> Observation {
        Observation {
            response: Some(ObservedMessage {
                status: Some(200),
                headers: headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..ObservedMessage::default()
            }),
            logs: logs.iter().map(|l| (*l).to_owned()).collect(),
            ..Observation::default()
        }
    }

    #[test]
    fn normalised_headers_and_repeated_lines_do_not_differ() {
        let ours = obs(&[("x-a", "1"), ("content-length", "3")], &["start", "req"]);
        let envoy = obs(
            &[("server", "envoy"), ("X-A", "1"), ("date", "now")],
            &["start", "start", "req"],
        );
        assert!(compare(&ours, &envoy).is_empty());
    }

    #[test]
    fn other_differences_are_reported() {
        let ours = obs(&[("x-a", "1")], &["req"]);
        let envoy = obs(&[("x-a", "2")], &["req", "log"]);
        let d = compare(&ours, &envoy);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("x-a: 1") && d[0].contains("x-a: 2"), "{d:?}");
        assert!(d[1].contains("\"log\" (only in Envoy)"), "{d:?}");
    }

    #[test]
    fn run_specific_values_in_log_lines_are_masked() {
        assert_eq!(
            mask(
                "x-request-id=9dd43912-baba-47f9-abb1-079c863543db date=Sat, 21 Nov 2026 08:13:17 GMT"
            ),
            "x-request-id=<uuid> date=<date>"
        );
        assert_eq!(
            mask("header x-envoy-upstream-service-time=12, next=3"),
            "header x-envoy-upstream-service-time=<ms>, next=3"
        );
        assert_eq!(mask("size=102"), "size=102");
    }

    #[test]
    fn vm_failures_compare_by_callback() {
        let a = Some("vm failed: `proxy_on_log` trapped: wasm trap: unreachable".to_owned());
        let b = Some("`proxy_on_log` trapped: Uncaught RuntimeError: unreachable".to_owned());
        assert_eq!(vm_failure(&a), vm_failure(&b));
        assert_eq!(vm_failure(&a).as_deref(), Some("`proxy_on_log`"));
    }

    #[test]
    fn backends_are_chosen_by_their_command_line_names() {
        for b in Backend::ALL {
            assert_eq!(b.name().parse::<Backend>(), Ok(b));
        }
        let Err(e) = "Envoy".parse::<Backend>() else {
            panic!("backend names are lower-case");
        };
        assert!(e.contains("in-process, vessel-run or envoy"), "{e}");
        let only_envoy = Options {
            vessel: PathBuf::new(),
            envoy: PathBuf::new(),
            known_deviations: BTreeSet::new(),
            backends: vec![Backend::Envoy],
            module_cache: CacheConfig::disabled(),
        };
        assert!(only_envoy.runs(Backend::Envoy));
        assert!(!only_envoy.runs(Backend::InProcess));
        let all = Options {
            backends: Vec::new(),
            ..only_envoy
        };
        assert!(Backend::ALL.iter().all(|b| all.runs(*b)));
    }

    #[test]
    fn deviation_ids_are_the_first_cells() {
        let md = "| # | Area |\n|---|---|\n| 1 | x |\n| B3 | y |\n| E12 | z |\n| Why | no |\n";
        let ids = deviation_ids(md);
        assert_eq!(
            ids.into_iter().collect::<Vec<_>>(),
            vec!["1".to_owned(), "B3".into(), "E12".into()]
        );
    }
}
