"""A stand-in kubelet for the e2e suite: ``python -m tests.e2e.node_agent``.

The development control plane has no kubelet and no container runtime. This
agent registers one Node, binds the operator's pods to it (it is also the
scheduler), runs each pod's container command as a local process with the
pod's environment (Secrets resolved, emptyDir volumes mapped to local
directories, ``python`` meaning this venv's interpreter) and reports the
pod's status back the way a kubelet would: Running, then Succeeded or Failed
with the exit code; ``activeDeadlineSeconds`` ends the pod DeadlineExceeded;
a container whose processes together hold more memory than its
``limits.memory`` is killed (SIGKILL) and reported ``OOMKilled``, exit 137,
as the kernel's cgroup OOM killer and a kubelet would;
an image it does not "have" never starts (ErrImagePull); deleting a pod stops
its process (SIGTERM, then SIGKILL after the grace period).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import re
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger("node_agent")
SELECTOR = "app.kubernetes.io/managed-by=cmbtask-operator"
STRATEGIC = {"_content_type": "application/strategic-merge-patch+json"}


_QUANTITY = re.compile(r"^([0-9.]+)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
_UNITS = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip
MEMORY_CHECK_S = 0.1


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("256Mi", "1G", "1048576") in bytes."""
    found = _QUANTITY.match(quantity)
    if found is None:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(float(found.group(1)) * _UNITS[found.group(2)])


def tree_rss(pid: int) -> int:
    """Resident memory of a container's process and all its descendants (what
    its cgroup would count)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeAgent:
    def __init__(
        self, api: client.ApiClient, node: str, root: Path, images: set[str], simulate_s: float | None = None
    ) -> None:
        self.core = client.CoreV1Api(api)
        #: benchmarks: report Running, wait this long, report exit 0, run nothing
        self.simulate_s = simulate_s
        self.node = node
        self.root = root
        self.images = images
        self.seen: set[str] = set()
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.stopping: set[str] = set()
        #: pods whose container went over its memory limit
        self.oom_killed: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    # ---- the Node ---------------------------------------------------------------

    async def register(self) -> None:
        body = {"metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node}}}
        with contextlib.suppress(ApiException):
            await self.core.create_node(body)
        status = {
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "NodeAgentReady",
                     "lastHeartbeatTime": now(), "lastTransitionTime": now()},
                ],
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            }
        }  # fmt: skip
        await self.core.patch_node_status(self.node, status)
        log.info("node registered: %s", self.node)

    # ---- watching ----------------------------------------------------------------

    async def run(self) -> None:
        await self.register()
        while True:
            stream = watch.Watch().stream(
                self.core.list_pod_for_all_namespaces, label_selector=SELECTOR, timeout_seconds=60
            )
            try:
                async for event in stream:
                    self.on_event(event["type"], event["raw_object"])
            except ApiException as error:
                log.warning("watch ended: %s", error.status)
                await asyncio.sleep(0.5)

    def on_event(self, kind: str, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod.get("spec", {})
        uid = meta["uid"]
        if kind == "DELETED":
            self.spawn(self.kill(uid, grace_s=0))
            return
        if not spec.get("nodeName"):
            if not meta.get("deletionTimestamp") and uid not in self.seen:
                self.seen.add(uid)
                self.spawn(self.bind(meta["namespace"], meta["name"], uid))
            return
        if spec["nodeName"] != self.node:
            return
        if meta.get("deletionTimestamp"):
            if uid not in self.stopping:
                self.stopping.add(uid)
                self.spawn(self.stop(pod))
            return
        if (pod.get("status") or {}).get("phase") in (None, "Pending") and f"run:{uid}" not in self.seen:
            self.seen.add(f"run:{uid}")
            self.spawn(self.start(pod))

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pod work failed", exc_info=task.exception())

    async def bind(self, namespace: str, name: str, uid: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
        }
        try:
            response = await self.core.create_namespaced_pod_binding(
                name, namespace, body, _preload_content=False
            )
            response.release()
        except ApiException as error:
            log.info("bind %s/%s: %s", namespace, name, error.status)

    # ---- running ------------------------------------------------------------------

    async def start(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        container = spec["containers"][0]
        if container.get("image") not in self.images:
            message = f'Failed to pull image "{container.get("image")}": not found'
            await self.report_waiting(pod, "ErrImagePull", message)
            return
        if self.simulate_s is not None:
            await self.simulate(pod)
            return
        dirs = self.volumes(pod)
        try:
            env = await self.environment(meta["namespace"], container, dirs)
        except LookupError as missing:
            await self.report_waiting(pod, "CreateContainerConfigError", str(missing))
            return
        command = [*container.get("command", []), *container.get("args", [])]
        if command and command[0] in ("python", "python3"):
            command[0] = sys.executable
        cwd = self.local_path(container.get("workingDir") or "/", dirs) or str(self.root)
        logfile = (self.root / f"{meta['namespace']}_{meta['name']}.log").open("ab")
        process = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            cwd=cwd,
            stdout=logfile,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        logfile.close()
        uid = meta["uid"]
        self.processes[uid] = process
        started = now()
        await self.report(pod, "Running", {"running": {"startedAt": started}}, started)
        deadline = spec.get("activeDeadlineSeconds")
        limit = (container.get("resources") or {}).get("limits", {}).get("memory")
        guard = asyncio.create_task(self.enforce_memory(uid, process, memory_bytes(limit))) if limit else None
        try:
            code = await asyncio.wait_for(process.wait(), deadline)
        except TimeoutError:
            await self.kill(uid, grace_s=spec.get("terminationGracePeriodSeconds", 30))
            code = process.returncode if process.returncode is not None else -9
            terminated = self.terminated(code, started)
            await self.report(pod, "Failed", {"terminated": terminated}, started, reason="DeadlineExceeded",
                              message=f"Pod was active on the node longer than {deadline}s")  # fmt: skip
            return
        finally:
            self.processes.pop(uid, None)
            if guard is not None:
                guard.cancel()
        if uid in self.stopping:
            return
        terminated = self.terminated(code, started)
        if uid in self.oom_killed:
            terminated.update(exitCode=137, reason="OOMKilled")
        phase = "Succeeded" if code == 0 else "Failed"
        await self.report(pod, phase, {"terminated": terminated}, started)

    async def enforce_memory(self, uid: str, process: asyncio.subprocess.Process, limit: int) -> None:
        while process.returncode is None:
            used = await asyncio.to_thread(tree_rss, process.pid)
            if used > limit:
                log.info("pod %s: %d bytes over its limit of %d: OOMKilled", uid, used - limit, limit)
                self.oom_killed.add(uid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                return
            await asyncio.sleep(MEMORY_CHECK_S)

    async def simulate(self, pod: dict[str, Any]) -> None:
        started = now()
        await self.report(pod, "Running", {"running": {"startedAt": started}}, started)
        await asyncio.sleep(self.simulate_s or 0)
        if pod["metadata"]["uid"] not in self.stopping:
            await self.report(pod, "Succeeded", {"terminated": self.terminated(0, started)}, started)

    @staticmethod
    def terminated(code: int, started: str) -> dict[str, Any]:
        exit_code = code if code >= 0 else 128 - code  # killed by signal N: 128 + N
        reason = "Completed" if exit_code == 0 else "Error"
        return {"exitCode": exit_code, "reason": reason, "startedAt": started, "finishedAt": now()}

    def volumes(self, pod: dict[str, Any]) -> dict[str, str]:
        """mountPath → local directory, for every emptyDir the container mounts."""
        meta = pod["metadata"]
        empty = {v["name"] for v in pod["spec"].get("volumes", []) if "emptyDir" in v}
        dirs = {}
        for mount in pod["spec"]["containers"][0].get("volumeMounts", []):
            if mount["name"] in empty:
                local = self.root / meta["namespace"] / meta["name"] / mount["name"]
                local.mkdir(parents=True, exist_ok=True)
                dirs[mount["mountPath"]] = str(local)
        return dirs

    @staticmethod
    def local_path(value: str, dirs: dict[str, str]) -> str | None:
        for mount, local in dirs.items():
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                return local + value[len(mount) :]
        return None

    async def environment(
        self, namespace: str, container: dict[str, Any], dirs: dict[str, str]
    ) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        for item in container.get("env", []):
            if "value" in item:
                value = item["value"]
                env[item["name"]] = self.local_path(value, dirs) or value
            elif ref := (item.get("valueFrom") or {}).get("secretKeyRef"):
                try:
                    env[item["name"]] = await self.secret_value(namespace, ref["name"], ref["key"])
                except LookupError:
                    if not ref.get("optional"):  # as the kubelet: an optional key may be missing
                        raise
        return env

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                raise LookupError(f'secret "{name}" not found') from None
            raise
        data = secret.data or {}
        if key not in data:
            raise LookupError(f"couldn't find key {key} in Secret {namespace}/{name}")
        return base64.b64decode(data[key]).decode()

    # ---- stopping -------------------------------------------------------------------

    async def kill(self, uid: str, grace_s: float) -> None:
        process = self.processes.get(uid)
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), max(grace_s, 0.1))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def stop(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        await self.kill(meta["uid"], grace_s=meta.get("deletionGracePeriodSeconds") or 0)
        # As a kubelet does: once the containers are gone, remove the pod for good.
        with contextlib.suppress(ApiException):
            # (with a body, the API server reads the grace period from it, not the query)
            await self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )

    async def shutdown(self) -> None:
        for uid in list(self.processes):
            await self.kill(uid, grace_s=2)

    # ---- reporting -------------------------------------------------------------------

    async def report(
        self, pod: dict[str, Any], phase: str, state: dict[str, Any], started: str, **extra: str
    ) -> None:
        container = pod["spec"]["containers"][0]
        running = phase == "Running"
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "startTime": started,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": str(running)},
                {"type": "Ready", "status": str(running)},
            ],
            "containerStatuses": [
                {"name": container["name"], "image": container.get("image", ""), "imageID": "",
                 "ready": running, "started": running, "restartCount": 0, "state": state}
            ],
            **extra,
        }  # fmt: skip
        await self.patch_status(pod, status)

    async def report_waiting(self, pod: dict[str, Any], reason: str, message: str) -> None:
        container = pod["spec"]["containers"][0]
        status = {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [
                {"name": container["name"], "image": container.get("image", ""), "imageID": "",
                 "ready": False, "restartCount": 0,
                 "state": {"waiting": {"reason": reason, "message": message}}}
            ],
        }  # fmt: skip
        await self.patch_status(pod, status)

    async def patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            await self.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"], {"status": status}, **STRATEGIC
            )
        except ApiException as error:
            log.info("status of %s/%s not written: %s", meta["namespace"], meta["name"], error.status)


async def main_async(args: argparse.Namespace) -> None:
    await config.load_kube_config(config_file=args.kubeconfig)
    api = client.ApiClient()
    agent = NodeAgent(api, args.node, Path(args.root), set(args.images.split(",")), args.simulate_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.ensure_future(agent.run())
    await asyncio.wait([runner, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    runner.cancel()
    await agent.shutdown()
    await api.close()
    if runner.done() and not runner.cancelled() and runner.exception():
        raise runner.exception()  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--node", default="cmbtask-e2e-node")
    parser.add_argument("--root", required=True, help="directory for pod work dirs and logs")
    parser.add_argument("--images", default="cmbtask-runner:latest", help="comma-separated images it 'has'")
    parser.add_argument("--simulate-s", type=float, default=None, help="run nothing; succeed after this long")
    args = parser.parse_args()
    Path(args.root).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
