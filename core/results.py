"""Results database: one SQLite file under artifacts/, one row per measurement, environment included.

Rows are typed by `kind`: "latency" (one timing scope each: "compute" or "e2e"), "memory", "accuracy", "sweep"
(a Triton load sweep, one row per concurrency) and "conformance". A run (one `save`) may hold several kinds: the
dashboard's "benchmark" runs hold latency, accuracy and memory rows together."""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import json
import math
import numbers
import sqlite3
from pathlib import Path

from .errors import StorageError
from .paths import artifacts_dir

COLUMNS = ("kind", "model", "model_label", "random_weights", "backend", "runtime", "precision", "device",
           "audio_s", "batch", "concurrency", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "rtf", "audio_s_per_s",
           "items_per_s", "wer", "cer", "n", "errors", "scope")
TEXT = {"kind", "model", "model_label", "backend", "runtime", "precision", "device", "scope"}
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, created TEXT, kind TEXT, note TEXT, command TEXT);
CREATE TABLE IF NOT EXISTS results (id INTEGER PRIMARY KEY, run_id INTEGER REFERENCES runs(id),
    {", ".join(f"{c} {'TEXT' if c in TEXT else 'REAL'}" for c in COLUMNS)},
    gpu TEXT, env TEXT, extra TEXT);
"""

# Databases written before the typed rows: load sweeps were saved as "load", latency had no timing scope.
KIND_ALIASES = {"load": "sweep"}
LEGACY_SCOPE = "legacy"
SCOPES = {"compute": "compute (device tensors in, device logits out)",
          "e2e": "e2e (audio array → features → forward → greedy text, wall clock)",
          LEGACY_SCOPE: "legacy (timed before the protocol)"}


def scope_label(scope: str | None) -> str:
    return SCOPES.get(scope or LEGACY_SCOPE, str(scope))


def db_path() -> Path:
    return artifacts_dir() / "results.sqlite"


def connect(path: Path | None = None) -> sqlite3.Connection:
    con = sqlite3.connect(path or db_path(), timeout=30)
    con.row_factory = sqlite3.Row
    # WAL: the dashboard reads while background jobs write, without "database is locked"
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(SCHEMA)
    # CREATE TABLE IF NOT EXISTS leaves an older table as it was: add the columns it lacks (e.g. scope)
    have = {r["name"] for r in con.execute("PRAGMA table_info(results)")}
    for c in COLUMNS:
        if c not in have:
            con.execute(f"ALTER TABLE results ADD COLUMN {c} {'TEXT' if c in TEXT else 'REAL'}")
    if "command" not in {r["name"] for r in con.execute("PRAGMA table_info(runs)")}:  # runs saved before commands
        con.execute("ALTER TABLE runs ADD COLUMN command TEXT")
    con.execute("CREATE INDEX IF NOT EXISTS results_kind_model ON results (kind, model)")   # after the columns exist
    return con


@contextlib.contextmanager
def _db(path: Path | None = None):
    """One connection per use: committed on success, always closed; storage failures in the workbench's words."""
    where = path or db_path()
    try:
        con = connect(path)
    except sqlite3.OperationalError as err:
        raise _store_error(err, where) from err
    try:
        with con:
            yield con
    except sqlite3.OperationalError as err:
        raise _store_error(err, where) from err
    finally:
        con.close()


def _store_error(err: sqlite3.OperationalError, where: Path) -> StorageError:
    text = str(err)
    writable = os.access(Path(where).parent, os.W_OK)   # False on a read-only file system, even for root
    why = ("the disk is full" if "full" in text else "it is read-only" if "readonly" in text or "read-only" in text
           or not writable else "it cannot be opened" if "unable to open" in text else text)
    return StorageError(f"Cannot use the results database {where}: {why}.",
                        "Free some space, or point WORKBENCH_ARTIFACTS at a writable folder with room.")


def save(rows: list[dict], kind: str, note: str = "", path: Path | None = None, command: str | None = None) -> int:
    """Store rows as one run; returns the run id. `command`: the shell command that reproduces it (reports)."""
    with _db(path) as con:
        run_id = con.execute("INSERT INTO runs (created, kind, note, command) VALUES (?, ?, ?, ?)",
                             (dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), kind, note,
                              command)).lastrowid
        for row in rows:
            env = row.get("env") or {}
            extra = {k: v for k, v in row.items() if k not in COLUMNS and k != "env"}
            con.execute(f"INSERT INTO results (run_id, {', '.join(COLUMNS)}, gpu, env, extra) "
                        f"VALUES (?, {', '.join('?' * len(COLUMNS))}, ?, ?, ?)",
                        (run_id, *[row.get(c) for c in COLUMNS], env.get("gpu") or "cpu",
                         json.dumps(env, default=str), json.dumps(extra, ensure_ascii=False, default=str)))
    return run_id


def _kinds(kind: str) -> list[str]:
    """The stored kinds that read back as `kind` ("sweep" also matches legacy "load")."""
    kind = KIND_ALIASES.get(kind, kind)
    return [kind] + [old for old, new in KIND_ALIASES.items() if new == kind]


def _decode(r: sqlite3.Row) -> dict:
    d = dict(r)
    d["env"] = json.loads(d["env"] or "{}")
    d.update(json.loads(d.pop("extra") or "{}"))
    d["kind"] = KIND_ALIASES.get(d.get("kind"), d.get("kind"))
    if d["kind"] == "latency" and not d.get("scope"):
        d["scope"] = LEGACY_SCOPE
    return d


def rows(run_id: int | None = None, kind: str | None = None, path: Path | None = None,
         model: str | None = None) -> list[dict]:
    """Result rows (newest run first), env and extra decoded, legacy kinds and scopes normalised; `model`: one
    model's rows (its source)."""
    where, args = [], []
    if run_id is not None:
        where.append("run_id = ?")
        args.append(run_id)
    if model is not None:
        where.append("model = ?")
        args.append(model)
    if kind:
        kinds = _kinds(kind)
        where.append(f"kind IN ({', '.join('?' * len(kinds))})")
        args += kinds
    sql = "SELECT * FROM results" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY run_id DESC, id"
    with _db(path) as con:
        return [_decode(r) for r in con.execute(sql, args)]


def _finite(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def usable(row: dict) -> bool:
    """Whether a row holds a measurement worth showing: a failed sweep level (every request an error, p50 NaN,
    stored as NULL) or a latency row without a p50 is not."""
    kind = row.get("kind")
    if kind in ("latency", "sweep", "streaming"):   # streaming: per-chunk compute p50 of a streamed file
        return _finite(row.get("p50_ms")) and not (row.get("n") == 0 and row.get("errors"))
    if kind == "accuracy":
        return _finite(row.get("wer"))
    if kind == "memory":
        return any(_finite(row.get(k)) for k in ("peak_mem_mb", "peak_device_mb", "peak_host_rss_mb"))
    if kind == "conformance":
        return isinstance(row.get("passed"), bool)
    return False


def runs(path: Path | None = None, limit: int = 50) -> list[dict]:
    """The newest runs first: id, created, kind, note, rows, plus `counts` and `usable` ({row kind: number})."""
    with _db(path) as con:
        out = [dict(r) for r in con.execute(
            "SELECT runs.*, COUNT(results.id) AS rows FROM runs LEFT JOIN results ON results.run_id = runs.id "
            "GROUP BY runs.id ORDER BY runs.id DESC LIMIT ?", (limit,))]
        by_id = {r["id"]: r for r in out}
        for r in out:
            r["kind"] = KIND_ALIASES.get(r["kind"], r["kind"])
            r["counts"], r["usable"] = {}, {}
        if out:
            for res in con.execute("SELECT * FROM results WHERE run_id >= ? ORDER BY id", (min(by_id),)):
                run = by_id.get(res["run_id"])
                if run is not None:
                    d = _decode(res)
                    run["counts"][d["kind"]] = run["counts"].get(d["kind"], 0) + 1
                    run["usable"][d["kind"]] = run["usable"].get(d["kind"], 0) + usable(d)
        return out


def run(run_id: int, path: Path | None = None) -> dict | None:
    """One run's id, created, kind, note and command, or None."""
    with _db(path) as con:
        r = con.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if r is None else dict(r, kind=KIND_ALIASES.get(r["kind"], r["kind"]))


def default_run(kinds=("latency", "accuracy", "sweep", "conformance", "memory"), path: Path | None = None,
                history: list[dict] | None = None) -> int | None:
    """The run a view opens on: the newest one with at least one usable row of `kinds`, so that an empty or a
    failed run (all NaN, all errors) is never the default. `history` is a runs() result, to spare a query."""
    for run in history if history is not None else runs(path):
        if any(run["usable"].get(k) for k in kinds):
            return run["id"]
    return None


def describe_run(run: dict) -> str:
    """A one-line label for a run picker: id, time, kind, note and rows per kind (failed rows said so)."""
    counts = ", ".join(f"{n} {k}" + ("" if run["usable"].get(k) == n else f" ({n - run['usable'].get(k, 0)} failed)")
                       for k, n in run["counts"].items()) or "no rows"
    created = (run.get("created") or "").replace("T", " ").split("+")[0]
    note = f" · {run['note']}" if run.get("note") else ""
    return f"#{run['id']} · {created} · {run['kind']}{note} · {counts}"
