"""``python -m tests.controlplane build | up``: build the control plane, or run it.

``up`` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on
127.0.0.1 in the foreground, prints one line, ``export KUBECONFIG=<path>``, and stops
everything on Ctrl-C or SIGTERM. Try the pipeline against it::

    eval "$(make k8s-up)"   # in one shell (or copy the line it prints)
    kubectl get nodes
    python -m scripts deploy --target k8s --overlay staging --model digits --image … --canary
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from tests.controlplane.cluster import build_all, cache_root, running


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.controlplane", description=__doc__)
    parser.add_argument("command", choices=("build", "up"))
    parser.add_argument("--workdir", type=Path, help="up: keep state and logs here")
    args = parser.parse_args()
    if args.command == "build":
        started = time.monotonic()
        binaries = build_all()
        for name, path in sorted(binaries.items()):
            print(f"{name}: {path}")
        print(
            f"control plane ready in {time.monotonic() - started:.0f} s (cache {cache_root()})",
            file=sys.stderr,
        )
        return 0
    # A plain flag: an Event set from a signal handler can deadlock on its own lock when
    # the main thread is inside Event.wait().
    stopping: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _frame: stopping.append(number))
    with running(args.workdir) as plane:
        print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
        print(
            f"control plane up in {plane.startup_s:.1f} s at {plane.server}; Ctrl-C stops it",
            file=sys.stderr,
        )
        while not stopping:
            time.sleep(0.5)
            for name, process in plane.processes.items():
                if process.poll() is not None:
                    print(f"{name} exited ({process.returncode}); stopping", file=sys.stderr)
                    return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
