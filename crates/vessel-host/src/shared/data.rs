//! Shared data: a process-wide key-value store namespaced by `vm_id`, with
//! Envoy's compare-and-swap rules (ABI reference §4.6, §11.14;
//! cpp-host `src/shared_data.cc`).
//!
//! * CAS values come from one global `u32` counter that starts at 1 and skips 0.
//! * `set` with cas 0 is unconditional; a non-zero cas that differs from the
//!   stored one gives `CAS_MISMATCH`; a non-zero cas for an absent key inserts.
//! * `get` of an absent key gives `NOT_FOUND`.
//! * Caps ([`SharedDataLimits`]; Envoy has none): a key over
//!   `max_key_bytes`, a value over `max_value_bytes`, or a write that would
//!   take the vm_id's keys and values past `max_bytes_per_vm_id` gives
//!   `BAD_ARGUMENT` and stores nothing. One plugin filling its namespace
//!   does not starve the others.

use std::collections::HashMap;
use std::sync::Mutex;

use vessel_abi::Status;

use super::lock;

/// Limits on the shared-data store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedDataLimits {
    /// Largest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Largest total of key and value bytes stored under one vm_id.
    pub max_bytes_per_vm_id: usize,
}

impl SharedDataLimits {
    /// Default largest key: 64 KiB.
    pub const DEFAULT_MAX_KEY_BYTES: usize = 64 << 10;
    /// Default largest value: 16 MiB.
    pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 << 20;
    /// Default total per vm_id: 256 MiB.
    pub const DEFAULT_MAX_BYTES_PER_VM_ID: usize = 256 << 20;
}

impl Default for SharedDataLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: Self::DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: Self::DEFAULT_MAX_VALUE_BYTES,
            max_bytes_per_vm_id: Self::DEFAULT_MAX_BYTES_PER_VM_ID,
        }
    }
}

/// One vm_id's entries (key → (value, cas)) and their key and value bytes.
#[derive(Debug, Default)]
struct Space {
    entries: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    spaces: HashMap<String, Space>,
    next_cas: u32,
}

impl Inner {
    fn next_cas(&mut self) -> u32 {
        self.next_cas = self.next_cas.wrapping_add(1);
        if self.next_cas == 0 {
            self.next_cas = 1;
        }
        self.next_cas
    }
}

/// The process-wide shared-data store.
#[derive(Debug, Default)]
pub struct SharedData {
    inner: Mutex<Inner>,
    limits: SharedDataLimits,
}

impl SharedData {
    /// An empty store with the given limits.
    pub fn new(limits: SharedDataLimits) -> Self {
        Self {
            inner: Mutex::default(),
            limits,
        }
    }

    /// Reads `key` in `vm_id`'s namespace: the value and its cas.
    pub fn get(&self, vm_id: &str, key: &[u8]) -> Result<(Vec<u8>, u32), Status> {
        let inner = lock(&self.inner);
        inner
            .spaces
            .get(vm_id)
            .and_then(|space| space.entries.get(key))
            .map(|(v, cas)| (v.clone(), *cas))
            .ok_or(Status::NotFound)
    }

    /// Writes `key` with Envoy's CAS rules. Over a size limit gives
    /// `BAD_ARGUMENT` (a status the Rust SDK's `set_shared_data` does not accept,
    /// so an over-limit write traps the guest rather than silently failing).
    pub fn set(&self, vm_id: &str, key: &[u8], value: &[u8], cas: u32) -> Result<(), Status> {
        if key.len() > self.limits.max_key_bytes || value.len() > self.limits.max_value_bytes {
            return Err(Status::BadArgument);
        }
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let space = inner.spaces.get(vm_id);
        let old_len = match space.and_then(|s| s.entries.get(key)) {
            Some((old, stored_cas)) => {
                if cas != 0 && cas != *stored_cas {
                    return Err(Status::CasMismatch);
                }
                Some(old.len())
            }
            None => None,
        };
        let old_entry = old_len.map_or(0, |len| key.len() + len);
        let new_bytes = space.map_or(0, |s| s.bytes) - old_entry + key.len() + value.len();
        if new_bytes > self.limits.max_bytes_per_vm_id {
            return Err(Status::BadArgument);
        }
        let new_cas = inner.next_cas();
        let space = inner.spaces.entry(vm_id.to_owned()).or_default();
        match space.entries.get_mut(key) {
            Some(slot) => {
                slot.0.clear();
                slot.0.extend_from_slice(value);
                slot.1 = new_cas;
            }
            None => {
                space
                    .entries
                    .insert(key.to_vec(), (value.to_vec(), new_cas));
            }
        }
        space.bytes = new_bytes;
        Ok(())
    }

    /// Every key in `vm_id`'s namespace (for embedders and tests).
    pub fn keys(&self, vm_id: &str) -> Vec<Vec<u8>> {
        let inner = lock(&self.inner);
        inner
            .spaces
            .get(vm_id)
            .map(|s| s.entries.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Key and value bytes stored under `vm_id`.
    pub fn bytes(&self, vm_id: &str) -> usize {
        lock(&self.inner).spaces.get(vm_id).map_or(0, |s| s.bytes)
    }

    /// Key and value bytes stored under every vm_id.
    pub fn total_bytes(&self) -> usize {
        lock(&self.inner).spaces.values().map(|s| s.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_rules_follow_envoy() {
        let d = SharedData::default();
        assert_eq!(d.get("vm", b"k"), Err(Status::NotFound));
        // A non-zero cas for an absent key inserts.
        d.set("vm", b"k", b"1", 77).expect("insert");
        let (v, cas) = d.get("vm", b"k").expect("get");
        assert_eq!((v.as_slice(), cas), (&b"1"[..], 1));
        assert_eq!(d.set("vm", b"k", b"2", cas + 5), Err(Status::CasMismatch));
        d.set("vm", b"k", b"2", cas).expect("cas ok");
        let (v, cas2) = d.get("vm", b"k").expect("get");
        assert_eq!(v, b"2");
        assert_ne!(cas2, cas);
        d.set("vm", b"k", b"3", 0).expect("unconditional");
        // Namespaces are separate.
        assert_eq!(d.get("other", b"k"), Err(Status::NotFound));
    }

    #[test]
    fn limits_are_enforced() {
        let d = SharedData::new(SharedDataLimits {
            max_key_bytes: 4,
            max_value_bytes: 4,
            max_bytes_per_vm_id: 10,
        });
        assert_eq!(d.set("vm", b"12345", b"", 0), Err(Status::BadArgument));
        assert_eq!(d.set("vm", b"k", b"12345", 0), Err(Status::BadArgument));
        d.set("vm", b"a", b"1234", 0).expect("5 bytes");
        d.set("vm", b"b", b"1234", 0).expect("10 bytes");
        assert_eq!(d.set("vm", b"c", b"", 0), Err(Status::BadArgument));
        // Shrinking a value frees room.
        d.set("vm", b"a", b"", 0).expect("shrink");
        assert_eq!(d.total_bytes(), 6);
        d.set("vm", b"c", b"123", 0).expect("fits again");
        // The cap is per vm_id: another namespace has its own room.
        d.set("other", b"a", b"1234", 0).expect("own budget");
        d.set("other", b"b", b"1234", 0).expect("own budget");
        assert_eq!(d.bytes("vm"), 10);
        assert_eq!(d.bytes("other"), 10);
        assert_eq!(d.total_bytes(), 20);
    }
}
