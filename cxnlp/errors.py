"""The error catalog: every error cxnlp raises has a code, says what went wrong, where, and how to fix it.

Messages are templates filled with keyword arguments, in the manner of spaCy's ``Errors`` catalog::

    raise InputError(Errors.E101, path="reviews.csv", candidates="review, body")
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class Errors:
    # Usage and configuration (exit code 2)
    E001 = "Config key '{key}' is not known in section '{section}'.{suggestion} Valid keys: {valid}."
    E002 = "Config value for '{key}' is invalid: {problem}. Fix it in {source}."
    E003 = "Config file '{path}' could not be read: {problem}."
    E004 = "Override '{override}' must look like key=value, e.g. --set cluster.min_cluster_size=5."
    E005 = "Unknown device '{device}'. Use auto, cpu, cuda, cuda:N or mps."
    E006 = "Device '{device}' was requested but {problem}. Use --device cpu or --device auto."
    E007 = (
        "--engine {engine} needs the '{package}' package, which is not installed. "
        "Install it with: pip install 'cxnlp[{extra}]' (or use --engine local)."
    )
    # Input (exit code 2 when a whole file is unusable)
    E101 = (
        "Input '{path}' has no text field{field_note}.{suggestion} Fields seen: {seen}. "
        "Name the field with --text-field NAME or input.fields.text in the config."
    )
    E102 = "Input '{path}' does not exist. Check the path, or quote a glob so cxnlp expands it: '{path}'."
    E103 = "Input '{path}' has an unsupported format '{suffix}'. Use .jsonl, .json, .csv, .tsv or .parquet, optionally .gz."
    E104 = "Input '{path}' could not be read: {problem}."
    E105 = "No input files matched '{pattern}'."
    E106 = "Field '{field}' (set for '{role}') is not in '{path}'.{suggestion} Fields seen: {seen}."
    E107 = "No input given. Pass one or more files, a glob, or - for JSONL on stdin."
    # Records (rejects, not exceptions)
    R001 = "line is not valid JSON ({problem})"
    R002 = "record is a JSON {kind}, not an object"
    R003 = "field '{field}' is missing"
    R004 = "field '{field}' is empty"
    R005 = "field '{field}' is a {kind}, not a string"
    R006 = "duplicate id '{doc_id}' (first seen at {first})"
    R007 = "row has {got} cells, the header has {expected}"
    R008 = "text has no letters or digits after normalisation"
    R009 = "row could not be decoded ({problem})"
    R010 = "the file ends early ({problem}); nothing after line {last} could be read"
    R011 = "a quoted cell opened here is never closed: lines up to {end} became {got} cells, the header has {expected}"
    # Models and runtime (exit code 1)
    E201 = (
        "Model '{name}' was not found. Looked in: {looked}. Reinstall cxnlp, or set {key} to a local "
        "model folder."
    )
    E202 = "Model folder '{path}' is incomplete: missing {missing}. Retrain with `cxnlp train` or reinstall cxnlp."
    E203 = "spaCy pipeline '{name}' is not installed and no fallback was found. Install it with `pip install {hint}`."
    E204 = "Taxonomy '{path}' is invalid: {problem}."
    E205 = "Step '{step}' needs column '{column}' in table '{table}', which no earlier step assigns."
    E206 = "Step '{step}' declared column '{column}' in table '{table}' but did not assign it."
    E207 = "All {count} input records were rejected; see {rejects}. The first reason was: {reason}."
    E208 = "Output directory '{path}' is not writable: {problem}."
    E209 = "'{path}' is not a cxnlp output directory: {problem}."
    E210 = "Unknown task '{task}'. Valid tasks: {valid}."
    E211 = "Evaluation file '{path}' has no usable rows: {problem}."
    E212 = (
        "{rejected} of {read} input records were rejected, more than input.max_rejects allows ({limit}); see {rejects}. "
        "The first reason was: {reason}. Fix the input, or raise the limit with --max-rejects N."
    )
    E213 = (
        "Ran out of disk space writing the outputs for '{path}' ({problem}). Nothing was replaced: the folder "
        "holds its previous run, if any. Free some space, or write elsewhere with -o."
    )
    E214 = (
        "Out of memory in step '{step}' on device '{device}' ({problem}). Lower models.batch_size (now "
        "{batch_size}), e.g. --set models.batch_size={smaller}{cpu_hint}."
    )
    E215 = (
        "Interrupted before cxnlp finished. cxnlp analyze replaces OUTDIR only with a complete run, so its "
        "earlier outputs are unchanged; run the command again to finish."
    )
    E216 = (
        "Base encoder '{base}' ({path}) gives degenerate embeddings: {problem}. Its weights cannot be "
        "fine-tuned: they look zeroed or pruned (for example benchmarks/gpu_base.py's travel copy for the "
        "analyze benchmarks). Point the base at the full model (benchmarks/gpu_train_kit.sh builds one for a GPU host)."
    )
    E217 = (
        "Encoder '{name}' ({path}) reads its texts in input form '{form}', which this cxnlp does not know "
        "(known: {known}). Upgrade cxnlp, or point models.encoder at an encoder this version can feed."
    )


class CxnlpError(Exception):
    """Base class. ``exit_code`` is what the CLI returns."""

    exit_code = 1

    def __init__(self, template: str, **kwargs: object) -> None:
        code = next((name for name, value in vars(Errors).items() if value is template), "E000")
        self.code = code
        self.message = template.format(**kwargs)
        super().__init__(f"[{code}] {self.message}")


class ConfigError(CxnlpError):
    exit_code = 2


class InputError(CxnlpError):
    exit_code = 2


class ModelError(CxnlpError):
    exit_code = 1


class PipelineError(CxnlpError):
    exit_code = 1


class Interrupted(CxnlpError):
    """Ctrl-C or SIGINT: the conventional exit code 128 + 2."""

    exit_code = 130


def did_you_mean(value: str, options: Iterable[str]) -> str:
    """A " Did you mean 'x'?" suffix, or "" when nothing is close."""
    matches = difflib.get_close_matches(value, list(options), n=1, cutoff=0.6)
    if not matches:
        lowered = {o.lower(): o for o in options}
        matches = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.6)
        matches = [lowered[m] for m in matches]
    return f" Did you mean '{matches[0]}'?" if matches else ""
