#!/usr/bin/env python3
"""Example external evaluator for mergesearch: a two-objective test function.

It needs nothing but the Python standard library (3.9 or newer) and speaks both halves of the
protocol described in evaluators/README.md:

  command mode, one process per trial:
      example.py --params '{"x0": 0.2, "x1": 0.9}' --seed 1 [--model-dir DIR] [--noise 0.05]
  worker mode, one process for the whole run, one JSON request per line on stdin:
      example.py --worker [--noise 0.05]

The objectives are computed from the trial's parameters only:

  loss  (minimize)  sum over numeric parameters of (x - 0.7)^2, plus a penalty in [0, 0.1)
                    for each string (categorical) parameter;
  score (maximize)  1 - mean over numeric parameters of (x - 0.3)^2, minus a different penalty
                    in [0, 0.1) for each string parameter.

The two pull every numeric parameter towards different values (0.7 and 0.3), so a
multi-objective search finds a Pareto front between them. Booleans count as 0 and 1. Each string
value gets a fixed pseudo-random penalty (from a CRC-32 of "name=value"), so categorical choices
matter, reproducibly.

With --noise SIGMA both objectives are measured --samples times with Gaussian noise drawn from
the trial's seed; the mean is reported, and the standard error of that mean (sample standard
deviation / sqrt(samples)) goes into "stderr". The same seed gives the same result.

When a model directory is given (--model-dir, or "model_dir" in a worker request), the
safetensors headers of the model in it are read and checked, and num_tensors, num_params and
num_shards are reported as extra scores: proof that mergesearch wrote the candidate completely.

Logs go to standard error; standard output carries only the one-line JSON result.
"""

import argparse
import json
import math
import os
import random
import struct
import sys
import traceback
import zlib

LOSS_CENTER = 0.7
SCORE_CENTER = 0.3

# Bytes per element of each safetensors dtype, to check that every tensor's byte range fits.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024


class EvalError(Exception):
    """A problem with a request, its parameters or the model: reported as {"error": ...}."""


def log(message):
    print(f"[example.py] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The test function


def category_penalty(name, value, salt):
    """A fixed pseudo-random number in [0, 0.1) for one categorical choice."""
    digest = zlib.crc32(f"{salt}:{name}={value}".encode("utf-8"))
    return (digest % 1000) / 10000.0


def split_params(params):
    """Numeric values (bools as 0/1) and string values of the parameters, checked."""
    if not isinstance(params, dict):
        raise EvalError(f"params must be a JSON object, got {type(params).__name__}")
    numeric, categorical = {}, {}
    for name, value in params.items():
        if isinstance(value, bool):
            numeric[name] = 1.0 if value else 0.0
        elif isinstance(value, (int, float)):
            value = float(value)
            if not math.isfinite(value):
                raise EvalError(f"parameter {name!r} is not a finite number: {value}")
            numeric[name] = value
        elif isinstance(value, str):
            categorical[name] = value
        else:
            raise EvalError(
                f"parameter {name!r} has unsupported type {type(value).__name__} "
                f"(expected a number, boolean or string): {json.dumps(value)}"
            )
    return numeric, categorical


def objectives(params):
    """(loss, score) of the parameters, without noise."""
    numeric, categorical = split_params(params)
    # (d * d) rather than d ** 2: huge values overflow to inf instead of raising.
    loss = sum(((x - LOSS_CENTER) * (x - LOSS_CENTER) for x in numeric.values()), 0.0)
    score = 1.0
    if numeric:
        score -= sum((x - SCORE_CENTER) * (x - SCORE_CENTER) for x in numeric.values()) / len(
            numeric
        )
    for name, value in categorical.items():
        loss += category_penalty(name, value, "loss")
        score -= category_penalty(name, value, "score")
    if not (math.isfinite(loss) and math.isfinite(score)):
        raise EvalError(f"the objectives overflow for these parameters (loss={loss}, "
                        f"score={score})")
    return loss, score


def measure(params, seed, noise, samples):
    """The scores and standard errors of one trial."""
    loss, score = objectives(params)
    scores = {"loss": loss, "score": score}
    stderr = {}
    if noise > 0:
        rng = random.Random(seed)
        for key, exact in (("loss", loss), ("score", score)):
            draws = [exact + rng.gauss(0.0, noise) for _ in range(samples)]
            mean = sum(draws) / samples
            variance = sum((d - mean) * (d - mean) for d in draws) / (samples - 1)
            scores[key] = mean
            stderr[key] = math.sqrt(variance / samples)
    return scores, stderr


# ---------------------------------------------------------------------------------------------
# Reading the candidate model


def safetensors_header(path):
    """The JSON header of one safetensors file, checked against the file's size."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise EvalError(f"{path}: too short to be a safetensors file ({size} bytes)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise EvalError(
                    f"{path}: header length {header_len} does not fit in a {size}-byte file"
                )
            header = json.loads(f.read(header_len).decode("utf-8"))
    except OSError as e:
        raise EvalError(f"cannot read {path}: {e}") from e
    except (UnicodeDecodeError, ValueError) as e:
        raise EvalError(f"{path}: the header is not valid JSON: {e}") from e
    if not isinstance(header, dict):
        raise EvalError(f"{path}: the header is not a JSON object")
    data_len = size - 8 - header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            shape = [int(d) for d in info["shape"]]
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise EvalError(f"{path}: tensor {name!r} has a malformed entry: {info}") from e
        numel = math.prod(shape)
        if not 0 <= start <= end <= data_len:
            raise EvalError(
                f"{path}: tensor {name!r} lies at bytes {start}..{end} but the data section "
                f"has {data_len} bytes (a truncated file?)"
            )
        width = DTYPE_BYTES.get(dtype)
        if width is not None and end - start != numel * width:
            raise EvalError(
                f"{path}: tensor {name!r} ({dtype}, shape {shape}) should take "
                f"{numel * width} bytes but takes {end - start}"
            )
        tensors[name] = numel
    return tensors


def inspect_model_dir(model_dir):
    """num_tensors, num_params and num_shards of the model in a Hugging Face directory."""
    if not os.path.isdir(model_dir):
        raise EvalError(f"model_dir {model_dir!r} is not a directory")
    index_path = os.path.join(model_dir, "model.safetensors.index.json")
    single_path = os.path.join(model_dir, "model.safetensors")
    weight_map = None
    if os.path.isfile(index_path):
        try:
            with open(index_path, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise EvalError(f"{index_path}: not a valid safetensors index: {e}") from e
    elif os.path.isfile(single_path):
        shards = ["model.safetensors"]
    else:
        shards = sorted(n for n in os.listdir(model_dir) if n.endswith(".safetensors"))
        if not shards:
            raise EvalError(f"no safetensors files in {model_dir}")
    tensors = {}
    for shard in shards:
        for name, numel in safetensors_header(os.path.join(model_dir, shard)).items():
            if weight_map is not None and weight_map.get(name) != shard:
                raise EvalError(
                    f"tensor {name!r} is in {shard} but the index maps it to "
                    f"{weight_map.get(name)!r}"
                )
            tensors[name] = numel
    if weight_map is not None:
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise EvalError(f"tensors listed in the index but in no shard: {missing[:5]}")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        log(f"note: {model_dir} has no config.json")
    return {
        "num_tensors": len(tensors),
        "num_params": sum(tensors.values()),
        "num_shards": len(shards),
    }


# ---------------------------------------------------------------------------------------------
# The protocol


def evaluate(params, seed, model_dir, args):
    """The result object of one trial: {"scores": ..., "stderr": ...}."""
    scores, stderr = measure(params, seed, args.noise, args.samples)
    if model_dir is not None:
        scores.update(inspect_model_dir(model_dir))
    for key, value in list(scores.items()) + list(stderr.items()):
        if not math.isfinite(value):
            raise EvalError(f"{key} is not finite ({value}); is --noise too large?")
    log(f"seed={seed} params={json.dumps(params, sort_keys=True)} -> "
        f"loss={scores['loss']:.6g} score={scores['score']:.6g}")
    result = {"scores": scores}
    if stderr:
        result["stderr"] = stderr
    return result


def emit(result):
    """Writes the result as one line of JSON and flushes it.

    allow_nan=False: Python would otherwise write NaN/Infinity, which mergesearch rejects;
    evaluate() has checked that every number is finite.
    """
    sys.stdout.write(json.dumps(result, allow_nan=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def run_command(args):
    """Command mode: evaluate the trial given on the command line; exit 1 on error."""
    if args.params is None:
        return fail("--params is required (or use --worker)")
    try:
        params = json.loads(args.params)
    except ValueError as e:
        return fail(f"--params is not valid JSON: {e}")
    try:
        result = evaluate(params, args.seed, args.model_dir, args)
    except EvalError as e:
        return fail(str(e))
    except Exception as e:  # a bug here: still answer in the protocol's terms
        traceback.print_exc()
        return fail(f"internal error: {type(e).__name__}: {e}")
    emit(result)
    return 0


def fail(reason):
    log(f"error: {reason}")
    emit({"error": reason})
    return 1


def handle_request(line, args):
    """The reply to one worker request line."""
    try:
        request = json.loads(line)
    except ValueError as e:
        return {"error": f"the request is not valid JSON: {e}"}
    if not isinstance(request, dict):
        return {"error": "the request is not a JSON object"}
    params = request.get("params")
    if params is None:
        return {"error": "the request has no \"params\""}
    seed = request.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        return {"error": f"the request's seed is not an integer: {seed!r}"}
    model_dir = request.get("model_dir")
    if model_dir is not None and not isinstance(model_dir, str):
        return {"error": f"the request's model_dir is not a string: {model_dir!r}"}
    try:
        return evaluate(params, seed, model_dir, args)
    except EvalError as e:
        log(f"trial {request.get('trial_id')}: error: {e}")
        return {"error": str(e)}
    except Exception as e:  # a bug here: fail this trial, keep serving
        traceback.print_exc()
        return {"error": f"internal error: {type(e).__name__}: {e}"}


def run_worker(args):
    """Worker mode: one reply line per request line, until stdin closes."""
    log("worker ready")
    while True:
        line = sys.stdin.readline()
        if not line:
            log("stdin closed, exiting")
            return 0
        if not line.strip():
            continue
        emit(handle_request(line, args))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Example mergesearch evaluator: loss (minimize) and score (maximize) of a "
        "shifted-sphere test function of the trial's parameters. See evaluators/README.md.",
    )
    parser.add_argument("--params", metavar="JSON",
                        help="the trial's parameters as a JSON object (command mode)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the trial's seed, used for the noise (command mode; default 0)")
    parser.add_argument("--model-dir", metavar="DIR",
                        help="a candidate model directory whose safetensors headers are read "
                        "(command mode)")
    parser.add_argument("--worker", action="store_true",
                        help="serve one JSON request per stdin line until EOF")
    parser.add_argument("--noise", type=float, default=0.0, metavar="SIGMA",
                        help="standard deviation of Gaussian noise added to each measurement "
                        "(default 0: exact values, no stderr)")
    parser.add_argument("--samples", type=int, default=4, metavar="N",
                        help="noisy measurements averaged per trial with --noise (default 4)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.noise) and args.noise >= 0):
        parser.error("--noise must be a finite number >= 0")
    if args.samples < 2:
        parser.error("--samples must be at least 2 (the standard error needs two)")
    if args.worker:
        if args.params is not None or args.model_dir is not None:
            parser.error("--params and --model-dir are for command mode; a worker reads them "
                         "from each request")
        return run_worker(args)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
