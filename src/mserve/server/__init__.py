"""The inference server: model manager, data plane, transports, composition root."""
