"""Errors that reach the operator.

Borg style: each class's docstring is its message template (formatted with the
arguments it was raised with) and each class carries the exit code the CLI
returns for it. The CLI prints ``dockd: error: <message>`` on one line and
exits with ``exit_code``; it never prints a traceback for these.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # a check or job failed
EXIT_USAGE = 2  # usage or configuration error


class DockdError(Exception):
    """{}"""

    exit_code = EXIT_FAILED

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.args = args

    def message(self) -> str:
        doc = (type(self).__doc__ or "{}").strip().splitlines()[0]
        try:
            msg = doc.format(*self.args)
        except (IndexError, KeyError):
            msg = " ".join(str(a) for a in self.args) or doc
        # Always one short printable line: names and values from config files, cameras or the
        # command line may hold line breaks, terminal escapes, or be megabytes long.
        from dockd.core.textsafe import one_line

        return one_line(msg)

    def __str__(self) -> str:
        return self.message()


class ConfigError(DockdError):
    """{}: {}"""

    exit_code = EXIT_USAGE


class UsageError(DockdError):
    """{}"""

    exit_code = EXIT_USAGE


class IllegalTransition(DockdError):
    """clip {}: illegal transition {} --{}-->"""


class NotFound(DockdError):
    """{} not found: {}"""


class QueueLocked(DockdError):
    """data dir {} is in use by another dockd process (pid {}); stop it first"""


class SchemaTooNew(DockdError):
    """queue database {} has schema version {}, newer than this dockd supports ({}); upgrade dockd"""


class StorageNotConfigured(DockdError):
    """no [storage] configured in {}; nothing can be uploaded or verified remotely"""


class StorageError(DockdError):
    """storage: {}"""


class ManifestInvalid(DockdError):
    """manifest invalid: {}"""


class KeyError_(DockdError):
    """station key: {}"""


class TrustInvalid(DockdError):
    """trust: {}"""


class QueueUnreadable(DockdError):
    """queue database {} cannot be used: {}"""


class NotAQueue(DockdError):
    """{} is not a dockd queue database ({}); check [station] data_dir"""

    exit_code = EXIT_USAGE
