"""TensorRT engines: optimization profiles, engine keys and sidecars, the builder."""
