"""A stand-in for one node's engine process of a replica spanning nodes.

Used as `engine.launcher`: it is given the whole server command line the
factory built (vLLM's or SGLang's), checks the multi-node part of it, and
acts out the rank handshake over TCP: rank 0 listens at the meeting address
until every other rank has said hello, then serves the fake OpenAI API on
`--host/--port`; a rank above 0 connects, says hello and stays until rank 0
goes away (then exits, as a real worker losing its peer does). Each process
writes what it was given to `$STANDIN_RECORD_DIR/rank-R-PID.json`; rank 0
answers after `$STANDIN_LATENCY_S` seconds.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def flag(argv: list[str], name: str, default=None):
    return argv[argv.index(name) + 1] if name in argv else default


def meeting_address(argv: list[str]) -> tuple[str, int]:
    if "--nnodes" not in argv:  # one node: nobody to meet, rank 0 serves at once
        return flag(argv, "--host"), 0
    if "--dist-init-addr" in argv:  # SGLang
        host, _, port = flag(argv, "--dist-init-addr").rpartition(":")
        return host, int(port)
    return flag(argv, "--master-addr"), int(flag(argv, "--master-port"))  # vLLM


def serve(argv: list[str]) -> None:
    """The fake OpenAI API (and its vLLM-like /metrics) where the server was told to listen."""
    from aiohttp import web
    from fake_openai import make_app

    latency = float(os.environ.get("STANDIN_LATENCY_S", "0"))
    web.run_app(make_app(latency), host=flag(argv, "--host"), port=int(flag(argv, "--port")), print=None, access_log=None)


def main() -> None:
    argv = sys.argv[1:]
    nnodes, rank = int(flag(argv, "--nnodes", 1)), int(flag(argv, "--node-rank", 0))
    host, port = meeting_address(argv)
    record = {"rank": rank, "nnodes": nnodes, "meet": f"{host}:{port}", "module": flag(argv, "-m"),
              "serve": f"{flag(argv, '--host')}:{flag(argv, '--port')}", "pid": os.getpid(),
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "argv": argv}
    folder = Path(os.environ["STANDIN_RECORD_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    if rank == 0 and nnodes == 1:
        (folder / f"rank-0-{os.getpid()}.json").write_text(json.dumps(record))
        serve(argv)
        return
    if rank == 0:
        heard = set()
        with socket.create_server((host, port)) as server:
            server.settimeout(120)
            peers = []
            while len(heard) < nnodes - 1:
                conn, _ = server.accept()
                heard.add(int(conn.recv(64).decode().split()[1]))
                peers.append(conn)
            record["heard_ranks"] = sorted(heard)
            (folder / f"rank-0-{os.getpid()}.json").write_text(json.dumps(record))
            serve(argv)
        return
    deadline = time.monotonic() + 120
    while True:
        try:
            conn = socket.create_connection((host, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"rank {rank}: nobody at {host}:{port}")
            time.sleep(0.2)
    conn.sendall(f"rank {rank}\n".encode())
    (folder / f"rank-{rank}-{os.getpid()}.json").write_text(json.dumps(record))
    conn.settimeout(None)
    conn.recv(1)  # returns when rank 0 is gone
    sys.exit(f"rank {rank}: rank 0 went away")


if __name__ == "__main__":
    main()
