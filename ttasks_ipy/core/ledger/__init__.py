"""The ledger: one SQLite file per user that keeps every task across kernel restarts.

``schema`` opens the file (private, WAL, migrated), ``store`` reads and writes
it (``Ledger``, ``Entry``), ``writer`` records a kernel's tasks from its event
bus in the background (``LedgerWriter``), ``results`` serialises the values
tasks hand over, ``detached`` starts commands that outlive the kernel and
follows them again after a restart.
"""
from __future__ import annotations

from .schema import SCHEMA_VERSION, LedgerError, NewerLedger
from .store import Entry, Ledger
from .writer import Extras, LedgerWriter

__all__ = ["SCHEMA_VERSION", "Entry", "Extras", "Ledger", "LedgerError", "LedgerWriter", "NewerLedger"]
