"""Runs a real `crm serve` for the Python checks: started on free ports in a data directory,
tokens minted by `crm token`, and REST calls as JSON."""

import json
import os
import re
import subprocess
import threading
import urllib.error
import urllib.request

SECRET = "python-checks-secret-python-checks-secret"


def start(binary, data, env=None):
    """Starts `crm serve` in `data` (with `env` besides); returns (process, REST base, gRPC
    address) once it is up. Its log is drained on a thread so it never blocks."""
    full = dict(os.environ, CRM_JWT_SECRET=SECRET, CRM_LOG="warn", **(env or {}))
    process = subprocess.Popen(
        [binary, "serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"],
        cwd=data, env=full, stderr=subprocess.PIPE, text=True,
    )
    for line in process.stderr:
        match = re.search(r"REST on http://(\S+), gRPC on (\S+)", line)
        if match:
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            return process, f"http://{match.group(1)}", match.group(2)
    raise SystemExit("crm serve exited before it was up")


def token(binary, tenant, user, role):
    return subprocess.run(
        [binary, "token", "--tenant", tenant, "--user", user, "--role", role, "--secret", SECRET],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def call(base, bearer, method, path, body=None):
    """The JSON answer of a REST call; an error status raises with its body."""
    request = urllib.request.Request(
        base + path, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {bearer}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {path}: {e.code} {e.read().decode()}") from e


def stop(process):
    process.terminate()
    process.wait(timeout=30)
