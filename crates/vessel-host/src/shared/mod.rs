//! Process-wide state shared by every VM, scoped by `vm_id` as in Envoy:
//! shared data (ABI reference §11.14), shared queues (§11.15) and metrics (§9).
//! Each store sits behind an explicit `Arc` handle held by [`HostEnv`](crate::HostEnv).

pub mod data;
pub mod metrics;
pub mod queues;

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, recovering the data if a previous holder panicked. The
/// stores never leave their data half-updated across a panic point.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
