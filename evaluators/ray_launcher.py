#!/usr/bin/env python3
"""Runs a mergesearch worker as a Ray actor, for searches spread over a Ray cluster.

mergesearch starts one process per worker from its --launcher and speaks JSON lines with it
(one trial request in, one trial record out). This launcher relays those lines to a Ray actor
that runs the worker command (`mergesearch worker SPACE ...`, appended by mergesearch) on
whichever node Ray places it:

    mergesearch run SPACE --workers 8 \
        --launcher "python3 evaluators/ray_launcher.py --address HEAD:6379 --num-gpus 1 --"

Each actor asks Ray for --num-gpus GPUs (1 by default) and --num-cpus CPUs; Ray sets the
actor's CUDA_VISIBLE_DEVICES, which the worker and its evaluators inherit, so run with
--workers N and --device cuda (not --gpus: Ray chooses the GPUs). The space, the models and
mergesearch itself must be at the same paths on every node (a shared file system).

If the actor dies (its node fails, it is killed), this launcher exits with status 3: mergesearch
records the trial in flight as failed and starts a new launcher, and so a new actor, for the
next trial. Nothing else in mergesearch needs Ray. Requirements: evaluators/requirements-ray.txt.
"""

import argparse
import os
import subprocess
import sys


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Relay a mergesearch worker's JSON lines to a Ray actor running it.")
    parser.add_argument("--address", default="auto",
                        help="the Ray cluster's address, HOST:PORT (default: auto, the local one)")
    parser.add_argument("--num-gpus", type=float, default=1.0,
                        help="GPUs each actor asks for (default 1; 0 for CPU-only workers)")
    parser.add_argument("--num-cpus", type=float, default=1.0,
                        help="CPUs each actor asks for (default 1)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="-- then the worker command (mergesearch appends it)")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no worker command after --")
    return args, command


def main(argv=None):
    args, command = parse_args(sys.argv[1:] if argv is None else argv)
    # Standard output carries only the worker's replies: point file descriptor 1 at stderr while
    # Ray starts, and keep a private copy of the real stdout for the replies.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        import ray
    except ImportError:
        sys.exit("ray_launcher.py: cannot import ray: pip install -r evaluators/requirements-ray.txt")

    @ray.remote(max_restarts=0)
    class Worker:
        """Runs one mergesearch worker process and exchanges lines with it."""

        def __init__(self, command):
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True, bufsize=1)

        def serve(self, line):
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
            reply = self.process.stdout.readline()
            if not reply:
                raise RuntimeError(f"the worker exited with status {self.process.wait()}")
            return reply

        def close(self):
            self.process.stdin.close()
            return self.process.wait()

    ray.init(address=args.address, log_to_driver=False, logging_level="ERROR")
    actor = Worker.options(num_gpus=args.num_gpus, num_cpus=args.num_cpus).remote(command)
    status = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            reply = ray.get(actor.serve.remote(line))
        except (ray.exceptions.RayError, RuntimeError) as e:
            print(f"ray_launcher.py: the worker's actor was lost: {e}", file=sys.stderr)
            status = 3
            break
        replies.write(reply if reply.endswith("\n") else reply + "\n")
        replies.flush()
    if status == 0:
        try:
            ray.get(actor.close.remote(), timeout=60)
        except Exception as e:  # the actor died after its last reply: nothing was lost
            print(f"ray_launcher.py: closing the worker: {e}", file=sys.stderr)
    ray.kill(actor)
    sys.exit(status)


if __name__ == "__main__":
    main()
