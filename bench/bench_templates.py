"""Templates built from OCI images: how long a build takes, and spawning from the result.

    .venv/bin/python bench/bench_templates.py                # throw-away qbox up + registry (root)
    .venv/bin/python bench/bench_templates.py --runs 5 --push --markdown docs/benchmarks.md

A docker-registry on 127.0.0.1 serves a small busybox image (tests/oci_images.py).
Measured, after one first build that pulls and unpacks the image (reported on
its own): POST /v1/templates until the template is ready, N builds with
distinct names, without steps and with one `run` step; then spawn to running
(`wait=true`, N runs after 3 warm-ups, each sandbox deleted before the next)
from the busybox template with a step, from the one without, and from the
built-in template, taking turns. `--push` starts qbox with QBOX_REGISTRY set to the same
registry, so each build is also pushed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from harness import add_common_args, api_client, latency_table, measure_floor, publish, qbox_endpoint, spawn
from tests.registry import BUSYBOX_REPO, registry_with_busybox

POLL_SECONDS = 0.05
BUILD_TIMEOUT = 300.0


@contextmanager
def busybox_registry() -> Iterator[str]:
    """A registry with the busybox image; yields its ref as users write it."""
    with registry_with_busybox() as address:
        yield f"{address}/{BUSYBOX_REPO}"


def build(api: httpx.Client, name: str, image: str, steps: list[dict[str, object]]) -> float:
    """ms from POST /v1/templates to status ready."""
    started = time.perf_counter()
    r = api.post("/v1/templates", json={"name": name, "imageRef": image, "steps": steps})
    r.raise_for_status()
    template_id = r.json()["id"]
    deadline = time.monotonic() + BUILD_TIMEOUT
    while True:
        body = api.get(f"/v1/templates/{template_id}").json()
        if body["status"] == "ready":
            return (time.perf_counter() - started) * 1000
        if body["status"] == "failed":
            raise RuntimeError(f"{name} failed: {body['buildError']}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} still {body['status']} after {BUILD_TIMEOUT} s")
        time.sleep(POLL_SECONDS)


def spawns(api: httpx.Client, templates: dict[str, str], runs: int) -> dict[str, list[float]]:
    """ms to running per template (label → id), in turns so that the host's noise falls on all alike."""
    samples: dict[str, list[float]] = {label: [] for label in templates}
    for i in range(runs + 3):
        for label, template in templates.items():
            started = time.perf_counter()
            sandbox_id = spawn(api, template)
            elapsed = (time.perf_counter() - started) * 1000
            api.delete(f"/v1/sandboxes/{sandbox_id}")
            if i >= 3:
                samples[label].append(elapsed)
    return samples


def run(api: httpx.Client, image: str, runs: int, builtin: str, made: list[str]) -> dict[str, list[float]]:
    """The samples; ``made`` collects the ids of the templates built, for the caller to delete."""
    results: dict[str, list[float]] = {}
    step = [{"run": "echo bench > /bench.txt"}]
    stamp = f"{os.getpid()}-{int(time.time())}"

    def named(kind: str, i: int) -> str:
        name = f"bench-{kind}-{stamp}-{i}"
        made.append(f"tpl_{name}")
        return name

    plain, stepped = named("plain", 0), named("step", 0)
    results["first build (pull + unpack), no steps"] = [build(api, named("first", 0), image, [])]
    results["build, no steps"] = [build(api, plain if i == 0 else named("plain", i), image, [])
                                  for i in range(runs)]
    results["build, one `run` step"] = [build(api, stepped if i == 0 else named("step", i), image, step)
                                        for i in range(runs)]
    results.update(spawns(api, {"spawn → running, busybox + one step": f"tpl_{stepped}",
                                "spawn → running, busybox": f"tpl_{plain}",
                                f"spawn → running, {builtin}": builtin}, runs))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--push", action="store_true",
                        help="start qbox with QBOX_REGISTRY=<the bench registry>/qbox (own qbox only)")
    args = parser.parse_args()
    if args.quick:
        args.runs = 2
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    floor = measure_floor(args.quick)
    with busybox_registry() as image:
        # The bench registry is on loopback: an own qbox trusts it (an external one must, too).
        registry = image.split('/')[0]
        env = {"QBOX_TRUSTED_REGISTRIES": registry}
        if args.push:
            env["QBOX_REGISTRY"] = f"{registry}/qbox"
        with qbox_endpoint(args, env) as endpoint, api_client(endpoint) as api:
            made: list[str] = []
            try:
                results = run(api, image, args.runs, args.template, made)
            finally:
                for template_id in made:
                    api.delete(f"/v1/templates/{template_id}")
    pushed = " (each build pushed to a local registry)" if args.push else ""
    text = latency_table(results, f"templates from a busybox image in a local registry{pushed}", floor,
                         against={name: "run" for name in results if name.startswith("spawn")})
    ours = statistics.median(results["spawn → running, busybox + one step"])
    builtin = statistics.median(results[f"spawn → running, {args.template}"])
    text += (f"\nspawn p50, built busybox template / {args.template}: {ours:.1f} / {builtin:.1f} ms "
             f"= {ours / builtin:.2f}×\n")
    publish(text, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
