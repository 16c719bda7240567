"""A learned two-stream (Y / CbCr) image codec shipped as an inference engine."""
__version__ = "0.1.0"
