"""The process-wide stop request: set by the command line's SIGINT/SIGTERM handler (cli.py), read by the
frame loops between items.

The handler also raises KeyboardInterrupt where the main thread is, which is how a run stops at once; this
event is the record that does not depend on that exception surviving. A KeyboardInterrupt raised where
Python swallows it (a ``__del__``, a C callback) was seen to lose a SIGTERM: the run went on to its end and
exited 0. The loops check the event at every frame and stop as the exception would have."""

from __future__ import annotations

import threading

REQUESTED = threading.Event()
