//! Shared data: a process-wide key-value store namespaced by `vm_id`, with
//! Envoy's compare-and-swap rules (ABI reference §4.6, §11.14;
//! cpp-host `src/shared_data.cc`).
//!
//! * CAS values come from one global `u32` counter that starts at 1 and skips 0.
//! * `set` with cas 0 is unconditional; a non-zero cas that differs from the
//!   stored one gives `CAS_MISMATCH`; a non-zero cas for an absent key inserts.
//! * `get` of an absent key gives `NOT_FOUND`.

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
    /// Largest total of key and value bytes across all vm_ids.
    pub max_total_bytes: usize,
}

impl SharedDataLimits {
    /// Default largest key: 64 KiB.
    pub const DEFAULT_MAX_KEY_BYTES: usize = 64 << 10;
    /// Default largest value: 16 MiB.
    pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 << 20;
    /// Default total: 256 MiB.
    pub const DEFAULT_MAX_TOTAL_BYTES: usize = 256 << 20;
}

impl Default for SharedDataLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: Self::DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: Self::DEFAULT_MAX_VALUE_BYTES,
            max_total_bytes: Self::DEFAULT_MAX_TOTAL_BYTES,
        }
    }
}

/// One vm_id's entries: key → (value, cas).
type Space = HashMap<Vec<u8>, (Vec<u8>, u32)>;

#[derive(Debug, Default)]
struct Inner {
    spaces: HashMap<String, Space>,
    next_cas: u32,
    total_bytes: usize,
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
            .and_then(|space| space.get(key))
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
        let old_len = match inner.spaces.get(vm_id).and_then(|s| s.get(key)) {
            Some((old, stored_cas)) => {
                if cas != 0 && cas != *stored_cas {
                    return Err(Status::CasMismatch);
                }
                Some(old.len())
            }
            None => None,
        };
        let old_entry = old_len.map_or(0, |len| key.len() + len);
        let new_total = inner.total_bytes - old_entry + key.len() + value.len();
        if new_total > self.limits.max_total_bytes {
            return Err(Status::BadArgument);
        }
        let new_cas = inner.next_cas();
        let space = inner.spaces.entry(vm_id.to_owned()).or_default();
        match space.get_mut(key) {
            Some(slot) => {
                slot.0.clear();
                slot.0.extend_from_slice(value);
                slot.1 = new_cas;
            }
            None => {
                space.insert(key.to_vec(), (value.to_vec(), new_cas));
            }
        }
        inner.total_bytes = new_total;
        Ok(())
    }

    /// Every key in `vm_id`'s namespace (for embedders and tests).
    pub fn keys(&self, vm_id: &str) -> Vec<Vec<u8>> {
        let inner = lock(&self.inner);
        inner
            .spaces
            .get(vm_id)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Total key and value bytes stored.
    pub fn total_bytes(&self) -> usize {
        lock(&self.inner).total_bytes
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
            max_total_bytes: 10,
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
    }
}
