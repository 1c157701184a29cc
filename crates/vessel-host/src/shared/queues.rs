//! Shared queues: process-wide, keyed by (vm_id, name), with Envoy's
//! semantics (ABI reference §4.6, §11.15; cpp-host `src/shared_queue.cc`).
//!
//! * Tokens are one global `u32` counter starting at 1.
//! * `register` creates or reopens a queue and **overwrites** its delivery
//!   target with the registering VM's root context.
//! * Each `enqueue` asks for one `proxy_on_queue_ready(root, token)` in the VM
//!   that registered the queue. The core is sans-IO, so the enqueuing VM hands
//!   out an [`Effect::QueueReady`](crate::Effect::QueueReady) naming that VM and
//!   the embedder delivers it.
//!
//! The registry is bounded ([`SharedQueueLimits`]): items and bytes waiting
//! in one queue (`enqueue` past either → `INTERNAL_FAILURE`, as a full
//! queue), queues per vm_id and the length of a queue name (`register` past
//! either → a [`LimitExceeded`] that the hostcall turns into a VM failure).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use vessel_abi::Status;

use super::lock;
use crate::ids::{ContextId, QueueToken, VmInstanceId};
use crate::limits::LimitExceeded;

/// Bounds of the shared-queue registry (process-wide, like the queues).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedQueueLimits {
    /// Items waiting in one queue. Default: [`SharedQueues::DEFAULT_MAX_LEN`].
    pub max_len: usize,
    /// Bytes of the items waiting in one queue. Default:
    /// [`SharedQueueLimits::DEFAULT_MAX_BYTES`].
    pub max_bytes: usize,
    /// Queues one vm_id may register. Default:
    /// [`SharedQueueLimits::DEFAULT_MAX_QUEUES_PER_VM_ID`].
    pub max_queues_per_vm_id: usize,
    /// Longest queue name, in bytes. Default:
    /// [`SharedQueueLimits::DEFAULT_MAX_NAME_BYTES`].
    pub max_name_bytes: usize,
}

impl SharedQueueLimits {
    /// 64 MiB waiting in one queue.
    pub const DEFAULT_MAX_BYTES: usize = 64 << 20;
    /// 10,000 queues per vm_id.
    pub const DEFAULT_MAX_QUEUES_PER_VM_ID: usize = 10_000;
    /// 64 KiB per queue name (as a shared-data key).
    pub const DEFAULT_MAX_NAME_BYTES: usize = 64 << 10;
}

impl Default for SharedQueueLimits {
    fn default() -> Self {
        Self {
            max_len: SharedQueues::DEFAULT_MAX_LEN,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_queues_per_vm_id: Self::DEFAULT_MAX_QUEUES_PER_VM_ID,
            max_name_bytes: Self::DEFAULT_MAX_NAME_BYTES,
        }
    }
}

/// The VM and root context that receive a queue's notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueOwner {
    /// The VM instance that registered the queue.
    pub vm: VmInstanceId,
    /// Its root context.
    pub root: ContextId,
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<Vec<u8>>,
    /// Bytes of `items`.
    bytes: usize,
    owner: QueueOwner,
}

#[derive(Debug, Default)]
struct Inner {
    by_name: HashMap<(String, Vec<u8>), QueueToken>,
    queues: HashMap<QueueToken, Queue>,
    /// Queues registered per vm_id.
    per_vm_id: HashMap<String, usize>,
    next_token: u32,
}

/// The process-wide queue registry.
#[derive(Debug)]
pub struct SharedQueues {
    inner: Mutex<Inner>,
    limits: SharedQueueLimits,
}

impl Default for SharedQueues {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_LEN)
    }
}

impl SharedQueues {
    /// Default largest number of items waiting in one queue.
    pub const DEFAULT_MAX_LEN: usize = 10_000;

    /// An empty registry whose queues hold at most `max_len` items each
    /// (and the other [`SharedQueueLimits`] defaults).
    pub fn new(max_len: usize) -> Self {
        Self::with_limits(SharedQueueLimits {
            max_len,
            ..SharedQueueLimits::default()
        })
    }

    /// An empty registry with these limits.
    pub fn with_limits(limits: SharedQueueLimits) -> Self {
        Self {
            inner: Mutex::default(),
            limits,
        }
    }

    /// The registry's limits.
    pub fn limits(&self) -> SharedQueueLimits {
        self.limits
    }

    /// `proxy_register_shared_queue`: creates or reopens `(vm_id, name)` and
    /// makes `owner` its delivery target. A name longer than
    /// [`SharedQueueLimits::max_name_bytes`], or a new queue past
    /// [`SharedQueueLimits::max_queues_per_vm_id`], is refused.
    pub fn register(
        &self,
        vm_id: &str,
        name: &[u8],
        owner: QueueOwner,
    ) -> Result<QueueToken, LimitExceeded> {
        if name.len() > self.limits.max_name_bytes {
            return Err(LimitExceeded::SharedQueueName {
                limit_bytes: self.limits.max_name_bytes,
                requested_bytes: name.len(),
            });
        }
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let key = (vm_id.to_owned(), name.to_vec());
        if let Some(token) = inner.by_name.get(&key).copied() {
            if let Some(q) = inner.queues.get_mut(&token) {
                q.owner = owner;
            }
            return Ok(token);
        }
        let count = inner.per_vm_id.entry(vm_id.to_owned()).or_default();
        if *count >= self.limits.max_queues_per_vm_id {
            return Err(LimitExceeded::SharedQueues {
                limit: self.limits.max_queues_per_vm_id,
            });
        }
        *count += 1;
        inner.next_token = inner.next_token.wrapping_add(1).max(1);
        let token = QueueToken(inner.next_token);
        inner.by_name.insert(key, token);
        inner.queues.insert(
            token,
            Queue {
                items: VecDeque::new(),
                bytes: 0,
                owner,
            },
        );
        Ok(token)
    }

    /// `proxy_resolve_shared_queue`.
    pub fn resolve(&self, vm_id: &str, name: &[u8]) -> Option<QueueToken> {
        if name.len() > self.limits.max_name_bytes {
            return None;
        }
        lock(&self.inner)
            .by_name
            .get(&(vm_id.to_owned(), name.to_vec()))
            .copied()
    }

    /// `proxy_enqueue_shared_queue`: appends and returns the VM to notify.
    /// Unknown token → `NOT_FOUND`; a full queue (past
    /// [`SharedQueueLimits::max_len`] items or
    /// [`SharedQueueLimits::max_bytes`] bytes) → `INTERNAL_FAILURE`.
    pub fn enqueue(&self, token: QueueToken, value: &[u8]) -> Result<QueueOwner, Status> {
        let mut inner = lock(&self.inner);
        let q = inner.queues.get_mut(&token).ok_or(Status::NotFound)?;
        let bytes = q.bytes.saturating_add(value.len());
        if q.items.len() >= self.limits.max_len || bytes > self.limits.max_bytes {
            return Err(Status::InternalFailure);
        }
        q.items.push_back(value.to_vec());
        q.bytes = bytes;
        Ok(q.owner)
    }

    /// `proxy_dequeue_shared_queue`: unknown → `NOT_FOUND`, nothing queued → `EMPTY`.
    pub fn dequeue(&self, token: QueueToken) -> Result<Vec<u8>, Status> {
        let mut inner = lock(&self.inner);
        let q = inner.queues.get_mut(&token).ok_or(Status::NotFound)?;
        let item = q.items.pop_front().ok_or(Status::Empty)?;
        q.bytes = q.bytes.saturating_sub(item.len());
        Ok(item)
    }

    /// Number of items waiting in `token`'s queue.
    pub fn len(&self, token: QueueToken) -> Option<usize> {
        lock(&self.inner).queues.get(&token).map(|q| q.items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: QueueOwner = QueueOwner {
        vm: VmInstanceId(1),
        root: ContextId(1),
    };
    const B: QueueOwner = QueueOwner {
        vm: VmInstanceId(2),
        root: ContextId(1),
    };

    #[test]
    fn register_resolve_enqueue_dequeue() {
        let q = SharedQueues::default();
        let t = q.register("vm", b"q", A).expect("registers");
        assert_eq!(q.resolve("vm", b"q"), Some(t));
        assert_eq!(q.resolve("other", b"q"), None);
        assert_eq!(q.dequeue(t), Err(Status::Empty));
        assert_eq!(q.enqueue(t, b"1"), Ok(A));
        // Re-registering from another VM keeps the token and moves the target.
        assert_eq!(q.register("vm", b"q", B), Ok(t));
        assert_eq!(q.enqueue(t, b"2"), Ok(B));
        assert_eq!(q.dequeue(t).as_deref(), Ok(&b"1"[..]));
        assert_eq!(q.dequeue(t).as_deref(), Ok(&b"2"[..]));
        assert_eq!(q.dequeue(QueueToken(99)), Err(Status::NotFound));
        assert_eq!(q.enqueue(QueueToken(99), b""), Err(Status::NotFound));
    }

    #[test]
    fn full_queue_refuses() {
        let q = SharedQueues::new(1);
        let t = q.register("vm", b"q", A).expect("registers");
        q.enqueue(t, b"1").expect("room");
        assert_eq!(q.enqueue(t, b"2"), Err(Status::InternalFailure));
        assert_eq!(q.len(t), Some(1));
    }

    #[test]
    fn bytes_queues_and_names_are_bounded() {
        let q = SharedQueues::with_limits(SharedQueueLimits {
            max_len: 100,
            max_bytes: 4,
            max_queues_per_vm_id: 2,
            max_name_bytes: 3,
        });
        let t = q.register("vm", b"q", A).expect("registers");
        q.enqueue(t, b"123").expect("3 bytes");
        assert_eq!(q.enqueue(t, b"45"), Err(Status::InternalFailure));
        q.enqueue(t, b"4").expect("4 bytes");
        assert_eq!(q.dequeue(t).as_deref(), Ok(&b"123"[..]));
        q.enqueue(t, b"567").expect("room again");
        assert_eq!(
            q.register("vm", b"long", A),
            Err(LimitExceeded::SharedQueueName {
                limit_bytes: 3,
                requested_bytes: 4
            })
        );
        assert_eq!(q.resolve("vm", b"long"), None);
        q.register("vm", b"q2", A).expect("second queue");
        assert_eq!(
            q.register("vm", b"q", B),
            Ok(t),
            "reopening is no new queue"
        );
        assert_eq!(
            q.register("vm", b"q3", A),
            Err(LimitExceeded::SharedQueues { limit: 2 })
        );
        q.register("other", b"q3", A).expect("another vm_id");
    }
}
