"""Time to first token with and without retrieval, through the gateway's HTTP door.

Starts an isolated platform (simulator, memory, knowledge, llm-worker, orchestrator, gateway:
its own ports, topic prefix and database) on the running local stack, loads the demo
knowledge base (deploy/local/knowledge/demo) into one tenant over the HTTP knowledge API, and
sends streamed chat turns one at a time, in rounds of one turn per tenant (the order rotates
from round to round), over three tenants configured alike:

- `kb`: has the demo knowledge base; every question is about its policies, so every turn
  embeds the question, searches, and puts passages into the prompt;
- `nokb`: has no documents: a local search (`--search local`, the default) sees an empty
  index and returns at once; with `--search service` the orchestrator still asks the
  knowledge service, which answers at once (nothing to search);
- `off`: grounding off for the tenant (`knowledge_grounding: false`): the turn makes no
  search call at all. It is the reference: `kb` - `off` is what retrieval adds, measured in
  the same minutes as `kb` (the machine's load drifts by more than the difference sought),
  and reported as the median of the per-round differences with a bootstrap 95% interval.

After the turns, every chat request the simulator received in that phase is sent again
straight to it, alternating between the grounded ones (`kb`) and the others: the provider's
own TTFT for the same prompts (`direct/...`), so that what the platform adds is told apart
from the provider reading a longer prompt.

With `--off-turns N` the orchestrator then restarts with retrieval off for the whole service
(SWITCHBOARD_ORCHESTRATOR_KNOWLEDGE_ENABLED=false) and the rounds run again.
Every question is unique (a ticket number), so the query-embedding cache never answers: the
worst case (`--repeat-questions`: five questions over and over, the cache answers). Turns
run in conversations of five, like the platform benchmark.

    python services/knowledge/bench/ttft.py --turns 300
    make bench-knowledge-ttft                                         # the same, the stack started
"""

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient

from switchboard.common.tenants import RateLimits, TenantConfig, TenantStore, hash_api_key
from switchboard.common.topics import read_topic_specs

ROOT = Path(__file__).resolve().parents[3]
KAFKA = os.environ.get("SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGO = os.environ.get("SWITCHBOARD_MONGO_URL", "mongodb://127.0.0.1:27017/")
REDIS = os.environ.get("SWITCHBOARD_REDIS_URL", "redis://127.0.0.1:6379/0")
QUESTIONS = (
    "How long do I have to send back a pair of shoes I do not like?",
    "When will my refund show up on my card?",
    "How many days does standard delivery take?",
    "Can I still change my order after I placed it?",
    "Do you ship to Switzerland, and what does it cost?",
)
TURNS_PER_CONVERSATION = 5
ARMS = ("kb", "nokb", "off")  # the order of the first round; `off` has grounding off
GROUNDING_MARKER = "Knowledge base passages"  # switchboard.orchestrator.knowledge


@dataclass
class Arm:
    """One tenant's turns in one phase."""

    name: str
    key: str
    ttft_ms: list[float] = field(default_factory=list)
    cited: int = 0
    errors: int = 0
    conversation: str = ""
    turns_in_conversation: int = 0

    def figures(self) -> dict[str, Any]:
        values = sorted(self.ttft_ms)

        def pct(q: float) -> float:
            return round(values[min(len(values) - 1, int(q * len(values)))], 1)

        return {
            "arm": self.name,
            "turns": len(values),
            "errors": self.errors,
            "cited": self.cited,
            "p50_ms": round(statistics.median(values), 1) if values else None,
            "p90_ms": pct(0.9) if values else None,
            "p99_ms": pct(0.99) if values else None,
            "mean_ms": round(statistics.fmean(values), 1) if values else None,
        }


def median_with_interval(values: list[float], resamples: int = 2000) -> dict[str, Any]:
    """The median of `values` and a percentile-bootstrap 95% interval for it (seeded)."""
    if not values:
        return {"rounds": 0, "median_ms": None, "low_ms": None, "high_ms": None}
    rng = random.Random(0)
    medians = sorted(
        statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples)
    )
    return {
        "rounds": len(values),
        "median_ms": round(statistics.median(values), 2),
        "low_ms": round(medians[int(0.025 * resamples)], 2),
        "high_ms": round(medians[int(0.975 * resamples) - 1], 2),
    }


class Bench:
    """The isolated platform and the load."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run = uuid.uuid4().hex[:8]
        self.prefix = f"kbbench-{self.run}."
        self.database = f"kbbench_{self.run}"
        base = args.port_base
        self.ports = {
            "simulator": base,
            "gateway": base + 1,
            "http": base + 2,
            "memory": base + 3,
            "knowledge": base + 4,
        }
        self.health = {
            name: base + 10 + n
            for n, name in enumerate(
                ("gateway", "orchestrator", "memory", "llm-worker", "knowledge")
            )
        }
        self.http_url = f"http://127.0.0.1:{self.ports['http']}"
        self.logs = ROOT / ".local" / "logs" / "bench-knowledge-ttft"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.keys = {name: f"kbbench-{self.run}-{name}" for name in ARMS}
        self.env = {
            **os.environ,
            "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
            "SWITCHBOARD_KAFKA_TOPIC_PREFIX": self.prefix,
            "SWITCHBOARD_REDIS_URL": REDIS,
            "SWITCHBOARD_TELEMETRY_LOG_LEVEL": "WARNING",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{self.ports['simulator']}/v1",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{self.ports['simulator']}",
        }
        for secret in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
            self.env.pop(secret, None)

    # ---- the platform ------------------------------------------------------------------

    def _specs(self, retrieval: bool = True) -> dict[str, tuple[str, dict[str, str], str]]:
        p, h = self.ports, self.health
        return {
            "simulator": (
                "switchboard.simulator",
                {
                    "SWITCHBOARD_SIM_PORT": str(p["simulator"]),
                    "SWITCHBOARD_SIM_TTFT_MS": str(self.args.sim_ttft_ms),
                    "SWITCHBOARD_SIM_TOKEN_DELAY_MS": "1",
                },
                f"http://127.0.0.1:{p['simulator']}/_health",
            ),
            "memory": (
                "switchboard.memory",
                {
                    "SWITCHBOARD_MEMORY_GRPC_PORT": str(p["memory"]),
                    "SWITCHBOARD_MEMORY_MONGO_URL": MONGO,
                    "SWITCHBOARD_MEMORY_DATABASE": self.database,
                    "SWITCHBOARD_MEMORY_CONSUMER_GROUP": f"kbbench-{self.run}-memory",
                    "SWITCHBOARD_HEALTH_PORT": str(h["memory"]),
                },
                f"http://127.0.0.1:{h['memory']}/readyz",
            ),
            "knowledge": (
                "switchboard.knowledge",
                {
                    "SWITCHBOARD_KNOWLEDGE_GRPC_PORT": str(p["knowledge"]),
                    "SWITCHBOARD_KNOWLEDGE_MONGO_URL": MONGO,
                    "SWITCHBOARD_KNOWLEDGE_DATABASE": self.database,
                    "SWITCHBOARD_HEALTH_PORT": str(h["knowledge"]),
                },
                f"http://127.0.0.1:{h['knowledge']}/readyz",
            ),
            "llm-worker": (
                "switchboard.llm_worker",
                {
                    "SWITCHBOARD_LLM_WORKER_TIERS": "cheap,frontier",
                    "SWITCHBOARD_LLM_WORKER_CONSUMER_GROUP_PREFIX": f"kbbench-{self.run}-worker",
                    "SWITCHBOARD_HEALTH_PORT": str(h["llm-worker"]),
                },
                f"http://127.0.0.1:{h['llm-worker']}/readyz",
            ),
            "orchestrator": (
                "switchboard.orchestrator",
                {
                    "SWITCHBOARD_ORCHESTRATOR_MEMORY_TARGET": f"127.0.0.1:{p['memory']}",
                    "SWITCHBOARD_ORCHESTRATOR_KNOWLEDGE_TARGET": f"127.0.0.1:{p['knowledge']}",
                    "SWITCHBOARD_ORCHESTRATOR_KNOWLEDGE_ENABLED": str(retrieval).lower(),
                    "SWITCHBOARD_ORCHESTRATOR_KNOWLEDGE_SEARCH": self.args.search,
                    "SWITCHBOARD_ORCHESTRATOR_CONSUMER_GROUP": f"kbbench-{self.run}-orchestrator",
                    "SWITCHBOARD_ORCHESTRATOR_MONGO_URL": MONGO,
                    "SWITCHBOARD_ORCHESTRATOR_DATABASE": self.database,
                    "SWITCHBOARD_HEALTH_PORT": str(h["orchestrator"]),
                },
                f"http://127.0.0.1:{h['orchestrator']}/readyz",
            ),
            "gateway": (
                "switchboard.gateway",
                {
                    "SWITCHBOARD_GATEWAY_GRPC_PORT": str(p["gateway"]),
                    "SWITCHBOARD_GATEWAY_HTTP_PORT": str(p["http"]),
                    "SWITCHBOARD_GATEWAY_INSTANCE_ID": f"kbbench-{self.run}",
                    "SWITCHBOARD_GATEWAY_MEMORY_TARGET": f"127.0.0.1:{p['memory']}",
                    "SWITCHBOARD_GATEWAY_KNOWLEDGE_TARGET": f"127.0.0.1:{p['knowledge']}",
                    "SWITCHBOARD_MONGO_URL": MONGO,
                    "SWITCHBOARD_MONGO_DATABASE": self.database,
                    "SWITCHBOARD_HEALTH_PORT": str(h["gateway"]),
                },
                f"http://127.0.0.1:{h['gateway']}/readyz",
            ),
        }

    def _start(self, name: str, retrieval: bool = True) -> None:
        module, env, url = self._specs(retrieval)[name]
        log = self.logs / f"{name}.log"
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**self.env, **env},
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited; see {log}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready at {url}; see {log}")

    def _stop(self, name: str) -> None:
        process = self.processes.pop(name)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    async def _topics(self, create: bool) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=10_000)
        await admin.start()
        try:
            if create:
                specs = read_topic_specs(ROOT / "deploy/local/kafka/topics.txt", self.prefix)
                await admin.create_topics(
                    [NewTopic(n, num_partitions=k, replication_factor=1) for n, k in specs]
                )
            else:
                mine = [t for t in await admin.list_topics() if t.startswith(self.prefix)]
                if mine:
                    await admin.delete_topics(mine)
        finally:
            await admin.close()

    async def _seed(self) -> None:
        """Three tenants alike but for their knowledge base and grounding; no response cache
        (every turn takes the whole path), limits far above the load."""
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            MONGO, serverSelectionTimeoutMS=5_000
        )
        try:
            store = TenantStore(client, self.database)
            for name, key in self.keys.items():
                await store.upsert(
                    TenantConfig(
                        tenant_id=name,
                        name="Demo Retail",
                        api_key_sha256=[hash_api_key(key)],
                        rate_limits=RateLimits(
                            requests_per_minute=1_000_000, requests_per_minute_per_user=1_000_000
                        ),
                        daily_budget_usd=1_000_000.0,
                        knowledge_grounding=name != "off",
                    )
                )
        finally:
            await client.close()

    async def _load_knowledge(self) -> int:
        """The demo knowledge base into `kb`, through the HTTP knowledge API."""
        chunks = 0
        async with aiohttp.ClientSession() as http:
            for path in sorted((ROOT / "deploy/local/knowledge/demo").glob("*.md")):
                async with http.put(
                    f"{self.http_url}/v1/knowledge/documents/{path.name}",
                    json={"content": path.read_text(), "content_type": "text/markdown"},
                    headers={"Authorization": f"Bearer {self.keys['kb']}"},
                ) as response:
                    body = await response.json()
                    if response.status != 200:
                        raise RuntimeError(f"{path.name}: {body}")
                    chunks += body["chunks"]
        return chunks

    def _search_seconds(self) -> tuple[float, float]:
        """The knowledge service's search histogram: (sum of seconds, count)."""
        url = f"http://127.0.0.1:{self.health['knowledge']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in (
                "switchboard_knowledge_search_seconds_sum",
                "switchboard_knowledge_search_seconds_count",
            ):
                values[name.rsplit("_", 1)[1]] = float(value)
        return values.get("sum", 0.0), values.get("count", 0.0)

    # ---- the load ----------------------------------------------------------------------

    async def _turn(self, client: openai.AsyncOpenAI, arm: Arm, number: int) -> None:
        if arm.turns_in_conversation == TURNS_PER_CONVERSATION:
            arm.conversation, arm.turns_in_conversation = "", 0
        question = QUESTIONS[number % len(QUESTIONS)]
        if not self.args.repeat_questions:
            question += f" (ticket {self.run}-{number})"
        metadata = {"conversation_id": arm.conversation} if arm.conversation else {}
        started = time.perf_counter()
        first: float | None = None
        try:
            stream = await client.with_options(api_key=arm.key).chat.completions.create(
                model="cheap",
                messages=[{"role": "user", "content": question}],
                stream=True,
                metadata=metadata,
            )
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter()
                extension = (chunk.model_extra or {}).get("switchboard") or {}
                if extension.get("type") == "started":
                    arm.conversation = extension["conversation_id"]
                if extension.get("type") == "done" and extension.get("citations"):
                    arm.cited += 1
        except openai.APIError as exc:
            print(f"  {arm.name} turn {number}: {exc}", file=sys.stderr)
            arm.errors += 1
            return
        arm.turns_in_conversation += 1
        if first is not None:
            arm.ttft_ms.append((first - started) * 1000)

    async def _phase(self, label: str, turns: int) -> tuple[list[dict[str, Any]], list[float]]:
        """`turns` rounds of one turn per tenant; also the per-round `kb` - `off` differences
        (rounds in which both answered)."""
        arms = [Arm(f"{label}/{name}", self.keys[name]) for name in ARMS]
        paired: list[float] = []
        async with openai.AsyncOpenAI(
            base_url=f"{self.http_url}/v1", api_key="unused", max_retries=0, timeout=60
        ) as client:
            warm = [Arm(f"warm-{name}", self.keys[name]) for name in ARMS]
            for number in range(self.args.warmup):
                await self._turn(client, warm[number % len(warm)], -1 - number)
            for number in range(turns):
                # The order rotates, so that no arm always follows the same one.
                order = arms[number % len(arms) :] + arms[: number % len(arms)]
                counts = [len(arm.ttft_ms) for arm in arms]
                for arm in order:
                    await self._turn(client, arm, number)
                kb, off = arms[0], arms[2]
                if len(kb.ttft_ms) > counts[0] and len(off.ttft_ms) > counts[2]:
                    paired.append(kb.ttft_ms[-1] - off.ttft_ms[-1])
        return [arm.figures() for arm in arms], paired

    async def _direct(self) -> list[dict[str, Any]]:
        """The simulator's TTFT for the chat requests it received, sent again straight to
        it (grounded and not, alternating); its journal is cleared for the next phase."""
        url = f"http://127.0.0.1:{self.ports['simulator']}"
        bodies: dict[str, list[dict[str, Any]]] = {"kb": [], "nokb": []}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/_journal") as response:
                entries = (await response.json())["requests"]
            await (await http.delete(f"{url}/_journal")).release()
            for entry in entries:
                body = entry.get("body")
                if entry.get("path") != "/v1/chat/completions" or not isinstance(body, dict):
                    continue
                grounded = any(
                    GROUNDING_MARKER in str(m.get("content"))
                    for m in body.get("messages") or ()
                    if isinstance(m, dict) and m.get("role") == "system"
                )
                bodies["kb" if grounded else "nokb"].append(body)
            arms = {name: Arm(f"direct/{name}", "") for name in bodies}
            for i in range(min(len(b) for b in bodies.values())):
                for name, arm in arms.items():
                    arm.ttft_ms.append(await self._direct_ttft(http, url, bodies[name][i]))
        return [arm.figures() for arm in arms.values()]

    @staticmethod
    async def _direct_ttft(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
        """Milliseconds from sending `body` to the first text of the streamed answer."""
        started = time.perf_counter()
        first: float | None = None
        async with http.post(
            f"{url}/v1/chat/completions",
            json=body,
            headers={"Authorization": "Bearer sk-bench"},
        ) as response:
            async for line in response.content:
                if first is None and line.startswith(b"data: {"):
                    chunk = json.loads(line[6:])
                    if any((c.get("delta") or {}).get("content") for c in chunk["choices"]):
                        first = time.perf_counter()
        if first is None:
            raise RuntimeError("the simulator streamed no text")
        return (first - started) * 1000

    async def measure(self) -> dict[str, Any]:
        chunks = await self._load_knowledge()
        print(
            f"{self.http_url}: loaded the demo knowledge base ({chunks} chunks) for key "
            f"{self.keys['kb']}",
            file=sys.stderr,
        )
        before = self._search_seconds()
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{self.ports['simulator']}/_journal"
            await (await http.delete(url)).release()
        on, paired = await self._phase("retrieval-on", self.args.turns)
        after = self._search_seconds()
        on += await self._direct()
        searches = after[1] - before[1]
        search_mean_ms = (after[0] - before[0]) / searches * 1000 if searches else None
        off: list[dict[str, Any]] = []
        if self.args.off_turns:
            self._stop("orchestrator")
            await asyncio.to_thread(self._start, "orchestrator", False)
            off, _ = await self._phase("retrieval-off", self.args.off_turns)
        return {
            "search": self.args.search,
            "sim_ttft_ms": self.args.sim_ttft_ms,
            "repeat_questions": self.args.repeat_questions,
            "kb_chunks": chunks,
            # Server-side, query embedding included (the `kb` tenant's searches, warm-up too;
            # none with --search local: the orchestrator searches its own replica).
            "knowledge_search_mean_ms": round(search_mean_ms, 1) if search_mean_ms else None,
            "arms": on + off,
            "kb_minus_off": median_with_interval(paired),
        }

    def run_all(self) -> dict[str, Any]:
        self.logs.mkdir(parents=True, exist_ok=True)
        asyncio.run(self._topics(create=True))
        try:
            asyncio.run(self._seed())
            for name in ("simulator", "memory", "knowledge", "llm-worker", "orchestrator"):
                self._start(name)
            self._start("gateway")
            return asyncio.run(self.measure())
        finally:
            for name in reversed(list(self.processes)):
                self._stop(name)
            asyncio.run(self._topics(create=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=100, help="rounds (one turn per tenant)")
    parser.add_argument(
        "--off-turns", type=int, default=0, help="rounds with retrieval off for the service"
    )
    parser.add_argument("--warmup", type=int, default=10, help="uncounted turns per phase")
    parser.add_argument(
        "--search",
        choices=("local", "service"),
        default="local",
        help="where the orchestrator searches (SWITCHBOARD_ORCHESTRATOR_KNOWLEDGE_SEARCH)",
    )
    parser.add_argument("--sim-ttft-ms", type=float, default=0.0, help="the simulator's TTFT")
    parser.add_argument(
        "--repeat-questions",
        action="store_true",
        help="ask the same five questions over and over (the query-embedding cache answers)",
    )
    parser.add_argument("--port-base", type=int, default=27400, help="first port used")
    parser.add_argument(
        "--port-offset", type=int, default=0, help="moves every port (beside another run)"
    )
    parser.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args()
    args.port_base += args.port_offset
    report = Bench(args).run_all()
    print(f"{'arm':<20} {'turns':>5} {'err':>4} {'cited':>5} {'p50':>7} {'p90':>7} {'p99':>7}")
    for arm in report["arms"]:
        print(
            f"{arm['arm']:<20} {arm['turns']:>5} {arm['errors']:>4} {arm['cited']:>5} "
            f"{arm['p50_ms']:>7} {arm['p90_ms']:>7} {arm['p99_ms']:>7}"
        )
    print(
        f"search: {report['search']}; knowledge service, mean search incl. embedding: "
        f"{report['knowledge_search_mean_ms']} ms"
    )
    p50 = {arm["arm"]: arm["p50_ms"] for arm in report["arms"]}
    if None not in (p50.get("retrieval-on/kb"), p50.get("direct/kb")):
        direct = p50["direct/kb"] - p50["direct/nokb"]
        for reference in ("nokb", "off"):
            through = p50["retrieval-on/kb"] - p50[f"retrieval-on/{reference}"]
            print(
                f"kb - {reference} at p50: {through:+.1f} ms through the platform, of which the "
                f"provider (direct) {direct:+.1f} ms; the platform's own {through - direct:+.1f} ms"
            )
        diff = report["kb_minus_off"]
        print(
            f"kb - off, median of {diff['rounds']} per-round differences: {diff['median_ms']:+.1f}"
            f" ms (bootstrap 95% interval {diff['low_ms']:+.1f} to {diff['high_ms']:+.1f}); "
            f"less the provider's share: {diff['median_ms'] - direct:+.1f} ms"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
