;; Uses a shared memory (threads), which is not enabled.
(module
  (memory (export "memory") 1 1 shared)
  (func (export "run")))
