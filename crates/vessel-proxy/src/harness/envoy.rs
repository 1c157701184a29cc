//! The third backend of the scenario runner: real Envoy (the V8 runtime),
//! the oracle of the differential runner ([`super::diff`]). The scenario
//! runs through the same generated bootstrap, loopback servers and client
//! as `vessel run` ([`super::real`]); this module knows Envoy's command
//! line and the shape of its log lines.
//!
//! Envoy is started with `--log-format` [`LOG_FORMAT`], so each log entry
//! starts with `@@[<level>][<logger>] `; a guest line is an entry of the
//! `wasm` logger whose message starts with `wasm log` (`wasm log: <msg>`
//! during VM start-up, `wasm log <plugin> <root_id> <vm_id>: <msg>`
//! afterwards), and a multi-line message continues on lines without the
//! prefix. A VM failure is the `wasm` logger's `Function: <export> failed:
//! <runtime message>` entry; it becomes vessel's shape, ``"`<export>`
//! trapped: <runtime message>"``, so the same `vm_failed` expectations
//! apply.

use std::path::Path;

use super::Error;
use super::real::{self, Proxy, Run};

/// Envoy's `--log-format`: a prefix no guest line starts with, the level
/// and the logger name, then the message.
pub const LOG_FORMAT: &str = "@@[%l][%n] %v";

const PREFIX: &str = "@@[";

/// The guest lines of an Envoy log and the first VM failure.
pub(crate) fn guest_lines(raw: &[String]) -> (Vec<String>, Option<String>) {
    let mut logs: Vec<String> = Vec::new();
    let mut failure = None;
    let mut in_guest = false;
    for line in raw {
        let Some(rest) = line.strip_prefix(PREFIX) else {
            if in_guest && let Some(last) = logs.last_mut() {
                last.push('\n');
                last.push_str(line);
            }
            continue;
        };
        in_guest = false;
        let Some((_level, rest)) = rest.split_once("][") else {
            continue;
        };
        let Some(msg) = rest.strip_prefix("wasm] ") else {
            continue;
        };
        if let Some(body) = msg.strip_prefix("wasm log") {
            let text = body.split_once(": ").map_or("", |(_, m)| m);
            logs.push(text.to_owned());
            in_guest = true;
        } else if let Some(f) = msg.strip_prefix("Function: ")
            && let Some((function, why)) = f.split_once(" failed: ")
        {
            failure.get_or_insert_with(|| format!("`{function}` trapped: {why}"));
        }
    }
    (logs, failure)
}

/// Envoy exited because the plugin could not start (it refuses the config).
pub(crate) fn refused(log: &str) -> bool {
    log.contains("Unable to create Wasm HTTP filter")
        || log.contains("Failed to initialize Wasm")
        || log.contains("Wasm VM failed")
}

/// Runs a scenario file through Envoy (the binary at `envoy`).
pub fn run_file_via_envoy(envoy: &Path, path: &Path) -> Result<Run, Error> {
    real::run_file(Proxy::Envoy(envoy), path)
}
