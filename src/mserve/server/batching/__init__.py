"""Dynamic batching: the policy (limits and when a batch leaves), the merge (pure stack and
split) and the batcher (the queue and its clock, on the event loop)."""
