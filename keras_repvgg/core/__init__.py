"""The numpy core: the variants as data, a block's layout, fusion, a model's description, the
eval transform and the other facts every layer reads. No TensorFlow, Keras or torch."""
