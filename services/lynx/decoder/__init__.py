"""The decoder service: onnxruntime with a KV cache and iteration-level continuous batching."""
