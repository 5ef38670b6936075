"""What running a shipped or exported model needs, without torch: the model files and their
metadata, calibration maps, decoding of head outputs, and ONNX Runtime sessions.

Everything here imports numpy, the standard library and (lazily) onnxruntime and
safetensors only. Inference (:mod:`facefuse.inference`) and training (:mod:`facefuse.train`)
both build on it; it imports neither.
"""
