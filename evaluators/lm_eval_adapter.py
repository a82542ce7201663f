#!/usr/bin/env python3
"""mergesearch evaluator that scores a candidate model with lm-evaluation-harness.

Command mode (one process per trial; lm_eval and the model are loaded every time):

    lm_eval_adapter.py --model-dir DIR --tasks arc_easy,hellaswag:acc_norm --seed 7 [options]

Worker mode (one process for the whole run; lm_eval is imported once and each request's model
is loaded, evaluated and released, GPU memory included, before the reply):

    lm_eval_adapter.py --worker --tasks arc_easy,hellaswag:acc_norm [options]

Resident worker mode (hf backend only; the model is created once from the base, and each
request's candidate tensors are copied into it in place with inplace_weights.load_in_place,
instead of building a new model per trial):

    lm_eval_adapter.py --worker --resident --base DIR --tasks arc_easy [options]

Scores: one per task, named after the task as given in --tasks, holding that task's metric
(--metric, or the TASK:METRIC form), plus "mean" (the unweighted mean of the tasks' values) and
the extras "n_items" (benchmark items scored) and "eval_seconds". Standard errors come from
lm_eval ("<metric>_stderr,<filter>"); the mean's is sqrt(sum of squared task stderrs) / tasks,
reported only when every task has one.

lm_eval is imported only when a model is evaluated, so --help works without it. It needs
`pip install "lm-eval[hf]"` (or "lm-eval[vllm]" for --backend vllm) in the Python that runs
this script. See evaluators/README.md for the protocol and for examples.

Only the result line is written to the real standard output: everything else the process
prints, libraries and subprocesses included, is redirected to standard error, so no log line
can be mistaken for the reply.
"""

import argparse
import gc
import inspect
import json
import math
import os
import sys
import time
import traceback

DEFAULT_SEED = 1234
RESERVED_NAMES = ("mean", "n_items", "eval_seconds", "load_seconds")


class AdapterError(Exception):
    """A problem reported to mergesearch as {"error": ...}."""


def log(message):
    print(f"[lm_eval_adapter] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Command line


def parse_limit(text):
    """--limit: an item count (int) or, below 1, a fraction of each task (float)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    if value < 1:
        return value
    if value != int(value):
        raise argparse.ArgumentTypeError("an item count must be a whole number (or < 1)")
    return int(value)


def parse_batch_size(text):
    """--batch-size: a positive integer, "auto" or "auto:N"."""
    if text == "auto" or text.startswith("auto:"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, auto or auto:N, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def normalize_metric(metric):
    """A metric as "name" or "name,filter" ("name/filter" is accepted for the comma)."""
    metric = metric.strip().replace("/", ",")
    if not metric or metric.startswith(",") or metric.endswith(","):
        raise argparse.ArgumentTypeError(f"bad metric {metric!r}")
    return metric


def parse_tasks(text, default_metric):
    """--tasks "a,b:acc_norm" -> [("a", default_metric), ("b", "acc_norm")]."""
    specs = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        task, _, metric = item.partition(":")
        task = task.strip()
        if not task:
            raise argparse.ArgumentTypeError(f"empty task name in {item!r}")
        if task in RESERVED_NAMES:
            raise argparse.ArgumentTypeError(f"a task may not be named {task!r} (a score name)")
        if task in (t for t, _ in specs):
            raise argparse.ArgumentTypeError(f"task {task!r} is listed twice")
        specs.append((task, normalize_metric(metric) if metric else default_metric))
    if not specs:
        raise argparse.ArgumentTypeError("no tasks given")
    return specs


def build_parser():
    parser = argparse.ArgumentParser(
        description="mergesearch evaluator: scores a candidate model with lm-evaluation-harness "
        "and prints {\"scores\": {TASK: value, ..., \"mean\": value}, \"stderr\": {...}}. "
        "Command mode evaluates --model-dir; --worker serves one JSON request per stdin line. "
        "See evaluators/README.md.",
    )
    mode = parser.add_argument_group("mode")
    mode.add_argument("--model-dir", metavar="DIR",
                      help="command mode: the candidate model directory (pass {model_dir})")
    mode.add_argument("--worker", action="store_true",
                      help="worker mode: read {\"trial_id\", \"seed\", \"params\", \"model_dir\"} "
                      "requests from stdin, one per line, until EOF")
    mode.add_argument("--resident", action="store_true",
                      help="worker mode, hf backend: create the model once from --base and load "
                      "each request's candidate into it in place (evaluators/inplace_weights.py) "
                      "instead of building a new model per trial")
    mode.add_argument("--base", metavar="DIR", default=None,
                      help="with --resident: the base model directory (config.json, safetensors, "
                      "tokenizer) the resident model is created from")
    mode.add_argument("--seed", type=int, default=None,
                      help="seed of lm_eval's python/numpy/torch/few-shot generators (and of "
                      "vLLM); reduced modulo 2^32. Command mode: pass {seed}, default "
                      f"{DEFAULT_SEED}. Worker mode: default each request's seed; when given, it "
                      "overrides them so every trial sees the same few-shot examples")

    what = parser.add_argument_group("what to evaluate")
    what.add_argument("--tasks", required=True, metavar="TASK[:METRIC],...",
                      help="comma-separated lm_eval task or group names; TASK:METRIC overrides "
                      "--metric for one task (write a filter as METRIC/FILTER, e.g. "
                      "gsm8k:exact_match/strict-match)")
    what.add_argument("--metric", default="acc", type=normalize_metric,
                      help="metric reported for each task: acc, acc_norm, exact_match, ... "
                      "(filter 'none' unless given as METRIC,FILTER or METRIC/FILTER; a metric "
                      "with a single filter is found without it; default acc)")
    what.add_argument("--num-fewshot", type=int, default=None, metavar="N",
                      help="few-shot examples per prompt (default: each task's own)")
    what.add_argument("--limit", type=parse_limit, default=None, metavar="N",
                      help="evaluate only the first N items of each task (a fraction when < 1); "
                      "the same items for every trial")
    what.add_argument("--apply-chat-template", action="store_true",
                      help="format prompts with the model's chat template")
    what.add_argument("--include-path", metavar="DIR", default=None,
                      help="an extra directory of task YAML files")
    what.add_argument("--bootstrap-iters", type=int, default=1000, metavar="N",
                      help="bootstrap iterations for metrics whose stderr is bootstrapped "
                      "(0: no stderr for those; default 1000)")
    what.add_argument("--cache-requests", action="store_true",
                      help="let lm_eval cache the built prompts on disk, so later trials skip "
                      "building them")

    model = parser.add_argument_group("model")
    model.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                       help="lm_eval model type: hf (transformers, the default) or vllm")
    model.add_argument("--dtype", default="auto",
                       help="weights' dtype when loaded: auto (config.json's), bfloat16, "
                       "float16, float32 (default auto)")
    model.add_argument("--batch-size", type=parse_batch_size, default="auto", metavar="N",
                       help="batch size: an integer, auto, or auto:N (re-detect N times); "
                       "default auto")
    model.add_argument("--max-batch-size", type=int, default=None, metavar="N",
                       help="upper bound for an auto batch size (vllm: max_num_seqs)")
    model.add_argument("--device", default="cuda",
                       help="hf only: torch device (cuda, cuda:1, cpu, mps); vLLM uses "
                       "CUDA_VISIBLE_DEVICES (default cuda)")
    model.add_argument("--tensor-parallel-size", type=int, default=1, metavar="N",
                       help="vllm only: GPUs to shard the model over (default 1)")
    model.add_argument("--gpu-memory-utilization", type=float, default=0.9, metavar="F",
                       help="vllm only: fraction of GPU memory vLLM may take (default 0.9)")
    model.add_argument("--model-args", default="", metavar="K=V,...",
                       help="extra model arguments, as lm_eval's --model_args (e.g. "
                       "trust_remote_code=True,max_length=2048); they override the ones above")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.task_specs = parse_tasks(args.tasks, args.metric)
    except argparse.ArgumentTypeError as e:
        parser.error(f"--tasks: {e}")
    if args.worker and args.model_dir is not None:
        parser.error("--model-dir is for command mode; a worker reads model_dir from each request")
    if not args.worker and args.model_dir is None:
        parser.error("give --model-dir DIR (command mode) or --worker")
    if args.resident:
        if args.backend == "vllm":
            parser.error("--resident is not supported with --backend vllm: vLLM in-place update "
                         "is not supported yet (use --backend hf, or --worker without --resident)")
        if not args.worker:
            parser.error("--resident is a worker mode: add --worker")
        if args.base is None:
            parser.error("--resident needs --base DIR, the model created once")
        if not os.path.isfile(os.path.join(args.base, "config.json")):
            parser.error(f"--base {args.base}: no config.json there (not a Hugging Face model "
                         "directory)")
    elif args.base is not None:
        parser.error("--base is for --resident (a plain worker loads each request's model_dir)")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        parser.error("--num-fewshot must be >= 0")
    if args.bootstrap_iters < 0:
        parser.error("--bootstrap-iters must be >= 0")
    if args.tensor_parallel_size < 1:
        parser.error("--tensor-parallel-size must be >= 1")
    if not 0 < args.gpu_memory_utilization <= 1:
        parser.error("--gpu-memory-utilization must be in (0, 1]")
    return args


# ---------------------------------------------------------------------------------------------
# Standard output: the reply channel


def claim_stdout():
    """Keeps the real stdout for replies and points file descriptor 1 at stderr.

    Anything printed afterwards (Python's print, C extensions, child processes) lands on stderr,
    where mergesearch keeps it for failure reports, instead of between replies.
    """
    sys.stdout.flush()
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return replies


def send(replies, result):
    """One reply line; every number in it has been checked to be finite."""
    replies.write(json.dumps(result, allow_nan=False, separators=(",", ":")) + "\n")
    replies.flush()


# ---------------------------------------------------------------------------------------------
# lm_eval


class Harness:
    """lm_eval's entry points, imported once."""

    def __init__(self, backend):
        try:
            import lm_eval  # noqa: F401
            import lm_eval.api.registry as registry
            from lm_eval.evaluator import simple_evaluate
            from lm_eval.utils import simple_parse_args_string
        except ImportError as e:
            raise AdapterError(
                f"cannot import lm_eval in {sys.executable} ({e}); install it with "
                "pip install \"lm-eval[hf]\" (or \"lm-eval[vllm]\" for --backend vllm)"
            ) from e
        if backend == "vllm":
            try:
                import vllm  # noqa: F401
            except ImportError as e:
                raise AdapterError(
                    f"--backend vllm needs vllm in {sys.executable} ({e}): "
                    "pip install \"lm-eval[vllm]\""
                ) from e
        try:
            import torch
        except ImportError:
            torch = None
        self.torch = torch
        self.registry = registry
        self.simple_evaluate = simple_evaluate
        self.accepted = set(inspect.signature(simple_evaluate).parameters)
        self.parse_args_string = simple_parse_args_string
        self.version = getattr(lm_eval, "__version__", "unknown")
        self._task_manager = None
        self._task_metadata = None

    def task_manager(self, args, metadata):
        """lm_eval's TaskManager (it reads --include-path), built once and reused.

        Building one indexes every task YAML lm_eval ships (tens of seconds), so a worker keeps
        it across trials. Its metadata (the model arguments, which a few tasks read, e.g. for
        the tokenizer) is a dict updated in place for each trial. None when this lm_eval has
        no TaskManager: simple_evaluate then uses its defaults.
        """
        if "task_manager" not in self.accepted:
            return None
        if self._task_manager is None:
            try:
                from lm_eval.tasks import TaskManager
            except ImportError:
                return None
            self._task_metadata = dict(metadata)
            try:
                self._task_manager = TaskManager(
                    include_path=args.include_path, metadata=self._task_metadata
                )
            except TypeError:  # lm_eval versions without the metadata argument
                self._task_manager = TaskManager(include_path=args.include_path)
        else:
            self._task_metadata.clear()
            self._task_metadata.update(metadata)
        return self._task_manager


def model_arguments(harness, args, model_dir, seed32):
    """The keyword arguments of the lm_eval model class, and the run-time ones."""
    model_args = {"pretrained": model_dir, "dtype": args.dtype}
    runtime = {"batch_size": args.batch_size, "max_batch_size": args.max_batch_size}
    if args.backend == "hf":
        runtime["device"] = args.device
    else:
        model_args.update(
            tensor_parallel_size=args.tensor_parallel_size,
            gpu_memory_utilization=args.gpu_memory_utilization,
            seed=seed32,
        )
    extra = harness.parse_args_string(args.model_args)
    model_args.update({k: v for k, v in extra.items() if k not in runtime})
    runtime.update({k: v for k, v in extra.items() if k in runtime})
    return model_args, {k: v for k, v in runtime.items() if v is not None}


def release(lm, backend):
    """Drops a model's weights and, for vLLM, its engine and distributed state."""
    if lm is None:
        return
    if backend == "vllm":
        llm = getattr(lm, "model", None)
        engine = getattr(llm, "llm_engine", None)
        for part in (getattr(engine, "engine_core", None), engine):
            shutdown = getattr(part, "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception as e:  # best effort
                    log(f"vLLM shutdown: {type(e).__name__}: {e}")
        try:
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception as e:  # best effort: names differ between vLLM versions
            log(f"vLLM distributed clean-up: {type(e).__name__}: {e}")
    for attr in ("_model", "model"):
        try:
            setattr(lm, attr, None)
        except Exception:  # a read-only property
            pass


def free_memory(harness):
    gc.collect()
    torch = harness.torch if harness is not None else None
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


def create_model(harness, args, model_args, runtime):
    """An lm_eval model object of args.backend."""
    model_class = harness.registry.get_model(args.backend)
    if hasattr(model_class, "create_from_arg_obj"):
        return model_class.create_from_arg_obj(model_args, runtime)
    return model_class(**model_args, **runtime)


class Resident:
    """--resident: the hf model, created once from --base; each candidate's tensors are copied
    into its underlying transformers model (HFLM.model) in place."""

    def __init__(self, harness, args):
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        try:
            import inplace_weights
        except ImportError as e:
            raise AdapterError(f"--resident needs evaluators/inplace_weights.py next to this "
                               f"script and safetensors installed ({e})") from e
        self.inplace = inplace_weights
        started = time.monotonic()
        self.model_args, runtime = model_arguments(harness, args, args.base, 0)
        log(f"creating the resident model from {args.base} with hf {self.model_args} {runtime}")
        self.lm = create_model(harness, args, self.model_args, runtime)
        model = self.model
        try:
            n = inplace_weights.check_names(model, args.base)
        except inplace_weights.WeightLoadError as e:
            raise AdapterError(f"candidates cannot be loaded in place: the base's own checkpoint "
                               f"does not fit the model ({e}); run without --resident") from e
        log(f"resident model ready in {time.monotonic() - started:.1f} s ({n} tensors)")

    @property
    def model(self):
        model = getattr(self.lm, "model", None)
        if model is None or not hasattr(model, "state_dict"):
            raise AdapterError(f"lm_eval's {type(self.lm).__name__} exposes no transformers model "
                               "as .model: --resident cannot load weights into it")
        return model

    def load(self, model_dir):
        """Copies model_dir's tensors into the resident model; returns the seconds taken."""
        try:
            n, seconds = self.inplace.load_in_place(self.model, model_dir)
        except self.inplace.WeightLoadError as e:
            raise AdapterError(f"cannot load {model_dir} in place: {e}") from None
        log(f"loaded {n} tensors of {model_dir} in place in {seconds:.2f} s")
        return seconds


def evaluate_model(harness, args, model_dir, seed, resident=None):
    """Loads the model in model_dir (a new one, or in place into the resident model), runs the
    tasks and returns the result object."""
    if not os.path.isdir(model_dir):
        raise AdapterError(f"model_dir {model_dir!r} is not a directory")
    seed32 = seed % (1 << 32)
    started = time.monotonic()
    lm = None
    load_seconds = None
    try:
        if resident is not None:
            load_seconds = resident.load(model_dir)
            lm, model_args = resident.lm, dict(resident.model_args)
            log(f"evaluating {model_dir} in the resident model, seed {seed32}")
        else:
            model_args, runtime = model_arguments(harness, args, model_dir, seed32)
            log(f"evaluating {model_dir} with {args.backend} {model_args} {runtime}, seed {seed32}")
            lm = create_model(harness, args, model_args, runtime)
        wanted = dict(
            model=lm,
            tasks=[task for task, _ in args.task_specs],
            num_fewshot=args.num_fewshot,
            limit=args.limit,
            bootstrap_iters=args.bootstrap_iters,
            log_samples=False,
            cache_requests=args.cache_requests,
            apply_chat_template=args.apply_chat_template,
            task_manager=harness.task_manager(args, dict(model_args)),
            metadata=dict(model_args),
            random_seed=seed32,
            numpy_random_seed=seed32,
            torch_random_seed=seed32,
            fewshot_random_seed=seed32,
        )
        kwargs = {k: v for k, v in wanted.items() if k in harness.accepted}
        skipped = sorted(k for k, v in wanted.items()
                         if k not in harness.accepted and v not in (None, False))
        if skipped:
            log(f"lm_eval {harness.version} does not take {skipped}; ignored")
        results = harness.simple_evaluate(**kwargs)
    finally:
        if resident is None:
            release(lm, args.backend)
        del lm
        free_memory(harness)
    if not results:
        raise AdapterError("lm_eval returned no results (not the rank-0 process?)")
    result = extract_scores(results, args.task_specs)
    result["scores"]["eval_seconds"] = time.monotonic() - started
    if load_seconds is not None:
        result["scores"]["load_seconds"] = load_seconds
    return result


# ---------------------------------------------------------------------------------------------
# Results


def as_number(value):
    """A finite float, or None for "N/A", missing or non-finite values."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def metric_key(entry, metric, task):
    """The key of `metric` in one task's results ("acc" -> "acc,none"), or None."""
    if "," in metric:
        return metric if metric in entry else None
    if metric + ",none" in entry:
        return metric + ",none"
    keys = [k for k in entry if k.startswith(metric + ",")]
    if len(keys) > 1:
        raise AdapterError(
            f"task {task!r} has {metric!r} under several filters {sorted(keys)}: name one, e.g. "
            f"{task}:{keys[0].replace(',', '/')}"
        )
    return keys[0] if keys else None


def resolve(results, task, metric, seen=()):
    """(value, stderr or None) of `metric` for a task, or for a group without an aggregate the
    unweighted mean over its subtasks."""
    table = dict(results.get("results") or {})
    table.update(results.get("groups") or {})
    entry = table.get(task)
    if entry is not None:
        key = metric_key(entry, metric, task)
        if key is not None:
            value = as_number(entry[key])
            if value is None:
                raise AdapterError(f"task {task!r}: {key} is not a finite number: {entry[key]!r}")
            name, _, filt = key.partition(",")
            stderr = as_number(entry.get(f"{name}_stderr,{filt}"))
            warn_direction(results, task, name)
            return value, stderr
    children = (results.get("group_subtasks") or {}).get(task)
    if children and task not in seen:
        parts = [resolve(results, child, metric, seen + (task,)) for child in children]
        log(f"group {task!r} has no aggregated {metric}; reporting the unweighted mean of "
            f"its {len(parts)} subtasks")
        return combine(parts)
    if entry is not None:
        metrics = sorted(k for k in entry if "," in k and "_stderr," not in k)
        raise AdapterError(f"task {task!r} has no metric {metric!r}; it has {metrics}")
    raise AdapterError(
        f"no results for {task!r} (a tag rather than a task or group? list its tasks "
        f"instead); results hold {sorted(table)[:20]}"
    )


def combine(parts):
    """Unweighted mean of (value, stderr) pairs; the stderr only when every part has one."""
    value = sum(v for v, _ in parts) / len(parts)
    if all(s is not None for _, s in parts):
        return value, math.sqrt(sum(s * s for _, s in parts)) / len(parts)
    return value, None


def warn_direction(results, task, metric_name):
    higher = (results.get("higher_is_better") or {}).get(task, {}).get(metric_name)
    if higher is False:
        log(f"note: for {task!r}, lower {metric_name} is better: declare it \"minimize\"")


def extract_scores(results, task_specs):
    scores, stderr, parts = {}, {}, []
    for task, metric in task_specs:
        value, err = resolve(results, task, metric)
        scores[task] = value
        if err is not None:
            stderr[task] = err
        parts.append((value, err))
    scores["mean"], mean_err = combine(parts)
    if mean_err is not None:
        stderr["mean"] = mean_err
    items = 0
    for counts in (results.get("n-samples") or {}).values():
        if isinstance(counts, dict):
            items += int(counts.get("effective", 0) or 0)
    if items:
        scores["n_items"] = items
    result = {"scores": scores}
    if stderr:
        result["stderr"] = stderr
    return result


# ---------------------------------------------------------------------------------------------
# Modes


def error_text(e):
    if isinstance(e, AdapterError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def run_command(args, replies):
    seed = DEFAULT_SEED if args.seed is None else args.seed
    try:
        harness = Harness(args.backend)
        result = evaluate_model(harness, args, args.model_dir, seed)
    except Exception as e:
        if not isinstance(e, AdapterError):
            traceback.print_exc()
        reason = error_text(e)
        log(f"error: {reason}")
        send(replies, {"error": reason})
        return 1
    log(f"scores: {json.dumps(result)}")
    send(replies, result)
    return 0


def handle_request(harness, args, line, resident=None):
    request = json.loads(line)
    if not isinstance(request, dict):
        raise AdapterError("the request is not a JSON object")
    model_dir = request.get("model_dir")
    if not isinstance(model_dir, str):
        raise AdapterError("the request has no model_dir: declare the evaluator with "
                           "model = true (the search space needs models)")
    seed = args.seed if args.seed is not None else request.get("seed", DEFAULT_SEED)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise AdapterError(f"the request's seed is not an integer: {seed!r}")
    return evaluate_model(harness, args, model_dir, seed, resident)


def run_worker(args, replies):
    resident = None
    try:
        harness = Harness(args.backend)
        if args.resident:
            resident = Resident(harness, args)
        load_error = None
        log(f"worker ready (lm_eval {harness.version}, backend {args.backend}"
            + (f", resident model from {args.base})" if resident else ")"))
    except Exception as e:
        if not isinstance(e, AdapterError):
            traceback.print_exc()
        harness, load_error = None, error_text(e)
        log(f"error: {load_error}; every request will fail")
    while True:
        line = sys.stdin.readline()
        if not line:
            log("stdin closed, exiting")
            return 0
        if not line.strip():
            continue
        if load_error is not None:
            send(replies, {"error": load_error})
            continue
        try:
            result = handle_request(harness, args, line, resident)
            log(f"scores: {json.dumps(result)}")
        except Exception as e:
            if not isinstance(e, (AdapterError, json.JSONDecodeError)):
                traceback.print_exc()
            result = {"error": error_text(e)}
            log(f"error: {result['error']}")
        send(replies, result)
        if "error" in result:
            free_memory(harness)  # the traceback's frames are gone now


def main(argv=None):
    args = parse_args(argv)
    replies = claim_stdout()
    if args.worker:
        return run_worker(args, replies)
    return run_command(args, replies)


if __name__ == "__main__":
    sys.exit(main())
