"""How ``ppd-bag-eval`` runs its bags: one after the other, in a process pool, or as tasks on a Ray cluster.

Each bag is one :func:`~pixel_perfect_ros.ros.bag_evaluation.evaluate_bag`; ``report`` gets each result as
it comes. Ctrl-C or SIGTERM (raised as KeyboardInterrupt by the caller's ``interrupts.stop_signals``) stops
the bags at their next frame (written, marked incomplete) and starts no others.
``ray`` is imported only by :func:`run_ray`.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed, wait
from typing import Callable

from ..ros.bag_evaluation import BagJob, bag_result, evaluate_bag
from ..ros.interrupts import interrupt, interrupted_by, set_stop_handlers, stop_signals

_stop_event = None
"""In a pool worker: the pool's stop event, set on Ctrl-C or SIGTERM by the main process or any worker
(see ``run_pool``)."""


def _init_worker(stop_event) -> None:
    """Pool worker initializer: Ctrl-C or SIGTERM sets the stop event (bags stop at their next frame, never
    mid-write)."""
    global _stop_event
    _stop_event = stop_event
    set_stop_handlers(lambda signum, frame: stop_event.set())


def _pool_task(job: BagJob) -> dict:
    return evaluate_bag(job, stop=_stop_event.is_set)


def run_bags(jobs: list[BagJob], workers: int, ray_address: str | None, report: Callable[[dict], None]) -> list[dict]:
    """The bags' results in ``jobs`` order: on the Ray cluster at ``ray_address`` when given, else in a pool of
    ``workers`` processes, or in this process for one worker.

    Raises:
        ConnectionError: no Ray cluster at ``ray_address``.
    """
    if ray_address:
        return run_ray(jobs, ray_address, report)
    return run_sequential(jobs, report) if workers == 1 else run_pool(jobs, workers, report)


def run_sequential(jobs: list[BagJob], report: Callable[[dict], None]) -> list[dict]:
    """The bags one after the other in this process (a progress bar for a single bag); Ctrl-C or SIGTERM
    stops the current bag (written, marked incomplete) and skips the rest."""
    results = []
    for job in jobs:
        try:
            result = evaluate_bag(job, progress=len(jobs) == 1)
        except KeyboardInterrupt as error:  # between bags
            result = bag_result(job, "interrupted", f"interrupted ({interrupted_by(error)}) before it started")
        results.append(result)
        report(result)
        if result["status"] == "interrupted":
            results += [bag_result(j, "interrupted", "not started (interrupted)") for j in jobs[len(results):]]
            break
    return results


def run_pool(jobs: list[BagJob], workers: int, report: Callable[[dict], None]) -> list[dict]:
    """The bags in a pool of ``workers`` processes (spawned; each with its job's torch threads, or the CPUs
    shared out among them for None). Ctrl-C or SIGTERM stops every bag at its next frame (written, marked
    incomplete); bags not started are not started."""
    shared = max(1, (os.cpu_count() or 1) // workers)
    jobs = [BagJob(**{**vars(job), "threads": job.threads or shared}) for job in jobs]
    results: dict[int, dict] = {}
    context = multiprocessing.get_context("spawn")
    stop_event = context.Event()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(stop_event,)) as pool:
        # Workers are spawned by submit and start with Ctrl-C and SIGTERM ignored (until _init_worker), so
        # that one still importing is not killed by them, which would break the pool.
        with stop_signals(None):
            futures = {pool.submit(_pool_task, job): i for i, job in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = _future_result(future, jobs[futures[future]])
                report(results[futures[future]])
        except KeyboardInterrupt:
            stop_event.set()
            for future in futures:
                future.cancel()
            wait(futures)  # the running bags close their outputs and return as interrupted
            for future, i in futures.items():
                if i not in results:
                    results[i] = (bag_result(jobs[i], "interrupted", "not started (interrupted)") if future.cancelled()
                                  else _future_result(future, jobs[i]))
                    report(results[i])
    return [results[i] for i in range(len(jobs))]


def _future_result(future, job: BagJob) -> dict:
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001 - a worker that died (e.g. out of memory) fails its bag only
        return bag_result(job, "failed", f"worker failed: {type(error).__name__}: {error}")


def run_ray(jobs: list[BagJob], address: str, report: Callable[[dict], None]) -> list[dict]:
    """The bags as Ray tasks of ``evaluate_bag`` on the cluster at ``address`` (a CPU per torch thread of the
    job, 1 when None, and one GPU for a CUDA device, per bag). Ctrl-C or SIGTERM cancels the tasks (each
    writes its bag as interrupted). ``evaluate_bag`` goes to the workers by module name: every node imports
    this package.

    Raises:
        ConnectionError: no Ray cluster at ``address``.
    """
    import ray  # only here: importing it takes seconds

    ray.init(address=address, logging_level="warning", configure_logging=True)
    # ray.init made SIGTERM exit the driver at once: it stops the run as Ctrl-C does again
    with stop_signals(interrupt):
        try:
            gpus = 1 if str(jobs[0].settings.device).startswith("cuda") else 0
            task = ray.remote(evaluate_bag)
            jobs = [BagJob(**{**vars(job), "threads": job.threads or 1}) for job in jobs]
            refs = {task.options(num_cpus=job.threads, num_gpus=gpus).remote(job): i for i, job in enumerate(jobs)}
            results: dict[int, dict] = {}
            pending = list(refs)
            try:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    results[refs[done[0]]] = _ray_result(done[0], jobs[refs[done[0]]])
                    report(results[refs[done[0]]])
            except KeyboardInterrupt:
                for ref in pending:
                    ray.cancel(ref)
                for ref in pending:
                    results[refs[ref]] = _ray_result(ref, jobs[refs[ref]])
                    report(results[refs[ref]])
            return [results[i] for i in range(len(jobs))]
        finally:
            ray.shutdown()


def _ray_result(ref, job: BagJob) -> dict:
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return bag_result(job, "interrupted", "cancelled (interrupted); its outputs, if any, are marked incomplete")
    except ray.exceptions.RayError as error:
        return bag_result(job, "failed", f"Ray task failed: {error}")
