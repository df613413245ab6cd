"""Running the book's chapters with papermill and building the book.

A chapter is ``book/<stem>.ipynb``; its ``parameters`` cell holds the ``default`` preset.
``book/presets.yml`` holds, per chapter, the overrides of the other presets (``smoke`` for
CI, ``paper`` for the papers' models and data on a GPU). Parameters are checked before any
kernel starts: names and types against the parameters cell, values against the chapter's
entry in ``book/parameters.yml`` (ranges, allowed names, bounds from the model's config); those
checks live in :mod:`bertdims.book.parameters`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..core._validate import ConfigError
from .parameters import (PRESETS, chapter_path, chapter_stems, check_parameters,  # noqa: F401
                         declared_parameters, execution_order, load_declarations, load_presets,
                         project_root, resolve_parameters, results_root)
from ..core.progress import PROGRESS_ENV


class ChapterFailed(RuntimeError):
    """A chapter raised while executing; the failed notebook is kept for inspection."""


# ------------------------------------------------------------------------------ running
#: Environment of a chapter's kernel: no library progress bars, no warning text, quiet
#: transformers/datasets logging. The build's own progress (papermill's bar over the cells,
#: a line per chapter) goes to the terminal that runs it. A variable the user set wins.
KERNEL_ENV = {
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DATASETS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore",
}


@contextlib.contextmanager
def kernel_env(extra: dict | None = None):
    """Set :data:`KERNEL_ENV` (where unset) while a kernel starts; restore afterwards."""
    wanted = {k: v for k, v in {**KERNEL_ENV, **(extra or {})}.items() if k not in os.environ}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for k in wanted:
            os.environ.pop(k, None)


def run_chapter(name: str, *, preset: str = "default", params: dict | None = None,
                out_dir: str | os.PathLike | None = None, root: Path | None = None,
                progress: bool = True, prepare_only: bool = False, plan=None,
                prefix: str | None = None, later_seconds: float | None = 0.0) -> Path:
    """Execute one chapter with papermill into ``out_dir`` and return the output notebook.

    The parameters (the preset's, then ``params`` over them) are checked before the kernel
    starts. Results go to the store at ``$BERTDIMS_RESULTS`` (default ``<root>/results``),
    which is set, as an absolute path, in this process's environment for the kernel. Beside
    the notebook, ``<stem>.parameters.json`` records the preset and the injected parameters.

    With ``progress``, the runs the kernel computes are reported on the terminal (the kernel
    writes them to ``$BERTDIMS_PROGRESS``, :mod:`bertdims.core.progress`).

    Parameters
    ----------
    name : str
        The chapter: its stem (e.g. ``"01_model_and_tasks"``), its number prefix (``"01"``)
        or a notebook path.
    preset : str
        One of :data:`bertdims.book.parameters.PRESETS` (``"smoke"``, ``"default"``, ``"paper"``).
    params : dict, optional
        Parameter overrides, over the preset's values.
    out_dir : str or os.PathLike, optional
        The output folder; None: ``<root>/_build/executed/<preset>/``, or
        ``<root>/_build/runs/<stem>-<preset>-<hash>/`` when ``params`` overrides parameters.
    root : Path, optional
        The project root (the folder with ``_toc.yml`` and ``book/``); None: found from
        ``$BERTDIMS_ROOT`` or upwards from the working directory.
    progress : bool
        Show papermill's bar over the cells and report the runs the kernel computes.
    prepare_only : bool
        Only inject the parameters, without executing the notebook (e.g. for nbval); no runs
        are reported.
    plan : bertdims.book.plan.ChapterPlan, optional
        The chapter's plan, which gives the number of runs to report and their estimated
        times.
    prefix : str, optional
        The tag at the start of each progress line; None: ``[<stem>]``.
    later_seconds : float, optional
        The estimated seconds of the chapters still to run after this one (None: unknown).

    Returns
    -------
    Path
        The executed (or, with ``prepare_only``, prepared) notebook, ``<out_dir>/<stem>.ipynb``.

    Raises
    ------
    ConfigError
        An unknown chapter or preset, or a parameter that is not declared, has the wrong type
        or a value the chapter does not allow.
    ChapterFailed
        A cell raised; the failed notebook is kept as ``<out_dir>/<stem>.failed.ipynb``.
    """
    import papermill

    root = root or project_root()
    path = chapter_path(name, root)
    injected = resolve_parameters(path, preset, params, root)
    check_parameters(path, injected, root)
    if out_dir is None:
        if params:
            tag = hashlib.sha256(json.dumps([preset, params], sort_keys=True, default=str)
                                 .encode()).hexdigest()[:8]
            out_dir = root / "_build" / "runs" / f"{path.stem}-{preset}-{tag}"
        else:
            out_dir = root / "_build" / "executed" / preset
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # absolute: the kernel runs in the chapter's folder, where a relative path means another store
    os.environ["BERTDIMS_RESULTS"] = str(results_root(root))
    final = out_dir / path.name
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".running-") as tmp:
        scratch = Path(tmp) / path.name
        events = Path(tmp) / "progress.jsonl"
        follow = progress and not prepare_only
        try:
            with kernel_env({PROGRESS_ENV: str(events)} if follow else None), \
                    _following(follow, prefix or f"[{path.stem}]", plan, later_seconds):
                papermill.execute_notebook(str(path), str(scratch), parameters=injected,
                                           cwd=str(path.parent), progress_bar=progress,
                                           prepare_only=prepare_only, kernel_name="python3",
                                           log_output=False, report_mode=False)
        except papermill.PapermillExecutionError as err:
            failed = out_dir / f"{path.stem}.failed.ipynb"
            shutil.copyfile(scratch, failed)
            raise ChapterFailed(f"chapter {path.stem} failed in cell {err.exec_count}: "
                                f"{err.ename}: {err.evalue} (executed notebook: {failed})") from None
        os.replace(scratch, final)
    (out_dir / f"{path.stem}.parameters.json").write_text(
        json.dumps({"preset": preset, "parameters": injected}, indent=2, default=str))
    return final


@contextlib.contextmanager
def _following(on: bool, prefix: str, plan, later_seconds: float | None):
    """Follow the progress file the kernel writes (``$BERTDIMS_PROGRESS``) while it runs."""
    if not on or not os.environ.get(PROGRESS_ENV):
        yield
        return
    from ..core.progress import REPORTED_KINDS, Follower
    todo = [] if plan is None else [(r.kind, r.key, r.label, r.seconds) for r in plan.todo
                                    if r.kind in REPORTED_KINDS]
    path = Path(os.environ[PROGRESS_ENV])
    follower = Follower(path, prefix, todo, later_seconds)
    follower._offset = path.stat().st_size if path.exists() else 0   # a file the user named
    with follower:
        yield


def print_plan(preset: str, chapters: list[str] | None, root: Path,
               overrides: dict | None = None):
    """Print the plan of the runs the chapters will ask for (:mod:`bertdims.book.plan`) and return
    it; a planner that fails says so in one line and the chapters run without a plan."""
    from .plan import make_plan
    from ..core.store import ResultStore
    try:
        plan = make_plan(preset, chapters, store=ResultStore(results_root(root)), root=root,
                         overrides=overrides)
    except ConfigError:
        raise
    except Exception as err:      # the plan informs; it never stops a build
        print(f"bertdims: no plan of the runs ({type(err).__name__}: {err})", flush=True)
        return None
    print(plan.render(), flush=True)
    return plan


def render_page(notebook: str | os.PathLike, *, root: Path | None = None,
                out_dir: str | os.PathLike | None = None) -> Path:
    """Build one executed chapter as an HTML page like the book's (the book's
    ``_config.yml``, offline Vega and MathJax); returns the page's HTML file. The page is
    built in ``<out_dir>/html`` (default: the notebook's folder)."""
    from .webassets import write_static
    root = root or project_root()
    notebook = Path(notebook).resolve()
    out = Path(out_dir).resolve() if out_dir is not None else notebook.parent
    src = out / "page-src"
    shutil.rmtree(src, ignore_errors=True)
    (src / "book").mkdir(parents=True)
    shutil.copyfile(root / "_config.yml", src / "_config.yml")
    (src / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book",
                                                   "root": f"book/{notebook.stem}"}))
    shutil.copyfile(notebook, src / "book" / notebook.name)
    write_static(src / "_static")
    _jupyter_book(src, out, root)
    return out / "_build" / "html" / "book" / f"{notebook.stem}.html"


def _jupyter_book(src: Path, out: Path, root: Path) -> None:
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(src),
           "--path-output", str(out), "-W", "--quiet"]
    if not Path(cmd[0]).exists():
        cmd[0] = "jupyter-book"
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ChapterFailed("jupyter-book build failed:\n" + proc.stdout[-4000:] + proc.stderr[-4000:])


#: Pages that only read what the other chapters stored (the scorecard): shown where the table
#: of contents puts them, executed after every other chapter.
def build_book(preset: str = "default", *, root: Path | None = None,
               chapters: list[str] | None = None, execute: bool = True,
               progress: bool = True) -> Path:
    """Execute the chapters and build the HTML book with ``jupyter-book build -W``.

    Every chapter's parameters are checked before the first kernel starts. The chapters run
    with :func:`run_chapter` into ``<root>/_build/executed/<preset>/``, in table-of-contents
    order with the pages that only read stored results (the scorecard) last; a chapter reads
    stored results where the configs match instead of computing them again.

    Parameters
    ----------
    preset : str
        One of :data:`bertdims.book.parameters.PRESETS` (``"smoke"``, ``"default"``, ``"paper"``).
    root : Path, optional
        The project root (the folder with ``_toc.yml`` and ``book/``); None: found from
        ``$BERTDIMS_ROOT`` or upwards from the working directory.
    chapters : list of str, optional
        A subset of chapters (stems, number prefixes or notebook paths), built with a table
        of contents of their own; None: every chapter.
    execute : bool
        Execute every chapter; False: reuse the executed notebooks under
        ``_build/executed/<preset>/`` where present and execute only the missing ones.
    progress : bool
        Print the plan of the runs (:mod:`bertdims.book.plan`) and report progress while the
        chapters run.

    Returns
    -------
    Path
        The book's start page, ``<root>/_build/html/index.html``.

    Raises
    ------
    ConfigError
        An unknown chapter or preset, or a chapter parameter (its default or the preset's
        value) that is not declared, has the wrong type or a value that is not allowed.
    ChapterFailed
        A chapter raised while executing, or ``jupyter-book build`` failed.
    """
    from .webassets import write_static

    root = root or project_root()
    stems = chapter_stems(root) if chapters is None else [chapter_path(c, root).stem for c in chapters]
    executed = root / "_build" / "executed" / preset
    for stem in stems:   # every chapter's parameters, before the first kernel starts
        path = root / "book" / f"{stem}.ipynb"
        check_parameters(path, resolve_parameters(path, preset, None, root), root)
    order = execution_order(stems)
    todo = [s for s in order if execute or not (executed / f"{s}.ipynb").exists()]
    plan = print_plan(preset, todo, root) if todo and progress else None
    by_stem = {c.stem: c for c in plan.chapters} if plan is not None else {}
    for i, stem in enumerate(order, 1):
        if stem in todo:
            print(f"[{i}/{len(stems)}] executing {stem} (preset {preset})", flush=True)
            later = [by_stem[s].seconds for s in todo[todo.index(stem) + 1:] if s in by_stem]
            run_chapter(stem, preset=preset, out_dir=executed, root=root, progress=progress,
                        plan=by_stem.get(stem), prefix=f"[{stem} {i}/{len(stems)}]",
                        later_seconds=None if plan is None or None in later else sum(later))
    src = root / "_build" / "src"
    shutil.rmtree(src, ignore_errors=True)
    (src / "book").mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copyfile(root / name, src / name)
    if chapters is not None:
        _write_subset_toc(src / "_toc.yml", stems)
    for md in (root / "book").glob("*.md"):
        shutil.copyfile(md, src / "book" / md.name)
    for stem in stems:
        shutil.copyfile(executed / f"{stem}.ipynb", src / "book" / f"{stem}.ipynb")
    write_static(src / "_static")
    _jupyter_book(src, root, root)
    return root / "_build" / "html" / "index.html"


def _write_subset_toc(path: Path, stems: list[str]) -> None:
    toc = yaml.safe_load(path.read_text())
    toc["chapters"] = [c for c in toc.get("chapters", []) if Path(c["file"]).name in stems]
    path.write_text(yaml.safe_dump(toc, sort_keys=False))


# ---------------------------------------------------------------------------------- CLI
def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


KEEP_MODELS_HELP = ("keep the encoder weights of every fine-tuning run (default: only of runs a "
                    "later step loads; the others keep metrics, curves, predictions and the head)")


def _keep_models(args) -> None:
    if getattr(args, "keep_models", False):
        from ..train.finetuning import KEEP_MODELS_ENV
        os.environ[KEEP_MODELS_ENV] = "1"        # read by the kernels, which inherit it


SCHEDULER_HELP = ("submit the grids' runs to the Dask scheduler at this address (e.g. "
                  "tcp://host:8786; default $BERTDIMS_SCHEDULER); its workers must see the results folder")
WORKERS_HELP = ("start a Dask cluster of N worker processes on this machine for the grids' runs "
                "(one GPU per worker where GPUs are visible) and close it at the end")


@contextlib.contextmanager
def _cluster(args):
    """``--scheduler ADDRESS`` or ``--workers N``: the Dask cluster the chapters' grids submit
    their runs to (:mod:`bertdims.train.executor`), given to the kernels as ``$BERTDIMS_SCHEDULER``.
    Checked (the scheduler answers, N is allowed) before any chapter runs."""
    from ..train import executor
    from ..core._validate import bad, check_range
    scheduler, workers = getattr(args, "scheduler", None), getattr(args, "workers", None)
    if scheduler is not None and workers is not None:
        raise bad("workers", workers, "give either --workers (a cluster on this machine) or "
                  "--scheduler (a running one), not both")
    if workers is not None:
        check_range("workers", workers, 1, None, integer=True)
        with executor.local_cluster(workers) as address:
            print(f"Dask cluster of {workers} workers at {address}", flush=True)
            with _environ(executor.SCHEDULER_ENV, address):
                yield
        return
    address = scheduler if scheduler is not None else os.environ.get(executor.SCHEDULER_ENV)
    if address is not None and address.strip():
        address = executor.check_scheduler(address)
        with _environ(executor.SCHEDULER_ENV, address):
            yield
        return
    yield


@contextlib.contextmanager
def _environ(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value            # the kernels inherit it
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def register_cli(sub) -> None:
    p = sub.add_parser("run", help="execute one chapter with papermill")
    p.add_argument("chapter", help="chapter stem (e.g. 01_model_and_tasks) or its number (01)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="override a parameter (VALUE parsed as YAML)")
    p.add_argument("--preset", default="default", help="smoke | default | paper")
    p.add_argument("--out", default=None, help="output folder (default under _build/)")
    p.add_argument("--prepare-only", action="store_true",
                   help="inject the parameters without executing (e.g. for nbval)")
    p.add_argument("--html", action="store_true",
                   help="also build the executed chapter as an HTML page like the book's")
    p.add_argument("--keep-models", action="store_true", help=KEEP_MODELS_HELP)
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help=SCHEDULER_HELP)
    p.add_argument("--workers", type=int, default=None, metavar="N", help=WORKERS_HELP)
    p.set_defaults(func=_cmd_run)

    b = sub.add_parser("book", help="execute every chapter and build the HTML book")
    b.add_argument("--preset", default="default", help="smoke | default | paper")
    b.add_argument("--chapters", default=None, help="comma-separated subset of chapters")
    b.add_argument("--no-execute", action="store_true",
                   help="reuse executed notebooks under _build/executed/<preset>/ where present")
    b.add_argument("--keep-models", action="store_true", help=KEEP_MODELS_HELP)
    b.add_argument("--scheduler", default=None, metavar="ADDRESS", help=SCHEDULER_HELP)
    b.add_argument("--workers", type=int, default=None, metavar="N", help=WORKERS_HELP)
    b.set_defaults(func=_cmd_book)

    q = sub.add_parser("prepare", help="write every chapter with a preset's parameters injected, "
                       "unexecuted (for nbval)")
    q.add_argument("--preset", default="smoke", help="smoke | default | paper")
    q.add_argument("--out", required=True, help="output folder")
    q.set_defaults(func=_cmd_prepare)

    c = sub.add_parser("chapters", help="list the chapters and their parameters")
    c.set_defaults(func=_cmd_chapters)

    from .plan import register_cli as register_plan
    register_plan(sub)


def _cmd_run(args) -> int:
    _keep_models(args)
    params = {name: _parse_value(value) for name, value in args.parameter}
    root = project_root()
    stem = chapter_path(args.chapter, root).stem
    path = root / "book" / f"{stem}.ipynb"
    check_parameters(path, resolve_parameters(path, args.preset, params, root), root)
    cluster = contextlib.nullcontext() if args.prepare_only else _cluster(args)
    try:
        with cluster:
            plan = None if args.prepare_only else print_plan(args.preset, [stem], root, {stem: params})
            out = run_chapter(stem, preset=args.preset, params=params, out_dir=args.out, root=root,
                              prepare_only=args.prepare_only,
                              plan=plan.chapters[0] if plan is not None and plan.chapters else None)
        print(out)
        if args.html and not args.prepare_only:
            print(render_page(out, root=root))
    except ChapterFailed as err:
        print(f"bertdims run: {err}", file=sys.stderr)
        return 1
    return 0


def _cmd_book(args) -> int:
    _keep_models(args)
    chapters = args.chapters.split(",") if args.chapters else None
    try:
        with _cluster(args):
            index = build_book(args.preset, chapters=chapters, execute=not args.no_execute)
    except ChapterFailed as err:
        print(f"bertdims book: {err}", file=sys.stderr)
        return 1
    print(index)
    return 0


def _cmd_prepare(args) -> int:
    root = project_root()
    for stem in chapter_stems(root):   # all checked before any notebook is written
        path = root / "book" / f"{stem}.ipynb"
        check_parameters(path, resolve_parameters(path, args.preset, None, root), root)
    for stem in chapter_stems():
        print(run_chapter(stem, preset=args.preset, out_dir=args.out, prepare_only=True,
                          progress=False))
    return 0


def _cmd_chapters(args) -> int:
    root = project_root()
    for stem in chapter_stems(root):
        params = declared_parameters(root / "book" / f"{stem}.ipynb")
        print(f"{stem}: " + ", ".join(f"{k}={v!r}" for k, v in params.items()))
    return 0
