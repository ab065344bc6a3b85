"""Exports for servers (the SavedModel) and for ONNX Runtime; the TFLite export for phones is `keras_repvgg.tflite`."""
