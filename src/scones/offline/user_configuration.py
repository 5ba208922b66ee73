"""Keep the user's AWS configuration out of the offline stack's process while it runs.

The stack's own clients never read it (``client.offline_session``), and its Lambda
workers get an environment of their own. moto, though, makes clients from the process's
environment: one as it is imported, and one per task its Step Functions interpreter
runs. A profile that does not exist on this machine (``AWS_PROFILE``), a retry mode or an
attempt count botocore cannot use (``AWS_RETRY_MODE=bogus``, ``AWS_MAX_ATTEMPTS=abc``) or
an unreadable config file failed an offline run that reaches no AWS at all, or left its
executions hanging until the run was stopped. So while a stack runs, every variable
botocore reads is removed from the process's environment, its config and credentials
files are ``os.devnull``, and the default region is the stack's; stopping the stack puts
back what the user had.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from botocore.configprovider import BOTOCORE_DEFAUT_SESSION_VARIABLES

# Service endpoints named in the environment (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE>).
_ENDPOINT_PREFIX = "AWS_ENDPOINT_URL"


def botocore_variables() -> frozenset[str]:
    """The environment variables botocore reads a setting from."""
    names: set[str] = set()
    for _, env_names, _, _ in BOTOCORE_DEFAUT_SESSION_VARIABLES.values():
        if isinstance(env_names, str):
            names.add(env_names)
        elif env_names:
            names.update(env_names)
    return frozenset(names)


class HiddenUserConfiguration:
    """The user's AWS settings, taken out of ``os.environ`` by :meth:`hide` and put back
    by :meth:`restore` (each at most once)."""

    def __init__(self, region: str) -> None:
        self._region = region
        self._saved: dict[str, str | None] | None = None
        self._lock = threading.Lock()

    def hide(self) -> None:
        with self._lock:
            if self._saved is not None:
                return
            names = botocore_variables() | {
                name for name in os.environ if name.startswith(_ENDPOINT_PREFIX)
            }
            emulator = {
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_DEFAULT_REGION": self._region,
            }
            self._saved = {name: os.environ.get(name) for name in names | emulator.keys()}
            for name in names - emulator.keys():
                os.environ.pop(name, None)
            os.environ.update(emulator)

    def restore(self) -> None:
        with self._lock:
            saved, self._saved = self._saved, None
            for name, value in (saved or {}).items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@contextlib.contextmanager
def hidden_user_configuration(region: str) -> Iterator[None]:
    """The user's AWS settings hidden for the block: for importing moto, which makes a
    client session at import."""
    hidden = HiddenUserConfiguration(region)
    hidden.hide()
    try:
        yield
    finally:
        hidden.restore()
