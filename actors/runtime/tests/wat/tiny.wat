;; The smallest useful app: what a trivial view costs.
(module
  (import "cmesh" "input_len" (func $input_len (result i32)))
  (import "cmesh" "input_read" (func $input_read (param i32)))
  (import "cmesh" "output" (func $output (param i32 i32)))
  (memory (export "memory") 17)
  (global (export "__data_end") i32 (i32.const 1048576))
  (global (export "__heap_base") i32 (i32.const 1048576))
  (data (i32.const 1048576) "ok")
  (func (export "echo")
    (call $input_read (i32.const 0))
    (call $output (i32.const 0) (call $input_len)))
  (func (export "noop")))
