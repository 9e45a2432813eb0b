def test_video_ratio_is_the_median_of_alternating_rounds(tmp_path, tiny_ckpt):
    import statistics

    from sr_deploy.bench.run import video_ratios
    from sr_deploy.runtime.select import resolve_model
    from tests.conftest import make_clip

    clip = tmp_path / "c.mp4"
    make_clip(clip, frames=6, audio=False)
    lines = []
    v = video_ratios(clip, resolve_model(str(tiny_ckpt)), lines.append, rounds=3)
    assert v["frames"] == 6 and v["rounds"] == 3 and len(v["ratios"]) == 3
    assert v["end_to_end_over_model"] == statistics.median(v["ratios"]) and all(r > 0 for r in v["ratios"])
    assert "medians of 3 rounds" in lines[-1]
