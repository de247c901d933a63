"""panoptic-detr: panoptic segmentation with DETR on your own data."""

__version__ = "0.1.0"

__all__ = ["build_model", "load_model", "__version__"]


def build_model(preset: str = "r50-panoptic", **overrides):
    """A model in eval mode from a preset name (see `panoptic_detr.model.build`)."""
    from panoptic_detr.model.build import build_model as _build

    return _build(preset, **overrides)


def load_model(path, **kwargs):
    """A model in eval mode from a checkpoint file (see `panoptic_detr.model.checkpoint`)."""
    from panoptic_detr.model.checkpoint import load_model as _load

    return _load(path, **kwargs)
