"""Orbax checkpoints of a whole run: the state pytree plus JSON metadata, each step verified.

A rerun with the same workdir restores the latest step (model, optimizer, RNG, step) and the
metadata (data-iterator position, epoch, best validation metric, ...). Saves are synchronous
and orbax finalises a step directory atomically, so a run killed with SIGKILL mid-save leaves
the previous checkpoint intact and restorable.

Orbax reads whatever bytes it finds: flipped bytes in an array chunk restore silently as wrong
weights, a truncated one fails deep in tensorstore. So once orbax has finished a save, the
size and SHA-256 of every file of the step go to `<step>/checksums.json` (`MANIFEST`), and
every read checks them first. Restoring "the latest" step takes the newest intact one and says
which newer ones it skipped and why; a named step, or no intact step at all, is a
`CheckpointCorruptError` that names each bad checkpoint and its reason. A step without a
manifest (written before manifests existed, or killed between orbax's finalisation and the
manifest) is restored with a warning, and only an orbax read error rejects it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from prepnet_jax.runtime import sharding

MANIFEST = "checksums.json"
CORRUPT_SUFFIX = ".corrupt"  # a rejected step directory moved aside by `resume`: out of orbax's
                             # step namespace (a rerun cannot pick it again), kept for inspection

# How tensorstore reports bytes it could not read or decode; orbax passes them on as ValueError.
# A state template that does not fit the checkpoint is a ValueError too, but without these codes.
_READ_ERROR = re.compile(r"^(DATA_LOSS|OUT_OF_RANGE|FAILED_PRECONDITION|NOT_FOUND|INTERNAL|UNKNOWN|"
                         r"INVALID_ARGUMENT|UNAVAILABLE|ABORTED): ")


class CheckpointCorruptError(RuntimeError):
  """A checkpoint that must not be trained on or served: its files differ from what was written."""


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def _files(step_dir: str) -> list[str]:
  """Every file of a step directory but the manifest, as sorted paths relative to it."""
  found = []
  for root, _, names in os.walk(step_dir):
    found += [os.path.relpath(os.path.join(root, n), step_dir) for n in names]
  return sorted(f for f in found if f != MANIFEST and not f.startswith(MANIFEST + "."))


def write_manifest(step_dir: str) -> None:
  """Size and SHA-256 of every file of a finished step, written atomically (temporary file,
  fsync, rename): a kill leaves either no manifest or a whole one."""
  files = {rel: {"size": os.path.getsize(os.path.join(step_dir, rel)),
                 "sha256": _sha256(os.path.join(step_dir, rel))} for rel in _files(step_dir)}
  path = os.path.join(step_dir, MANIFEST)
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    json.dump({"format": 1, "files": files}, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  fd = os.open(step_dir, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def check_manifest(step_dir: str) -> str | None:
  """'' when every file matches the manifest, None when there is no manifest, else the reason."""
  path = os.path.join(step_dir, MANIFEST)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      files = json.load(f)["files"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    return f"its manifest {MANIFEST} is unreadable ({type(e).__name__}: {e})"
  for rel, want in sorted(files.items()):
    full = os.path.join(step_dir, rel)
    try:
      size = os.path.getsize(full)
      if size != want["size"]:
        kind = "truncated" if size < want["size"] else "grown"
        return f"{rel} is {size} bytes, {want['size']} were written ({kind})"
      if _sha256(full) != want["sha256"]:
        return f"{rel} does not match its SHA-256 (bytes changed since the save)"
    except FileNotFoundError:
      return f"{rel} is missing"
    except OSError as e:
      return f"{rel} cannot be read ({type(e).__name__}: {e})"
  return ""


def is_read_error(error: BaseException) -> bool:
  """Orbax/tensorstore failed on the bytes (as opposed to a template that does not fit)."""
  if isinstance(error, (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError)):
    return True
  return isinstance(error, ValueError) and bool(_READ_ERROR.match(str(error)))


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:300] if text else ''}"


class Checkpointer:
  """Step-indexed checkpoints in `directory`; `max_to_keep=None` keeps every step.

  After a read, `restored_step` is the step it used and `rejected` the (step, reason) pairs of the
  newer steps it skipped as corrupt (what `resume` moves aside).
  """

  def __init__(self, directory: str, max_to_keep: int | None = 2):
    self.directory = os.path.abspath(directory)
    self._name_format = ocp.step.standard_name_format()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False,
        step_name_format=self._name_format)
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._problems: dict[int, str | None] = {}  # step → check_manifest's answer or a read error
    self._warned: set[int] = set()     # steps restored unverified, already said so
    self._announced: set[int] = set()  # corrupt steps already named in a fallback message
    self.restored_step: int | None = None
    self.rejected: list[tuple[int, str]] = []

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def step_directory(self, step: int) -> str:
    return str(ocp.step.build_step_path(self.directory, self._name_format, int(step)))

  def save(self, step: int, state: Any, meta: dict | None = None) -> None:
    step = int(step)
    if step in self._manager.all_steps():  # a resumed run re-reaching a saved step
      self._manager.delete(step)
    self._problems.pop(step, None)
    self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(_globally_placed(state)),
                                meta=ocp.args.JsonSave(meta or {})),
        force=True)
    self._manager.wait_until_finished()
    if jax.process_index() == 0:  # orbax finalised every process's files before returning
      write_manifest(self.step_directory(step))
    _sync(f"checkpoint manifest {self.directory} {step}")  # no process reads the step without it

  def verify(self, step: int) -> str | None:
    """'' = intact by its manifest, None = no manifest (older runs), else why it is corrupt."""
    step = int(step)
    if step not in self._problems:
      self._problems[step] = check_manifest(self.step_directory(step))
    return self._problems[step]

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores into the structure of `abstract_state` (from `jax.eval_shape` or a real state);
    step None = the newest intact step."""
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)
    restored = self._read(step, lambda s: self._manager.restore(
        s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                   meta=ocp.args.JsonRestore())))
    return restored.state, dict(restored.meta or {})

  def restore_tree(self, step: int | None = None) -> tuple[dict, dict]:
    """The state of `step` (None = the newest intact) as saved, nested dicts of numpy arrays keyed
    by field name, with no template: for readers that need one part of a state (a trained
    generator's weights) without building the networks and optimizers of the rest."""
    restored = self._read(step, lambda s: self._manager.restore(
        s, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())))
    return restored.state, dict(restored.meta or {})

  def read_meta(self, step: int | None = None) -> dict:
    """Only the JSON metadata of a step (e.g. to build the restore template); step None = the
    newest intact step, the one `restore` then picks; {} without any checkpoint."""
    if step is None and self.latest_step() is None:
      return {}
    restored = self._read(step, lambda s: self._manager.restore(
        s, args=ocp.args.Composite(meta=ocp.args.JsonRestore())))
    return dict(restored.meta or {})

  def _read(self, step: int | None, read: Callable[[int], Any]) -> Any:
    """`read(s)` of the named step, or of the newest step that passes its manifest and reads
    without a storage error; corrupt steps are skipped with a message, or named in the error."""
    if step is not None and int(step) not in self._manager.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; "
                              f"available steps: {self.all_steps()}")
    candidates = [int(step)] if step is not None else sorted(self._manager.all_steps(), reverse=True)
    if not candidates:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    rejected = []
    for s in candidates:
      problem = self.verify(s)
      if problem:
        rejected.append((s, problem))
        continue
      try:
        result = read(s)
      except Exception as e:  # storage errors only (is_read_error): a misfit template propagates
        if not is_read_error(e):
          raise
        self._problems[s] = f"orbax could not read it ({_first_line(e)})"
        rejected.append((s, self._problems[s]))
        continue
      if problem is None and s not in self._warned:
        self._warned.add(s)
        print(f"[checkpoint] WARNING: {self.step_directory(s)} has no {MANIFEST} (written before "
              "checkpoints had checksums, or killed right after the save): restored unverified",
              flush=True)
      if {r for r, _ in rejected} - self._announced:  # once (read_meta, then restore)
        self._announced |= {r for r, _ in rejected}
        print(f"[checkpoint] {self._describe(rejected)}; using step {s}, the newest intact "
              f"checkpoint in {self.directory}", flush=True)
      self.restored_step, self.rejected = s, rejected
      return result
    if step is not None:
      raise CheckpointCorruptError(f"checkpoint {self.step_directory(step)} is corrupt: "
                                   f"{rejected[0][1]}; it cannot be restored")
    raise CheckpointCorruptError(
        f"no intact checkpoint in {self.directory}: {self._describe(rejected)}. Nothing was "
        "restored; move these step directories away (or the whole directory, to start afresh)")

  def _describe(self, rejected: list[tuple[int, str]]) -> str:
    return "; ".join(f"{self.step_directory(s)} is corrupt: {why}" for s, why in rejected)

  def quarantine(self, steps: list[int]) -> list[str]:
    """Moves the directories of `steps` to `<step>.corrupt` beside them, out of orbax's steps, so
    later saves and reads never meet them again; returns where they went (on process 0)."""
    _sync(f"checkpoint quarantine {self.directory}")  # every process has finished reading them
    moved = []
    for s in steps:
      self._problems.pop(s, None)
      self._announced.discard(s)
      if jax.process_index() != 0:
        continue
      target, n = self.step_directory(s) + CORRUPT_SUFFIX, 1
      while os.path.exists(target):
        target, n = f"{self.step_directory(s)}{CORRUPT_SUFFIX}-{n}", n + 1
      os.rename(self.step_directory(s), target)
      moved.append(target)
    _sync(f"checkpoint quarantined {self.directory}")
    self._manager.reload()
    return moved

  def close(self) -> None:
    self._manager.close()


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _globally_placed(tree: Any) -> Any:
  """With several processes orbax writes each array once, from the process holding replica 0, so
  an array on one process's own device (a PRNG key after `jax.device_get`) must first become a
  replicated global array; numpy arrays and global arrays are saved as they are."""
  if jax.process_count() == 1:
    return tree
  mesh = sharding.make_mesh()

  def place(x):
    if isinstance(x, jax.Array) and x.is_fully_addressable:
      return sharding.replicate(x, mesh)
    return x

  return jax.tree_util.tree_map(place, tree)


def resume(ckpt: Checkpointer, template: Any, workdir: str, *, resume_workdir: str = "",
           resume_step: int = -1) -> tuple[Any, dict, str]:
  """The one resume rule of every job: (state, meta, how) from `ckpt`, a branch point, or fresh.

  Own checkpoints win: a rerun with the same workdir continues where it stopped. Without any,
  `resume_step` (−1 = latest) of `resume_workdir` is restored (the thesis's "second wind": the
  original run keeps every checkpoint). In place, `resume_step` must be the latest step, since
  training on from an earlier one would overwrite the later checkpoints. `template` is the
  fresh state (or its `jax.eval_shape`); it is returned as is when nothing is restored.
  Corrupt checkpoints (see the module doc) are never trained on: the newest intact own step is
  resumed, the newer corrupt ones moved to `<step>.corrupt`; with none intact, or a named step
  corrupt, `CheckpointCorruptError` stops the run.
  """
  branching = bool(resume_workdir) and os.path.abspath(resume_workdir) != os.path.abspath(workdir)
  latest = ckpt.latest_step()
  if latest is not None and (branching or resume_step < 0):
    state, meta = ckpt.restore(template)  # the newest intact step; newer corrupt ones are named
    how = f"resumed from step {ckpt.restored_step} in {ckpt.directory}"
    if ckpt.rejected:  # out of the way of this run's saves, kept for inspection
      moved = ckpt.quarantine([s for s, _ in ckpt.rejected])
      how += f" (corrupt newer checkpoint(s) skipped{': moved to ' + ', '.join(moved) if moved else ''})"
      print(f"[checkpoint] {how}", flush=True)
    return state, meta, how
  if branching:
    source = Checkpointer(os.path.join(resume_workdir, "checkpoints"), None)
    state, meta = source.restore(template, None if resume_step < 0 else resume_step)
    return state, meta, f"restarted from step {int(jax.device_get(state.step))} of {source.directory}"
  if resume_step >= 0:
    if latest is None or resume_step not in ckpt.all_steps():
      raise FileNotFoundError(f"resume_step={resume_step}: no such checkpoint in {ckpt.directory} "
                              f"(available: {ckpt.all_steps()})")
    if resume_step != latest:
      raise ValueError(f"resume_step={resume_step} is earlier than the latest checkpoint {latest} "
                       f"of {workdir}; to restart from it keep this run intact and branch: "
                       f"--config.resume_workdir={workdir} --config.resume_step={resume_step} "
                       f"--workdir=<new directory>")
    state, meta = ckpt.restore(template, resume_step)
    return state, meta, f"resumed from step {resume_step} in {ckpt.directory}"
  return template, {}, "fresh start"
