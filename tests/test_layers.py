"""The package's layering rule (docs/architecture.md), enforced by walking its imports.

runtime ← data / models / losses ← eval ← tasks: a module may import its own layer or a lower
one, never a higher one; no module reaches into another module's private (`_name`) names;
importing the package changes no process-wide setting; no module grows past ~450 lines.
"""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "prepnet_jax"
RANK = {"runtime": 0, "data": 1, "models": 1, "losses": 1, "eval": 2, "tasks": 3}
MAX_LINES = 450


def _modules() -> list[tuple[str, pathlib.Path]]:
  out = []
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(ROOT).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out.append((name, path))
  return out


def _layer(module: str) -> str | None:
  parts = module.split(".")
  return parts[1] if parts[0] == "prepnet_jax" and len(parts) > 1 else None


def _imports(tree: ast.AST) -> list[tuple[str, str | None]]:
  """(module, imported name or None) of every absolute import, also inside functions."""
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [(a.name, None) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found += [(node.module, a.name) for a in node.names]
    elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
          and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
      found.append((node.args[0].value, None))
  return found


def _imported_target(module: str, name: str | None) -> str:
  """`from prepnet_jax import tasks` imports the module prepnet_jax.tasks, not prepnet_jax."""
  if name and (PACKAGE.parent / (module.replace(".", "/") + f"/{name}")).exists():
    return f"{module}.{name}"
  if name and (PACKAGE.parent / (module.replace(".", "/") + f"/{name}.py")).exists():
    return f"{module}.{name}"
  return module


def test_every_layer_exists_and_the_flat_train_folder_is_gone():
  for layer in RANK:
    assert (PACKAGE / layer).is_dir() or (PACKAGE / f"{layer}.py").is_file(), layer
  assert not (PACKAGE / "train").exists()


def test_imports_go_one_way():
  upward = []
  for module, path in _modules():
    mine = _layer(module)
    for target, name in _imports(ast.parse(path.read_text())):
      other = _layer(_imported_target(target, name))
      if mine in RANK and other in RANK and RANK[other] > RANK[mine]:
        upward.append(f"{module} imports {target}{'.' + name if name else ''}")
  assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_walker_sees_an_upward_import():
  """The rule above must be able to fail: a library importing a task is caught."""
  tree = ast.parse("def f():\n  from prepnet_jax.tasks.classifier import train\n")
  targets = [_layer(_imported_target(t, n)) for t, n in _imports(tree)]
  assert targets == ["tasks"] and RANK["tasks"] > RANK["eval"]


def test_no_module_uses_another_modules_private_names():
  private = []
  for module, path in _modules():
    tree = ast.parse(path.read_text())
    aliases = set()
    for target, name in _imports(tree):
      if target.startswith("prepnet_jax") and name and name.startswith("_") and not name.startswith("__"):
        private.append(f"{module} imports {target}.{name}")
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prepnet_jax"):
        aliases |= {a.asname or a.name for a in node.names}
      elif isinstance(node, ast.Import):
        aliases |= {a.asname for a in node.names if a.asname and a.name.startswith("prepnet_jax")}
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
          and isinstance(node.value, ast.Name) and node.value.id in aliases):
        private.append(f"{module} uses {node.value.id}.{node.attr}")
  assert not private, "\n".join(private)


def test_modules_stay_readable_in_one_sitting():
  big = [f"{p.relative_to(ROOT)}: {n}" for _, p in _modules()
         if (n := p.read_text().count("\n")) > MAX_LINES]
  assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_importing_every_module_changes_no_global_setting():
  """A fresh interpreter: JAX's PRNG implementation and matplotlib's backend stay as they were."""
  probe = (
      "import jax, matplotlib\n"
      "b0, p0 = matplotlib.get_backend(), jax.config.jax_default_prng_impl\n"
      "import importlib, pkgutil, prepnet_jax\n"
      "for m in pkgutil.walk_packages(prepnet_jax.__path__, 'prepnet_jax.'):\n"
      "  importlib.import_module(m.name)\n"
      "print(jax.config.jax_default_prng_impl == p0, matplotlib.get_backend() == b0, p0)\n")
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_DEFAULT_PRNG_IMPL", "MPLBACKEND")}
  out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  prng_kept, backend_kept, prng = out.stdout.split()[-3:]
  assert (prng_kept, backend_kept) == ("True", "True")
  assert prng == "threefry2x32"  # JAX's own default, untouched by the package
