"""Keeping the dashboard's garbage collections cheap.

Streamlit runs a full garbage collection after every script run (``runner.postScriptGC``) and, once
Keras is imported, another through ``keras.backend.clear_session()``.  A full collection walks every
object the collector tracks: with TensorFlow and Keras loaded (any page that describes a model or
classifies a clip) that is about 450,000 objects, 0.2-0.8 s per collection on 2 shared cores, paid on
every slider move of every page (BENCHMARKS.md, "Cornell-size rehearsal").

:func:`settle_heap`, called at the end of each script run, moves the objects alive then into the
collector's permanent generation (``gc.freeze``) when many new ones have appeared *and* modules were
imported since the last time (TensorFlow and Keras on the first page that needs them, a model's kind):
later collections walk only what was made after.  Frozen objects are still freed when their last
reference goes, but a reference cycle among them would outlive its use.  Visitors' sessions are full of
cycles and import nothing, so their objects alone never trigger a freeze; only the sessions alive at one
of the few import-driven freezes (a handful per process) are pinned.
"""
from __future__ import annotations

import gc
import sys

NEW_OBJECTS = 100_000  # tracked objects made since the last freeze that trigger the next one


_modules_at_freeze = 0  # len(sys.modules) at the last freeze


def settle_heap(threshold: int = NEW_OBJECTS) -> bool:
    """Freeze the tracked objects once at least ``threshold`` of them are not frozen yet and modules
    were imported since the last freeze (after a collection, so that garbage is not kept); True when it
    froze.  Cheap otherwise: it counts only the objects not frozen."""
    global _modules_at_freeze
    if len(sys.modules) <= _modules_at_freeze or len(gc.get_objects()) < threshold:
        return False
    gc.collect()
    gc.freeze()
    _modules_at_freeze = len(sys.modules)
    return True
