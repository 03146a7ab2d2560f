"""``python -m medbench`` is the same as the ``medbench`` command."""

from medbench.cli import main

if __name__ == "__main__":
    main()
