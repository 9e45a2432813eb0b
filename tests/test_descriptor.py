"""The descriptor a file carries is untrusted input: validated, one line per lie."""

import pytest


@pytest.mark.parametrize("text, says", [
    ("not json", "not JSON"), ("[]", "JSON list"), ("{}", "'name' is missing"),
    ('{"name": "m", "scale": "4"}', "'scale' is '4'"), ('{"name": "m", "scale": 4, "fixed_hw": [0, 0]}', "fixed_hw"),
    ('{"name": "m", "scale": 4, "io": "uint16"}', "'io'"), ('{"name": "m", "scale": 4, "in_channels": 3000000}', "in_channels"),
    ('{"name": "m", "scale": 4, "value_range": [1, 0]}', "value_range"), ('{"name": "m", "scale": true}', "'scale'")])
def test_a_descriptor_that_lies_is_one_line_naming_the_file(tiny_onnx, tmp_path, text, says):
    import onnx

    from sr_deploy.descriptor import METADATA_KEY
    from sr_deploy.errors import ModelError
    from sr_deploy.export.onnx_export import read_descriptor

    proto = onnx.load(str(tiny_onnx))
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            entry.value = text
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(ModelError) as err:
        read_descriptor(bad)
    assert says in str(err.value) and str(bad) in str(err.value) and "\n" not in str(err.value)


def test_a_graph_whose_scale_differs_from_its_descriptor_is_refused_when_run(tiny_onnx, tmp_path):
    """A x2 graph whose metadata claims x4 (or x1): the runner's output is checked against the claim, never
    cropped or padded into a picture of the wrong size."""
    import json

    import numpy as np
    import onnx

    from sr_deploy.descriptor import METADATA_KEY
    from sr_deploy.errors import ModelError
    from sr_deploy.export.onnx_export import read_descriptor
    from sr_deploy.runtime.ort_runner import OrtRunner

    for claim in (4, 1):
        proto = onnx.load(str(tiny_onnx))
        for entry in proto.metadata_props:
            if entry.key == METADATA_KEY:
                entry.value = json.dumps({**json.loads(entry.value), "scale": claim})
        bad = tmp_path / f"claims{claim}.onnx"
        onnx.save(proto, str(bad))
        with OrtRunner(bad, read_descriptor(bad)) as r:
            with pytest.raises(ModelError, match=f"claims x{claim}"):
                r.infer_u8(np.zeros((1, 12, 16, 3), np.uint8))
            with pytest.raises(ModelError, match=f"claims x{claim}"):
                r.infer(np.zeros((1, 3, 12, 16), np.float32))
