//! `vm_config.vessel_hidden` through a real `vessel run`, a real loopback
//! hyper upstream and a hyper client: a chain of a property reader that
//! may not see `source.address`, a header logger (`guest_headers`, which
//! logs every header pair it can see) that may not see `authorization`,
//! `cookie`, `x-replace` and response `set-cookie`, and a property reader
//! that sees everything. The upstream and the client get the hidden values
//! unchanged; the logger's lines never hold them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use vessel_testkit::servers::{Recorder, record, serve_fn};

use crate::support::{self, Bootstrap, Cluster, Listener, Route, WasmFilter, guest};

/// The guest log lines of plugin `name` in `vessel run`'s log.
fn lines_of(log: &str, name: &str) -> Vec<String> {
    let prefix = format!("wasm log {name}: ");
    log.lines()
        .filter_map(|l| l.split_once(&prefix).map(|(_, rest)| rest.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_headers_and_properties_reach_the_upstream_but_not_the_plugin() {
    let seen = Recorder::default();
    let rec = seen.clone();
    let up = serve_fn(move |req| {
        let rec = rec.clone();
        async move {
            record(req, &rec).await;
            let mut resp = vessel_testkit::servers::reply(200, "ok");
            resp.headers_mut()
                .insert("set-cookie", http::HeaderValue::from_static("id=topsecret"));
            resp
        }
    })
    .await;
    let config = Bootstrap::new()
        .listener(
            Listener::new("main")
                .route(Route::prefix("/").to("backend"))
                .filter(
                    WasmFilter::new("hides-props", guest("properties"))
                        .vm_id("hides-props")
                        .vessel_hidden("properties", ["source.address"]),
                )
                .filter(
                    WasmFilter::new("logger", guest("headers"))
                        .vm_id("logger")
                        .vessel_hidden("request_headers", ["authorization", "Cookie", "x-replace"])
                        .vessel_hidden("response_headers", ["set-cookie"]),
                )
                .filter(WasmFilter::new("sees", guest("properties")).vm_id("sees")),
        )
        .cluster(Cluster::new("backend").endpoint(up));
    let vessel = support::start_vessel("hidden", &config, 1).await;
    let c = support::client();
    let a = support::send(
        &c,
        vessel.listener("main"),
        "/hidden",
        &[
            ("authorization", "Bearer s3cr3t"),
            ("cookie", "session=abc123"),
            ("x-replace", "original-value"),
            ("x-op", "replace"),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", vessel.stderr());
    // The client gets the hidden response header, and each property
    // reader's view of `source.address`.
    assert_eq!(a.header("set-cookie"), Some("id=topsecret"));
    let addresses: Vec<&str> = a
        .headers
        .get_all("x-prop-source-address")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(addresses.len(), 2, "{addresses:?}");
    assert!(addresses.contains(&"<none>"), "{addresses:?}");
    assert!(
        addresses.iter().any(|a| a.starts_with("127.0.0.1:")),
        "{addresses:?}"
    );

    // The upstream got the hidden request headers unchanged.
    let got = seen.lock().unwrap()[0].headers.clone();
    assert_eq!(got.get("authorization").unwrap(), "Bearer s3cr3t");
    assert_eq!(got.get("cookie").unwrap(), "session=abc123");
    assert_eq!(got.get("x-replace").unwrap(), "original-value");

    // The logger's response lines come after its request lines: once they
    // are in the log, every line it wrote for the request is too.
    support::eventually("the logger's response lines are logged", || {
        let log = vessel.stderr();
        async move {
            lines_of(&log, "logger")
                .iter()
                .any(|l| l == "set-cookie first=None")
        }
    })
    .await;
    let log = vessel.stderr();
    let logger = lines_of(&log, "logger");
    assert!(
        logger.iter().any(|l| l == "request cookie first=None"),
        "{logger:#?}"
    );
    assert!(
        logger
            .iter()
            .any(|l| l == "request after replace x-replace=None"),
        "{logger:#?}"
    );
    assert!(
        logger.iter().any(|l| l == "set-cookie count=0"),
        "{logger:#?}"
    );
    for secret in ["s3cr3t", "session=abc123", "original-value", "topsecret"] {
        assert!(
            !logger.iter().any(|l| l.contains(secret)),
            "logger logged `{secret}`: {logger:#?}"
        );
    }
    let hides = lines_of(&log, "hides-props");
    assert!(
        hides
            .iter()
            .any(|l| l == "properties: source.address=<none>"),
        "{hides:#?}"
    );
    let sees = lines_of(&log, "sees");
    assert!(
        sees.iter()
            .any(|l| l.starts_with("properties: source.address=127.0.0.1:")),
        "{sees:#?}"
    );
    // The refused replace is logged once, naming the plugin and the header.
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("plugin `logger`: a write to hidden"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(
        warned[0].contains("request header `x-replace`"),
        "{}",
        warned[0]
    );
}
