"""``siam score`` over several processes: shards, the streamed input list, resume with another
process count, killed ranks, torchrun / --devices end to end, and the 10-million-line list's memory."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from PIL import Image

import siam
from siam.cli import main
from siam.scoring import RankInfo, rank_from_env, read_manifest, read_scores, score_images
from siam.scoring import batch, inputs
from siam.scoring.inputs import InputList, list_inputs, part_rows, rank_parts, write_input_list
from tests.scoring.conftest import make_tiny_siam

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
AWKWARD = (1, 2, 3, 5, 7, 31, 97, 100, 257, 1001)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env["OMP_NUM_THREADS"] = "1"
    return env


# --- shards and the stored list -----------------------------------------------------------------

@pytest.mark.parametrize("n", AWKWARD)
def test_shards_are_disjoint_and_cover_every_unfinished_part_for_1_to_5_ranks(n: int) -> None:
    rng = random.Random(n)
    for size in {1, 3, 4, 32, inputs.default_part_size(n)}:
        num_parts = -(-n // size)
        for done in (set(), set(rng.sample(range(num_parts), num_parts // 2))):
            todo = [i for p in range(num_parts) if p not in done for i in part_rows(p, size, n)]
            for world in range(1, 6):
                shards = [rank_parts(num_parts, r, world, done) for r in range(world)]
                rows = [i for r in range(world) for p in shards[r] for i in part_rows(p, size, n)]
                assert sorted(rows) == todo  # each unfinished input exactly once, nothing finished again
                assert all(p % world == r for r in range(world) for p in shards[r])  # owner = part % world
                assert rank_parts(num_parts, 0, world, done) == shards[0]  # deterministic


@pytest.mark.parametrize("n", (1, 7, 100, 257))
def test_each_rank_reads_its_shard_of_the_stored_list_in_input_order(n: int, tmp_path: Path) -> None:
    names = [f"d{i % 3}/ä ö {i}.jpg" for i in range(n)]  # non-ASCII, spaces, folders
    (tmp_path / "list.txt").write_text("# header\n" + "\n".join(f"  {s}  " for s in names) + "\n\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    info = write_input_list(tmp_path / "list.txt", out)
    want = [str(tmp_path / s) for s in names]
    assert (info.num_inputs, info.repeats) == (n, 0)
    stored = InputList(out)
    assert len(stored) == n and stored.paths(0, n) == want == list_inputs(tmp_path / "list.txt")
    size = 3
    num_parts = -(-n // size)
    for world in range(1, 6):
        got: dict[int, str] = {}
        for r in range(world):
            parts = rank_parts(num_parts, r, world)
            dataset = batch._ImageDataset(stored, parts, size, transform=None, max_megapixels=1.0)
            items = [dataset[i] for i in range(len(dataset))]  # missing files: (index, None, message)
            assert [i for i, _, _ in items] == [i for p in parts for i in part_rows(p, size, n)]
            for i, image, message in items:
                assert image is None and message.startswith(want[i] + ": ")
                got[i] = stored.path(i)
        assert [got[i] for i in range(n)] == want


def test_repeats_are_dropped_exactly_even_when_every_hash_collides(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    lines = ["b.jpg", "a.jpg", "b.jpg", "/abs/c.jpg", "a.jpg", "d.jpg", "/abs/c.jpg", "b.jpg"]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    want = [str(tmp_path / "b.jpg"), str(tmp_path / "a.jpg"), "/abs/c.jpg", str(tmp_path / "d.jpg")]
    for collide in (False, True):
        if collide:  # every path gets the same hash: only the byte comparison can tell them apart
            monkeypatch.setattr(inputs, "hash", lambda data: 7, raising=False)
        out = tmp_path / f"out{collide}"
        out.mkdir()
        info = write_input_list(tmp_path / "list.txt", out)
        assert (info.num_inputs, info.listed, info.repeats) == (4, 8, 4)
        assert InputList(out).paths(0, 4) == want
        assert np.fromfile(out / "_inputs.idx", "<u8").tolist() == [0, *np.cumsum([len(w) + 1 for w in want])]
        assert sorted(p.name for p in out.iterdir()) == ["_inputs.idx", "_inputs.txt"]  # no temporary left


def test_directory_walk_streams_in_sorted_relative_path_order(tmp_path: Path) -> None:
    for rel in ["a.jpg", "a/b.png", "a.b/c.JPG", "a0.webp", "z/y/x.jpeg", "z/notes.txt", "A.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = list(inputs.iter_inputs(tmp_path))
    rel = [Path(p).relative_to(tmp_path).as_posix() for p in found]
    assert rel == sorted(rel) == ["A.jpg", "a.b/c.JPG", "a.jpg", "a/b.png", "a0.webp", "z/y/x.jpeg"]


def test_rank_comes_from_torchrun_or_srun_variables() -> None:
    assert rank_from_env({}) == RankInfo(0, 1, 0, 1)
    assert rank_from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}) == \
        RankInfo(3, 8, 1, 2)
    slurm = {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "6", "SLURM_LOCALID": "2", "SLURM_STEP_TASKS_PER_NODE": "3(x2)"}
    assert rank_from_env(slurm) == RankInfo(5, 6, 2, 3)
    # An sbatch script (no srun step) is one process, not rank 0 of the allocation.
    assert rank_from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}) == RankInfo()
    with pytest.raises(siam.errors.SiamError, match="bad process rank 4 of world size 4"):
        rank_from_env({"RANK": "4", "WORLD_SIZE": "4"})


# --- jobs in this process, rank by rank ------------------------------------------------------------

FIRST_ID = 10000


def _tiny_images(root: Path, n: int, corrupt: tuple[int, ...] = (), side: int = 24) -> list[str]:
    rng = np.random.default_rng(n)
    paths = []
    for i in range(n):
        p = root / f"s{i % 3}" / f"{FIRST_ID + i}.jpg"  # Geograph-style numeric IDs
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(p)
        if i in corrupt:
            p.write_bytes(p.read_bytes()[:40])
        paths.append(str(p))
    return sorted(paths, key=lambda s: Path(s).relative_to(root).as_posix())


@pytest.fixture(scope="module")
def small_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    base = tmp_path_factory.mktemp("small")
    paths = _tiny_images(base / "imgs", 23, corrupt=(4, 17))
    ckpt = siam.save_checkpoint(make_tiny_siam(crop=32), base / "c.safetensors")
    return base / "imgs", ckpt, paths


def _run(ckpt: Path, src: Path, out: Path, rank: RankInfo, **kw) -> batch.ScoreSummary:
    return score_images(ckpt, src, out, rank=rank, workers=0, batch_size=3, part_size=4, precision="fp32",
                        progress=False, **kw)


def test_resume_with_a_different_number_of_processes_is_exact(small_job, tmp_path: Path) -> None:
    src, ckpt, paths = small_job
    ref = tmp_path / "ref"
    _run(ckpt, src, ref, RankInfo())
    want = read_scores(ref).to_pydict()
    out = tmp_path / "out"
    first = _run(ckpt, src, out, RankInfo(0, 3))  # ranks 0 and 2 of 3 finish; rank 1 never ran (killed)
    third = _run(ckpt, src, out, RankInfo(2, 3))
    assert (first.parts_written, third.parts_written, third.parts) == (2, 2, 6)
    assert not third.complete and not read_manifest(out)["complete"]
    assert set(ds.dataset(out).to_table().column("path").to_pylist()) == \
        {paths[i] for p in (0, 3, 2, 5) for i in part_rows(p, 4, len(paths))}
    again = _run(ckpt, src, out, RankInfo(0, 2), resume=True)  # parts 1 and 4 left; 2 ranks now
    assert again.parts_written == 1 and not again.complete  # part 4 (4 % 2 == 0)
    last = _run(ckpt, src, out, RankInfo(1, 2), resume=True)  # part 1
    assert last.parts_written == 1
    assert last.complete and last.job_ok == len(paths) - 2 and last.job_errors == 2
    got = read_scores(out).to_pydict()
    assert got["path"] == want["path"] == paths  # every input once, in input order
    assert got["status"] == want["status"]
    np.testing.assert_allclose(np.array(got["score"], float), np.array(want["score"], float), rtol=1e-5)


def test_ranks_wait_for_rank_0_and_refuse_a_different_job(small_job, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    src, ckpt, _ = small_job
    monkeypatch.setattr(batch, "_WAIT_FOR_JOB_S", 0.3)
    with pytest.raises(batch.ScoringError, match="rank 1: rank 0 did not write"):
        _run(ckpt, src, tmp_path / "out", RankInfo(1, 2))
    _run(ckpt, src, tmp_path / "out", RankInfo(0, 2))
    other = siam.save_checkpoint(make_tiny_siam(seed=3, crop=32), tmp_path / "other.safetensors")
    with pytest.raises(batch.ScoringError, match="the checkpoint file differs"):
        _run(other, src, tmp_path / "out", RankInfo(1, 2))
    with pytest.raises(batch.ScoringError, match="--part-size differs"):
        score_images(ckpt, src, tmp_path / "out", rank=RankInfo(1, 2), workers=0, part_size=5, progress=False)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "manifest.json").write_text('{"format": "siam-scores", "version": 1}')
    with pytest.raises(batch.ScoringError, match="written by an older siam"):
        read_scores(tmp_path / "old")
    fewer = tmp_path / "fewer.txt"
    fewer.write_text("\n".join(sorted(str(p) for p in src.rglob("*.jpg"))[:-1]) + "\n")
    with pytest.raises(batch.ScoringError, match="the inputs changed since the run started"):
        _run(ckpt, fewer, tmp_path / "out", RankInfo(0, 2), resume=True)


KILL_WHILE_WRITING = """
import os, signal, sys
import pyarrow.parquet as pq
real, calls = pq.write_table, []
def dying(table, where, **kw):
    calls.append(where)
    if len(calls) == 2:  # the second part: write half of it, then die
        with open(where, "wb") as fh:
            fh.write(b"PAR1 half a part")
        os.kill(os.getpid(), signal.SIGKILL)
    return real(table, where, **kw)
pq.write_table = dying
from siam.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_rank_killed_while_writing_a_part_is_finished_by_resume(small_job, tmp_path: Path) -> None:
    src, ckpt, paths = small_job
    out = tmp_path / "out"
    _run(ckpt, src, out, RankInfo(0, 2))  # rank 0 first, so the job exists
    args = ["score", str(src), "--checkpoint", str(ckpt), "--out", str(out), "--workers", "0", "--batch-size", "3",
            "--part-size", "4", "--precision", "fp32", "--no-progress"]
    env = dict(_env(), RANK="1", WORLD_SIZE="2")
    done = subprocess.run([sys.executable, "-c", KILL_WHILE_WRITING, *args], env=env, capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-800:]
    half = list(out.glob(".part-*.tmp"))
    assert len(half) == 1 and half[0].read_bytes() == b"PAR1 half a part"
    manifest = read_manifest(out)
    assert sorted(map(int, manifest["parts"])) == [0, 1, 2, 4]  # rank 1 committed part 1, died writing part 3
    assert ds.dataset(out).count_rows() == 16  # the half-written file is not read
    summary = _run(ckpt, src, out, RankInfo(), resume=True)  # one process finishes parts 3 and 5
    assert summary.parts_written == 2 and summary.complete
    table = read_scores(out)
    assert table.column("path").to_pylist() == paths
    assert not list(out.glob(".*.tmp"))


# --- several processes end to end: torchrun and --devices --------------------------------------

N_IMAGES = 600
CORRUPT = (5, 77, 301, 599)


@pytest.fixture(scope="module")
def big_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    base = tmp_path_factory.mktemp("e2e")
    paths = _tiny_images(base / "imgs", N_IMAGES, corrupt=CORRUPT)
    ckpt = siam.save_checkpoint(make_tiny_siam(crop=48), base / "c.safetensors")
    return base / "imgs", ckpt, paths


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc): torchrun starts each rank in a session of its own,
    so killing torchrun's process group would leave the ranks running."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_when_a_part_lands(proc: subprocess.Popen, out: Path) -> int:
    """kill -9 the launcher and every process below it once a part is committed; the parts done."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if any(out.glob("part-*.parquet")):
            break
        time.sleep(0.005)
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate(timeout=60)
    done = len(read_manifest(out)["parts"])
    time.sleep(0.5)
    assert len(read_manifest(out)["parts"]) == done, "a rank outlived the kill"
    return done


def _index(path: str) -> int:
    return int(Path(path).stem) - FIRST_ID


def _check_exact(out: Path, paths: list[str]) -> None:
    table = ds.dataset(out).to_table()  # the one-liner
    got = table.column("path").to_pylist()
    assert len(got) == len(set(got)) == N_IMAGES and got == paths
    status = dict(zip(got, table.column("status").to_pylist()))
    assert {p for p, s in status.items() if s == "error"} == {p for p in paths if _index(p) in CORRUPT}
    assert read_manifest(out)["complete"]


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to python")
def test_torchrun_2_processes_killed_then_resumed_by_one(big_job, tmp_path: Path) -> None:
    src, ckpt, paths = big_job
    out = tmp_path / "out"
    cmd = [str(TORCHRUN), "--nproc-per-node", "2", "-m", "siam.cli", "score", str(src), "--checkpoint", str(ckpt),
           "--out", str(out), "--part-size", "8", "--batch-size", "4", "--workers", "0", "--no-progress"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    done = _kill_when_a_part_lands(proc, out)
    assert proc.returncode == -signal.SIGKILL
    assert 1 <= done < N_IMAGES // 8 + 1, f"{done} parts done when killed: the run ended first"
    assert main(["score", str(src), "--checkpoint", str(ckpt), "--out", str(out), "--resume", "--workers", "0",
                 "--no-progress"]) == 0
    _check_exact(out, paths)


def test_one_process_killed_then_resumed_by_devices_2(big_job, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    src, ckpt, paths = big_job
    out = tmp_path / "out"
    base = [sys.executable, "-m", "siam.cli", "score", str(src), "--checkpoint", str(ckpt), "--out", str(out),
            "--workers", "0", "--no-progress"]
    proc = subprocess.Popen([*base, "--part-size", "8", "--batch-size", "4"], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    done = _kill_when_a_part_lands(proc, out)
    assert 1 <= done < N_IMAGES // 8 + 1
    finished = subprocess.run([*base, "--resume", "--devices", "2"], env=_env(), capture_output=True,
                              text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-800:]
    assert "rank 0 of 2: scored" in finished.stdout and "rank 1 of 2: scored" in finished.stdout
    assert "(complete)" in finished.stdout
    _check_exact(out, paths)
    # siam map reads the multi-rank folder as it is.
    votes = tmp_path / "votes.tsv"
    ok = [p for p in paths if _index(p) not in CORRUPT]
    votes.write_text("ID\tLat\tLon\tAverage\tVariance\tVotes\tGeograph URI\n" + "".join(
        f"{int(Path(p).stem)}\t{50 + k * 0.01}\t{-3 + k * 0.01}\t4.0\t1.0\t3,4\thttp://x/{k}\n" for k, p in enumerate(ok)))
    capsys.readouterr()
    assert main(["map", "--scores", str(out), "--votes", str(votes), "--out", str(tmp_path / "m.html")]) == 0
    assert f"{len(ok)} places" in capsys.readouterr().out


def test_devices_is_refused_under_torchrun(small_job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    src, ckpt, _ = small_job
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["score", str(src), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--devices", "2"]) == 2
    assert "cannot be used under torchrun or srun" in capsys.readouterr().err


# --- memory for a 10-million-line list ------------------------------------------------------------

MEMORY_PROBE = """
import json, sys, time
from pathlib import Path
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024  # MiB
from siam.scoring import batch
from siam.scoring.inputs import InputList, default_part_size, part_rows, rank_parts, write_input_list
listing, out, what = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # resets the peak (VmHWM) to the current RSS, after the imports
base, t = status("VmRSS"), time.perf_counter()
if what == "create":  # rank 0 streams the source into the job's list
    result = {"rows": write_input_list(listing, out).num_inputs}
else:  # what rank r of w holds: the stored list, its parts, one part's paths at a time
    r, w = map(int, what.split("/"))
    stored = InputList(out)
    size = default_part_size(len(stored))
    num_parts = -(-len(stored) // size)
    mine = rank_parts(num_parts, r, w, set(batch._committed(out, num_parts)))
    dataset = batch._ImageDataset(stored, mine, size, None, 1.0)
    rows = 0
    for p in mine:
        span = part_rows(p, size, len(stored))
        rows += len(stored.paths(span.start, span.stop))
    assert rows == len(dataset)
    result = {"rows": rows, "last": stored.path(len(stored) - 1)}
result.update(mib=status("VmHWM") - base, peak_mib=status("VmHWM"), s=time.perf_counter() - t)
print(json.dumps(result))
"""

TEN_MILLION = 10_000_000


def _write_big_list(path: Path, n: int) -> int:
    block = 1_000_000
    with open(path, "w") as fh:
        for start in range(0, n, block):
            fh.write("".join(f"/g/{i // 1000:05d}/{i:08d}.jpg\n" for i in range(start, min(n, start + block))))
    return path.stat().st_size


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_10_million_line_list_is_streamed_with_bounded_memory_per_rank(tmp_path: Path) -> None:
    size = _write_big_list(tmp_path / "list.txt", TEN_MILLION)
    (tmp_path / "out").mkdir()
    result = {}
    for what in ("create", "0/2", "1/2"):
        done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "list.txt"), str(tmp_path / "out"),
                               what], env=_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-800:]
        result[what] = json.loads(done.stdout)
    print(json.dumps(result), f"list {size / 2**20:.0f} MiB")
    assert result["create"]["rows"] == TEN_MILLION
    assert result["0/2"]["rows"] + result["1/2"]["rows"] == TEN_MILLION
    assert result["1/2"]["last"] == f"/g/{(TEN_MILLION - 1) // 1000:05d}/{TEN_MILLION - 1:08d}.jpg"
    # Rank 0 writes the list: 8 bytes a line of hashes (76 MiB) plus buffers; the list itself is
    # 210 MiB on disk; list_inputs (a Python list and a set) peaked at 1,124 MiB on a similar list.
    assert result["create"]["mib"] < 160
    # A rank reading its shard holds one part's paths at a time (and maps nothing).
    assert result["0/2"]["mib"] < 16 and result["1/2"]["mib"] < 16
