"""The options of a tiled-inference run, written once: built by the CLI (or a caller), read by the
single-process pipeline, the Ray Data pipeline and the benchmarks; their defaults are the CLI's."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from adla.errors import AdlaError

if TYPE_CHECKING:  # the CLI imports the defaults below while building its parser: no torch there
    from adla.postprocess import PostprocessConfig

DEFAULT_TILE = 800  # tile side for models that take any input size
DEFAULT_OVERLAP = 0.2
DEFAULT_BATCH = 8
DEFAULT_WORKERS = 2
PREVIEW_SCORE = 0.3  # boxes below this score are in the outputs but not drawn: dense scenes stay readable
# the largest overlap: the stride between tiles is at least 1/8 of the tile, so a scene costs at most 64x
# the tiles of no overlap (0.999 would turn a 1024 px scene at tile 800 into 50,626 tiles)
MAX_OVERLAP = 0.875


@dataclass(frozen=True)
class TileOptions:
    """How a scene is cut, batched, thresholded and merged.

    ``score_thr`` None: the model's own threshold (the ONNX metadata or engine sidecar, or the checkpoint's
    ``eval.score_thr``). ``classes``: keep only these (names or 0-based ids). ``bands``: 1-based R G B bands.
    """

    tile: int = DEFAULT_TILE
    overlap: float = DEFAULT_OVERLAP
    batch: int = DEFAULT_BATCH
    score_thr: float | None = None
    workers: int = DEFAULT_WORKERS  # reader threads (single process)
    merge_cut: bool = False
    full_pass: bool = False
    classes: tuple[str, ...] | None = None
    bands: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        from adla.anchors import DEFAULT_MAX_STRIDE  # here, not at the top: the CLI's parser needs no torch

        # no model at hand here: the smallest tile is the default anchors' largest stride (adla.anchors)
        if self.tile < DEFAULT_MAX_STRIDE:
            raise AdlaError(f"--tile must be at least {DEFAULT_MAX_STRIDE}, got {self.tile}")
        if not 0 <= self.overlap < 1:
            raise AdlaError(f"--overlap is a fraction of the tile in [0, 1), got {self.overlap}")
        if self.overlap > MAX_OVERLAP:
            factor = 1 / (1 - self.overlap) ** 2
            raise AdlaError(f"--overlap {self.overlap} steps {self.tile - int(self.overlap * self.tile)} px between "
                            f"tiles of {self.tile}: about {factor:,.0f}x the tiles of no overlap; use at most "
                            f"{MAX_OVERLAP} (the usual is 0.1-0.3)")
        if self.batch < 1 or self.workers < 1:
            raise AdlaError(f"--batch and --workers must be at least 1, got {self.batch} and {self.workers}")
        if self.score_thr is not None and not 0 <= self.score_thr <= 1:
            raise AdlaError(f"--score must be in [0, 1], got {self.score_thr}")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(int(b) for b in self.bands))

    def post_config(self, model_post: PostprocessConfig) -> PostprocessConfig:
        """The model's post-processing with this run's score threshold, when one was given."""
        if self.score_thr is None:
            return model_post
        return replace(model_post, score_thr=self.score_thr)

