"""End-to-end training on tiny images: run files, resume, evaluate, load_run, and the user errors."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the training stack (torch) is not installed")

from screen_support import run_cli  # noqa: E402

from osteopano import cli  # noqa: E402
from osteopano.model.config import RunConfig  # noqa: E402
from osteopano.errors import DataError, ModelError  # noqa: E402
from osteopano.io.images import write_png16  # noqa: E402
from osteopano.prepare.intensity import Preprocess  # noqa: E402
from osteopano.model.run import load_run  # noqa: E402
from osteopano.train.loop import train_run  # noqa: E402

pytestmark = pytest.mark.slow
RUN_FILES = ("model.safetensors", "config.json", "splits.csv", "history.csv", "curves.png", "checkpoint.pt",
             "metrics.json", "confusion.png", "roc.png", "calibration.png")
TINY = ["--weights", "none", "--epochs", "2", "--batch-size", "8", "--image-size", "48", "--precision", "fp32"]


def make_set(root: Path, n: int, seed: int, *, labels: tuple[str, ...] = ("normal", "osteoporosis")) -> Path:
    """n small 16-bit images: a bright horizontal band, thin for the positive class, thick otherwise."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    rows = []
    for i in range(n):
        k = i % len(labels)
        img = rng.normal(0.3, 0.05, (40, 80))
        img[25:25 + (3 if k else 9), 8:72] += 0.5
        write_png16(root / f"img{i:03d}.png", (np.clip(img, 0, 1) * 65535).astype(np.uint16))
        rows.append({"path": f"img{i:03d}.png", "patient_id": f"p{i // 2}", "age": 55 + 15 * k + int(rng.integers(-8, 8)),
                     "label": labels[k], "klemetti": ("C1", "C2", "C3")[i % 3] if k else "C1"})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("sets")
    return {"train": make_set(base / "train", 40, 0), "ext": make_set(base / "ext", 16, 1)}


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """One CLI training run shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("runs") / "r1"
    mp = pytest.MonkeyPatch()
    mp.setattr(sys, "argv", ["osteopano", "train", str(data["train"]), "--out", str(out), *TINY,
                             "--label-column", "klemetti", "--label-map", "C1=normal,C2=osteoporosis,C3=osteoporosis"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    mp.undo()
    assert exit_info.value.code in (0, None)
    return out


def test_train_writes_every_run_file(run: Path) -> None:
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    with open(run / "history.csv") as fh:
        history = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert set(history[0]) == {"epoch", "seconds", "loss", "accuracy", "val_loss", "val_accuracy"}
    with open(run / "splits.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40 and {r["split"] for r in rows} == {"train", "val", "test"}
    patients = {}
    for r in rows:
        patients.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in patients.values())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n"] == sum(r["split"] == "test" for r in rows)
    assert metrics["auc"]["ci"] is not None and "age_baseline" in metrics
    cfg = RunConfig.load(run / "config.json")
    assert cfg.label_map["C3"] == "osteoporosis" and cfg.spec.classes == ("normal", "osteoporosis")
    assert cfg.spec.threshold.value == 0.5 and cfg.versions["torch"] and cfg.threads >= 1


def test_load_run_predicts_what_the_metrics_counted(run: Path) -> None:
    from osteopano.screen.engines import TorchEngine
    from osteopano.screen.screener import Screener

    loaded = load_run(run)
    assert not loaded.model.training and loaded.spec == loaded.config.spec
    with open(run / "splits.csv") as fh:
        test_paths = [r["path"] for r in csv.DictReader(fh) if r["split"] == "test"]
    # the toy 40 x 80 band images are no radiographs: the gate is off, as for research use
    results = Screener(TorchEngine(loaded), gate=False).predict_batch(test_paths, batch_size=3)
    prob = np.array([r.probability for r in results])
    assert prob.shape == (len(test_paths),) and ((prob >= 0) & (prob <= 1)).all()
    counts = json.loads((run / "metrics.json").read_text())["counts"]
    assert int((prob >= loaded.spec.threshold.value).sum()) == counts["tp"] + counts["fp"]


def test_evaluate_on_another_set(run: Path, data, monkeypatch, capsys, tmp_path) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "evaluate", str(run), str(data["ext"]), "--out", str(tmp_path / "e"))
    assert code == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["n"] == 16 and metrics["auc"]["value"] is not None and metrics["skipped_files"] == []
    for name in ("confusion.png", "roc.png", "calibration.png"):
        assert (tmp_path / "e" / name).is_file()
    # the run learnt Klemetti classes; the external truth is the data's `label` column unless told otherwise
    with open(data["ext"]) as fh:
        rows = list(csv.DictReader(fh))
    assert metrics["label_column"] == "label"
    assert metrics["n_positive"] == sum(r["label"] == "osteoporosis" for r in rows)
    code, _, _ = run_cli(monkeypatch, capsys, "evaluate", str(run), str(data["ext"]), "--out", str(tmp_path / "k"),
                         "--label-column", "klemetti")
    assert code == 0
    klemetti = json.loads((tmp_path / "k" / "metrics.json").read_text())
    assert klemetti["n_positive"] == sum(r["klemetti"] in ("C2", "C3") for r in rows)  # the run's map applied


def test_evaluate_lists_and_skips_unreadable_files(run: Path, tmp_path) -> None:
    from osteopano.train.evaluate import evaluate_run

    manifest = make_set(tmp_path / "bad", 8, 2)
    (tmp_path / "bad" / "img003.png").write_bytes(b"not a png")
    metrics = evaluate_run(run, manifest, tmp_path / "e", label_column="label", label_map={})
    assert metrics["n"] == 7 and len(metrics["skipped_files"]) == 1 and "img003.png" in metrics["skipped_files"][0]


def test_interrupted_run_resumes_to_the_same_history(data, monkeypatch, capsys, tmp_path) -> None:
    def stop(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    cfg = RunConfig(data=str(data["train"]), weights="none", epochs=2, batch_size=8, image_size=48,
                    preprocess=Preprocess(size=48).to_dict(), precision="fp32", seed=3)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "a", on_epoch_end=stop)
    assert (tmp_path / "a" / "checkpoint.pt").is_file() and not (tmp_path / "a" / "model.safetensors").exists()
    with pytest.raises(ModelError, match="not a complete run"):
        load_run(tmp_path / "a")
    code, _, _ = run_cli(monkeypatch, capsys, "train", "--resume", str(tmp_path / "a"))
    assert code == 0
    resumed = (tmp_path / "a" / "history.csv").read_text().splitlines()
    assert len(resumed) == 3  # header + 2 epochs
    # an uninterrupted run with the same seed gives the same numbers (seconds aside)
    train_run(RunConfig.from_dict(cfg.to_dict()), tmp_path / "b")
    straight = (tmp_path / "b" / "history.csv").read_text().splitlines()

    def numbers(lines):
        return [[float(v) for i, v in enumerate(line.split(",")) if i != 1] for line in lines[1:]]

    assert np.allclose(numbers(resumed), numbers(straight), rtol=1e-5)


def test_same_seed_same_machine_gives_identical_results(data, tmp_path) -> None:
    """Two 2-epoch trainings of the same data with the same seed: identical losses and metrics.json."""
    def train(out: Path) -> tuple[list[list[str]], dict]:
        cfg = RunConfig(data=str(data["train"]), weights="none", epochs=2, batch_size=8, image_size=48,
                        preprocess=Preprocess(size=48).to_dict(), precision="fp32", seed=5)
        train_run(cfg, out)
        history = [line.split(",") for line in (out / "history.csv").read_text().splitlines()]
        return [row[:1] + row[2:] for row in history], json.loads((out / "metrics.json").read_text())

    first, second = train(tmp_path / "a"), train(tmp_path / "b")
    assert first[0] == second[0]  # every loss and accuracy, bit for bit (seconds aside)
    assert first[1] == second[1]
    cfg = RunConfig.load(tmp_path / "a" / "config.json")
    assert cfg.threads >= 1  # the thread count the numbers depend on is recorded


@pytest.mark.parametrize("case", ["absent_class", "single_class", "empty_folder", "no_labels"])
def test_user_errors_are_one_line_exit_2(case, data, monkeypatch, capsys, tmp_path) -> None:
    args = ["train", "--out", str(tmp_path / "r"), *TINY]
    if case == "absent_class":
        args += [str(data["train"]), "--label-column", "klemetti", "--label-map", "C1=normal,C4=osteoporosis"]
        expect = "C4"
    elif case == "single_class":
        args += [str(make_set(tmp_path / "one", 4, 0, labels=("normal",)))]
        expect = "only one class"
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        args += [str(tmp_path / "empty")]
        expect = "no images"
    else:
        args += [str(data["train"]), "--label-column", "tscore"]
        expect = "tscore"
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_unlabelled_samples_are_dropped_and_counted(tmp_path) -> None:
    from osteopano.data.dataset import discover
    from osteopano.data.labels import label_samples

    manifest = make_set(tmp_path / "s", 12, 0)
    text = manifest.read_text().splitlines()
    text[1] = text[1].replace("normal", "")  # first sample loses its label
    manifest.write_text("\n".join(text) + "\n")
    lab = label_samples(discover(manifest), "label", {}, "osteoporosis")
    assert lab.dropped == 1 and len(lab.samples) == 11 and lab.classes == ["normal", "osteoporosis"]
    with pytest.raises(DataError, match="positive class"):
        label_samples(discover(manifest), "label", {}, "sick")


def test_wide_depthwise_convolutions_train_in_fp32_under_bf16_and_nothing_else_changes() -> None:
    from osteopano.model.networks import create_model
    from osteopano.train.tensors import fp32_wide_depthwise

    model = create_model("efficientnet_lite0", weights="none").eval()
    keys = list(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    assert fp32_wide_depthwise(model, "fp32") == 0
    wide = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.kernel_size[0] >= 5]
    assert fp32_wide_depthwise(model, "bf16") == len(wide) > 0
    assert fp32_wide_depthwise(model, "bf16") == 0  # once only
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        assert torch.equal(model(x), before)  # in fp32 the forward is the same function
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, name=name: seen.__setitem__(name, o.dtype))
             for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    for h in hooks:
        h.remove()
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            wide_dw = m.groups > 1 and m.kernel_size[0] >= 5
            assert seen[name] == (torch.float32 if wide_dw else torch.bfloat16), name
