"""x8 self-ensemble: each transform is undone exactly, and the passes are averaged."""

import numpy as np

from sr_deploy.descriptor import ModelDescriptor
from sr_deploy.runtime.base import Runner
from sr_deploy.runtime.ensemble import EnsembleRunner


class Nearest(Runner):
    """x2 nearest neighbour (commutes with every flip and rotation), optionally marking output pixel (0, 1)."""

    backend = "test"

    def __init__(self, mark: bool = False):
        super().__init__(ModelDescriptor(name="n", scale=2))
        self.mark, self.calls = mark, 0

    def _activate(self):
        pass

    def _infer(self, batch):
        self.calls += 1
        y = batch.repeat(2, axis=2).repeat(2, axis=3).copy()
        if self.mark:
            y[:, :, 0, 1] = 1.0
        return y


def test_every_transform_is_undone():
    x = np.random.default_rng(0).random((2, 3, 5, 7), dtype=np.float32)  # not square, no symmetry
    inner = Nearest()
    with EnsembleRunner(inner) as r:
        y = r.infer(x)
        u8 = r.infer_u8(np.rint(x.transpose(0, 2, 3, 1) * 255).astype(np.uint8))
    assert inner.calls == 16
    np.testing.assert_allclose(y, x.repeat(2, axis=2).repeat(2, axis=3), atol=1e-6)
    assert u8.shape == (2, 10, 14, 3)


def test_passes_are_averaged():
    x = np.zeros((1, 1, 4, 6), np.float32)
    with EnsembleRunner(Nearest(mark=True)) as r:
        y = r.infer(np.repeat(x, 3, axis=1))[0, 0]
    # the marked pixel of each pass lands on one of the 8 places next to a corner, 1/8 each
    expect = np.zeros((8, 12), np.float32)
    for i, j in [(0, 1), (1, 0), (0, 10), (1, 11), (7, 1), (6, 0), (7, 10), (6, 11)]:
        expect[i, j] = 1 / 8
    np.testing.assert_allclose(y, expect, atol=1e-6)


def test_the_uint8_mean_of_the_passes_is_rounded_not_truncated():
    """Seven passes return 10 and one 15: the mean 10.625 is 11 in bytes (truncation would give 10)."""

    class Steps(Runner):
        backend = "test"

        def __init__(self):
            super().__init__(ModelDescriptor(name="s", scale=1))
            self.calls = 0

        def _activate(self):
            pass

        def _infer(self, batch):
            raise AssertionError("the uint8 path is asked for")

        def _infer_u8(self, batch):
            self.calls += 1
            return np.full_like(batch, 15 if self.calls == 8 else 10)

    with EnsembleRunner(Steps()) as r:
        out = r.infer_u8(np.zeros((1, 4, 6, 3), np.uint8))
    assert out.dtype == np.uint8 and (out == 11).all()


def test_a_fixed_size_graph_runs_only_the_transforms_that_keep_its_shape():
    """A graph of one fixed HxW: on a non-square input only the identity, the 180° turn and the two mirrors
    (which keep HxW) run; on a square one all eight. The wrapper keeps the inner runner's identity."""
    import dataclasses

    from sr_deploy.engine.profile import activation_bytes_per_pixel

    inner = Nearest()
    inner.descriptor = dataclasses.replace(inner.descriptor, fixed_hw=(5, 7))
    inner.precision, inner.work_factor = "int8", 3.0
    r = EnsembleRunner(inner)
    assert (r.precision, r.backend, r.work_factor) == ("int8", "test", 3.0)
    assert r._transforms(5, 7) == [0, 2, 4, 6] and r._transforms(6, 6) == list(range(8))
    x = np.random.default_rng(1).random((1, 3, 5, 7), dtype=np.float32)
    with r:
        y = r.infer(x)
        r.infer_u8(np.zeros((1, 5, 7, 3), np.uint8))
    assert inner.calls == 8  # four passes each
    inner.descriptor, inner.calls = dataclasses.replace(inner.descriptor, fixed_hw=(6, 6)), 0
    with r:  # a square fixed graph: every transform keeps its shape, all eight run
        r.infer(np.zeros((1, 3, 6, 6), np.float32))
        r.infer_u8(np.zeros((1, 6, 6, 3), np.uint8))
    assert inner.calls == 16
    np.testing.assert_allclose(y, x.repeat(2, axis=2).repeat(2, axis=3), atol=1e-6)
    # the activation estimate sizing profiles, exactly: 2·C·s² + 3·s² + 2·C values of 4 bytes per input pixel
    assert activation_bytes_per_pixel(ModelDescriptor(name="a", scale=4, arch={"channels": 32})) == 4 * (2 * 32 * 16 + 48 + 64)
    assert activation_bytes_per_pixel(ModelDescriptor(name="b", scale=2)) == 4 * (2 * 64 * 4 + 12 + 128)


def test_make_runner_builds_the_ensemble_for_every_caller(tiny_ckpt):
    """run, the Ray workers and bench get the ensemble from make_runner, the one recipe of a run's runner."""
    import numpy as np

    from sr_deploy.runtime.select import make_runner, resolve_model

    source = resolve_model(str(tiny_ckpt))
    runner, why = make_runner(source, "onnxruntime", ensemble=True)
    assert isinstance(runner, EnsembleRunner) and "self-ensemble" in why
    plain, why_plain = make_runner(source, "onnxruntime")
    assert not isinstance(plain, EnsembleRunner) and "ensemble" not in why_plain
    x = np.random.default_rng(0).integers(0, 256, (1, 9, 13, 3), dtype=np.uint8)
    with runner, EnsembleRunner(plain) as by_hand:
        assert np.array_equal(runner.infer_u8(x), by_hand.infer_u8(x))


def test_run_ensemble_writes_the_ensemble_output(tiny_ckpt, tmp_path):
    import cv2
    from typer.testing import CliRunner

    from sr_deploy.cli import app
    from sr_deploy.runtime.select import make_runner, resolve_model
    from tests.conftest import pattern_image

    rgb = pattern_image(12, 17, seed=4)
    cv2.imwrite(str(tmp_path / "in.png"), rgb[..., ::-1])
    r = CliRunner().invoke(app, ["run", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--model",
                                 str(tiny_ckpt), "--backend", "onnxruntime", "--ensemble"])
    assert r.exit_code == 0, r.output
    assert "self-ensemble" in r.output
    runner, _ = make_runner(resolve_model(str(tiny_ckpt)), "onnxruntime", ensemble=True)
    with runner:
        want = runner.infer_u8(rgb[None])[0]
    assert np.array_equal(cv2.imread(str(tmp_path / "out.png"))[..., ::-1], want)
