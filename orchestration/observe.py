"""`mdiqkd observe RUN_DIR`: a Prometheus for one run.

Writes ``RUN_DIR/prometheus/prometheus.yml`` (scrape targets: every node's metrics endpoint
from ``config.json``'s ``run.metrics``; rule files: ``observability/rules/``) and, where the
``prometheus`` binary is installed (Debian package ``prometheus``), starts it on 127.0.0.1 with
its data in ``RUN_DIR/prometheus/data``. Every series carries ``run`` (the run directory's
name) besides the nodes' own ``link`` and ``node`` labels. docs/metrics.md.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from observability import rule_files
from orchestration.runconfig import HOST

JOB = "mdiqkd"
PROMETHEUS_DIR = "prometheus"


class ObserveError(RuntimeError):
    """The run directory cannot be observed (no config.json, no metrics endpoints)."""


def metrics_targets(run_dir: Path) -> dict[str, str]:
    """``{node: host:port}`` of the run's metrics endpoints, from its ``config.json``."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise ObserveError(f"{run_dir}: no config.json (not a run directory, or not prepared "
                           "yet)")
    try:
        targets = json.loads(path.read_text())["run"].get("metrics") or {}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ObserveError(f"{path}: not a run configuration ({e})") from e
    if not targets:
        raise ObserveError(f"{path}: the run has no metrics endpoints (made by an older "
                           "mdiqkd?)")
    return dict(sorted(targets.items()))


def prometheus_config(run_dir: Path, scrape_interval: str = "5s",
                      evaluation_interval: str = "15s",
                      rules: list[Path] | None = None) -> dict[str, Any]:
    targets = metrics_targets(run_dir)
    return {
        "global": {"scrape_interval": scrape_interval,
                   "evaluation_interval": evaluation_interval},
        "rule_files": [str(p) for p in (rule_files() if rules is None else rules)],
        "scrape_configs": [{
            "job_name": JOB,
            "scrape_interval": scrape_interval,
            "static_configs": [{"targets": list(targets.values()),
                                "labels": {"run": run_dir.resolve().name}}],
        }],
    }


def write_prometheus_config(run_dir: Path, **kwargs: Any) -> Path:
    content = prometheus_config(run_dir, **kwargs)  # ObserveError before anything is written
    directory = run_dir / PROMETHEUS_DIR
    directory.mkdir(exist_ok=True)
    path = directory / "prometheus.yml"
    path.write_text("# written by `mdiqkd observe` (orchestration/observe.py)\n" +
                    yaml.safe_dump(content, sort_keys=False))
    return path


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


@dataclass
class Prometheus:
    """A Prometheus process started by ``start_prometheus``."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def query(self, expr: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """An instant query's result vector (``/api/v1/query``)."""
        return self._get("/api/v1/query", {"query": expr}, timeout_s)["result"]

    def alerts(self, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        return self._get("/api/v1/alerts", {}, timeout_s)["alerts"]

    def targets(self, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        return self._get("/api/v1/targets", {}, timeout_s)["activeTargets"]

    def _get(self, path: str, params: dict[str, str], timeout_s: float) -> Any:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {body}")
        return body["data"]

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with code {self.process.returncode}; "
                                   f"its log: {self.log}\n{self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout_s:.0f} s; its log: {self.log}")

    def wait_targets(self, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Until Prometheus has taken its targets from the configuration (it applies them a few
        seconds after it is ready: before, nothing is scraped); returns them."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(urllib.error.URLError, OSError, RuntimeError):
                targets = self.targets()
                if targets:
                    return targets
            time.sleep(0.2)
        raise RuntimeError(f"prometheus has no scrape target after {timeout_s:.0f} s; its log: "
                           f"{self.log}")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_prometheus(run_dir: Path, port: int, config: Path | None = None,
                     host: str = HOST) -> Prometheus:
    """Start ``prometheus`` on ``host:port`` with ``config`` (default: the run's, written if
    absent) and its data in ``RUN_DIR/prometheus/data``."""
    binary = prometheus_binary()
    if binary is None:
        raise ObserveError("the prometheus binary is not installed (Debian/Ubuntu: "
                           "`sudo apt-get install -y prometheus`)")
    config = config or write_prometheus_config(run_dir)
    directory = run_dir / PROMETHEUS_DIR
    log = directory / "prometheus.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address={host}:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Prometheus(process, f"http://{host}:{port}", log)


def wait_for_config(run_dir: Path, timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for ``RUN_DIR/config.json`` (a run being prepared)."""
    deadline = time.monotonic() + timeout_s
    while not (run_dir / "config.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
