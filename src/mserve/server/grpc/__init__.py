"""The Open Inference Protocol V2 over gRPC, over the same data plane as HTTP."""
