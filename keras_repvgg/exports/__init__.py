"""Exports for servers (the SavedModel), ONNX Runtime, OpenVINO and KerasHub presets; the
TFLite export for phones is `keras_repvgg.tflite`."""
