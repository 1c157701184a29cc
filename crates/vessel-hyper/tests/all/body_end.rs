//! The end of a body over HTTP/1, as Envoy's codec reports it (ABI
//! reference §11.2): after the last data, one more body callback with 0
//! bytes and `end_of_stream = true`, also for a response framed by
//! `content-length`, whose client stops reading once it has every byte.
//! `guest_bodies` logs each body callback; a real hyper client, proxy and
//! upstream on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};

use crate::common::{guest, post, proxy, upstream};
use vessel_host::{Engine, EngineConfig, HostEnv, LogRecord, LogSink, Plugin, PluginConfig};
use vessel_hyper::{Clusters, FailurePolicy, FilterPool, Runtime, VesselLayer};

/// Guest log lines, kept.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl LogSink for Lines {
    fn log(&self, record: &LogRecord<'_>) {
        let line = String::from_utf8_lossy(record.message).into_owned();
        self.0.lock().unwrap().push(line);
    }
}

impl Lines {
    fn starting(&self, prefix: &str) -> Vec<String> {
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_each_body_is_one_more_empty_callback_after_its_data() {
    let (up, seen) = upstream(200, "upstream").await;
    let lines = Lines::default();
    let env = HostEnv::builder().log_sink(lines.clone()).build();
    let engine = Engine::new(EngineConfig::default()).expect("the default engine builds");
    let plugin = Plugin::load(&engine, &guest("bodies"), PluginConfig::named("bodies")).unwrap();
    let runtime = Runtime::new(Clusters::new());
    let pool = FilterPool::new(&plugin, &env, &runtime, 1, FailurePolicy::FailClosed).unwrap();
    let proxy = proxy(VesselLayer::new(vec![pool.clone()]), up).await;

    let (status, headers, body) = post(proxy, "/end", &[], b"hello".to_vec()).await;
    assert_eq!((status, body.as_slice()), (200, &b"upstream"[..]));
    assert_eq!(headers["content-length"], "8");
    assert_eq!(seen.lock().unwrap()[0].body, b"hello");
    assert_eq!(
        lines.starting("request-body chunk size="),
        [
            "request-body chunk size=5 eos=false",
            "request-body chunk size=0 eos=true"
        ]
    );
    // The response is framed by content-length: its end still reaches the
    // filter, before the client had the last byte.
    assert_eq!(
        lines.starting("response-body chunk size="),
        [
            "response-body chunk size=8 eos=false",
            "response-body chunk size=0 eos=true"
        ]
    );
    assert_eq!(pool.context_count(), pool.len(), "the stream ended");
}
