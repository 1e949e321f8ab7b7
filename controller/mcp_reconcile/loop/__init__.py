"""The reconcile loop: clock, de-duplicating work queue, backoff bookkeeping, manifest watcher, controller."""
