;; Imports a host function the node does not offer: app.deploy must refuse it by name.
(module
  (import "cmesh" "spawn_process" (func $spawn (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "run")
    (call $spawn (i32.const 0) (i32.const 0))))
