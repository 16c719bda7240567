"""``python -m engine.ship``: the documented command's entry point only; the rate ladder
and tables are :mod:`engine.net.ship` (import it from there)."""
from .net.ship import main

if __name__ == "__main__":
    main()
