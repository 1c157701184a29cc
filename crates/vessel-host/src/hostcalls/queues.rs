//! Shared queues (ABI reference §4.6, §11.15; registry in
//! [`SharedQueues`](crate::shared::queues::SharedQueues)).
//!
//! * `proxy_register_shared_queue`: OK; the caller's root context in
//!   this VM becomes the queue's delivery target. A name or a new queue
//!   past [`SharedQueueLimits`](crate::shared::queues::SharedQueueLimits)
//!   fails the VM with [`LimitExceeded::SharedQueueName`](crate::LimitExceeded::SharedQueueName)
//!   / [`LimitExceeded::SharedQueues`](crate::LimitExceeded::SharedQueues)
//!   (the Rust SDK accepts only OK here, §11.20).
//! * `proxy_resolve_shared_queue`: OK; unknown → NOT_FOUND; an empty vm_id
//!   means the caller's own.
//! * `proxy_enqueue_shared_queue`: OK, and emits
//!   [`Effect::QueueReady`] for the registering
//!   VM; unknown → NOT_FOUND; a full queue (items or bytes, see
//!   [`SharedQueues`](crate::shared::queues::SharedQueues)), or no room for
//!   the notification in [`Limits::max_effect_bytes`](crate::Limits::max_effect_bytes)
//!   → INTERNAL_FAILURE, and nothing is queued.
//! * `proxy_dequeue_shared_queue`: OK; unknown → NOT_FOUND; empty → EMPTY.

use wasmtime::Caller;

use super::{Registry, hostcall};
use crate::effects::Effect;
use crate::ids::QueueToken;
use crate::memory::{Fail, HostResult, range, read, return_bytes, return_u32, u, with_mem};
use crate::shared::queues::QueueOwner;
use crate::state::HostState;

pub(crate) fn add_to_linker(reg: &mut Registry) -> wasmtime::Result<()> {
    hostcall!(reg, "env", "proxy_register_shared_queue", register_shared_queue, name: i32, name_len: i32, ret: i32);
    hostcall!(reg, "env", "proxy_resolve_shared_queue", resolve_shared_queue, vm_id: i32, vm_id_len: i32, name: i32, name_len: i32, ret: i32);
    hostcall!(reg, "env", "proxy_enqueue_shared_queue", enqueue_shared_queue, token: i32, val: i32, val_len: i32);
    hostcall!(reg, "env", "proxy_dequeue_shared_queue", dequeue_shared_queue, token: i32, ret_ptr: i32, ret_size: i32);
    Ok(())
}

fn register_shared_queue(
    caller: &mut Caller<'_, HostState>,
    name: i32,
    name_len: i32,
    ret: i32,
) -> HostResult {
    let token = with_mem(caller, |mem, state| {
        range(mem.len(), ret, 4)?;
        let name = read(mem, name, name_len)?;
        let owner = QueueOwner {
            vm: state.instance,
            root: state.target_root(),
        };
        state
            .env
            .inner
            .queues
            .register(&state.plugin.config.vm_id, name, owner)
            .map_err(Fail::from)
    })??;
    return_u32(caller, ret, token.0)
}

fn resolve_shared_queue(
    caller: &mut Caller<'_, HostState>,
    vm_id: i32,
    vm_id_len: i32,
    name: i32,
    name_len: i32,
    ret: i32,
) -> HostResult {
    let token = with_mem(caller, |mem, state| {
        range(mem.len(), ret, 4)?;
        let vm_id = read(mem, vm_id, vm_id_len)?;
        let name = read(mem, name, name_len)?;
        let vm_id = if vm_id.is_empty() {
            state.plugin.config.vm_id.clone()
        } else {
            String::from_utf8_lossy(vm_id).into_owned()
        };
        state
            .env
            .inner
            .queues
            .resolve(&vm_id, name)
            .ok_or(vessel_abi::Status::NotFound)
    })??;
    return_u32(caller, ret, token.0)
}

fn enqueue_shared_queue(
    caller: &mut Caller<'_, HostState>,
    token: i32,
    val: i32,
    val_len: i32,
) -> HostResult {
    with_mem(caller, |mem, state| {
        let val = read(mem, val, val_len)?;
        let token = QueueToken(u(token));
        // Room for the notification first, so a refusal queues nothing.
        let notice = std::mem::size_of::<Effect>();
        if let Err(limit) = state.effect_room(notice) {
            return Err(state.refuse(&limit, vessel_abi::Status::InternalFailure));
        }
        let owner = state.env.inner.queues.enqueue(token, val)?;
        state
            .queue_effect(Effect::QueueReady {
                vm: owner.vm,
                root: owner.root,
                token,
            })
            .map_err(|limit| state.refuse(&limit, vessel_abi::Status::InternalFailure))
    })??;
    Ok(())
}

fn dequeue_shared_queue(
    caller: &mut Caller<'_, HostState>,
    token: i32,
    ret_ptr: i32,
    ret_size: i32,
) -> HostResult {
    let item = caller
        .data()
        .env
        .inner
        .queues
        .dequeue(QueueToken(u(token)))?;
    return_bytes(caller, ret_ptr, ret_size, &item)
}
