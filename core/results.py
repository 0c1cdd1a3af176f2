"""Results database: one SQLite file under artifacts/, one row per measurement, environment included."""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

from .paths import artifacts_dir

COLUMNS = ("kind", "model", "model_label", "random_weights", "backend", "runtime", "precision", "device",
           "audio_s", "batch", "concurrency", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "rtf", "audio_s_per_s",
           "items_per_s", "wer", "cer", "n", "errors")
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, created TEXT, kind TEXT, note TEXT);
CREATE TABLE IF NOT EXISTS results (id INTEGER PRIMARY KEY, run_id INTEGER REFERENCES runs(id),
    {", ".join(f"{c} {'TEXT' if c in ('kind','model','model_label','backend','runtime','precision','device') else 'REAL'}" for c in COLUMNS)},
    gpu TEXT, env TEXT, extra TEXT);
"""


def db_path() -> Path:
    return artifacts_dir() / "results.sqlite"


def connect(path: Path | None = None) -> sqlite3.Connection:
    con = sqlite3.connect(path or db_path(), timeout=30)
    con.row_factory = sqlite3.Row
    con.executescript(SCHEMA)
    return con


def save(rows: list[dict], kind: str, note: str = "", path: Path | None = None) -> int:
    """Store rows as one run; returns the run id."""
    with connect(path) as con:
        run_id = con.execute("INSERT INTO runs (created, kind, note) VALUES (?, ?, ?)",
                             (dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), kind, note)).lastrowid
        for row in rows:
            env = row.get("env") or {}
            extra = {k: v for k, v in row.items() if k not in COLUMNS and k != "env"}
            con.execute(f"INSERT INTO results (run_id, {', '.join(COLUMNS)}, gpu, env, extra) "
                        f"VALUES (?, {', '.join('?' * len(COLUMNS))}, ?, ?, ?)",
                        (run_id, *[row.get(c) for c in COLUMNS], env.get("gpu") or "cpu",
                         json.dumps(env, default=str), json.dumps(extra, ensure_ascii=False, default=str)))
    return run_id


def runs(path: Path | None = None, limit: int = 50) -> list[dict]:
    with connect(path) as con:
        return [dict(r) for r in con.execute(
            "SELECT runs.*, COUNT(results.id) AS rows FROM runs LEFT JOIN results ON results.run_id = runs.id "
            "GROUP BY runs.id ORDER BY runs.id DESC LIMIT ?", (limit,))]


def rows(run_id: int | None = None, kind: str | None = None, path: Path | None = None) -> list[dict]:
    """Result rows (newest run first), env and extra decoded."""
    where, args = [], []
    if run_id is not None:
        where.append("run_id = ?")
        args.append(run_id)
    if kind:
        where.append("kind = ?")
        args.append(kind)
    sql = "SELECT * FROM results" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY run_id DESC, id"
    with connect(path) as con:
        out = []
        for r in con.execute(sql, args):
            d = dict(r)
            d["env"] = json.loads(d["env"] or "{}")
            d.update(json.loads(d.pop("extra") or "{}"))
            out.append(d)
        return out
