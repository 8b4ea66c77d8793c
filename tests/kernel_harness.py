"""A real IPython kernel driven through jupyter_client, recording every IOPub message.

Messages are filed by the request (cell) they belong to, including those
that arrive after the cell finished, so tests can check where output lands.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict

from jupyter_client.manager import KernelManager


class Kernel:
    def __init__(
        self,
        env: dict[str, str],
        kernel_name: str = "python3",
        ip: str = "",
        ports: range | None = None,
        connect_ip: str = "",
    ) -> None:
        self.km = KernelManager(kernel_name=kernel_name)
        if ip:
            self.km.ip = ip
        if ports is not None:  # fixed ports: needed when the kernel's address is not ours to probe
            km = self.km
            km.shell_port, km.iopub_port, km.stdin_port, km.control_port, km.hb_port = list(ports)[:5]
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        if connect_ip:  # the kernel listens on all its addresses; we reach it at this one
            self.kc.ip = connect_ip
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.by_parent: dict[str, list[dict]] = defaultdict(list)
        self.idle: set[str] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def _collect(self) -> None:
        while not self.stop.is_set():
            try:
                msg = self.kc.get_iopub_msg(timeout=0.1)
            except queue.Empty:
                continue
            except Exception:
                return
            parent = msg.get("parent_header", {}).get("msg_id")
            if not parent:
                continue
            with self.lock:
                self.by_parent[parent].append(msg)
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    self.idle.add(parent)

    def execute(self, code: str, timeout: float = 120) -> str:
        """Run a cell; wait until it finished; its msg_id."""
        msg_id = self.kc.execute(code)
        deadline = time.monotonic() + timeout
        while msg_id not in self.idle:
            if time.monotonic() > deadline:
                raise TimeoutError(f"cell did not finish within {timeout} s:\n{code}")
            time.sleep(0.02)
        return msg_id

    def submit(self, code: str) -> str:
        """Start a cell without waiting."""
        return self.kc.execute(code)

    def messages(self, msg_id: str) -> list[dict]:
        with self.lock:
            return list(self.by_parent.get(msg_id, []))

    def stream(self, msg_id: str, name: str | None = None) -> str:
        return "".join(
            m["content"]["text"]
            for m in self.messages(msg_id)
            if m["msg_type"] == "stream" and (name is None or m["content"]["name"] == name)
        )

    def errors(self, msg_id: str) -> list[dict]:
        return [m["content"] for m in self.messages(msg_id) if m["msg_type"] == "error"]

    def results(self, msg_id: str) -> list[dict]:
        """execute_result and display_data bundles of a cell."""
        return [
            m["content"]["data"]
            for m in self.messages(msg_id)
            if m["msg_type"] in ("execute_result", "display_data", "update_display_data")
        ]

    def comm_states(self) -> dict[str, dict]:
        """The latest state of every widget model the kernel published."""
        states: dict[str, dict] = {}
        with self.lock:
            msgs = [m for ms in self.by_parent.values() for m in ms]
        msgs.sort(key=lambda m: m["header"]["date"])
        for m in msgs:
            if m["msg_type"] == "comm_open":
                states[m["content"]["comm_id"]] = dict(m["content"]["data"].get("state", {}))
            elif m["msg_type"] == "comm_msg" and m["content"]["data"].get("method") == "update":
                states.setdefault(m["content"]["comm_id"], {}).update(m["content"]["data"]["state"])
        return states

    def value(self, expr: str) -> str:
        """repr() of an expression evaluated in the kernel."""
        msg_id = self.execute(f"print(repr({expr}))")
        errs = self.errors(msg_id)
        if errs:
            raise AssertionError("\n".join(errs[0]["traceback"]))
        return self.stream(msg_id, "stdout").strip()

    def shutdown(self) -> None:
        self.stop.set()
        try:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=False)
        except Exception:
            self.km.shutdown_kernel(now=True)


def ok(kernel: Kernel, code: str, timeout: float = 120) -> str:
    """Run a cell that must not fail (its traceback is the assertion's message); its msg_id."""
    msg_id = kernel.execute(code, timeout=timeout)
    errs = kernel.errors(msg_id)
    assert not errs, "\n".join(errs[0]["traceback"])
    return msg_id
