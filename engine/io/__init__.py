"""The engine's input and output below the codec: atomic file writes."""
