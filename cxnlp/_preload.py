"""Imported by the workers' fork server (:data:`cxnlp.processes.PRELOAD`), never by cxnlp itself: loads
the spaCy pipelines that :func:`cxnlp.processes.preload_spacy` named, so that every prepare worker forked
from the server starts with them loaded instead of loading them again (0.8-1 s a worker on a 2-core VM,
more when a GPU host starts 14 workers at once). A pipeline that fails to load here is left to the
worker, which loads it itself and reports the error as usual."""

from __future__ import annotations

import contextlib

from .processes import preload_request

_request = preload_request()
if _request is not None:
    _name, _ner = _request
    with contextlib.suppress(Exception):
        from .segment import load_spacy

        load_spacy(_name)
        if _ner:
            from .redact import common_words, load_ner

            load_ner(_name)
            common_words(_name)
