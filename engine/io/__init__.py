"""The engine's input and output below the codec: pixels in and out (``imageio``: images,
paths and input policy; ``color``: RGB <-> YCbCr; ``planes``: pixels <-> padded planes;
``tiling``: tiled network runs on those planes) and atomic file writes (``atomic``)."""
