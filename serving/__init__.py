"""The ONNX side: the torch-free edge runtime, INT8 quantization and the BentoML HTTP service.
Imports ``yolo4.core`` only (onnxruntime, never torch)."""
