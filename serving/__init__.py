"""HTTP service and the torch-free ONNX edge runtime."""
