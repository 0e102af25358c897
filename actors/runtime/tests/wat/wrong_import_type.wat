;; Imports a host function with the wrong type (input_len returns i32).
(module
  (import "cmesh" "input_len" (func (result i64)))
  (memory (export "memory") 1)
  (func (export "run")))
