"""Scale-out on Ray Data (engine/ray_data.py) on a local Ray cluster of 2 CPUs:
``compress --ray`` writes the local CLI's bytes, reports failed items per item and
resumes; the dataset API gives Codec.compress's bytes.  Needs the [ray] extra (CI's
slow step installs it)."""
import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")

import engine  # noqa: E402
from engine import ray_data  # noqa: E402
from engine.__main__ import main  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


def _codec(root, **kw):
    return engine.Codec(model="tiny", root=root, backend="torch", kernels="torch", **kw)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(21)
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(d / "a.png")
    Image.fromarray(rng.integers(0, 256, (24, 33, 3), dtype=np.uint8)).save(d / "b.png")
    Image.fromarray(rng.integers(0, 256, (30, 20), dtype=np.uint8)).save(d / "c.png")      # grayscale
    (d / "broken.png").write_bytes(b"not a png")
    return d


def _cli(capsys, inputs, out, root, *extra):
    common = ["--model", "tiny", "--model-dir", str(root), "--backend", "torch", "--kernels", "torch",
              "--batch", "2", "--quiet"]
    rc = main(["compress", *map(str, inputs), "-o", str(out), *common, *extra])
    return rc, capsys.readouterr().err


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def test_cli_ray_writes_the_local_clis_bytes_and_resumes(cluster, tiny_root, images, tmp_path, capsys):
    rc, err = _cli(capsys, [images], tmp_path / "local", tiny_root)
    assert rc == 2 and "broken.png" in err
    local = _files(tmp_path / "local")
    assert sorted(local) == ["a.hnlc", "b.hnlc", "c.hnlc"]
    # an interrupted run: two of the inputs done, then the whole folder again
    rc, err = _cli(capsys, [images / "a.png", images / "b.png"], tmp_path / "ray", tiny_root, "--ray")
    assert rc == 0, err
    rc, err = _cli(capsys, [images], tmp_path / "ray", tiny_root, "--ray")
    assert rc == 2 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "broken.png" in x]
    assert line.startswith(f"error: {images / 'broken.png'}: cannot read image")
    assert _files(tmp_path / "ray") == local
    assert main(["compress", str(images), "-o", str(tmp_path / "ray"), "--model", "tiny", "--model-dir",
                 str(tiny_root), "--backend", "torch", "--ray"]) == 2
    assert "0 compressed, 3 skipped" in capsys.readouterr().err       # everything done: all skipped


def test_cli_ray_target_size_matches_local(cluster, tiny_root, images, tmp_path, capsys):
    limit = str(len(_codec(tiny_root, quality=2).compress(images / "a.png")))
    good = [images / "a.png", images / "b.png", images / "c.png"]
    assert _cli(capsys, good, tmp_path / "local", tiny_root, "--max-bytes", limit)[0] == 0
    assert _cli(capsys, good, tmp_path / "ray", tiny_root, "--max-bytes", limit, "--ray")[0] == 0
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")


def test_dataset_api_gives_codec_bytes(cluster, tiny_root, images):
    codec = _codec(tiny_root, quality=2)
    paths = [str(images / n) for n in ("a.png", "b.png", "broken.png")]
    ds = ray.data.from_items([{"path": p} for p in paths])
    out = ray_data.compress_dataset(ds, batch_size=2, model="tiny", root=str(tiny_root), quality=2,
                                    backend="torch", kernels="torch")
    rows = {r["path"]: r for r in out.take_all()}
    assert set(rows) == set(paths)
    for p in paths[:2]:
        assert rows[p]["error"] == "" and bytes(rows[p]["hnlc"]) == codec.compress(p)
    assert "cannot read image" in rows[paths[2]]["error"] and len(rows[paths[2]]["hnlc"]) == 0
    arrays = [np.asarray(Image.open(images / "a.png")), np.asarray(Image.open(images / "a.png"))[::-1].copy()]
    ds = ray.data.from_items([{"id": i, "image": a} for i, a in enumerate(arrays)])
    out = ds.map_batches(ray_data.Compress, batch_size=2, batch_format="numpy",
                         fn_constructor_kwargs=dict(column="image", model="tiny", root=str(tiny_root), quality=2,
                                                    backend="torch", kernels="torch"),
                         compute=ray.data.ActorPoolStrategy(size=1))
    rows = sorted(out.take_all(), key=lambda r: r["id"])
    assert [bytes(r["hnlc"]) for r in rows] == [codec.compress(a) for a in arrays]
    assert "image" not in rows[0]


def test_pool_settings_give_a_gpu_per_actor_when_there_are_gpus(monkeypatch):
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 2.0})
    s = ray_data.pool_settings()
    assert s["num_gpus"] == 1 and s["compute"].max_size == s["compute"].min_size == 2
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 3.0})
    s = ray_data.pool_settings()
    assert "num_gpus" not in s and s["num_cpus"] == 1 and s["compute"].max_size == 3


def test_ray_settings_are_checked_before_ray_starts(tiny_root):
    with pytest.raises(ValueError, match="qualities"):
        ray_data.RayCompressor(None, model="tiny", root=str(tiny_root), quality=9)
    with pytest.raises(ValueError, match="effort"):
        ray_data.RayCompressor(None, model="tiny", root=str(tiny_root), effort=12)
