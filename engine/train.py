"""``python -m engine.train``: the documented command's entry point only; the training
code is :mod:`engine.net.train` (import it from there)."""
from .net.train import main

if __name__ == "__main__":
    main()
