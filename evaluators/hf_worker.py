#!/usr/bin/env python3
"""mergesearch evaluator: perplexity of a candidate model, with a resident transformers model.

Worker mode (kind = "worker"; the base model is loaded once, each candidate's tensors are
copied into it in place):

    hf_worker.py --base DIR (--text FILE | --tokens FILE) [--seq-len 512] [--max-sequences N]
                 [--batch-size 8] [--dtype auto] [--device cuda]

Command mode (kind = "command"; a fresh from_pretrained of the candidate, for comparison):

    hf_worker.py --model-dir DIR (--text FILE | --tokens FILE) [--base DIR] [options]

The corpus (--text, tokenized once at start with the base directory's tokenizer, or --tokens,
whitespace-separated integer token ids) is cut into non-overlapping windows of --seq-len tokens
(a last partial window is dropped), at most --max-sequences of them. Each window is scored as
one sequence: the model predicts its tokens 2..seq-len from the ones before. A request's
"items" (fidelity rungs) scores only the first "items" windows.

Reply, one JSON line on stdout:

    {"scores": {"perplexity": P, "loss": L, "tokens": N, "windows": W, "load_seconds": s,
                "score_seconds": s, "loads": 1},
     "stderr": {"loss": se, "perplexity": se_p}}

loss is the mean negative log-likelihood per predicted token (nats), perplexity exp(loss),
tokens the number of predicted tokens, the stderr of loss the standard error of the mean of
the per-window losses (windows >= 2 only), that of perplexity perplexity * stderr(loss) (the
delta method). loads counts the times this process loaded a model with from_pretrained: 1
for the whole life of a worker. Logs go to stderr; standard output carries only replies (file
descriptor 1 is pointed at stderr, so libraries cannot print between them).

Needs torch, transformers and safetensors in the Python that runs it. See evaluators/README.md.
"""

import argparse
import json
import math
import os
import sys
import time
import traceback

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json",
                   "spiece.model", "sentencepiece.bpe.model")
DTYPES = ("auto", "bfloat16", "float16", "float32")


class TrialError(Exception):
    """A problem reported to mergesearch as {"error": ...} for one trial."""


class SetupError(Exception):
    """A problem with the arguments or the base model: the process exits with the message."""


def log(message):
    print(f"[hf_worker] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Command line


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def optional_items(text):
    """--items: a positive integer, or empty (mergesearch's {items} without a fidelity table)."""
    if text.strip() == "":
        return None
    return positive_int(text)


def build_parser():
    parser = argparse.ArgumentParser(
        description="mergesearch evaluator: perplexity of a candidate causal LM on a corpus. "
        "With --base and no --model-dir it is a worker: the base is loaded once and each "
        "request's model_dir is loaded into it in place. With --model-dir it scores that "
        "directory once (command mode). See evaluators/README.md.",
    )
    mode = parser.add_argument_group("mode")
    mode.add_argument("--base", metavar="DIR",
                      help="worker mode: the base model directory (config.json + safetensors), "
                      "loaded once; its tokenizer tokenizes --text. Command mode: optional, "
                      "the tokenizer's directory (default --model-dir)")
    mode.add_argument("--model-dir", metavar="DIR",
                      help="command mode: load this directory with from_pretrained, score it, "
                      "print one JSON line and exit (pass {model_dir})")
    mode.add_argument("--items", type=optional_items, default=None, metavar="N",
                      help="command mode: score only the first N windows (pass {items}; empty "
                      "means all). Worker mode uses each request's items")
    mode.add_argument("--seed", default=None, metavar="N",
                      help="accepted for argv templates ({seed}) and ignored: scoring is "
                      "deterministic")

    data = parser.add_argument_group("corpus")
    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", metavar="FILE",
                        help="a UTF-8 text file, tokenized once at start (no special tokens "
                        "added) with the base's tokenizer")
    source.add_argument("--tokens", metavar="FILE",
                        help="a file of whitespace-separated integer token ids (for tests and "
                        "models without a tokenizer)")
    data.add_argument("--seq-len", type=int, default=512, metavar="N",
                      help="tokens per window (>= 2; default 512)")
    data.add_argument("--max-sequences", type=positive_int, default=None, metavar="N",
                      help="use at most the first N windows (default all)")

    model = parser.add_argument_group("model")
    model.add_argument("--dtype", choices=DTYPES, default="auto",
                       help="weights' dtype: auto (config.json's), bfloat16, float16, float32 "
                       "(default auto)")
    model.add_argument("--device", default=None,
                       help="torch device: cuda, cuda:1, cpu, ... (default cuda if available, "
                       "else cpu)")
    model.add_argument("--batch-size", type=positive_int, default=8, metavar="N",
                       help="windows per forward pass (default 8)")
    model.add_argument("--trust-remote-code", action="store_true",
                       help="let transformers run the model directory's own modeling code")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.base is None and args.model_dir is None:
        parser.error("give --base DIR (worker mode) or --model-dir DIR (command mode)")
    if args.seq_len < 2:
        parser.error(f"--seq-len must be >= 2 (one token to predict from another), got {args.seq_len}")
    for flag, path in (("--base", args.base), ("--model-dir", args.model_dir)):
        if path is None:
            continue
        if not os.path.isdir(path):
            parser.error(f"{flag} {path}: no such directory")
        if not os.path.isfile(os.path.join(path, "config.json")):
            parser.error(f"{flag} {path}: no config.json there (not a Hugging Face model directory)")
    for flag, path in (("--text", args.text), ("--tokens", args.tokens)):
        if path is not None and not os.path.isfile(path):
            parser.error(f"{flag} {path}: file not found")
    if args.text is not None:
        tokenizer_dir = args.base if args.base is not None else args.model_dir
        if not any(os.path.isfile(os.path.join(tokenizer_dir, n)) for n in TOKENIZER_FILES):
            parser.error(
                f"--text needs a tokenizer, and {tokenizer_dir} has none ({', '.join(TOKENIZER_FILES)}); "
                "save the tokenizer there or pass --tokens FILE with token ids"
            )
    return args


# ---------------------------------------------------------------------------------------------
# Standard output: the reply channel


def claim_stdout():
    """Keeps the real stdout for replies and points file descriptor 1 at stderr."""
    sys.stdout.flush()
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return replies


def send(replies, result):
    try:
        line = json.dumps(result, allow_nan=False, separators=(",", ":"))
    except ValueError as e:  # a non-finite number slipped through
        line = json.dumps({"error": f"result not representable in JSON: {e}"})
    replies.write(line + "\n")
    replies.flush()


# ---------------------------------------------------------------------------------------------
# Corpus


def read_token_file(path):
    ids = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            for word in line.split():
                try:
                    value = int(word)
                except ValueError:
                    raise SetupError(f"--tokens {path}: line {line_no}: {word!r} is not an integer "
                                     "token id") from None
                if value < 0:
                    raise SetupError(f"--tokens {path}: line {line_no}: negative token id {value}")
                ids.append(value)
    return ids


def config_vocab_size(model_dir):
    """vocab_size from config.json (or its text_config), None when absent."""
    try:
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    for part in (config, config.get("text_config") or {}):
        size = part.get("vocab_size") if isinstance(part, dict) else None
        if isinstance(size, int) and size > 0:
            return size
    return None


def check_vocab(ids, vocab_size, source):
    """Raises SetupError naming the source and the first id the model has no embedding for."""
    if vocab_size is None or not ids:
        return
    largest = max(ids)
    if largest >= vocab_size:
        position = ids.index(largest)
        raise SetupError(f"{source}: token id {largest} (token #{position}) is >= the model's "
                         f"vocabulary size {vocab_size}")


class Corpus:
    """The token windows, a LongTensor [windows, seq_len] on the CPU."""

    def __init__(self, args, tokenizer_dir, config_dir):
        if args.tokens is not None:
            self.source = f"--tokens {args.tokens}"
            ids = read_token_file(args.tokens)
        else:
            self.source = f"--text {args.text}"
            ids = tokenize_text(args, tokenizer_dir)
        check_vocab(ids, config_vocab_size(config_dir), self.source)
        available = len(ids) // args.seq_len
        if available == 0:
            raise SetupError(f"{self.source} has {len(ids)} tokens, fewer than one window of "
                             f"--seq-len {args.seq_len}; lower --seq-len or give more text")
        n = available if args.max_sequences is None else min(available, args.max_sequences)
        import torch

        self.ids = ids[: n * args.seq_len]
        self.windows = torch.tensor(self.ids, dtype=torch.long).view(n, args.seq_len)
        log(f"corpus {self.source}: {len(ids)} tokens, {n} windows of {args.seq_len}"
            + (f" (of {available})" if n < available else ""))

    def check_model(self, model):
        """The authoritative vocabulary check, against the loaded embedding matrix."""
        rows = model.get_input_embeddings().weight.shape[0]
        check_vocab(self.ids, rows, self.source)


def tokenize_text(args, tokenizer_dir):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir,
                                                  trust_remote_code=args.trust_remote_code)
    except Exception as e:
        raise SetupError(f"cannot load the tokenizer of {tokenizer_dir} for --text: "
                         f"{type(e).__name__}: {e}; or pass --tokens FILE") from e
    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        raise SetupError(f"--text {args.text} is empty")
    started = time.monotonic()
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    log(f"tokenized {args.text} with the tokenizer of {tokenizer_dir} in "
        f"{time.monotonic() - started:.1f} s")
    return list(ids)


# ---------------------------------------------------------------------------------------------
# Model


class Loader:
    """from_pretrained with the arguments' dtype and device; counts the loads."""

    def __init__(self, args):
        import torch
        import transformers

        self.torch = torch
        self.transformers = transformers
        self.args = args
        self.loads = 0
        self.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise SetupError(f"--device {args.device}: CUDA is not available in this torch "
                             f"({torch.__version__})")
        self.dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
        major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
        # transformers 4.56 renamed torch_dtype to dtype.
        self.dtype_kw = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"

    def load(self, model_dir):
        from transformers import AutoModelForCausalLM

        started = time.monotonic()
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, **{self.dtype_kw: self.dtype}, trust_remote_code=self.args.trust_remote_code
        )
        model.to(self.device)
        model.eval()
        model.requires_grad_(False)
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)
        self.loads += 1
        seconds = time.monotonic() - started
        log(f"loaded {model_dir} ({type(model).__name__}, {next(model.parameters()).dtype}, "
            f"{self.device}) in {seconds:.2f} s")
        return model, seconds


def score(torch, model, windows, batch_size, device):
    """Per-window mean negative log-likelihood (nats per predicted token), a list of floats."""
    import torch.nn.functional as F

    losses = []
    with torch.inference_mode():
        for start in range(0, windows.shape[0], batch_size):
            batch = windows[start:start + batch_size].to(device)
            logits = model(input_ids=batch, use_cache=False).logits
            sums = torch.empty(batch.shape[0], dtype=torch.float64, device=device)
            for row in range(batch.shape[0]):  # one row's float32 logits at a time
                sums[row] = F.cross_entropy(logits[row, :-1].float(), batch[row, 1:],
                                            reduction="sum").double()
            del logits
            losses.extend((sums / (batch.shape[1] - 1)).tolist())
    return losses


def summarize(window_losses, seq_len):
    n = len(window_losses)
    loss = math.fsum(window_losses) / n
    if not math.isfinite(loss):
        raise TrialError(f"the loss is not finite ({loss}): the model's outputs overflow or are NaN")
    if loss > 700:
        raise TrialError(f"the loss {loss:.1f} is too large for a finite perplexity")
    perplexity = math.exp(loss)
    scores = {"perplexity": perplexity, "loss": loss, "tokens": n * (seq_len - 1), "windows": n}
    stderr = {}
    if n >= 2:
        variance = math.fsum((x - loss) ** 2 for x in window_losses) / (n - 1)
        se = math.sqrt(variance / n)
        stderr = {"loss": se, "perplexity": perplexity * se}
    return scores, stderr


def evaluate(torch, model, corpus, items, batch_size, device):
    windows = corpus.windows
    if items is not None:
        if items < windows.shape[0]:
            windows = windows[:items]
        else:
            log(f"items {items} >= the {windows.shape[0]} windows: scoring all")
    started = time.monotonic()
    window_losses = score(torch, model, windows, batch_size, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    scores, stderr = summarize(window_losses, windows.shape[1])
    scores["score_seconds"] = time.monotonic() - started
    return scores, stderr


def result_of(scores, stderr):
    result = {"scores": scores}
    if stderr:
        result["stderr"] = stderr
    return result


# ---------------------------------------------------------------------------------------------
# Modes


def parse_items(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise TrialError(f"the request's items is not a whole number: {value!r}")
    if value < 1:
        raise TrialError(f"the request's items must be >= 1, got {value!r}")
    return int(value)


def handle_request(line, loader, model, corpus, args):
    import inplace_weights

    try:
        request = json.loads(line)
    except ValueError as e:
        raise TrialError(f"the request is not JSON: {e}") from None
    if not isinstance(request, dict):
        raise TrialError("the request is not a JSON object")
    model_dir = request.get("model_dir")
    if not isinstance(model_dir, str):
        raise TrialError("the request has no model_dir: declare the evaluator with model = true "
                         "(the search space needs models)")
    items = parse_items(request.get("items"))
    try:
        report = inplace_weights.load_in_place(model, model_dir)
    except inplace_weights.WeightLoadError as e:
        raise TrialError(f"cannot load {model_dir} in place: {e}") from None
    n_tensors, load_seconds = report
    log(f"trial {request.get('trial_id')}: {n_tensors} tensors from {report.files} file(s) "
        f"loaded in place in {load_seconds:.3f} s"
        + (f" ({report.converted} converted to the model's dtype)" if report.converted else ""))
    scores, stderr = evaluate(loader.torch, model, corpus, items, args.batch_size, loader.device)
    scores["load_seconds"] = load_seconds
    scores["loads"] = loader.loads
    return result_of(scores, stderr)


def run_worker(args, replies):
    import inplace_weights

    loader = Loader(args)
    corpus = Corpus(args, args.base, args.base)
    model, _ = loader.load(args.base)
    corpus.check_model(model)
    try:
        n = inplace_weights.check_names(model, args.base)
        log(f"the base's {n} checkpoint tensors match the model's state_dict")
    except inplace_weights.WeightLoadError as e:
        raise SetupError(f"candidates cannot be loaded in place into this model: the base's own "
                         f"checkpoint does not fit it: {e}. Use --model-dir (command mode)") from e
    log("worker ready")
    while True:
        line = sys.stdin.readline()
        if not line:
            log("stdin closed, exiting")
            return 0
        if not line.strip():
            continue
        try:
            result = handle_request(line, loader, model, corpus, args)
            log(f"scores: {json.dumps(result)}")
        except Exception as e:
            if not isinstance(e, TrialError):
                traceback.print_exc()
            result = {"error": str(e) if isinstance(e, TrialError) else f"{type(e).__name__}: {e}"}
            log(f"error: {result['error']}")
            if loader.device.type == "cuda":
                loader.torch.cuda.empty_cache()  # after an out-of-memory error, say
        send(replies, result)


def run_command(args, replies):
    loader = Loader(args)
    tokenizer_dir = args.base if args.base is not None else args.model_dir
    corpus = Corpus(args, tokenizer_dir, args.model_dir)
    model, load_seconds = loader.load(args.model_dir)
    corpus.check_model(model)
    try:
        scores, stderr = evaluate(loader.torch, model, corpus, args.items, args.batch_size,
                                  loader.device)
    except TrialError as e:
        log(f"error: {e}")
        send(replies, {"error": str(e)})
        return 1
    scores["load_seconds"] = load_seconds
    scores["loads"] = loader.loads
    result = result_of(scores, stderr)
    log(f"scores: {json.dumps(result)}")
    send(replies, result)
    return 0


def main(argv=None):
    args = parse_args(argv)
    replies = claim_stdout()
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as e:
        reason = (f"hf_worker.py needs torch, transformers and safetensors in {sys.executable} "
                  f"({e}): pip install torch transformers safetensors")
        log(f"error: {reason}")
        send(replies, {"error": reason})
        return 1
    try:
        if args.model_dir is not None:
            return run_command(args, replies)
        return run_worker(args, replies)
    except SetupError as e:
        # A worker that cannot start answers with the reason (mergesearch takes the line as
        # the reply to its first request, so the trial records why) and exits.
        log(f"error: {e}")
        send(replies, {"error": str(e)})
        return 2
    except Exception as e:
        traceback.print_exc()
        send(replies, {"error": f"{type(e).__name__}: {e}"})
        return 1


if __name__ == "__main__":
    sys.exit(main())
