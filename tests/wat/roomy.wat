;; An app that declares 17 pages (1.06 MiB) of memory and does nothing with them, for
;; tests/hostile_apps.rs: a node restarted with a 1 MiB memory limit can no longer load it.
(module
  (import "cmesh" "output" (func $output (param i32 i32)))

  (memory (export "memory") 17)
  (data (i32.const 0) "null")

  (func (export "get")
    (call $output (i32.const 0) (i32.const 4)))

  (func (export "set")
    (call $output (i32.const 0) (i32.const 4))))
