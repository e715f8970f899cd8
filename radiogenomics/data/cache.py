"""On-disk cache of the deterministic preprocessing, keyed by source files and transform config.

`CaseCache` is what every per-case cache shares (entry keys, atomic writes, `prepare` in
worker processes); `PreprocessCache` is the preprocessing's own, and `case_sources` and
`run_preprocessing` are its steps that inference reuses without a cache.

Each entry is a folder ``<case id>-<key>/`` holding ``image.npy`` (float16 by default,
memory-mapped on read), ``seg.npy`` (uint8, when masks are used; absent for a case without
one when they are optional, ``seg_optional``) and ``meta.json``. The key
hashes the preprocessing config and the size and modification time of every source file,
so changing either makes a new entry: a stale one is never read. Entries are written to a
temporary folder and renamed into place, so a killed preparation leaves no partial entry.

``meta.json`` (written last) keeps the size and a BLAKE2b checksum of every array file.
Every read compares each file's size (and mtime) with what this process last verified; the
checksum is verified once per process and entry (again when size or mtime change). An entry
whose array is missing, truncated or altered is never used: it is rebuilt, with a warning
naming the patient. Processes filling one cache at once (a parallel sweep) never delete a
valid entry: the first complete one renamed into place wins, later writers drop theirs.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from radiogenomics.data.allocator import keep_freed_memory, keep_freed_memory_for_good
from radiogenomics.data.case import Case
from radiogenomics.data.roi import ROI_KEY, roi_mask_path
from radiogenomics.data.template_space import save as save_registration
from radiogenomics.data.template_transform import REGISTRATION_KEY, fixed_series
from radiogenomics.data.transforms import PreprocessConfig, preprocessing
from radiogenomics.errors import DataError, Failure

log = logging.getLogger(__name__)

CACHE_VERSION = 4
"""Bumped whenever the pipeline's code changes what an entry holds (3: fused separable
resampling, values equal to the eager MONAI transforms' up to float32 round-off; 4: sizes and
checksums of the arrays in meta.json)."""

META = "meta.json"
REGISTRATION_DIR = "registration"


def file_digest(path: str | Path) -> str:
    """BLAKE2b (128 bits) of a file's bytes: ~1 GB/s, so a 16 MB entry costs ~15 ms once."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(path: str | Path) -> list[Any]:
    """Identity of a source file or folder: resolved path, size and mtime of every file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    elif path.exists():
        files = [path]
    else:
        return [str(path), "missing"]
    return [str(path.resolve())] + [[f.name, *_stat(f)] for f in files]


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@dataclass
class PrepareReport:
    """What a preparation did: cases prepared now, found in the cache, and failures."""

    prepared: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"{len(self.prepared)} prepared, {len(self.cached)} already cached, "
                f"{len(self.failed)} failed")
        if self.failed:
            text += "\n" + "\n".join(f"  {f.patient}: {f.reason}" for f in
                                      sorted(self.failed, key=lambda f: f.patient))
        return text


SEQUENCES_HINT = "choose data.sequences among those the cohort has"


def case_sources(case: Case, config: PreprocessConfig, hint: str = SEQUENCES_HINT
                 ) -> dict[str, Any]:
    """Source files of a case that `config` reads: its sequences, its mask ``with_seg``, and
    with ``register`` the series registered to the template (T1wCE when the case has it).

    A missing sequence raises a `DataError` with `hint`, and so does a missing mask unless
    ``seg_optional`` (the case is then read without one).
    """
    images = case["images"]
    missing = [s for s in config.sequences if s not in images]
    if missing:
        raise DataError(f"sequence(s) {missing} not available (has {sorted(images)})",
                        patient=case["id"], hint=hint)
    sources = {s: images[s] for s in config.sequences}
    if config.register:
        fixed = fixed_series(images, config.sequences)
        sources[fixed] = images[fixed]
    if config.with_seg and case.get("seg"):
        sources["seg"] = case["seg"]
    elif config.with_seg and not config.seg_optional:
        raise DataError("no tumour mask for this case", patient=case["id"],
                        hint="segmentation needs a cohort with masks (data=brats)")
    if config.roi:  # the mask its tumour ROI is cropped by (radiogenomics.data.roi)
        sources[ROI_KEY] = roi_mask_path(case, predicted=config.roi_model is not None)
    return sources


def run_preprocessing(pipeline: Callable[[dict[str, Any]], dict[str, Any]], case: Case,
                      sources: dict[str, Any]) -> dict[str, Any]:
    """The deterministic `pipeline`'s output for a case's `sources` (MetaTensors).

    Every failure is a `DataError` naming the patient (MONAI's wrapping undone).
    """
    sample = {"id": case["id"], "label_scheme": case.get("label_scheme", "brats2021"),
              **sources}
    try:
        return pipeline(sample)
    except DataError:
        raise
    except Exception as err:  # MONAI wraps errors of inner transforms
        inner = err.__cause__ if isinstance(err.__cause__, DataError) else None
        if inner is not None:
            raise inner from err
        raise DataError(f"preprocessing failed: {err}", patient=case["id"],
                        hint="check the series of this patient") from err


class CaseCache:
    """One entry folder ``<case id>-<key>/`` per case under ``root``.

    The key hashes `VERSION`, what the subclass computes entries with (`key_fields`) and
    the size and modification time of every source file (`sources`), so a stale entry is
    never read. Entries are written into a temporary folder renamed into place (`write`):
    a killed preparation leaves no partial entry, and of processes filling one cache at
    once the first valid entry wins. Subclasses compute (`compute`), save (`_save`),
    check (`ready`, `valid`) and read (`_read`) an entry.
    """

    VERSION: ClassVar[int]
    """Bumped whenever the code changes what an entry holds."""
    DESCRIPTION: ClassVar[str] = "preparing cache"
    """What `prepare`'s progress bar says."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.read_only = False
        """Never write (a cache shared by several machines, filled by one process): a missing
        or damaged entry is then an error, not rebuilt."""

    def sources(self, case: Case) -> dict[str, Any]:
        """Source files (or folders) of a case that its entry is computed from."""
        raise NotImplementedError

    def key_fields(self, case: Case) -> dict[str, Any]:
        """What else the entry of a case depends on (JSON), hashed into its key."""
        raise NotImplementedError

    def key(self, case: Case) -> str:
        payload = {"version": self.VERSION, **self.key_fields(case),
                   "sources": {k: fingerprint(v) for k, v in self.sources(case).items()}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]

    def entry(self, case: Case) -> Path:
        return self.root / f"{case['id']}-{self.key(case)}"

    def ready(self, entry: Path) -> bool:
        """Whether the entry is complete (a cheap check: `prepare` skips it when it is)."""
        raise NotImplementedError

    def valid(self, entry: Path) -> bool:
        """Whether an entry found in place is worth keeping over a new one (default `ready`)."""
        return self.ready(entry)

    def has(self, case: Case) -> bool:
        return self.ready(self.entry(case))

    def compute(self, case: Case) -> dict[str, Any]:
        """The content of a case's entry (no cache involved)."""
        raise NotImplementedError

    def _save(self, folder: Path, case: Case, result: dict[str, Any]) -> None:
        """Write `compute`'s `result` into an empty entry folder."""
        raise NotImplementedError

    def _read(self, entry: Path, mmap: bool = True) -> dict[str, Any]:
        """The content of a complete entry (arrays memory-mapped unless ``mmap`` is false)."""
        raise NotImplementedError

    def load(self, case: Case) -> dict[str, Any]:
        """The content of a prepared case."""
        return self._read(self.entry(case))

    def write(self, case: Case, result: dict[str, Any], entry: Path | None = None) -> Path:
        """Store `result` atomically (temporary folder renamed into place) at `entry`
        (default: the case's entry now; pass the one taken before computing, so that a source
        file edited meanwhile gives a stale key, never a stale entry).

        When another process put a valid entry there first, it is kept and ours dropped; a
        damaged one is renamed aside (never seen half-replaced) and then deleted.
        """
        final = entry or self.entry(case)
        if self.read_only:
            raise DataError("the preprocessing cache entry is missing or damaged, and this "
                            "process only reads the cache (filled by rank 0)",
                            patient=case["id"], path=final,
                            hint="fill the cache again: radiogenomics prepare with the run's "
                                 "data overrides")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{case['id']}-", dir=self.root))
        try:
            self._save(tmp, case, result)
            self._publish(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def _publish(self, tmp: Path, final: Path) -> None:
        for _ in range(5):
            try:
                os.rename(tmp, final)  # atomic; fails when `final` exists and is not empty
                return
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise
            if self.valid(final):
                return  # a valid entry, written by another process: keep it
            aside = final.with_name(f".{final.name}.damaged-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(final, aside)
            except FileNotFoundError:
                continue  # another process moved it aside first
            shutil.rmtree(aside, ignore_errors=True)
        raise OSError(f"could not put the cache entry {final} into place")

    def build(self, case: Case, entry: Path) -> None:
        """Compute one case's entry and store it at `entry`."""
        self.write(case, self.compute(case), entry=entry)

    def _builder(self) -> Callable[[Case, Path], Any]:
        """`build` as sent to the worker processes (picklable)."""
        return self.build

    def prepare(self, cases: list[Case], workers: int = 0, progress: bool = True) -> PrepareReport:
        """Fill the cache for every case, in ``workers`` processes (0: in this process).

        Failures do not stop the others: each is recorded in the report with its reason.
        """
        with keep_freed_memory():  # one patient's pages serve the next (see allocator)
            return fill_cache(cases, self.entry, self.ready, self._builder(), workers,
                              progress, self.DESCRIPTION)


class PreprocessCache(CaseCache):
    """Deterministic preprocessing results for a cohort, stored under ``root``.

    With ``register``, an entry also holds the patient's registration to the template
    (``registration/``, `template_space.save`: `registration_dir`).
    """

    VERSION = CACHE_VERSION

    def __init__(self, root: str | Path, config: PreprocessConfig) -> None:
        super().__init__(root)
        self.config = config
        self._pipelines: dict[bool, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        """The pipeline of cases with a mask (True) and without (False, ``seg_optional``)."""
        # entry folder of each case already loaded: fingerprinting stats every source file
        # (~440 per RSNA patient), too slow to repeat on every draw of a training epoch
        self._loaded: dict[str, Path] = {}
        # array file -> (size, mtime, checksum) verified by this process: hashed once per entry
        self._verified: dict[str, tuple[int, int, str | None]] = {}

    def sources(self, case: Case) -> dict[str, Any]:
        """Source files of a case that the config reads."""
        return case_sources(case, self.config)

    def key_fields(self, case: Case) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "scheme": case.get("label_scheme")}

    def ready(self, entry: Path) -> bool:
        """Whether the entry is complete and its arrays have the sizes ``meta.json`` records
        (cheap: a stat per file; checksums are verified on load)."""
        return self.problem(entry, checksums=False) is None

    def valid(self, entry: Path) -> bool:
        return self.problem(entry) is None

    def _array_names(self, has_seg: bool = True) -> list[str]:
        """The arrays an entry holds: ``seg`` with ``with_seg``, unless the case has no mask
        (`has_seg` false: ``seg_optional``)."""
        return ["image", "seg"] if self.config.with_seg and has_seg else ["image"]

    def problem(self, entry: Path, checksums: bool = True) -> str | None:
        """What is wrong with an entry (None: usable). "absent" when it was never completed.

        Sizes are checked every time; a file's checksum once per process, and again when its
        size or mtime changes (`checksums=False`: sizes only).
        """
        try:
            meta = json.loads((entry / META).read_text())
        except FileNotFoundError:
            return "absent"
        except (OSError, ValueError) as err:
            return f"{META} is unreadable ({err})"
        files = meta.get("files") if isinstance(meta, dict) else None
        if not isinstance(files, dict):
            return f"{META} records no checksums"
        for name in self._array_names(not self.config.seg_optional or "seg.npy" in files):
            info = files.get(f"{name}.npy")
            path = entry / f"{name}.npy"
            if not isinstance(info, dict):
                return f"{META} records no {name}.npy"
            try:
                stat = path.stat()
            except OSError:
                return f"{name}.npy is missing"
            if stat.st_size != info.get("bytes"):
                return f"{name}.npy has {stat.st_size} bytes, {info.get('bytes')} were written"
            if not checksums:
                continue
            seen = (stat.st_size, stat.st_mtime_ns, info.get("blake2b"))
            if self._verified.get(str(path)) == seen:
                continue
            try:
                if file_digest(path) != info.get("blake2b"):
                    return f"{name}.npy was altered (its checksum differs from the written one)"
            except OSError as err:
                return f"{name}.npy cannot be read ({err})"
            self._verified[str(path)] = seen
        return None

    def load(self, case: Case, mmap: bool = True) -> dict[str, np.ndarray]:
        """Arrays of a prepared case (memory-mapped unless ``mmap`` is false).

        The entry of a case is looked up once per cache object (until the next ``prepare`` or
        ``write``): source files edited during a run are only noticed by the next one. A
        damaged entry (array missing, truncated or altered) is rebuilt with a warning.
        """
        entry = self._loaded.get(case["id"])
        if entry is None:
            entry = self.entry(case)
        problem = self.problem(entry)
        for _ in range(5):  # another process may be renaming a damaged entry aside right now
            if problem != "absent":
                break
            time.sleep(0.05)
            problem = self.problem(entry)
        if problem == "absent":
            raise DataError("not in the preprocessing cache", patient=case["id"], path=entry,
                            hint="call prepare() (the datamodule does it in prepare_data)")
        if problem is None:
            try:
                out = self._read(entry, mmap)
            except (OSError, ValueError) as err:  # replaced or damaged meanwhile
                problem = f"cannot be read ({err})"
            else:
                self._loaded[case["id"]] = entry
                return out
        log.warning("[patient %s] preprocessing cache entry %s is damaged (%s): rebuilding it",
                    case["id"], entry, problem)
        arrays = self.compute(case)
        self.write(case, arrays, entry=entry)
        arrays.pop(REGISTRATION_KEY, None)
        return arrays

    def _read(self, entry: Path, mmap: bool = True) -> dict[str, np.ndarray]:
        mode = "r" if mmap else None
        has_seg = not self.config.seg_optional or (entry / "seg.npy").is_file()
        return {name: np.load(entry / f"{name}.npy", mmap_mode=mode)
                for name in self._array_names(has_seg)}

    def compute(self, case: Case) -> dict[str, np.ndarray]:
        """Run the deterministic pipeline on one case (no cache involved)."""
        sources = self.sources(case)
        with_seg = "seg" in sources  # False for a case without a mask (seg_optional)
        if with_seg not in self._pipelines:
            self._pipelines[with_seg] = preprocessing(
                dataclasses.replace(self.config, with_seg=with_seg))
        result = run_preprocessing(self._pipelines[with_seg], case, sources)
        out = {"image": _numpy(result["image"]).astype(self.config.dtype)}
        if with_seg:
            out["seg"] = _numpy(result["seg"]).astype(np.uint8)
        if REGISTRATION_KEY in result:
            out[REGISTRATION_KEY] = result[REGISTRATION_KEY]
        return out

    def registration_dir(self, case: Case) -> Path:
        """Where the entry of a case keeps its registration (``data.register=true``)."""
        return self.entry(case) / REGISTRATION_DIR

    def write(self, case: Case, arrays: dict[str, np.ndarray], entry: Path | None = None
              ) -> Path:
        self._loaded.pop(case["id"], None)
        return super().write(case, arrays, entry)

    def _save(self, folder: Path, case: Case, result: dict[str, np.ndarray]) -> None:
        """The arrays (and registration), then ``meta.json`` with their sizes and checksums."""
        result = dict(result)
        registration = result.pop(REGISTRATION_KEY, None)
        if registration is not None:
            save_registration(registration, folder / REGISTRATION_DIR)
        files = {}
        for name, array in result.items():
            path = folder / f"{name}.npy"
            np.save(path, array)
            files[path.name] = {"bytes": path.stat().st_size, "blake2b": file_digest(path)}
        meta = {"id": case["id"], "shape": list(result["image"].shape),
                "config": self.config.to_dict(), "files": files}
        (folder / META).write_text(json.dumps(meta, indent=1))

    def get(self, case: Case) -> dict[str, np.ndarray]:
        """Load a case, computing and storing it first if absent (sources fingerprinted once)."""
        entry = self.entry(case)
        if self.problem(entry) is not None:
            self.write(case, self.compute(case), entry=entry)
        self._loaded[case["id"]] = entry
        return self.load(case)

    def prepare(self, cases: list[Case], workers: int = 0, progress: bool = True) -> PrepareReport:
        self._loaded.clear()
        return super().prepare(cases, workers, progress)

    def _builder(self) -> Callable[[Case, Path], Any]:
        # a fresh cache per case: this one's pipeline and verified checksums stay here
        return partial(_build_entry, self.root, self.config)


def fill_cache(cases: list[Case], entry: Callable[[Case], Path], ready: Callable[[Path], bool],
               build: Callable[[Case, Path], Any], workers: int = 0, progress: bool = True,
               desc: str = "preparing cache") -> PrepareReport:
    """Build the entry of every case that is not `ready`, in ``workers`` processes (0: here).

    `entry` names a case's entry (raising `DataError` when the case cannot have one),
    `build(case, entry)` computes and stores it (picklable, for the pool). Cases are checked
    while the workers already build the first missing ones; the pool only starts when one is
    missing. Every case lands in the report: cached, prepared, or failed with its reason.
    """
    report = PrepareReport()
    bar = tqdm(total=len(cases), desc=desc, unit="patient", disable=not progress)
    pool: ProcessPoolExecutor | None = None
    futures = {}
    try:
        for case in cases:
            try:
                path = entry(case)
            except DataError as err:
                report.failed.append(Failure.from_error(err, case["id"]))
                bar.update()
                continue
            if ready(path):
                report.cached.append(case["id"])
                bar.update()
            elif workers <= 1:
                _record(report, case["id"], _attempt(build, case, path))
                bar.update()
            else:
                if pool is None:
                    pool = ProcessPoolExecutor(
                        max_workers=min(workers, len(cases)), mp_context=_mp_context(),
                        initializer=_init_worker)
                futures[pool.submit(_attempt, build, case, path)] = case["id"]
        for future in as_completed(futures):
            _record(report, futures[future], future.result())
            bar.update()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        bar.close()
    return report


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _mp_context() -> BaseContext:
    """Fork where available (like DataLoader workers: no re-import of torch), else spawn."""
    return get_context("fork" if "fork" in get_all_start_methods() else "spawn")


def _init_worker() -> None:
    torch.set_num_threads(1)
    keep_freed_memory_for_good()


def _build_entry(root: Path, config: PreprocessConfig, case: Case, entry: Path) -> None:
    cache = PreprocessCache(root, config)
    cache.write(case, cache.compute(case), entry=entry)


def _attempt(build: Callable[[Case, Path], Any], case: Case, entry: Path) -> str | None:
    """`build` one case; the error text instead of raising (reported per patient)."""
    try:
        build(case, entry)
    except Exception as err:
        return str(err) if isinstance(err, DataError) else f"[patient {case['id']}] {err!r}"
    return None


def _record(report: PrepareReport, case_id: str, error: str | None) -> None:
    if error is None:
        report.prepared.append(case_id)
    else:
        report.failed.append(Failure(case_id, error))
