;; Has a memory but does not export it.
(module
  (memory 1)
  (func (export "run")))
