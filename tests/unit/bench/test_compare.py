"""The side-by-side harness: alternation, figures and ratios, the report, the peer's setup."""

import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from switchboard.bench import peers
from switchboard.bench.compare import (
    DIRECT,
    GRPC,
    LITELLM,
    PACED_TOKEN_DELAY_MS,
    PACED_TOKENS,
    PathSpec,
    Phase,
    PhaseRun,
    compare,
    markdown,
    ratio,
    round_order,
    run_rounds,
)
from switchboard.bench.conversations import CONVERSATION_TOKEN_DELAY_MS, CONVERSATION_TOKENS
from switchboard.bench.load import LoadResult, Sample


def result(name: str, ttft_ms: list[float], wall_s: float = 1.0) -> LoadResult:
    samples = [
        Sample(started=float(i), first_token=i + ms / 1000, finished=i + 0.5, output_tokens=10)
        for i, ms in enumerate(ttft_ms)
    ]
    return LoadResult(name, samples, started=0.0, finished=wall_s)


async def _never(phase: Phase) -> LoadResult:
    raise AssertionError("not run")


def test_the_order_alternates_so_every_path_has_the_same_mean_position() -> None:
    names = ["a", "b", "c", "d"]
    assert round_order(names, 0) == names
    assert round_order(names, 1) == ["d", "c", "b", "a"]
    assert round_order(names, 2) == names
    for name in names:
        positions = [round_order(names, r).index(name) for r in range(2)]
        assert sum(positions) / 2 == pytest.approx(1.5)


async def test_rounds_run_every_phase_through_every_path_in_the_alternating_order() -> None:
    calls: list[tuple[str, str]] = []

    def runner(name: str) -> PathSpec:
        async def run(phase: Phase) -> LoadResult:
            calls.append((phase.name, name))
            return result(name, [1.0] * phase.requests)

        return PathSpec(name, run)

    phases = [Phase("probe", 1, 2, paced=False), Phase("load", 5, 3, paced=False)]
    runs = await run_rounds(
        [runner("x"), runner("y")], phases, 2, {}, phase_timeout_s=5, log=lambda _: None
    )

    assert calls == [
        ("probe", "x"),
        ("probe", "y"),
        ("load", "x"),
        ("load", "y"),
        ("probe", "y"),
        ("probe", "x"),
        ("load", "y"),
        ("load", "x"),
    ]
    assert [(r.round, r.position) for r in runs["x"]["load"]] == [(0, 0), (1, 1)]
    assert len(runs["y"]["probe"][1].result.samples) == 2


async def test_a_phase_that_overruns_its_timeout_fails_the_run() -> None:
    async def slow(phase: Phase) -> LoadResult:
        import asyncio

        await asyncio.sleep(10)
        raise AssertionError("not reached")

    with pytest.raises(TimeoutError):
        await run_rounds(
            [PathSpec("slow", slow)],
            [Phase("probe", 1, 1, paced=False)],
            1,
            {},
            phase_timeout_s=0.05,
            log=lambda _: None,
        )


def _runs(
    probe_ms: float, rps_requests: int, cpu: dict[str, float], paced_ms: float
) -> dict[str, list[PhaseRun]]:
    return {
        "probe": [PhaseRun(0, 0, result("p", [probe_ms] * 10))],
        "load": [PhaseRun(0, 0, result("l", [100.0] * rps_requests, wall_s=10.0), cpu)],
        "paced": [PhaseRun(0, 0, result("f", [paced_ms] * 5))],
    }


def test_figures_are_absolute_and_ratios_to_direct_and_to_litellm_of_the_same_run() -> None:
    paths = [
        PathSpec(DIRECT, _never),
        PathSpec(LITELLM, _never, services=(LITELLM,)),
        PathSpec(GRPC, _never, services=("gateway", "worker"), servers=("kafka",)),
    ]
    runs = {
        # Kafka burns 0.1 CPU s/s for other users while direct and LiteLLM run.
        DIRECT: _runs(2.0, 400, {"kafka": 1.0, "simulator": 2.0}, 10.0),
        LITELLM: _runs(22.0, 100, {LITELLM: 10.0, "kafka": 1.0, "simulator": 0.5}, 50.0),
        GRPC: _runs(12.0, 200, {"gateway": 1.0, "worker": 1.0, "kafka": 3.0}, 60.0),
    }
    report = compare(paths, runs, {"concurrency": 50, "rounds": 1})

    assert report["background_cpu_s_per_s"] == {"kafka": pytest.approx(0.1)}
    grpc = report["paths"][GRPC]
    assert grpc["overhead_ms"][50] == pytest.approx(10.0)
    # Kafka: 3.0 s measured, 1.0 s of it background over the 10 s load; 200 requests.
    assert grpc["cpu_ms_per_request"]["servers"] == pytest.approx(10.0)
    assert grpc["cpu_ms_per_request"]["servers_raw"] == pytest.approx(15.0)
    assert grpc["cpu_ms_per_request"]["services"] == pytest.approx(10.0)
    assert grpc["cpu_ms_per_request"]["path"] == pytest.approx(20.0)
    assert grpc["paced"]["later_than_direct_ms"][50] == pytest.approx(50.0)
    assert report["paths"][LITELLM]["cpu_ms_per_request"]["path"] == pytest.approx(100.0)

    overhead = report["headline"]["overhead_p50_ms"]
    assert overhead["to_litellm"][GRPC] == pytest.approx(0.5)
    assert overhead["to_direct"][GRPC] is None  # direct's overhead is zero by definition
    rps = report["headline"]["rps"]
    assert rps["label"] == "requests/s at concurrency 50"
    assert rps["values"][GRPC] == pytest.approx(20.0)
    assert rps["to_direct"][GRPC] == pytest.approx(0.5)
    assert rps["to_litellm"][GRPC] == pytest.approx(2.0)
    assert report["headline"]["cpu_ms"]["to_litellm"][GRPC] == pytest.approx(0.2)
    assert report["order"] == {"round 1": [DIRECT, LITELLM, GRPC]}


def test_without_peers_the_litellm_ratios_are_absent_and_the_table_says_so() -> None:
    paths = [PathSpec(DIRECT, _never), PathSpec(GRPC, _never, services=("gateway",))]
    runs = {
        DIRECT: _runs(2.0, 100, {}, 10.0),
        GRPC: _runs(12.0, 100, {"gateway": 1.0}, 60.0),
    }
    report = compare(paths, runs, {"concurrency": 50, "rounds": 2})

    assert report["headline"]["rps"]["to_litellm"][GRPC] is None
    assert report["order"]["round 2"] == [GRPC, DIRECT]
    text = markdown(report)
    assert "| figure | direct | Switchboard gRPC |" in text
    assert "| one at a time: TTFT overhead p50 (ms) | 0.0 | 10.0 |" in text
    assert "— / —" in text  # direct's overhead ratio, and no LiteLLM


def test_failed_requests_do_not_count_as_throughput_or_ttft() -> None:
    load = result("l", [100.0] * 10, wall_s=10.0)
    for sample in load.samples[:4]:
        sample.outcome = "error:APIError"
    runs = {"load": [PhaseRun(0, 0, load, {"gateway": 1.2})]}
    paths = [PathSpec(GRPC, _never, services=("gateway",))]
    report = compare(paths, {GRPC: runs}, {"concurrency": 50, "rounds": 1})

    figures = report["paths"][GRPC]
    assert figures["overhead_ms"][50] is None  # no probe phase, no direct: no overhead
    # A phase the run skipped leaves no empty rows.
    assert "one at a time: TTFT overhead p50" not in markdown(report)
    assert figures["load"]["requests_per_s"] == pytest.approx(0.6)
    assert figures["load"]["outcomes"] == {"error:APIError": 4, "ok": 6}
    assert figures["cpu_ms_per_request"]["services"] == pytest.approx(200.0)


def test_ratio_is_none_without_a_reference() -> None:
    assert ratio(2.0, 4.0) == 0.5
    assert ratio(2.0, 0.0) is None
    assert ratio(None, 1.0) is None
    assert ratio(1.0, float("nan")) is None


def test_the_checked_in_litellm_config_paces_as_the_harness_expects() -> None:
    config = yaml.safe_load(peers.CONFIG.read_text())
    models = {m["model_name"]: m["litellm_params"] for m in config["model_list"]}
    assert set(models) == {peers.MODEL, peers.PACED_MODEL, peers.CONVERSATION_MODEL}
    paced = models[peers.PACED_MODEL]["extra_headers"]
    assert paced == {"x-sim-delay-ms": str(PACED_TOKEN_DELAY_MS), "x-sim-tokens": str(PACED_TOKENS)}
    conversation = models[peers.CONVERSATION_MODEL]["extra_headers"]
    assert conversation == {
        "x-sim-delay-ms": str(CONVERSATION_TOKEN_DELAY_MS),
        "x-sim-tokens": str(CONVERSATION_TOKENS),
    }
    for params in models.values():
        assert params["api_base"] == "os.environ/BENCH_SIMULATOR_BASE"
    assert "database_url" not in str(config).lower()


def test_the_peer_environment_is_offline_without_database_redis_or_provider_keys() -> None:
    base = {
        "PATH": "/bin",
        "DATABASE_URL": "postgres://x",
        "REDIS_HOST": "r",
        "OPENAI_API_KEY": "sk-real",
    }
    env = peers.peer_env(base, "http://127.0.0.1:1/v1", "sk-bench-abc")

    assert env["PATH"] == "/bin"
    assert "DATABASE_URL" not in env and "REDIS_HOST" not in env and "OPENAI_API_KEY" not in env
    assert env["LITELLM_TELEMETRY_DISABLED"] == "true"
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "true"
    assert env["BENCH_SIMULATOR_BASE"] == "http://127.0.0.1:1/v1"
    assert env["LITELLM_MASTER_KEY"] == "sk-bench-abc"


def _peer(tmp_path: Path) -> peers.LiteLLM:
    return peers.LiteLLM(
        root=tmp_path,
        port=1,
        simulator_base_url="http://127.0.0.1:2/v1",
        log_dir=tmp_path / "logs",
        uv=tmp_path / "uv",
        python=tmp_path / "python",
        stop_timeout_s=5,
    )


def test_an_existing_install_of_the_same_pins_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = _peer(tmp_path)
    peer.venv.mkdir(parents=True)
    (peer.venv / ".installed").write_text(peers.requirements_digest() + "\n")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("installed again")

    monkeypatch.setattr(subprocess, "run", refuse)
    assert peer.install() is False


def test_changed_pins_install_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    peer = _peer(tmp_path)
    peer.venv.mkdir(parents=True)
    (peer.venv / ".installed").write_text("an-older-digest\n")
    commands: list[list[str]] = []

    def record(command: list[str], **kwargs: object) -> None:
        assert kwargs["timeout"] == peer.install_timeout_s
        commands.append(command)

    monkeypatch.setattr(subprocess, "run", record)
    assert peer.install() is True
    assert commands[0][1:3] == ["venv", "--clear"]
    assert commands[1][-2:] == ["-r", str(peers.REQUIREMENTS)]
    assert (peer.venv / ".installed").read_text().strip() == peers.requirements_digest()
    # Pinned, and to the version the report names.
    assert f"litellm=={peers.LITELLM_VERSION}" in peers.REQUIREMENTS.read_text()


def test_stopping_the_peer_stops_its_process_group_and_is_idempotent(tmp_path: Path) -> None:
    peer = _peer(tmp_path)
    # A stand-in that ignores SIGTERM's default only through its child: the group gets it.
    peer.process = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
    peer.stop()
    assert peer.process is None
    peer.stop()


def test_a_peer_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    peer = _peer(tmp_path)
    peer.stop_timeout_s = 0.5
    process = subprocess.Popen(
        [
            "python3",
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(30)",
        ],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == b"ready"
    peer.process = process
    peer.stop()
    assert process.returncode == -signal.SIGKILL


async def test_cpu_counts_children_only_where_asked() -> None:
    import asyncio
    import os
    import sys

    from switchboard.bench.procstats import Sampler

    burn = (
        "import time\n"
        "while time.process_time() < 0.4: pass\n"
        "print('burnt', flush=True)\n"
        "time.sleep(30)\n"
    )
    both = Sampler({"me": os.getpid()}, with_children=frozenset({"me"}))
    alone = Sampler({"me": os.getpid()})
    both.start()
    alone.start()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", burn, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None and (await child.stdout.readline()).strip() == b"burnt"
        await both.stop()
        await alone.stop()
    finally:
        child.kill()
        await child.wait()
    # The parent (this test) only waited on a pipe; the child's 0.4 s is counted where asked.
    assert both.stats["me"].cpu_s >= 0.35
    assert alone.stats["me"].cpu_s < both.stats["me"].cpu_s - 0.25


async def test_each_phase_waits_for_a_quiet_machine_and_the_log_says_so() -> None:
    calls: list[str] = []
    lines: list[str] = []

    async def settle() -> tuple[float, float]:
        calls.append("settle")
        return 2.5, 0.12

    async def run(phase: Phase) -> LoadResult:
        calls.append(phase.name)
        return result("x", [10.0, 20.0])

    await run_rounds(
        [PathSpec("x", run)],
        [Phase("probe", 1, 2, paced=False), Phase("load", 2, 2, paced=False)],
        1,
        {},
        phase_timeout_s=5,
        log=lines.append,
        settle=settle,
    )
    assert calls == ["settle", "probe", "settle", "load"]
    assert "after 2.5s settling (0.12 cores)" in lines[1]
    assert "TTFT p50 15.0" in lines[1]


async def test_waiting_for_quiet_ends_on_a_quiet_process_and_gives_up_on_a_busy_one() -> None:
    import asyncio
    import sys

    from switchboard.bench.procstats import wait_until_idle

    sleeper = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(30)"
    )
    spinner = await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
    try:
        waited, cores = await wait_until_idle(
            {"sleeper": sleeper.pid}, max_cores=0.2, window_s=0.2, timeout_s=5
        )
        assert waited < 1 and cores <= 0.2
        waited, cores = await wait_until_idle(
            {"spinner": spinner.pid}, max_cores=0.2, window_s=0.2, timeout_s=0.5
        )
        # It gives up after the timeout (within one window), and says how busy it was.
        assert 0.5 <= waited < 1.0 and cores > 0.2
    finally:
        for child in (sleeper, spinner):
            child.kill()
            await child.wait()
