import csv

from sr_deploy.train.release import merge_log, training_hours

FIELDS = ["step", "elapsed_s", "loss_g", "val_psnr", "steps_per_s"]


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)


def _rows(first, last, every, rate):
    return [{"step": s, "elapsed_s": 0, "loss_g": 1.0 / s, "val_psnr": "", "steps_per_s": rate}
            for s in range(first, last + 1, every)]


def test_warm_started_run_continues_the_record(tmp_path):
    record, run = tmp_path / "record.csv", tmp_path / "run.csv"
    _write(record, _rows(100, 1000, 100, 2.0))  # the shipped model's history, annealed at 1000
    _write(run, _rows(900, 1400, 100, 1.0))  # warm start from step 800's weights
    merge_log(run, record)
    with open(record) as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(100, 801, 100)) + list(range(900, 1401, 100))
    last, hours = training_hours(record)
    # 800 steps at 2/s, then 600 at 1/s (the first run window counts from the record's step 800)
    assert last == 1400 and abs(hours - (800 / 2 + 600 / 1) / 3600) < 1e-9
    merge_log(run, record)  # releasing the same run again changes nothing
    with open(record) as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == steps


def test_fresh_run_replaces_the_record(tmp_path):
    record, run = tmp_path / "record.csv", tmp_path / "run.csv"
    _write(record, _rows(100, 1000, 100, 2.0))
    _write(run, _rows(50, 200, 50, 1.0))
    merge_log(run, record)
    with open(record) as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [50, 100, 150, 200]


def test_shipped_precision_reports_name_files_from_the_repository(tmp_path):
    import json

    from sr_deploy.train.release import repo_relative_report

    root = tmp_path / "repo"
    (root / "export").mkdir(parents=True)
    report = root / "export" / "m.int8.quality.json"
    elsewhere = tmp_path / "runs" / "m.onnx"
    report.write_text(json.dumps({"path": str(root / "export" / "m.int8.onnx"), "source": str(elsewhere),
                                  "passed": True, "delta_psnr_db": 0.05}))
    repo_relative_report(report, root)
    data = json.loads(report.read_text())
    assert data == {"path": "export/m.int8.onnx", "source": str(elsewhere), "passed": True, "delta_psnr_db": 0.05}


def test_card_config_holds_no_path_of_the_training_machine(tmp_path):
    from sr_deploy.train.release import portable_config

    root = tmp_path / "repo"
    (root / "sr_deploy" / "weights").mkdir(parents=True)
    config = {"out": str(tmp_path / "runs" / "c5"), "resume": str(tmp_path / "runs" / "c5" / "last.pt"),
              "init": str(root / "sr_deploy" / "weights" / "m.safetensors"), "vgg_weights": None,
              "data": [str(tmp_path / "shared" / "yang91"), "../shared/datasets/bsd200"], "lr": 0.001, "scale": 4}
    assert portable_config(config, root) == {
        "out": "runs/c5", "resume": "c5/last.pt", "init": "sr_deploy/weights/m.safetensors", "vgg_weights": None,
        "data": ["shared/yang91", "../shared/datasets/bsd200"], "lr": 0.001, "scale": 4}


def test_no_shipped_file_holds_a_path_of_the_release_machine():
    import json
    from pathlib import Path

    from sr_deploy.train.release import CONFIG_PATH_KEYS, REPO

    reports = [*(REPO / "export").glob("*.quality.json"), *(REPO / "sr_deploy" / "weights").glob("*.quality.json")]
    assert reports
    for report in reports:
        data = json.loads(report.read_text())
        name = report.name.split(".")[0]
        for key in ("path", "source"):
            assert not Path(data[key]).is_absolute(), (report.name, data[key])
            assert Path(data[key]).name.startswith(f"{name}."), (report.name, data[key])
        # the source is the released fp32 ONNX: written by the release tool into export/, not tracked (made
        # anywhere by `srdeploy export NAME`), so a fresh clone has it only once exported
        assert data["source"] == f"export/{name}.onnx", (report.name, data["source"])
        if data["precision"] == "int8":  # packaged; the fp16 variant is made on demand where it says
            assert (REPO / data["path"]).is_file(), (report.name, data["path"])
    cards = [p for d in ("export", "sr_deploy/weights") for p in (REPO / d).glob("*.json")
             if not p.name.endswith(".quality.json")]
    assert cards
    for card in cards:
        config = json.loads(card.read_text())["config"]
        for key in CONFIG_PATH_KEYS:
            for value in config.get(key) if isinstance(config.get(key), list) else [config.get(key)]:
                assert value is None or not Path(value).is_absolute(), (card, key, value)


def test_a_release_with_fp16_weights_describes_the_file_it_ships(tmp_path, monkeypatch):
    """The safetensors in float16 (half the bytes) and everything after made from them as stored: the ONNX,
    the card's scores and hashes; the default keeps float32."""
    import json

    import cv2
    import numpy as np
    import onnxruntime as ort
    import torch

    from sr_deploy.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
    from sr_deploy.train import release as rel
    from tests.conftest import pattern_image, tiny_model

    root = tmp_path / "repo"
    (root / "sr_deploy" / "weights").mkdir(parents=True)
    monkeypatch.setattr(rel, "REPO", root)
    run, val = tmp_path / "run", tmp_path / "val"
    run.mkdir(), val.mkdir()
    model = tiny_model(2)
    with torch.no_grad():  # weights that float16 cannot hold exactly
        for p in model.parameters():
            p.add_(torch.rand_like(p) * 1e-3 + 1e-4)
    save_checkpoint(run / "best.pt", model, extra={"step": 7, "recipe": "srresnet", "config": {}})
    _write(run / "log.csv", _rows(1, 7, 1, 1.0))
    for i in range(2):
        cv2.imwrite(str(val / f"v{i}.png"), pattern_image(24, 24, 3, seed=i))
    for fp16 in (False, True):
        card = rel.release(run, "m", val=val, calib=None, fp16_weights=fp16)
        weights = root / "sr_deploy" / "weights" / "m.safetensors"
        stored = read_checkpoint(weights)["state_dict"]
        float_dtypes = {v.dtype for v in stored.values() if v.is_floating_point()}
        assert float_dtypes == {torch.float16 if fp16 else torch.float32}, float_dtypes
        assert {v.dtype for k, v in stored.items() if k.endswith("num_batches_tracked")} == {torch.int64}
        assert card["weights_dtype"] == ("float16" if fp16 else "float32")
        assert json.loads((root / "sr_deploy" / "weights" / "m.json").read_text())["weights_sha256"] == \
            card["weights_sha256"]
        shipped, _ = load_checkpoint(weights)
        x = np.random.default_rng(0).random((1, 3, 10, 10), dtype=np.float32)
        sess = ort.InferenceSession(str(root / "export" / "m.onnx"), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            from_file = shipped(torch.from_numpy(x)).numpy()
            trained = model(torch.from_numpy(x)).numpy()
        onnx_out = sess.run(None, {"input": x})[0]
        assert np.abs(onnx_out - from_file).max() < 1e-5  # the ONNX is the shipped file's network
        assert (np.abs(from_file - trained).max() > 1e-6) == fp16  # rounded only when stored in float16
    assert weights.stat().st_size < 0.6 * (run / "best.pt").stat().st_size  # the float16 file: about half


def test_a_release_gates_its_variants_on_the_real_photographs_and_on_the_validation_set(tmp_path, monkeypatch):
    """Made against srdeploy's bundled photographs, then scored on val too; a variant that fails either stops
    the release before any variant or card is written."""
    import dataclasses

    import cv2
    import pytest

    from sr_deploy.errors import ModelError
    from sr_deploy.models.checkpoint import save_checkpoint
    from sr_deploy.precision import convert
    from sr_deploy.train import release as rel
    from tests.conftest import pattern_image, tiny_model

    root = tmp_path / "repo"
    (root / "sr_deploy" / "weights").mkdir(parents=True)
    monkeypatch.setattr(rel, "REPO", root)
    run, val, calib = tmp_path / "run", tmp_path / "val", tmp_path / "calib"
    for d in (run, val, calib):
        d.mkdir()
    save_checkpoint(run / "best.pt", tiny_model(2), extra={"step": 3, "recipe": "srresnet", "config": {}})
    _write(run / "log.csv", _rows(1, 3, 1, 1.0))
    for i in range(2):
        cv2.imwrite(str(val / f"v{i}.png"), pattern_image(40, 40, 3, seed=i))
    for i in range(6):
        cv2.imwrite(str(calib / f"c{i}.png"), pattern_image(112, 112, 3, seed=10 + i))
    card = rel.release(run, "m", val=val, calib=calib)
    for precision in ("fp16", "int8"):
        gate = card[f"{precision}_gate"]
        assert gate["gate_data"] == "srdeploy's bundled real photographs" and gate["passed"], gate
        assert gate["also_on"]["gate_data"] == str(val) and gate["also_on"]["passed"], gate
        assert gate["also_on"]["fidelity_db"] >= convert.MIN_FIDELITY_DB[precision]
    assert (root / "sr_deploy" / "weights" / "m.int8.onnx").is_file()

    for name in ("m.json", "m.int8.onnx", "m.int8.quality.json"):
        (root / "sr_deploy" / "weights" / name).unlink()
    real_gate = convert.quality_gate

    def strays_on_val(fp32, candidate, pairs, scale):  # the photographs pass (make_precision_onnx's own gate)
        g = real_gate(fp32, candidate, pairs, scale)
        return dataclasses.replace(g, fidelity_db=30.0) if "int8" in str(candidate) else g

    monkeypatch.setattr(convert, "quality_gate", strays_on_val)
    with pytest.raises(ModelError, match=f"m: its int8 variant fails the quality gate on {val}; no variant or card"):
        rel.release(run, "m", val=val, calib=calib)
    assert sorted(p.name for p in (root / "sr_deploy" / "weights").iterdir()) == ["m.safetensors"]
