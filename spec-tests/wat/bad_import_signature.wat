;; bad_import_signature.wat — imports env.proxy_log with the WRONG
;; signature: (i32, i32) -> i32 instead of (i32, i32, i32) -> i32.
;;
;; What it does
;;   Otherwise a normal 0.2.1 module (memory, allocator, callbacks);
;;   proxy_on_request_headers calls the mistyped proxy_log(ptr, len).
;;
;; What the host is expected to do
;;   Refuse to instantiate it (link error: incompatible import type for
;;   env.proxy_log), without crashing; the error should name the import.
;;   No callback may run.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "bad_import_signature: on_request_headers")
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
    (drop (call $proxy_log (i32.const 16) (i32.const 40)))
    (i32.const 0))
)
