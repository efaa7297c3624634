"""``python -m dockd``: the same as the ``dockd`` console script."""

from .cli import entry

if __name__ == "__main__":
    entry()
