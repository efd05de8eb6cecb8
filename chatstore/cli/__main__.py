"""``python -m chatstore.cli``: the ``chatstore`` command without its console script."""

from . import main

if __name__ == "__main__":
    raise SystemExit(main())
