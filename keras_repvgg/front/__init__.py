"""The front door: the Keras-applications functions, predict, the command line, Apache Beam,
the phone export job and loading any model file."""
