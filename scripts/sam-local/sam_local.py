"""`make sam-local`: the functions exactly as `sam build` makes them, run by `sam local invoke` in
a Lambda-like container, on the events/ files, against local stand-ins for what they talk to.

    .venv/bin/python scripts/sam-local/sam_local.py [--skip-build] [--database-url URL] [--prepare-only|--serve]

1. A container engine. DOCKER_HOST, or Docker's own socket, when one answers (SAM pulls AWS's
   base image as usual). Otherwise engine.sh (Debian's podman and its Docker API socket) and
   base-image.sh (a Python 3.13 Lambda base image built locally under AWS's name, used with
   --skip-pull-image). Both are done once and kept.
2. `sam build` of template.yaml (the arm64 stack as deployed; on x86_64 it runs under qemu).
3. Local stand-ins: moto for SQS and SSM, the R2Z2 and ESI simulators, PostgreSQL (DATABASE_URL,
   else a fresh database on the embedded server). They listen on 127.0.0.1. A function container
   sits on the engine's bridge network and reaches the machine at the bridge's gateway address;
   a small relay there forwards each port to 127.0.0.1 while this runs, so none of them listens
   on another interface.
4. `sam local invoke` of PollerFunction on events/scheduled-tick.json, then FetcherFunction on
   events/sqs-inline-esi.json and on events/sqs-metadata-only.json, each printing the handler's
   response; then the killmails are looked up in PostgreSQL. Exit status 0 only when every step did
   what it should.

SAM's --env-vars can only override variables the template declares, and AWS_ENDPOINT_URL (where
boto3 finds moto) is not one of them, rightly: so the invocations use a copy of the built template
beside it (template.sam-local.yaml, same artifacts) that declares it, and an env-vars file with
the local endpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STATE_DIR = Path(os.environ.get("SAM_LOCAL_STATE_DIR", ROOT / ".local" / "sam-local"))
BUILD_DIR = ROOT / ".aws-sam" / "build"
EVENTS = ROOT / "events"
ARCHITECTURE = "arm64"  # template.yaml's Globals; the only one it builds
USER_AGENT = "killstream/0.1.0 (sam local invoke)"
DATABASE_NAME = "killstream_sam_local"
POLLER_BUDGET_SECONDS = 5
PUBLISHED = 5  # killmails the local R2Z2 serves to the poller
FETCHER_EVENTS = ("sqs-inline-esi.json", "sqs-metadata-only.json")
EMULATION_TIMEOUT_FACTOR = 3


class Unavailable(RuntimeError):
    """A piece this run needs cannot be had on this machine; the message says which and why."""


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


# ------------------------------------------------------------------ engine and image


def _sam_env(docker_host: str) -> dict[str, str]:
    env = {**os.environ, "DOCKER_HOST": docker_host, "SAM_CLI_TELEMETRY": "0"}
    # an emulated container takes a while to start its runtime: SAM's 20 s default is too tight
    env.setdefault("SAM_CLI_CONTAINER_CONNECTION_TIMEOUT", "120")
    return env


def _answers(docker_host: str) -> bool:
    import docker

    try:
        return bool(docker.DockerClient(base_url=docker_host, timeout=5).ping())
    except Exception:
        return False


def _run_script(name: str, *args: str, quiet: bool = False) -> str:
    """Runs scripts/sam-local/<name>, its output shown as it comes (unless quiet); returns its last
    line. A failure raises Unavailable with the script's last words."""
    process = subprocess.Popen(
        ["bash", str(HERE / name), *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    for line in process.stdout:
        if not quiet:
            print(line, end="", flush=True)
        if line.strip():
            lines.append(line.strip())
    if process.wait() != 0:
        said = " / ".join(lines[-2:]) or "no output"
        raise Unavailable(
            f"scripts/sam-local/{name} {' '.join(args)}".strip() + f" failed (exit {process.returncode}): {said}"
        )
    return lines[-1] if lines else ""


def prepare(architecture: str = ARCHITECTURE) -> tuple[str, bool]:
    """(DOCKER_HOST, whether SAM may pull images). Idempotent: what exists is kept."""
    for candidate in (os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock"):
        # (a DOCKER_HOST naming this project's own podman socket goes through engine.sh below,
        # which restarts the service when it has stopped and makes sure of the base image)
        if candidate and "sam-local" not in candidate and _answers(candidate):
            print(f"engine: a Docker API answers on {candidate}: using it, with AWS's own base image")
            return candidate, True
    last = _run_script("engine.sh")
    if not last.startswith("DOCKER_HOST="):
        raise Unavailable("scripts/sam-local/engine.sh did not print DOCKER_HOST")
    docker_host = last.split("=", 1)[1]
    _run_script("base-image.sh", architecture)
    return docker_host, False


def bridge_gateway(docker_host: str) -> str:
    """The host's address on the network a function container joins (Docker's and podman's
    default bridge alike: the engine calls it `bridge`)."""
    import docker

    network = docker.DockerClient(base_url=docker_host, timeout=10).networks.get("bridge")
    for config in network.attrs.get("IPAM", {}).get("Config") or []:
        if config.get("Gateway"):
            return config["Gateway"]
    raise Unavailable(f"the engine's bridge network has no gateway address: {network.attrs.get('IPAM')}")


# ------------------------------------------------------------------ the relay

IP_FREEBIND = 15  # Linux: bind before the address exists (podman creates its bridge with the first container)


class Relay:
    """Forwards connections to `gateway:port` to `127.0.0.1:target`, one listening port per
    target, while this process runs."""

    def __init__(self, gateway: str):
        self.gateway = gateway
        self._listeners: list[socket.socket] = []
        self._stopping = threading.Event()

    def forward(self, target_port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sys.platform.startswith("linux"):
            listener.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", IP_FREEBIND), 1)
        listener.bind((self.gateway, 0))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listeners.append(listener)
        threading.Thread(
            target=self._accept, args=(listener, target_port), daemon=True, name=f"relay:{target_port}"
        ).start()
        return listener.getsockname()[1]

    def url(self, scheme: str, target_port: int, path: str = "") -> str:
        return f"{scheme}://{self.gateway}:{self.forward(target_port)}{path}"

    def _accept(self, listener: socket.socket, target_port: int) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", target_port), timeout=10)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(None)
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
                try:
                    s.shutdown(how)
                except OSError:
                    pass

    def close(self) -> None:
        self._stopping.set()
        for listener in self._listeners:
            listener.close()


# ------------------------------------------------------------------ build and invoke


def sam_binary() -> str:
    beside = Path(sys.executable).parent / "sam"
    found = str(beside) if beside.exists() else shutil.which("sam")
    if not found:
        raise Unavailable("the SAM CLI is not installed: run make venv (requirements-dev.txt pins it)")
    return found


def build(docker_host: str) -> None:
    """`sam build`, with a Python 3.13 for the layers' bytecode (python313.sh) unless one is on PATH."""
    env = _sam_env(docker_host)
    if "BYTECODE_PYTHON" not in env:
        env["BYTECODE_PYTHON"] = _run_script("python313.sh", quiet=True)
    command = [
        sam_binary(),
        "build",
        "--template-file",
        str(ROOT / "template.yaml"),
        "--build-dir",
        str(BUILD_DIR),
        "--no-cached",
    ]
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout + result.stderr)
        raise RuntimeError("sam build failed")
    notes = [line.strip() for line in result.stdout.splitlines() if line.startswith(("note:", "bytecode:", "RDS CA"))]
    print("\n".join(dict.fromkeys(notes)))
    print(f"sam build: {BUILD_DIR.relative_to(ROOT)} in {time.monotonic() - started:.1f} s")


def emulated() -> bool:
    return ARCHITECTURE == "arm64" and platform.machine().lower() not in ("aarch64", "arm64")


def local_template() -> Path:
    """The built template, plus AWS_ENDPOINT_URL declared on each function (see the module doc).
    Under emulation each function also gets EMULATION_TIMEOUT_FACTOR times its Timeout: qemu runs
    Python 10-15 times slower than the machine does natively, and a cold fetcher then takes more
    than half of its 30 s."""
    built = yaml.safe_load((BUILD_DIR / "template.yaml").read_text())
    timeout = built.get("Globals", {}).get("Function", {}).get("Timeout", 3)
    for name, resource in built["Resources"].items():
        if resource.get("Type") == "AWS::Serverless::Function":
            properties = resource["Properties"]
            properties.setdefault("Environment", {}).setdefault("Variables", {})["AWS_ENDPOINT_URL"] = ""
            if emulated():
                properties["Timeout"] = EMULATION_TIMEOUT_FACTOR * properties.get("Timeout", timeout)
                print(
                    f"{name}: Timeout {properties['Timeout']} s under emulation "
                    f"({EMULATION_TIMEOUT_FACTOR} x the template's)"
                )
    path = BUILD_DIR / "template.sam-local.yaml"
    path.write_text(
        "# `make sam-local`: the built template.yaml, with AWS_ENDPOINT_URL declared so --env-vars can set it"
        + (f", and {EMULATION_TIMEOUT_FACTOR} x the timeouts under emulation" if emulated() else "")
        + "\n"
        + yaml.safe_dump(built, sort_keys=False)
    )
    return path


def invoke(function: str, event: Path, template: Path, env_file: Path, docker_host: str, pull: bool) -> dict:
    """`sam local invoke`; its log lines are shown as they come, its response returned."""
    command = [
        sam_binary(),
        "local",
        "invoke",
        function,
        "--template-file",
        str(template),
        "--event",
        str(event),
        "--env-vars",
        str(env_file),
        "--parameter-overrides",
        f"UserAgent='{USER_AGENT}'",
        "--region",
        "us-east-1",
    ]
    if not pull:
        command.append("--skip-pull-image")
    print(
        f"$ sam local invoke {function} -e {event.relative_to(ROOT)} --env-vars {env_file.name}"
        + ("" if pull else " --skip-pull-image"),
        flush=True,
    )
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=_sam_env(docker_host), stdout=subprocess.PIPE, text=True)
    elapsed = time.monotonic() - started
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    try:
        response = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(
            f"{function}: sam local invoke exited {result.returncode} without a JSON response: {result.stdout[-2000:]}"
        ) from None
    print(f"{function} response ({elapsed:.1f} s):\n{json.dumps(response, indent=2)}", flush=True)
    if result.returncode != 0 or "errorType" in response:
        raise RuntimeError(f"{function} failed: {response}")
    return {"response": response, "seconds": round(elapsed, 1)}


# ------------------------------------------------------------------ local stand-ins


@contextmanager
def stand_ins(relay: Relay, database_url: str | None):
    """moto (SQS, SSM, the event bus), R2Z2 and ESI simulators, PostgreSQL; yields the env-vars content and what
    the checks need."""
    from killstream_workstation import corpus
    from killstream_workstation.local.aws import LocalAws
    from killstream_workstation.simulators.esi import EsiServer
    from killstream_workstation.simulators.r2z2 import R2Z2Server

    with ExitStack() as stack:
        aws = LocalAws(visibility_timeout=360).start()
        stack.callback(aws.stop)
        aws.set_cursor("0")
        r2z2 = stack.enter_context(R2Z2Server(sequence_lag=0))
        for doc in corpus.sample()[:PUBLISHED]:
            esi_doc, killmail_hash = corpus.split_hash(doc)
            r2z2.publish(esi_doc, killmail_hash, corpus.zkb_for(doc))
        esi = stack.enter_context(EsiServer())
        spare = iter(corpus.sample())
        killmail_ids = []
        for name in FETCHER_EVENTS:
            for record in json.loads((EVENTS / name).read_text())["Records"]:
                body = json.loads(record["body"])
                killmail_ids.append(body["killmail_id"])
                doc = body.get("esi") or dict(next(spare), killmail_id=body["killmail_id"])
                esi.add({k: v for k, v in doc.items() if k != "killmail_hash"}, body["hash"])
        url = database_url or _fresh_database()
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            container_db_url = url  # a server of its own, reachable as it is
        else:
            netloc = parts.netloc.rsplit("@", 1)
            credentials = netloc[0] + "@" if len(netloc) == 2 else ""
            container_db_url = parts._replace(
                netloc=f"{credentials}{relay.gateway}:{relay.forward(parts.port or 5432)}"
            ).geturl()
        endpoint = relay.url("http", int(aws.endpoint_url.rsplit(":", 1)[1]))
        env = {
            "PollerFunction": {
                "KILLSTREAM_SOURCE": "r2z2",
                "R2Z2_URL": relay.url("http", _port(r2z2.url), "/ephemeral"),
                "QUEUE_URL": aws.queue_url,
                "CURSOR_PARAMETER": aws.cursor_parameter,
                "USER_AGENT": USER_AGENT,
                "POLL_BUDGET_SECONDS": str(POLLER_BUDGET_SECONDS),
                "AWS_ENDPOINT_URL": endpoint,
            },
            "FetcherFunction": {
                "ESI_URL": relay.url("http", _port(esi.url)),
                "DLQ_URL": aws.dlq_url,
                "EVENT_BUS_NAME": aws.event_bus_name,  # the bus moto holds (SAM local would name the logical id)
                "USER_AGENT": USER_AGENT,
                "DATABASE_URL": container_db_url,
                "DB_SECRET_ARN": "",
                "DB_SSLMODE": "disable",
                "AWS_ENDPOINT_URL": endpoint,
            },
        }
        yield {"env": env, "aws": aws, "r2z2": r2z2, "esi": esi, "database_url": url, "killmail_ids": killmail_ids}


def _port(url: str) -> int:
    from urllib.parse import urlsplit

    return urlsplit(url).port


def _fresh_database() -> str:
    """A new empty database on the embedded server (started if needed): the fetcher in the
    container applies the schema itself, as on its first deployment."""
    from killstream_workstation.local.database import local_dir, start_local_server

    # the embedded server of `make run`, on its usual address
    server = start_local_server(
        ROOT / local_dir(), announce=lambda line: print(f"{line}; fresh database {DATABASE_NAME}")
    )
    return server.create_database(DATABASE_NAME)


def stored(database_url: str, killmail_ids: list[int]) -> dict[int, tuple]:
    import psycopg2

    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            """SELECT k.killmail_id, k.source, (SELECT count(*) FROM attackers a WHERE a.killmail_id = k.killmail_id),
                              (SELECT count(*) FROM items i WHERE i.killmail_id = k.killmail_id)
                       FROM killmails k WHERE k.killmail_id = ANY(%s)""",
            (killmail_ids,),
        )
        rows = {row[0]: row[1:] for row in cur.fetchall()}
    conn.close()
    return rows


# ------------------------------------------------------------------ the run


class SamImages:
    """The images `sam local invoke` builds on the base image (layers added) replace each other
    under one tag at every invocation; the ones this run left untagged are removed at the end."""

    def __init__(self, docker_host: str):
        import docker

        self.client = docker.DockerClient(base_url=docker_host, timeout=30)
        self.seen: set[str] = set()

    def note(self) -> None:
        self.seen |= {image.id for image in self.client.images.list(name="samcli/lambda-python")}

    def remove_replaced(self) -> None:
        self.note()
        current = {image.id for image in self.client.images.list(name="samcli/lambda-python")}
        for image_id in self.seen - current:
            try:
                self.client.images.remove(image_id)
            except Exception:
                pass


def serve(docker_host: str, pull: bool, template: Path, env_file: Path) -> None:
    """Keeps the stand-ins up and prints the plain commands, for running them by hand."""
    flags = " --skip-pull-image" if not pull else ""
    print(
        f"""
The stand-ins are up. In another shell, from {ROOT.name}/:

  export DOCKER_HOST={docker_host}
  sam local invoke PollerFunction -t {template.relative_to(ROOT)} -e events/scheduled-tick.json \\
      --env-vars {env_file.relative_to(ROOT)} --parameter-overrides UserAgent='{USER_AGENT}'{flags}
  sam local invoke FetcherFunction -t {template.relative_to(ROOT)} -e events/sqs-metadata-only.json \\
      --env-vars {env_file.relative_to(ROOT)} --parameter-overrides UserAgent='{USER_AGENT}'{flags}

Ctrl+C stops them.""",
        flush=True,
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` too: the stand-ins stop cleanly
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping the stand-ins")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepare-only", action="store_true", help="only the engine and the base image")
    parser.add_argument("--skip-build", action="store_true", help="use the existing .aws-sam/build")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="start the stand-ins, print the sam local invoke commands and wait (Ctrl+C)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL to store into (default $DATABASE_URL, else a fresh database on the embedded server)",
    )
    args = parser.parse_args(argv)
    timings: dict[str, float] = {}
    failures: list[str] = []
    try:
        step(
            f"container engine and Python 3.13 base image ({ARCHITECTURE}" + (", emulated" if emulated() else "") + ")"
        )
        started = time.monotonic()
        docker_host, pull = prepare()
        timings["prepare"] = time.monotonic() - started
        print(f"prepared in {timings['prepare']:.1f} s")
        if args.prepare_only:
            return 0
        if not args.skip_build:
            step("sam build")
            started = time.monotonic()
            build(docker_host)
            timings["sam build"] = time.monotonic() - started
        template = local_template()
        images = SamImages(docker_host)
        relay = Relay(bridge_gateway(docker_host))
        try:
            step(f"local stand-ins on 127.0.0.1, relayed to the containers at {relay.gateway}")
            with stand_ins(relay, args.database_url) as local:
                STATE_DIR.mkdir(parents=True, exist_ok=True)
                env_file = STATE_DIR / "env-vars.json"
                env_file.touch(mode=0o600)
                env_file.write_text(json.dumps(local["env"], indent=2) + "\n")
                if args.serve:
                    serve(docker_host, pull, template, env_file)
                    return 0
                aws = local["aws"]
                step(
                    "PollerFunction on events/scheduled-tick.json "
                    f"(local R2Z2 with {PUBLISHED} killmails, SQS and SSM in moto)"
                )
                poller = invoke("PollerFunction", EVENTS / "scheduled-tick.json", template, env_file, docker_host, pull)
                images.note()
                timings["invoke PollerFunction"] = poller["seconds"]
                print(
                    f"queue now holds {aws.queue_depth(aws.queue_url)} messages; "
                    f"the local R2Z2 answered {len(local['r2z2'].requests)} requests"
                )
                if poller["response"].get("enqueued") != PUBLISHED:
                    failures.append(
                        f"the poller enqueued {poller['response'].get('enqueued')} of {PUBLISHED} killmails"
                    )
                for name in FETCHER_EVENTS:
                    step(f"FetcherFunction on events/{name} (local ESI, PostgreSQL, DLQ in moto)")
                    fetched = invoke("FetcherFunction", EVENTS / name, template, env_file, docker_host, pull)
                    images.note()
                    timings[f"invoke FetcherFunction {name}"] = fetched["seconds"]
                    if fetched["response"].get("batchItemFailures"):
                        failures.append(
                            f"the fetcher asked SQS to redeliver on {name}: {fetched['response']['batchItemFailures']}"
                        )
                print(
                    f"the local ESI answered {local['esi'].total_hits} requests; "
                    f"the DLQ holds {aws.queue_depth(aws.dlq_url)} messages"
                )
                step("the events' killmails in PostgreSQL")
                rows = stored(local["database_url"], local["killmail_ids"])
                for killmail_id in local["killmail_ids"]:
                    row = rows.get(killmail_id)
                    print(
                        f"  {killmail_id}: "
                        + (f"stored (source {row[0]}, {row[1]} attackers, {row[2]} items)" if row else "MISSING")
                    )
                    if not row:
                        failures.append(f"killmail {killmail_id} is not in PostgreSQL")
        finally:
            relay.close()
            images.remove_replaced()
    except Unavailable as error:
        print(f"\nsam-local: cannot run here: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"\nsam-local: {error}", file=sys.stderr)
        return 1
    print(
        "\n"
        + json.dumps(
            {
                "sam_local": "failed" if failures else "ok",
                "architecture": ARCHITECTURE,
                "emulated": emulated(),
                "seconds": {k: round(v, 1) for k, v in timings.items()},
            }
        )
    )
    for failure in failures:
        print(f"sam-local: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
