"""Fixtures for the scale-out tests: a real S3-compatible HTTP server (moto's ThreadedMotoServer) on
loopback with a fresh bucket and fake credentials in the environment (the only place they come from), and a
real PostgreSQL server (the Debian package) on loopback."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/pipeline_utils.py, tests/test_whole_graph.py
from pipeline_utils import free_port  # noqa: E402

REGION = "us-east-1"


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    client: Any

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.fixture
def s3_server(monkeypatch) -> Iterator[S3Server]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=REGION)
    client.create_bucket(Bucket="vfusion3d-test")
    try:
        yield S3Server(endpoint, "vfusion3d-test", client)
    finally:
        server.stop()


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    db: str


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL server's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    assert initdb, ("no PostgreSQL server installed: scripts/setup.sh --for-tests (make test) installs the Debian "
                    "package postgresql")
    return Path(initdb).resolve().parent


@pytest.fixture
def postgres_server(monkeypatch) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on 127.0.0.1:<free port> (trust auth, loopback only), stopped and deleted
    afterwards; DAGSTER_PG_* point at it. The server refuses to run as root, so as root it runs as the
    Debian package's `postgres` user, in a directory outside pytest's private tmp tree."""
    bindir = postgres_bindir()
    base = Path(tempfile.mkdtemp(prefix="vfusion3d-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "dagster", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base} -c fsync=off"
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w",
                        "-t", "60", "-o", options, "start"], check=True, capture_output=True, timeout=90)
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "dagster", "dagster"],
                       check=True, capture_output=True, timeout=60)
        for name, value in {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port),
                            "DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": "unused-trust-auth",
                            "DAGSTER_PG_DB": "dagster"}.items():
            monkeypatch.setenv(name, value)
        yield PostgresServer("127.0.0.1", port, "dagster", "dagster")
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
