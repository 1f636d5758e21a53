"""Bad input to every subcommand: exit status 2, one line on stderr naming the option or field,
no traceback, in bounded time and memory (issue 11). In-process through typer's CliRunner, so the
whole family runs in seconds."""

from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import orchestration.keyrate
from orchestration.cli import app
from orchestration.config import DEFAULT_SCENARIO

runner = CliRunner()

#: Each refusal must come this fast, and grow the process by less than this (it is checked
#: before any work starts, so both are far from what the work itself would take: the runaway
#: cases of issue 11 ran for minutes or until the kernel killed them). A refusal takes ~50 ms;
#: the bound is loose so that a busy machine cannot fail it.
SECONDS = 30.0
GROWTH_KIB = 300 * 1024


def _max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def refused(args: list[str], names: str) -> str:
    """Run the CLI and check the refusal; return its one line."""
    rss, t0 = _max_rss_kib(), time.perf_counter()
    result = runner.invoke(app, args)
    elapsed = time.perf_counter() - t0
    assert "Traceback" not in result.output + result.stderr, (args, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args, repr(result.exception))
    assert result.exit_code == 2, (args, result.exit_code, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, (args, lines)
    assert names in lines[0], (args, lines[0])
    assert elapsed < SECONDS, (args, elapsed)
    assert _max_rss_kib() - rss < GROWTH_KIB, (args, _max_rss_kib() - rss)
    return lines[0]


def _scenario(tmp_path: Path, edit, name: str = "s.yaml") -> str:
    data = yaml.safe_load(DEFAULT_SCENARIO.read_text())
    edit(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _set(*keys, value):
    def edit(data):
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return edit


OPTIONS = [
    # keyrate: numbers, sizes, enums
    (["keyrate", "--distance-km", "nan"], "--distance-km"),
    (["keyrate", "--distance-km", "0,inf"], "--distance-km"),
    (["keyrate", "--distance-km", "0:1e12:1"], "--distance-km"),
    (["keyrate", "--distance-km", "0:inf:1"], "--distance-km"),
    (["keyrate", "--distance-km", "-5"], "--distance-km"),
    (["keyrate", "--distance-km", "1e300"], "--distance-km"),
    (["keyrate", "--mu", "nan"], "--mu"),
    (["keyrate", "--attenuation", "inf"], "--attenuation"),
    (["keyrate", "--eta-d", "0"], "--eta-d"),
    (["keyrate", "--decoys", "5"], "--decoys"),
    (["keyrate", "--mu", "abc"], "--mu"),
    (["keyrate", "--bogus"], "--bogus"),
    # simulate
    (["simulate", "--rotation-a", "nan"], "--rotation-a"),
    (["simulate", "--gamma", "-inf"], "--gamma"),
    (["simulate", "--slots", "1000000000000000"], "--slots"),
    (["simulate", "--slots", "0"], "--slots"),
    (["simulate", "--slots", "100000000", "--distance-a-km", "0", "--distance-b-km", "0",
      "--mu-a", "10", "--mu-b", "10"], "--slots"),
    (["simulate", "--sampler", "reference", "--slots", "10000000000"], "--slots"),
    (["simulate", "--basis", "Y"], "--basis"),
    (["simulate", "--sampler", "magic"], "--sampler"),
    (["simulate", "--seed", "-1"], "--seed"),
    # bench
    (["bench", "sampler", "--fast-slots", "0"], "--fast-slots"),
    (["bench", "sampler", "--reference-slots", str(10**15)], "--reference-slots"),
    (["bench", "cascade", "--qbers", "nan"], "--qbers"),
    (["bench", "cascade", "--qbers", "0.6"], "--qbers"),
    (["bench", "cascade", "--block-bits", str(10**12)], "--block-bits"),
    (["bench", "cascade", "--block-bits", ",".join(["100"] * 1000)], "--block-bits"),
    (["bench", "cascade", "--frames", "0"], "--frames"),
    (["bench", "cascade", "--variant", "nope"], "--variant"),
    (["bench", "postprocess", "--frames", str(10**9)], "--frames"),
    (["bench", "e2e", "--rounds", "0"], "--rounds"),
    (["bench", "e2e", "--round-frames", str(10**9)], "--round-frames"),
    (["bench", "report", "--out", "/dev/null/x.md"], "--out"),  # under a file
    (["bench", "report", "--out", "x.txt"], "--out"),
    # trace, scenario, run (options)
    (["trace", "show"], "run_dir"),
    (["scenario", "list", "--bogus"], "--bogus"),
    (["scenario", "show", "no-such-scenario"], "no-such-scenario"),
    (["run", "quickstart", "--seed", "-1"], "--seed"),
    (["run", "quickstart", "--rounds", "0"], "--rounds"),
    (["run", "quickstart", "--rounds", str(10**12)], "--rounds"),
    (["run", "no-such-scenario"], "no-such-scenario"),
]


@pytest.mark.parametrize(("args", "names"), OPTIONS, ids=[" ".join(a)[:60] for a, _ in OPTIONS])
def test_bad_option_is_one_line_naming_it(args, names):
    refused(args, names)


FIELDS = [
    # numbers: NaN and infinities, booleans
    (_set("alice", "arm", "rotation_rad", value=float("nan")), "alice.arm.rotation_rad"),
    (_set("alice", "arm", "length_km", value=float("inf")), "alice.arm.length_km"),
    (_set("clock_rate_hz", value=float("inf")), "clock_rate_hz"),
    (_set("bob", "clock", "offset_ps", value=float("-inf")), "bob.clock.offset_ps"),
    (_set("postprocessing", "epsilon_pa", value=float("nan")), "postprocessing.epsilon_pa"),
    (_set("rounds", value=True), "rounds"),
    (_set("alice", "arm", "length_km", value=True), "alice.arm.length_km"),
    # sizes
    (_set("round_frames", value=10**7), "round_frames"),
    (_set("batch_frames", value=10**6), "batch_frames"),
    (_set("authentication", "initial_pool_bytes", value=10**12),
     "authentication.initial_pool_bytes"),
    (_set("relay", "detectors", value={"dark_count_probability": 1.0}),
     "relay.detectors.dark_count_probability"),
    (_set("rounds", value=10**9), "rounds"),
    (_set("seed", value=1 << 80), "seed"),
    # enums
    (_set("postprocessing", "mode", value="fast"), "postprocessing.mode"),
    (_set("entropy", value="dice"), "entropy"),
    (_set("authentication", "mode", value="md5"), "authentication.mode"),
    (_set("postprocessing", "decoy_method", value="guess"), "postprocessing.decoy_method"),
    # one detector model or a list of four: the message names the detector's field
    (_set("relay", "detectors", value={"efficiency": 0}), "relay.detectors.efficiency"),
    (_set("relay", "detectors", value=[{"efficiency": 0.5}] * 3 + [{"efficiency": 0}]),
     "relay.detectors.3.efficiency"),
]


@pytest.mark.parametrize(("edit", "field"), FIELDS, ids=[f for _, f in FIELDS])
@pytest.mark.parametrize("command", ["run", "scenario show"])
def test_bad_scenario_field_is_one_line_with_file_line_and_field(tmp_path, command, edit, field):
    line = refused([*command.split(), _scenario(tmp_path, edit)], f": {field}: ")
    assert "s.yaml:" in line  # file:line
    assert "list[" not in line and "function-" not in line  # no pydantic internals


def test_override_errors_name_the_option_not_the_file(tmp_path):
    line = refused(["run", _scenario(tmp_path, lambda d: None), "--seed", "-1"], "--seed")
    assert ".yaml" not in line


def test_bad_paths_are_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    refused(["run", "quickstart", "--out", f"{afile}/sub", "--rounds", "1"], "--out")
    not_utf8 = tmp_path / "latin1.yaml"
    not_utf8.write_bytes("title: caf\xe9\n".encode("latin-1"))
    for command in (["run"], ["scenario", "show"]):
        refused([*command, str(not_utf8)], "latin1.yaml")
        refused([*command, str(tmp_path)], str(tmp_path))  # a directory
    huge = tmp_path / "huge.yaml"
    huge.write_text("description: " + "x" * (2 << 20) + "\n")
    refused(["run", str(huge)], "huge.yaml")


def test_plot_to_a_directory_or_a_missing_one_is_refused_and_writes_nothing(tmp_path):
    refused(["keyrate", "--distance-km", "0", "--plot", str(tmp_path)], "--plot")
    assert not tmp_path.with_suffix(".png").exists()
    refused(["keyrate", "--distance-km", "0", "--plot", str(tmp_path / "rate")], "--plot")
    assert not (tmp_path / "rate.png").exists()
    refused(["keyrate", "--distance-km", "0", "--plot", str(tmp_path / "no" / "r.png")],
            "--plot")


def test_bench_e2e_without_its_scenario_is_one_line(tmp_path, monkeypatch):
    import orchestration.benchmarks.e2e as e2e

    monkeypatch.setattr(e2e, "DEFAULT_SCENARIO", tmp_path / "quickstart.yaml")
    refused(["bench", "e2e", "--rounds", "1", "--repeats", "1"], "quickstart.yaml")


def test_text_is_printed_as_text_never_as_markup(tmp_path):
    d = tmp_path / "[/]"  # a directory "[" holding "]"
    d.mkdir(parents=True)
    bad = _scenario(d, _set("rounds", value=0), name="[red]a:100:[b].yaml")
    line = refused(["run", bad], "[red]a:100:[b].yaml:")
    assert "💯" not in line
    missing = str(d / "[red]gone:100:.yaml")
    for command in (["run"], ["scenario", "show"]):
        assert "[/]" in refused([*command, missing], missing)


def test_errors_are_not_wrapped_when_stderr_is_not_a_terminal(tmp_path):
    long = tmp_path / ("deep-" * 30) / "scenario.yaml"
    line = refused(["run", str(long)], str(long))
    assert len(line) > 160


def test_trace_show_tells_a_missing_run_from_a_run_without_spans(tmp_path):
    assert "no such run directory" in refused(["trace", "show", str(tmp_path / "x")], "x")
    assert "tracing: false" in refused(["trace", "show", str(tmp_path)], str(tmp_path))
    (tmp_path / "traces").mkdir()
    assert "no trace files" in refused(["trace", "show", str(tmp_path)], "traces")
    (tmp_path / "traces" / "alice.jsonl").write_text("")
    assert "no span" in refused(["trace", "show", str(tmp_path)], "traces")


def test_sigint_ends_with_one_line(monkeypatch):
    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the signal arrives first

    monkeypatch.setattr(orchestration.keyrate, "key_rate", interrupted)
    previous = signal.getsignal(signal.SIGINT)
    try:
        result = runner.invoke(app, ["keyrate", "--distance-km", "0"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.exit_code == 130
    assert len(result.stderr.splitlines()) == 1 and "interrupted" in result.stderr


def test_an_otlp_endpoint_that_is_not_a_url_is_refused():
    refused(["run", "quickstart", "--rounds", "1", "--otlp-endpoint", "localhost:4318"],
            "--otlp-endpoint")


def test_an_unreachable_otlp_endpoint_is_found_before_the_run():
    import socket

    from orchestration.telemetry import otlp_endpoint_problem

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert otlp_endpoint_problem(f"http://127.0.0.1:{port}/v1/traces") is None
    # the same port, closed now: the user hears it once, before the nodes start
    kind, why = otlp_endpoint_problem(f"http://127.0.0.1:{port}/v1/traces")
    assert kind == "unreachable" and f"127.0.0.1:{port}" in why
    assert otlp_endpoint_problem("ftp://127.0.0.1/x")[0] == "invalid"
