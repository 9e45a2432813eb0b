"""A frame's YUV layout, colour matrix and range (the YUV graphs of yuv.py take and return them).

Plain data, no PyTorch: every video run reads it while deciding its frame plan."""

from __future__ import annotations

from dataclasses import dataclass

# FFmpeg's AVCOL_SPC_* matrix numbers → (Kr, Kb) of ITU-R BT.601/709/2020, SMPTE 240M, FCC
MATRICES = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114), 7: (0.212, 0.087),
            9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
PIX_FMTS = {"yuv420p": (8, True), "nv12": (8, False), "yuv420p10le": (10, True), "p010le": (10, False)}


@dataclass(frozen=True)
class YuvSpec:
    """How a frame's bytes hold colour: the layout (an FFmpeg pixel format of PIX_FMTS), the matrix
    (AVCOL_SPC number) and the range (full: 0..2^bits-1; limited: 16..235 and 16..240 at 8 bits)."""

    pix_fmt: str
    matrix: int
    full_range: bool

    def __post_init__(self) -> None:
        if self.pix_fmt not in PIX_FMTS:
            raise ValueError(f"no YUV graph for {self.pix_fmt}; one of {', '.join(PIX_FMTS)}")
        if self.matrix not in MATRICES:
            raise ValueError(f"no YUV graph for colour matrix {self.matrix} (AVCOL_SPC)")

    @property
    def bits(self) -> int:
        return PIX_FMTS[self.pix_fmt][0]

    @property
    def planar(self) -> bool:
        return PIX_FMTS[self.pix_fmt][1]

    @property
    def shift(self) -> int:  # P010 keeps its codes in the high bits of each 16-bit word
        return 6 if self.pix_fmt == "p010le" else 0

    def levels(self) -> tuple[float, float, float, float]:
        """(Y offset, Y span, chroma centre, chroma span) in codes."""
        top = float((1 << self.bits) - 1)
        if self.full_range:
            return 0.0, top, float(1 << (self.bits - 1)), top
        k = float(1 << (self.bits - 8))
        return 16.0 * k, 219.0 * k, 128.0 * k, 224.0 * k
