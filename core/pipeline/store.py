"""The one build mechanism every artifact goes through: a content-addressed key, one build at a time per key
(a file lock across processes), a temporary folder, verification against a gate, and an atomic commit.

Layout: artifacts/<model slug>-<hash of the source string>/<stage>-<precision>-<key[:10]>/ holding the stage's
files and meta.json (written last, inside the temporary folder, which is then renamed into place: a folder
with meta.json is finished). Temporary folders are named .tmp-<key[:10]>-<pid>; one whose process is gone
(a killed build) is removed by the next build under the same root.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import NotBuiltError, WorkbenchError
from ..paths import artifacts_dir, pid_alive, write_json_atomic

VERIFIED, REJECTED, STALE, DAMAGED = "verified", "rejected", "stale", "damaged"
TMP_PREFIX = ".tmp-"


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def slug(text: str, limit: int = 40) -> str:
    """A readable folder name: letters, digits, '.', '_' and '-' only; never '.', '..' or a hidden name."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:limit]
    return s or "model"


def model_root(source: str) -> Path:
    """The folder of one model source's artifacts: a slug for people plus a hash for uniqueness (`foo/bar` and
    `foo_bar` differ), always directly under the artifacts root whatever the source string."""
    root = artifacts_dir().resolve()
    path = root / f"{slug(source)}-{hashlib.sha256(source.encode()).hexdigest()[:8]}"
    if path.resolve().parent != root:  # cannot happen with slug(); kept as the guarantee it is
        raise WorkbenchError(f"Refusing to write outside {root}: {path}", "Report this source string as a bug.")
    return path


@dataclass
class Artifact:
    dir: Path
    meta: dict

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def status(self) -> str:
        return self.meta["status"]

    @property
    def usable(self) -> bool:
        """Verified, or rejected and explicitly accepted by the user."""
        return self.status == VERIFIED or bool(self.meta.get("accepted"))

    @property
    def path(self) -> Path:
        """The artifact's main file (model.onnx, model.plan, ...) or its folder."""
        return self.dir / self.meta["file"] if self.meta.get("file") else self.dir


class ArtifactDamagedError(WorkbenchError):
    """An artifact's main file differs from what its build recorded (truncated, overwritten, corrupted)."""


def damage(artifact: Artifact, full: bool = True) -> str:
    """Why the artifact's main file is not the one it was built as ("" when intact): its size, then (full) its
    sha256, both recorded at build time. Artifacts from before the record are taken as they are."""
    want_bytes, want_sha = artifact.meta.get("file_bytes"), artifact.meta.get("file_sha256")
    path = artifact.path
    if not artifact.meta.get("file") or want_bytes is None:
        return ""
    if not path.is_file():
        return f"{path.name} is missing"
    size = path.stat().st_size
    if size != want_bytes:
        return f"{path.name} is {size:,} bytes, but was built as {want_bytes:,} (truncated or replaced)"
    from .fingerprint import file_sha256
    if full and want_sha and file_sha256(path) != want_sha:
        return f"{path.name} has changed since it was built (its sha256 differs): corrupted or replaced"
    return ""


def ensure_intact(artifact: Artifact) -> None:
    if why := damage(artifact):
        raise ArtifactDamagedError(f"Refusing {artifact.dir.name}: {why}.",
                                   "Rebuild it with --force (or delete the folder and build again).")


def read(directory: Path) -> Artifact | None:
    try:
        return Artifact(directory, json.loads((directory / "meta.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def clean_stale_temps(root: Path) -> list[Path]:
    """Remove temporary build folders whose process is gone (a killed or crashed build)."""
    removed = []
    for tmp in root.glob(TMP_PREFIX + "*") if root.is_dir() else []:
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def clean_all_temps() -> list[Path]:
    """clean_stale_temps under every model's folder (the dashboard does this when it starts)."""
    root = artifacts_dir()
    return [t for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") for t in clean_stale_temps(d)]


@contextlib.contextmanager
def locked(root: Path, key: str, log=print):
    """One builder per key across processes; a second one waits, then finds the finished artifact."""
    locks = root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{key[:16]}.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another build of this artifact is running: waiting for it ...")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def find(root: Path, stage: str, precision: str) -> list[Artifact]:
    """Every finished artifact of a stage and precision under a model's root, newest first."""
    found = [a for d in root.glob(f"{stage}-{precision}-*") if (a := read(d))] if root.is_dir() else []
    return sorted(found, key=lambda a: a.meta.get("created", ""), reverse=True)


def why_stale(old: dict, new: dict) -> str:
    """What changed between the inputs an artifact was built from and today's, in words."""
    reasons = []
    if old.get("model") != new.get("model"):
        reasons.append("weights changed since build")
    if old.get("parent") != new.get("parent"):
        reasons.append("its parent artifact was rebuilt")
    if old.get("settings") != new.get("settings"):
        changed = sorted(k for k in set(old.get("settings", {})) | set(new.get("settings", {}))
                         if old.get("settings", {}).get(k) != new.get("settings", {}).get(k))
        reasons.append("settings changed: " + ", ".join(changed))
    for lib in sorted(set(old.get("toolchain", {})) | set(new.get("toolchain", {}))):
        a, b = old.get("toolchain", {}).get(lib), new.get("toolchain", {}).get(lib)
        if a != b:
            reasons.append(f"{lib} {a} → {b}")
    return "; ".join(reasons) or "built from other inputs"


class Spec:
    """What one artifact is: a stage and precision of a model, built from a parent artifact with settings by a
    toolchain. Its key hashes all of that; lookups never build. Subclasses set `name`, `file` and toolchain()."""
    name = "?"
    file = ""

    def __init__(self, loaded, precision: str, parent: "Spec | None" = None, settings: dict | None = None):
        self.loaded, self.precision, self.parent = loaded, precision, parent
        self.settings = dict(settings or {})

    def toolchain(self) -> dict:
        """Library versions (and for engines, the GPU's compute capability) the files depend on."""
        return {}

    def inputs(self) -> dict:
        from .fingerprint import model_fingerprint
        return {"model": model_fingerprint(self.loaded), "parent": self.parent.key() if self.parent else None,
                "stage": self.name, "precision": self.precision, "settings": self.settings,
                "toolchain": self.toolchain()}

    @property
    def root(self) -> Path:
        return model_root(self.loaded.source)

    def key(self) -> str:
        return digest(self.inputs())

    def dest(self, key: str | None = None) -> Path:
        return self.root / f"{self.name}-{self.precision}-{(key or self.key())[:10]}"

    def lookup(self) -> Artifact | None:
        """The finished artifact for today's inputs, if any (verified or rejected)."""
        return read(self.dest())

    def stale(self) -> list[tuple[Artifact, str]]:
        """Artifacts of this stage and precision built from other inputs, with why."""
        key, new = self.key(), self.inputs()
        return [(a, why_stale(a.meta.get("inputs", {}), new)) for a in find(self.root, self.name, self.precision)
                if a.key != key]

    def require(self, build_hint: str) -> Artifact:
        """The usable artifact for a backend, or a clear error: never builds."""
        art = self.lookup()
        what = f"The {self.name} {self.precision} artifact of {self.loaded.source}"
        if art is None:
            stale = self.stale()
            why = f" (the one built before is stale: {stale[0][1]})" if stale else ""
            raise NotBuiltError(f"{what} is not built yet{why}.",
                                f"Build it on the Build page or with `{build_hint}`.")
        ensure_intact(art)
        if not art.usable:
            raise NotBuiltError(f"{what} was rejected by its gate: {'; '.join(art.meta.get('reasons', []))}.",
                                f"Use another precision, loosen the gate, or accept it explicitly (`{build_hint} "
                                "--accept-rejected`, or the checkbox on the Build page).")
        return art


class Builder:
    """How a Spec's files are made and measured: produce() writes them into a temporary folder and returns what
    meta.json records about them; measure() returns the gate's figures for them."""

    def produce(self, spec: Spec, tmp: Path, log) -> dict:
        raise NotImplementedError

    def measure(self, spec: Spec, tmp: Path, log) -> dict:
        raise NotImplementedError

    def measured_with(self) -> dict:
        """What the figures depend on besides the files (e.g. the labelled set): other values re-measure."""
        return {}


_done = [0.05]   # this process's progress so far: builds run one after another (a parent, then its child)


def _progress(log, what: str) -> None:
    """A `progress:` line for the dashboard's job view at each real step: a third of the way from where the bar
    stands to the end (a build does not know how many builds its command chains), so it only ever moves on."""
    _done[0] += (1.0 - _done[0]) / 3
    log(f"progress: {_done[0]:.2f} {what}")


def build(stage: Spec, builder: Builder, gate, force: bool = False, log=print) -> Artifact:
    """Build a spec's artifact once: reuse a finished one, else build in a temporary folder, judge it with the
    gate, and commit it atomically as verified or rejected (a rejected one is kept with its figures)."""
    root = stage.root
    root.mkdir(parents=True, exist_ok=True)
    for tmp in clean_stale_temps(root):
        log(f"removed the temporary folder of an interrupted build: {tmp.name}")
    inputs = stage.inputs()
    key = digest(inputs)
    dest = stage.dest(key)
    current = {"gate": gate.limits(), "measured_with": builder.measured_with()}
    done = read(dest)
    if done and (why := damage(done)):   # same key, but the file is not what was built: build it again
        log(f"{stage.name} {stage.precision}: {why}; building it again")
        force = True
    if not force and done and all(done.meta.get(k) == v for k, v in current.items()):
        log(f"{stage.name} {stage.precision}: {done.status}, cached at {dest}")
        return done
    with locked(root, key, log):
        if not force and (done := read(dest)):  # built by the process we waited for, or judged otherwise
            if done.meta.get("measured_with") != current["measured_with"]:  # same files, other labelled set
                log(f"{stage.name} {stage.precision}: measuring again with {current['measured_with']}")
                done = Artifact(done.dir, dict(done.meta, figures=builder.measure(stage, done.dir, log),
                                               measured_with=current["measured_with"]))
                return rejudge(done, gate, log)
            if done.meta.get("gate") != current["gate"]:
                return rejudge(done, gate, log)
            log(f"{stage.name} {stage.precision}: {done.status}, built meanwhile at {dest}")
            return done
        tmp = root / f"{TMP_PREFIX}{key[:10]}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            started = time.perf_counter()
            _progress(log, f"building {stage.name} {stage.precision}")
            produced = builder.produce(stage, tmp, log)
            _progress(log, f"checking {stage.name} {stage.precision} (its gate)")
            figures = builder.measure(stage, tmp, log)
            passed, reasons = gate.judge(figures)
            status = VERIFIED if passed else REJECTED
            log(f"{stage.name} {stage.precision}: {status}" + (f" ({'; '.join(reasons)})" if reasons else ""))
            meta = {**produced, "key": key, "stage": stage.name, "precision": stage.precision, "status": status,
                    "reasons": reasons, "gate": gate.limits(), "figures": figures, "inputs": inputs,
                    "measured_with": current["measured_with"],
                    "source": stage.loaded.source, "label": stage.loaded.label,
                    "random_weights": stage.loaded.random_weights, "file": stage.file,
                    "parent_dir": str(stage.parent.dest()) if stage.parent else None,
                    "bytes": sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()),
                    "build_seconds": round(time.perf_counter() - started, 1),
                    "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
            if stage.file and (tmp / stage.file).is_file():  # checked before use: a damaged file is refused
                from .fingerprint import file_sha256
                meta.update(file_bytes=(tmp / stage.file).stat().st_size, file_sha256=file_sha256(tmp / stage.file))
            write_json_atomic(tmp / "meta.json", meta)
            if dest.exists():  # --force: the old folder goes only once the new one is complete
                old = root / f"{TMP_PREFIX}old-{key[:10]}-{os.getpid()}"
                os.replace(dest, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    for old, why in stage.stale():
        log(f"stale {old.dir.name} ({why}) left in place; `python -m core artifacts --prune` removes it")
    return read(dest)


def rejudge(artifact: Artifact, gate, log=print) -> Artifact:
    """The same files judged by another gate (their figures do not depend on it): no rebuild."""
    passed, reasons = gate.judge(artifact.meta.get("figures", {}))
    meta = dict(artifact.meta, status=VERIFIED if passed else REJECTED, reasons=reasons, gate=gate.limits())
    write_json_atomic(artifact.dir / "meta.json", meta)
    log(f"{meta['stage']} {meta['precision']}: {meta['status']} under the new gate {gate.limits()}")
    return Artifact(artifact.dir, meta)


def accept(artifact: Artifact, note: str = "") -> Artifact:
    """Record the user's choice to use a rejected artifact anyway (kept in its meta.json)."""
    meta = dict(artifact.meta, accepted=True, accepted_at=dt.datetime.now(dt.timezone.utc).isoformat(
        timespec="seconds"), accepted_note=note)
    write_json_atomic(artifact.dir / "meta.json", meta)
    return Artifact(artifact.dir, meta)
