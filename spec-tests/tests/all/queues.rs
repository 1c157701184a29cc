//! Shared queues (ABI reference §4.6, §11.15): register, resolve, enqueue,
//! dequeue; `Effect::QueueReady` names the VM that registered the queue,
//! and the embedder delivers it to that VM, also across VMs.

use vessel_host::{Effect, HostEnv, PluginConfig, QueueToken, Status, Vm};
use vessel_spec_tests::probe::{Callback, OUT, Probe, ProbeResults, RET_PTR, RET_SIZE, c, load};
use vessel_spec_tests::{Harness, LogCapture, Source, config, headers, plugin, request, value};

fn cfg(vm_id: &str, queue: &str) -> PluginConfig {
    PluginConfig {
        vm_id: vm_id.to_owned(),
        configuration: queue.as_bytes().to_vec(),
        ..config("queues")
    }
}

/// The token logged by `queue registered name=<name> token=<t>` (the last one).
fn registered(logs: &LogCapture, name: &str) -> QueueToken {
    let prefix = format!("queue registered name={name} token=");
    let t = logs
        .with_prefix(&prefix)
        .pop()
        .unwrap_or_else(|| panic!("no registration of {name}: {:#?}", logs.lines()));
    QueueToken::new(t.parse().expect("numeric token"))
}

/// Sends one request asking `vm` to enqueue `items`; returns its effects and
/// the `x-enqueue-result` response header.
fn enqueue(vm: &mut Vm, items: &str, vm_id: Option<&str>) -> (Vec<Effect>, Option<String>) {
    let mut extra = vec![("x-enqueue", items)];
    if let Some(id) = vm_id {
        extra.push(("x-queue-vm-id", id));
    }
    let ctx = vm.create_http_context().expect("context");
    vm.on_request_headers(ctx, request("/", &extra), true)
        .expect("request");
    vm.on_response_headers(ctx, headers(&[(":status", "200")]), true)
        .expect("response");
    let result = vm
        .headers(ctx, vessel_host::MapType::HttpResponseHeaders)
        .and_then(|m| value(m, "x-enqueue-result"));
    (vm.drain_effects().collect(), result)
}

#[test]
fn register_enqueue_notify_dequeue_in_one_vm() {
    let mut h = Harness::load(Source::Guest("queues"), cfg("solo", "")).expect("starts");
    let token = registered(&h.logs, "vessel-queue");
    let (effects, result) = enqueue(&mut h.vm, "a,b,c", None);
    assert_eq!(result.as_deref(), Some("ok"));
    let ready = Effect::QueueReady {
        vm: h.vm.instance_id(),
        root: h.vm.root_context(),
        token,
    };
    // One notification per enqueue, as in Envoy.
    assert_eq!(effects, vec![ready.clone(), ready.clone(), ready]);
    assert!(h.logs.contains(&format!(
        "queue resolved vm_id= name=vessel-queue token={}",
        token.get()
    )));
    assert_eq!(h.env.queues().len(token), Some(3));

    h.vm.on_queue_ready(h.vm.root_context(), token)
        .expect("queue ready");
    let tail = h.logs.lines();
    let start = tail
        .iter()
        .position(|l| *l == format!("queue ready token={}", token.get()))
        .expect("on_queue_ready ran");
    assert_eq!(
        tail[start + 1..start + 5],
        ["dequeued a", "dequeued b", "dequeued c", "queue empty"]
    );
    assert_eq!(h.env.queues().len(token), Some(0));
}

#[test]
fn delivery_across_vms_with_the_same_vm_id() {
    // The producer starts first; the consumer registers the same queue
    // last, so it becomes the delivery target (registration overwrites).
    let mut producer = Harness::load(Source::Guest("queues"), cfg("shared", "")).expect("starts");
    let consumer_plugin = plugin(Source::Guest("queues"), cfg("shared", "")).expect("plugin");
    let mut consumer = producer.sibling(&consumer_plugin).expect("consumer starts");
    let token = registered(&producer.logs, "vessel-queue");
    assert_ne!(producer.vm.instance_id(), consumer.instance_id());

    let (effects, result) = enqueue(&mut producer.vm, "x,y", None);
    assert_eq!(result.as_deref(), Some("ok"));
    assert_eq!(effects.len(), 2);
    for e in &effects {
        assert_eq!(
            *e,
            Effect::QueueReady {
                vm: consumer.instance_id(),
                root: consumer.root_context(),
                token
            }
        );
    }
    producer.logs.clear();
    consumer
        .on_queue_ready(consumer.root_context(), token)
        .expect("delivered");
    assert_eq!(
        producer.logs.lines(),
        [
            "queue ready token=".to_owned() + &token.get().to_string(),
            "dequeued x".into(),
            "dequeued y".into(),
            "queue empty".into()
        ]
    );
}

#[test]
fn delivery_across_vm_ids_with_resolve() {
    let mut consumer =
        Harness::load(Source::Guest("queues"), cfg("consumer", "jobs")).expect("starts");
    let token = registered(&consumer.logs, "jobs");
    let producer_plugin = plugin(Source::Guest("queues"), cfg("producer", "jobs")).expect("plugin");
    let mut producer = consumer.sibling(&producer_plugin).expect("producer starts");
    // The producer registered its own ("producer", "jobs"): another queue.
    let own = registered(&consumer.logs, "jobs");
    assert_ne!(own, token);

    let (effects, result) = enqueue(&mut producer, "job1", Some("consumer"));
    assert_eq!(result.as_deref(), Some("ok"));
    assert_eq!(
        effects,
        [Effect::QueueReady {
            vm: consumer.vm.instance_id(),
            root: consumer.vm.root_context(),
            token
        }]
    );
    consumer
        .vm
        .on_queue_ready(consumer.vm.root_context(), token)
        .expect("delivered");
    assert!(consumer.logs.contains("dequeued job1"));

    let (effects, result) = enqueue(&mut producer, "lost", Some("nowhere"));
    assert!(effects.is_empty());
    assert_eq!(result.as_deref(), Some("unresolved"));
    assert!(
        consumer
            .logs
            .contains("queue resolved vm_id=nowhere name=jobs token=none")
    );
}

#[test]
fn raw_statuses_follow_envoy() {
    let mut p = Probe::new();
    let name = p.bytes(b"raw-q");
    let other = p.bytes(b"never-registered");
    let vm_id = p.bytes(b"raw-vm");
    let item = p.bytes(b"item");
    let (rp, rs, out) = (c(RET_PTR), c(RET_SIZE), c(OUT));
    let token = load(OUT);
    p.on(Callback::RequestHeaders)
        .status(
            "register",
            format!("(call $proxy_register_shared_queue {name} {out})"),
        )
        .value("register.token", load(OUT))
        .status(
            "register.again",
            format!("(call $proxy_register_shared_queue {name} {out})"),
        )
        .value("register.again.token", load(OUT))
        .status(
            "dequeue.empty",
            format!("(call $proxy_dequeue_shared_queue {token} {rp} {rs})"),
        )
        .status(
            "enqueue",
            format!("(call $proxy_enqueue_shared_queue {token} {item})"),
        )
        .status(
            "enqueue.empty_item",
            format!("(call $proxy_enqueue_shared_queue {token} (i32.const 0) (i32.const 0))"),
        )
        .status(
            "dequeue",
            format!("(call $proxy_dequeue_shared_queue {token} {rp} {rs})"),
        )
        .returned("dequeue.bytes")
        .raw(format!("(i32.store {rp} (i32.const 99))"))
        .status(
            "dequeue.second",
            format!("(call $proxy_dequeue_shared_queue {token} {rp} {rs})"),
        )
        .value("dequeue.second.ptr", load(RET_PTR))
        .value("dequeue.second.size", load(RET_SIZE))
        .status(
            "resolve.own",
            format!("(call $proxy_resolve_shared_queue (i32.const 0) (i32.const 0) {name} {out})"),
        )
        .value("resolve.own.token", load(OUT))
        .status(
            "resolve.by_vm_id",
            format!("(call $proxy_resolve_shared_queue {vm_id} {name} {out})"),
        )
        .status(
            "resolve.unknown",
            format!("(call $proxy_resolve_shared_queue (i32.const 0) (i32.const 0) {other} {out})"),
        )
        .status(
            "enqueue.unknown",
            format!("(call $proxy_enqueue_shared_queue (i32.const 999999) {item})"),
        )
        .status(
            "dequeue.unknown",
            format!("(call $proxy_dequeue_shared_queue (i32.const 999999) {rp} {rs})"),
        );
    let plugin = p
        .load(PluginConfig {
            vm_id: "raw-vm".into(),
            ..config("raw-queues")
        })
        .expect("loads");
    let mut h = Harness::new(&plugin, HostEnv::builder()).expect("starts");
    h.request_headers(request("/", &[]), true).expect("request");
    let r = ProbeResults::from_logs(&h.logs);
    let st = |s: Status| Some(s.as_u32());
    assert_eq!(r.value("register"), st(Status::Ok));
    let token = r.value("register.token").expect("token");
    assert_ne!(token, 0);
    assert_eq!(r.value("register.again"), st(Status::Ok));
    assert_eq!(
        r.value("register.again.token"),
        Some(token),
        "same name, same token"
    );
    assert_eq!(r.value("dequeue.empty"), st(Status::Empty));
    assert_eq!(r.value("enqueue"), st(Status::Ok));
    assert_eq!(r.value("enqueue.empty_item"), st(Status::Ok));
    assert_eq!(r.value("dequeue"), st(Status::Ok));
    assert_eq!(r.bytes("dequeue.bytes"), Some(&b"item"[..]));
    assert_eq!(r.value("dequeue.second"), st(Status::Ok));
    assert_eq!(r.value("dequeue.second.ptr"), Some(0), "empty item: (0, 0)");
    assert_eq!(r.value("dequeue.second.size"), Some(0));
    assert_eq!(r.value("resolve.own"), st(Status::Ok));
    assert_eq!(r.value("resolve.own.token"), Some(token));
    assert_eq!(r.value("resolve.by_vm_id"), st(Status::Ok));
    assert_eq!(r.value("resolve.unknown"), st(Status::NotFound));
    assert_eq!(r.value("enqueue.unknown"), st(Status::NotFound));
    assert_eq!(r.value("dequeue.unknown"), st(Status::NotFound));
    assert_eq!(
        h.env.queues().resolve("raw-vm", b"raw-q"),
        Some(QueueToken::new(token))
    );
}
