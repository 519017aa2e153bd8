"""Command line: ``python -m harness.run STUDY.yaml [--set path=value] [--results DIR] [--dry-run] ...``.

Exit status (``EXIT_*``; docs/studies.md):
  0   every planned trial has its row and at least one completed (others may have failed, diverged or
      been pruned), or the plan was printed (``--dry-run``);
  1   an unexpected error while running;
  2   the study cannot run as asked (bad spec, data or option, study already exists, ...): nothing was
      created and Ray was not started;
  3   every planned trial has its row but none completed (all failed, diverged or pruned);
  4   incomplete: the time budget ran out before every trial had its row (``--resume`` continues);
  5   the Ray cluster was lost while the study ran (``harness.tune.watchdog``; ``--resume`` on a new one);
  130 interrupted (Ctrl-C), 143 by SIGTERM (128 + the signal's number, ``harness.tune.interrupt``); ``--resume``
      continues.
``study.json`` says the same (status finished / incomplete / interrupted, counts from the rows).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from emoe.data.checks import DataError
from emoe_schema import SCHEMA_VERSION, SIMULATED_NOTE
from harness.study.errors import SpecError, StudyExistsError
from harness.study.load import load_spec
from harness.study.params import NOT_IDENTITY, ParamValue, coerce, flatten
from harness.study.spec import StudySpec, dump_spec
from harness.timings import Timings
from harness.tune.interrupt import exit_code, interrupted, signal_name, signals_stop, stopped_by
from harness.tune.watchdog import EXIT_CLUSTER_LOST, lost_after_s

if TYPE_CHECKING:
    from harness.results.sink import ResultStore
    from harness.study.plan import Plan
    from harness.tune.cluster import RaySettings
    from harness.tune.runner import RunOptions, RunOutcome

__all__ = ["EXIT_CLUSTER_LOST", "EXIT_INCOMPLETE", "EXIT_INTERRUPTED", "EXIT_NONE_COMPLETED", "RESUME_FREE", "check_options",
           "check_results_root", "exit_status", "main", "parse_args", "prepare"]

EXIT_NONE_COMPLETED = 3
EXIT_INCOMPLETE = 4
EXIT_INTERRUPTED = 130
# EXIT_CLUSTER_LOST (5) is defined with the watch that ends a run whose Ray cluster was lost

#: Spec fields (top-level, or dotted) that may change between a run and its ``--resume``: how the trials
#: run, not what they compute. Stacking and resources change how trials share processes and devices (a
#: resumed run plans its stacks and Tune trials anew), and so do the ``base.`` training fields that trial
#: ids leave out (``NOT_IDENTITY``: the device, ``compile``, ``window_forward``, ``fast_path``, the
#: evaluation batch, BERT's local path): a study started on a laptop continues on a GPU machine, or with
#: ``train.compile: graphs``. Each may move a float32 result by rounding, as running it again on another
#: device would; what a trial computes stays the same.
RESUME_FREE = frozenset({"description", "concurrency", "time_budget_s", "max_failures", "report",
                         "checkpoint_min_interval_s", "resources.stack", "resources.cpus", "resources.gpus",
                         *(f"base.{path}" for path in NOT_IDENTITY)})


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="study file (YAML), e.g. studies/distill_weight.yaml")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="override a study field, value parsed as YAML (repeatable), "
                        "e.g. --set base.train.max_epochs=3 --set seeds=[1,2]")
    p.add_argument("--results", default="results", metavar="DIR", help="results root (default: results/)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and cost estimate; start nothing")
    p.add_argument("--no-measure", action="store_true", help="with --dry-run: do not time a training step")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study")
    p.add_argument("--retry-failed", action="store_true", help="with --resume: run failed trials again")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="join a running Ray cluster instead of starting a local one")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray runtime (default: all)")
    p.add_argument("--num-gpus", type=int, default=None, help="GPUs of the local Ray runtime (default: all)")
    p.add_argument("--progress-every", type=float, default=10.0, metavar="S",
                   help="seconds between progress lines (default 10)")
    p.add_argument("--verbose", action="store_true", help="show the trials' own output and Ray's logs")
    p.add_argument("--no-compact", action="store_true",
                   help="keep one file per trial and table when the run ends (see docs/results.md, Compaction)")
    return p.parse_args(argv)


def check_options(args: argparse.Namespace) -> list[str]:
    """Problems with the command-line options themselves, as messages (empty when they are usable)."""
    errors = []
    if not str(args.results).strip():
        errors.append("--results: empty; give a directory (the default is results/)")
    for name in ("num_cpus", "num_gpus"):
        value = getattr(args, name)
        least = 1 if name == "num_cpus" else 0
        if value is not None and value < least:
            errors.append(f"--{name.replace('_', '-')}: must be at least {least}, got {value}"
                          + (" (leave it out to use every CPU)" if name == "num_cpus" else ""))
    if args.retry_failed and not args.resume:
        errors.append("--retry-failed: only with --resume (it runs the failed trials of an existing study again)")
    if args.progress_every is not None and not args.progress_every > 0:
        errors.append(f"--progress-every: must be a positive number of seconds, got {args.progress_every}")
    from harness.tune.cluster import preload_override

    for read_again in (lost_after_s, preload_override):  # environment variables, read again where used
        try:
            read_again()
        except ValueError as exc:
            errors.append(str(exc))
    return errors


def exit_status(counts: dict[str, int], *, complete: bool, stopped: str | None) -> int:
    """The exit status of a run that reached its end or was stopped (see the module docstring)."""
    if stopped == "interrupted":
        return exit_code()  # 128 + the signal's number: 130 after Ctrl-C, 143 after SIGTERM
    if not complete:
        return EXIT_INCOMPLETE
    return 0 if counts.get("completed", 0) else EXIT_NONE_COMPLETED


def spec_fingerprint(spec: StudySpec) -> dict[str, ParamValue]:
    """The spec fields a resume must not change, flattened (for comparing a run with its resume)."""
    return {k: v for k, v in flatten(json.loads(spec.model_dump_json())).items() if _resume_checked(k)}


def _resume_checked(key: str) -> bool:
    """Whether a flattened spec field must keep its value across a resume (not in ``RESUME_FREE``)."""
    return key.split(".", 1)[0] not in RESUME_FREE and key not in RESUME_FREE


def _fingerprint_hash(fp: dict[str, ParamValue]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_existing(store: ResultStore, spec: StudySpec, resume: bool) -> dict[str, object] | None:
    """The previous run's study.json when resuming it; refuses to overwrite, or to resume a changed spec."""
    if not store.exists():
        found = store.result_files()
        if found:
            raise StudyExistsError(f"{store.dir} holds results ({found}) but no study.json: it was lost or deleted, "
                                   "so the study cannot be resumed or safely overwritten; restore study.json, or move "
                                   "the directory away (or choose another --results DIR or --set name=...)")
        return None
    try:
        info = store.read_info()
    except (OSError, ValueError) as exc:
        raise StudyExistsError(f"{store.info_path}: unreadable ({exc}); this directory holds a damaged study: "
                               "move it away, or choose another --results DIR or --set name=...") from None
    state = info.get("status", "running")
    if not resume:
        raise StudyExistsError(f"{store.dir} already holds study {spec.name!r} ({state}); add --resume to "
                               "continue it, or choose another --results DIR or --set name=...")
    if info.get("results_dir") not in (None, str(store.dir)):
        raise StudyExistsError(f"{store.dir}: this study was started in {info['results_dir']}; resume it there "
                               "(Tune's state refers to absolute paths)")
    saved = info.get("fingerprint")
    old: dict[str, object] = ({k: v for k, v in saved.items() if _resume_checked(k)} if isinstance(saved, dict)
                              else {})  # a study.json from before a field became free may still hold it
    new = spec_fingerprint(spec)
    changed = sorted(k for k in set(old) | set(new) if not _same_entry(k, old.get(k), new.get(k)))
    if old and changed:
        raise SpecError([f"{k}: was {old.get(k)!r} when the study started, now {new.get(k)!r}" for k in changed]
                        + ["(a resumed study must keep its spec; start a new study to change these)"])
    return info


def _same_entry(key: str, old: object, new: object) -> bool:
    """Whether a fingerprint entry is unchanged. A study fingerprinted before categorical choices and
    ``when`` values were typed kept them as written (YAML 1.1 read ``1e-5`` as text): compared typed."""
    if old == new:
        return True
    rest = key.removeprefix("search.params.")
    if rest == key:
        return False
    if rest.endswith(".choices"):
        path = rest.removesuffix(".choices")
    elif ".when." in rest:
        path = rest.split(".when.", 1)[1]
    else:
        return False
    try:
        typed = [coerce(path, v) for v in old] if isinstance(old, list) else coerce(path, old)
    except ValueError:
        return False
    return typed == new


def check_results_root(root: str) -> None:
    """The results root can be a directory: not a file, not below one, no NUL byte (``SpecError``)."""
    if "\0" in root:
        raise SpecError([f"--results: {root!r} contains a NUL byte"], source="--results")
    path = Path(root).expanduser().absolute()
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise SpecError([f"--results: {parent} exists and is not a directory"], source="--results")
            return


def prepare(args: argparse.Namespace) -> tuple[Plan, ResultStore, dict[str, object] | None]:
    """Validate everything that can be checked before starting: spec, results path, data, plan."""
    # Imported here, not at the top: they bring torch and pyarrow, which `--help` and a bad spec never need.
    from harness.results.sink import ResultStore
    from harness.study.data import load_study_data
    from harness.study.devices import check_local_devices
    from harness.study.plan import build_plan
    from harness.study.tracking import preflight
    from harness.tune.cluster import runtime_in_use

    spec = load_spec(args.spec, args.set)
    if args.address is None and not runtime_in_use():
        # a runtime this driver starts: the trials run here, so must their devices (harness/study/devices.py)
        check_local_devices(spec, source=args.spec, num_cpus=args.num_cpus, num_gpus=args.num_gpus)
    check_results_root(args.results)
    store = ResultStore(args.results, spec.name)
    previous = check_existing(store, spec, args.resume or args.dry_run)
    text_input = str(flatten(spec.base).get("model.text_input", "features"))
    data = load_study_data(spec.data, text_input=text_input)
    plan = build_plan(spec, data)
    if previous is not None:
        from harness.results.quarantine import quarantine_damaged
        from harness.results.study_provenance import data_change, data_checksum

        changed = data_change(previous, data_checksum(spec.data.path, plan.data.key))  # the data it started on
        if changed:
            raise SpecError([changed])
        # damaged result files: named, and moved aside so their trials run again
        with signals_stop("moving the damaged files aside first"):  # a move is finished, never cut short
            previous = quarantine_damaged(store, previous, dry_run=args.dry_run)
        if interrupted():
            raise KeyboardInterrupt
    preflight(spec.tracking, spec.name)  # trackers usable (packages, servers) before Ray starts
    return plan, store, previous


def _study_info(plan: Plan, store: ResultStore, version: str) -> dict[str, object]:
    from harness.results.study_provenance import study_provenance

    s = plan.spec
    fp = spec_fingerprint(s)
    return {"schema_version": SCHEMA_VERSION, "study": s.name, "kind": plan.kind, "varied": plan.varied,
            "objective": {"metric": s.objective.metric, "mode": s.mode},
            "baseline": s.ablation.baseline if s.ablation is not None else None,
            "seeds": list(s.seeds), "data": plan.data.description, "task": plan.data.task,
            "label_kind": plan.data.data.label_kind, "n_trials": plan.n_trials,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "status": "running",
            "results_dir": str(store.dir), "code_version": version, "fingerprint": fp,
            "spec_hash": _fingerprint_hash(fp),
            "provenance": study_provenance(s.data.path, plan.data.key),  # code, packages, nodes, data checksum
            "confirm": s.confirm.model_dump() if s.confirm is not None else None,  # fresh-seed confirmation
            "simulated": s.simulated}  # simulate: true, curves drawn instead of trained (harness.tune.curves)


def _trials_word(plan: Plan) -> str:
    return f"trials ({SIMULATED_NOTE})" if plan.spec.simulated else "trials"


def _finish(plan: Plan, store: ResultStore, *, report_now: bool = True, timings: Timings | None = None) -> None:
    """Print the summary and build the report the spec asks for (unless ``report_now`` is False)."""
    from harness.results.summary import format_summary

    timings = timings or Timings()
    with timings.phase("summary"):
        trials = store.read_trials()
        print(format_summary(trials, objective=plan.spec.objective.metric, mode=plan.spec.mode,
                             varied=plan.varied))
        print(f"results: {store.dir}")
    report = plan.spec.report
    if report is not None and report_now:
        with timings.phase("report"):
            try:
                from reports.build import build_report
            except ImportError:
                print("report: the reports package has no build_report yet; skipped "
                      f"(run `python -m reports {store.dir}` later)")
                return
            try:
                written = build_report(store.dir, formats=report.formats)
                print(f"report: {len(written)} files under {store.dir} (figures/, tables/, report.md)")
            except Exception as exc:  # a failed report must not lose a finished study
                print(f"report: failed ({type(exc).__name__}: {exc}); the results are intact", file=sys.stderr)


def _report_outdated(store: ResultStore) -> bool:
    """Whether the study's report is missing or older than its newest trial row (``report.md`` is written
    last, so a report cut short has none)."""
    report = store.dir / "report.md"
    if not report.exists():
        return True
    made = report.stat().st_mtime
    rows = store.table_dir("trials")
    return any(p.stat().st_mtime > made for p in rows.glob("*.parquet")) if rows.is_dir() else False


def _record_timings(store: ResultStore, timings: Timings, finished_at: str) -> None:
    """Print the run's ``time:`` line and keep its phases in study.json, unless another driver has taken the
    study over since this one released it (it holds the lock, or its run has ended since: ``finished_at``)."""
    print(timings.line())
    try:
        with store.lock():
            if store.read_info().get("finished_at") == finished_at:
                store.update_info(timings=timings.record())
    except (StudyExistsError, OSError, ValueError):
        pass


def _compact(store: ResultStore, timings: Timings | None = None) -> None:
    """Compact a study that ended with many trial files (the caller holds its lock); a failure only warns."""
    from harness.results.compact import AUTO_COMPACT_TRIALS, compact_study, part_count

    timings = timings or Timings()
    if part_count(store, "trials") < AUTO_COMPACT_TRIALS:
        return
    try:
        with timings.phase("compact"):
            report = compact_study(store, locked=True)
    except Exception as exc:  # the rows are intact in their per-trial files: a failed compaction loses nothing
        print(f"warning: compaction failed ({type(exc).__name__}: {exc}); the per-trial files are intact "
              f"(`python -m harness.compact {store.dir}` tries again)", file=sys.stderr, flush=True)
        return
    print(report, flush=True)


@contextlib.contextmanager
def _connect(plan: Plan, settings: RaySettings, timings: Timings, imports: threading.Thread | None = None
             ) -> Iterator[None]:
    """Start or join Ray for the study and check that some node can host one of its trials; then wait for
    ``imports`` (``_import_meanwhile``), which ran while Ray started."""
    # Ray is imported only once a study is to run (not for a dry run or a rejected spec).
    start = time.monotonic()
    from harness.study.plan import data_bytes
    from harness.tune.cluster import check_fits, ray_session

    # a runtime started here stops in the background while the summary and the report are made
    with ray_session(settings, data_bytes=data_bytes(plan), stop_in_background=True):
        res = plan.spec.resources
        warning = check_fits(res.cpus, res.gpus, strict=settings.address is None)
        if warning:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        if imports is not None:
            imports.join()
        timings.add("ray_start", time.monotonic() - start)
        yield


#: Imported by ``_import_meanwhile`` while Ray starts: Tune's side of the run (Ray Tune, Optuna, pandas).
RUN_MODULES = ("harness.tune.runner", "harness.tune.confirmation")
#: ... and the report's (matplotlib, seaborn, scipy) when the study makes one.
REPORT_MODULES = ("reports.build",)


def _import_meanwhile(*, report: bool) -> threading.Thread:
    """Import what the run needs once Ray is up in a thread of its own, while ``ray.init`` waits for Ray's
    processes to start (3 s of imports on this project's 2-core machine, which came before Ray's start and
    the report before): there the main job's prepare and Ray start went from 4.6-5.9 s to 4.4 s and its
    report from 6.2 s to 5.1 s. On an H200 machine only the report gained (2.8-4.7 s to 2.5-2.9 s):
    ``ray.init`` keeps the interpreter busy there. Only once the study and its data have been checked (a
    bad one never starts Ray, nor these imports). A module that fails to import here is imported again,
    and its error raised, where it is used."""
    modules = RUN_MODULES + (REPORT_MODULES if report else ())

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except BaseException:  # raised again by the import where it is used
                return

    thread = threading.Thread(target=run, name="imports", daemon=True)
    thread.start()
    return thread


def _confirmation_left(plan: Plan, store: ResultStore, retry_failed: bool) -> int:
    """Confirmation trials (``confirm:``) a resume still has to run once the tuning phase is recorded."""
    if plan.spec.confirm is None:
        return 0
    from harness.study.confirm import confirmation_plan, confirmation_trials
    from harness.tune.resume import study_state

    trials = confirmation_trials(plan, store.read_trials())
    return study_state(confirmation_plan(plan, trials), store).to_run(retry_failed) if trials else 0


def execute(args: argparse.Namespace, *, from_process_start: bool = False) -> int:
    """Prepare, then dry-run or run the study; returns the exit status. ``from_process_start``: the run's
    timings count the process's start and imports (the command line's own process).

    Ctrl-C and SIGTERM (``harness.tune.interrupt``): before the study runs (preparing it, starting Ray) they end
    the command at once, having run nothing; while it runs, the first one stops it cleanly (no further trial
    or phase starts, what finished is recorded, study.json says ``interrupted``) and a second one at once.
    Either way the exit status is 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
    with signals_stop():
        try:
            return _execute(args, from_process_start=from_process_start)
        except KeyboardInterrupt:  # before the study ran: nothing was recorded (a stop later is handled there)
            print(f"\n{stopped_by()} before the study ran; no trial ran (run the same command again)",
                  file=sys.stderr)
            return exit_code()


def _execute(args: argparse.Namespace, *, from_process_start: bool) -> int:
    t0 = time.perf_counter()  # the preparation is paid again when the study runs (--dry-run cost)
    timings = Timings.since_process_start() if from_process_start else Timings()
    from harness.tune.resume import resume_command, study_state

    problems = check_options(args)
    if problems:
        print(f"error: {SpecError(problems, source='options')}", file=sys.stderr)
        return 2
    try:
        plan, store, previous = prepare(args)
    except SpecError as exc:
        shown = SpecError(exc.errors, source=str(args.spec)) if exc.source == SpecError.STUDY_FILE else exc
        print(f"error: {shown}", file=sys.stderr)
        return 2
    except StudyExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"error: {args.spec}: data: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:  # e.g. a synthetic data set far larger than this machine's memory
        print(f"error: {args.spec}: not enough memory to prepare the study's data ({exc})", file=sys.stderr)
        return 2
    if args.dry_run:
        from harness.study.describe import describe_plan

        print(describe_plan(plan, measure=not args.no_measure, cpus=args.num_cpus, gpus=args.num_gpus,
                            prepare_s=time.perf_counter() - t0))
        state = f" (holds a {previous.get('status', 'running')} run of this study)" if previous else ""
        print(f"results: {store.dir}{state}")
        if previous is not None and previous.get("status") == "finished":  # a pilot: plan the seeds from it
            from harness.pilot import pilot_seed_plan
            print(pilot_seed_plan(store.dir))
        return 0
    hint = resume_command(args)
    if previous is not None:
        # decided from the recorded rows, not from study.json's status
        recorded = study_state(plan, store)
        if recorded.to_run(args.retry_failed) == 0 and not _confirmation_left(plan, store, args.retry_failed):
            print(f"study {plan.spec.name} is already finished: all {recorded.n_planned} trials are recorded; "
                  "nothing to resume"
                  + ("" if args.retry_failed or not recorded.failed else
                     f" ({len(recorded.failed)} failed: add --retry-failed to run them again)"))
            try:
                with store.lock():  # another driver may be running it (retrying its failed trials)
                    if previous.get("status") != "finished" or previous.get("counts") != recorded.counts:
                        # e.g. a driver that died after the last row: study.json tells the truth from now on
                        store.update_info(status="finished", counts=recorded.counts)
                    # a report cut short (Ctrl-C, a kill) or from before the last rows is made again
                    _finish(plan, store, report_now=_report_outdated(store))
            except StudyExistsError as exc:
                print(f"error: {exc}; leaving it to that process", file=sys.stderr)
                return 2
            except OSError as exc:  # read-only results (an archive, a copy): summed up as they are
                print(f"note: {store.dir} cannot be written ({exc.strerror or exc}): study.json and the report "
                      "are left as they are", file=sys.stderr)
                _finish(plan, store, report_now=False)
            except KeyboardInterrupt:  # during its summary or report: the study itself is finished
                print(f"\n{stopped_by()} after the study ended (finished, every row recorded); its report: "
                      f"python -m reports {store.dir}", file=sys.stderr)
                return exit_code()
            return exit_status(recorded.counts, complete=True, stopped=None)
    if args.resume and previous is None:
        print(f"no previous run of {plan.spec.name} in {store.dir}; starting it")
    from harness.results.study_provenance import resume_record
    from harness.tune.cluster import ClusterError, RaySettings, preload_workers, wait_for_ray_stop

    res = plan.spec.resources
    preload = 0 if args.address else preload_workers(res.cpus, res.gpus, plan.spec.concurrency,
                                                      num_cpus=args.num_cpus, num_gpus=args.num_gpus)
    settings = RaySettings(address=args.address, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                           log_to_driver=args.verbose, preload_workers=preload)
    if previous is None and store.exists():  # another driver created it while this one read its data
        try:
            check_existing(store, plan.spec, resume=False)
        except StudyExistsError as exc:  # refused before Ray starts; the check under the lock stays
            print(f"error: {exc}", file=sys.stderr)
            return 2
    timings.add("prepare", time.perf_counter() - t0)  # the spec, the plan and its data
    started = False
    imports = _import_meanwhile(report=plan.spec.report is not None)
    try:
        # Ray first: a cluster that cannot be reached or cannot host a trial creates nothing.
        with (_connect(plan, settings, timings, imports), store.lock(),
              signals_stop("stopping the running trials and recording what finished",
                           on_stop=lambda: _mark_interrupted(plan, store)),
              _watch_cluster(plan, store, hint, settings.address)):
            if interrupted():  # a signal as the run begins: nothing is created
                raise KeyboardInterrupt
            from harness.tune.runner import RunOptions, budget_deadline, code_version

            version = code_version()
            options = RunOptions(resume=previous is not None, retry_failed=args.retry_failed, ray=settings,
                                 progress_interval_s=args.progress_every)
            if previous is None:
                if store.exists():  # another driver created the study since check_existing: never overwrite
                    check_existing(store, plan.spec, resume=False)
                store.create(dump_spec(plan.spec), _study_info(plan, store, version))
            else:
                now = datetime.now(UTC).isoformat(timespec="seconds")
                store.update_info(status="running", resumed_at=now,
                                  resumes=resume_record(previous, plan.spec.data.path, plan.data.key, now))
            print(f"study {plan.spec.name}: {plan.n_trials} {_trials_word(plan)} -> {store.dir}", flush=True)
            started = True
            try:
                outcome = _run_phases(plan, store, dataclasses.replace(options, deadline=budget_deadline(plan)),
                                      version, timings)
                # a signal after the last phase's own look at the flag still ends the run as interrupted
                stopped = outcome.stopped or ("interrupted" if interrupted() else None)
                outcome = dataclasses.replace(outcome, stopped=stopped)
                status = ("interrupted" if stopped == "interrupted" else
                          "finished" if outcome.complete else "incomplete")
                finished_at = datetime.now(UTC).isoformat(timespec="seconds")
                with _INFO_LOCK:
                    store.update_info(status=status, finished_at=finished_at, counts=outcome.counts)
            except KeyboardInterrupt:  # a second signal: stopped at once, wherever the run was
                with _INFO_LOCK:
                    store.update_info(status="interrupted", counts=study_state(plan, store).counts,
                                      finished_at=datetime.now(UTC).isoformat(timespec="seconds"))
                raise
            if status != "interrupted" and not args.no_compact:
                _compact(store, timings)
    except (StudyExistsError, ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if started:
            raise
        print(f"error: cannot create the study's results directory {store.dir}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if not started:
            raise  # nothing recorded: execute says so
        print(f"\n{stopped_by()}; continue with: {hint}", file=sys.stderr)
        return exit_code()
    counts = ", ".join(f"{n} {s}" for s, n in sorted(outcome.counts.items()))
    why = {"interrupted": f" ({signal_name()})", "time budget": " (the time budget ran out)"}.get(stopped or "", "")
    print(f"study {plan.spec.name} {status}{why}: {counts or 'no trials recorded'}"
          + (f" ({SIMULATED_NOTE})" if plan.spec.simulated else ""))
    try:
        if interrupted() and status != "interrupted":  # a signal once the status was written: stop here
            raise KeyboardInterrupt
        _finish(plan, store, report_now=status != "interrupted", timings=timings)
        timings.add("ray_stop", wait_for_ray_stop())  # what is left of Ray's shutdown after the report
    except KeyboardInterrupt:  # the study is recorded: only the summing up is cut short
        again = f"; its report: python -m reports {store.dir}" if plan.spec.report is not None else ""
        print(f"\n{stopped_by()} after the study ended ({status}, every row recorded){again}", file=sys.stderr)
        return exit_code()
    _record_timings(store, timings, finished_at)
    code = exit_status(outcome.counts, complete=outcome.complete, stopped=stopped)
    if stopped == "interrupted" or code == EXIT_INCOMPLETE:
        print(f"some trials did not run; continue with: {hint}", file=sys.stderr if stopped == "interrupted"
              else sys.stdout)
    elif code == EXIT_NONE_COMPLETED:
        print(_none_completed_hint(outcome.counts, hint), file=sys.stderr)
    return code


#: Held while study.json is read, changed and written during a run: by the run, and by ``_mark_interrupted``.
_INFO_LOCK = threading.Lock()


def _mark_interrupted(plan: Plan, store: ResultStore) -> None:
    """At a first signal, at once (a thread of its own): study.json says ``interrupted``, with the counts of
    the rows recorded so far, unless the run has already written its end.

    The run still stops its trials and writes its final status and counts when it ends; this is for a
    driver that never gets there. A SIGTERM sent to every process of a job (``timeout``, a scheduler's
    walltime) ends Ray's own processes as well: the run's cluster watch (``_watch_cluster``) then ends it.
    """
    from harness.tune.resume import study_state

    with contextlib.suppress(Exception), _INFO_LOCK:  # the run writes the status at its end in any case
        if store.read_info().get("status") == "running":
            store.update_info(status="interrupted", counts=study_state(plan, store).counts)


@contextlib.contextmanager
def _watch_cluster(plan: Plan, store: ResultStore, hint: str, joined: str | None) -> Iterator[None]:
    """While the study runs, a lost Ray cluster ends the run itself (``harness.tune.watchdog``): study.json
    says ``interrupted`` with the counts of the rows recorded so far, one line says how to continue, and the
    exit status is ``EXIT_CLUSTER_LOST``, instead of Ray ending the driver 60 s later with status 1. What is
    watched is what the driver talks to: a Ray client's server (``--address ray://HOST:PORT``; the cluster's
    own GCS address may not be reachable from the client's machine), else the runtime's GCS."""
    import ray

    from harness.tune.watchdog import ClusterWatch

    new_cluster = joined is not None
    if joined is not None and joined.startswith("ray://"):
        address = joined.removeprefix("ray://")
    else:
        address = ray.get_runtime_context().gcs_address

    def lost(seconds: float) -> int:
        _mark_interrupted(plan, store)
        if interrupted():  # a signal to the whole job (timeout, a scheduler) ended Ray's processes too
            print(f"\n{stopped_by()}: Ray's own processes ended with the driver's signal, so the running trials "
                  f"could not be stopped in order; every row recorded so far is kept. Continue with: {hint}",
                  file=sys.stderr)
            return exit_code()
        print(f"\nerror: the Ray cluster is gone: its control store ({address}) has not answered for {seconds:.0f} s "
              "(its head node died, or its Ray was stopped). The running trials are lost with it; every row "
              f"recorded so far is kept. Continue on a new {'cluster' if new_cluster else 'runtime'} with: {hint}"
              + (" (with the new cluster's --address)" if new_cluster else ""), file=sys.stderr)
        return EXIT_CLUSTER_LOST

    with ClusterWatch(address, lost):
        yield


def _run_phases(plan: Plan, store: ResultStore, options: RunOptions, version: str, timings: Timings) -> RunOutcome:
    """The tuning phase, then the confirmation (``confirm:``) unless the tuning phase was cut short or stopped
    (a signal, the time budget: ``options.deadline`` is the whole command's, both phases share it)."""
    from harness.tune.runner import run_tune

    started = time.monotonic()
    outcome = run_tune(plan, store, options, version)
    confirmed = outcome.confirmed  # a grid's confirmation, run in the tuning phase's Tune run
    confirm_s = 0.0 if confirmed is None else confirmed.elapsed_s or 0.0
    timings.add("tuning", time.monotonic() - started - confirm_s)
    timings.add("tuning_first_trial", outcome.first_trial_s)
    if confirmed is not None:
        timings.add("confirm", confirm_s)
        timings.add("confirm_first_trial", confirmed.first_trial_s)
        return outcome
    if plan.spec.confirm is not None and outcome.complete and outcome.stopped is not None:
        # every tuning row is in, but the stop came with the last one (Tune asks its stopper after each
        # step): the confirmation is still owed, so the study is incomplete and --resume confirms
        if _confirmation_left(plan, store, options.retry_failed):
            return dataclasses.replace(outcome, complete=False)
        return outcome
    if plan.spec.confirm is not None and outcome.complete:
        from harness.tune.confirmation import run_confirmation  # top configurations on fresh seeds
        with timings.phase("confirm"):
            confirmed = run_confirmation(plan, store, options, version, outcome)
        if confirmed is not outcome:  # the tuning outcome itself when there was nothing to confirm
            timings.add("confirm_first_trial", confirmed.first_trial_s)
        outcome = confirmed
    return outcome


def _none_completed_hint(counts: Mapping[str, int], resume: str) -> str:
    """What to do when no trial completed: failed trials can run again as they are; diverged and pruned
    ones are final (a retry would repeat them), so the fix is a changed configuration, a new study."""
    if counts.get("failed"):
        final = [f"{counts[s]} {s}" for s in ("diverged", "pruned") if counts.get(s)]
        also = f" ({', '.join(final)}: final, not run again)" if final else ""
        return f"no trial completed; fix the cause, then run the failed ones again with: {resume} --retry-failed{also}"
    return ("no trial completed, and diverged or pruned trials are final (a retry repeats them): change the "
            "configuration (e.g. a lower train.lr) and run it as a new study (another name or --results)")


def exit_now(code: int) -> NoReturn:
    """End this process with ``code`` the way the interpreter would, less its final teardown.

    Like ``sys.exit``: idle thread pools are told to stop and the other non-daemon threads are waited for
    (``threading._shutdown``, as the interpreter does), the ``atexit`` handlers run (logging's, Ray's) and
    the standard streams are flushed. Then the process ends at once instead of dismantling every
    module and object one by one, which took about a second after a study (torch, Ray's core worker, the
    study's data). For the command line only: a caller of ``main`` keeps its interpreter.
    """
    threading._shutdown()  # type: ignore[attr-defined]  # the interpreter's own: exit hooks, then joins
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m harness.run`` (``argv`` None: this process's command line, whose run's
    timings then start with the process itself)."""
    return execute(parse_args(argv), from_process_start=argv is None)


if __name__ == "__main__":
    exit_now(main())
