"""Exports for servers (the SavedModel); the TFLite export for phones is `keras_repvgg.tflite`."""
