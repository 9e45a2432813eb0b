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
