"""Loads a candidate model's weights in place into an already-loaded transformers model.

A resident evaluator (evaluators/hf_worker.py, evaluators/lm_eval_adapter.py --resident) loads
the base model once; for each trial, mergesearch writes a candidate with the same architecture
and the same tensor names, and only the numbers change. Instead of building a new model for
every trial, this module copies the candidate's tensors into the existing parameters and
buffers:

    import inplace_weights
    n_tensors, seconds = inplace_weights.load_in_place(model, "/dev/shm/candidate-7")

How it works:

* The files are the Hugging Face safetensors layout: ``model.safetensors``, or the shards named
  in ``model.safetensors.index.json`` (its ``weight_map``).
* Every tensor name in the files must be a key of ``model.state_dict()`` with the same shape,
  and every state_dict entry must be given by the files. A missing tensor, an unknown name, a
  shape mismatch or a name found in two shards raises :class:`WeightLoadError` naming the
  tensor. These checks read only the files' headers and run **before anything is copied**, so
  a rejected candidate leaves the model as it was.
* Tied weights: state_dict entries that share storage (``lm_head.weight`` and
  ``model.embed_tokens.weight`` when ``tie_word_embeddings``) are one tensor; a checkpoint may
  hold any one of the names (transformers leaves ``lm_head.weight`` out of tied checkpoints).
  When it holds several, they must be equal, which is checked slice by slice before anything
  is copied (a fresh ``from_pretrained`` would untie differing ones, which an in-place load
  cannot do); the one first in state_dict order is copied.
* Tensors are read one at a time with ``safetensors.safe_open`` and copied with
  ``Tensor.copy_`` (which converts the dtype and moves the data to the parameter's device), so
  the extra memory is one tensor, never a whole model. No reference to the files or to their
  memory maps is kept after the call returns: the candidate directory may be deleted (or live
  in /dev/shm and vanish) right after.
* A checkpoint dtype that differs from the parameter's is converted like ``from_pretrained``
  with an explicit ``dtype`` does; the count of converted tensors is returned in the report.

Limits: the model's parameters must be materialized (no ``meta`` device, no disk offload), not
quantized, and named as in the checkpoint. Models whose checkpoints transformers renames or
fuses while loading (some mixture-of-experts models in transformers 5) are rejected with the
first unknown name: score those with a fresh model per trial instead.

Only an I/O error in the middle of the copy (a file truncated or deleted while being read)
leaves a model holding part of the candidate. Since every successful load overwrites every
tensor, the next successful load repairs it; callers should not score a model whose load
raised.
"""

import json
import os
import time

__all__ = ["WeightLoadError", "LoadReport", "checkpoint_files", "load_in_place", "check_names"]

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class WeightLoadError(Exception):
    """The checkpoint does not fit the model (the message names the tensor), or cannot be read."""


class LoadReport(tuple):
    """(n_tensors, seconds) of a load, with more detail as attributes.

    It unpacks as a pair, ``n, seconds = load_in_place(...)``; ``converted`` is the number of
    tensors whose dtype was converted and ``files`` the number of files read.
    """

    def __new__(cls, n_tensors, seconds, converted=0, files=0):
        report = super().__new__(cls, (n_tensors, seconds))
        report.converted = converted
        report.files = files
        return report

    @property
    def n_tensors(self):
        return self[0]

    @property
    def seconds(self):
        return self[1]


def checkpoint_files(model_dir):
    """The safetensors files of a Hugging Face model directory, in a fixed order.

    ``model.safetensors`` when present, else the distinct files of the index's ``weight_map``.
    Raises WeightLoadError when the directory, the index or a listed shard is missing.
    """
    if not os.path.isdir(model_dir):
        raise WeightLoadError(f"model directory {model_dir!r} does not exist or is not a directory")
    single = os.path.join(model_dir, SINGLE_FILE)
    if os.path.isfile(single):
        return [single]
    index = os.path.join(model_dir, INDEX_FILE)
    if not os.path.isfile(index):
        others = sorted(n for n in os.listdir(model_dir) if n.endswith((".bin", ".pt", ".pth")))
        hint = f" (it has {others}: only safetensors are read)" if others else ""
        raise WeightLoadError(f"no {SINGLE_FILE} or {INDEX_FILE} in {model_dir}{hint}")
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WeightLoadError(f"cannot read the weight_map of {index}: {type(e).__name__}: {e}") from e
    if not isinstance(weight_map, dict) or not weight_map:
        raise WeightLoadError(f"{index}: weight_map is empty or not an object")
    files = []
    for name in sorted(set(weight_map.values())):
        if not isinstance(name, str) or os.path.basename(name) != name:
            raise WeightLoadError(f"{index}: bad shard file name {name!r}")
        path = os.path.join(model_dir, name)
        if not os.path.isfile(path):
            tensor = next(t for t, n in weight_map.items() if n == name)
            raise WeightLoadError(f"shard {name} (holding tensor {tensor!r}) listed in {index} is missing")
        files.append(path)
    return files


def _storage_key(tensor):
    """Identifies the memory a state_dict entry views; equal keys mean tied entries."""
    try:
        base = tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without storage
        return ("id", id(tensor))
    if tensor.device.type == "meta" or base == 0 and tensor.numel() > 0:
        raise WeightLoadError(
            "the model has parameters on the meta device (offloaded or not materialized); "
            "in-place loading needs every parameter in memory"
        )
    return (tensor.device, base, tensor.storage_offset(), tuple(tensor.shape),
            tuple(tensor.stride()), tensor.dtype)


def _alias_groups(state):
    """{name: primary name} for every state_dict entry; tied entries share a primary (the first
    of them in state_dict order)."""
    primary_of, first = {}, {}
    for name, tensor in state.items():
        key = _storage_key(tensor)
        primary_of[name] = first.setdefault(key, name)
    return primary_of


def _read_plan(model, model_dir):
    """Validates the checkpoint against the model from the files' headers only.

    Returns (state, files, plan): plan lists (file, [(name, primary, copy), ...]) in file
    order; copy is True for the one name of each (tied) tensor whose data is copied: the
    primary itself when the files hold it, else the first of its aliases found.
    """
    from safetensors import safe_open

    state = model.state_dict()
    primary_of = _alias_groups(state)
    files = checkpoint_files(model_dir)
    where = {}
    plan = []
    for path in files:
        entries = []
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                names = list(f.keys())
                for name in names:
                    if name in where:
                        raise WeightLoadError(
                            f"tensor {name!r} is in both {os.path.basename(where[name])} and "
                            f"{os.path.basename(path)}"
                        )
                    where[name] = path
                    if name not in state:
                        raise WeightLoadError(
                            f"unknown tensor {name!r} in {os.path.basename(path)}: the model has no "
                            f"parameter or buffer of that name (model class {type(model).__name__})"
                        )
                    shape = tuple(f.get_slice(name).get_shape())
                    expected = tuple(state[name].shape)
                    if shape != expected:
                        raise WeightLoadError(
                            f"tensor {name!r} in {os.path.basename(path)} has shape {list(shape)}, "
                            f"the model's has {list(expected)}"
                        )
                    entries.append((name, primary_of[name]))
        except WeightLoadError:
            raise
        except Exception as e:  # unreadable header, truncated file, ...
            raise WeightLoadError(f"cannot read {path}: {type(e).__name__}: {e}") from e
        plan.append((path, entries))
    source = {}
    for name in where:
        primary = primary_of[name]
        if primary not in source or name == primary:
            source[primary] = name
    plan = [(path, [(name, primary, source[primary] == name) for name, primary in entries])
            for path, entries in plan]
    given = set(source)
    missing = [name for name in state if primary_of[name] not in given]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightLoadError(
            f"missing tensor {missing[0]!r}{more}: {model_dir} does not hold it, and it is not "
            "tied to a tensor it holds"
        )
    return state, files, plan


def _check_tied_copies(state, plan, model_dir, rows=4096):
    """When the files hold several names of one tied tensor, checks that they are equal (as the
    model's dtype holds them), a slice of `rows` rows at a time, so before anything is copied
    and with little memory."""
    import torch
    from safetensors import safe_open

    path_of = {name: path for path, entries in plan for name, _, _ in entries}
    source_of = {primary: name for _, entries in plan for name, primary, copy in entries if copy}
    for _, entries in plan:
        for name, primary, copy in entries:
            if copy:
                continue
            first = source_of[primary]
            dtype = state[primary].dtype
            with safe_open(path_of[first], framework="pt", device="cpu") as fa, \
                    safe_open(path_of[name], framework="pt", device="cpu") as fb:
                a, b = fa.get_slice(first), fb.get_slice(name)
                length = a.get_shape()[0] if a.get_shape() else 0
                chunks = range(0, length, rows) if length else [None]
                for start in chunks:
                    if start is None:
                        x, y = fa.get_tensor(first), fb.get_tensor(name)
                    else:
                        x, y = a[start:start + rows], b[start:start + rows]
                    if not torch.equal(x.to(dtype), y.to(dtype)):
                        raise WeightLoadError(
                            f"tensors {first!r} and {name!r} are tied in the loaded model but "
                            f"differ in {model_dir}; an in-place load cannot untie them (a fresh "
                            "from_pretrained would load them as two tensors)"
                        )


def check_names(model, model_dir):
    """Checks, from headers only, that load_in_place(model, model_dir) would accept the files.

    Returns the number of tensors in the files; raises WeightLoadError otherwise. Handy at
    start-up on the base model's own directory, to learn before the first trial whether the
    model's tensor names match its checkpoint's.
    """
    _, _, plan = _read_plan(model, model_dir)
    return sum(len(entries) for _, entries in plan)


def load_in_place(model, model_dir):
    """Copies the tensors of the safetensors checkpoint in model_dir into model's parameters and
    buffers, tensor by tensor. Returns a LoadReport, which unpacks as (n_tensors, seconds).

    Raises WeightLoadError, naming the tensor, when the checkpoint does not fit the model (see
    the module's documentation); then nothing has been copied. The model is not re-created or
    re-initialized; it stays in whatever mode (eval/train) and on whatever device it was.
    """
    import torch
    from safetensors import safe_open

    started = time.monotonic()
    state, files, plan = _read_plan(model, model_dir)
    _check_tied_copies(state, plan, model_dir)
    converted = 0
    count = 0
    with torch.no_grad():
        for path, entries in plan:
            try:
                with safe_open(path, framework="pt", device="cpu") as f:
                    for name, _, copy in entries:
                        if not copy:  # a second name of a tied tensor, checked equal above
                            count += 1
                            continue
                        source = f.get_tensor(name)
                        target = state[name]
                        if source.dtype != target.dtype:
                            converted += 1
                        target.copy_(source)
                        del source
                        count += 1
            except Exception as e:
                raise WeightLoadError(
                    f"reading {path} failed after {count} tensors had been copied (the model now "
                    f"holds part of this candidate): {type(e).__name__}: {e}"
                ) from e
    if any(t.is_cuda for t in state.values()):
        torch.cuda.synchronize()  # so that the time includes the copies to the GPU
    return LoadReport(count, time.monotonic() - started, converted=converted, files=len(files))
