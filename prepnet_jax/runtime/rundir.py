"""The run directory (`--workdir`): its resolved config and its reports, written one way.

Layout: `config.json` (the resolved config; a later job rebuilds the model from it),
`checkpoints/` (see `checkpointing`), `reports/<name>.json` (machine-readable) beside
`reports/<name>.md` (human-readable) and figures, and `reports/index.html`, one page showing
them all (`write_index`, after the job). Only process 0 writes, so a multi-host run produces
one copy.
"""

from __future__ import annotations

import html
import json
import os
import urllib.parse
from typing import Any

import jax
import ml_collections

CONFIG_FILE = "config.json"
REPORTS = "reports"
INDEX = "index.html"
JSON_PREVIEW_CHARS = 20_000  # a JSON report longer than this is linked, its preview cut
# Fields added after runs were written, with the value those runs used: a model rebuilt from an
# older config.json computes as it was trained (float32 before `half_precision` existed).
LEGACY_DEFAULTS = {"half_precision": False}


def reports_dir(workdir: str) -> str:
  path = os.path.join(workdir, REPORTS)
  os.makedirs(path, exist_ok=True)
  return path


def write_config(config, workdir: str, overwrite: bool = True) -> str:
  """`config.json` of the run (main.py writes it before dispatching the job)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if jax.process_index() == 0 and (overwrite or not os.path.exists(path)):
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
      json.dump(config.to_dict() if hasattr(config, "to_dict") else config, f, indent=2, default=str)
  return path


def read_config(workdir: str, what: str = "training") -> ml_collections.ConfigDict:
  """The resolved config a finished run left in its workdir; a clear error when there is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist; expected the workdir of a finished {what} run "
                            "(main.py writes config.json there)")
  with open(path) as f:
    values = json.load(f)
  return ml_collections.ConfigDict({**LEGACY_DEFAULTS, **values})


def write_report(workdir: str, name: str, payload: Any, markdown: str | None = None, *,
                 indent: int = 2) -> str:
  """`reports/<name>.json` and, when given, `reports/<name>.md`; returns the JSON path.

  `name` may contain folders (`'rowA/diagnostics'`). Floats from numpy are written as floats.
  """
  path = os.path.join(workdir, REPORTS, f"{name}.json")
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      json.dump(payload, f, indent=indent, default=_to_json)
    if markdown is not None:
      with open(os.path.join(workdir, REPORTS, f"{name}.md"), "w") as f:
        f.write(markdown if markdown.endswith("\n") else markdown + "\n")
  return path


def _to_json(value):
  if hasattr(value, "item"):  # numpy / jax scalars
    return value.item()
  if hasattr(value, "tolist"):
    return value.tolist()
  return str(value)


def write_index(workdir: str) -> str | None:
  """`reports/index.html`: every Markdown report rendered (tables as HTML tables), every JSON
  report linked (with a folded preview) and every PNG shown with its name as caption, folder by
  folder. Links are relative, so the page works wherever reports/ is copied; it has no script
  and no external resource. Returns its path; None without reports/ (or on processes > 0)."""
  from markdown_it import MarkdownIt  # rich's Markdown renderer, installed with flax
  reports = os.path.join(workdir, REPORTS)
  if jax.process_index() != 0 or not os.path.isdir(reports):
    return None
  render = MarkdownIt("js-default").render  # raw HTML in a report is shown as text, not run
  sections = []
  for folder, _, files in sorted(os.walk(reports)):
    relative = os.path.relpath(folder, reports)
    prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
    parts = []
    for name in sorted(f for f in files if f.endswith(".md")):
      with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
        parts.append(f'<section class="report"><p class="file">{_link(prefix + name)}</p>{render(f.read())}</section>')
    for name in sorted(f for f in files if f.endswith(".json")):
      with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
        text = f.read(JSON_PREVIEW_CHARS + 1)
      cut = f" (first {JSON_PREVIEW_CHARS:,} characters)" if len(text) > JSON_PREVIEW_CHARS else ""
      parts.append(f"<details><summary>{_link(prefix + name)}{cut}</summary>"
                   f"<pre>{html.escape(text[:JSON_PREVIEW_CHARS])}</pre></details>")
    for name in sorted(f for f in files if f.lower().endswith(".png")):
      href, text = _href(prefix + name), html.escape(prefix + name)
      parts.append(f'<figure><a href="{href}"><img src="{href}" alt="{text}" loading="lazy"></a>'
                   f"<figcaption>{text}</figcaption></figure>")
    if parts:
      sections.append(f"<h2>{html.escape(prefix or 'reports/')}</h2>\n" + "\n".join(parts))
  title = html.escape(f"Reports of {os.path.basename(os.path.abspath(workdir))}")
  page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
          f"<style>{_INDEX_STYLE}</style></head>\n<body><h1>{title}</h1>\n" + "\n".join(sections)
          + "\n</body></html>\n")
  path = os.path.join(reports, INDEX)
  with open(path, "w", encoding="utf-8", errors="backslashreplace") as f:  # undecodable file names
    f.write(page)
  return path


_INDEX_STYLE = ("body{font-family:sans-serif;margin:1.5em;max-width:80em}table{border-collapse:collapse;"
                "display:block;overflow-x:auto;font-size:90%}th,td{border:1px solid #ccc;padding:2px 6px}"
                "figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top;max-width:100%}"
                "img{max-width:100%;max-height:34em;border:1px solid #ddd}figcaption,.file{font-size:85%;"
                "color:#555}pre{max-height:30em;overflow:auto;background:#f6f6f6;padding:.5em}"
                "section.report{border-top:1px solid #ddd;margin-top:1em}section.report h1{font-size:1.3em}"
                "section.report h2{font-size:1.1em}")


def _href(relative_path: str) -> str:
  """A relative URL of a file under reports/, percent-encoded, then escaped for an attribute."""
  return html.escape(urllib.parse.quote(relative_path, errors="surrogateescape"))


def _link(relative_path: str) -> str:
  return f'<a href="{_href(relative_path)}">{html.escape(relative_path)}</a>'
