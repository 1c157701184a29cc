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

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use vessel_abi::Status;

use super::lock;
use crate::ids::{ContextId, QueueToken, VmInstanceId};

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
    owner: QueueOwner,
}

#[derive(Debug, Default)]
struct Inner {
    by_name: HashMap<(String, Vec<u8>), QueueToken>,
    queues: HashMap<QueueToken, Queue>,
    next_token: u32,
}

/// The process-wide queue registry.
#[derive(Debug)]
pub struct SharedQueues {
    inner: Mutex<Inner>,
    max_len: usize,
}

impl Default for SharedQueues {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_LEN)
    }
}

impl SharedQueues {
    /// Default largest number of items waiting in one queue.
    pub const DEFAULT_MAX_LEN: usize = 10_000;

    /// An empty registry whose queues hold at most `max_len` items each.
    pub fn new(max_len: usize) -> Self {
        Self {
            inner: Mutex::default(),
            max_len,
        }
    }

    /// `proxy_register_shared_queue`: creates or reopens `(vm_id, name)` and
    /// makes `owner` its delivery target.
    pub fn register(&self, vm_id: &str, name: &[u8], owner: QueueOwner) -> QueueToken {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let key = (vm_id.to_owned(), name.to_vec());
        if let Some(token) = inner.by_name.get(&key).copied() {
            if let Some(q) = inner.queues.get_mut(&token) {
                q.owner = owner;
            }
            return token;
        }
        inner.next_token = inner.next_token.wrapping_add(1).max(1);
        let token = QueueToken(inner.next_token);
        inner.by_name.insert(key, token);
        inner.queues.insert(
            token,
            Queue {
                items: VecDeque::new(),
                owner,
            },
        );
        token
    }

    /// `proxy_resolve_shared_queue`.
    pub fn resolve(&self, vm_id: &str, name: &[u8]) -> Option<QueueToken> {
        lock(&self.inner)
            .by_name
            .get(&(vm_id.to_owned(), name.to_vec()))
            .copied()
    }

    /// `proxy_enqueue_shared_queue`: appends and returns the VM to notify.
    /// Unknown token → `NOT_FOUND`; a full queue → `INTERNAL_FAILURE`.
    pub fn enqueue(&self, token: QueueToken, value: &[u8]) -> Result<QueueOwner, Status> {
        let mut inner = lock(&self.inner);
        let q = inner.queues.get_mut(&token).ok_or(Status::NotFound)?;
        if q.items.len() >= self.max_len {
            return Err(Status::InternalFailure);
        }
        q.items.push_back(value.to_vec());
        Ok(q.owner)
    }

    /// `proxy_dequeue_shared_queue`: unknown → `NOT_FOUND`, nothing queued → `EMPTY`.
    pub fn dequeue(&self, token: QueueToken) -> Result<Vec<u8>, Status> {
        let mut inner = lock(&self.inner);
        let q = inner.queues.get_mut(&token).ok_or(Status::NotFound)?;
        q.items.pop_front().ok_or(Status::Empty)
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
        let t = q.register("vm", b"q", A);
        assert_eq!(q.resolve("vm", b"q"), Some(t));
        assert_eq!(q.resolve("other", b"q"), None);
        assert_eq!(q.dequeue(t), Err(Status::Empty));
        assert_eq!(q.enqueue(t, b"1"), Ok(A));
        // Re-registering from another VM keeps the token and moves the target.
        assert_eq!(q.register("vm", b"q", B), t);
        assert_eq!(q.enqueue(t, b"2"), Ok(B));
        assert_eq!(q.dequeue(t).as_deref(), Ok(&b"1"[..]));
        assert_eq!(q.dequeue(t).as_deref(), Ok(&b"2"[..]));
        assert_eq!(q.dequeue(QueueToken(99)), Err(Status::NotFound));
        assert_eq!(q.enqueue(QueueToken(99), b""), Err(Status::NotFound));
    }

    #[test]
    fn full_queue_refuses() {
        let q = SharedQueues::new(1);
        let t = q.register("vm", b"q", A);
        q.enqueue(t, b"1").expect("room");
        assert_eq!(q.enqueue(t, b"2"), Err(Status::InternalFailure));
        assert_eq!(q.len(t), Some(1));
    }
}
