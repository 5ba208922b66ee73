"""Benchmark: uploads through the whole offline stack against bare onnxruntime.

For each requested size N, a fresh offline stack (in this process, as ``scones
run`` has it) receives a burst of N uploads of the bundled PNGs (cycling through
them under distinct keys) while delivery is paused, so the ingest queue holds N
notifications; then delivery resumes and the run ends when the results table
holds N records. Throughput is N / (delivery resumed to last record): how fast
the stack drains a backlog of N. Before the burst, a warm-up of 16 uploads (not
counted) starts the Lambda workers and parses the definition, so runs of
different sizes compare steady states, not cold starts. Meanwhile:

* a sampler reads ``/proc`` every second: the resident memory (RSS) of the stack's
  process and of every process it started (Lambda workers, the model server),
  summed, and each process's CPU seconds by role;
* a profiler records where the time went: ``py-spy`` (this process and its
  children) when it is installed, else a sampler of this process's Python
  threads (``sys._current_frames``) that counts the frames of threads not
  waiting. The report says which one ran.

Before and after the workflow runs, the bare model (``OnnxClassifier.predict_bytes``:
decode, resize, inference; no HTTP) classifies the same images with one thread
per CPU, in the same process: the baseline the workflow is compared with.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scones_core.records import KEY_ATTRIBUTE, STATUS_ATTRIBUTE

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# A thread whose innermost frame is one of these is blocked, not working.
WAITING_FUNCTIONS = frozenset(
    {"wait", "select", "acquire", "sleep", "readline", "accept", "recv_into", "recv", "poll",
     "_wait_for_tstate_lock", "serve_forever", "readinto", "wait_for", "_wait_for_response"}
)  # fmt: skip
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# Where a sampled frame belongs, by a piece of its "function (file:line)" text; first match wins.
HOTSPOTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ASL definition parse (ANTLR)", ("asl_parser.py", "/antlr4/")),
    ("boto3 client creation", ("boto3/session.py", "botocore/session.py")),
    ("JSONPath parser build (PLY)", ("jsonpath_ng/parser.py", "/ply/")),
    ("moto SQS", ("moto/sqs/",)),
    ("moto DynamoDB", ("moto/dynamodb/",)),
    ("moto S3", ("moto/s3/",)),
    ("moto Step Functions interpreter", ("moto/stepfunctions/",)),
    ("moto Lambda", ("moto/awslambda/",)),
    ("moto server (werkzeug, request routing)", ("werkzeug/", "moto/core/")),
    ("boto3/botocore calls", ("botocore/",)),
    ("onnxruntime inference", ("onnxruntime/",)),
    ("image decode/encode (Pillow)", ("PIL/",)),
)


@dataclass
class ProcessStats:
    role: str
    peak_rss_mb: float = 0.0
    cpu_s: float = 0.0


@dataclass
class WorkflowRun:
    images: int
    upload_s: float  # uploading the burst, delivery paused
    peak_running_executions: int | None  # most executions evaluating at once (the gate)
    wall_s: float  # delivery resumed to the last record
    images_per_s: float
    cpu_ms_per_image: float  # CPU of every process of the stack while it drained, per image
    statuses: dict[str, int]
    peak_rss_mb: float
    peak_rss_by_role_mb: dict[str, float]
    cpu_s_by_role: dict[str, float]
    profile: dict[str, Any] = field(default_factory=dict)


@dataclass
class BareRun:
    images: int
    threads: int
    wall_s: float
    images_per_s: float
    cpu_ms_per_image: float  # CPU time of this process (all threads) per image


@dataclass
class WorkflowBenchResult:
    machine: dict[str, Any]
    profiler: str
    # Bare onnxruntime before the first run, between runs and after the last: run i is
    # compared with the mean of bare[i] and bare[i + 1], measured just around it.
    bare: list[BareRun]
    runs: list[WorkflowRun]

    def bare_around(self, index: int) -> float:
        return (self.bare[index].images_per_s + self.bare[index + 1].images_per_s) / 2

    def bare_cpu_ms(self) -> float:
        return sum(b.cpu_ms_per_image for b in self.bare) / len(self.bare)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["bare_images_per_s_around_run"] = [self.bare_around(i) for i in range(len(self.runs))]
        data["bare_cpu_ms_per_image"] = self.bare_cpu_ms()
        return data


# -- images ------------------------------------------------------------------------
def load_images(data_dir: Path, count: int) -> list[tuple[str, bytes]]:
    """``count`` (name, PNG) pairs cycling through the bundled images in a fixed order."""
    files = sorted(data_dir.glob("*/*.png"))
    if not files:
        raise FileNotFoundError(f"no PNG images under {data_dir}/<label>/")
    blobs = [path.read_bytes() for path in files]
    return [
        (f"bench/{i:06d}-{files[i % len(files)].name}", blobs[i % len(blobs)]) for i in range(count)
    ]


def bare_throughput(model_dir: Path, payloads: list[bytes], threads: int) -> BareRun:
    """Classify ``payloads`` in-process with ``threads`` threads; images per second."""
    from scones.model.artifact import OnnxClassifier

    classifier = OnnxClassifier(model_dir)
    for payload in payloads[:10]:  # warm-up, not counted
        classifier.predict_bytes(payload)
    started, cpu_started = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(classifier.predict_bytes, payloads))
    wall = time.perf_counter() - started
    cpu_ms = (time.process_time() - cpu_started) * 1000 / len(payloads)
    return BareRun(len(payloads), threads, wall, len(payloads) / wall, cpu_ms)


# -- /proc sampling ------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        except OSError:
            continue
        found.extend(int(child) for child in text.split())
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(_children(current))
    return tree


def _rss_and_cpu(pid: int) -> tuple[float, float, str] | None:
    try:
        statm = Path(f"/proc/{pid}/statm").read_text().split()
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    fields_after_name = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields_after_name[11]) + int(fields_after_name[12])) / CLOCK_TICKS
    return int(statm[1]) * PAGE_SIZE / 2**20, cpu, cmdline


def process_role(cmdline: str, own: bool = False) -> str:
    if own:
        return "stack (moto, interpreter, poller, bench client)"
    if "scones.offline.model_process" in cmdline:
        return "model server"
    if "lambda_worker" in cmdline:  # run as a script: .../scones/offline/lambda_worker.py
        parts = cmdline.split()
        name = parts[-1] if len(parts) > 5 else "?"
        return f"lambda {name}"
    if "py-spy" in cmdline:
        return "profiler (py-spy)"
    return "other"


class TreeSampler:
    """Peak summed RSS of this process tree, and each process's CPU time, by role."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.peak_rss_mb = 0.0
        self.by_pid: dict[int, ProcessStats] = {}
        self._baseline: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        own = os.getpid()
        total = 0.0
        for pid in process_tree(own):
            found = _rss_and_cpu(pid)
            if found is None:
                continue
            rss, cpu, cmdline = found
            role = process_role(cmdline, own=pid == own)
            if role == "profiler (py-spy)":
                continue  # the measurement is not part of the stack
            total += rss
            stats = self.by_pid.setdefault(pid, ProcessStats(role))
            stats.peak_rss_mb = max(stats.peak_rss_mb, rss)
            stats.cpu_s = max(stats.cpu_s, cpu)
        self.peak_rss_mb = max(self.peak_rss_mb, total)

    def mark(self) -> None:
        """CPU time from now on: by_role() reports what each process used after this."""
        self.sample()
        self._baseline = {pid: stats.cpu_s for pid, stats in self.by_pid.items()}

    def by_role(self) -> tuple[dict[str, float], dict[str, float]]:
        rss: dict[str, float] = defaultdict(float)
        cpu: dict[str, float] = defaultdict(float)
        for stats in self.by_pid.values():
            rss[stats.role] += stats.peak_rss_mb
        for pid, stats in self.by_pid.items():
            cpu[stats.role] += max(0.0, stats.cpu_s - self._baseline.get(pid, 0.0))
        return dict(rss), dict(cpu)


# -- profilers -------------------------------------------------------------------------
def py_spy_path() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.is_file() else shutil.which("py-spy")


class Profiler:
    """``py-spy record`` of this process tree when available, else a thread sampler."""

    def __init__(self, kind: str, out_dir: Path, rate_hz: int = 25) -> None:
        self.kind = kind
        self.out_dir = out_dir
        self.rate_hz = rate_hz
        self.stacks: Counter[tuple[str, ...]] = Counter()
        self.error: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._caller: int | None = None
        self._raw = out_dir / "py-spy.txt"
        # Where to keep py-spy's collapsed stacks (for a flame graph), if anywhere.
        self.keep_raw: Path | None = None

    @property
    def description(self) -> str:
        if self.kind == "py-spy":
            return (
                f"py-spy record --subprocesses --nonblocking --rate {self.rate_hz} "
                "(stack process, Lambda workers, model server; idle threads not counted)"
            )
        if self.kind == "sampler":
            return (
                f"thread sampler ({self.rate_hz} Hz over sys._current_frames of the stack "
                "process only, not its polling thread; py-spy not installed; threads blocked "
                "in a wait not counted)"
            )
        return "none"

    def start(self) -> None:
        if self.kind == "py-spy":
            binary = py_spy_path()
            assert binary is not None
            self._process = subprocess.Popen(
                [
                    binary,
                    "record",
                    "--pid",
                    str(os.getpid()),
                    "--subprocesses",
                    "--nonblocking",
                    "--full-filenames",
                    "--format",
                    "raw",
                    "--rate",
                    str(self.rate_hz),
                    "-o",
                    str(self._raw),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C is for the bench, which stops it
            )
        elif self.kind == "sampler":
            # The caller only polls for records (mostly in time.sleep, which a sampler of
            # Python frames cannot tell from work): it is not part of the stack.
            self._caller = threading.get_ident()
            self._thread = threading.Thread(target=self._sample, name="bench-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._process is not None:
            process, self._process = self._process, None
            process.send_signal(signal.SIGINT)
            try:
                _, err = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                _, err = process.communicate()
            if self._raw.is_file():
                self._read_raw()
                if self.keep_raw is not None:
                    self.keep_raw.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(self._raw, self.keep_raw)
            else:
                self.error = (err or b"").decode(errors="replace").strip()[-500:]
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _read_raw(self) -> None:
        for line in self._raw.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                self.stacks[tuple(stack.split(";"))] += int(count)

    def _sample(self) -> None:
        own = threading.get_ident()
        role = 'process {}:"{}"'.format(os.getpid(), " ".join(sys.argv))
        while not self._stop.wait(1 / self.rate_hz):
            for ident, frame in sys._current_frames().items():
                if ident in (own, self._caller):
                    continue
                if frame.f_code.co_name in WAITING_FUNCTIONS:
                    continue
                frames: list[str] = []
                current: Any = frame
                while current is not None:
                    code = current.f_code
                    frames.append(f"{code.co_name} ({code.co_filename}:{current.f_lineno})")
                    current = current.f_back
                self.stacks[(role, *reversed(frames))] += 1

    def summary(self, top: int = 15) -> dict[str, Any]:
        """Samples by process role, by hotspot, and the functions with the most own time."""
        total = sum(
            count for stack, count in self.stacks.items() if not (stack and _is_waiting(stack[-1]))
        )
        by_role: Counter[str] = Counter()
        by_hotspot: Counter[str] = Counter()
        own_time: Counter[str] = Counter()
        own_pid = os.getpid()
        for stack, count in self.stacks.items():
            processes = [f for f in stack if f.startswith("process ")]
            frames = [f for f in stack if not f.startswith("process ")]
            if frames and _is_waiting(frames[-1]):
                continue  # py-spy --nonblocking cannot always tell a blocked thread
            role = "stack (moto, interpreter, poller, bench client)"
            if processes:
                last = processes[-1]
                pid = int(last.split(":", 1)[0].split()[1])
                cmdline = last.split(":", 1)[1].strip('"')
                role = process_role(cmdline, own=pid == own_pid)
            by_role[role] += count
            hotspot = _hotspot(frames)
            by_hotspot[f"{role}: {hotspot}" if hotspot else f"{role}: other"] += count
            if frames:
                own_time[f"{_short(frames[-1])} [{role.split(' (')[0]}]"] += count
        return {
            "profiler": self.description,
            "samples": total,
            "error": self.error,
            "by_role": _shares(by_role, total),
            "by_hotspot": _shares(by_hotspot, total, top),
            "own_time": _shares(own_time, total, top),
        }


def _is_waiting(frame: str) -> bool:
    function = frame.split(" (", 1)[0]
    return function.rsplit(".", 1)[-1] in WAITING_FUNCTIONS


def _hotspot(frames: list[str]) -> str | None:
    # The outermost matching frame names the activity (a boto3 client built by the
    # interpreter counts as client creation, not as the interpreter).
    for name, needles in HOTSPOTS:
        if any(needle in frame for frame in frames for needle in needles):
            return name
    return None


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    path = where.rstrip(")")
    for marker in ("site-packages/", "/src/", "/layers/shared/", "/functions/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def _shares(counter: Counter[str], total: int, top: int | None = None) -> list[dict[str, Any]]:
    return [
        {"name": name, "samples": count, "share": count / total if total else 0.0}
        for name, count in counter.most_common(top)
    ]


# -- the workflow run -----------------------------------------------------------------
def _count_records(api: Any) -> int:
    """How many records the table holds, without reading them.

    moto counts the items for ``ItemCount`` on every DescribeTable (AWS refreshes it
    every six hours): a scan instead would cost the stack O(records) per poll.
    Records are written once each (``attribute_not_exists``), so this is the number
    of uploads with a terminal record.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        table = api.client("dynamodb").describe_table(TableName=api.endpoints.table)["Table"]
    except (BotoCoreError, ClientError):
        # moto counts while the workflow writes: "dictionary changed size during iteration".
        return -1
    return int(table["ItemCount"])


def run_workflow(
    images: list[tuple[str, bytes]],
    *,
    model_dir: Path,
    profiler_kind: str,
    work_dir: Path,
    timeout_s: float,
    moto_speedups: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    keep_profile: Path | None = None,
    max_running_executions: int | None = None,
    warmup: int = 16,
) -> WorkflowRun:
    from scones.offline.stack import OfflineStack, StackOptions

    options = StackOptions(model_dir=model_dir, moto_speedups=moto_speedups)
    if max_running_executions is not None:
        options.max_running_executions = max_running_executions or None
    profiler = Profiler(profiler_kind, work_dir)
    profiler.keep_raw = keep_profile
    with TreeSampler() as sampler, OfflineStack(options) as stack:
        api = stack.api()
        # Warm-up, not counted: the Lambda workers' cold starts (imports of boto3 and
        # Powertools, about a CPU second each) and the first parse of the definition.
        if warmup:
            warm = [api.upload_bytes(f"warmup/{i:04d}.png", data, "image/png")
                    for i, (_, data) in enumerate(images[:warmup])]  # fmt: skip
            api.wait_for_records(warm, timeout=timeout_s, poll_seconds=0.5)
        warmed = len(images[:warmup])
        # A burst: every upload is queued before delivery starts, as when a fleet of
        # cameras syncs at once. The stack then drains a backlog of N.
        upload_started = time.perf_counter()
        with stack.delivery_paused():
            for name, data in images:
                api.upload_bytes(name, data, "image/png")
            upload_s = time.perf_counter() - upload_started
            profiler.start()
            sampler.mark()
            started = time.perf_counter()
        try:
            done = 0
            deadline = time.monotonic() + timeout_s
            while done < len(images):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{done} of {len(images)} records after {timeout_s:.0f} s")
                time.sleep(0.5)
                done = max(done, _count_records(api) - warmed)
                if on_progress:
                    on_progress(done, len(images))
            wall = time.perf_counter() - started
            sampler.sample()  # the Lambda workers' CPU time, before they stop
        finally:
            profiler.stop()
        statuses = Counter(
            str(r.get(STATUS_ATTRIBUTE))
            for r in api.records()
            if str(r.get(KEY_ATTRIBUTE, "")).find("/bench/") >= 0
        )
        gate = stack.execution_gate
        peak_running = gate.peak if gate is not None else None
    rss, cpu = sampler.by_role()
    return WorkflowRun(
        images=len(images),
        upload_s=upload_s,
        peak_running_executions=peak_running,
        wall_s=wall,
        images_per_s=len(images) / wall,
        cpu_ms_per_image=sum(cpu.values()) * 1000 / len(images),
        statuses=dict(statuses),
        peak_rss_mb=sampler.peak_rss_mb,
        peak_rss_by_role_mb=rss,
        cpu_s_by_role=cpu,
        profile=profiler.summary() if profiler_kind != "none" else {},
    )


def machine_info() -> dict[str, Any]:
    import onnxruntime

    return {
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_before": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "onnxruntime": onnxruntime.__version__,
    }


def run_benchmark(
    sizes: list[int],
    *,
    model_dir: Path,
    data_dir: Path,
    profiler: str = "auto",
    bare_images: int = 400,
    timeout_s: float = 1800,
    moto_speedups: bool = True,
    log: Callable[[str], None] = print,
    profile_dir: Path | None = None,
    max_running_executions: int | None = None,
    warmup: int = 16,
) -> WorkflowBenchResult:
    if profiler == "auto":
        profiler = "py-spy" if py_spy_path() else "sampler"
    machine = machine_info()
    bare_set = [data for _, data in load_images(data_dir, min(max(sizes), bare_images))]
    threads = machine["usable_cpus"] or machine["cpus"] or 1

    def measure_bare() -> BareRun:
        bare = bare_throughput(model_dir, bare_set, threads)
        log(f"bare onnxruntime: {bare.images_per_s:.1f} images/s ({threads} threads)")
        return bare

    bares = [measure_bare()]
    runs = []
    with _work_dir() as work:
        for size in sizes:
            log(f"workflow: {size} uploads ...")
            run = run_workflow(
                load_images(data_dir, size),
                model_dir=model_dir,
                profiler_kind=profiler,
                work_dir=work,
                timeout_s=timeout_s,
                moto_speedups=moto_speedups,
                keep_profile=profile_dir / f"py-spy-{size}.txt" if profile_dir else None,
                max_running_executions=max_running_executions,
                warmup=warmup,
            )
            log(f"workflow: {size} uploads: {run.images_per_s:.2f} images/s")
            runs.append(run)
            bares.append(measure_bare())
    machine["load_average_after"] = os.getloadavg()
    return WorkflowBenchResult(machine, profiler, bares, runs)


@contextlib.contextmanager
def _work_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="scones-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def format_report(result: WorkflowBenchResult) -> str:
    m = result.machine
    bare_rates = ", ".join(f"{b.images_per_s:.1f}" for b in result.bare)
    lines = [
        f"machine: {m['usable_cpus']} usable CPUs, load average "
        f"{m['load_average_before'][0]:.1f} before / {m['load_average_after'][0]:.1f} after, "
        f"Python {m['python']}, onnxruntime {m['onnxruntime']}",
        f"profiler: {result.runs[0].profile.get('profiler', 'none') if result.runs else 'none'}",
        "",
        f"bare onnxruntime (predict_bytes, {result.bare[0].threads} threads, "
        f"{result.bare[0].images} images), before, between and after the runs: "
        f"{bare_rates} images/s; {result.bare_cpu_ms():.1f} ms CPU per image",
        "",
        "| uploads | upload s | drain s | images/s | bare images/s around it | x bare "
        "| CPU ms per image (all processes) | bare CPU / workflow CPU "
        "| peak running executions | peak RSS MB (all processes) | records |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for index, run in enumerate(result.runs):
        bare = result.bare_around(index)
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(run.statuses.items()))
        running = "all" if run.peak_running_executions is None else run.peak_running_executions
        lines.append(
            f"| {run.images} | {run.upload_s:.1f} | {run.wall_s:.1f} | {run.images_per_s:.2f} "
            f"| {bare:.1f} | {run.images_per_s / bare:.2f} | {run.cpu_ms_per_image:.0f} "
            f"| {result.bare_cpu_ms() / run.cpu_ms_per_image:.2f} | {running} "
            f"| {run.peak_rss_mb:.0f} | {statuses} |"
        )
    if len(result.runs) > 1:
        first, last = result.runs[0], result.runs[-1]
        first_x = first.images_per_s / result.bare_around(0)
        last_x = last.images_per_s / result.bare_around(len(result.runs) - 1)
        lines.append(
            f"\nat {last.images} / at {first.images} uploads: throughput "
            f"{last.images_per_s / first.images_per_s:.2f}, x bare {last_x / first_x:.2f}, "
            f"CPU per image {first.cpu_ms_per_image / last.cpu_ms_per_image:.2f} (inverse ratio)"
        )
    lines.append(
        "(on a shared machine throughput follows the load; CPU per image does not. "
        "bare CPU / workflow CPU is the throughput ratio to expect on an otherwise idle "
        "machine with these cores.)"
    )
    for run in result.runs:
        lines += ["", f"== {run.images} uploads: where the time went"]
        lines.append("CPU seconds and peak RSS by process:")
        for role, cpu in sorted(run.cpu_s_by_role.items(), key=lambda kv: -kv[1]):
            rss = run.peak_rss_by_role_mb.get(role, 0.0)
            lines.append(f"  {cpu:8.1f} s CPU  {rss:7.0f} MB  {role}")
        profile = run.profile
        if not profile:
            continue
        if profile.get("error"):
            lines.append(f"profiler error: {profile['error']}")
        lines.append(f"profile samples: {profile['samples']} (share of all samples)")
        lines.append("by activity:")
        lines += [f"  {row['share']:6.1%}  {row['name']}" for row in profile["by_hotspot"]]
        lines.append("functions with the most own time:")
        lines += [f"  {row['share']:6.1%}  {row['name']}" for row in profile["own_time"]]
    return "\n".join(lines)
