"""TFLite export for mobile GPU delegates (installed as keras_repvgg.tflite). Not built yet."""
