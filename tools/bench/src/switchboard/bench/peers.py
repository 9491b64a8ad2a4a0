"""LiteLLM proxy as the benchmark's peer: installed pinned into a venv of its own under
`.local/peers/` (never the project's), started against the simulator with the checked-in
config and a per-run master key, and always stopped again.

How it runs offline here: /work/shared/peers/LITELLM.md (summarised in docs/benchmarks.md).
"""

import hashlib
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parents[3] / "peers"
LITELLM_VERSION = "1.110.2"
REQUIREMENTS = PEERS_DIR / "litellm-requirements.txt"
CONFIG = PEERS_DIR / "litellm-config.yaml"
# The config's model names: zero-latency replies; the first-visible-text phase's tokens
# PACED_TOKEN_DELAY_MS apart; the paced conversations' (CONVERSATION_TOKEN_DELAY_MS apart).
MODEL = "bench"
PACED_MODEL = "bench-paced"
CONVERSATION_MODEL = "bench-conversation"

# No network calls, no telemetry, no database, no Redis (LITELLM.md).
OFFLINE_ENV = {
    "LITELLM_TELEMETRY_DISABLED": "true",
    "LITELLM_OFFLINE_MODE": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "true",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "true",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "true",
    "LITELLM_LOCAL_BLOG_POSTS": "true",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "true",
    "LITELLM_DISABLE_LATEST_RELEASE_CHECK": "true",
    "HF_HUB_OFFLINE": "1",
    "LITELLM_LOG": "WARNING",
}
DROPPED_ENV_PREFIXES = ("REDIS_", "DATABASE_URL", "OPENAI_", "ANTHROPIC_")


def requirements_digest(requirements: Path = REQUIREMENTS) -> str:
    """What an install is keyed on: a changed pin reinstalls."""
    return hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]


def peer_env(base: dict[str, str], simulator_base_url: str, master_key: str) -> dict[str, str]:
    """LiteLLM's environment: `base` without database, Redis or provider settings, plus the
    offline switches, the simulator's URL (the config reads it) and the run's master key."""
    env = {k: v for k, v in base.items() if not k.startswith(DROPPED_ENV_PREFIXES)}
    env.update(OFFLINE_ENV)
    env["BENCH_SIMULATOR_BASE"] = simulator_base_url
    env["LITELLM_MASTER_KEY"] = master_key
    return env


@dataclass
class LiteLLM:
    """One LiteLLM proxy process."""

    root: Path
    port: int
    simulator_base_url: str
    log_dir: Path
    uv: Path
    python: Path
    install_timeout_s: float = 900.0
    ready_timeout_s: float = 120.0
    stop_timeout_s: float = 15.0
    master_key: str = field(default_factory=lambda: "sk-bench-" + secrets.token_hex(24))
    process: subprocess.Popen[bytes] | None = None

    @property
    def venv(self) -> Path:
        return self.root / ".local" / "peers" / f"litellm-{LITELLM_VERSION}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def install(self) -> bool:
        """Install LiteLLM into its venv unless that exact install is there; True if it ran."""
        marker = self.venv / ".installed"
        digest = requirements_digest()
        if marker.exists() and marker.read_text().strip() == digest:
            return False
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / "litellm-install.log").open("wb") as log:
            for command in (
                [str(self.uv), "venv", "--clear", "--python", str(self.python), str(self.venv)],
                [
                    str(self.uv),
                    "pip",
                    "install",
                    "--python",
                    str(self.venv / "bin" / "python"),
                    "-r",
                    str(REQUIREMENTS),
                ],
            ):
                subprocess.run(
                    command,
                    check=True,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=self.install_timeout_s,
                )
        marker.write_text(digest + "\n")
        return True

    def start(self) -> None:
        """Start the proxy (its own process group, so that stopping it takes any child too)
        and wait until it answers."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / "litellm.log").open("wb")
        self.process = subprocess.Popen(
            [
                str(self.venv / "bin" / "litellm"),
                "--config",
                str(CONFIG),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--num_workers",
                "1",
            ],
            env=peer_env(dict(os.environ), self.simulator_base_url, self.master_key),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.log_dir,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"LiteLLM exited with {self.process.returncode}; see {self.log_dir}/litellm.log"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health/liveliness", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"LiteLLM not ready at {self.url} within {self.ready_timeout_s}s")

    def stop(self) -> None:
        """SIGTERM to its process group, then SIGKILL after `stop_timeout_s`; idempotent."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=self.stop_timeout_s)
        except ProcessLookupError:
            pass

    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("LiteLLM is not running")
        return self.process.pid
