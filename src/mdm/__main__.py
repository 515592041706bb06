"""``python -m mdm``: the same entry point as the ``mdm`` console script."""

from mdm.cli import main

if __name__ == "__main__":
    main()
