"""The `mdiqkd` command line.

Every command prints a readable table by default and JSON with ``--json``; options are validated
once, here, by pydantic models (``orchestration.options``), and bad values exit with status 2 and
one line naming the option — never a traceback. Text from users and files (paths, titles,
messages) is printed as text: never read as rich markup or emoji codes, never wrapped.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer's own click
from typer.core import TyperGroup

from channel.defaults import (
    ATTENUATION_DB_PER_KM,
    DARK_COUNT_PROBABILITY,
    DETECTOR_EFFICIENCY,
    MISALIGNMENT,
)
from classical.estimation import DEFAULT_EC_INEFFICIENCY
from orchestration.options import (
    MAX_REFERENCE_SLOTS,
    MAX_SIMULATE_SLOTS,
    KeyRateOptions,
    SimulateOptions,
    describe_validation_error,
    parse_distances,
)


class _OneLineErrors(TyperGroup):
    """Usage errors (an unknown option, a value click cannot parse) as one line naming the
    option, exit status 2, like every other bad input."""

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except NoArgsIsHelpError as e:
            from typer import rich_utils

            rich_utils.rich_format_error(e)
            sys.exit(e.exit_code)
        except ClickException as e:
            where = f"{e.ctx.command_path}: " if getattr(e, "ctx", None) else ""
            err_console.print(Text("error: ", style="bold red") + Text(where + e.format_message()),
                              highlight=False, soft_wrap=True)
            sys.exit(2)
        except typer.Abort:
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(help="mdiqkd: a distributed emulator of decoy-state MDI-QKD.",
                  no_args_is_help=True, add_completion=False, cls=_OneLineErrors)
bench_app = typer.Typer(help="Benchmarks, reported as ratios against same-run baselines.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _interrupted(signum: int, frame: Any) -> None:
    """Ctrl-C: one line on stderr, then the usual KeyboardInterrupt (typer exits with 130)."""
    sys.stderr.write("interrupted (SIGINT): stopped\n")
    sys.stderr.flush()
    raise KeyboardInterrupt


@app.callback()
def _main() -> None:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted)
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)


def _fail(message: str) -> None:
    """Exit with status 2 and the message on one line of stderr (as text, never wrapped)."""
    line = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
    err_console.print(Text("error: ", style="bold red") + Text(line), highlight=False,
                      soft_wrap=True)
    raise typer.Exit(code=2)


def _validate(model: type, values: dict[str, Any]) -> Any:
    try:
        return model(**values)
    except ValidationError as e:
        _fail(describe_validation_error(e))


def _emit(data: dict, as_json: bool, table: Table) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        console.print(table)


def _fmt(v: Any) -> Text:
    """A table cell: numbers to four digits, everything as plain text (no markup)."""
    if isinstance(v, float):
        return Text(f"{v:.4g}")
    return Text("null" if v is None else str(v))


def _check_output_file(option: str, path: Path, suffix: str, create_parent: bool = False) -> None:
    """Refuse, before any work, an output path that cannot be written as asked (with
    ``create_parent``, missing directories above it are created later, but none may be a
    file)."""
    if path.is_dir():
        _fail(f"{option}: {path} is a directory; name a {suffix} file in it")
    if path.suffix.lower() != suffix:
        _fail(f"{option}: {path} must end in {suffix}")
    if create_parent:
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            _fail(f"{option}: {blocking} is not a directory")
    elif not path.parent.is_dir():
        _fail(f"{option}: {path.parent} is not a directory")


#: Bounds of the benchmark options (docs/bounds.md).
MAX_LIST_ITEMS = 100
MAX_BLOCK_BITS = 1 << 24
MAX_BENCH_FRAMES = 1000
MAX_REFERENCE_BITS = 1 << 20

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.command()
def keyrate(
    distance_km: Annotated[str, typer.Option(help="Total distances: list 0,50,100 or range 0:200:25.")] = "0:250:25",
    decoys: Annotated[str, typer.Option(help="'infinite', '3' (three intensities per side) or '4' (signal in Z; decoys nu > omega > 0 in X; vacuum).")] = "infinite",
    mu: Annotated[float, typer.Option(help="Signal mean photon number.")] = 0.4,
    nu: Annotated[float, typer.Option(help="Decoy mean photon number.")] = 0.1,
    omega: Annotated[float, typer.Option(help="Weakest decoy (0 = vacuum).")] = 0.0,
    optimize_mu: Annotated[bool, typer.Option("--optimize-mu", help="Pick the best μ per distance.")] = False,
    eta_d: Annotated[float, typer.Option(help="Detector efficiency.")] = DETECTOR_EFFICIENCY,
    dark_count: Annotated[float, typer.Option(help="Dark-count probability per detector per pulse.")] = DARK_COUNT_PROBABILITY,
    misalignment: Annotated[float, typer.Option(help="Flip-model misalignment e_d.")] = MISALIGNMENT,
    ec_efficiency: Annotated[float, typer.Option(help="Error-correction inefficiency f.")] = DEFAULT_EC_INEFFICIENCY,
    attenuation: Annotated[float, typer.Option(help="Fiber loss in dB/km.")] = ATTENUATION_DB_PER_KM,
    max_distance: Annotated[bool, typer.Option("--max-distance", help="Also report the reach.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write the curve to this PNG file (its name ends in .png).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Asymptotic key rate per pulse pair vs total distance (relay in the middle)."""
    from orchestration.keyrate import PhysicalParameters, key_rate
    from orchestration.keyrate import max_distance as reach

    if plot is not None:
        _check_output_file("--plot", plot, ".png")
    try:
        distances = parse_distances(distance_km)
    except ValueError as e:
        _fail(str(e))
    o: KeyRateOptions = _validate(KeyRateOptions, {
        "--distance-km": distances, "--decoys": decoys, "--mu": mu, "--nu": nu, "--omega": omega,
        "--eta-d": eta_d, "--dark-count": dark_count, "--misalignment": misalignment,
        "--ec-efficiency": ec_efficiency, "--attenuation": attenuation})
    params = PhysicalParameters(o.eta_d, o.dark_count, o.misalignment, o.ec_efficiency,
                                o.attenuation)
    points = [key_rate(d, o.mu, o.nu, o.omega, o.decoys, params, optimize_mu)
              for d in o.distances_km]
    reach_km = (reach(o.mu, o.nu, o.omega, o.decoys, params, optimize_mu)
                if max_distance else None)
    data = {"params": {**o.model_dump(exclude={"distances_km"}), "optimize_mu": optimize_mu},
            "points": [p.as_dict() for p in points], "max_distance_km": reach_km}
    table = Table(title=f"MDI-QKD asymptotic key rate ({o.decoys} decoys)")
    for col in ("distance_km", "mu", "key_rate_per_pulse", "Q_Z", "E_Z", "Y11_L", "e11_U"):
        table.add_column(col, justify="right", min_width=len(col))
    for p in points:
        d = p.as_dict()
        table.add_row(*(_fmt(d[c]) for c in ("distance_km", "mu", "key_rate_per_pulse", "Q_Z",
                                             "E_Z", "Y11_L", "e11_U")))
    if reach_km is not None:
        table.caption = f"maximum distance: {reach_km:.1f} km"
    if plot is not None:
        from orchestration.plots import plot_key_rate

        try:
            plot_key_rate(points, plot, title=str(table.title))
        except OSError as e:
            _fail(f"--plot: cannot write {plot} ({e.strerror or e})")
    _emit(data, as_json, table)


@app.command()
def simulate(
    basis: Annotated[str, typer.Option(help="Z or X.")] = "Z",
    distance_a_km: Annotated[float, typer.Option(help="Alice–relay fiber length.")] = 25.0,
    distance_b_km: Annotated[float, typer.Option(help="Bob–relay fiber length.")] = 25.0,
    mu_a: Annotated[float, typer.Option(help="Alice's mean photon number.")] = 0.4,
    mu_b: Annotated[float, typer.Option(help="Bob's mean photon number.")] = 0.4,
    rotation_a: Annotated[float, typer.Option(help="Linear polarization rotation of arm A (rad).")] = 0.0,
    rotation_b: Annotated[float, typer.Option(help="Linear polarization rotation of arm B (rad).")] = 0.0,
    gamma: Annotated[float, typer.Option(help="Mode overlap |γ| of the two pulses.")] = 1.0,
    slots: Annotated[int, typer.Option(help="Number of slots to emulate.")] = 1_000_000_000,
    seed: Annotated[int, typer.Option(help="Seed (settings and nature).")] = 0,
    sampler: Annotated[str, typer.Option(help="fast, skip-empty or reference.")] = "fast",
    eta_d: Annotated[float, typer.Option(help="Detector efficiency.")] = DETECTOR_EFFICIENCY,
    dark_count: Annotated[float, typer.Option(help="Dark-count probability per detector per pulse.")] = DARK_COUNT_PROBABILITY,
    misalignment: Annotated[float, typer.Option(help="Flip-model misalignment e_d.")] = 0.0,
    attenuation: Annotated[float, typer.Option(help="Fiber loss in dB/km.")] = ATTENUATION_DB_PER_KM,
    as_json: JsonOpt = False,
) -> None:
    """Run a sampler on one fixed setting; print measured gain and error beside the analytic values."""
    from orchestration.simulate import simulate as run

    o: SimulateOptions = _validate(SimulateOptions, {
        "--basis": basis, "--distance-a-km": distance_a_km, "--distance-b-km": distance_b_km,
        "--mu-a": mu_a, "--mu-b": mu_b, "--rotation-a": rotation_a, "--rotation-b": rotation_b,
        "--gamma": gamma, "--slots": slots, "--seed": seed, "--sampler": sampler,
        "--eta-d": eta_d, "--dark-count": dark_count, "--misalignment": misalignment,
        "--attenuation": attenuation})
    with console.status(f"sampling {o.slots:.3g} slots ({o.sampler} sampler)…"):
        data = run(o)
    cols = ("basis", "mu_a", "mu_b", "slots", "detections", "errors", "Q", "Q_analytic", "z_Q",
            "E", "E_analytic", "z_E")
    table = Table(title=f"{o.sampler} sampler, seed {o.seed}")
    for c in cols:
        table.add_column(c, justify="right", min_width=len(c))
    for row in data["classes"]:
        table.add_row(*(_fmt(row[c]) for c in cols))
    _emit(data, as_json, table)


def _bench_table(title: str, layout: str, rows: list[dict[str, Any]]) -> Table:
    from orchestration.benchmarks.results import TABLES, cells

    table = Table(title=title)
    text = cells(layout, rows)
    for i, (header, _, spec) in enumerate(TABLES[layout]):
        # columns as wide as their widest cell: numbers are never cut to fit a narrow terminal
        width = max([len(header), *(len(row[i]) for row in text)])
        table.add_column(header, justify="left" if spec == "s" else "right", min_width=width,
                         no_wrap=True)
    for row in text:
        table.add_row(*row)
    return table


def _emit_bench(data: dict, as_json: bool, *tables: Table) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=float))
        return
    for table in tables:
        console.print(table, crop=False)


def _parse_list(option: str, text: str, kind: type) -> list[Any]:
    if text.count(",") >= MAX_LIST_ITEMS:
        _fail(f"{option}: more than {MAX_LIST_ITEMS} values (docs/bounds.md)")
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        _fail(f"{option} must be a comma-separated list of numbers, got {text!r}")
    if not values:
        _fail(f"{option} is empty")
    if not all(math.isfinite(v) for v in values):
        _fail(f"{option}: every value must be a finite number, got {text!r}")
    return values


@bench_app.command("sampler")
def bench_sampler_cmd(
    fast_slots: Annotated[int, typer.Option(help="Slots per fast-sampler repetition.")] = 10_000_000_000,
    reference_slots: Annotated[int, typer.Option(help="Slots per reference repetition.")] = 2_000_000,
    as_json: JsonOpt = False,
) -> None:
    """Emulated slots/s on one core: reference vs fast sampler, 2×25 and 2×50 km."""
    from orchestration.benchmarks.sampler import bench_sampler

    if not 0 < fast_slots <= MAX_SIMULATE_SLOTS:
        _fail(f"--fast-slots must lie in [1, {MAX_SIMULATE_SLOTS:.0e}] (the sampler walks "
              "every slot; docs/bounds.md)")
    if not 0 < reference_slots <= MAX_REFERENCE_SLOTS:
        _fail(f"--reference-slots must lie in [1, {MAX_REFERENCE_SLOTS:.0e}] (the reference "
              "sampler visits every slot; docs/bounds.md)")
    with console.status("benchmarking samplers…"):
        data = bench_sampler(fast_slots=fast_slots, reference_slots=reference_slots)
    _emit_bench(data, as_json, _bench_table(
        "sampler throughput (one core, random 3-intensity settings)", "sampler", data["cases"]))


@bench_app.command("cascade")
def bench_cascade_cmd(
    qbers: Annotated[str, typer.Option(help="QBERs, comma-separated (each is also Cascade's estimate).")] = "0.01,0.02,0.05",
    block_bits: Annotated[str, typer.Option(help="Frame sizes in bits, comma-separated.")] = "100000,1000000",
    frames: Annotated[int, typer.Option(help="Frames per (QBER, size) row.")] = 10,
    variant: Annotated[str, typer.Option(help="Cascade variant (classical.cascade).")] = "shallow",
    reference_bits: Annotated[int, typer.Option(help="Frame size of the pure-Python baseline (0: skip it).")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed of keys, errors and shuffles.")] = 2024,
    as_json: JsonOpt = False,
) -> None:
    """Cascade per QBER and frame size: f, FER, round trips, Mbit/s beside a textbook baseline."""
    import numpy as np

    from classical.cascade import CascadeParameters
    from orchestration.benchmarks.cascade import bench_cascade

    qber_list = _parse_list("--qbers", qbers, float)
    size_list = _parse_list("--block-bits", block_bits, int)
    if not all(0 < q < 0.5 for q in qber_list):
        _fail("--qbers must lie in (0, 0.5)")
    if not all(64 <= b <= MAX_BLOCK_BITS for b in size_list):
        _fail(f"--block-bits: every size must lie in [64, {MAX_BLOCK_BITS}] (a frame and its "
              "shuffles are held in memory; docs/bounds.md)")
    if not 0 < frames <= MAX_BENCH_FRAMES:
        _fail(f"--frames must lie in [1, {MAX_BENCH_FRAMES}] (docs/bounds.md)")
    if not 0 <= reference_bits <= MAX_REFERENCE_BITS:
        _fail(f"--reference-bits must lie in [0, {MAX_REFERENCE_BITS}] (the pure-Python "
              "baseline is slow; docs/bounds.md)")
    if seed < 0:
        _fail("--seed must be >= 0")
    try:
        params = CascadeParameters(variant=variant)
    except ValueError as e:
        _fail(f"--variant: {e}")
    with console.status("benchmarking Cascade…"):
        rows = bench_cascade(qber_list, size_list, frames, np.random.default_rng(seed), params,
                             reference_bits)
    _emit_bench({"cascade": rows}, as_json,
                _bench_table(f"Cascade, variant {variant}, {frames} frames per row", "cascade", rows))


@bench_app.command("postprocess")
def bench_postprocess_cmd(
    frames: Annotated[int, typer.Option(help="Cascade frames per 10^5-bit row (10^6: a fifth).")] = 10,
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes (a smoke run).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Cascade, privacy amplification and authentication throughput beside plain references."""
    from orchestration.benchmarks.postprocess import bench_postprocess

    if not 0 < frames <= MAX_BENCH_FRAMES:
        _fail(f"--frames must lie in [1, {MAX_BENCH_FRAMES}] (docs/bounds.md)")
    with console.status("benchmarking post-processing…"):
        data = bench_postprocess(frames, quick)
    _emit_bench(data, as_json, *(_bench_table(section, section, data[section])
                                 for section in ("cascade", "amplification", "authentication")))


@bench_app.command("e2e")
def bench_e2e_cmd(
    rounds: Annotated[int, typer.Option(help="Key rounds per run (rounds overlap: more rounds, "
                                          "closer to the steady state).")] = 4,
    round_frames: Annotated[int | None, typer.Option(help="Override frames per round.")] = None,
    repeats: Annotated[int, typer.Option(help="Alternating off/on runs; the fastest of each.")] = 2,
    compare: Annotated[str, typer.Option(help="What is switched off and on: tracing, metrics (the nodes' endpoints, scraped every second), control (the live control plane, its status polled every second), or calibration (the users' calibration loops, on a healthy link).")] = "tracing",
    as_json: JsonOpt = False,
) -> None:
    """Real-time factor of the quick-start link with three processes, and the overhead of tracing, metrics, the control plane or the calibration loops."""
    from orchestration.benchmarks.e2e import (
        bench_e2e,
        bench_e2e_calibration,
        bench_e2e_control,
        bench_e2e_metrics,
    )
    from orchestration.config import MAX_ROUND_FRAMES, MAX_ROUNDS, ScenarioError
    from orchestration.run import RunFailed

    if not 0 < rounds <= MAX_ROUNDS:
        _fail(f"--rounds must lie in [1, {MAX_ROUNDS}] (docs/bounds.md)")
    if not 0 < repeats <= MAX_BENCH_FRAMES:
        _fail(f"--repeats must lie in [1, {MAX_BENCH_FRAMES}] (docs/bounds.md)")
    if round_frames is not None and not 0 < round_frames <= MAX_ROUND_FRAMES:
        _fail(f"--round-frames must lie in [1, {MAX_ROUND_FRAMES}] (docs/bounds.md)")
    benches = {"tracing": bench_e2e, "metrics": bench_e2e_metrics, "control": bench_e2e_control,
               "calibration": bench_e2e_calibration}
    if compare not in benches:
        _fail(f"--compare must be tracing, metrics, control or calibration, not {compare!r}")
    with console.status(f"running the quick-start scenario ({compare} off, on, alternating)…"):
        try:
            data = benches[compare](rounds, round_frames, repeats)
        except ScenarioError as e:
            _fail(f"the quick-start scenario: {e}")
        except RunFailed as e:
            _fail(f"run failed: {e}")
    table = Table(title="end to end (three processes, 127.0.0.1)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in data.items():
        table.add_row(k, _fmt(v))
    _emit(data, as_json, table)


@bench_app.command("report")
def bench_report_cmd(
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes (a smoke run, about a minute).")] = False,
    out: Annotated[Path, typer.Option(help="Markdown file to write; the raw JSON goes beside it (.json).")] = Path("docs/benchmarks.md"),
) -> None:
    """Run every benchmark (sampler, post-processing with Cascade, end to end) and rewrite the
    results file and its JSON."""
    from orchestration.benchmarks.results import run_benchmarks, write_report
    from orchestration.config import ScenarioError
    from orchestration.run import RunFailed

    _check_output_file("--out", out, ".md", create_parent=True)
    with console.status("benchmarking…") as status:
        try:
            results = run_benchmarks(
                quick, on_stage=lambda name: status.update(f"benchmarking: {name}…"))
        except ScenarioError as e:
            _fail(f"the quick-start scenario: {e}")
        except RunFailed as e:
            _fail(f"end-to-end run failed, nothing written: {e}")
    try:
        md_path, json_path = write_report(results, out)
    except OSError as e:
        _fail(f"--out: cannot write {out} ({e.strerror or e})")
    console.print(Text(f"wrote {md_path} and {json_path}"), highlight=False, soft_wrap=True)


trace_app = typer.Typer(help="Inspect a run's OpenTelemetry traces.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")
scenario_app = typer.Typer(help="The scenarios shipped with mdiqkd.", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("list")
def scenario_list(as_json: JsonOpt = False) -> None:
    """List the shipped scenarios: name, title, tags, rounds and emulated time per round."""
    from orchestration.config import DEFAULT_SCENARIO_NAME, load_scenario, shipped_scenarios
    from orchestration.network import load_network, shipped_networks

    rows = []
    for name, resource in shipped_scenarios().items():
        sc = load_scenario(resource)
        rows.append({"name": name, "default": name == DEFAULT_SCENARIO_NAME, "title": sc.title,
                     "kind": "link", "links": 1,
                     "tags": list(sc.tags or []), "rounds": sc.run_rounds,
                     "emulated_s_per_round": sc.emulated_seconds_per_round,
                     "path": str(resource)})
    for name, resource in shipped_networks().items():  # rounds: of its longest link
        net = load_network(resource)
        scs = [link.scenario for link in net.links]
        rows.append({"name": name, "default": False, "title": net.title, "kind": "network",
                     "links": len(net.links), "tags": list(net.tags),
                     "rounds": max(sc.run_rounds for sc in scs),
                     "emulated_s_per_round": max(sc.emulated_seconds_per_round for sc in scs),
                     "path": str(resource)})
    table = Table(title="shipped scenarios (run one with `mdiqkd run NAME`)")
    numeric = ("links", "rounds", "emulated_s_per_round")
    for c in ("name", "title", "tags", *numeric):
        table.add_column(c, justify="right" if c in numeric else "left")
    for r in rows:
        name = f"{r['name']} (default)" if r["default"] else r["name"]
        table.add_row(Text(name), Text(r["title"]), Text(", ".join(r["tags"])),
                      _fmt(r["links"]), _fmt(r["rounds"]), _fmt(r["emulated_s_per_round"]))
    _emit({"scenarios": rows}, as_json, table)


@scenario_app.command("validate")
def scenario_validate(
    files: Annotated[list[str], typer.Argument(help="Scenario files (or shipped scenarios' names).")],
    as_json: JsonOpt = False,
) -> None:
    """Check scenario files without running them: one line per file, `ok` or the first problems (FILE:LINE: field: message); exit 1 if any is invalid."""
    from orchestration.config import ScenarioError, load_scenario
    from orchestration.network import is_network_file, load_network, resolve_any

    results = []
    for ref in files:
        try:
            resource = resolve_any(ref)
            if is_network_file(resource):  # the network file and every link's scenario
                net = load_network(resource)
                results.append({"file": ref, "ok": True, "title": net.title,
                                "links": len(net.links), "warnings": [
                                    f"link {link.name}: {w}" for link in net.links
                                    for w in _unmeasured_probes(link.scenario)]})
                continue
            sc = load_scenario(resource)
        except ScenarioError as e:
            message = _one_line(str(e))
            if Path(ref).is_file() and message.startswith(f"{Path(ref).name}:"):
                message = ref + message.removeprefix(Path(ref).name)  # the path as typed
            results.append({"file": ref, "ok": False, "error": message})
            continue
        except Exception as e:  # noqa: BLE001 - a bug here must still be one line, not a traceback
            results.append({"file": ref, "ok": False, "error": _one_line(
                f"{ref}: could not be checked ({type(e).__name__}: {e}); please report this")})
            continue
        results.append({"file": ref, "ok": True, "title": sc.title,
                        "warnings": _unmeasured_probes(sc)})
    if as_json:
        typer.echo(json.dumps({"files": results}, indent=2))
    else:
        for r in results:
            line = f"{r['file']}: ok" if r["ok"] else r["error"]
            console.print(Text(line), highlight=False, soft_wrap=True)
            for warning in r.get("warnings", []):
                err_console.print(Text(f"warning: {r['file']}: {warning}"), highlight=False,
                                  soft_wrap=True)
    if not all(r["ok"] for r in results):
        raise typer.Exit(code=1)


def _one_line(message: str) -> str:
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


@scenario_app.command("schema")
def scenario_schema() -> None:
    """Print the JSON Schema of a scenario file (for editors: yaml-language-server and the like)."""
    from orchestration.config import Scenario

    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = ("An mdiqkd scenario file (docs/scenario-format.md; README.md, "
                             "'Scenario files').")
    typer.echo(json.dumps(schema, indent=2))


@scenario_app.command("show")
def scenario_show(
    name: Annotated[str, typer.Argument(help="A shipped scenario's name, or a scenario file.")],
) -> None:
    """Print a scenario's YAML (copy a shipped one to start your own: `mdiqkd scenario show quickstart > mine.yaml`)."""
    from orchestration.config import ScenarioError, load_scenario
    from orchestration.network import is_network_file, load_network, resolve_any

    try:
        resource = resolve_any(name)
        if is_network_file(resource):
            load_network(resource)
        else:
            load_scenario(resource)
    except ScenarioError as e:
        _fail(str(e))
    typer.echo(resource.read_text(), nl=False)


@app.command()
def run(
    scenario: Annotated[str | None, typer.Argument(help="A scenario file, or the name of a shipped scenario (`mdiqkd scenario list`; default: quickstart).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory to create (default: runs/<time>).")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Override the number of key rounds.")] = None,
    fingerprint: Annotated[bool, typer.Option("--fingerprint", help="Add a SHA-256 over all delivered keys to summary.json.")] = False,
    otlp_endpoint: Annotated[str | None, typer.Option(help="Also export spans over OTLP/HTTP to this URL.")] = None,
    control: Annotated[bool | None, typer.Option("--control/--no-control", help="Serve the live control plane (`mdiqkd fault`, `mdiqkd status`); default: on for game days.")] = None,
    metrics_linger: Annotated[float, typer.Option(min=0.0, max=4.0, help="Seconds each node keeps serving its metrics endpoint after its last round (for `mdiqkd observe`).")] = 0.0,
    otlp_metrics_endpoint: Annotated[str | None, typer.Option(help="Also push the nodes' metrics over OTLP/HTTP to this URL (…/v1/metrics).")] = None,
    backend: Annotated[str, typer.Option(help="Where the nodes run: `local` (four processes) or `ray` (four Ray actors; a private Ray on this machine unless --ray-address).")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster (HOST:PORT, or `auto`) and run the nodes on it (implies --backend ray; README 'Cluster').")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a scenario: Alice, Bob, Charles and the channel emulator as four local processes (or Ray actors) over ZeroMQ."""

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from orchestration.config import ScenarioError, load_scenario, resolve_scenario
    from orchestration.run import (
        RunFailed,
        execute,
        implemented_actions,
        implemented_faults,
        new_run_dir,
        prepare_run_dir,
    )

    if backend not in ("local", "ray"):
        _fail(f"--backend: {backend!r} is not one of local, ray")
    launcher = None
    if backend == "ray" or ray_address is not None:  # orchestration.ray_launcher
        from orchestration.ray_launcher import RayLauncher, RayOptions

        launcher = RayLauncher(RayOptions(address=ray_address))
    overrides: dict[str, Any] = {}
    if seed is not None:
        overrides["seed"] = seed
    if rounds is not None:
        overrides["rounds"] = rounds
    if otlp_metrics_endpoint is not None:
        from orchestration.telemetry import otlp_endpoint_problem

        problem = otlp_endpoint_problem(otlp_metrics_endpoint)
        if problem is not None and problem[0] == "invalid":
            _fail(f"--otlp-metrics-endpoint: {otlp_metrics_endpoint!r}: {problem[1]}")
    if otlp_endpoint is not None:
        from orchestration.telemetry import otlp_endpoint_problem

        problem = otlp_endpoint_problem(otlp_endpoint)
        if problem is not None and problem[0] == "invalid":
            _fail(f"--otlp-endpoint: {otlp_endpoint!r}: {problem[1]}")
        if problem is not None:  # said once here, not only in every node's log
            err_console.print(Text(f"warning: --otlp-endpoint {otlp_endpoint}: {problem[1]}; "
                                   "spans are still written to traces/"), highlight=False,
                              soft_wrap=True)
    from orchestration.network import is_network_file, resolve_any

    try:
        resource = resolve_any(scenario) if scenario is not None else resolve_scenario(None)
        if is_network_file(resource):  # a network of links: orchestration.network_run
            _run_network(resource, out, seed, rounds, backend, ray_address, as_json,
                         otlp_endpoint=otlp_endpoint, control=control,
                         metrics_linger_s=metrics_linger,
                         otlp_metrics_endpoint=otlp_metrics_endpoint)
            return
        sc = load_scenario(resource, overrides)
    except ScenarioError as e:
        _fail(str(e))
    if rounds is not None and sc.runtime is not None and (
            sc.runtime.duration is not None or sc.runtime.rounds is not None):
        _fail(f"--rounds: {scenario} sets its length in runtime."
              f"{'duration' if sc.runtime.duration is not None else 'rounds'}; edit that, or "
              "leave out --rounds")
    refused = sc.refused_game_day_parts(implemented_faults(), implemented_actions())
    if refused:  # never run a game day without the faults and checks it asks for
        _fail(f"{scenario}: {'; '.join(refused)}: this scenario cannot run as written; "
              "`mdiqkd scenario validate` checks it (docs/game-days.md)")
    for warning in _unmeasured_probes(sc):
        err_console.print(Text(f"warning: {scenario}: {warning}"), highlight=False,
                          soft_wrap=True)
    sc = sc.for_run()
    try:
        out = out or new_run_dir()  # unique, even for runs started in the same second
        run_dir = prepare_run_dir(sc, out, otlp_endpoint, control=control,
                                  metrics_linger_s=metrics_linger,
                                  otlp_metrics_endpoint=otlp_metrics_endpoint)
    except FileExistsError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"--out: cannot create {out} ({e.strerror or e})")
    err_console.print(Text(sc.title, style="bold") + Text(f" → {run_dir}"), highlight=False,
                      soft_wrap=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
            "{task.completed}/{task.total} rounds · {task.fields[bits]} key bits · "
            "{task.fields[emulated]:.1f} s emulated"), TimeElapsedColumn(),
            console=err_console, transient=as_json) as progress:
        task = progress.add_task("key rounds", total=sc.rounds, bits=0, emulated=0.0)

        def show(p):  # type: ignore[no-untyped-def]
            progress.update(task, completed=p.rounds_done, bits=p.secure_bits,
                            emulated=p.emulated_seconds)

        try:
            summary = execute(sc, run_dir, launcher=launcher, on_progress=show, fingerprint=fingerprint)
        except RunFailed as e:
            _fail(f"run failed: {e}")
        show_final = summary["rounds"]
        progress.update(task, completed=show_final)
    table = Table(title=Text(f"run summary ({run_dir})"))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in ("rounds", "aborted", "secure_bits", "key_rate_bps_emulated", "keys_match",
              "emulated_seconds", "wall_seconds", "realtime_factor", "realtime_factor_rounds"):
        table.add_row(k, _fmt(summary[k]))
    table.add_row("qber Z / X", Text(" / ").join(_fmt(v) for v in summary["qber"].values()))
    for reason in summary["abort_reasons"]:
        table.add_row("abort reason", Text(str(reason)))
    journal = json.loads((run_dir / "journal.json").read_text())
    report = run_dir / "report.html"
    if as_json:
        typer.echo(json.dumps({**summary, "journal": journal, "report": str(report)}, indent=2))
    else:
        console.print(table)
        if journal["hypothesis"]["probes"]:
            console.print(_hypothesis_table(journal))
        console.print(Text("report: ", style="bold") + Text(str(report)), highlight=False,
                      soft_wrap=True)
    if summary["interrupted"] and summary["interrupted_by"] != "fail_fast":
        name = summary["interrupted_by"]
        err_console.print(Text(
            f"interrupted ({name}): the nodes stopped in order after {summary['rounds']} of "
            f"{sc.rounds} rounds; {summary['secure_bits']} key bits delivered; summary in "
            f"{run_dir / 'summary.json'}"), highlight=False, soft_wrap=True)
        raise typer.Exit(code=128 + int(getattr(signal, name)))
    # the deviations are said in every case; a key mismatch still decides the exit status (1)
    keys_differ = not summary["keys_match"] and summary["secure_bits"] == 0 \
        and summary["aborted"] < summary["rounds"]
    if journal["deviated"]:
        for d in journal["deviations"]:
            err_console.print(Text("deviated: ", style="bold red") + Text(d["message"]),
                              highlight=False, soft_wrap=True)
        run_info = journal["run"]
        stopped = (f" (runtime.fail_fast: stopped at round {run_info['fail_fast_round']}; the "
                   f"verdict judges {run_info['rounds_recorded']} of {sc.rounds} rounds)"
                   ) if run_info.get("fail_fast_round") is not None else ""
        err_console.print(Text(f"the steady-state hypothesis failed{stopped}; journal in "
                               f"{run_dir / 'journal.json'}"), highlight=False, soft_wrap=True)
    if keys_differ:
        err_console.print(Text(f"the users' stored keys differ; summary in "
                               f"{run_dir / 'summary.json'}"), highlight=False, soft_wrap=True)
        raise typer.Exit(code=1)
    if journal["deviated"]:
        raise typer.Exit(code=HYPOTHESIS_FAILED)


#: `mdiqkd run`'s exit status when the run completed but its steady-state hypothesis failed.
HYPOTHESIS_FAILED = 3


def _run_network(resource: Any, out: Path | None, seed: int | None, rounds: int | None,
                 backend: str, ray_address: str | None, as_json: bool, **prepare: Any) -> None:
    """`mdiqkd run NETWORK`: every link at once (orchestration.network_run), one progress line
    per link, then the network's table; exit 1 naming each link that failed or whose keys
    differ, 128 + the signal's number when stopped by one."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from orchestration.network import load_network
    from orchestration.network_run import LINKS_DIR, run_network
    from orchestration.run import RunFailed, implemented_actions, implemented_faults, new_run_dir

    net = load_network(resource, {"seed": seed} if seed is not None else {},
                       {"rounds": rounds} if rounds is not None else {})
    for link in net.links:
        sc = link.scenario
        if rounds is not None and sc.runtime is not None and (
                sc.runtime.duration is not None or sc.runtime.rounds is not None):
            _fail(f"--rounds: link {link.name} sets its length in runtime; edit that, or leave "
                  "out --rounds")
        refused = sc.refused_game_day_parts(implemented_faults(), implemented_actions())
        if refused:
            _fail(f"link {link.name}: {'; '.join(refused)}: this scenario cannot run as written")
        for warning in _unmeasured_probes(sc):
            err_console.print(Text(f"warning: link {link.name}: {warning}"), highlight=False,
                              soft_wrap=True)
    options = None
    if backend == "ray" or ray_address is not None:
        from orchestration.ray_launcher import RayOptions

        backend, options = "ray", RayOptions(address=ray_address)
    run_dir = out or new_run_dir()
    err_console.print(Text(net.title, style="bold") + Text(
        f" → {run_dir} ({len(net.links)} links, {backend})"), highlight=False, soft_wrap=True)
    width = max(len(link.name) for link in net.links)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
            "{task.completed}/{task.total} rounds · {task.fields[bits]} key bits · "
            "{task.fields[emulated]:.1f} s emulated"), TimeElapsedColumn(),
            console=err_console, transient=as_json) as progress:
        tasks = {link.name: progress.add_task(link.name.ljust(width),
                                              total=link.scenario.for_run().rounds, bits=0,
                                              emulated=0.0) for link in net.links}

        def show(name, p):  # type: ignore[no-untyped-def]
            progress.update(tasks[name], completed=p.rounds_done, bits=p.secure_bits,
                            emulated=p.emulated_seconds)

        try:
            summary = run_network(net, run_dir, backend, options, on_progress=show, **prepare)
        except FileExistsError as e:
            _fail(str(e))
        except OSError as e:
            _fail(f"--out: cannot create {run_dir} ({e.strerror or e})")
        except RunFailed as e:
            _fail(f"network failed: {e}")
        for r in summary["links"]:
            if r["rounds"] is not None:
                progress.update(tasks[r["name"]], completed=r["rounds"])
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        table = Table(title=Text(f"network summary ({run_dir / 'network.json'})"))
        for c in ("link", "status", "rounds", "aborted", "secure_bits", "key_rate_bps_emulated",
                  "qber Z / X", "keys_match"):
            table.add_column(c, justify="left" if c in ("link", "status") else "right")
        for r in summary["links"]:
            table.add_row(Text(r["name"]), Text(r["status"]), _fmt(r["rounds"]),
                          _fmt(r["aborted"]), _fmt(r["secure_bits"]),
                          _fmt(r["key_rate_bps_emulated"]),
                          Text(" / ").join(_fmt(v) for v in r["qber"].values()),
                          _fmt(r["keys_match"]))
        t = summary["totals"]
        table.add_row(Text("total", style="bold"), Text(f"{t['completed']}/{t['links']} done"),
                      _fmt(t["rounds"]), _fmt(t["aborted"]), _fmt(t["secure_bits"]),
                      _fmt(t["key_rate_bps_emulated"]), Text(""), _fmt(t["keys_match"]))
        console.print(table)
        console.print(Text(f"{t['secure_bits_per_wall_second']:.4g} secure bits per wall second "
                           f"over {t['wall_seconds']:.1f} s"), highlight=False, soft_wrap=True)
    bad = False
    for r in summary["links"]:
        if r["status"] == "failed":
            bad = True
            err_console.print(Text(f"link {r['name']} failed: ", style="bold red") + Text(
                _one_line(r["error"] or "")), highlight=False, soft_wrap=True)
        elif r["status"] == "completed" and not r["keys_match"] and r["secure_bits"] == 0 \
                and (r["aborted"] or 0) < (r["rounds"] or 0):
            bad = True
            err_console.print(Text(f"link {r['name']}: the users' stored keys differ; summary "
                                   f"in {run_dir / r['run_dir'] / 'summary.json'}"),
                              highlight=False, soft_wrap=True)
    if summary["interrupted_by"] is not None:
        name = summary["interrupted_by"]
        err_console.print(Text(f"interrupted ({name}): every link stopped in order; network "
                               f"summary in {run_dir / 'network.json'}"), highlight=False,
                          soft_wrap=True)
        raise typer.Exit(code=128 + int(getattr(signal, name)))
    deviated = [r["name"] for r in summary["links"] if r.get("deviated")]
    for name in deviated:
        err_console.print(Text(f"link {name}: the steady-state hypothesis failed; journal in "
                               f"{run_dir / LINKS_DIR / name / 'journal.json'}",
                               style="bold red"), highlight=False, soft_wrap=True)
    if bad:
        raise typer.Exit(code=1)
    if deviated:
        raise typer.Exit(code=HYPOTHESIS_FAILED)

_STATUS_STYLE = {"held": "green", "deviated": "bold red", "no data": "red",
                 "not measured": "yellow", "not applicable": "dim"}
#: Pass (✓) or fail (✗) of each status in the terminal's hypothesis table.
_STATUS_MARK = {"held": "✓ ", "deviated": "✗ ", "no data": "✗ ", "not measured": "· ",
                "not applicable": "· "}


def _unmeasured_probes(sc: Any) -> list[str]:
    """One warning per probe the run cannot measure (its verdict: not measured)."""
    from orchestration.verdict import unmeasured

    probes = sc.steady_state.probes if sc.steady_state is not None else []
    has_faults = any(e.fault is not None for e in sc.method or [])
    run_s = sc.run_rounds * sc.emulated_seconds_per_round
    warnings = []
    for k, p in enumerate(probes):
        why = unmeasured(p, has_faults, run_s)
        if why:
            warnings.append(f"steady_state.probes.{k}.metric: {p.name!r}: {why}; the verdict "
                            "will say 'not measured'")
    return warnings


def _hypothesis_table(journal: dict[str, Any]) -> Table:
    """The verdict: one row per probe and phase (each fault for `during`); phases the timeline
    does not have (no fault: no during, no after) are left out and named in the caption, and
    so are the phases a time-to-recover probe is not measured in."""
    from orchestration.report import measured_text, phase_text, tolerance_text
    from orchestration.verdict import NO_SUCH_PHASE

    hypothesis = journal["hypothesis"]
    verdict = "DEVIATED" if journal["deviated"] else "held"
    table = Table(title=Text(f"steady-state hypothesis: {hypothesis['title']} — {verdict}"))
    for name in ("probe", "metric", "tolerance", "phase", "measured", "status"):
        table.add_column(name, justify="right" if name == "measured" else "left")
    absent = set()
    for p in hypothesis["probes"]:
        for r in p["results"]:
            if r["status"] == "not applicable":
                if r["note"] == NO_SUCH_PHASE:
                    absent.add(r["phase"])
                continue
            note = r["note"] if r["status"] == "no data" else ""
            table.add_row(Text(p["name"]), Text(p["metric"]), Text(tolerance_text(
                p["tolerance"])), Text(phase_text(r)), Text(measured_text(r["windows"])),
                Text(_STATUS_MARK[r["status"]] + r["status"] + (f" ({note})" if note else ""),
                     style=_STATUS_STYLE[r["status"]]))
    if absent:
        table.caption = Text(f"not in this run's timeline: {', '.join(sorted(absent))}")
    return table


@app.command()
def observe(
    run_dir: Annotated[Path, typer.Argument(help="The run directory (its config.json names every node's metrics endpoint).")],
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of Prometheus's web UI and API on 127.0.0.1.")] = 9090,
    scrape_interval: Annotated[str, typer.Option(help="Prometheus scrape interval (a Prometheus duration).")] = "5s",
    evaluation_interval: Annotated[str, typer.Option(help="Rule evaluation interval.")] = "15s",
    config_only: Annotated[bool, typer.Option("--config-only", help="Write RUN_DIR/prometheus/prometheus.yml and exit.")] = False,
    wait: Annotated[float, typer.Option(min=0.0, help="Seconds to wait for RUN_DIR/config.json (a run being prepared).")] = 0.0,
) -> None:
    """Watch a run with Prometheus: write its configuration (targets: the nodes' metrics endpoints; rules: observability/) and start `prometheus` on 127.0.0.1 if installed."""
    import re

    from orchestration.observe import (
        ObserveError,
        prometheus_binary,
        start_prometheus,
        wait_for_config,
        write_prometheus_config,
    )

    for option, value in (("--scrape-interval", scrape_interval),
                          ("--evaluation-interval", evaluation_interval)):
        if not re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", value):
            _fail(f"{option}: {value!r} is not a Prometheus duration (e.g. 5s, 1m)")
    wait_for_config(run_dir, wait)
    try:
        config = write_prometheus_config(run_dir, scrape_interval=scrape_interval,
                                         evaluation_interval=evaluation_interval)
    except ObserveError as e:
        _fail(str(e))
    typer.echo(f"prometheus configuration: {config}")
    if config_only:
        return
    if prometheus_binary() is None:
        err_console.print(Text("prometheus is not installed, so it was not started (Debian/"
                               "Ubuntu: `sudo apt-get install -y prometheus`; then run "
                               f"`prometheus --config.file={config}`)"), highlight=False,
                          soft_wrap=True)
        raise typer.Exit(code=1)
    prom = start_prometheus(run_dir, port, config)
    try:
        prom.wait_ready()
        targets = prom.wait_targets()
        typer.echo(f"prometheus: {prom.url} (data in {run_dir / 'prometheus' / 'data'}), "
                   f"scraping {len(targets)} targets; Ctrl-C stops it")
        prom.process.wait()
    except RuntimeError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        pass
    finally:
        prom.stop()


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `mdiqkd run`.")],
    as_json: JsonOpt = False,
) -> None:
    """(Re)build a run's report.html and plots/*.png from its journal.json and rounds, and print its summary."""
    from orchestration.report import PLOTS_DIR, ReportError, load_run, summary_lines, write_report

    try:
        data = load_run(run_dir)
        path = write_report(run_dir, data)
    except ReportError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{run_dir}: cannot write the report ({e.strerror or e})")
    plots = sorted(str(p) for p in (run_dir / PLOTS_DIR).glob("*.png"))
    lines = summary_lines(data)
    if as_json:
        typer.echo(json.dumps({"report": str(path), "plots": plots, "summary": lines,
                               "deviated": data.journal["deviated"]}, indent=2))
        return
    for line in lines:
        console.print(Text(line), highlight=False, soft_wrap=True)
    if data.journal["hypothesis"]["probes"]:
        console.print(_hypothesis_table(data.journal))
    console.print(Text("report: ", style="bold") + Text(str(path)), highlight=False,
                  soft_wrap=True)


@trace_app.command("show")
def trace_show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `mdiqkd run`.")],
    round_: Annotated[int | None, typer.Option("--round", help="Round number (default: all).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show key rounds as span trees across the nodes, with timings and attributes."""
    from rich.tree import Tree

    from orchestration.traces import load_spans, round_trees

    try:
        rounds = round_trees(load_spans(run_dir))
    except (OSError, ValueError) as e:
        _fail(str(e))
    wanted = sorted(r for r in rounds if r >= 0) if round_ is None else [round_]
    if round_ is not None and round_ not in rounds:
        _fail(f"--round: no round {round_} in {run_dir} (rounds: "
              f"{', '.join(map(str, sorted(r for r in rounds if r >= 0)))})")

    def as_dict(s):  # type: ignore[no-untyped-def]
        return {"name": s.name, "service": s.service, "kind": s.kind, "trace_id": s.trace_id,
                "duration_ms": round(s.duration_ms, 3), "attributes": s.attributes,
                "links": s.links, "children": [as_dict(c) for c in s.children]}

    if as_json:
        typer.echo(json.dumps({str(r): [as_dict(s) for s in rounds[r]] for r in wanted},
                              indent=2))
        return

    def add(tree, s):  # type: ignore[no-untyped-def]
        attrs = " ".join(f"{k.removeprefix('mdiqkd.')}={_fmt(v)}" for k, v in s.attributes.items()
                         if k != "mdiqkd.round")
        link = f" [dim]links={len(s.links)}[/]" if s.links else ""
        node = tree.add(f"[bold]{escape(s.name)}[/] [cyan]{escape(s.service)}[/] "
                        f"{s.duration_ms:.1f} ms{link} [dim]{escape(attrs)}[/]")
        for c in s.children:
            add(node, c)

    for r in wanted:
        roots = rounds[r]
        tree = Tree(Text(f"round {r} · trace {roots[0].trace_id} · "
                         f"{sum(1 for _ in _walk(roots))} spans"))
        for s in roots:
            add(tree, s)
        console.print(tree)


def _walk(spans):  # type: ignore[no-untyped-def]
    for s in spans:
        yield s
        yield from _walk(s.children)


fault_app = typer.Typer(help="Inject and clear faults in a running game day (its live control "
                        "plane; docs/game-days.md).", no_args_is_help=True)
app.add_typer(fault_app, name="fault")


def _client(run_dir: Path):  # type: ignore[no-untyped-def]
    from orchestration.control import ControlClient, ControlError

    try:
        return ControlClient(run_dir)
    except ControlError as e:
        _fail(str(e))


def _call(run_dir: Path, method: str, path: str, body: Any = None) -> Any:
    from orchestration.control import ControlError

    try:
        return _client(run_dir).call(method, path, body)
    except ControlError as e:
        _fail(f"{run_dir}: {e}")


def _param(text: str) -> tuple[str, Any]:
    """``key=value``: the value as a number when it reads as one, a list for ``a,b``."""
    key, eq, value = text.partition("=")
    if not eq or not key:
        _fail(f"{text!r}: give parameters as key=value (e.g. extra_db=3)")
    if "," in value:
        return key, [v for v in value.split(",") if v]
    try:
        number = float(value)
    except ValueError:
        return key, value
    return key, int(number) if number.is_integer() and "." not in value else number


@fault_app.command("inject")
def fault_inject(
    run_dir: Annotated[Path, typer.Argument(help="The running game day's run directory.")],
    target: Annotated[str, typer.Argument(help="e.g. link/bob-charles, relay, classical/alice-bob.")],
    fault_type: Annotated[str, typer.Argument(metavar="TYPE", help="e.g. loss, fiber_cut, latency (docs/scenario-format.md).")],
    params: Annotated[list[str] | None, typer.Argument(help="Parameters as key=value, e.g. extra_db=3.")] = None,
    duration: Annotated[str | None, typer.Option(help="How long it lasts in emulated time, e.g. 2s (default: until cleared).")] = None,
    name: Annotated[str | None, typer.Option(help="Its name in the journal (default: live TYPE N).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Inject a fault now: it takes effect at the first emulated time not yet emulated."""
    from orchestration.experiment import parse_duration

    try:
        duration_s = None if duration is None else parse_duration(duration)
    except ValueError as e:
        _fail(f"--duration: {e}")
    body = {"target": target, "type": fault_type, "params": dict(map(_param, params or [])),
            "duration_s": duration_s, "name": name}
    record = _call(run_dir, "POST", "/faults", body)
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    until = "until cleared" if record["duration_s"] is None else \
        f"for {record['duration_s']:g} s"
    console.print(f"injected {record['name']!r} ({fault_type} on {target}) from "
                  f"{record['start_s']:.4g} s of emulated time, {until}", highlight=False)


@fault_app.command("clear")
def fault_clear(
    run_dir: Annotated[Path, typer.Argument(help="The running game day's run directory.")],
    name: Annotated[str | None, typer.Argument(help="The fault to end (default: every active one).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """End one fault (the scenario's or a live one), or every active one."""
    out = _call(run_dir, "POST", "/faults/clear", {"name": name})
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    if not out["ended"]:
        console.print("nothing to clear", highlight=False)
    for e in out["ended"]:
        console.print(f"cleared {e['name'] or 'every fault'} from {e['end_s']:.4g} s of "
                      "emulated time", highlight=False)


@fault_app.command("list")
def fault_list(
    run_dir: Annotated[Path, typer.Argument(help="The running game day's run directory.")],
    as_json: JsonOpt = False,
) -> None:
    """Every fault of the run, the scenario's and the live ones, with its emulated window."""
    out = _call(run_dir, "GET", "/faults")
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table("name", "type", "target", "from (s)", "to (s)", "source", "active")
    for f in out["faults"]:
        table.add_row(f["name"], f["type"], f["target"], f"{f['start_s']:.4g}",
                      "—" if f["end_s"] is None else f"{f['end_s']:.4g}", f["source"],
                      "yes" if f["active"] else "")
    console.print(table)


@app.command()
def status(
    run_dir: Annotated[Path, typer.Argument(help="A running game day's run directory.")],
    as_json: JsonOpt = False,
) -> None:
    """The running emulation's current indicators: rounds, QBER, key rate, aborts, faults."""
    out = _call(run_dir, "GET", "/status")
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    last = out["last_round"] or {}
    rate = out["secure_key_rate_bps"]
    rows = [("rounds", f"{out['rounds_done']} of {out['rounds_planned']}"),
            ("emulated time", f"{out['emulated_seconds']:.4g} s"),
            ("secure bits", str(out["secure_bits"])),
            ("key rate (emulated)", "—" if rate is None else f"{rate:.4g} bit/s"),
            ("aborted rounds", str(out["aborted_rounds"])),
            ("last round QBER Z / X", f"{_fmt(last.get('qber_z'))} / {_fmt(last.get('qber_x'))}"),
            ("active faults", ", ".join(f["name"] for f in out["faults"] if f["active"]) or "none")]
    table = Table(show_header=False)
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
