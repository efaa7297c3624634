"""The ``dockd`` command: argument parsing, output rendering, verification and doctor reports.

The top layer: nothing imports it except ``python -m dockd`` and the console script.
"""
