"""``python -m dockd``: the same as the ``dockd`` console script."""

from dockd.cli.main import entry

if __name__ == "__main__":
    entry()
