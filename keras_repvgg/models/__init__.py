"""Keras models: which Keras, the builder, reparameterization, equalization, saving."""
