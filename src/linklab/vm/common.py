"""What every step of the VM leg shares: its error type and the host paths it runs from."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.prefix) / "bin"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class VMError(RuntimeError):
    """The VM leg cannot start; the message says what to install or change."""
