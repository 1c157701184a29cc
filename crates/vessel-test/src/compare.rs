//! Checks an [`Observation`] against an [`Expect`], and turns an
//! observation into the expectation that matches it (`--record`).

use super::scenario::{ConnectionExpect, Expect, ExpectMessage, ExpectResponse, Headers};
use super::{Observation, ObservedMessage};

fn has(headers: &[(String, String)], name: &str, value: &str) -> bool {
    headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case(name) && v == value)
}

fn show(headers: &[(String, String)], name: &str) -> String {
    let values: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    if values.is_empty() {
        "absent".into()
    } else {
        format!("{values:?}")
    }
}

fn check_headers(
    what: &str,
    got: &ObservedMessage,
    include: &Headers,
    exclude: &[String],
    trailers_include: &Headers,
    out: &mut Vec<String>,
) {
    for (k, v) in include {
        if !has(&got.headers, k, v) {
            out.push(format!(
                "{what}.headers_include: expected `{k}: {v}`, got {}",
                show(&got.headers, k)
            ));
        }
    }
    for k in exclude {
        if got.headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(k)) {
            out.push(format!(
                "{what}.headers_exclude: `{k}` is present: {}",
                show(&got.headers, k)
            ));
        }
    }
    for (k, v) in trailers_include {
        if !has(&got.trailers, k, v) {
            out.push(format!(
                "{what}.trailers_include: expected `{k}: {v}`, got {}",
                show(&got.trailers, k)
            ));
        }
    }
}

fn check_body(what: &str, expected: &Option<String>, got: &str, out: &mut Vec<String>) {
    if let Some(b) = expected
        && b != got
    {
        out.push(format!(
            "{what}.body:\n  expected: {b:?}\n  got:      {got:?}"
        ));
    }
}

/// Returns one message per failed expectation; empty means PASS.
pub fn check(expect: &Expect, obs: &Observation) -> Vec<String> {
    let mut out = Vec::new();
    for e in &obs.errors {
        out.push(format!("vessel test could not run this: {e}"));
    }
    match (&expect.vm_failed, &obs.vm_failure) {
        (Some(want), Some(got)) if !got.contains(want.as_str()) => out.push(format!(
            "vm_failed: expected a failure containing {want:?}, got {got:?}"
        )),
        (Some(want), None) => out.push(format!(
            "vm_failed: expected a failure containing {want:?}, but the VM did not fail"
        )),
        (None, Some(got)) => out.push(format!("the VM failed unexpectedly: {got}")),
        _ => {}
    }
    if let Some(reached) = expect.upstream_reached {
        let got = obs.upstream_request.is_some();
        if reached != got {
            out.push(format!("upstream_reached: expected {reached}, got {got}"));
        }
    }
    if let Some(e) = &expect.upstream_request {
        match &obs.upstream_request {
            None => out.push("upstream_request: the request never reached the upstream".into()),
            Some(got) => {
                check_headers(
                    "upstream_request",
                    got,
                    &e.headers_include,
                    &e.headers_exclude,
                    &e.trailers_include,
                    &mut out,
                );
                check_body("upstream_request", &e.body, &got.body, &mut out);
            }
        }
    }
    if let Some(e) = &expect.response {
        match &obs.response {
            None => {
                let why = match (&obs.stalled, obs.reset) {
                    (Some(s), _) => s.clone(),
                    (None, true) => "the filter reset the stream".into(),
                    (None, false) => "no response".into(),
                };
                out.push(format!("response: the client got no response: {why}"));
            }
            Some(got) => {
                if let Some(s) = e.status
                    && got.status != Some(s)
                {
                    out.push(format!(
                        "response.status: expected {s}, got {}",
                        got.status.map_or("none".into(), |g| g.to_string())
                    ));
                }
                check_headers(
                    "response",
                    got,
                    &e.headers_include,
                    &e.headers_exclude,
                    &e.trailers_include,
                    &mut out,
                );
                check_body("response", &e.body, &got.body, &mut out);
            }
        }
    }
    check_logs(&expect.logs_include, &expect.logs_exclude, obs, &mut out);
    out
}

/// `logs_include` and `logs_exclude` against the observed lines.
fn check_logs(include: &[String], exclude: &[String], obs: &Observation, out: &mut Vec<String>) {
    for want in include {
        if !obs.logs.iter().any(|l| l.contains(want.as_str())) {
            out.push(format!(
                "logs_include: no log line contains {want:?}; lines were:{}",
                obs.logs
                    .iter()
                    .map(|l| format!("\n  | {l}"))
                    .collect::<String>()
            ));
        }
    }
    for bad in exclude {
        if let Some(l) = obs.logs.iter().find(|l| l.contains(bad.as_str())) {
            out.push(format!("logs_exclude: a log line contains {bad:?}: {l:?}"));
        }
    }
}

/// [`check`] for a connection of the TCP form: one message per failed
/// expectation or step; empty means PASS.
pub fn check_connection(expect: &ConnectionExpect, obs: &Observation) -> Vec<String> {
    let mut out = Vec::new();
    for e in &obs.errors {
        out.push(format!("vessel test could not run this: {e}"));
    }
    match (&expect.vm_failed, &obs.vm_failure) {
        (Some(want), Some(got)) if !got.contains(want.as_str()) => out.push(format!(
            "vm_failed: expected a failure containing {want:?}, got {got:?}"
        )),
        (Some(want), None) => out.push(format!(
            "vm_failed: expected a failure containing {want:?}, but the VM did not fail"
        )),
        (None, Some(got)) => out.push(format!("the VM failed unexpectedly: {got}")),
        _ => {}
    }
    let conn = obs.connection.clone().unwrap_or_default();
    out.extend(conn.step_failures.iter().cloned());
    for (what, want, got) in [
        (
            "upstream_received",
            &expect.upstream_received,
            &conn.upstream_received,
        ),
        (
            "client_received",
            &expect.client_received,
            &conn.client_received,
        ),
    ] {
        if let Some(want) = want
            && want != got
        {
            out.push(format!(
                "{what}:\n  expected: {want:?}\n  got:      {got:?}"
            ));
        }
    }
    check_logs(&expect.logs_include, &expect.logs_exclude, obs, &mut out);
    out
}

/// The connection expectation an observation satisfies.
pub(crate) fn connection_expectation_from(obs: &Observation) -> ConnectionExpect {
    let conn = obs.connection.clone().unwrap_or_default();
    ConnectionExpect {
        upstream_received: Some(conn.upstream_received),
        client_received: Some(conn.client_received),
        logs_include: obs.logs.clone(),
        logs_exclude: Vec::new(),
        vm_failed: obs.vm_failure.clone(),
    }
}

/// The expectation an observation satisfies.
pub(crate) fn expectation_from(obs: &Observation) -> Expect {
    Expect {
        upstream_reached: Some(obs.upstream_request.is_some()),
        upstream_request: obs.upstream_request.as_ref().map(|m| ExpectMessage {
            headers_include: m.headers.clone(),
            headers_exclude: Vec::new(),
            body: Some(m.body.clone()),
            trailers_include: m.trailers.clone(),
        }),
        response: obs.response.as_ref().map(|m| ExpectResponse {
            status: m.status,
            headers_include: m
                .headers
                .iter()
                .filter(|(k, _)| k != ":status")
                .cloned()
                .collect(),
            headers_exclude: Vec::new(),
            body: Some(m.body.clone()),
            trailers_include: m.trailers.clone(),
        }),
        logs_include: obs.logs.clone(),
        logs_exclude: Vec::new(),
        vm_failed: obs.vm_failure.clone(),
    }
}
