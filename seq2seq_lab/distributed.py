"""Several processes training one model: data parallelism on JAX's distributed runtime.

Every process runs the same `seq2seq train` command with its own process id; `jax.distributed.initialize`
joins them (the coordinator, process 0, at HOST:PORT), after which jax.devices() lists every process's
devices and one jit-compiled step runs on all of them, XLA's collectives (gloo on CPUs, NCCL on GPUs)
summing the gradients.  Each global batch is the one a single process would train on; each process feeds its
own rows of it (jax.make_array_from_process_local_data).  Process 0 alone writes the run folder, validates,
and tells the others what it decided (share), so that every process stops at the same step.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

ENVIRONMENT = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
               "process_id": "JAX_PROCESS_ID"}


@dataclass(frozen=True)
class DistributedSettings:
    """coordinator: process 0's HOST:PORT, which every process can reach; connect_timeout: seconds to wait for
    all processes to join; heartbeat_timeout: seconds after which a silent process counts as dead."""
    coordinator: str
    num_processes: int
    process_id: int
    connect_timeout: int = 120
    heartbeat_timeout: int = 100

    def __post_init__(self):
        if not isinstance(self.coordinator, str) or not re.fullmatch(r"\[?[\w.:-]+\]?:\d{1,5}", self.coordinator) \
                or not 0 < int(self.coordinator.rsplit(":", 1)[1]) < 65536:
            raise ValueError(f"coordinator: expected HOST:PORT (process 0's address, a port in [1, 65535]), got "
                             f"{self.coordinator!r}")
        for name, low in (("num_processes", 1), ("connect_timeout", 1), ("heartbeat_timeout", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        if isinstance(self.process_id, bool) or not isinstance(self.process_id, int) \
                or not 0 <= self.process_id < self.num_processes:
            raise ValueError(f"process_id: expected an integer in [0, {self.num_processes}) (num_processes "
                             f"{self.num_processes}), got {self.process_id!r}")

    @classmethod
    def from_arguments(cls, coordinator=None, num_processes=None, process_id=None, connect_timeout=120,
                       heartbeat_timeout=100, environ=os.environ) -> DistributedSettings | None:
        """The settings of the flags, each missing one from its environment variable (ENVIRONMENT:
        JAX_COORDINATOR_ADDRESS is JAX's own, the others named after it); None where neither names a number
        of processes (one process, no distributed runtime)."""
        values = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
        for name, variable in ENVIRONMENT.items():
            if values[name] is None and environ.get(variable):
                text = environ[variable]
                if name == "coordinator":
                    values[name] = text
                elif not re.fullmatch(r"\d+", text.strip()):
                    raise ValueError(f"{name}: expected an integer in ${variable}, got {text!r}")
                else:
                    values[name] = int(text)
        if values["num_processes"] is None:
            given = [name for name in ("coordinator", "process_id") if values[name] is not None]
            if given:
                raise ValueError(f"num_processes: expected --num-processes (or ${ENVIRONMENT['num_processes']}) "
                                 f"with --{given[0].replace('_', '-')}, got none")
            return None
        missing = [name for name in ("coordinator", "process_id") if values[name] is None]
        if missing:
            raise ValueError(f"{missing[0]}: expected --{missing[0].replace('_', '-')} (or "
                             f"${ENVIRONMENT[missing[0]]}) with --num-processes, got none")
        return cls(values["coordinator"], values["num_processes"], values["process_id"], connect_timeout,
                   heartbeat_timeout)


def initialize(settings: DistributedSettings) -> None:
    """jax.distributed.initialize with these settings, before any computation; a coordinator that cannot be
    reached within connect_timeout is one ValueError."""
    import socket
    import time

    import jax

    if settings.process_id != 0:  # the runtime aborts the process where it cannot connect: look first
        host, port = settings.coordinator.rsplit(":", 1)
        deadline = time.monotonic() + settings.connect_timeout
        while True:
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
                break
            except OSError as error:
                if time.monotonic() >= deadline:
                    raise ValueError(f"coordinator: could not join {settings.num_processes} processes at "
                                     f"{settings.coordinator} as process {settings.process_id} within "
                                     f"{settings.connect_timeout} s (--connect-timeout): nothing answers there "
                                     f"({error.strerror or error}); process 0 runs the coordinator") from None
                time.sleep(0.2)
    try:
        jax.distributed.initialize(settings.coordinator, settings.num_processes, settings.process_id,
                                   initialization_timeout=settings.connect_timeout,
                                   heartbeat_timeout_seconds=settings.heartbeat_timeout)
    except Exception as error:  # the runtime's status errors: DEADLINE_EXCEEDED, UNAVAILABLE, ...
        first = first_line(error)
        raise ValueError(f"coordinator: could not join {settings.num_processes} processes at "
                         f"{settings.coordinator} as process {settings.process_id} within "
                         f"{settings.connect_timeout} s (--connect-timeout): {first[:300]}") from None


def process_count() -> int:
    """The processes of this job (1 without the distributed runtime, or without jax)."""
    try:
        import jax
    except ImportError:
        return 1
    return jax.process_count() if jax.distributed.is_initialized() else 1


def process_index() -> int:
    try:
        import jax
    except ImportError:
        return 0
    return jax.process_index() if jax.distributed.is_initialized() else 0


def share(value):
    """Process 0's value (anything JSON can hold), on every process: what process 0 alone computed or read
    (a vocabulary, a validation record, a decision).  Every process must call it at the same point."""
    if process_count() == 1:
        return value
    import numpy as np
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value).encode(), np.uint8) if process_index() == 0 else np.zeros(0, np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.int64(data.size)))
    padded = np.zeros(size, np.uint8)
    padded[: data.size] = data[:size]
    return json.loads(bytes(multihost_utils.broadcast_one_to_all(padded)).decode())


def any_process(*flags: bool) -> tuple[bool, ...]:
    """Each flag, True on every process if it is True on any (a Ctrl-C or a clock that only some saw): one
    collective for all of them."""
    if process_count() == 1:
        return tuple(bool(flag) for flag in flags)
    import numpy as np
    from jax.experimental import multihost_utils

    gathered = np.asarray(multihost_utils.process_allgather(np.array(flags, np.int32)))  # [processes, flags]
    return tuple(bool(flag) for flag in gathered.reshape(-1, len(flags)).any(axis=0))


def first_line(error: BaseException) -> str:
    """An exception's first line of text (the runtime's messages run to pages), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
