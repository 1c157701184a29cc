;; missing_memory.wat — a proxy-wasm module whose linear memory is NOT
;; exported (it has one, internally; there is no "memory" export).
;;
;; What it does
;;   Marker 0.2.1, allocator exported as both names, the usual callbacks.
;;   proxy_on_request_headers calls proxy_log with a pointer into its
;;   (unexported) memory: "missing_memory: on_request_headers".
;;
;; What the host is expected to do
;;   Refuse to load it: without an exported memory the host cannot read or
;;   write any guest pointer (ABI reference §5). The error should name the
;;   missing "memory" export. No callback may run.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (memory 1)
  (data (i32.const 16) "missing_memory: on_request_headers")
  (global $heap (mut i32) (i32.const 1024))
  (func $alloc (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  (export "proxy_on_memory_allocate" (func $alloc))
  (export "malloc" (func $alloc))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $proxy_log (i32.const 2) (i32.const 16) (i32.const 34)))
    (i32.const 0))
)
