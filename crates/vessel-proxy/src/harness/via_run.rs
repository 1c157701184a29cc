//! The second backend of the scenario runner: the same scenario file run
//! through a real `vessel run` process, with real loopback servers for the
//! upstream and the callout clusters and a real HTTP/2 client
//! ([`super::real`]). The observations are checked against the same
//! `expect` keys as the in-process driver, so one scenario pins both paths.
//!
//! Scenario features that only the in-process driver can express
//! (`properties`, `foreign_functions`, `ticks_before`, `reset: true`
//! clusters, `only_in_process`) make [`run_file_via_vessel_run`] report the file as
//! unsupported instead of guessing.

use std::path::Path;

use super::real::{self, Proxy, Run};
use super::scenario::Scenario;
use super::{Error, Observation};

/// Why a scenario cannot run through `vessel run`.
pub fn unsupported(s: &Scenario) -> Option<String> {
    Proxy::VesselRun(Path::new("vessel")).unsupported(s)
}

/// The guest lines of `vessel run`'s log (`[... vessel::guest] wasm log
/// <plugin>: <message>`, continuation lines appended) and the first VM
/// failure (`vessel::vm` ... `trapped`).
pub(crate) fn guest_lines(raw: &[String]) -> (Vec<String>, Option<String>) {
    let mut logs: Vec<String> = Vec::new();
    let mut failure = None;
    let mut in_guest = false;
    for line in raw {
        if let Some(i) = line.find("] wasm log ") {
            let rest = &line[i + "] wasm log ".len()..];
            let msg = rest.split_once(": ").map_or(rest, |(_, m)| m);
            logs.push(msg.to_owned());
            in_guest = true;
        } else if line.contains(" vessel::vm] ") && line.contains("trapped") {
            failure.get_or_insert_with(|| line.clone());
            in_guest = false;
        } else if !line.starts_with('[') && in_guest {
            if let Some(last) = logs.last_mut() {
                // env_logger indents the lines after the first by four spaces.
                last.push('\n');
                last.push_str(line.strip_prefix("    ").unwrap_or(line));
            }
        } else {
            in_guest = false;
        }
    }
    (logs, failure)
}

/// Runs a scenario file through `vessel run` (the binary at `vessel`).
/// `Ok(None)` means the file uses a feature this backend cannot express, or
/// its plugin fails to start (which `vessel run`, like Envoy, refuses).
pub fn run_file_via_vessel_run(
    vessel: &Path,
    path: &Path,
) -> Result<Option<Vec<Observation>>, Error> {
    Ok(match real::run_file(Proxy::VesselRun(vessel), path)? {
        Run::Observed(o) => Some(o),
        Run::Skipped(_) => None,
    })
}
